import { afterAll, describe, expect, it } from 'vitest';
import { closeGpu } from '../src/gpu/runtime.js';
import { mean, sum, sumDims } from '../src/ops/reduce.js';
import { checkOp, expectClose, f32, randn, testEngine } from './helpers.js';
import { sumLeading } from './ref/elementwise.js';

afterAll(() => closeGpu());

const numelOf = (s: number[]) => s.reduce((a, b) => a * b, 1);

/**
 * Bound on the rounding error of an f32 sum of x (absolute, in the sum's units). Each term passes
 * through L ≤ 34 roundings (≤ 16 serial adds per thread, two 8-level shared-memory trees, the
 * output's rounding; fewer than n), each of relative size ≤ u = 2^-24 on a partial sum; partial
 * sums of zero-mean data grow like ‖x‖₂, of biased data like |Σx|. Independent errors then add to
 * ~u·sqrt(L)·(‖x‖₂ + |Σx|); 4 of those is the bound (measured ≤ 1/8 of it over 4 seeds). Never
 * above the worst case (L·u·Σ|x| ≈ 2e-6·Σ|x|, which the sum may need if every error lines up).
 */
function sumBound(x: Float64Array): number {
  let abs = 0;
  let sq = 0;
  let total = 0;
  for (const v of f32(x)) {
    abs += Math.abs(v);
    sq += v * v;
    total += v;
  }
  const L = Math.min(34, x.length);
  return Math.min(2e-6 * abs, 4 * 2 ** -24 * Math.sqrt(L) * (Math.sqrt(sq) + Math.abs(total)));
}

/** sumBound as the Tol of a scalar sum (atol is a fraction of max|want| = |Σx|). */
function sumTol(x: Float64Array, total: number) {
  return { rtol: 0, atol: sumBound(x) / Math.max(Math.abs(total), 1e-30) };
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
      expectClose([got], [total], sumTol(xs, total), `sum ${n}`);
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
    // Per column as for sum (a column sum may cancel to near 0); the largest column bound.
    const xs = f32(x);
    const R = n / C;
    let bound = 0;
    for (let c = 0; c < C; c++) {
      bound = Math.max(bound, sumBound(Float64Array.from({ length: R }, (_, r) => xs[r * C + c])));
    }
    const maxWant = Math.max(...want.map(Math.abs));
    await checkOp({
      label: `sumDims ${shape.join('x')} lead ${lead}`,
      inputs: [x],
      shapes: [shape],
      gpu: (t) => sumDims(t, lead),
      ref: ([v]) => sumLeading(v, C),
      refBackward: ([v], g) => [v.map((_, i) => g[i % C])],
      outShape,
      tol: { rtol: 0, atol: bound / Math.max(maxWant, 1e-30) },
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
