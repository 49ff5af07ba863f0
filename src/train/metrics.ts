/**
 * Segmentation metrics, streamed over batches: global pixel counts (TP/FP/FN/TN) at the decision
 * threshold → Dice (= F1), IoU, precision, recall, pixel accuracy; per-image mean Dice and IoU;
 * and a threshold sweep kept as per-threshold global counts (one histogram pass per image) to
 * report the best-Dice threshold.
 *
 * Conventions: a pixel is predicted crack when prob > threshold (logit > logit(threshold)); the
 * target is crack when > 0.5.
 * - Global (dataset) ratios are undefined, NaN, when their denominator is 0 (precision with nothing
 *   predicted, recall with no crack in the targets), and Dice, IoU and recall are NaN whenever the
 *   targets hold no crack pixel at all: a split without cracks cannot measure crack segmentation,
 *   and must never score 1.0. Tables print NaN as "n/a", JSON as null.
 * - Per image (the means), an image without crack scores Dice = IoU = 1 when nothing is predicted
 *   and 0 otherwise (the usual per-image convention); the means are NaN when no image of the set
 *   holds a crack pixel, for the same reason as above.
 */

export interface Counts {
  tp: number;
  fp: number;
  fn: number;
  tn: number;
}

export interface RatioMetrics {
  dice: number;
  iou: number;
  precision: number;
  recall: number;
  accuracy: number;
}

export interface SegMetrics extends RatioMetrics {
  /** Per-image Dice and IoU averaged over images. */
  meanDice: number;
  meanIoU: number;
  threshold: number;
  images: number;
  pixels: number;
  counts: Counts;
  /** Best threshold of the sweep by global Dice (absent without a sweep). */
  best?: { threshold: number; dice: number; iou: number };
  sweep?: ({ threshold: number } & RatioMetrics)[];
}

/** Per-image convention: 0/0 := 1 when nothing went wrong (`errors` = 0), else 0. */
function ratio(num: number, den: number, errors: number): number {
  if (den === 0) return errors === 0 ? 1 : 0;
  return num / den;
}

/** A ratio that is undefined (NaN) when its denominator is 0. */
const strict = (num: number, den: number) => (den === 0 ? NaN : num / den);

/**
 * Global metrics of pixel counts: NaN where undefined (no crack in the targets: Dice, IoU,
 * recall; nothing predicted: precision).
 */
export function metricsFromCounts(c: Counts): RatioMetrics {
  const { tp, fp, fn, tn } = c;
  const noCrack = tp + fn === 0;
  return {
    dice: noCrack ? NaN : strict(2 * tp, 2 * tp + fp + fn),
    iou: noCrack ? NaN : strict(tp, tp + fp + fn),
    precision: strict(tp, tp + fp),
    recall: strict(tp, tp + fn),
    accuracy: strict(tp + tn, tp + tn + fp + fn),
  };
}

/** Per-image Dice and IoU (convention above: an empty target predicted empty scores 1). */
export function imageMetrics(c: Counts): { dice: number; iou: number } {
  const { tp, fp, fn } = c;
  return { dice: ratio(2 * tp, 2 * tp + fp + fn, fp + fn), iou: ratio(tp, tp + fp + fn, fp + fn) };
}

/** 0.05, 0.10, ..., 0.95. */
export const DEFAULT_SWEEP = Array.from({ length: 19 }, (_, i) => Math.round((i + 1) * 5) / 100);

export interface AccumulatorOptions {
  /** Decision threshold on probabilities (default 0.5). */
  threshold?: number;
  /** Inputs are logits, not probabilities (compared against logit(threshold)). */
  logits?: boolean;
  /** Sweep thresholds (probabilities), DEFAULT_SWEEP by default, false for none. */
  sweep?: number[] | false;
}

const logit = (p: number) => Math.log(p / (1 - p));

export class SegMetricsAccumulator {
  readonly threshold: number;
  private readonly logits: boolean;
  /** Sorted sweep thresholds (including the decision threshold), in the input's units. */
  private readonly probTh: number[];
  private readonly cutTh: Float64Array;
  private readonly mainIndex: number;
  private readonly hasSweep: boolean;
  /** hist[k]: pixels whose value exceeds exactly the k lowest thresholds, by target class. */
  private pos: Float64Array;
  private neg: Float64Array;
  private images = 0;
  private sumDice = 0;
  private sumIoU = 0;

  constructor(opts: AccumulatorOptions = {}) {
    this.threshold = opts.threshold ?? 0.5;
    this.logits = opts.logits ?? false;
    const sweep = opts.sweep === false ? [] : (opts.sweep ?? DEFAULT_SWEEP);
    this.hasSweep = sweep.length > 0;
    for (const t of [...sweep, this.threshold]) {
      if (!(t > 0 && t < 1)) throw new Error(`metrics: thresholds must be in (0, 1), got ${t}`);
    }
    this.probTh = [...new Set([...sweep, this.threshold])].sort((a, b) => a - b);
    this.cutTh = Float64Array.from(this.probTh, (t) => (this.logits ? logit(t) : t));
    this.mainIndex = this.probTh.indexOf(this.threshold);
    this.pos = new Float64Array(this.probTh.length + 1);
    this.neg = new Float64Array(this.probTh.length + 1);
  }

  reset(): void {
    this.pos.fill(0);
    this.neg.fill(0);
    this.images = this.sumDice = this.sumIoU = 0;
  }

  /**
   * Adds `batch` images: `pred` (probabilities or logits) and `target` (0/1) hold
   * batch x pixels values, image-major.
   */
  update(pred: ArrayLike<number>, target: ArrayLike<number>, batch = 1): void {
    if (pred.length !== target.length || pred.length % batch !== 0) {
      throw new Error(
        `metrics.update: expected pred and target of equal length divisible by batch ${batch}, ` +
          `got ${pred.length} and ${target.length}`,
      );
    }
    const px = pred.length / batch;
    const th = this.cutTh;
    const nt = th.length;
    const main = this.mainIndex;
    for (let b = 0; b < batch; b++) {
      const pos = new Float64Array(nt + 1);
      const neg = new Float64Array(nt + 1);
      for (let i = b * px, end = (b + 1) * px; i < end; i++) {
        const v = pred[i];
        // k = number of thresholds strictly below v: positive for thresholds 0..k-1.
        let lo = 0;
        let hi = nt;
        while (lo < hi) {
          const mid = (lo + hi) >> 1;
          if (v > th[mid]) lo = mid + 1;
          else hi = mid;
        }
        if (target[i] > 0.5) pos[lo]++;
        else neg[lo]++;
      }
      const c = countsAt(pos, neg, main);
      const m = imageMetrics(c);
      this.sumDice += m.dice;
      this.sumIoU += m.iou;
      this.images++;
      for (let k = 0; k <= nt; k++) {
        this.pos[k] += pos[k];
        this.neg[k] += neg[k];
      }
    }
  }

  /** Global counts at sweep threshold index j. */
  countsAt(j: number): Counts {
    return countsAt(this.pos, this.neg, j);
  }

  result(): SegMetrics {
    const counts = this.countsAt(this.mainIndex);
    const noCrack = counts.tp + counts.fn === 0;
    const out: SegMetrics = {
      ...metricsFromCounts(counts),
      meanDice: noCrack ? NaN : strict(this.sumDice, this.images),
      meanIoU: noCrack ? NaN : strict(this.sumIoU, this.images),
      threshold: this.threshold,
      images: this.images,
      pixels: counts.tp + counts.fp + counts.fn + counts.tn,
      counts,
    };
    if (this.hasSweep) {
      out.sweep = this.probTh.map((threshold, j) => ({
        threshold,
        ...metricsFromCounts(this.countsAt(j)),
      }));
      // NaN never wins; with no defined Dice at all the best is undefined at the decision threshold.
      const best = out.sweep.reduce((a, b) => (b.dice > a.dice || Number.isNaN(a.dice) ? b : a));
      out.best = Number.isNaN(best.dice)
        ? { threshold: this.threshold, dice: NaN, iou: NaN }
        : { threshold: best.threshold, dice: best.dice, iou: best.iou };
    }
    return out;
  }
}

/** Pixels in bins k > j exceed threshold j. */
function countsAt(pos: Float64Array, neg: Float64Array, j: number): Counts {
  let tp = 0;
  let fn = 0;
  let fp = 0;
  let tn = 0;
  for (let k = 0; k < pos.length; k++) {
    if (k > j) {
      tp += pos[k];
      fp += neg[k];
    } else {
      fn += pos[k];
      tn += neg[k];
    }
  }
  return { tp, fp, fn, tn };
}

const COLUMNS: [keyof SegMetrics, string][] = [
  ['dice', 'Dice'],
  ['iou', 'IoU'],
  ['recall', 'Recall'],
  ['precision', 'Precision'],
  ['accuracy', 'Accuracy'],
  ['meanDice', 'mDice/img'],
  ['meanIoU', 'mIoU/img'],
];

/**
 * A fixed-width table, one row per result (e.g. zero-shot vs fine-tuned, side by side):
 * Dice / IoU / Recall / Precision / Accuracy at the decision threshold, per-image means, and the
 * best sweep threshold when there is one.
 */
/** A metric for a table: 4 decimals, or "n/a" when undefined. */
export function fmtMetric(v: number, digits = 4): string {
  return Number.isFinite(v) ? v.toFixed(digits) : 'n/a';
}

export function formatTable(results: { name: string; metrics: SegMetrics }[]): string {
  const nameW = Math.max(5, ...results.map((r) => r.name.length));
  const colW = 10;
  const withBest = results.some((r) => r.metrics.best);
  const head = [
    'model'.padEnd(nameW),
    ...COLUMNS.map(([, t]) => t.padStart(colW)),
    ...(withBest ? ['best thr (Dice)'.padStart(18)] : []),
  ].join(' ');
  const lines = [head, '-'.repeat(head.length)];
  const empty = results.filter((r) => r.metrics.counts.tp + r.metrics.counts.fn === 0);
  for (const { name, metrics: m } of results) {
    const cells = COLUMNS.map(([k]) => fmtMetric(m[k] as number).padStart(colW));
    const best = m.best ? `${m.best.threshold.toFixed(2)} (${fmtMetric(m.best.dice)})` : '-';
    lines.push([name.padEnd(nameW), ...cells, ...(withBest ? [best.padStart(18)] : [])].join(' '));
  }
  for (const r of empty) {
    lines.push(`n/a: ${r.name}: no crack pixel in any target mask, Dice/IoU/recall are undefined`);
  }
  return lines.join('\n');
}

/** JSON of named results (the sweep included), for `--json` and run records; undefined is null. */
export function metricsJson(results: { name: string; metrics: SegMetrics }[]): string {
  return JSON.stringify(
    Object.fromEntries(results.map((r) => [r.name, r.metrics])),
    (_, v) => {
      if (typeof v !== 'number') return v;
      if (!Number.isFinite(v)) return null;
      return Number.isInteger(v) ? v : Number(v.toFixed(6));
    },
    2,
  );
}
