/**
 * The page's JavaScript bundle: `dist/web/app.js`, built by scripts/build-web.mjs (esbuild) during
 * `npm run build` and shipped in the package. In a source checkout it is rebuilt here when any
 * file under src/ or shaders/ is newer; an installed package (no src/) uses its prebuilt one.
 */
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { PACKAGE_ROOT } from '../gpu/package-root.js';
import { newestMtime } from '../io/mtime.js';

export const BUNDLE = join(PACKAGE_ROOT, 'dist', 'web', 'app.js');
const BUILD_SCRIPT = join(PACKAGE_ROOT, 'scripts', 'build-web.mjs');

/** True when the bundle is missing or older than the sources it is built from (a checkout). */
export function bundleStale(): boolean {
  if (!existsSync(BUNDLE)) return true;
  const src = join(PACKAGE_ROOT, 'src');
  if (!existsSync(src)) return false;
  return Math.max(newestMtime(src), newestMtime(join(PACKAGE_ROOT, 'shaders'))) > statSync(BUNDLE).mtimeMs;
}

/** The bundle's path, (re)built first when stale and esbuild is installed. */
export async function bundleFile(say: (s: string) => void = console.log): Promise<string> {
  if (!bundleStale()) return BUNDLE;
  let build: ((o?: { quiet?: boolean }) => Promise<unknown>) | undefined;
  try {
    ({ buildWeb: build } = await import(pathToFileURL(BUILD_SCRIPT).href));
  } catch {
    build = undefined;
  }
  if (build && existsSync(join(PACKAGE_ROOT, 'src'))) {
    say(`web: building the page bundle (${BUNDLE})`);
    try {
      await build({ quiet: true });
      return BUNDLE;
    } catch (e) {
      if (existsSync(BUNDLE) || !/esbuild/.test(String((e as Error).message))) throw e;
    }
  }
  if (existsSync(BUNDLE)) return BUNDLE;
  throw new Error(`the web page bundle ${BUNDLE} is missing: run \`npm run build\` in the package ` +
    '(it needs the esbuild devDependency: `npm ci` first)');
}
