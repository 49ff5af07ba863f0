import { afterAll, describe, expect, it } from 'vitest';
import { closeGpu } from '../src/gpu/runtime.js';
import { softmax } from '../src/ops/softmax.js';
import { checkOp, expectClose, randn, testEngine } from './helpers.js';
import { softmax64, softmaxBackward64 } from './ref/elementwise.js';

afterAll(() => closeGpu());

// Each output is one exp (a few ulp), x - max (exact or one rounding, times |x - max| ≲ 10 in
// relative terms of exp's result), and a division by a tree-summed denominator: ≲ 1e-6 relative.
// The gradient subtracts a row dot product, so it gets an absolute floor relative to its max.
const TOL = { rtol: 2e-6, atol: 1e-7 };
const GRAD_TOL = { rtol: 2e-6, atol: 1e-6 };

describe('softmax over the last dim', () => {
  it.each([
    [3, 1],
    [5, 13],
    [4, 197],
    [2, 1025],
    [1, 4099],
  ])('%i rows of %i columns', async (rows, cols) => {
    await checkOp({
      label: `softmax ${rows}x${cols}`,
      inputs: [randn(rows * cols, undefined, 3)],
      shapes: [[rows, cols]],
      gpu: (x) => softmax(x),
      ref: ([x]) => softmax64(x, cols),
      refBackward: ([x], g) => [softmaxBackward64(x, g, cols)],
      outShape: [rows, cols],
      tol: TOL,
      gradTol: GRAD_TOL,
    });
  });

  it('works on rank-4 attention scores [2,3,7,197]', async () => {
    const shape = [2, 3, 7, 197];
    const n = shape.reduce((a, b) => a * b, 1);
    await checkOp({
      label: 'softmax 2x3x7x197',
      inputs: [randn(n, undefined, 2)],
      shapes: [shape],
      gpu: (x) => softmax(x),
      ref: ([x]) => softmax64(x, 197),
      refBackward: ([x], g) => [softmaxBackward64(x, g, 197)],
      outShape: shape,
      tol: TOL,
      gradTol: GRAD_TOL,
    });
  });

  it('is stable for large logits (row max subtracted)', async () => {
    const cols = 37;
    const x = randn(4 * cols, undefined, 20).map((v, i) => v + (i < 2 * cols ? 1000 : -1000));
    await checkOp({
      label: 'softmax large logits',
      inputs: [x],
      shapes: [[4, cols]],
      gpu: (t) => softmax(t),
      ref: ([v]) => softmax64(v, cols),
      outShape: [4, cols],
      tol: TOL,
    });
  });

  it('folds more than 65535 rows into the grid', async () => {
    const rows = 65537;
    await checkOp({
      label: `softmax ${rows}x2`,
      inputs: [randn(rows * 2)],
      shapes: [[rows, 2]],
      gpu: (x) => softmax(x),
      ref: ([x]) => softmax64(x, 2),
      outShape: [rows, 2],
      tol: TOL,
    });
  });

  it('rows sum to 1', async () => {
    const e = await testEngine();
    await e.scopeAsync(async () => {
      const y = await softmax(e.fromArray(Float32Array.from(randn(3 * 1025)), [3, 1025])).toArray();
      // Summed in float64, so only the f32 outputs' own errors show: mostly the one rounding of
      // the shared 1/Σ (measured 6e-8). 1e-6 (was 1e-5) is ~17 ulp of 1.
      const sums = [0, 1, 2].map((r) => y.subarray(r * 1025, (r + 1) * 1025).reduce((a, v) => a + v, 0));
      expectClose(sums, [1, 1, 1], { rtol: 1e-6, atol: 0 }, 'softmax 3x1025 row sums');
    });
  });
});
