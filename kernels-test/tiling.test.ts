import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, describe, expect, it } from 'vitest';
import { loadImage } from '../src/data/decode.js';
import {
  predictPhoto,
  readTiles,
  writeMaskPng,
  writeOverlayPng,
  writeProbPng,
} from '../src/predict/images.js';
import { type TileProb, planTiles, stitch } from '../src/predict/tiling.js';

const tmp = mkdtempSync(join(tmpdir(), 'sam2-tiling-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
const SAMPLE = join(import.meta.dirname, '..', 'data', 'sample', 'images', 'crack_a.jpg');

const CASES: [number, number, number, number][] = [
  [1000, 700, 256, 32],
  [256, 256, 256, 0],
  [100, 50, 256, 32],
  [257, 1000, 256, 64],
  [513, 300, 128, 17],
];

describe('planTiles', () => {
  it.each(CASES)('covers %ix%i with tile %i overlap %i', (w, h, tile, overlap) => {
    const tiles = planTiles(w, h, tile, overlap);
    const cover = new Uint8Array(w * h);
    for (const t of tiles) {
      expect(t.x >= 0 && t.y >= 0 && t.x + t.w <= w && t.y + t.h <= h).toBe(true);
      expect(t.w).toBe(Math.min(tile, w));
      expect(t.h).toBe(Math.min(tile, h));
      for (let y = t.y; y < t.y + t.h; y++) cover.fill(1, y * w + t.x, y * w + t.x + t.w);
    }
    expect(cover.every((c) => c === 1)).toBe(true);
    // Neighbours overlap by at least `overlap`; the last tile is flush with the border.
    const xs = [...new Set(tiles.map((t) => t.x))].sort((a, b) => a - b);
    for (let i = 1; i < xs.length; i++) {
      expect(xs[i - 1] + tile - xs[i]).toBeGreaterThanOrEqual(overlap);
    }
    expect(Math.max(...tiles.map((t) => t.x + t.w))).toBe(w);
    expect(Math.max(...tiles.map((t) => t.y + t.h))).toBe(h);
    if (w <= tile && h <= tile) expect(tiles).toEqual([{ x: 0, y: 0, w, h }]);
  });

  it('rejects an overlap as large as the tile', () => {
    expect(() => planTiles(500, 500, 128, 128)).toThrow(/overlap/);
  });
});

describe('stitch', () => {
  it.each(CASES)('returns a constant map unchanged (%ix%i, tile %i, ov %i)', (w, h, tile, overlap) => {
    const parts: TileProb[] = planTiles(w, h, tile, overlap).map((t) => ({
      tile: t,
      prob: new Float32Array(16 * 16).fill(0.3),
      width: 16,
      height: 16,
    }));
    const out = stitch(w, h, parts, overlap);
    expect(out.length).toBe(w * h);
    // Convex weights of equal values: only f32 rounding of 0.3 (and of the resample) remains.
    let worst = 0;
    for (let i = 0; i < out.length; i++) worst = Math.max(worst, Math.abs(out[i] - 0.3));
    expect(worst).toBeLessThan(1e-6);
  });

  it('reassembles a map cut into tiles at full resolution, blending seams', () => {
    const [w, h, tile, overlap] = [300, 170, 96, 20];
    const f = (x: number, y: number) => Math.sin(x / 13) * Math.cos(y / 7);
    const tiles = planTiles(w, h, tile, overlap);
    const parts = tiles.map((t) => {
      const prob = new Float32Array(t.w * t.h);
      for (let j = 0; j < t.h; j++) {
        for (let i = 0; i < t.w; i++) prob[j * t.w + i] = f(t.x + i, t.y + j);
      }
      return { tile: t, prob, width: t.w, height: t.h };
    });
    const out = stitch(w, h, parts, overlap);
    let worst = 0;
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) worst = Math.max(worst, Math.abs(out[y * w + x] - f(x, y)));
    }
    expect(worst).toBeLessThan(1e-6); // f32 storage of f
    // Tiles that disagree (offset +1 on odd tiles) blend smoothly: no jump above 1/overlap-ish.
    const shifted = parts.map((p, k) => ({ ...p, prob: p.prob.map((v) => v + (k % 2)) }));
    const s = stitch(w, h, shifted, overlap);
    let jump = 0;
    for (let y = 0; y < h; y++) {
      for (let x = 1; x < w; x++) {
        const d = s[y * w + x] - s[y * w + x - 1] - (f(x, y) - f(x - 1, y));
        jump = Math.max(jump, Math.abs(d));
      }
    }
    expect(jump).toBeLessThan(0.15);
  });

  it('rejects uncovered pixels and mis-sized maps', () => {
    const t = { x: 0, y: 0, w: 4, h: 4 };
    const part = (n: number) => [{ tile: t, prob: new Float32Array(n), width: 4, height: 4 }];
    expect(() => stitch(5, 4, part(16), 0)).toThrow(/\(4, 0\) not covered/);
    expect(() => stitch(4, 4, part(15), 0)).toThrow(/expected 4x4/);
  });
});

describe('prediction images', () => {
  it('reads tiles as model inputs; one whole-photo tile equals loadImage', async () => {
    const meta = await sharp(SAMPLE).metadata();
    const [w, h] = [meta.width!, meta.height!];
    const one = await readTiles(SAMPLE, planTiles(w, h, 512, 32), 64);
    expect([one.width, one.height, one.inputs.length]).toEqual([w, h, 1]);
    const direct = await loadImage(SAMPLE, 64);
    let worst = 0;
    direct.image.forEach((v, i) => (worst = Math.max(worst, Math.abs(v - one.inputs[0][i]))));
    expect(worst).toBeLessThan(1e-5); // same sharp pipeline, identical u8 pixels
    const many = await readTiles(SAMPLE, planTiles(w, h, 128, 16), 32);
    expect(many.inputs.length).toBeGreaterThan(4);
    expect(many.inputs.every((a) => a.length === 32 * 32 * 3 && a.every(Number.isFinite))).toBe(true);
  });

  it('predicts a photo tile by tile back to full resolution', async () => {
    const seen: number[] = [];
    const r = await predictPhoto(SAMPLE, { size: 32, tile: 100, overlap: 10 }, async (input, t) => {
      expect(input.length).toBe(32 * 32 * 3);
      seen.push(t.w * t.h);
      return { prob: new Float32Array(8 * 8).fill(0.7), width: 8, height: 8 };
    });
    expect([r.width, r.height]).toEqual([384, 256]);
    expect(r.tiles).toBe(seen.length);
    expect(r.tiles).toBe(5 * 3);
    expect(r.prob.every((v) => Math.abs(v - 0.7) < 1e-6)).toBe(true);
  });

  it('writes mask, probability and overlay PNGs', async () => {
    const meta = await sharp(SAMPLE).metadata();
    const [w, h] = [meta.width!, meta.height!];
    const prob = new Float32Array(w * h);
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) prob[y * w + x] = x / (w - 1);
    const maskPath = join(tmp, 'mask.png');
    await writeMaskPng(maskPath, prob, w, h, 0.5);
    expect((await sharp(maskPath).metadata()).channels).toBe(1);
    const m = await sharp(maskPath).greyscale().raw().toBuffer({ resolveWithObject: true });
    expect([m.info.width, m.info.height]).toEqual([w, h]);
    expect([m.data[0], m.data[w - 1]]).toEqual([0, 255]);
    await writeProbPng(join(tmp, 'prob.png'), prob, w, h);
    const ovPath = join(tmp, 'overlay.png');
    await writeOverlayPng(ovPath, SAMPLE, prob, w, h, 0.5, { color: [0, 255, 0], alpha: 1 });
    const o = await sharp(ovPath).raw().toBuffer({ resolveWithObject: true });
    expect([o.info.width, o.info.height, o.info.channels]).toEqual([w, h, 3]);
    expect(Array.from(o.data.subarray((w - 1) * 3, w * 3))).toEqual([0, 255, 0]);
    const photo = await sharp(SAMPLE).raw().toBuffer();
    expect(Array.from(o.data.subarray(0, 3))).toEqual(Array.from(photo.subarray(0, 3)));
    await expect(writeMaskPng(maskPath, prob, w + 1, h)).rejects.toThrow(/expected a/);
  });
});
