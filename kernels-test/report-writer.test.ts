/**
 * The report without a GPU or a browser: the evaluation pass (driven by a fixed stand-in for the
 * model) against per-image counts computed here in float64, native-resolution scores against a
 * float64 bilinear reference, the gallery cap and its note, "n/a" for a split without cracks,
 * training curves from a resumed log, and a page with no external resource whose numbers are
 * metrics.json's.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Sample, openDataset } from '../src/data/dataset.js';
import { loadMask, loadPair } from '../src/data/decode.js';
import { writeSyntheticDataset } from '../src/data/synthetic.js';
import { type LogitsFn, collect } from '../src/report/collect.js';
import type { AdapterResult, ReportJson } from '../src/report/data.js';
import { type NumberFormat, formatValue, valueAt } from '../src/report/html.js';
import { readTrainingCurves, runDirOf } from '../src/report/training.js';
import { writeReport } from '../src/report/write.js';

const SIZE = 32; // model side; the synthetic photos are 80 px, so native resolution differs
const PHOTO = 80;
let dir: string;
let samples: Sample[];

/** A fixed stand-in for a model: dark pixels (cracks) get positive logits, plus a bias. */
function fakeModel(bias: number): LogitsFn {
  return async (images, count) => {
    const out = new Float32Array(count * SIZE * SIZE);
    for (let i = 0; i < out.length; i++) {
      out[i] = -2.5 * (images[i * 3] + images[i * 3 + 1] + images[i * 3 + 2]) - 2 + bias;
    }
    return out;
  };
}

/** float64 reference: align_corners=False bilinear of a [sh, sw] map to [dh, dw]. */
function bilinear64(src: ArrayLike<number>, sw: number, sh: number, dw: number, dh: number): Float64Array {
  const out = new Float64Array(dw * dh);
  const clamp = (v: number, hi: number) => Math.min(Math.max(v, 0), hi);
  for (let y = 0; y < dh; y++) {
    const sy = clamp(((y + 0.5) * sh) / dh - 0.5, sh - 1);
    const y0 = Math.floor(sy);
    const y1 = Math.min(y0 + 1, sh - 1);
    for (let x = 0; x < dw; x++) {
      const sx = clamp(((x + 0.5) * sw) / dw - 0.5, sw - 1);
      const x0 = Math.floor(sx);
      const x1 = Math.min(x0 + 1, sw - 1);
      const fx = sx - x0;
      const fy = sy - y0;
      out[y * dw + x] = (1 - fy) * ((1 - fx) * src[y0 * sw + x0] + fx * src[y0 * sw + x1]) +
        fy * ((1 - fx) * src[y1 * sw + x0] + fx * src[y1 * sw + x1]);
    }
  }
  return out;
}

function counts(pred: ArrayLike<number>, truth: ArrayLike<number>, cut: number) {
  const c = { tp: 0, fp: 0, fn: 0, tn: 0 };
  for (let i = 0; i < pred.length; i++) {
    const p = pred[i] > cut;
    const t = truth[i] > 0.5;
    if (p && t) c.tp++;
    else if (p) c.fp++;
    else if (t) c.fn++;
    else c.tn++;
  }
  return c;
}

/** The numbers of a page: every element carrying data-k / data-f, with its text. */
function pageNumbers(html: string) {
  return [...html.matchAll(/data-k="([^"]+)" data-f="([^"]+)">([^<]*)</g)].map((m) => ({ k: m[1], f: m[2], text: m[3] }));
}

async function result(name: string, bias: number, keep: Parameters<typeof collect>[2]['keep'], s = samples,
  threshold = 0.35): Promise<AdapterResult> {
  const thresholds = [0.5, threshold];
  const collected = await collect(s, fakeModel(bias), { size: SIZE, batch: 3, thresholds, nativeRes: true, keep, label: 'test ' });
  return { info: { name, size: SIZE, valThreshold: threshold, mode: 'lora', model: 'nano' }, thresholds, collected };
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sam2-lora-report-unit-'));
  await writeSyntheticDataset(join(dir, 'data'), { train: 1, val: 1, test: 7, size: PHOTO, seed: 4 });
  samples = await openDataset({ root: join(dir, 'data'), split: 'test' });
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('report evaluation pass', () => {
  it('per-image and global counts at model and native resolution match float64 references', async () => {
    const r = await result('a', 0, { at: 1, worst: 3 });
    const c = r.collected;
    expect(c.images.map((x) => x.id)).toEqual(samples.map((s) => s.id));
    const logitsOf = fakeModel(0);
    const sum = [0, 1].map(() => ({ tp: 0, fp: 0, fn: 0, tn: 0 }));
    const nsum = [0, 1].map(() => ({ tp: 0, fp: 0, fn: 0, tn: 0 }));
    for (const [i, s] of samples.entries()) {
      const pair = await loadPair(s, SIZE);
      const lg = await logitsOf(pair.image, 1);
      const mask = await loadMask(s.mask, s.id);
      expect([mask.width, mask.height]).toEqual([PHOTO, PHOTO]);
      const up = bilinear64(Array.from(lg, (v) => 1 / (1 + Math.exp(-v))), SIZE, SIZE, PHOTO, PHOTO);
      r.thresholds.forEach((t, k) => {
        const m = counts(lg, pair.mask, Math.log(t / (1 - t)));
        expect(c.images[i].model[k].counts, `${s.id} model @${t}`).toEqual(m);
        const n = counts(up, mask.mask, t);
        // f32 vs f64 interpolation may flip a pixel sitting on the threshold: none did here.
        expect(c.images[i].native![k].counts, `${s.id} native @${t}`).toEqual(n);
        for (const key of ['tp', 'fp', 'fn', 'tn'] as const) {
          sum[k][key] += m[key];
          nsum[k][key] += n[key];
        }
      });
    }
    r.thresholds.forEach((_, k) => {
      expect(c.metrics[k].counts).toEqual(sum[k]);
      expect(c.native![k].counts).toEqual(nsum[k]);
      const mean = c.images.reduce((a, x) => a + x.model[k].dice, 0) / c.images.length;
      expect(Math.abs(c.metrics[k].meanDice - mean)).toBeLessThan(1e-12);
    });
    expect(c.native![1].pixels).toBe(samples.length * PHOTO * PHOTO);
    // Kept maps: the 3 worst at the validation threshold, nothing else.
    const worst = [...c.images].sort((a, b) => a.model[1].dice - b.model[1].dice || (a.id < b.id ? -1 : 1))
      .slice(0, 3).map((x) => x.id);
    expect([...c.kept.keys()].sort()).toEqual([...worst].sort());
  });
});

describe('gallery maps', () => {
  it('keeps exactly the N worst of a set larger than N + 64 (trimmed while streaming)', async () => {
    await writeSyntheticDataset(join(dir, 'many'), { train: 1, val: 1, test: 75, size: SIZE, seed: 9 });
    const many = await openDataset({ root: join(dir, 'many'), split: 'test' });
    const c = await collect(many, fakeModel(0.5), { size: SIZE, batch: 4, thresholds: [0.5], keep: { at: 0, worst: 5 } });
    const worst = [...c.images].sort((a, b) => a.model[0].dice - b.model[0].dice || (a.id < b.id ? -1 : 1))
      .slice(0, 5).map((x) => x.id);
    expect(c.images.length).toBe(75);
    expect([...c.kept.keys()].sort()).toEqual(worst.sort());
    // The kept prediction is the image's own: its pixel count is the score's TP + FP.
    for (const id of worst) {
      const s = c.images.find((x) => x.id === id)!.model[0].counts;
      expect(c.kept.get(id)!.pred.reduce((a, v) => a + v, 0)).toBe(s.tp + s.fp);
      expect(c.kept.get(id)!.truth.reduce((a, v) => a + v, 0)).toBe(s.tp + s.fn);
    }
  });
});

describe('report folder', () => {
  it('caps the gallery with a note, compares two adapters, and its page numbers are metrics.json', async () => {
    const a = await result('head only', -1, { at: 1, worst: 3 });
    const ids = new Set(a.collected.kept.keys());
    const b = await result('LoRA + head', 1, { at: 1, ids }, samples, 0.4);
    const out = join(dir, 'report');
    // Over an earlier report with a larger gallery: its images must not linger (others stay).
    mkdirSync(join(out, 'img'), { recursive: true });
    writeFileSync(join(out, 'img', '0009-photo.jpg'), 'from an earlier report');
    writeFileSync(join(out, 'img', 'notes.txt'), 'a file of the user');
    const w = await writeReport(out, { dataset: 'synthetic test', adapters: [a, b], gallery: 3 });
    const doc: ReportJson = JSON.parse(readFileSync(w.json, 'utf8'));
    const html = readFileSync(w.index, 'utf8');

    expect(doc.gallery).toMatchObject({ total: samples.length, shown: 3 });
    const shown = doc.gallery.entries.map((e) => e.id);
    expect(new Set(shown)).toEqual(ids);
    const dice = doc.gallery.entries.map((e) => e.scores[0].model[1].dice ?? NaN);
    expect([...dice].sort((x, y) => x - y)).toEqual(dice);
    expect(html).toContain(`data-left-out="${samples.length - 3}"`);
    expect((html.match(/<article class="entry"/g) ?? []).length).toBe(3);
    // Photo, truth and one overlay per adapter, per entry; all exist and are the page's images.
    const srcs = [...html.matchAll(/<img src="([^"]+)"/g)].map((m) => m[1]);
    expect(srcs.length).toBe(3 * 4);
    for (const s of srcs) expect(existsSync(join(out, s)), s).toBe(true);
    expect(readdirSync(join(out, 'img')).sort()).toEqual([...srcs.map((x) => x.slice(4)), 'notes.txt'].sort());
    const meta = await sharp(join(out, srcs[2])).metadata();
    expect([meta.width, meta.height]).toEqual([256, 256]);

    // Tables: 2 resolutions x 2 adapters x 2 thresholds, each metric on the page = the file's.
    expect(doc.tables.map((t) => t.rows.length)).toEqual([4, 4]);
    expect(doc.tables[1].rows[3].metrics.dice).toBeCloseTo(b.collected.native![1].dice, 6);
    const nums = pageNumbers(html);
    expect(nums.length).toBeGreaterThan(2 * 4 * 10 + 3 * 2 * 4 * 7);
    for (const n of nums) expect(n.text, n.k).toBe(formatValue(valueAt(doc, n.k), n.f as NumberFormat));

    // Offline: no script, no external URL (the SVG namespace is an identifier, not a fetch).
    expect(html).not.toMatch(/<script|<link|@import/i);
    expect(html.replace(/xmlns="http:\/\/www\.w3\.org\/2000\/svg"/g, '')).not.toMatch(/https?:\/\//);
    expect((html.match(/<svg/g) ?? []).length).toBe(4);
  });

  it('shows n/a, never 1.0, for a split without any crack pixel', async () => {
    const root = join(dir, 'empty');
    for (const k of ['images', 'masks']) mkdirSync(join(root, k), { recursive: true });
    for (const s of samples.slice(0, 3)) {
      writeFileSync(join(root, 'images', `${s.id}.jpg`), readFileSync(s.image));
      await sharp({ create: { width: PHOTO, height: PHOTO, channels: 3, background: '#000' } })
        .png().toFile(join(root, 'masks', `${s.id}.png`));
    }
    const empty = await openDataset({ images: join(root, 'images'), masks: join(root, 'masks') });
    const a = await result('a', 0, { at: 1, worst: 200 }, empty);
    const w = await writeReport(join(dir, 'report-empty'), { dataset: 'no cracks', adapters: [a], gallery: 200 });
    const doc: ReportJson = JSON.parse(readFileSync(w.json, 'utf8'));
    for (const t of doc.tables) {
      for (const r of t.rows) {
        expect(r.metrics).toMatchObject({ dice: null, iou: null, recall: null, meanDice: null, meanIoU: null });
      }
    }
    const html = readFileSync(w.index, 'utf8');
    const cell = pageNumbers(html).find((n) => n.k === 'tables.0.rows.0.metrics.dice');
    expect(cell?.text).toBe('n/a');
    expect(html).toContain('no crack pixel in any mask');
  });
});

describe('training curves', () => {
  it('reads log.jsonl (resumed steps: last wins; a torn last line skipped), else history.json', () => {
    const run = join(dir, 'run');
    mkdirSync(join(run, 'best'), { recursive: true });
    const lines = [
      { type: 'step', step: 1, loss: 0.9 }, { type: 'step', step: 2, loss: 0.8 },
      { type: 'epoch', epoch: 1, step: 2, loss: 0.85, val: { dice: null } },
      { type: 'step', step: 3, loss: 0.7 },
      // resumed from step 2's checkpoint:
      { type: 'step', step: 3, loss: 0.65 }, { type: 'step', step: 4, loss: 0.6 },
      { type: 'epoch', epoch: 2, step: 4, loss: 0.62, val: { dice: 0.31 } },
    ].map((r) => JSON.stringify(r));
    writeFileSync(join(run, 'log.jsonl'), `${lines.join('\n')}\n{"type":"st`);
    expect(runDirOf(join(run, 'best'))).toBe(run);
    expect(readTrainingCurves(run)).toEqual({
      source: join(run, 'log.jsonl'),
      loss: [[1, 0.9], [2, 0.8], [3, 0.65], [4, 0.6]],
      valDice: [[4, 0.31]],
    });
    const old = join(dir, 'old-run');
    mkdirSync(old);
    writeFileSync(join(old, 'history.json'), JSON.stringify({
      history: [{ step: 1, loss: 1 }, { step: 2, loss: 0.5 }], epochs: [{ epoch: 1, step: 2, loss: 0.7, valDice: 0.2 }],
    }));
    expect(readTrainingCurves(old)).toMatchObject({ loss: [[1, 1], [2, 0.5]], valDice: [[2, 0.2]] });
    expect(readTrainingCurves(join(dir, 'data'))).toBeNull();
    expect(runDirOf(join(dir, 'data'))).toBeNull();
  });
});
