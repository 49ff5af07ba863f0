import { afterAll, describe, expect, it } from 'vitest';
import { closeGpu } from '../src/gpu/runtime.js';
import { interpolate } from '../src/ops/interpolate.js';
import { checkOp, randn, testEngine } from './helpers.js';
import { type RefMode, type RefResizeDims, refResize, refResizeBackward } from './ref/resize.js';

afterAll(() => closeGpu());

// nearest forward copies values: exact. Its backward adds a few (≤ 9 here) upstream values in
// another order than the reference: ≤ 9 * 2^-24 of their magnitudes, inside 1e-6.
const NEAREST = { rtol: 0, atol: 0 };
const NEAREST_GRAD = { rtol: 1e-6, atol: 1e-6 };
// bilinear/bicubic use f32 source coordinates like PyTorch (|src| < 80, ulp ≤ 2^-17 ≈ 8e-6 of a
// pixel) while the reference uses float64 ones: each weight moves by ≲ 1e-6 relative to the
// O(1) pixel differences, plus f32 rounding of ≤ 16 (forward) or ≤ 1024 (backward) terms.
// 1e-5 of max|y| covers both; a wrong tap or weight is ≥ 1e-2.
const SMOOTH = { rtol: 1e-5, atol: 1e-5 };

interface Case {
  name: string;
  mode: RefMode;
  d: RefResizeDims;
}

const cases: Case[] = [
  { name: 'nearest x2', mode: 'nearest', d: { b: 2, h: 5, w: 7, c: 3, ho: 10, wo: 14 } },
  { name: 'nearest 5x3->13x7', mode: 'nearest', d: { b: 2, h: 5, w: 3, c: 5, ho: 13, wo: 7 } },
  { name: 'nearest 13x9->6x4', mode: 'nearest', d: { b: 2, h: 13, w: 9, c: 5, ho: 6, wo: 4 } },
  { name: 'bilinear x16 5x3', mode: 'bilinear', d: { b: 2, h: 5, w: 3, c: 3, ho: 80, wo: 48 } },
  { name: 'bilinear 7x5->13x11', mode: 'bilinear', d: { b: 2, h: 7, w: 5, c: 5, ho: 13, wo: 11 } },
  { name: 'bilinear 23x17->9x7', mode: 'bilinear', d: { b: 2, h: 23, w: 17, c: 5, ho: 9, wo: 7 } },
];

describe('interpolate', () => {
  it.each(cases)('matches float64: $name', async ({ name, mode, d }) => {
    const r = await checkOp({
      label: `interpolate ${name} ${d.b}x${d.h}x${d.w}x${d.c}`,
      inputs: [randn(d.b * d.h * d.w * d.c)],
      shapes: [[d.b, d.h, d.w, d.c]],
      gpu: (x) => interpolate(x, [d.ho, d.wo], mode),
      ref: ([x]) => refResize(mode, x, d),
      refBackward: (_x, gy) => [refResizeBackward(mode, gy, d)],
      outShape: [d.b, d.ho, d.wo, d.c],
      tol: mode === 'nearest' ? NEAREST : SMOOTH,
      gradTol: mode === 'nearest' ? NEAREST_GRAD : SMOOTH,
    });
    console.log(
      `interpolate ${name}: fwd rel ${r.fwd.maxRel.toExponential(2)}, ` +
        `grad rel ${r.grads[0].maxRel.toExponential(2)}`,
    );
  });

  it.each([
    [7, 7, 16, 16],
    [7, 7, 13, 9],
    [5, 9, 3, 4],
  ])('bicubic matches float64 (forward only): %ix%i -> %ix%i', async (h, w, ho, wo) => {
    const d = { b: 2, h, w, c: 5, ho, wo };
    const r = await checkOp({
      label: `interpolate bicubic ${h}x${w} -> ${ho}x${wo}`,
      inputs: [randn(d.b * h * w * d.c)],
      shapes: [[d.b, h, w, d.c]],
      gpu: (x) => interpolate(x, [ho, wo], 'bicubic'),
      ref: ([x]) => refResize('bicubic', x, d),
      outShape: [d.b, ho, wo, d.c],
      tol: SMOOTH,
    });
    const rel = r.fwd.maxRel.toExponential(2);
    console.log(`interpolate bicubic ${h}x${w}->${ho}x${wo}: fwd rel ${rel}`);
  });

  it('agrees with known PyTorch values on a ramp', async () => {
    const e = await testEngine();
    await e.scopeAsync(async () => {
      const ramp = e.fromArray([0, 1, 2, 3], [1, 1, 4, 1]);
      // F.interpolate(arange(4), 8, mode='linear') and arange(5) -> 3 with mode='nearest'.
      const lin = await interpolate(ramp, [1, 8], 'bilinear').toArray();
      expect([...lin]).toEqual([0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3]);
      const five = e.fromArray([0, 1, 2, 3, 4], [1, 5, 1, 1]);
      expect([...(await interpolate(five, [3, 1], 'nearest').toArray())]).toEqual([0, 1, 3]);
    });
  });

  it('refuses a gradient through bicubic and checks arguments', async () => {
    const e = await testEngine();
    e.scope(() => {
      const x = e.fromArray(new Float32Array(2 * 3 * 3 * 2), [2, 3, 3, 2], true);
      expect(() => interpolate(x, [6, 6], 'bicubic')).toThrow(/interpolate: bicubic has no/);
      expect(e.noGrad(() => interpolate(x, [6, 6], 'bicubic')).shape).toEqual([2, 6, 6, 2]);
      expect(() => interpolate(x, [0, 6], 'bilinear')).toThrow(/interpolate: size/);
      const x3 = e.zeros([3, 3, 2]);
      expect(() => interpolate(x3, [6, 6], 'nearest')).toThrow(/interpolate: x must/);
    });
  });
});
