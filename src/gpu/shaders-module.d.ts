/** The build-time module of scripts/build-web.mjs: every shaders/*.wgsl, name (no extension) → text. */
declare module 'sam2-lora:shaders' {
  const shaders: Record<string, string>;
  export default shaders;
}
