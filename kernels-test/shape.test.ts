import { afterAll, describe, expect, it } from 'vitest';
import { closeGpu } from '../src/gpu/runtime.js';
import { canonicalPermute } from '../src/kernels/copy.js';
import { concatLast, permute, reshape, sliceLast } from '../src/ops/shape.js';
import { checkOp, randn, testEngine } from './helpers.js';
import { concatLast64, permute64, sliceLast64, unsliceLast64 } from './ref/elementwise.js';

afterAll(() => closeGpu());

const numelOf = (s: number[]) => s.reduce((a, b) => a * b, 1);
// Copies move bits: exact.
const EXACT = { rtol: 0, atol: 0 };

describe('reshape', () => {
  it('is a view and passes the gradient back in the input shape', async () => {
    await checkOp({
      label: 'reshape 2x3x5x7 -> 6x35',
      inputs: [randn(210)],
      shapes: [[2, 3, 5, 7]],
      gpu: (x) => reshape(x, [6, -1]),
      ref: ([x]) => x.slice(),
      refBackward: (_x, g) => [g.slice()],
      outShape: [6, 35],
      tol: EXACT,
    });
  });

  it('rejects a wrong element count', async () => {
    const e = await testEngine();
    e.scope(() => {
      expect(() => reshape(e.zeros([2, 3]), [4, 2])).toThrow(
        /reshape: cannot view \[2,3\] as \[4,2\]/,
      );
      expect(() => reshape(e.zeros([2, 3]), [-1, -1])).toThrow(/reshape/);
    });
  });
});

describe('permute', () => {
  it.each([
    [[2, 3, 5, 7], [0, 1, 2, 3]],
    [[2, 3, 5, 7], [0, 2, 1, 3]],
    [[2, 3, 5, 7], [0, 1, 3, 2]],
    [[2, 3, 5, 7], [3, 2, 1, 0]],
    [[2, 3, 5, 7], [0, 3, 1, 2]],
    [[2, 3, 5, 7], [0, 2, 3, 1]],
    [[2, 3, 5, 7], [2, 0, 3, 1]],
    [[2, 3, 5, 7], [1, 0, 2, 3]],
    [[1, 5, 1, 7], [3, 1, 2, 0]],
    [[67, 129], [1, 0]],
    [[3, 2, 4, 2, 3, 5], [0, 2, 4, 1, 3, 5]],
    [[3, 2, 4, 2, 3, 5], [5, 4, 3, 2, 1, 0]],
    [[2, 33, 3, 35], [0, 3, 2, 1]],
  ])('%j by %j', async (shape, perm) => {
    await checkOp({
      label: `permute ${shape.join('x')} by ${perm.join(',')}`,
      inputs: [randn(numelOf(shape))],
      shapes: [shape],
      gpu: (x) => permute(x, perm),
      ref: ([x]) => permute64(x, shape, perm),
      refBackward: (_x, g) => {
        const inv = new Array<number>(perm.length);
        perm.forEach((p, k) => (inv[p] = k));
        return [permute64(g, perm.map((p) => shape[p]), inv)];
      },
      outShape: perm.map((p) => shape[p]),
      tol: EXACT,
    });
  });

  it('folds more than 65535 transpose tiles into the grid', async () => {
    const shape = [65537, 2, 3];
    await checkOp({
      label: 'permute 65537x2x3 by 0,2,1',
      inputs: [randn(numelOf(shape))],
      shapes: [shape],
      gpu: (x) => permute(x, [0, 2, 1]),
      ref: ([x]) => permute64(x, shape, [0, 2, 1]),
      outShape: [65537, 3, 2],
      tol: EXACT,
    });
  });

  it('merges dims that move together', () => {
    // [B,H,W,C] -> [B,W,H,C] keeps B and C apart; [a,b,c] -> [c,a,b] is a 2-D transpose.
    expect(canonicalPermute([2, 3, 5, 7], [0, 2, 1, 3])).toEqual({
      shape: [2, 3, 5, 7],
      perm: [0, 2, 1, 3],
    });
    expect(canonicalPermute([2, 3, 5], [2, 0, 1])).toEqual({ shape: [6, 5], perm: [1, 0] });
    expect(canonicalPermute([1, 5, 1, 7], [3, 1, 2, 0])).toEqual({ shape: [5, 7], perm: [1, 0] });
    expect(canonicalPermute([2, 3], [0, 1])).toEqual({ shape: [6], perm: [0] });
  });

  it('rejects a non-permutation', async () => {
    const e = await testEngine();
    e.scope(() => {
      expect(() => permute(e.zeros([2, 3]), [0, 0])).toThrow(/permute: perm \[0,0\]/);
    });
  });
});

describe('sliceLast and concatLast', () => {
  it.each([
    [[3, 5, 13], 2, 7],
    [[3, 5, 13], 0, 13],
    [[1031, 3], 1, 1],
    [[7], 6, 1],
  ])('slices %j at [%i, +%i)', async (shape, start, len) => {
    const C = shape[shape.length - 1];
    await checkOp({
      label: `sliceLast ${shape.join('x')} ${start}+${len}`,
      inputs: [randn(numelOf(shape))],
      shapes: [shape],
      gpu: (x) => sliceLast(x, start, len),
      ref: ([x]) => sliceLast64(x, C, start, len),
      refBackward: (_x, g) => [unsliceLast64(g, C, start, len)],
      outShape: [...shape.slice(0, -1), len],
      tol: EXACT,
    });
  });

  it.each([
    [[4, 1, 9]],
    [[13]],
    [[1, 1031, 2]],
  ])('concatenates widths %j', async (widths) => {
    const lead = [3, 5];
    const rows = numelOf(lead);
    const C = widths.reduce((a, b) => a + b, 0);
    await checkOp({
      label: `concatLast ${widths.join(',')}`,
      inputs: widths.map((w) => randn(rows * w)),
      shapes: widths.map((w) => [...lead, w]),
      gpu: (...xs) => concatLast(xs),
      ref: (xs) => concatLast64(xs, widths),
      refBackward: (_xs, g) => {
        let off = 0;
        return widths.map((w) => {
          const gi = sliceLast64(g, C, off, w);
          off += w;
          return gi;
        });
      },
      outShape: [...lead, C],
      tol: EXACT,
    });
  });

  it('rejects mismatched leading dims and out-of-range slices', async () => {
    const e = await testEngine();
    e.scope(() => {
      expect(() => concatLast([e.zeros([2, 3]), e.zeros([3, 3])])).toThrow(
        /concatLast: leading dims \[2\] expected, got \[3,3\]/,
      );
      expect(() => sliceLast(e.zeros([2, 3]), 2, 2)).toThrow(/sliceLast: \[2, 4\)/);
    });
  });
});
