/**
 * The harness itself: a comparison that cannot fail checks nothing, so each way a wrong answer
 * could slip through (NaN or Inf on either side, a real mismatch, a gradient the reference does
 * not give, a wrong reference backward) must fail, and a match must pass.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { closeGpu } from '../src/gpu/runtime.js';
import { mul } from '../src/ops/elementwise.js';
import { checkOp, checkRefBackward, expectClose, f32, nextRng, randn, SEED } from './helpers.js';

afterAll(() => closeGpu());

const TOL = { rtol: 1e-6, atol: 1e-7 };

describe('expectClose', () => {
  const want = [1, -2, 0.5, 3];

  it('passes a match within the bound and reports what it measured', () => {
    const got = want.map((w, i) => w + (i === 1 ? 2e-7 : 0));
    const r = expectClose(got, want, TOL, 'match');
    expect(r.maxAbs).toBeCloseTo(2e-7, 12);
    expect(r.worstIndex).toBe(1);
    // Element 1's bound: 1e-7·3 + 1e-6·2 = 2.3e-6.
    expect(r.used).toBeCloseTo(2e-7 / 2.3e-6, 6);
  });

  it('fails on NaN in the reference, naming the index', () => {
    expect(() => expectClose(want, [1, Number.NaN, 0.5, 3], TOL, 'nan ref')).toThrow(
      /nan ref: reference element 1 is NaN/,
    );
    // Even where the output is NaN at the same place.
    expect(() => expectClose([1, Number.NaN, 0.5, 3], [1, Number.NaN, 0.5, 3], TOL, 'both')).toThrow(
      /reference element 1 is NaN/,
    );
  });

  it('fails on NaN in the output, naming the index and value', () => {
    expect(() => expectClose([1, -2, Number.NaN, 3], want, TOL, 'nan out')).toThrow(
      /nan out: output element 2 is NaN \(want 0\.5\)/,
    );
  });

  it('fails on Inf on either side', () => {
    expect(() => expectClose([1, -2, 0.5, Number.POSITIVE_INFINITY], want, TOL, 'inf out')).toThrow(
      /output element 3 is Infinity/,
    );
    expect(() => expectClose(want, [Number.NEGATIVE_INFINITY, -2, 0.5, 3], TOL, 'inf ref')).toThrow(
      /reference element 0 is -Infinity/,
    );
  });

  it('fails on a real mismatch, stating the bound and the seed', () => {
    expect(() => expectClose([1, -2, 0.5001, 3], want, TOL, 'off')).toThrow(
      new RegExp(`off: element 2 got 0\\.5001 want 0\\.5.*atol 1e-7·max\\|want\\|.*rtol 1e-6·\\|want\\|.*seed ${SEED}`),
    );
    // An all-zero reference leaves a zero bound: any difference fails.
    expect(() => expectClose([0, 1e-30], [0, 0], TOL, 'zeros')).toThrow(/zeros: element 1/);
    expect(expectClose([0, 0], [0, 0], TOL, 'zeros equal').used).toBe(0);
  });

  it('fails on a length mismatch', () => {
    expect(() => expectClose([1, 2], [1, 2, 3], TOL, 'len')).toThrow(/len: got 2 elements, want 3/);
  });
});

describe('checkRefBackward', () => {
  const sq = ([x]: Float64Array[]) => x.map((v) => v * v);
  it('passes a right reference backward and fails a wrong one', () => {
    const x = randn(9, nextRng());
    const g = randn(9, nextRng());
    checkRefBackward(sq, ([a], gy) => [a.map((v, i) => 2 * v * gy[i])], [x], g, { label: 'x^2' });
    expect(() =>
      checkRefBackward(sq, ([a], gy) => [a.map((v, i) => 2.001 * v * gy[i])], [x], g, { label: 'bad x^2' }),
    ).toThrow(/bad x\^2: reference grad of input 0\[\d+\].*finite difference/);
    expect(() =>
      checkRefBackward(sq, ([a]) => [a.map(() => Number.NaN)], [x], g, { label: 'nan grad' }),
    ).toThrow(/nan grad: reference grad of input 0\[0\] is NaN/);
  });
});

describe('checkOp', () => {
  const a = f32(randn(3 * 5));
  const b = f32(randn(3 * 5));
  const base = {
    inputs: [a, b],
    shapes: [[3, 5], [3, 5]],
    gpu: (x: Parameters<typeof mul>[0], y: Parameters<typeof mul>[1]) => mul(x, y),
    ref: ([x, y]: Float64Array[]) => x.map((v, i) => v * y[i]),
    outShape: [3, 5],
    tol: { rtol: 1e-6, atol: 1e-7 },
  };

  it('passes a right op and reference', async () => {
    const r = await checkOp({
      ...base,
      label: 'mul ok',
      refBackward: ([x, y], g) => [g.map((v, i) => v * y[i]), g.map((v, i) => v * x[i])],
    });
    expect(r.grads.length).toBe(2);
  });

  it('fails when the reference backward gives null for an input the GPU differentiates', async () => {
    await expect(
      checkOp({ ...base, label: 'mul null', refBackward: ([, y], g) => [g.map((v, i) => v * y[i]), null] }),
    ).rejects.toThrow(/mul null: reference backward gives no gradient for input 1/);
  });

  it('fails when the GPU result differs from the reference', async () => {
    await expect(
      checkOp({ ...base, label: 'mul wrong ref', ref: ([x, y]) => x.map((v, i) => v * y[i] * (1 + 1e-4)) }),
    ).rejects.toThrow(/mul wrong ref forward: element/);
  });
});
