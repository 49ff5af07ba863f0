// Builds the web page's bundle, dist/web/app.js, with esbuild (a devDependency; `npm run build`
// runs this, so an installed package ships the bundle). The engine's shader loader
// (src/gpu/shader-source.ts, Node: reads files) is swapped for shader-source.browser.ts, which
// imports every shaders/*.wgsl as text through the virtual module `sam2-lora:shaders`. The
// bundle targets the browser platform: any Node import (fs, sharp, webgpu) fails the build, and
// the inputs are checked for them again below.
import { mkdirSync, readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
export const BUNDLE = join(root, 'dist', 'web', 'app.js');
const SHADERS = join(root, 'shaders');

const shadersPlugin = {
  name: 'sam2-lora-shaders',
  setup(build) {
    build.onResolve({ filter: /^sam2-lora:shaders$/ }, () => ({ path: 'shaders', namespace: 'sam2-lora-shaders' }));
    build.onLoad({ filter: /.*/, namespace: 'sam2-lora-shaders' }, () => {
      const files = readdirSync(SHADERS).filter((f) => f.endsWith('.wgsl')).sort();
      const map = Object.fromEntries(files.map((f) => [f.slice(0, -5), readFileSync(join(SHADERS, f), 'utf8')]));
      return { contents: `export default ${JSON.stringify(map)};`, loader: 'js', watchFiles: files.map((f) => join(SHADERS, f)) };
    });
    // The engine imports './shader-source.js' (TypeScript's spelling of shader-source.ts).
    build.onResolve({ filter: /(^|\/)shader-source\.js$/ }, (args) =>
      args.importer.startsWith(join(root, 'src', 'gpu'))
        ? { path: join(root, 'src', 'gpu', 'shader-source.browser.ts') }
        : undefined);
  },
};

export async function buildWeb({ quiet = false, outfile = BUNDLE, minify = true } = {}) {
  let esbuild;
  try {
    esbuild = await import('esbuild');
  } catch (e) {
    throw new Error(`building the web bundle needs esbuild (a devDependency: run \`npm ci\`): ${e.message}`);
  }
  const result = await esbuild.build({
    entryPoints: [join(root, 'src', 'web', 'page', 'main.ts')],
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    outfile,
    minify,
    legalComments: 'none',
    metafile: true,
    write: false,
    logLevel: quiet ? 'error' : 'warning',
    plugins: [shadersPlugin],
  });
  const inputs = Object.keys(result.metafile.inputs);
  const nodeOnly = inputs.filter((p) => /(^|\/)(dawn|runtime|shader-source|package-root)\.ts$|node_modules\/(sharp|webgpu)\//.test(p));
  if (nodeOnly.length) throw new Error(`the web bundle pulled in Node-only modules: ${nodeOnly.join(', ')}`);
  // Written beside and renamed over: a `web` export running meanwhile never copies half a bundle.
  const js = result.outputFiles.find((f) => f.path === outfile) ?? result.outputFiles[0];
  mkdirSync(dirname(outfile), { recursive: true });
  const tmp = `${outfile}.${process.pid}.tmp`;
  writeFileSync(tmp, js.contents);
  renameSync(tmp, outfile);
  const bytes = js.contents.byteLength;
  if (!quiet) console.log(`web: ${outfile} (${(bytes / 1024).toFixed(0)} KiB, ${inputs.length} modules)`);
  return { outfile, bytes, inputs };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  buildWeb().catch((e) => {
    console.error(e.message);
    process.exit(1);
  });
}
