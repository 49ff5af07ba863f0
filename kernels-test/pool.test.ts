import { afterAll, describe, expect, it } from 'vitest';
import { closeGpu } from '../src/gpu/runtime.js';
import { maxPool2d } from '../src/ops/pool.js';
import { checkOp, nextRng, randn, testEngine } from './helpers.js';
import { refMaxPool, refMaxPoolBackward } from './ref/conv.js';

afterAll(() => closeGpu());

// Max-pooling only selects and copies values (forward and backward): results must be exact.
const EXACT = { rtol: 0, atol: 0 };

describe('maxPool2d', () => {
  it.each([
    // [B, H, W, C, k]: odd H/W drop the last row/col; C not a multiple of 4.
    [2, 11, 15, 5, 2],
    [2, 8, 6, 13, 2],
    [2, 10, 7, 3, 3],
  ])('matches float64 at B,H,W,C = %i,%i,%i,%i, k = %i', async (b, h, w, c, k) => {
    const ho = Math.floor(h / k);
    const wo = Math.floor(w / k);
    await checkOp({
      label: `maxPool2d ${b}x${h}x${w}x${c} k${k}`,
      inputs: [randn(b * h * w * c)],
      shapes: [[b, h, w, c]],
      gpu: (x) => maxPool2d(x, k),
      ref: ([x]) => refMaxPool(x, b, h, w, c, k),
      refBackward: ([x], gy) => [refMaxPoolBackward(x, gy, b, h, w, c, k)],
      outShape: [b, ho, wo, c],
      tol: EXACT,
    });
  });

  it('routes the gradient to the first maximum on ties', async () => {
    const [b, h, w, c, k] = [2, 9, 7, 3, 2];
    // Values from {0, 1, 2}: most windows hold tied maxima. Finite differences are undefined at
    // ties, so the reference backward is only checked by the random-input cases above.
    const r = nextRng();
    const x = Float64Array.from({ length: b * h * w * c }, () => Math.floor(r() * 3));
    await checkOp({
      label: `maxPool2d ties ${b}x${h}x${w}x${c}`,
      inputs: [x],
      shapes: [[b, h, w, c]],
      gpu: (t) => maxPool2d(t, k),
      ref: ([v]) => refMaxPool(v, b, h, w, c, k),
      refBackward: ([v], gy) => [refMaxPoolBackward(v, gy, b, h, w, c, k)],
      outShape: [b, 4, 3, c],
      tol: EXACT,
      fd: { skip: [0] },
    });
  });

  it('rejects bad shapes naming the op', async () => {
    const e = await testEngine();
    e.scope(() => {
      expect(() => maxPool2d(e.zeros([4, 4, 3]), 2)).toThrow(/maxPool2d: x must be/);
      expect(() => maxPool2d(e.zeros([1, 1, 4, 3]), 2)).toThrow(/maxPool2d: kernel/);
    });
  });
});
