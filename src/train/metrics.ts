/**
 * Segmentation metrics, streamed over batches: global pixel counts (TP/FP/FN/TN) at the decision
 * threshold → Dice (= F1), IoU, precision, recall, pixel accuracy; per-image mean Dice and IoU;
 * and a threshold sweep kept as per-threshold global counts (one histogram pass per image) to
 * report the best-Dice threshold.
 *
 * Conventions: a pixel is predicted crack when prob > threshold (logit > logit(threshold)); the
 * target is crack when > 0.5. A ratio whose denominator is 0 is 1 when there is no error in it
 * and 0 otherwise: Dice = IoU = 1 for an empty prediction of an empty target; precision with
 * nothing predicted is 1 if the target is empty too, else 0; recall with an empty target is 1 if
 * nothing was predicted, else 0.
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

/** 0/0 := 1 when nothing went wrong (`errors` = 0), else a plain ratio (0 if denominator is 0). */
function ratio(num: number, den: number, errors: number): number {
  if (den === 0) return errors === 0 ? 1 : 0;
  return num / den;
}

export function metricsFromCounts(c: Counts): RatioMetrics {
  const { tp, fp, fn, tn } = c;
  return {
    dice: ratio(2 * tp, 2 * tp + fp + fn, fp + fn),
    iou: ratio(tp, tp + fp + fn, fp + fn),
    precision: ratio(tp, tp + fp, fn),
    recall: ratio(tp, tp + fn, fp),
    accuracy: ratio(tp + tn, tp + tn + fp + fn, fp + fn),
  };
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
      const m = metricsFromCounts(c);
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
    const out: SegMetrics = {
      ...metricsFromCounts(counts),
      meanDice: ratio(this.sumDice, this.images, 0),
      meanIoU: ratio(this.sumIoU, this.images, 0),
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
      const best = out.sweep.reduce((a, b) => (b.dice > a.dice ? b : a));
      out.best = { threshold: best.threshold, dice: best.dice, iou: best.iou };
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
  for (const { name, metrics: m } of results) {
    const cells = COLUMNS.map(([k]) => (m[k] as number).toFixed(4).padStart(colW));
    const best = m.best ? `${m.best.threshold.toFixed(2)} (${m.best.dice.toFixed(4)})` : '-';
    lines.push([name.padEnd(nameW), ...cells, ...(withBest ? [best.padStart(18)] : [])].join(' '));
  }
  return lines.join('\n');
}

/** JSON of named results (the sweep included), for `--json` and run records. */
export function metricsJson(results: { name: string; metrics: SegMetrics }[]): string {
  return JSON.stringify(
    Object.fromEntries(results.map((r) => [r.name, r.metrics])),
    (_, v) => (typeof v === 'number' && !Number.isInteger(v) ? Number(v.toFixed(6)) : v),
    2,
  );
}
