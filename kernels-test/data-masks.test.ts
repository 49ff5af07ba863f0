/**
 * Mask encodings: 0/255, 0/1, palette, 16-bit and JPEG-noisy masks are detected per dataset and
 * binarised to the same crack pixels; mixed encodings are an error naming a file; a split without
 * any crack pixel warns and its Dice/IoU are undefined (NaN), never 1.
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, describe, expect, it } from 'vitest';
import { openDataset } from '../src/data/dataset.js';
import { SampleError, checkSamples, loadPair } from '../src/data/decode.js';
import { SegMetricsAccumulator, formatTable, metricsJson } from '../src/train/metrics.js';
import { Rng } from '../src/util/random.js';

const tmp = mkdtempSync(join(tmpdir(), 'sam2-masks-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const W = 24;
const H = 16;
const SEED = 4242;
console.log(`data-masks: seed ${SEED}`);

/** A random blob pattern per sample: a few filled rectangles (thick, so JPEG keeps them). */
function pattern(rng: Rng): Uint8Array {
  const p = new Uint8Array(W * H);
  for (let r = 0; r < 3; r++) {
    const x0 = rng.int(W - 8);
    const y0 = rng.int(H - 6);
    for (let y = y0; y < y0 + 6; y++) for (let x = x0; x < x0 + 8; x++) p[y * W + x] = 1;
  }
  return p;
}

type Enc = '0/255' | '0/1' | 'palette' | '16-bit 0/1' | '16-bit 0/65535' | 'jpeg 0/255' | 'rgb red';

async function writeMask(path: string, p: Uint8Array, enc: Enc): Promise<void> {
  const raw = (ch: 1 | 3) => ({ raw: { width: W, height: H, channels: ch } });
  if (enc === '0/255' || enc === '0/1' || enc === 'jpeg 0/255') {
    const on = enc === '0/1' ? 1 : 255;
    const img = sharp(Buffer.from(p.map((v) => v * on)), raw(1));
    await (enc === 'jpeg 0/255' ? img.jpeg({ quality: 80 }) : img.toColourspace('b-w').png())
      .toFile(path);
  } else if (enc === 'palette' || enc === 'rgb red') {
    // Dark red crack on black: its grey level (~27 or 60) is far below the classic > 127 rule.
    const rgb = Buffer.alloc(W * H * 3);
    p.forEach((v, i) => v && rgb.set([128, 0, 0], i * 3));
    const img = sharp(rgb, raw(3));
    await (enc === 'palette' ? img.png({ palette: true, colours: 2 }) : img.png()).toFile(path);
  } else {
    const on = enc === '16-bit 0/1' ? 1 : 65535;
    const px = Uint16Array.from(p, (v) => v * on);
    await sharp(px, raw(1)).toColourspace('grey16').png().toFile(path);
  }
}

let sets = 0;
/** A dataset of `n` photo/mask pairs; `encs[i]` is sample i's mask encoding. */
async function makeSet(encs: Enc[], empty = false) {
  const root = join(tmp, `s${++sets}`);
  mkdirSync(join(root, 'images'), { recursive: true });
  mkdirSync(join(root, 'masks'), { recursive: true });
  const rng = new Rng(SEED + sets);
  const truth = new Map<string, Uint8Array>();
  for (let i = 0; i < encs.length; i++) {
    const id = `m${i}`;
    const p = empty ? new Uint8Array(W * H) : pattern(rng);
    truth.set(id, p);
    const photo = Buffer.alloc(W * H * 3, 90);
    await sharp(photo, { raw: { width: W, height: H, channels: 3 } }).png()
      .toFile(join(root, 'images', `${id}.png`));
    const ext = encs[i].startsWith('jpeg') ? 'jpg' : 'png';
    await writeMask(join(root, 'masks', `${id}.${ext}`), p, encs[i]);
  }
  return { root, truth, samples: await openDataset({ images: join(root, 'images'), masks: join(root, 'masks') }) };
}

describe('mask encodings are detected per dataset', () => {
  it.each([
    ['0/255', '0/255'],
    ['0/1', '0/1'],
    ['palette', 'palette'],
    ['rgb red', 'levels'],
    ['16-bit 0/1', '16-bit'],
    ['16-bit 0/65535', '16-bit'],
    ['jpeg 0/255', 'grey'],
  ] as [Enc, string][])('%s masks → kind %s, every crack pixel kept', async (enc, kind) => {
    const { truth, samples } = await makeSet([enc, enc, enc, enc]);
    const checked = await checkSamples(samples);
    const e = checked.maskEncoding!;
    console.log(`  ${enc}: ${e.kind}: ${e.description}`);
    expect(e.kind).toBe(kind);
    expect(e.warning).toBeUndefined();
    expect(checked.good.every((s) => s.maskEncoding === e)).toBe(true);
    for (const s of checked.good) {
      // At the mask's own size the decoded mask must equal the pattern pixel for pixel (JPEG:
      // rectangles 6 px thick survive quality 80 with values far from mid-scale).
      const own = await loadMaskAtOwnSize(s);
      const want = truth.get(s.id)!;
      let diff = 0;
      for (let i = 0; i < want.length; i++) diff += own[i] !== want[i] ? 1 : 0;
      expect(diff, `${s.id}: pixels differing from the pattern`).toBe(0);
      // And through loadPair (resized for the model), the crack is there.
      const pair = await loadPair(s, 32);
      expect(pair.mask.some((v) => v === 1)).toBe(true);
      expect(want.some((v) => v === 1)).toBe(true);
    }
  });

  it('masks that mix 0/1 and 0/255 are refused, naming both files', async () => {
    const { samples } = await makeSet(['0/255', '0/1', '0/255']);
    await expect(checkSamples(samples)).rejects.toThrow(/masks mix encodings: .*m1\.png has values 0\/1 but .*m0\.png has 0\/255/);
    // Not a sample problem: --skip-bad does not hide it either.
    await expect(checkSamples(samples, { skipBad: true })).rejects.toThrow(/masks mix encodings/);
  });

  it('a mask outside the sampled ones that contradicts the encoding names its file at load', async () => {
    const { samples } = await makeSet(['0/255', '0/255', '0/255', '0/1']);
    // Sample only 2 masks: m3 (0/1) is not looked at by the detection.
    const checked = await checkSamples(samples, { maskSample: 2 });
    expect(checked.maskEncoding!.kind).toBe('0/255');
    const m3 = checked.good.find((s) => s.id === 'm3')!;
    const err = await loadPair(m3, 16).catch((e) => e);
    expect(err).toBeInstanceOf(SampleError);
    expect(String(err.message)).toMatch(/m3\.png: mask values 0\/1 do not fit the dataset's encoding \(the dataset's masks are 0\/255/);
  });

  it('8-bit and 16-bit masks in one set are refused', async () => {
    const { samples } = await makeSet(['0/255', '16-bit 0/65535']);
    await expect(checkSamples(samples)).rejects.toThrow(/masks mix bit depths: .*m0\.png is 8-bit, .*m1\.png is 16-bit/);
  });

  it('a mask with many low levels (not binary) is refused naming it', async () => {
    const root = join(tmp, 'ramp');
    mkdirSync(join(root, 'images'), { recursive: true });
    mkdirSync(join(root, 'masks'), { recursive: true });
    await sharp(Buffer.alloc(W * H * 3, 50), { raw: { width: W, height: H, channels: 3 } }).png()
      .toFile(join(root, 'images', 'a.png'));
    const ramp = Buffer.from(Array.from({ length: W * H }, (_, i) => i % 4)); // 0,1,2,3: class ids?
    await sharp(ramp, { raw: { width: W, height: H, channels: 1 } }).toColourspace('b-w').png()
      .toFile(join(root, 'masks', 'a.png'));
    const samples = await openDataset({ images: join(root, 'images'), masks: join(root, 'masks') });
    await expect(checkSamples(samples)).rejects.toThrow(/a\.png: mask values 4 levels from 0 to 3 are not a binary mask/);
  });

  it('a split without any crack pixel warns, and its Dice/IoU are undefined, not 1', async () => {
    const { samples } = await makeSet(['0/255', '0/255', '0/255'], true);
    const checked = await checkSamples(samples);
    const e = checked.maskEncoding!;
    expect(e.kind).toBe('empty');
    expect(e.withCrack).toBe(0);
    expect(e.warning).toMatch(/no mask of these 3 holds a crack pixel/);
    // A model predicting nothing on these masks: every ratio that needs a crack is undefined.
    const acc = new SegMetricsAccumulator();
    for (const s of checked.good) {
      const p = await loadPair(s, 32);
      acc.update(new Float32Array(p.mask.length).fill(0.01), p.mask);
    }
    const m = acc.result();
    expect([m.dice, m.iou, m.recall, m.precision, m.meanDice, m.meanIoU]).toEqual([NaN, NaN, NaN, NaN, NaN, NaN]);
    expect(m.accuracy).toBe(1);
    expect(m.best!.dice).toBeNaN();
    const table = formatTable([{ name: 'val', metrics: m }]);
    console.log(table);
    expect(table.split('\n')[2]).toMatch(/^val\s+n\/a\s+n\/a\s+n\/a\s+n\/a\s+1\.0000\s+n\/a\s+n\/a\s+0\.50 \(n\/a\)$/);
    expect(table).toMatch(/no crack pixel in any target mask/);
    const j = JSON.parse(metricsJson([{ name: 'val', metrics: m }]));
    expect([j.val.dice, j.val.iou, j.val.meanDice, j.val.best.dice]).toEqual([null, null, null, null]);
  });

  it('0/1 masks give the true Dice (the old > 127 rule read them as empty: Dice 1.0 for nothing)', async () => {
    const { truth, samples } = await makeSet(['0/1', '0/1', '0/1']);
    const checked = await checkSamples(samples);
    const acc = new SegMetricsAccumulator({ sweep: false });
    for (const s of checked.good) {
      const own = await loadMaskAtOwnSize(s);
      // A "model" that predicts nothing at all must score Dice 0 on masks with cracks.
      acc.update(new Float32Array(own.length), own);
      expect(own).toEqual(truth.get(s.id));
    }
    const m = acc.result();
    console.log(`  0/1 masks, empty prediction: ${checked.maskEncoding!.description}; Dice ${m.dice}`);
    expect(m.dice).toBe(0);
    expect(m.counts.fn).toBeGreaterThan(0);
  });
});

/** The binarised mask at its own resolution (no resize), through the public loader. */
async function loadMaskAtOwnSize(s: { id: string; image: string; mask: string }): Promise<Uint8Array> {
  const { loadMask } = await import('../src/data/decode.js');
  const m = await loadMask(s.mask, s.id, (s as { maskEncoding?: never }).maskEncoding);
  expect([m.width, m.height]).toEqual([W, H]);
  return m.mask;
}
