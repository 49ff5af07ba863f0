import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, describe, expect, it } from 'vitest';
import { Rng } from '../src/util/random.js';
import {
  DEFAULT_SWEEP,
  SegMetricsAccumulator,
  formatTable,
  metricsFromCounts,
  metricsJson,
} from '../src/train/metrics.js';
import { curvesSvg, renderCurves } from '../src/train/plot.js';

const tmp = mkdtempSync(join(tmpdir(), 'sam2-metrics-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('segmentation metrics', () => {
  it('matches hand-counted values', () => {
    const acc = new SegMetricsAccumulator({ sweep: false });
    acc.update([0.9, 0.2, 0.7, 0.4, 0.6, 0.1], [1, 1, 0, 0, 1, 0], 2);
    const m = acc.result();
    expect(m.counts).toEqual({ tp: 2, fp: 1, fn: 1, tn: 2 });
    expect(m.dice).toBeCloseTo(2 / 3, 12);
    expect(m.iou).toBeCloseTo(0.5, 12);
    expect(m.precision).toBeCloseTo(2 / 3, 12);
    expect(m.recall).toBeCloseTo(2 / 3, 12);
    expect(m.accuracy).toBeCloseTo(4 / 6, 12);
    // Image A: TP1 FP1 FN1 → Dice 0.5, IoU 1/3; image B: TP1 only → 1, 1.
    expect(m.meanDice).toBeCloseTo(0.75, 12);
    expect(m.meanIoU).toBeCloseTo(2 / 3, 12);
    expect(m.images).toBe(2);
    expect(m.pixels).toBe(6);
    expect(m.sweep).toBeUndefined();
  });

  it('follows the zero-denominator conventions (undefined is NaN, never 1)', () => {
    // No crack in the targets: Dice, IoU and recall are undefined, whatever was predicted.
    const perfectEmpty = metricsFromCounts({ tp: 0, fp: 0, fn: 0, tn: 10 });
    expect(perfectEmpty).toEqual({ dice: NaN, iou: NaN, precision: NaN, recall: NaN, accuracy: 1 });
    const missed = metricsFromCounts({ tp: 0, fp: 0, fn: 3, tn: 7 });
    expect([missed.dice, missed.iou, missed.precision, missed.recall]).toEqual([0, 0, NaN, 0]);
    const spurious = metricsFromCounts({ tp: 0, fp: 3, fn: 0, tn: 7 });
    expect([spurious.dice, spurious.iou, spurious.precision, spurious.recall]).toEqual([NaN, NaN, 0, NaN]);
    // Per image: an empty image predicted empty scores 1 in the mean.
    const acc = new SegMetricsAccumulator();
    acc.update([0.1, 0.2, 0.9, 0.8], [0, 0, 1, 1], 2);
    expect(acc.result().meanDice).toBe(1);
  });

  it('matches a direct float64 count at every sweep threshold (probabilities and logits)', () => {
    const r = new Rng(1234);
    const B = 3;
    const P = 37 * 29;
    const prob = new Float32Array(B * P);
    const target = new Float32Array(B * P);
    for (let i = 0; i < prob.length; i++) {
      // Some values sit on thresholds (exactly for 0.25/0.5/0.75 in f32) to pin the strict '>'.
      prob[i] = r.next() < 0.05 ? DEFAULT_SWEEP[r.int(19)] : r.next();
      target[i] = r.next() < 0.5 * prob[i] + 0.1 ? 1 : 0;
    }
    const acc = new SegMetricsAccumulator();
    acc.update(prob.subarray(0, P), target.subarray(0, P));
    acc.update(prob.subarray(P), target.subarray(P), B - 1);
    const m = acc.result();
    const direct = (t: number) => {
      const c = { tp: 0, fp: 0, fn: 0, tn: 0 };
      for (let i = 0; i < prob.length; i++) {
        const p = prob[i] > t ? 1 : 0; // the f32 input against the f64 threshold
        const y = target[i];
        if (p && y) c.tp++;
        else if (p) c.fp++;
        else if (y) c.fn++;
        else c.tn++;
      }
      return c;
    };
    let bestDice = -1;
    let bestT = 0;
    m.sweep!.forEach((row, j) => {
      const c = direct(row.threshold);
      const want = metricsFromCounts(c);
      expect(acc.countsAt(j), `t=${row.threshold}`).toEqual(c);
      for (const k of ['dice', 'iou', 'precision', 'recall', 'accuracy'] as const) {
        expect(Math.abs(row[k] - want[k])).toBeLessThan(1e-12);
      }
      if (want.dice > bestDice) [bestDice, bestT] = [want.dice, row.threshold];
    });
    expect(m.best).toEqual({ threshold: bestT, dice: bestDice, iou: expect.any(Number) });
    expect(m.counts).toEqual(direct(0.5));
    // Per-image means recomputed directly.
    let sd = 0;
    for (let b = 0; b < B; b++) {
      let tp = 0;
      let fp = 0;
      let fn = 0;
      for (let i = b * P; i < (b + 1) * P; i++) {
        const p = prob[i] > 0.5;
        if (p && target[i]) tp++;
        else if (p) fp++;
        else if (target[i]) fn++;
      }
      sd += (2 * tp) / (2 * tp + fp + fn);
    }
    expect(Math.abs(m.meanDice - sd / B)).toBeLessThan(1e-12);

    // Logits (away from the exact thresholds, where logit rounding could flip a comparison).
    const near = (p: number) => DEFAULT_SWEEP.some((t) => Math.abs(p - t) < 1e-6);
    const off = prob.map((p) => (near(p) ? p + 0.001 : p));
    const pr = new SegMetricsAccumulator();
    const lg = new SegMetricsAccumulator({ logits: true });
    pr.update(off, target, B);
    lg.update(off.map((p) => Math.log(p / (1 - p))), target, B);
    expect(lg.result().sweep).toEqual(pr.result().sweep);
  });

  it('formats a side-by-side table and JSON', () => {
    const a = new SegMetricsAccumulator();
    a.update([0.9, 0.1, 0.8, 0.3], [1, 0, 0, 1]);
    const b = new SegMetricsAccumulator();
    b.update([0.9, 0.1, 0.2, 0.7], [1, 0, 0, 1]);
    const rows = [
      { name: 'zero-shot', metrics: a.result() },
      { name: 'lora', metrics: b.result() },
    ];
    const t = formatTable(rows);
    const lines = t.split('\n');
    expect(lines[0]).toMatch(/model\s+Dice\s+IoU\s+Recall\s+Precision\s+Accuracy/);
    // zero-shot at 0.5: predicted [1,0,1,0] vs [1,0,0,1]: TP 1, FP 1, FN 1, TN 1, so Dice 2/4,
    // IoU 1/3, recall 1/2, precision 1/2, accuracy 2/4; one image, so mean Dice/IoU the same.
    // Best of the sweep (strict >): t 0.10 predicts [1,0,1,1], Dice 4/5 (0.05 gives 4/6).
    // lora: [1,0,0,1] is all right at 0.5; the first threshold with Dice 1 is 0.20.
    const row = (name: string, v: string[], best: string) =>
      new RegExp(`^${name}\\s+${v.map((x) => x.replace('.', '\\.')).join('\\s+')}\\s+${best.replace(/[.()]/g, '\\$&')}$`);
    expect(lines[2]).toMatch(row('zero-shot', ['0.5000', '0.3333', '0.5000', '0.5000', '0.5000', '0.5000', '0.3333'], '0.10 (0.8000)'));
    expect(lines[3]).toMatch(row('lora', Array(7).fill('1.0000'), '0.20 (1.0000)'));
    const j = JSON.parse(metricsJson(rows));
    expect(j.lora.dice).toBe(1);
    expect(j['zero-shot']).toMatchObject({ dice: 0.5, precision: 0.5, recall: 0.5, accuracy: 0.5 });
    expect(j['zero-shot'].iou).toBeCloseTo(1 / 3, 6); // JSON keeps 6 decimals
    expect(j['zero-shot'].sweep.length).toBe(19);
  });
});

describe('plot', () => {
  it('renders curves to a PNG with axes and a legend', async () => {
    const series = [
      {
        name: 'train <loss>',
        points: Array.from({ length: 30 }, (_, i) => [i, 1 / (i + 1)] as [number, number]),
      },
      { name: 'val', points: [[0, 0.9], [10, 0.3], [20, Number.NaN], [29, 0.1]] as [number, number][] },
      { name: 'single', points: [[5, 0.5]] as [number, number][] },
    ];
    const opts = { title: 'Loss', xLabel: 'step', yLabel: 'loss', width: 400, height: 300 };
    const svg = curvesSvg(series, opts);
    // Title, axis labels and every series name in the legend (escaped).
    for (const text of ['Loss', '>step<', '>loss<', 'train &#60;loss&#62;', '>val<', '>single<']) {
      expect(svg, text).toContain(text);
    }
    expect(svg).not.toContain('NaN');
    const path = join(tmp, 'curves.png');
    await renderCurves(path, series, { ...opts, logY: true });
    const meta = await sharp(path).metadata();
    expect([meta.format, meta.width, meta.height]).toEqual(['png', 400, 300]);
    // No series at all still gives an image of the requested size (axes only).
    await renderCurves(join(tmp, 'empty.png'), [], opts);
    const empty = await sharp(join(tmp, 'empty.png')).metadata();
    expect([empty.format, empty.width, empty.height]).toEqual(['png', 400, 300]);
  });
});
