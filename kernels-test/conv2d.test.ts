import { afterAll, describe, expect, it } from 'vitest';
import { closeGpu } from '../src/gpu/runtime.js';
import { conv2dBackwardWeight, weightGradSplits } from '../src/kernels/conv.js';
import { conv2d } from '../src/ops/conv2d.js';
import { checkOp, expectClose, f32, randn, testEngine } from './helpers.js';
import { type RefConvDims, refConv2d, refConv2dBackward, refConvOut } from './ref/conv.js';

afterAll(() => closeGpu());

// f32 dot products of K terms (K = kh*kw*Cin forward, kh*kw*Cout for dx, B*Ho*Wo for dW and
// bias; K <= 798 here): rounding grows like sqrt(K) * 2^-24 of the terms' size, ~2e-6 of max|y|.
// 1e-5 keeps a 5x margin for summation order while a wrong or missing term (>= 1e-2) still fails.
const TOL = { rtol: 1e-5, atol: 1e-5 };

interface Case {
  name: string;
  d: RefConvDims;
  bias: boolean;
  grads?: boolean[];
}

const cases: Case[] = [
  // SAM2 patch embed geometry (7x7 stride 4 pad 3), odd image, Cin 3.
  {
    name: '7x7 s4 p3',
    d: { b: 2, h: 23, w: 17, cin: 3, cout: 17, kh: 7, kw: 7, stride: 4, pad: 3 },
    bias: true,
  },
  // Segmentation-head geometry (3x3 pad 1), Cin 13 -> 7, 198 output rows (4 m-tiles).
  {
    name: '3x3 p1',
    d: { b: 2, h: 9, w: 11, cin: 13, cout: 7, kh: 3, kw: 3, stride: 1, pad: 1 },
    bias: true,
  },
  // Stride 2 without padding: the last input row/col feeds no output (its dx must be 0).
  {
    name: '3x3 s2 no bias',
    d: { b: 2, h: 10, w: 9, cin: 5, cout: 7, kh: 3, kw: 3, stride: 2, pad: 0 },
    bias: false,
  },
  // Neck/head 1x1 (the direct GEMM path): Cout 70 spans two n-tiles; 798 rows split dW 3 ways.
  {
    name: '1x1',
    d: { b: 2, h: 19, w: 21, cin: 13, cout: 70, kh: 1, kw: 1, stride: 1, pad: 0 },
    bias: true,
  },
  // Frozen weight and bias (LoRA): only dx flows.
  {
    name: '3x3 p1 frozen weight',
    d: { b: 2, h: 9, w: 11, cin: 5, cout: 17, kh: 3, kw: 3, stride: 1, pad: 1 },
    bias: true,
    grads: [true, false, false],
  },
];

describe('conv2d', () => {
  it.each(cases)('matches float64: $name', async ({ name, d, bias, grads }) => {
    const [ho, wo] = refConvOut(d);
    const xShape = [d.b, d.h, d.w, d.cin];
    const wShape = [d.cout, d.cin, d.kh, d.kw];
    // Weights at PyTorch's init scale so outputs stay O(1).
    const wScale = 1 / Math.sqrt(d.cin * d.kh * d.kw);
    const inputs = [
      randn(d.b * d.h * d.w * d.cin),
      randn(d.cout * d.cin * d.kh * d.kw, undefined, wScale),
    ];
    const shapes = [xShape, wShape];
    if (bias) {
      inputs.push(randn(d.cout));
      shapes.push([d.cout]);
    }
    const r = await checkOp({
      label: `conv2d ${name} ${xShape.join('x')} * ${wShape.join('x')}`,
      inputs,
      shapes,
      grads,
      gpu: (x, w, b) => conv2d(x, w, b ?? null, { stride: d.stride, padding: d.pad }),
      ref: ([x, w, b]) => refConv2d(x, w, b ?? null, d),
      refBackward: ([x, w], gy) => {
        const [dx, dw, db] = refConv2dBackward(x, w, gy, d);
        return bias ? [dx, dw, db] : [dx, dw];
      },
      outShape: [d.b, ho, wo, d.cout],
      tol: TOL,
    });
    console.log(
      `conv2d ${name}: fwd rel ${r.fwd.maxRel.toExponential(2)}, grads rel ` +
        r.grads.map((g) => g.maxRel.toExponential(2)).join(' '),
    );
  });

  it('weight gradient agrees for every split of the reduction', async () => {
    const d: RefConvDims = { b: 2, h: 9, w: 11, cin: 5, cout: 7, kh: 3, kw: 3, stride: 1, pad: 1 };
    const [ho, wo] = refConvOut(d);
    const x = f32(randn(d.b * d.h * d.w * d.cin));
    const w = f32(randn(d.cout * d.cin * 9));
    const gy = f32(randn(d.b * ho * wo * d.cout));
    const want = refConv2dBackward(x, w, gy, d)[1];
    const e = await testEngine();
    expect(weightGradSplits(d)).toBe(1);
    await e.scopeAsync(async () => {
      const xt = e.fromArray(x, [d.b, d.h, d.w, d.cin]);
      const gt = e.fromArray(gy, [d.b, ho, wo, d.cout]);
      // 198 rows: chunks of 208 (1 slice), 112 (2), 16 (13, the last one short) and 198 slices
      // capped by the chunk rounding to 16.
      for (const splits of [1, 2, 13, 198]) {
        const dw = e.empty([d.cout, d.cin, 3, 3]);
        conv2dBackwardWeight(e.gpu, gt.buffer, xt.buffer, dw.buffer, d, splits);
        expectClose(await dw.toArray(), want, TOL, `conv2d dW splits=${splits}`);
      }
    });
  });

  it('rejects mismatched shapes naming the op', async () => {
    const e = await testEngine();
    e.scope(() => {
      const x = e.zeros([1, 4, 4, 3]);
      expect(() => conv2d(x, e.zeros([2, 4, 3, 3]), null)).toThrow(/conv2d.*Cin/);
      expect(() => conv2d(x, e.zeros([2, 3, 3, 3]), e.zeros([3]))).toThrow(/conv2d: bias/);
      expect(() => conv2d(x, e.zeros([2, 3, 7, 7]), null)).toThrow(/conv2d: kernel/);
    });
  });
});
