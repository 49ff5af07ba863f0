/**
 * Where kernel families get their WGSL text. Node reads shaders/ (or a caller's folder, e.g. the
 * bench's) from disk; the browser bundle swaps this module for shader-source.browser.ts, which
 * carries the text of every file in shaders/ (scripts/build-web.mjs), so neither fs nor the
 * package path ever reaches the bundle.
 */
import { readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { PACKAGE_ROOT } from './package-root.js';

const SHADER_DIR = join(PACKAGE_ROOT, 'shaders');

/** Name of a family in pipeline keys and errors: the file, prefixed with its folder when not shaders/. */
export function shaderName(file: string, dir?: string): string {
  return dir === undefined || dir === SHADER_DIR ? file : `${relative(PACKAGE_ROOT, dir)}/${file}`;
}

/** The WGSL text of `file`.wgsl in shaders/ or in `dir`. */
export function shaderText(file: string, dir?: string): string {
  return readFileSync(join(dir ?? SHADER_DIR, `${file}.wgsl`), 'utf8');
}
