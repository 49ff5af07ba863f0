import { describe, expect, it } from 'vitest';
import { applyAugment, augmentPair, sampleAugment } from '../src/data/augment.js';
import { IMAGENET_MEAN, IMAGENET_STD } from '../src/data/decode.js';
import { Rng } from '../src/util/random.js';

const S = 17; // odd, so centre handling of flips/rotations is exercised

/** Image whose channels 0/1 hold the pixel's own x/y; random 0/1 mask. */
function coordPair(seed: number): { image: Float32Array; mask: Float32Array } {
  const r = new Rng(seed);
  const image = new Float32Array(S * S * 3);
  const mask = new Float32Array(S * S);
  for (let y = 0; y < S; y++) {
    for (let x = 0; x < S; x++) {
      image[(y * S + x) * 3] = x;
      image[(y * S + x) * 3 + 1] = y;
      mask[y * S + x] = r.next() < 0.3 ? 1 : 0;
    }
  }
  return { image, mask };
}

const GEOMETRIC = { brightness: 0, contrast: 0, cropProb: 0.7 };

describe('augment', () => {
  it('moves the mask exactly as the image (flips, rotations, resized crops)', () => {
    const { image, mask } = coordPair(1);
    let crops = 0;
    const rots = new Set<number>();
    for (let seed = 0; seed < 60; seed++) {
      const out = augmentPair(image, mask, S, new Rng(seed), GEOMETRIC);
      if (out.params.crop) crops++;
      rots.add(out.params.rot);
      for (let i = 0; i < S * S; i++) {
        // The image's bilinear sample of a linear ramp is exactly the source coordinate.
        const sx = out.image[i * 3];
        const sy = out.image[i * 3 + 1];
        const fx = sx - Math.floor(sx);
        const fy = sy - Math.floor(sy);
        const tie = Math.abs(fx - 0.5) < 1e-4 || Math.abs(fy - 0.5) < 1e-4;
        const want = mask[Math.round(sy) * S + Math.round(sx)];
        if (!tie) expect(out.mask[i], `seed ${seed} pixel ${i}`).toBe(want);
        if (!out.params.crop) {
          expect(Number.isInteger(sx) && Number.isInteger(sy)).toBe(true);
          expect(out.mask[i]).toBe(want);
        }
      }
    }
    expect(crops).toBeGreaterThan(20);
    expect(rots.size).toBe(4);
  });

  it('applies the documented geometry (clockwise quarter turn, horizontal flip)', () => {
    const { image, mask } = coordPair(2);
    const base = { crop: null, vflip: false, brightness: 1, contrast: 1 };
    const rot = applyAugment(image, mask, S, { ...base, hflip: false, rot: 1 });
    // Clockwise: output top-left comes from the input's bottom-left.
    expect([rot.image[0], rot.image[1]]).toEqual([0, S - 1]);
    const fl = applyAugment(image, mask, S, { ...base, hflip: true, rot: 0 });
    expect([fl.image[0], fl.image[1]]).toEqual([S - 1, 0]);
    expect(fl.mask[0]).toBe(mask[S - 1]);
  });

  it('is reproducible per seed and varies across seeds', () => {
    const { image, mask } = coordPair(3);
    const a = augmentPair(image, mask, S, new Rng(42));
    const b = augmentPair(image, mask, S, new Rng(42));
    expect(a.image).toEqual(b.image);
    expect(a.mask).toEqual(b.mask);
    const distinct = new Set<string>();
    for (let s = 0; s < 10; s++) {
      distinct.add(JSON.stringify(sampleAugment(new Rng(s), S)));
    }
    expect(distinct.size).toBe(10);
  });

  it('jitters brightness/contrast on the image only, staying in [0, 1] pixel range', () => {
    const r = new Rng(9);
    const image = Float32Array.from({ length: S * S * 3 }, (_, i) => {
      const c = i % 3;
      return (r.next() - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
    });
    const { mask } = coordPair(4);
    const opts = { hflip: 0, vflip: 0, rot90: false, cropProb: 0, brightness: 0.4, contrast: 0.4 };
    const out = augmentPair(image, mask, S, new Rng(5), opts);
    expect(out.mask).toEqual(mask);
    expect(out.image).not.toEqual(image);
    for (let i = 0; i < out.image.length; i++) {
      const v = out.image[i] * IMAGENET_STD[i % 3] + IMAGENET_MEAN[i % 3];
      expect(v).toBeGreaterThanOrEqual(-1e-6);
      expect(v).toBeLessThanOrEqual(1 + 1e-6);
    }
  });
});
