/**
 * One evaluation pass for a report: the global metrics of `sam2-lora eval` (the same
 * accumulators, fed the same logits), plus every image's own counts and scores, optionally the
 * same at each photo's own resolution, and the prediction and truth maps of the images the
 * gallery will show.
 */
import type { Sample } from '../data/dataset.js';
import { loadMask } from '../data/decode.js';
import { BatchLoader } from '../data/loader.js';
import { resizeBilinear } from '../data/resample.js';
import type { Segmenter } from '../model/segmenter.js';
import {
  type Counts,
  type SegMetrics,
  SegMetricsAccumulator,
  imageMetrics,
  metricsFromCounts,
} from '../train/metrics.js';
import { Progress } from '../train/progress.js';
// The one import of the evaluation module (it is moving out of the trainer).
import { microBatchSize } from '../train/evaluate.js';

/** Logits ([count, size, size], image-major) of `count` normalised NHWC images. */
export type LogitsFn = (images: Float32Array, count: number) => Promise<Float32Array>;

/** A model's logits, run in micro-batches that fit the adapter's binding limit, without a tape. */
export function segmenterLogits(model: Segmenter, size: number, batch: number): LogitsFn {
  const micro = microBatchSize(model, size, batch);
  const engine = model.engine;
  model.train(false);
  return async (images, count) => {
    const out = new Float32Array(count * size * size);
    for (let s = 0; s < count; s += micro) {
      const n = Math.min(micro, count - s);
      const part = images.subarray(s * size * size * 3, (s + n) * size * size * 3);
      const logits = await engine.scopeAsync(async () => {
        const x = engine.fromArray(part, [n, size, size, 3]);
        return engine.noGrad(() => model.forward(x)).toArray();
      });
      out.set(logits, s * size * size);
    }
    return out;
  };
}

/** One image's result at one decision threshold. */
export interface ImageScore {
  threshold: number;
  /** Per-image convention of the metrics module: an empty target predicted empty scores 1. */
  dice: number;
  iou: number;
  /** NaN when undefined (nothing predicted; no crack in the mask). */
  precision: number;
  recall: number;
  counts: Counts;
}

export interface ImageResult {
  id: string;
  image: string;
  mask: string;
  /** At the model's resolution, one per threshold (the order of `thresholds`). */
  model: ImageScore[];
  /** At the photo's own resolution (with `nativeRes`). */
  native?: ImageScore[];
  /** The photo's own size (known with `nativeRes`). */
  width?: number;
  height?: number;
}

/** Model-resolution maps kept for the gallery: 0/1 prediction at the kept threshold, 0/1 truth. */
export interface KeptMaps {
  pred: Uint8Array;
  truth: Uint8Array;
}

export interface CollectOptions {
  size: number;
  batch: number;
  /** Decision thresholds (probabilities), e.g. [0.5, the validation threshold]. */
  thresholds: number[];
  /** Also score at each photo's own size (probabilities upsampled bilinearly, masks as they are). */
  nativeRes?: boolean;
  /** Which maps to keep: the `worst` N images by per-image Dice at threshold index `at`, or `ids`. */
  keep?: { at: number; worst: number } | { at: number; ids: Set<string> };
  skipBad?: boolean;
  label?: string;
}

export interface Collected {
  /** Global metrics per threshold, model resolution (as `evaluateAt`). */
  metrics: SegMetrics[];
  native?: SegMetrics[];
  images: ImageResult[];
  kept: Map<string, KeptMaps>;
}

/** Worst first: lower per-image Dice at threshold index `at`, then id. */
export function worstFirst(at: number) {
  return (a: ImageResult, b: ImageResult) =>
    a.model[at].dice - b.model[at].dice || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

function score(threshold: number, counts: Counts): ImageScore {
  const { dice, iou } = imageMetrics(counts);
  const { precision, recall } = metricsFromCounts(counts);
  return { threshold, dice, iou, precision, recall, counts };
}

/** Counts of `pred > cut` against `target > 0.5` over [start, start + n). */
function countAt(pred: ArrayLike<number>, target: ArrayLike<number>, start: number, n: number, cut: number): Counts {
  let tp = 0;
  let fp = 0;
  let fn = 0;
  let tn = 0;
  for (let i = start, end = start + n; i < end; i++) {
    const p = pred[i] > cut;
    const t = target[i] > 0.5;
    if (p && t) tp++;
    else if (p) fp++;
    else if (t) fn++;
    else tn++;
  }
  return { tp, fp, fn, tn };
}

const logit = (p: number) => Math.log(p / (1 - p));

/**
 * Runs `logitsOf` over `samples` once (in order, no augmentation) and scores every image. A
 * sample `skipBad` replaced in its batch is counted once, as itself.
 */
export async function collect(samples: Sample[], logitsOf: LogitsFn, opts: CollectOptions): Promise<Collected> {
  const { size, thresholds } = opts;
  const px = size * size;
  const loader = new BatchLoader(samples, {
    batchSize: opts.batch,
    size,
    shuffle: false,
    dropLast: false,
    augment: false,
    skipBad: opts.skipBad,
  });
  const byId = new Map(samples.map((s) => [s.id, s]));
  const accs = thresholds.map((threshold) => new SegMetricsAccumulator({ logits: true, threshold }));
  const nativeAccs = opts.nativeRes
    ? thresholds.map((threshold) => new SegMetricsAccumulator({ threshold }))
    : undefined;
  const cuts = thresholds.map(logit);
  const images: ImageResult[] = [];
  const seen = new Set<string>();
  let kept = new Map<string, KeptMaps>();
  const keep = opts.keep;
  const bar = new Progress(opts.label ?? 'eval ', loader.batchesPerEpoch);
  try {
    for (let b = 0; b < loader.batchesPerEpoch; b++) {
      const batch = await loader.next();
      const logits = await logitsOf(batch.images, batch.count);
      for (let j = 0; j < batch.count; j++) {
        const id = batch.ids[j];
        if (seen.has(id)) continue;
        seen.add(id);
        const sample = byId.get(id)!;
        const lg = logits.subarray(j * px, (j + 1) * px);
        const truth = batch.masks.subarray(j * px, (j + 1) * px);
        for (const acc of accs) acc.update(lg, truth, 1);
        const r: ImageResult = {
          id,
          image: sample.image,
          mask: sample.mask,
          model: thresholds.map((t, k) => score(t, countAt(lg, truth, 0, px, cuts[k]))),
        };
        if (nativeAccs) {
          const m = await loadMask(sample.mask, id, sample.maskEncoding);
          const prob = Float32Array.from(lg, (v) => 1 / (1 + Math.exp(-v)));
          const up = resizeBilinear(prob, size, size, 1, m.width, m.height);
          for (const acc of nativeAccs) acc.update(up, m.mask, 1);
          r.native = thresholds.map((t) => score(t, countAt(up, m.mask, 0, up.length, t)));
          r.width = m.width;
          r.height = m.height;
        }
        images.push(r);
        if (keep && ('ids' in keep ? keep.ids.has(id) : true)) {
          const cut = cuts[keep.at];
          kept.set(id, {
            pred: Uint8Array.from(lg, (v) => (v > cut ? 1 : 0)),
            truth: Uint8Array.from(truth, (v) => (v > 0.5 ? 1 : 0)),
          });
          // Bounded memory: the worst N seen so far, trimmed every 64 images (amortised).
          if ('worst' in keep && kept.size > keep.worst + 64) kept = trim(kept, images, keep.at, keep.worst);
        }
      }
      bar.update(b + 1, {});
    }
  } finally {
    loader.close();
  }
  if (keep && 'worst' in keep) kept = trim(kept, images, keep.at, keep.worst);
  return {
    metrics: accs.map((a) => a.result()),
    native: nativeAccs?.map((a) => a.result()),
    images,
    kept,
  };
}

function trim(kept: Map<string, KeptMaps>, images: ImageResult[], at: number, n: number): Map<string, KeptMaps> {
  const order = images.filter((r) => kept.has(r.id)).sort(worstFirst(at)).slice(0, n);
  return new Map(order.map((r) => [r.id, kept.get(r.id)!]));
}
