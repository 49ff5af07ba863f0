import { afterAll, describe, it } from 'vitest';
import { closeGpu } from '../src/gpu/runtime.js';
import { add } from '../src/ops/add.js';
import { checkOp, randn, testEngine } from './helpers.js';
import { broadcast2, sumLeading } from './ref/elementwise.js';
import { expect } from 'vitest';

afterAll(() => closeGpu());

const numelOf = (s: number[]) => s.reduce((a, b) => a * b, 1);

describe('add', () => {
  // Exact in f32 up to one rounding of the sum: rtol 1e-6 (≈ 8 ulp) is a tight bound.
  it.each([[1], [7, 13], [3, 5, 1031]])('matches float64 at %j', async (...shape: number[]) => {
    const n = numelOf(shape);
    await checkOp({
      label: `add ${shape.join('x')}`,
      inputs: [randn(n), randn(n)],
      shapes: [shape, shape],
      gpu: (a, b) => add(a, b),
      ref: ([a, b]) => a.map((v, i) => v + b[i]),
      refBackward: (_x, g) => [g.slice(), g.slice()],
      outShape: shape,
      tol: { rtol: 1e-6, atol: 1e-7 },
    });
  });

  it.each([
    [[2, 3, 5, 7], [5, 7]],
    [[2, 3, 5, 7], [7]],
    [[2, 3, 5, 7], [3, 5, 7]],
    [[10001, 7], [7]],
    [[3, 1031], [1031]],
    [[13, 11], [11]],
  ])('broadcasts b %j + %j over the leading dims', async (sa: number[], sb: number[]) => {
    await checkOp({
      label: `add ${sa.join('x')} + ${sb.join('x')}`,
      inputs: [randn(numelOf(sa)), randn(numelOf(sb))],
      shapes: [sa, sb],
      gpu: (a, b) => add(a, b),
      ref: ([a, b]) => broadcast2(a, b, (x, y) => x + y),
      refBackward: ([, b], g) => [g.slice(), sumLeading(g, b.length)],
      outShape: sa,
      tol: { rtol: 1e-6, atol: 1e-7 },
      // b's gradient sums up to 10001 f32 terms by a tree: rounding ≲ 1e-7·Σ|g| per element,
      // well under 1e-6 of the largest (≈ sqrt(R)-sized) sum.
      gradTol: { rtol: 1e-6, atol: 1e-6 },
    });
  });

  it('rejects a b that is not a trailing suffix', async () => {
    const e = await testEngine();
    e.scope(() => {
      const a = e.zeros([2, 3, 4]);
      expect(() => add(a, e.zeros([3]))).toThrow(/add: b must have a's shape \[2,3,4\].*got \[3\]/);
      expect(() => add(a, e.zeros([4, 3, 2]))).toThrow(/add/);
    });
  });
});
