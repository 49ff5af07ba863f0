import { afterAll, describe, expect, it } from 'vitest';
import { closeGpu } from '../src/gpu/runtime.js';
import { erf, gelu, relu, sigmoid } from '../src/ops/activation.js';
import { checkOp, expectClose, f32, randn, testEngine } from './helpers.js';
import {
  erf64,
  erfc64,
  erfGrad64,
  gelu64,
  geluGrad64,
  reluGrad64,
  relu64,
  sigmoid64,
  sigmoidGrad64,
} from './ref/elementwise.js';

afterAll(() => closeGpu());

/** n points evenly over [lo, hi] (endpoints included). */
const linspace = (lo: number, hi: number, n: number) =>
  Float64Array.from({ length: n }, (_, i) => lo + ((hi - lo) * i) / (n - 1));

const concat = (...xs: ArrayLike<number>[]) =>
  Float64Array.from(xs.flatMap((x) => Array.from(x)));

describe('float64 erf reference', () => {
  // Values from mpmath at 30 digits; the series / continued fraction reach ~1e-15 relative.
  it.each([
    [1e-3, 0.0011283787909692364, 0.9988716212090308],
    [0.5, 0.5204998778130465, 0.4795001221869535],
    [1, 0.8427007929497149, 0.15729920705028513],
    [1.7, 0.9837904585907746, 0.016209541409225439],
    [2.5, 0.999593047982555, 0.00040695201744495894],
    [2.9999, 0.9999778955735178, 2.210442648216091e-5],
    [3, 0.9999779095030014, 2.2090496998585441e-5],
    [3.5, 0.9999992569016276, 7.430983723414127e-7],
    [4.5, 0.999999999803384, 1.9661604415428875e-10],
    [6, 1, 2.1519736712498913e-17],
  ])('erf(%f)', (x, want, wantC) => {
    // A few float64 ulp (the e^{-x^2} factor and the sums each round).
    expect(Math.abs(erf64(x) - want)).toBeLessThan(1e-15);
    expect(Math.abs(erf64(-x) + want)).toBeLessThan(1e-15);
    // Relative: the point of erfc is the tail.
    expect(Math.abs(erfc64(x) / wantC - 1)).toBeLessThan(1e-14);
  });
});

describe('relu', () => {
  // max and select round nothing: exact.
  const EXACT = { rtol: 0, atol: 0 };
  it.each([[1], [7], [1031], [70007]])('matches float64 at n = %i', async (n) => {
    await checkOp({
      label: `relu ${n}`,
      inputs: [randn(n)],
      shapes: [[n]],
      gpu: (x) => relu(x),
      ref: ([x]) => x.map(relu64),
      refBackward: ([x], g) => [x.map((v, i) => g[i] * reluGrad64(v))],
      outShape: [n],
      tol: EXACT,
    });
  });

  it('has gradient 0 at x == 0 (PyTorch convention)', async () => {
    const x = Float64Array.from([0, -0, 0, 1, -1, 0, 2.5]);
    await checkOp({
      label: 'relu at 0',
      inputs: [x],
      shapes: [[7]],
      gpu: (t) => relu(t),
      ref: ([v]) => v.map(relu64),
      refBackward: ([v], g) => [v.map((u, i) => g[i] * reluGrad64(u))],
      outShape: [7],
      tol: EXACT,
      // The kink itself has no finite-difference derivative.
      fd: { skip: [0] },
    });
  });
});

describe('gelu (exact, erf-based)', () => {
  // f32 Phi: ~1.6e-7 relative for |z| < 1 (polynomial), ~6e-7 in the tails (erfc fit, exp and a
  // few roundings); x * Phi adds one rounding. 1e-6 relative plus 1e-7 of the max.
  const TOL = { rtol: 1e-6, atol: 1e-7 };
  it('matches float64 over [-8, 8] (4001 points) and random inputs', async () => {
    const x = concat(linspace(-8, 8, 4001), randn(1031, undefined, 3));
    await checkOp({
      label: 'gelu [-8,8]',
      inputs: [x],
      shapes: [[x.length]],
      gpu: (t) => gelu(t),
      ref: ([v]) => v.map(gelu64),
      refBackward: ([v], g) => [v.map((u, i) => g[i] * geluGrad64(u))],
      outShape: [x.length],
      tol: TOL,
    });
  });

  it('keeps relative accuracy in the negative tail [-8, -3] (forward and gradient)', async () => {
    // Phi(x) is erfc/2, never 1 - (1 - small); the exponent x^2/2 is split exactly and its exp
    // range-reduced, so what is left is erfc's fit and a few roundings (~10 ulp ≈ 6e-7; without
    // the split and reduction it was 7e-6). 2e-6 relative.
    const x = f32(linspace(-8, -3, 1001));
    const e = await testEngine();
    await e.scopeAsync(async () => {
      const xt = e.fromArray(x, [x.length], true);
      const y = gelu(xt);
      const got = await y.toArray();
      e.backward(y, e.full(y.shape, 1));
      const grad = await (xt.grad as NonNullable<typeof xt.grad>).toArray();
      xt.dispose();
      const tol = { rtol: 2e-6, atol: 0 };
      expectClose(got, x.map(gelu64), tol, 'gelu tail forward');
      expectClose(grad, x.map(geluGrad64), tol, 'gelu tail gradient');
    });
  });
});

describe('erf (f32, under gelu)', () => {
  it('matches float64 erf over [-6, 6] to ~1e-7 absolute', async () => {
    const x = concat(linspace(-6, 6, 6001), [0, 1e-6, -1e-6, 0.999999, 1, 1.000001, 9, 12, -40]);
    await checkOp({
      label: 'erf [-6,6]',
      inputs: [x],
      shapes: [[x.length]],
      gpu: (t) => erf(t),
      ref: ([v]) => v.map(erf64),
      refBackward: ([v], g) => [v.map((u, i) => g[i] * erfGrad64(u))],
      outShape: [x.length],
      // erf's values are in [-1, 1]: 2e-7 absolute is a few f32 ulp of 1; the derivative is one
      // range-reduced exp of the exactly split x^2 (a few ulp).
      tol: { rtol: 0, atol: 2e-7 },
      gradTol: { rtol: 1e-6, atol: 1e-7 },
    });
  });

  it('keeps relative accuracy for small |x| (no 1 - erfc cancellation)', async () => {
    const e = await testEngine();
    await e.scopeAsync(async () => {
      const xs = f32(concat(linspace(1e-4, 0.999, 500), linspace(-0.999, -1e-4, 500)));
      const got = await erf(e.fromArray(xs, [xs.length])).toArray();
      const r = expectClose(got, xs.map(erf64), { rtol: 5e-7, atol: 0 }, 'erf small |x|');
      expect(r.maxAbs).toBeLessThan(2e-7);
    });
  });
});

describe('sigmoid', () => {
  // One exp and one division: a few ulp. rtol 1e-6 relative (tails included), atol 1e-7 of max.
  const TOL = { rtol: 1e-6, atol: 1e-7 };
  it.each([[1], [7], [1031], [70007]])('matches float64 at n = %i', async (n) => {
    await checkOp({
      label: `sigmoid ${n}`,
      inputs: [randn(n, undefined, 4)],
      shapes: [[n]],
      gpu: (x) => sigmoid(x),
      ref: ([x]) => x.map(sigmoid64),
      refBackward: ([x], g) => [x.map((v, i) => g[i] * sigmoidGrad64(v))],
      outShape: [n],
      tol: TOL,
    });
  });

  it('is finite and saturates at ±90 and beyond', async () => {
    const x = Float64Array.from([-1000, -90, -30, -20, 0, 20, 30, 90, 1000, -1e38, 1e38]);
    await checkOp({
      label: 'sigmoid saturation',
      inputs: [x],
      shapes: [[x.length]],
      gpu: (t) => sigmoid(t),
      ref: ([v]) => v.map(sigmoid64),
      refBackward: ([v], g) => [v.map((u, i) => g[i] * sigmoidGrad64(u))],
      outShape: [x.length],
      // sigmoid(-90) = 8e-40 is an f32 subnormal that GPUs may flush to 0: atol 1e-7 of max.
      tol: { rtol: 1e-6, atol: 1e-7 },
    });
  });
});
