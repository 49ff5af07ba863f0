/**
 * End to end: the whole Segmenter (SAM2 Hiera-tiny encoder + stride-16 head) at the training
 * resolution, forward-only images/s and training-step images/s (forward, Dice loss, backward,
 * AdamW, zero-grad) in head and LoRA modes, with the pool's peak live GPU memory. Wall time is
 * what a user sees, so images/s come from it; the GPU-busy time (timestamp queries) is reported
 * beside it to show how much of the step is launch/CPU overhead.
 */
import type { Engine, Tensor } from '#src/autograd/tensor.js';
import type { Gpu } from '#src/gpu/runtime.js';
import type { Precision } from '#src/model/precision.js';
import { type TrainMode, DEFAULT_LORA, Segmenter } from '#src/model/segmenter.js';
import { diceLoss } from '#src/ops/loss.js';
import { AdamW } from '#src/train/optim.js';
import { Rng } from '#src/util/random.js';
import { type Budget, drainGpuTimings, measure } from '../measure.js';

export interface E2eRow {
  id: string;
  mode: TrainMode;
  phase: 'forward' | 'train-step';
  size: number;
  batch: number;
  /** Encoder precision (optional: reports before mixed precision are f32). */
  precision?: Precision;
  /** Median wall ms per iteration (record + submit + wait). */
  wallMedianMs: number;
  /** Fastest iteration's wall ms (the least disturbed by other load on a shared machine). */
  wallMinMs: number;
  imagesPerSec: number;
  /** Median summed kernel time per iteration, ms (null without timestamp queries). */
  gpuMedianMs: number | null;
  /** Peak live pool bytes during the measured iterations (weights, activations, grads, state). */
  peakBytes: number;
  trainableParams: number;
  samples: number;
  /** The last iteration's most expensive kernels (GPU ms summed per kernel name). */
  topKernels: { name: string; ms: number; calls: number }[];
  /** The last iteration per kernel family (`matmul`, `attention`, ...): GPU ms, dispatches. */
  breakdown: { family: string; ms: number; calls: number }[];
}

/** Kernel timings summed per family (the part of the kernel name before the dot). */
export function byFamily(kernels: { name: string; ms: number; calls: number }[]) {
  const fam = new Map<string, { family: string; ms: number; calls: number }>();
  for (const k of kernels) {
    const family = k.name.split('.')[0];
    const e = fam.get(family) ?? { family, ms: 0, calls: 0 };
    e.ms += k.ms;
    e.calls += k.calls;
    fam.set(family, e);
  }
  return [...fam.values()].sort((a, b) => b.ms - a.ms);
}

function fill(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = (s >>> 8) / 8388608 - 1;
  }
  return out;
}

function median(xs: number[]): number | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

export async function runE2e(gpu: Gpu, engine: Engine, opts: { size: number; batch: number;
  modes: TrainMode[]; budget: Budget; filter: RegExp | null; log: (s: string) => void;
  precision?: Precision;
}): Promise<E2eRow[]> {
  const { size, batch, budget } = opts;
  const rows: E2eRow[] = [];
  const hasTs = gpu.features.has('timestamp-query');
  for (const mode of opts.modes) {
    const ids = {
      forward: `e2e/${size}px-b${batch}/${mode}/forward`,
      train: `e2e/${size}px-b${batch}/${mode}/train-step`,
    };
    const want = (id: string) => !opts.filter || opts.filter.test(id);
    if (!want(ids.forward) && !want(ids.train)) continue;
    const model = new Segmenter(engine, {
      model: 'tiny', head: 'stride16', mode, lora: DEFAULT_LORA, seed: 1,
    });
    // As `train --precision` does: frozen encoder weights f16, trainable ones f32 masters.
    model.setPrecision(opts.precision ?? 'f32', true);
    const trainable = model.trainable().map(([, t]) => t);
    const nTrain = trainable.reduce((a, t) => a + t.size, 0);
    const x = engine.fromArray(fill(batch * size * size * 3, 1), [batch, size, size, 3]);
    const y = engine.fromArray(fill(batch * size * size, 2).map((v) => (v > 0 ? 1 : 0)),
      [batch, size, size, 1]);
    const optim = new AdamW([{ params: trainable, lr: 1e-4, weightDecay: 0.01 }]);
    const rng = new Rng(3);
    try {
      const phases: ['forward' | 'train-step', string, () => void][] = [
        ['forward', ids.forward, () => {
          model.train(false);
          engine.noGrad(() => engine.scope(() => void model.forward(x)));
        }],
        ['train-step', ids.train, () => {
          model.train(true);
          model.reseedDropout(rng);
          const loss: Tensor = engine.scope(() => diceLoss(model.forward(x), y));
          engine.backward(loss);
          loss.release();
          optim.step();
          optim.zeroGrad();
        }],
      ];
      for (const [phase, id, step] of phases) {
        if (!want(id)) continue;
        await gpu.sync();
        gpu.pool.resetPeak();
        const gpuMs: number[] = [];
        let all: E2eRow['topKernels'] = [];
        const t = await measure({
          name: id,
          run: async () => {
            gpu.profile = hasTs;
            try {
              step();
            } finally {
              gpu.profile = false;
            }
            await gpu.sync();
            if (hasTs) {
              all = [...gpu.timings].map(([name, k]) => ({ name, ms: k.totalNs / 1e6,
                calls: k.count })).sort((a, b) => b.ms - a.ms);
              gpuMs.push(drainGpuTimings(gpu));
            }
            // Wall time is the figure here: returning null keeps tinybench on it.
            return null;
          },
        }, budget);
        const wall = t.medianMs;
        const row: E2eRow = {
          id, mode, phase, size, batch, precision: opts.precision ?? 'f32', wallMedianMs: wall, wallMinMs: t.minMs, imagesPerSec: batch / (wall / 1000),
          gpuMedianMs: median(gpuMs.slice(-t.samples)), peakBytes: gpu.pool.stats.peakLiveBytes,
          trainableParams: nTrain, samples: t.samples, topKernels: all.slice(0, 8),
          breakdown: byFamily(all),
        };
        rows.push(row);
        opts.log(`${id.padEnd(48)} ${wall.toFixed(1).padStart(9)} ms  ` +
          `${row.imagesPerSec.toFixed(2)} img/s  peak ${(row.peakBytes / 2 ** 20).toFixed(0)} MiB`);
      }
    } finally {
      optim.dispose();
      x.dispose();
      y.dispose();
      for (const p of model.parameters()) p.dispose();
      await gpu.sync();
    }
  }
  return rows;
}
