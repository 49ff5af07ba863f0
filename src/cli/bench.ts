/**
 * `sam2-lora bench` / `npm run bench`: the benchmark suite lives in bench/ (outside the published
 * library), so this entry loads it. Under a TypeScript runner (vitest) it imports bench/run.ts
 * directly; from the compiled CLI it transpiles bench/ into build/bench-js/ with its imports of
 * src/ pointed at dist/, so the bench and the CLI share one copy of the runtime. The bench needs
 * a development checkout (TypeScript installed, bench/ present).
 */
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { PACKAGE_ROOT } from '../gpu/dawn.js';

export interface BenchCliOptions {
  /** Short run (256 px batch 1, a subset of kernels, end to end at 32 px, few repetitions). */
  quick?: boolean;
  /** Output folder for the reports (default bench/results). */
  out?: string;
  /** Input sizes of the kernel suite (default 256, 512, 1024). */
  sizes?: number[];
  /** Case-insensitive regex over row ids, e.g. `matmul/512px-b4/s1.qkv/fwd` or `^e2e/`. */
  filter?: string;
  /** Dawn adapter name (see `sam2-lora info`). */
  adapter?: string;
  /** Force a WebGPU backend. */
  backend?: string;
  /** End-to-end input sizes (default: GPU 512, quick 256; CPU fallback 128 and 256, quick 128). */
  e2eSizes?: number[];
  /** End-to-end batches (default: GPU 4, quick 1; CPU fallback 1). */
  e2eBatches?: number[];
  /** Skip the PyTorch peer (bench/peer/pytorch_step.py). */
  noPeer?: boolean;
  /** Skip the TensorFlow.js peer. */
  noTfjs?: boolean;
}

/** Where the reports went. */
export interface BenchOutcome {
  json: string;
  md: string;
}

interface BenchModule {
  runBench(opts: BenchCliOptions): Promise<BenchOutcome>;
}

const BENCH_SRC = join(PACKAGE_ROOT, 'bench');
const BENCH_OUT = join(PACKAGE_ROOT, 'build', 'bench-js');

export async function bench(opts: BenchCliOptions): Promise<BenchOutcome> {
  const mod = await loadBench();
  const { json, md } = await mod.runBench(opts);
  return { json, md };
}

async function loadBench(): Promise<BenchModule> {
  if (!existsSync(join(BENCH_SRC, 'run.ts'))) {
    throw new Error(`the benchmark suite is not here (${BENCH_SRC}/run.ts): run it from a ` +
      'development checkout of sam2-lora');
  }
  // A non-literal specifier: the library build (rootDir src) must not pull bench/ in.
  const fromSource = fileURLToPath(import.meta.url).endsWith('.ts');
  const entry = fromSource ? join(BENCH_SRC, 'run.ts') : await transpileBench();
  return (await import(pathToFileURL(entry).href)) as BenchModule;
}

function tsFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name);
    if (e.isDirectory()) return e.name === 'results' ? [] : tsFiles(p);
    return e.name.endsWith('.ts') && !e.name.endsWith('.d.ts') ? [p] : [];
  });
}

/**
 * Transpiles bench/**.ts to build/bench-js (types are checked by `npm run typecheck`, not here);
 * relative imports that land in src/ are redirected to the same module in dist/.
 */
async function transpileBench(): Promise<string> {
  let ts: typeof import('typescript');
  try {
    ts = (await import('typescript')).default;
  } catch {
    throw new Error('the bench needs TypeScript (a development install: npm ci)');
  }
  const srcRoot = join(PACKAGE_ROOT, 'src') + sep;
  const distRoot = join(PACKAGE_ROOT, 'dist');
  for (const file of tsFiles(BENCH_SRC)) {
    const rel = relative(BENCH_SRC, file);
    const outFile = join(BENCH_OUT, rel.replace(/\.ts$/, '.js'));
    const { outputText } = ts.transpileModule(readFileSync(file, 'utf8'), {
      fileName: file,
      compilerOptions: {
        module: ts.ModuleKind.ES2022,
        target: ts.ScriptTarget.ES2022,
        verbatimModuleSyntax: false,
      },
    });
    const fixed = outputText.replace(
      /((?:from|import)\s*\(?\s*)(['"])(\.{1,2}\/[^'"]+)\2/g,
      (_m, lead: string, q: string, spec: string) => {
        const target = resolve(dirname(file), spec);
        if (!target.startsWith(srcRoot)) return `${lead}${q}${spec}${q}`;
        let r = relative(dirname(outFile), join(distRoot, target.slice(srcRoot.length)));
        r = r.split(sep).join('/');
        if (!r.startsWith('.')) r = `./${r}`;
        return `${lead}${q}${r}${q}`;
      },
    );
    mkdirSync(dirname(outFile), { recursive: true });
    writeFileSync(outFile, fixed);
  }
  return join(BENCH_OUT, 'run.js');
}
