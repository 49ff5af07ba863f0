/**
 * `npm run bench` / `sam2-lora bench`: ceilings, the hot-kernel suite with its peers, end to
 * end, then the JSON + Markdown reports. Everything runs on one Dawn device (ours), which the
 * TensorFlow.js peer shares.
 */
import { join } from 'node:path';
import { Engine } from '../src/autograd/tensor.js';
import { type Backend, PACKAGE_ROOT } from '../src/gpu/dawn.js';
import { Gpu } from '../src/gpu/runtime.js';
import { measureCeilings } from './ceilings.js';
import type { Budget } from './measure.js';
import { type BenchReport, derive, writeReports } from './report.js';
import { type E2eRow, runE2e } from './suites/e2e.js';
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
const QUICK_E2E_BUDGET: Budget = { iterations: 1, timeMs: 0, warmupIterations: 1 };

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
    // Quick: the smallest input SAM2's construction accepts (32 px: 8×8 tokens, one 8-window).
    const e2eSize = quick ? 32 : 512;
    const e2eBatch = quick ? 1 : 4;
    let e2e: E2eRow[] = [];
    try {
      e2e = await runE2e(gpu, engine, { size: e2eSize, batch: e2eBatch, modes: ['head', 'lora'],
        budget: quick ? QUICK_E2E_BUDGET : { iterations: 10, timeMs: 2000, warmupIterations: 2 },
        filter, log });
    } catch (err) {
      const msg = `end to end at ${e2eSize} px batch ${e2eBatch} failed: ${(err as Error).message}`;
      notes.push(msg);
      log(msg);
    }
    if (tfVersion) {
      notes.push('tfjs attention runs on q, k, v already split per head (its most favourable ' +
        'layout) and materialises the score matrix; ours reads the packed qkv and never does.');
      notes.push('tfjs layer norm is moments + affine (tfjs has no layer-norm op).');
    }
    notes.push('Backward rows time one op\'s backward rule (gradients it returns, as in the LoRA ' +
      'training step); the forward that records its tape node is untimed.');
    notes.push('Peers are forward only.');
    if (gpu.info.cpuFallback) {
      notes.push('CPU fallback: lavapipe runs WGSL on the CPU; use these numbers only as a smoke ' +
        'test of the bench itself.');
    }
    const report: BenchReport = {
      format: 'sam2-lora-bench',
      version: 1,
      date: new Date().toISOString(),
      quick,
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
      notes,
    };
    const out = opts.out ?? join(PACKAGE_ROOT, 'bench', 'results');
    const paths = writeReports(report, out);
    log(`wrote ${paths.json}\nwrote ${paths.md}`);
    return { report, ...paths };
  } finally {
    tf?.close();
    gpu.close();
  }
}
