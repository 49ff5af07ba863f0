/**
 * conv2d's two kernel paths, each forced on whatever adapter runs the tests: `implicit` (the
 * workgroup-memory implicit GEMMs, the GPU default) and `gemm` (im2col / col2im around matmul,
 * the CPU-adapter default). Forward, dx and dW against the float64 reference (whose backward is
 * checked against finite differences here too), outputs NaN-poisoned, awkward sizes: K not a
 * multiple of 4 (patch-embed geometry, padded weight), Cout not a multiple of 4 (dx and dW fall
 * back to the implicit kernels), 1x1 with Cin aligned (plain products) and not (fallback).
 */
import { afterAll, describe, expect, it } from 'vitest';
import { closeGpu } from '../src/gpu/runtime.js';
import {
  type ConvPath,
  conv2dBackwardInput,
  conv2dBackwardWeight,
  conv2dForward,
} from '../src/kernels/conv.js';
import { checkRefBackward, expectClose, f32, randn, spyRuns, testEngine } from './helpers.js';
import { type RefConvDims, refConv2d, refConv2dBackward, refConvOut } from './ref/conv.js';

afterAll(() => closeGpu());

// Same bound as conv2d.test.ts: f32 sums of K <= 1000 terms round at ~2e-6 of max|y|; 1e-5 is
// a 5x margin while a wrong or missing tap (>= 1e-2 here) fails.
const TOL = { rtol: 1e-5, atol: 1e-5 };

const cases: { name: string; d: RefConvDims }[] = [
  // Patch embed: K = 3*49 = 147 (padded to 148), stride 4, odd image.
  { name: '7x7 s4 p3 Cin 3', d: { b: 2, h: 23, w: 17, cin: 3, cout: 16, kh: 7, kw: 7, stride: 4, pad: 3 } },
  // Head geometry, K = 117 (padded), 198 output rows.
  { name: '3x3 p1 Cin 13', d: { b: 2, h: 9, w: 11, cin: 13, cout: 12, kh: 3, kw: 3, stride: 1, pad: 1 } },
  // Stride 2 unpadded: the last input row and column feed no output (their dx is 0).
  { name: '3x3 s2', d: { b: 2, h: 10, w: 9, cin: 8, cout: 20, kh: 3, kw: 3, stride: 2, pad: 0 } },
  // Cout 7: dx and dW take the implicit kernels even on the gemm path.
  { name: '3x3 p1 Cout 7', d: { b: 1, h: 7, w: 6, cin: 5, cout: 7, kh: 3, kw: 3, stride: 1, pad: 1 } },
  // 1x1 with Cin % 4 == 0: plain products (no im2col); 798 rows.
  { name: '1x1 Cin 12', d: { b: 2, h: 19, w: 21, cin: 12, cout: 36, kh: 1, kw: 1, stride: 1, pad: 0 } },
  // 1x1 with Cin 13: the implicit kernels.
  { name: '1x1 Cin 13', d: { b: 1, h: 5, w: 7, cin: 13, cout: 8, kh: 1, kw: 1, stride: 1, pad: 0 } },
  // 1x1 with stride 2 is not a plain product: im2col.
  { name: '1x1 s2', d: { b: 1, h: 9, w: 9, cin: 8, cout: 4, kh: 1, kw: 1, stride: 2, pad: 0 } },
];

describe.each(['implicit', 'gemm'] as ConvPath[])('conv2d kernels, path %s', (path) => {
  it.each(cases)('forward, dx, dW match float64: $name', async ({ name, d }) => {
    const [ho, wo] = refConvOut(d);
    const K = d.cin * d.kh * d.kw;
    const x = f32(randn(d.b * d.h * d.w * d.cin));
    const w = f32(randn(d.cout * K, undefined, 1 / Math.sqrt(K)));
    const bias = f32(randn(d.cout));
    const gy = f32(randn(d.b * ho * wo * d.cout));
    const [dxWant, dwWant] = refConv2dBackward(x, w, gy, d);
    const e = await testEngine();
    await e.scopeAsync(async () => {
      const xt = e.fromArray(x, [d.b, d.h, d.w, d.cin]);
      const wt = e.fromArray(w, [d.cout, d.cin, d.kh, d.kw]);
      const bt = e.fromArray(bias, [d.cout]);
      const gt = e.fromArray(gy, [d.b, ho, wo, d.cout]);
      const nan = (n: number, shape: number[]) => e.fromArray(new Float64Array(n).fill(NaN), shape);
      const y = nan(gy.length, [d.b, ho, wo, d.cout]);
      const dx = nan(x.length, [d.b, d.h, d.w, d.cin]);
      const dw = nan(w.length, [d.cout, d.cin, d.kh, d.kw]);
      const runs = spyRuns(e.gpu, () => {
        conv2dForward(e.gpu, xt.buffer, wt.buffer, bt.buffer, y.buffer, d, path);
        conv2dBackwardInput(e.gpu, gt.buffer, wt.buffer, dx.buffer, d, path);
        conv2dBackwardWeight(e.gpu, gt.buffer, xt.buffer, dw.buffer, d, undefined, path);
      }).map((r) => r.kernel);
      const label = `conv2d ${path} ${name}`;
      expectClose(await y.toArray(), refConv2d(x, w, bias, d), TOL, `${label} forward`);
      expectClose(await dx.toArray(), dxWant, TOL, `${label} dx`);
      expectClose(await dw.toArray(), dwWant, TOL, `${label} dW`);
      // The path taken is the one asked for (the gemm path's fallbacks are the listed cases).
      const implicit = runs.filter((k) => /^conv\.(fwd|dx|dw)$/.test(k));
      if (path === 'implicit') expect(implicit).toEqual(['conv.fwd', 'conv.dx', 'conv.dw']);
      else {
        const direct = d.kh === 1 && d.kw === 1 && d.stride === 1 && d.pad === 0;
        const want: string[] = [];
        if (direct && d.cin % 4 !== 0) want.push('conv.fwd');
        if (d.cout % 4 !== 0 || (direct && d.cin % 4 !== 0)) want.push('conv.dx', 'conv.dw');
        expect(implicit, runs.join(' ')).toEqual(want);
        if (want.length < 3) expect(runs.some((k) => k.startsWith('matmul.'))).toBe(true);
      }
    });
  });
});

describe('conv2d float64 reference', () => {
  it.each(cases.slice(0, 3))('backward agrees with finite differences: $name', ({ name, d }) => {
    const [ho, wo] = refConvOut(d);
    const K = d.cin * d.kh * d.kw;
    checkRefBackward(
      ([x, w]) => refConv2d(x, w, null, d),
      ([x, w], gy) => refConv2dBackward(x, w, gy, d).slice(0, 2),
      [randn(d.b * d.h * d.w * d.cin), randn(d.cout * K, undefined, 1 / Math.sqrt(K))],
      randn(d.b * ho * wo * d.cout),
      { label: `conv2d ref ${name}` },
    );
  });
});
