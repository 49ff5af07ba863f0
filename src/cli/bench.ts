/**
 * `sam2-lora bench` / `npm run bench`: the benchmark suite lives in bench/ (a development
 * checkout's), compiled by the project's tsc (tsconfig.bench.json) into dist/bench/, whose
 * `#src/*` imports (package.json "imports") resolve to dist/: the bench and the CLI share one
 * copy of the runtime. Under a TypeScript runner (vitest) this imports bench/run.ts directly.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { PACKAGE_ROOT } from '../gpu/dawn.js';
import { newestMtime } from '../io/mtime.js';

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
  /** Encoder precision of the end-to-end rows (default f32, like the fp32 PyTorch peer). */
  precision?: 'f32' | 'f16';
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
const BENCH_DIST = join(PACKAGE_ROOT, 'dist', 'bench');

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
  const entry = fromSource ? join(BENCH_SRC, 'run.ts') : buildBench();
  return (await import(pathToFileURL(entry).href)) as BenchModule;
}

/** Newest modification time of the .ts files under dir (results/ left out). */
function newestTs(dir: string): number {
  return newestMtime(dir, (name, isDir) => (isDir ? name !== 'results' : name.endsWith('.ts')));
}

/**
 * dist/bench/run.js, rebuilt with `tsc -p tsconfig.bench.json` (typechecked) when missing or
 * older than a bench source or than dist/ itself (the bench is compiled against dist's types).
 */
function buildBench(): string {
  const entry = join(BENCH_DIST, 'run.js');
  const lib = join(PACKAGE_ROOT, 'dist', 'gpu', 'runtime.js');
  const built = existsSync(entry) ? statSync(entry).mtimeMs : 0;
  const stale = built < newestTs(BENCH_SRC) || (existsSync(lib) && built < statSync(lib).mtimeMs);
  if (!stale) return entry;
  const tsc = join(PACKAGE_ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
  if (!existsSync(tsc)) {
    if (built) return entry;
    throw new Error('the bench is not built (dist/bench/) and TypeScript is missing: npm ci, ' +
      'then npm run build');
  }
  console.error('bench: building dist/bench/ (tsc -p tsconfig.bench.json)');
  const r = spawnSync(process.execPath, [tsc, '-p', join(PACKAGE_ROOT, 'tsconfig.bench.json')],
    { cwd: PACKAGE_ROOT, encoding: 'utf8' });
  if (r.status !== 0) {
    throw new Error(`building the bench failed (tsc -p tsconfig.bench.json):\n${r.stdout}${r.stderr}`);
  }
  return entry;
}
