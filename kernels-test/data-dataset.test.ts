import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, describe, expect, it } from 'vitest';
import { DatasetError, openDataset, splitTrainVal } from '../src/data/dataset.js';
import {
  IMAGENET_MEAN,
  IMAGENET_STD,
  SampleError,
  checkSamples,
  loadPair,
} from '../src/data/decode.js';

const tmp = mkdtempSync(join(tmpdir(), 'sam2-data-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

let dirCount = 0;
function freshSet(): { root: string; images: string; masks: string } {
  const root = join(tmp, `set${++dirCount}`);
  const images = join(root, 'train', 'images');
  const masks = join(root, 'train', 'masks');
  mkdirSync(images, { recursive: true });
  mkdirSync(masks, { recursive: true });
  return { root, images, masks };
}

/** A w x h RGB photo whose pixels are (x*8, y*8, 100), written in the format of `path`. */
async function writePhoto(path: string, w: number, h: number): Promise<void> {
  const px = Buffer.alloc(w * h * 3);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) px.set([x * 8, y * 8, 100], (y * w + x) * 3);
  }
  const img = sharp(px, { raw: { width: w, height: h, channels: 3 } });
  await (path.endsWith('.jpg') ? img.jpeg({ quality: 95 }) : img.png()).toFile(path);
}

/** A mask with grey levels around the threshold: value(x) = x * 40 (so > 127 from x = 4). */
async function writeMask(path: string, w: number, h: number): Promise<void> {
  const px = Buffer.alloc(w * h);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) px[y * w + x] = Math.min(255, x * 40);
  const img = sharp(px, { raw: { width: w, height: h, channels: 1 } });
  await (path.endsWith('.jpg') ? img.jpeg({ quality: 100 }) : img.png()).toFile(path);
}

describe('openDataset', () => {
  it('pairs by stem across mixed extensions, ignoring other files', async () => {
    const d = freshSet();
    await writePhoto(join(d.images, 'b.jpg'), 8, 6);
    await writePhoto(join(d.images, 'a.png'), 8, 6);
    await writePhoto(join(d.images, 'c.JPEG'), 8, 6);
    await writeMask(join(d.masks, 'a.jpg'), 8, 6);
    await writeMask(join(d.masks, 'b.png'), 8, 6);
    await writeMask(join(d.masks, 'c.png'), 8, 6);
    await writeMask(join(d.masks, 'orphan.png'), 8, 6);
    writeFileSync(join(d.images, 'notes.txt'), 'x');
    const s = await openDataset({ root: d.root, split: 'train' });
    expect(s.map((x) => x.id)).toEqual(['a', 'b', 'c']);
    expect(s[0].image.endsWith('a.png') && s[0].mask.endsWith('a.jpg')).toBe(true);
    const same = await openDataset({ images: d.images, masks: d.masks });
    expect(same).toEqual(s);
  });

  it('names the images without a mask', async () => {
    const d = freshSet();
    for (const n of ['a', 'b', 'c']) await writePhoto(join(d.images, `${n}.jpg`), 4, 4);
    await writeMask(join(d.masks, 'b.png'), 4, 4);
    const p = openDataset({ root: d.root, split: 'train' });
    await expect(p).rejects.toThrow(DatasetError);
    await expect(p).rejects.toThrow(/2 image\(s\) without a mask.*a\.jpg.*c\.jpg/);
  });

  it('reports missing and empty folders, bad splits and duplicate stems', async () => {
    const d = freshSet();
    await expect(openDataset({ root: d.root, split: 'train' })).rejects.toThrow(
      /images folder is empty: .*train.images/,
    );
    await expect(openDataset({ root: d.root, split: 'val' })).rejects.toThrow(/split 'val'/);
    await expect(openDataset({ root: d.root })).rejects.toThrow(/pick a split: train/);
    await expect(openDataset({ root: join(tmp, 'nope') })).rejects.toThrow(/root not found/);
    await writePhoto(join(d.images, 'x.jpg'), 4, 4);
    await writePhoto(join(d.images, 'x.png'), 4, 4);
    await writeMask(join(d.masks, 'x.png'), 4, 4);
    await expect(openDataset({ root: d.root, split: 'train' })).rejects.toThrow(
      /duplicate stem 'x'.*x\.jpg.*x\.png/,
    );
    rmSync(join(d.images, 'x.png'));
    rmSync(d.masks, { recursive: true });
    await expect(openDataset({ images: d.images, masks: d.masks })).rejects.toThrow(
      /masks folder not found/,
    );
  });

  it('splits train/val by id hash, independent of order', () => {
    const samples = Array.from({ length: 200 }, (_, i) => ({
      id: `img${i}`,
      image: `i${i}`,
      mask: `m${i}`,
    }));
    const a = splitTrainVal(samples, 0.2, 7);
    const b = splitTrainVal([...samples].reverse(), 0.2, 7);
    expect(b).toEqual(a);
    expect(a.train.length + a.val.length).toBe(200);
    expect(a.val.length).toBeGreaterThan(20);
    expect(a.val.length).toBeLessThan(60);
    const ids = new Set(a.val.map((s) => s.id));
    expect(a.train.some((s) => ids.has(s.id))).toBe(false);
    // Removing a sample never moves another one across the split.
    const c = splitTrainVal(samples.slice(1), 0.2, 7);
    expect(c.val.every((s) => ids.has(s.id))).toBe(true);
    expect(splitTrainVal(samples.slice(0, 3), 0.05, 1).val.length).toBe(1);
  });
});

describe('loadPair', () => {
  it('normalises the image, binarises the mask at > 127, keeps original size', async () => {
    const d = freshSet();
    await writePhoto(join(d.images, 'p.png'), 8, 6);
    await writeMask(join(d.masks, 'p.png'), 8, 6);
    const [s] = await openDataset({ images: d.images, masks: d.masks });
    // Same size: the resize is the identity, so values are exact.
    const big = await loadPair(s, 8);
    expect([big.origWidth, big.origHeight]).toEqual([8, 6]);
    expect(big.image.length).toBe(8 * 8 * 3);
    const want = (v: number, c: number) => (v / 255 - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
    // Pixel (x=0, y=0) of the resized square is a blend; check the channel that is constant.
    expect(big.image[2]).toBeCloseTo(want(100, 2), 5);
    // Mask columns 0..3 are <= 127 (0, 40, 80, 120), 4.. are > 127 (160, ...): same width, exact.
    const row = Array.from(big.mask.slice(0, 8));
    expect(row).toEqual([0, 0, 0, 0, 1, 1, 1, 1]);
    const small = await loadPair(s, 4);
    expect(Array.from(small.mask.slice(0, 4))).toEqual([0, 0, 1, 1]);
  });

  it('expands grey and RGBA photos to RGB', async () => {
    const d = freshSet();
    const solid = (channels: 1 | 4, name: string) =>
      sharp(Buffer.alloc(5 * 5 * channels, 200), { raw: { width: 5, height: 5, channels } })
        .png()
        .toFile(join(d.images, name));
    await solid(1, 'g.png');
    await solid(4, 'r.png');
    await writeMask(join(d.masks, 'g.png'), 5, 5);
    await writeMask(join(d.masks, 'r.png'), 5, 5);
    for (const s of await openDataset({ images: d.images, masks: d.masks })) {
      const p = await loadPair(s, 5);
      for (let c = 0; c < 3; c++) {
        expect(p.image[c]).toBeCloseTo((200 / 255 - IMAGENET_MEAN[c]) / IMAGENET_STD[c], 5);
      }
    }
  });

  it('names the file of a corrupt image', async () => {
    const d = freshSet();
    const junk = Buffer.from(Array.from({ length: 500 }, (_, i) => (i * 37) & 255));
    writeFileSync(join(d.images, 'bad.jpg'), junk);
    await writeMask(join(d.masks, 'bad.png'), 4, 4);
    const [s] = await openDataset({ images: d.images, masks: d.masks });
    const p = loadPair(s, 4);
    await expect(p).rejects.toThrow(SampleError);
    await expect(p).rejects.toThrow(/bad\.jpg: unreadable image/);
  });

  it('names both files and sizes on a mask size mismatch', async () => {
    const d = freshSet();
    await writePhoto(join(d.images, 'm.jpg'), 10, 8);
    await writeMask(join(d.masks, 'm.png'), 8, 10);
    const [s] = await openDataset({ images: d.images, masks: d.masks });
    await expect(loadPair(s, 4)).rejects.toThrow(/m\.png: mask is 8x10 but its image .*m\.jpg is 10x8/);
  });

  it('counts bad samples with skipBad and throws without it', async () => {
    const d = freshSet();
    for (const n of ['g1', 'g2', 'g3']) {
      await writePhoto(join(d.images, `${n}.jpg`), 6, 6);
      await writeMask(join(d.masks, `${n}.png`), 6, 6);
    }
    writeFileSync(join(d.images, 'c1.jpg'), 'not an image');
    await writeMask(join(d.masks, 'c1.png'), 6, 6);
    await writePhoto(join(d.images, 's1.jpg'), 6, 6);
    await writeMask(join(d.masks, 's1.png'), 5, 6);
    const samples = await openDataset({ images: d.images, masks: d.masks });
    const r = await checkSamples(samples, { skipBad: true });
    expect(r.good.map((s) => s.id)).toEqual(['g1', 'g2', 'g3']);
    expect(r.bad.length).toBe(2);
    expect(r.bad.map((b) => b.id)).toEqual(['c1', 's1']);
    expect(samples.length).toBe(5); // every pair is counted once: good or bad
    expect(r.bad[0].file).toMatch(/c1\.jpg$/);
    expect(r.bad[0].reason).toMatch(/unreadable image/);
    expect(r.bad[1].file).toMatch(/s1\.png$/);
    expect(r.bad[1].reason).toMatch(/mask is 5x6/);
    await expect(checkSamples(samples)).rejects.toThrow(/c1\.jpg/);
  });
});

// SAM2_SHARED overrides ../shared (e.g. to check that this test skips cleanly without it).
const SHARED = process.env.SAM2_SHARED ?? join(import.meta.dirname, '..', '..', 'shared');
const DEEPCRACK = join(SHARED, 'data', 'deepcrack');
const haveShared = existsSync(join(DEEPCRACK, 'train', 'images'));
if (!haveShared) console.warn(`skipping real-data test: ${DEEPCRACK} not found (needs ../shared)`);

describe('real data (../shared/data/deepcrack)', () => {
  it.skipIf(!haveShared)('reads a few DeepCrack samples (skipped without ../shared)', async () => {
    const samples = await openDataset({ root: DEEPCRACK, split: 'train' });
    expect(samples.length).toBe(300);
    for (const s of samples.slice(0, 3)) {
      const p = await loadPair(s, 64);
      expect([p.origWidth, p.origHeight].sort()).toEqual([384, 544]);
      const frac = p.mask.reduce((a, b) => a + b, 0) / p.mask.length;
      expect(frac).toBeGreaterThan(0);
      expect(frac).toBeLessThan(0.3);
      expect(p.image.every(Number.isFinite)).toBe(true);
    }
  });
});
