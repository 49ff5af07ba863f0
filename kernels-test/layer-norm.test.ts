import { afterAll, describe, expect, it } from 'vitest';
import { closeGpu } from '../src/gpu/runtime.js';
import type { LnPath } from '../src/kernels/norm.js';
import { layerNorm } from '../src/ops/layer-norm.js';
import { checkOp, randn, testEngine, type Tol } from './helpers.js';
import { layerNormRef, layerNormRefBackward } from './ref/norm.js';

afterAll(() => closeGpu());

// Forward: each output is (x - mean) * rstd over one row; f32 tree reductions over <= 769 terms
// keep mean and rstd to ~1e-6 relative, so 1e-5 is a ~10x margin.
const FWD: Tol = { rtol: 1e-5, atol: 1e-5 };
// Backward: dx = rstd * (gh - mean(gh) - xh * mean(gh * xh)) cancels terms of size max|g*w|, and
// dweight/dbias sum over up to 201 rows: errors are a few f32 ulps of the largest term, ~1e-6.
const BWD: Tol = { rtol: 1e-5, atol: 1e-5 };

function lnCase(
  path: LnPath,
  shape: number[],
  opts: { offset?: number; grads?: boolean[]; eps?: number } = {},
) {
  const C = shape[shape.length - 1];
  const n = shape.reduce((a, b) => a * b, 1);
  const eps = opts.eps ?? 1e-6;
  const x = randn(n).map((v) => v + (opts.offset ?? 0));
  return checkOp({
    label: `layer_norm (${path}) ${shape.join('x')}${opts.offset ? ` offset ${opts.offset}` : ''}`,
    inputs: [x, randn(C, undefined, 0.5).map((v) => v + 1), randn(C, undefined, 0.3)],
    shapes: [shape, [C], [C]],
    grads: opts.grads,
    gpu: (xt, w, b) => layerNorm(xt, w, b, eps, path),
    ref: ([xv, w, b]) => layerNormRef(xv, w, b, C, eps),
    refBackward: ([xv, w], g) => layerNormRefBackward(xv, w, g, C, eps),
    outShape: shape,
    tol: FWD,
    gradTol: BWD,
  });
}

// Both kernel paths on whatever adapter runs the tests: 'groups' (workgroup per row, the GPU
// default) and 'rows' (invocation per row, the CPU-adapter default; vec4 when C % 4 == 0).
describe.each(['groups', 'rows'] as LnPath[])('layerNorm (%s path)', (path) => {
  // C = 2 normalizes every row to about (±1, ∓1): the gradient is O(eps), so a large eps keeps it
  // well conditioned for both the finite differences and the f32 comparison.
  it('matches float64 at C = 2', async () => {
    await lnCase(path, [3, 5, 2], { eps: 0.5 });
  });

  it.each([[5, 7], [2, 3, 96], [4, 97], [5, 769], [3, 67, 7], [2, 40, 33]])(
    'matches float64 at %j',
    async (...shape: number[]) => {
      const r = await lnCase(path, shape);
      expect(r.grads.length).toBe(3);
    },
  );

  // 70001 rows: the row grid folds into y and dweight/dbias go through 256 row chunks. C = 8 (not
  // 2-4) so that no row among 70001 has a near-zero variance that would make dx ill-conditioned.
  it('folds the row grid past 65535 rows', async () => {
    await lnCase(path, [70001, 8]);
  });

  it('keeps precision for rows with a large common offset', async () => {
    await lnCase(path, [6, 97], { offset: 100 });
    // C % 4 == 0: the 'rows' path's vec4 kernels.
    await lnCase(path, [7, 388], { offset: 100 });
  });

  it('gives only dx when weight and bias are frozen', async () => {
    const r = await lnCase(path, [4, 96], { grads: [true, false, false] });
    expect(r.grads.length).toBe(1);
  });

  it('gives only dweight and dbias when the input needs no gradient', async () => {
    const r = await lnCase(path, [9, 33], { grads: [false, true, true], eps: 1e-5 });
    expect(r.grads.length).toBe(2);
  });

  it('rejects mismatched weight shapes', async () => {
    const e = await testEngine();
    e.scope(() => {
      const x = e.zeros([2, 8]);
      expect(() => layerNorm(x, e.zeros([7]), e.zeros([8]))).toThrow(/weight expected \[8\]/);
    });
  });
});
