import { afterAll, describe, it } from 'vitest';
import { closeGpu } from '../src/gpu/runtime.js';
import { add } from '../src/ops/add.js';
import { checkOp, randn } from './helpers.js';

afterAll(() => closeGpu());

describe('add', () => {
  // Exact in f32 up to one rounding of the sum: rtol 1e-6 (≈ 8 ulp) is a tight bound.
  it.each([[1], [7, 13], [3, 5, 1031]])('matches float64 at %j', async (...shape: number[]) => {
    const n = shape.reduce((a, b) => a * b, 1);
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
});
