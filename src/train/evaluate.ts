/**
 * Evaluation of a model over samples: metrics at one or more decision thresholds from one pass
 * without a tape, batches split into micro-batches that fit the adapter's binding limit.
 */
import type { Sample } from '../data/dataset.js';
import { type Batch, BatchLoader } from '../data/loader.js';
import { widestActivationBytes } from '../model/config.js';
import type { Segmenter } from '../model/segmenter.js';
import { type SegMetrics, SegMetricsAccumulator } from './metrics.js';
import { Progress } from './progress.js';

export interface EvalOptions {
  size: number;
  batch: number;
  maxBatches?: number;
  skipBad?: boolean;
  label?: string;
}

/** Validation / test metrics of a model over samples at threshold 0.5 (with a sweep). */
export async function evaluate(model: Segmenter, samples: Sample[], opts: EvalOptions): Promise<SegMetrics> {
  return (await evaluateAt(model, samples, [0.5], opts))[0];
}

/**
 * Metrics at each decision threshold (e.g. 0.5 and the one chosen on validation), from one pass
 * of the model: no tape, logits read back per batch.
 */
export async function evaluateAt(
  model: Segmenter,
  samples: Sample[],
  thresholds: number[],
  opts: EvalOptions,
): Promise<SegMetrics[]> {
  const engine = model.engine;
  const loader = new BatchLoader(samples, {
    batchSize: opts.batch,
    size: opts.size,
    shuffle: false,
    dropLast: false,
    augment: false,
    skipBad: opts.skipBad,
  });
  const accs = thresholds.map((threshold) => new SegMetricsAccumulator({ logits: true, threshold }));
  const wasTraining = model.isTraining;
  model.train(false);
  const total = Math.min(loader.batchesPerEpoch, opts.maxBatches ?? Infinity);
  const micro = microBatchSize(model, opts.size, opts.batch);
  const bar = new Progress(opts.label ?? 'eval ', total);
  try {
    for (let i = 0; i < total; i++) {
      const batch = await loader.next();
      for (let s = 0; s < batch.count; s += micro) {
        const part = slice(batch, s, Math.min(micro, batch.count - s), opts.size);
        const logits = await engine.scopeAsync(async () => {
          const x = engine.fromArray(part.images, [part.count, opts.size, opts.size, 3]);
          const y = engine.noGrad(() => model.forward(x));
          return y.toArray();
        });
        for (const acc of accs) acc.update(logits, part.masks, part.count);
      }
      bar.update(i + 1, {});
    }
  } finally {
    loader.close();
    model.train(wasTraining);
  }
  return accs.map((a) => a.result());
}

/**
 * Images per forward pass such that the widest activation (a block's qkv or MLP hidden over its
 * window-padded grid) fits one storage binding of this adapter. A batch larger than that runs as
 * micro-batches with the same result (per-sample Dice and per-pixel BCE average the same way).
 */
export function microBatchSize(model: Segmenter, size: number, batch: number): number {
  const widest = widestActivationBytes(model.image_encoder.cfg, size);
  const limit = model.engine.gpu.limits.maxStorageBufferBindingSize;
  return Math.max(1, Math.min(batch, Math.floor(limit / widest)));
}

/** Slices [start, start + n) of a batch's images and masks. */
export function slice(batch: Batch, start: number, n: number, size: number) {
  const px = size * size;
  return {
    images: batch.images.subarray(start * px * 3, (start + n) * px * 3),
    masks: batch.masks.subarray(start * px, (start + n) * px),
    count: n,
  };
}
