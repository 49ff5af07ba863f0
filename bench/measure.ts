/**
 * One timing primitive for every row of the bench: tinybench drives warm-up and repetitions, and
 * each iteration reports the GPU time that timestamp queries measured for its dispatches (as
 * tinybench's overriddenDuration), so the statistics are of GPU time, not of submit + readback
 * latency. Without timestamp queries (or when a peer cannot report them) the sample is the wall
 * time of record + submit + wait, and the row says so.
 */
import { Bench, type FnReturnedObject } from 'tinybench';
import type { Gpu } from '#src/gpu/runtime.js';

export type TimeSource = 'gpu-timestamp' | 'wall';

export interface Timing {
  /** Median of the per-iteration samples, ms. */
  medianMs: number;
  meanMs: number;
  minMs: number;
  p75Ms: number;
  p99Ms: number;
  /** Relative margin of error of the mean (tinybench's rme, %). */
  rmePct: number;
  samples: number;
  source: TimeSource;
  /** Median wall time of an iteration (record + submit + wait), ms. */
  wallMedianMs: number;
}

export interface Budget {
  /** Minimum timed iterations. */
  iterations: number;
  /** Time budget per row (ms of sampled time; tinybench stops at whichever comes later). */
  timeMs: number;
  warmupIterations: number;
}

/** What one iteration reports: GPU ms when the callee measured it, otherwise null (use wall). */
export type IterationResult = number | null | undefined | void;

export interface MeasureSpec {
  name: string;
  /** Runs once per iteration before the timed part (un-profiled; awaited to completion). */
  before?: () => void | Promise<void>;
  /** The timed part: records (or runs) the work; returns GPU ms when it measured them itself. */
  run: () => IterationResult | Promise<IterationResult>;
  /** Runs after each iteration (releases tensors, etc.). */
  after?: () => void | Promise<void>;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Sums and clears the runtime's per-kernel timestamp totals (ns → ms). */
export function drainGpuTimings(gpu: Gpu): number {
  let ns = 0;
  for (const t of gpu.timings.values()) ns += t.totalNs;
  gpu.timings.clear();
  return ns / 1e6;
}

/**
 * Times our own work: every dispatch `run` records is timestamped by the runtime (gpu.profile),
 * the iteration waits for the GPU, and the sample is the sum of the kernels' GPU times.
 */
export function ours(gpu: Gpu, spec: MeasureSpec): MeasureSpec {
  const hasTs = gpu.features.has('timestamp-query');
  return {
    name: spec.name,
    before: async () => {
      gpu.profile = false;
      await spec.before?.();
      await gpu.sync();
      gpu.timings.clear();
    },
    run: async () => {
      gpu.profile = hasTs;
      try {
        await spec.run();
      } finally {
        gpu.profile = false;
      }
      await gpu.sync();
      return hasTs ? drainGpuTimings(gpu) : null;
    },
    after: async () => {
      await spec.after?.();
      await gpu.sync();
    },
  };
}

export async function measure(spec: MeasureSpec, budget: Budget): Promise<Timing> {
  const walls: number[] = [];
  let gpuSamples = 0;
  let wallSamples = 0;
  const bench = new Bench({
    iterations: budget.iterations,
    time: budget.timeMs,
    warmupIterations: budget.warmupIterations,
    warmupTime: 0,
    throws: true,
    retainSamples: false,
  });
  bench.add(
    spec.name,
    async (): Promise<FnReturnedObject | undefined> => {
      const t0 = performance.now();
      const gpuMs = await spec.run();
      const wall = performance.now() - t0;
      walls.push(wall);
      if (typeof gpuMs === 'number' && gpuMs > 0 && Number.isFinite(gpuMs)) {
        gpuSamples++;
        return { overriddenDuration: gpuMs };
      }
      wallSamples++;
      return { overriddenDuration: wall };
    },
    {
      beforeEach: spec.before ? async () => void (await spec.before?.()) : undefined,
      afterEach: spec.after ? async () => void (await spec.after?.()) : undefined,
    },
  );
  await bench.run();
  const r = bench.tasks[0].result;
  if (r.state !== 'completed') {
    const err = 'error' in r ? (r as { error?: unknown }).error : undefined;
    throw new Error(`bench ${spec.name}: ${r.state}${err ? `: ${String(err)}` : ''}`);
  }
  const lat = r.latency;
  return {
    medianMs: lat.p50,
    meanMs: lat.mean,
    minMs: lat.min,
    p75Ms: lat.p75,
    p99Ms: lat.p99,
    rmePct: lat.rme,
    samples: lat.samplesCount,
    // A row mixing both would be meaningless as GPU time: call it wall when any sample was.
    source: wallSamples === 0 && gpuSamples > 0 ? 'gpu-timestamp' : 'wall',
    wallMedianMs: median(walls.slice(-lat.samplesCount)),
  };
}
