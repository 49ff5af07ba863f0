import { afterAll, describe, expect, it } from 'vitest';
import { closeGpu } from '../src/gpu/runtime.js';
import { mean, sum, sumDims } from '../src/ops/reduce.js';
import { checkOp, f32, randn, testEngine } from './helpers.js';
import { sumLeading } from './ref/elementwise.js';

afterAll(() => closeGpu());

const numelOf = (s: number[]) => s.reduce((a, b) => a * b, 1);
const sumAbs = (x: Float64Array) => x.reduce((a, v) => a + Math.abs(v), 0);

/**
 * Tolerance of an f32 sum: each thread adds <= ~16 terms serially, then two shared-memory trees
 * (8 levels each), so the rounding error is at most ~(16 + 8 + 10)·eps·Σ|x| ≈ 2e-6·Σ|x| and
 * typically far less. Stated against Σ|x| (the sum itself may cancel to near 0).
 */
function sumTol(x: Float64Array, total: number) {
  return { rtol: 0, atol: (2e-6 * sumAbs(f32(x))) / Math.max(Math.abs(total), 1e-30) };
}

describe('sum and mean', () => {
  it.each([[1], [7], [1031], [70007]])('sum at n = %i', async (n) => {
    const x = randn(n);
    const total = f32(x).reduce((a, v) => a + v, 0);
    await checkOp({
      label: `sum ${n}`,
      inputs: [x],
      shapes: [[n]],
      gpu: (t) => sum(t),
      ref: ([v]) => Float64Array.of(v.reduce((a, u) => a + u, 0)),
      refBackward: ([v], g) => [v.map(() => g[0])],
      outShape: [1],
      tol: sumTol(x, total),
      // The gradient is g[0] copied: exact.
      gradTol: { rtol: 0, atol: 0 },
    });
  });

  it.each([[1], [7], [1031], [70007]])('mean at n = %i', async (n) => {
    const x = randn(n);
    const total = f32(x).reduce((a, v) => a + v, 0);
    await checkOp({
      label: `mean ${n}`,
      inputs: [x],
      shapes: [[n]],
      gpu: (t) => mean(t),
      ref: ([v]) => Float64Array.of(v.reduce((a, u) => a + u, 0) / n),
      refBackward: ([v], g) => [v.map(() => g[0] / n)],
      outShape: [1],
      // As sum, plus one rounding of the scale by 1/n (itself rounded to f32).
      tol: { rtol: 3e-7, atol: sumTol(x, total).atol },
      gradTol: { rtol: 3e-7, atol: 0 },
    });
  });

  it('sums 2^20 + 3 elements (two stages, 1024-way split)', async () => {
    const n = (1 << 20) + 3;
    const x = randn(n);
    const xs = f32(x);
    const total = xs.reduce((a, v) => a + v, 0);
    const e = await testEngine();
    await e.scopeAsync(async () => {
      const got = (await sum(e.fromArray(xs, [n])).toArray())[0];
      expect(Math.abs(got - total)).toBeLessThanOrEqual(2e-6 * sumAbs(xs));
      // Constant input: the sum is exact in f32 as long as every partial is (n <= 2^24).
      const ones = await sum(e.full([n], 1)).toArray();
      expect(ones[0]).toBe(n);
    });
  });
});

describe('sumDims', () => {
  it.each([
    [[2, 3, 5, 7], 0],
    [[2, 3, 5, 7], 1],
    [[2, 3, 5, 7], 2],
    [[2, 3, 5, 7], 3],
    [[2, 3, 5, 7], 4],
    [[10001, 7], 1],
    [[3, 70007], 1],
    [[1031, 33], 1],
  ])('shape %j over %i leading dims', async (shape, lead) => {
    const n = numelOf(shape);
    const outShape = lead === shape.length ? [1] : shape.slice(lead);
    const C = numelOf(outShape);
    const x = randn(n);
    const want = sumLeading(f32(x), C);
    const colAbs = sumLeading(f32(x).map(Math.abs), C);
    const maxWant = Math.max(...want.map(Math.abs));
    await checkOp({
      label: `sumDims ${shape.join('x')} lead ${lead}`,
      inputs: [x],
      shapes: [shape],
      gpu: (t) => sumDims(t, lead),
      ref: ([v]) => sumLeading(v, C),
      refBackward: ([v], g) => [v.map((_, i) => g[i % C])],
      outShape,
      // Per column as for sum: ≲ 2e-6·Σ_r|x[r, c]| (a column sum may cancel to near 0).
      tol: { rtol: 0, atol: (2e-6 * Math.max(...colAbs)) / Math.max(maxWant, 1e-30) },
      gradTol: { rtol: 0, atol: 0 },
    });
  });

  it('folds more than 65535 column groups into the grid (C = 2^21 + 37)', async () => {
    const C = (1 << 21) + 37;
    const x = f32(randn(2 * C));
    const e = await testEngine();
    await e.scopeAsync(async () => {
      const got = await sumDims(e.fromArray(x, [2, C]), 1).toArray();
      // Two terms per column: one f32 rounding of the sum (bounded by eps·(|a| + |b|)).
      let worst = 0;
      for (let c = 0; c < C; c++) {
        const err = Math.abs(got[c] - (x[c] + x[C + c]));
        worst = Math.max(worst, err / (Math.abs(x[c]) + Math.abs(x[C + c]) + 1e-30));
      }
      expect(worst).toBeLessThanOrEqual(2 ** -24);
    });
  });

  it('rejects a bad leadingDims', async () => {
    const e = await testEngine();
    e.scope(() => {
      expect(() => sumDims(e.zeros([2, 3]), 3)).toThrow(/sumDims: leadingDims 3 for shape \[2,3\]/);
    });
  });
});
