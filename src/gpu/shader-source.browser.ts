/**
 * shader-source.ts for the browser bundle (scripts/build-web.mjs swaps it in): the WGSL text of
 * every file in shaders/, embedded at build time as the virtual module `sam2-lora:shaders`.
 */
import shaders from 'sam2-lora:shaders';

export function shaderName(file: string, dir?: string): string {
  if (dir !== undefined) throw new Error(`shader ${file}: shader folders other than shaders/ exist in Node only`);
  return file;
}

export function shaderText(file: string, dir?: string): string {
  const text = shaders[shaderName(file, dir)];
  if (text === undefined) throw new Error(`shader ${file}.wgsl is not in the bundle (shaders/ at build time)`);
  return text;
}
