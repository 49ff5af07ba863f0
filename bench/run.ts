/**
 * `npm run bench` / `sam2-lora bench`: ceilings, the hot-kernel suite with its peers, end to
 * end, then the JSON + Markdown reports. Everything runs on one Dawn device (ours), which the
 * TensorFlow.js peer shares.
 */
import { spawnSync } from 'node:child_process';
import { availableParallelism, loadavg } from 'node:os';
import { join } from 'node:path';
import { Engine } from '#src/autograd/tensor.js';
import { type Backend, PACKAGE_ROOT } from '#src/gpu/dawn.js';
import { Gpu } from '#src/gpu/runtime.js';
import { resolvePrecision } from '#src/model/precision.js';
import { measureCeilings } from './ceilings.js';
import type { Budget } from './measure.js';
import { type PeerOutcome, runPytorchPeer } from './peer.js';
import { type BenchReport, type LoadRecord, derive, writeReports } from './report.js';
import { type E2eRow, runE2e } from './suites/e2e.js';
import { OVERHEAD_FLAG_MS, type OverheadRow, runOverhead } from './suites/overhead.js';
import { type SuiteContext, runKernelSuite } from './suites/kernels.js';
import { type TfPeer, openTfjs } from './tfjs.js';

export interface BenchOptions {
  /** Short run: 256 px batch 1, stage 0 + global block, few repetitions, end to end at 32 px. */
  quick?: boolean;
  /** Output folder (default bench/results). */
  out?: string;
  /** Input sizes for the kernel suite (default 256, 512, 1024; quick 256). */
  sizes?: number[];
  /** Case-insensitive regex over row ids such as `matmul/512px-b4/s1.qkv/fwd`, `e2e/...`. */
  filter?: string;
  adapter?: string;
  backend?: string;
  /** Batches for the kernel suite (default 1 and 4; quick 1). */
  batches?: number[];
  /** Skip the TensorFlow.js peer. */
  noTfjs?: boolean;
  /** End-to-end input sizes (default: GPU 512, quick 256; CPU fallback 128 and 256, quick 128). */
  e2eSizes?: number[];
  /** End-to-end batches (default: GPU 4, quick 1; CPU fallback 1). */
  e2eBatches?: number[];
  /** Skip the PyTorch peer (bench/peer/pytorch_step.py). */
  noPeer?: boolean;
  /** Encoder precision of the end-to-end rows (default f32, like the fp32 PyTorch peer). */
  precision?: 'f32' | 'f16';
  /** Progress lines (default console.log). */
  log?: (s: string) => void;
}

export interface BenchResult {
  report: BenchReport;
  json: string;
  md: string;
}

export const FULL_BUDGET: Budget = { iterations: 25, timeMs: 250, warmupIterations: 3 };
export const QUICK_BUDGET: Budget = { iterations: 2, timeMs: 0, warmupIterations: 1 };
/** One warm-up (pipeline compilation) and one timed step: a CPU fallback needs seconds each. */
const QUICK_E2E_BUDGET: Budget = { iterations: 2, timeMs: 0, warmupIterations: 1 };
const FULL_E2E_BUDGET: Budget = { iterations: 10, timeMs: 2000, warmupIterations: 2 };

/** End-to-end sizes and batches: the options, else defaults sized for the adapter. */
export function e2eShapes(opts: BenchOptions, cpuFallback: boolean) {
  const quick = !!opts.quick;
  const e2eSizes = opts.e2eSizes?.length ? opts.e2eSizes
    : cpuFallback ? (quick ? [128] : [128, 256]) : quick ? [256] : [512];
  const e2eBatches = opts.e2eBatches?.length ? opts.e2eBatches : cpuFallback || quick ? [1] : [4];
  for (const s of e2eSizes) {
    if (!Number.isInteger(s) || s <= 0 || s % 32 !== 0) {
      throw new Error(`bench: end-to-end size ${s} is not a positive multiple of 32`);
    }
  }
  for (const b of e2eBatches) {
    if (!Number.isInteger(b) || b <= 0) {
      throw new Error(`bench: end-to-end batch ${b} is not a positive integer`);
    }
  }
  return { e2eSizes, e2eBatches };
}

/** The checked-out commit (with `-dirty` when the tree has changes), or null outside git. */
function gitCommit(): string | null {
  const git = (args: string[]) =>
    spawnSync('git', args, { cwd: PACKAGE_ROOT, encoding: 'utf8', timeout: 10_000 });
  const head = git(['rev-parse', 'HEAD']);
  if (head.status !== 0) return null;
  const dirty = git(['status', '--porcelain', '--untracked-files=no']).stdout?.trim();
  return `${head.stdout.trim()}${dirty ? '-dirty' : ''}`;
}

export async function runBench(opts: BenchOptions = {}): Promise<BenchResult> {
  const quick = !!opts.quick;
  const log = opts.log ?? ((s: string) => console.log(s));
  const sizes = opts.sizes?.length ? opts.sizes : quick ? [256] : [256, 512, 1024];
  const batches = opts.batches?.length ? opts.batches : quick ? [1] : [1, 4];
  for (const s of sizes) {
    if (!Number.isInteger(s) || s <= 0 || s % 32 !== 0) {
      throw new Error(`bench: size ${s} is not a positive multiple of 32`);
    }
  }
  const filter = opts.filter ? new RegExp(opts.filter, 'i') : null;
  const budget = quick ? QUICK_BUDGET : FULL_BUDGET;
  const gpu = await Gpu.open({ adapter: opts.adapter, backend: opts.backend as Backend });
  const notes: string[] = [];
  let tf: TfPeer | null = null;
  let tfError: string | undefined;
  try {
    const info = gpu.info;
    log(`bench: ${info.description} (${info.backend})${info.cpuFallback ? ' [CPU fallback]' : ''}`);
    if (info.cpuFallback && !quick) {
      log('warning: the full bench is sized for GPUs and takes hours on a CPU rasterizer; ' +
        'use --quick here');
    }
    // f16 on an adapter without shader-f16 stops here, naming the adapter.
    const { precision } = resolvePrecision(opts.precision ?? 'f32', [gpu]);
    const engine = new Engine(gpu);
    const ceilings = await measureCeilings(gpu, quick, budget);
    log(`ceilings: ${ceilings.gflops.toFixed(1)} GFLOP/s FMA, ` +
      `${ceilings.gbps.toFixed(1)} GB/s copy`);
    if (!opts.noTfjs) {
      try {
        tf = await openTfjs(gpu);
      } catch (err) {
        tfError = `tfjs unavailable: ${(err as Error).message.split('\n')[0]}`;
        log(tfError);
      }
    } else tfError = 'tfjs disabled (--no-tfjs)';
    const ctx: SuiteContext = { gpu, engine, tf, tfError, budget, quick, log };
    const kernels = await runKernelSuite(ctx, sizes, batches, filter);
    // Free tfjs's buffers before the model needs the memory.
    tf?.close();
    const tfVersion = tf?.version ?? null;
    tf = null;
    // Row id `overhead/tiny`: the per-dispatch floor of every kernel of a training step.
    let overhead: OverheadRow[] = [];
    if (!filter || filter.test('overhead/tiny')) {
      overhead = await runOverhead(gpu, engine);
      const flagged = overhead.filter((r) => r.msPerDispatch > OVERHEAD_FLAG_MS);
      log(`overhead/tiny: ${overhead.length} kernels, ${flagged.length} above ` +
        `${OVERHEAD_FLAG_MS} ms per dispatch${flagged.length ? `: ${flagged.map((r) =>
          `${r.name} ${r.msPerDispatch.toFixed(2)}`).join(', ')}` : ''}`);
    }
    const { e2eSizes, e2eBatches } = e2eShapes(opts, info.cpuFallback);
    const e2e: E2eRow[] = [];
    // Other processes on the machine slow both sides: the 1-minute load average around each.
    const load: LoadRecord = { cores: availableParallelism(), ours: [loadavg()[0], 0],
      peer: null };
    for (const e2eSize of e2eSizes) {
      for (const e2eBatch of e2eBatches) {
        try {
          e2e.push(...await runE2e(gpu, engine, { size: e2eSize, batch: e2eBatch,
            modes: ['head', 'lora'], budget: quick ? QUICK_E2E_BUDGET : FULL_E2E_BUDGET,
            filter, log, precision }));
        } catch (err) {
          const msg = `end to end at ${e2eSize} px batch ${e2eBatch} failed: ` +
            (err as Error).message;
          notes.push(msg);
          log(msg);
        }
      }
    }
    load.ours[1] = loadavg()[0];
    // The PyTorch peer runs after our rows (not beside them), so the two never share the cores.
    let peer: PeerOutcome | null = null;
    if (!opts.noPeer && e2e.length) {
      const before = loadavg()[0];
      peer = runPytorchPeer({ sizes: e2eSizes, batches: e2eBatches,
        device: info.cpuFallback ? 'cpu' : undefined, steps: quick ? 3 : 10,
        warmup: quick ? 1 : 3, log });
      load.peer = [before, loadavg()[0]];
      notes.push(...peer.errors);
    }
    if (e2e.length) {
      const at = (l: [number, number] | null) => (l ? `${l[0].toFixed(1)} → ${l[1].toFixed(1)}` : '-');
      notes.push(`1-minute load average on ${load.cores} cores: ${at(load.ours)} over our ` +
        `end-to-end rows, ${at(load.peer)} over the PyTorch peer (above the core count, other ` +
        'processes shared the cores and the times are inflated).');
    }
    if (tfVersion) {
      notes.push('tfjs attention runs on q, k, v already split per head (its most favourable ' +
        'layout) and materialises the score matrix; ours reads the packed qkv and never does.');
      notes.push('tfjs layer norm is moments + affine (tfjs has no layer-norm op).');
    }
    notes.push('Backward rows time one op\'s backward rule (gradients it returns, as in the LoRA ' +
      'training step); the forward that records its tape node is untimed.');
    notes.push('Kernel-suite peers are forward only; the PyTorch peer times whole steps.');
    if (gpu.info.cpuFallback) {
      notes.push('CPU fallback: lavapipe runs WGSL on the CPU; use these numbers only as a smoke ' +
        'test of the bench itself.');
    }
    const report: BenchReport = {
      format: 'sam2-lora-bench',
      version: 1,
      date: new Date().toISOString(),
      commit: gitCommit(),
      quick,
      precision,
      filter: opts.filter ?? null,
      sizes,
      batches,
      device: {
        description: info.description || info.device,
        vendor: info.vendor,
        architecture: info.architecture,
        backend: info.backend,
        cpuFallback: info.cpuFallback,
        timestampQuery: gpu.features.has('timestamp-query'),
        features: info.features,
      },
      software: { node: process.version, tfjs: tfVersion, tfjsError: tfError },
      ceilings,
      kernels: kernels.map((r) => derive(r, ceilings)),
      e2e,
      overhead,
      peer,
      load,
      notes,
    };
    const out = opts.out ?? join(PACKAGE_ROOT, 'bench', 'results');
    const paths = writeReports(report, out);
    log(`wrote ${paths.json}, ${paths.md}`);
    return { report, ...paths };
  } finally {
    tf?.close();
    await gpu.shutdown();
  }
}
