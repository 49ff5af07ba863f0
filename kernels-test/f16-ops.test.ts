/**
 * f16 variants of every op on the encoder's path except the matmul family (f16-matmul.test.ts):
 * elementwise and GELU, shape copies, the broadcast-add reduction, layer norm, window partition,
 * max-pool, interpolate, conv2d (both kernel paths) and attention (both kernel paths), against the
 * float64 references. Inputs stored as f16 are rounded to f16 before the reference sees them.
 *
 * Tolerances: each f32-computed result is rounded once to f16, |err| <= u·|want| with u = 2^-11,
 * on top of the op's f32 bound from its own test file (restated here). Pure copies stay exact.
 */
import { afterAll, describe, it } from 'vitest';
import type { DType } from '../src/autograd/tensor.js';
import { closeGpu } from '../src/gpu/runtime.js';
import {
  type AttnDims, attentionBackwardD, attentionBackwardKV, attentionBackwardQ, attentionForward,
} from '../src/kernels/attention.js';
import { conv2dBackwardInput, conv2dForward } from '../src/kernels/conv.js';
import { gelu } from '../src/ops/activation.js';
import { add } from '../src/ops/add.js';
import { attention, attentionQkv } from '../src/ops/attention.js';
import { cast } from '../src/ops/cast.js';
import { conv2d } from '../src/ops/conv2d.js';
import { mul, sub } from '../src/ops/elementwise.js';
import { interpolate } from '../src/ops/interpolate.js';
import { layerNorm } from '../src/ops/layer-norm.js';
import { maxPool2d } from '../src/ops/pool.js';
import { concatLast, permute, sliceLast } from '../src/ops/shape.js';
import { windowPartition, windowUnpartition } from '../src/ops/window.js';
import { roundArrayF16 } from '../src/util/f16.js';
import { checkOp, expectClose, randn, testEngine, type Tol } from './helpers.js';
import { ONE_ROUNDING_F16, U16, f16Supported, sumTolF16 } from './f16-helpers.js';
import {
  type AttnShape, attentionRef, attentionRefBackward, attentionStoredOutTerms, packQkv,
  splitColumns, splitQkv,
} from './ref/attention.js';
import { type WinShape, windowPartitionRef, windowUnpartitionRef } from './ref/attention.js';
import {
  refConv2d, refConv2dBackward, refConvOut, refMaxPool, refMaxPoolBackward,
} from './ref/conv.js';
import type { RefConvDims } from './ref/conv.js';
import {
  broadcast2, concatLast64, normalCdf64, permute64, sliceLast64, sumLeading, unsliceLast64,
} from './ref/elementwise.js';
import { layerNormRef, layerNormRefBackward } from './ref/norm.js';
import { refResize, refResizeBackward } from './ref/resize.js';

afterAll(() => closeGpu());

const run = await f16Supported();
const EXACT: Tol = { rtol: 0, atol: 0 };
const n = (s: number[]) => s.reduce((a, b) => a * b, 1);
/** An f32 tolerance plus one f16 rounding of the result. */
const plusRounding = (t: Tol): Tol => ({ rtol: t.rtol + U16, atol: t.atol });

describe.skipIf(!run)('elementwise f16', () => {
  it.each([
    [[1031], [1031], 'f16'],
    [[2, 3, 5, 7], [5, 7], 'f32'],
    [[10001, 7], [7], 'f16'],
  ] as [number[], number[], DType][])('add/sub/mul a %j f16, b %j %s', async (sa, sb, bdt) => {
    for (const [name, op, f, df] of [
      ['add', add, (x: number, y: number) => x + y, 1],
      ['sub', sub, (x: number, y: number) => x - y, -1],
    ] as const) {
      await checkOp({
        label: `${name} f16 ${sa.join('x')} ${sb.join('x')} b ${bdt}`,
        inputs: [randn(n(sa)), randn(n(sb))],
        shapes: [sa, sb],
        dtypes: ['f16', bdt],
        outDtype: 'f16',
        gpu: (a, b) => op(a, b),
        ref: ([a, b]) => broadcast2(a, b, f),
        refBackward: ([, b], g) => [g.slice(), sumLeading(g, b.length).map((v) => df * v)],
        outShape: sa,
        tol: ONE_ROUNDING_F16,
        // b's gradient sums up to 10001 f16 values in f32, then rounds to b's type once.
        gradTol: { rtol: U16 + 1e-6, atol: 1e-6 },
      });
    }
    await checkOp({
      label: `mul f16 ${sa.join('x')} ${sb.join('x')} b ${bdt}`,
      inputs: [randn(n(sa)), randn(n(sb))],
      shapes: [sa, sb],
      dtypes: ['f16', bdt],
      outDtype: 'f16',
      gpu: (a, b) => mul(a, b),
      ref: ([a, b]) => broadcast2(a, b, (x, y) => x * y),
      refBackward: ([a, b], g) => [
        broadcast2(g, b, (x, y) => x * y),
        sumLeading(g.map((v, i) => v * a[i]), b.length),
      ],
      outShape: sa,
      tol: ONE_ROUNDING_F16,
      // The broadcast operand's gradient sums f16-rounded products g·a (rounded before the sum):
      // up to u·Σ|g·a| ≈ u·sqrt(R)·max|want| for R = 10001 random terms: atol 2u.
      gradTol: { rtol: U16 + 1e-6, atol: 2 * U16 },
    });
  });

  it('gelu forward and backward', async () => {
    const shape = [37, 53];
    const gelu64 = (x: number) => x * normalCdf64(x);
    const dgelu64 = (x: number) =>
      normalCdf64(x) + (x * Math.exp((-x * x) / 2)) / Math.sqrt(2 * Math.PI);
    await checkOp({
      label: 'gelu f16 37x53',
      inputs: [randn(n(shape), undefined, 3)],
      shapes: [shape],
      dtypes: ['f16'],
      outDtype: 'f16',
      gpu: (x) => gelu(x),
      ref: ([x]) => x.map(gelu64),
      refBackward: ([x], g) => [x.map((v, i) => g[i] * dgelu64(v))],
      outShape: shape,
      // The f32 gelu is ~1e-7 accurate; one f16 rounding; near gelu's zero at x -> -inf the
      // absolute part covers f16 subnormal spacing.
      tol: ONE_ROUNDING_F16,
      gradTol: ONE_ROUNDING_F16,
    });
  });
});

describe.skipIf(!run)('shape copies f16 (exact)', () => {
  it('permute, sliceLast, concatLast', async () => {
    const shape = [3, 5, 7, 4];
    const perm = [0, 3, 1, 2];
    await checkOp({
      label: 'permute f16 3x5x7x4 [0,3,1,2]',
      inputs: [randn(n(shape))],
      shapes: [shape],
      dtypes: ['f16'],
      outDtype: 'f16',
      gpu: (x) => permute(x, perm),
      ref: ([x]) => permute64(x, shape, perm),
      refBackward: (_x, g) => {
        const inv = new Array<number>(4);
        perm.forEach((p, k) => (inv[p] = k));
        return [permute64(g, perm.map((p) => shape[p]), inv)];
      },
      outShape: perm.map((p) => shape[p]),
      tol: EXACT,
    });
    // A permute that keeps the order is a plain copy of the storage (f16: half the bytes).
    await checkOp({
      label: 'permute f16 identity [3,5,7] [0,1,2]',
      inputs: [randn(105)],
      shapes: [[3, 5, 7]],
      dtypes: ['f16'],
      outDtype: 'f16',
      gpu: (x) => permute(x, [0, 1, 2]),
      ref: ([x]) => x.slice(),
      refBackward: (_x, g) => [g.slice()],
      outShape: [3, 5, 7],
      tol: EXACT,
    });
    await checkOp({
      label: 'sliceLast f16 [2,3,11] cols 4..9',
      inputs: [randn(66)],
      shapes: [[2, 3, 11]],
      dtypes: ['f16'],
      outDtype: 'f16',
      gpu: (x) => sliceLast(x, 4, 5),
      ref: ([x]) => sliceLast64(x, 11, 4, 5),
      refBackward: (_x, g) => [unsliceLast64(g, 11, 4, 5)],
      outShape: [2, 3, 5],
      tol: EXACT,
    });
    await checkOp({
      label: 'concatLast f16 [5,3] + [5,4]',
      inputs: [randn(15), randn(20)],
      shapes: [[5, 3], [5, 4]],
      dtypes: ['f16', 'f16'],
      outDtype: 'f16',
      gpu: (a, b) => concatLast([a, b]),
      ref: ([a, b]) => concatLast64([a, b], [3, 4]),
      refBackward: (_x, g) => [sliceLast64(g, 7, 0, 3), sliceLast64(g, 7, 3, 4)],
      outShape: [5, 7],
      tol: EXACT,
    });
  });
});

describe.skipIf(!run)('layerNorm f16 (f16 x, f32 weight and bias)', () => {
  // The f32 bounds of layer-norm.test.ts (1e-5 of max|y|) plus one f16 rounding of y and dx; the
  // f32 dweight/dbias sum f16-exact g·xh over the rows: the f32 bound itself.
  const FWD = plusRounding({ rtol: 1e-5, atol: 1e-5 });
  it.each([
    ['groups', [2, 3, 96]],
    ['rows', [2, 3, 96]],
    ['groups', [4, 97]],
    ['rows', [5, 769]],
  ] as ['groups' | 'rows', number[]][])('%s path %j', async (path, shape) => {
    const C = shape[shape.length - 1];
    await checkOp({
      label: `layer_norm f16 (${path}) ${shape.join('x')}`,
      inputs: [
        randn(n(shape)),
        randn(C, undefined, 0.5).map((v) => v + 1),
        randn(C, undefined, 0.3),
      ],
      shapes: [shape, [C], [C]],
      dtypes: ['f16', 'f32', 'f32'],
      outDtype: 'f16',
      gpu: (x, w, b) => layerNorm(x, w, b, 1e-6, path),
      ref: ([x, w, b]) => layerNormRef(x, w, b, C, 1e-6),
      refBackward: ([x, w], g) => layerNormRefBackward(x, w, g, C, 1e-6),
      outShape: shape,
      tol: FWD,
      gradTol: FWD,
    });
  });
});

describe.skipIf(!run)('window, pool, interpolate f16', () => {
  it.each([
    [2, 13, 10, 5, 4],
    [2, 16, 16, 3, 14],
  ])('window partition/unpartition B %i %ix%i C %i ws %i (exact)', async (B, H, W, C, ws) => {
    const s: WinShape = { B, H, W, C, ws };
    const nw = B * Math.ceil(H / ws) * Math.ceil(W / ws);
    await checkOp({
      label: `windowPartition f16 ${B}x${H}x${W}x${C} ws${ws}`,
      inputs: [randn(B * H * W * C)],
      shapes: [[B, H, W, C]],
      dtypes: ['f16'],
      outDtype: 'f16',
      gpu: (x) => windowPartition(x, ws),
      ref: ([x]) => windowPartitionRef(s, x),
      refBackward: (_x, g) => [windowUnpartitionRef(s, g)],
      outShape: [nw, ws * ws, C],
      tol: EXACT,
    });
    await checkOp({
      label: `windowUnpartition f16 ${B}x${H}x${W}x${C} ws${ws}`,
      inputs: [randn(nw * ws * ws * C)],
      shapes: [[nw, ws * ws, C]],
      dtypes: ['f16'],
      outDtype: 'f16',
      gpu: (y) => windowUnpartition(y, ws, [H, W]),
      ref: ([y]) => windowUnpartitionRef(s, y),
      refBackward: (_y, g) => [windowPartitionRef(s, g)],
      outShape: [B, H, W, C],
      tol: EXACT,
    });
  });

  it('maxPool2d (exact)', async () => {
    const [b, h, w, c, k] = [2, 11, 15, 5, 2];
    await checkOp({
      label: 'maxPool2d f16 2x11x15x5 k2',
      inputs: [randn(b * h * w * c)],
      shapes: [[b, h, w, c]],
      dtypes: ['f16'],
      outDtype: 'f16',
      gpu: (x) => maxPool2d(x, k),
      ref: ([x]) => refMaxPool(x, b, h, w, c, k),
      refBackward: ([x], gy) => [refMaxPoolBackward(x, gy, b, h, w, c, k)],
      outShape: [b, Math.floor(h / k), Math.floor(w / k), c],
      tol: EXACT,
    });
  });

  it('interpolate nearest x2 (FPN), bilinear; bicubic forward', async () => {
    const d = { b: 2, h: 5, w: 7, c: 3, ho: 10, wo: 14 };
    await checkOp({
      label: 'interpolate nearest f16 2x5x7x3 -> 10x14',
      inputs: [randn(d.b * d.h * d.w * d.c)],
      shapes: [[d.b, d.h, d.w, d.c]],
      dtypes: ['f16'],
      outDtype: 'f16',
      gpu: (x) => interpolate(x, [d.ho, d.wo], 'nearest'),
      ref: ([x]) => refResize('nearest', x, d),
      refBackward: (_x, g) => [refResizeBackward('nearest', g, d)],
      outShape: [d.b, d.ho, d.wo, d.c],
      tol: EXACT,
      // Each input gradient sums 4 f16 upstream values in f32 (exact here) and rounds once.
      gradTol: ONE_ROUNDING_F16,
    });
    const d2 = { b: 2, h: 7, w: 5, c: 5, ho: 13, wo: 11 };
    // f32 bound of interpolate.test.ts (1e-5) plus one rounding.
    const SMOOTH = plusRounding({ rtol: 1e-5, atol: 1e-5 });
    await checkOp({
      label: 'interpolate bilinear f16 2x7x5x5 -> 13x11',
      inputs: [randn(d2.b * d2.h * d2.w * d2.c)],
      shapes: [[d2.b, d2.h, d2.w, d2.c]],
      dtypes: ['f16'],
      outDtype: 'f16',
      gpu: (x) => interpolate(x, [d2.ho, d2.wo], 'bilinear'),
      ref: ([x]) => refResize('bilinear', x, d2),
      refBackward: (_x, g) => [refResizeBackward('bilinear', g, d2)],
      outShape: [d2.b, d2.ho, d2.wo, d2.c],
      tol: SMOOTH,
    });
    await checkOp({
      label: 'interpolate bicubic f16 2x7x5x5 -> 13x11',
      inputs: [randn(d2.b * d2.h * d2.w * d2.c)],
      shapes: [[d2.b, d2.h, d2.w, d2.c]],
      dtypes: ['f16'],
      outDtype: 'f16',
      gpu: (x) => interpolate(x, [d2.ho, d2.wo], 'bicubic'),
      ref: ([x]) => refResize('bicubic', x, d2),
      outShape: [d2.b, d2.ho, d2.wo, d2.c],
      tol: SMOOTH,
    });
  });
});

describe.skipIf(!run)('conv2d f16', () => {
  const cases: { name: string; d: RefConvDims; xdt: DType }[] = [
    // Patch embed: the image stays f32, the weight is f16, the features come out f16.
    {
      name: '7x7 s4 p3 (f32 image)',
      d: { b: 2, h: 23, w: 17, cin: 3, cout: 17, kh: 7, kw: 7, stride: 4, pad: 3 },
      xdt: 'f32',
    },
    // Neck lateral 1x1 on f16 features.
    {
      name: '1x1',
      d: { b: 2, h: 19, w: 21, cin: 24, cout: 70, kh: 1, kw: 1, stride: 1, pad: 0 },
      xdt: 'f16',
    },
    {
      name: '3x3 p1',
      d: { b: 2, h: 11, w: 9, cin: 13, cout: 7, kh: 3, kw: 3, stride: 1, pad: 1 },
      xdt: 'f16',
    },
  ];
  it.each(cases)('op (default path): $name', async ({ name, d, xdt }) => {
    const [ho, wo] = refConvOut(d);
    const K = d.cin * d.kh * d.kw;
    await checkOp({
      label: `conv2d f16 ${name}`,
      inputs: [
        randn(d.b * d.h * d.w * d.cin),
        randn(d.cout * K, undefined, 1 / Math.sqrt(K)),
        randn(d.cout),
      ],
      shapes: [[d.b, d.h, d.w, d.cin], [d.cout, d.cin, d.kh, d.kw], [d.cout]],
      dtypes: [xdt, 'f16', 'f16'],
      outDtype: 'f16',
      // The frozen encoder needs dx only (patch embed: none, the image needs no gradient).
      grads: [xdt === 'f16', false, false],
      gpu: (x, w, b) => conv2d(x, w, b, { stride: d.stride, padding: d.pad }),
      ref: ([x, w, b]) => refConv2d(x, w, b, d),
      refBackward: xdt === 'f16'
        ? ([x, w], gy) => [refConv2dBackward(x, w, gy, d)[0], null, null]
        : undefined,
      outShape: [d.b, ho, wo, d.cout],
      tol: sumTolF16(K),
      gradTol: sumTolF16(d.cout * d.kh * d.kw),
    });
  });

  it('op with f16 x and f32 master weights (full fine-tuning): all gradients', async () => {
    const d: RefConvDims = { b: 2, h: 9, w: 7, cin: 12, cout: 10, kh: 3, kw: 3, stride: 1, pad: 1 };
    const [ho, wo] = refConvOut(d);
    const K = d.cin * d.kh * d.kw;
    await checkOp({
      label: 'conv2d f16 x, f32 W 3x3 p1',
      inputs: [
        randn(d.b * d.h * d.w * d.cin),
        randn(d.cout * K, undefined, 1 / Math.sqrt(K)),
        randn(d.cout),
      ],
      shapes: [[d.b, d.h, d.w, d.cin], [d.cout, d.cin, d.kh, d.kw], [d.cout]],
      dtypes: ['f16', 'f32', 'f32'],
      outDtype: 'f16',
      gpu: (x, w, b) => conv2d(x, w, b, { stride: d.stride, padding: d.pad }),
      ref: ([x, w, b]) => refConv2d(x, w, b, d),
      refBackward: ([x, w], gy) => refConv2dBackward(x, w, gy, d),
      outShape: [d.b, ho, wo, d.cout],
      tol: sumTolF16(K),
      // dx f16 (one rounding); dW, db f32 sums over the B·Ho·Wo rows.
      gradTol: sumTolF16(d.b * ho * wo),
    });
  });

  it.each(cases)('implicit kernels: $name', async ({ name, d, xdt }) => {
    const e = await testEngine();
    const [ho, wo] = refConvOut(d);
    const K = d.cin * d.kh * d.kw;
    const x = xdt === 'f16' ? Float64Array.from(roundArrayF16(randn(d.b * d.h * d.w * d.cin)))
      : Float64Array.from(Float32Array.from(randn(d.b * d.h * d.w * d.cin)));
    const w = Float64Array.from(roundArrayF16(randn(d.cout * K, undefined, 1 / Math.sqrt(K))));
    const gy = Float64Array.from(roundArrayF16(randn(d.b * ho * wo * d.cout)));
    await e.scopeAsync(async () => {
      const tx = e.fromArray(x, [x.length], false, xdt);
      const tw = e.fromArray(w, [w.length], false, 'f16');
      const ty = e.empty([d.b * ho * wo * d.cout], undefined, 'f16');
      conv2dForward(e.gpu, tx.buffer, tw.buffer, null, ty.buffer, d, 'implicit');
      const want = refConv2d(x, w, null, d);
      expectClose(await ty.toArray(), want, sumTolF16(K), `conv2d implicit f16 ${name} forward`);
      if (xdt === 'f16') {
        const tg = e.fromArray(gy, [gy.length], false, 'f16');
        const tdx = e.empty([x.length], undefined, 'f16');
        conv2dBackwardInput(e.gpu, tg.buffer, tw.buffer, tdx.buffer, d, 'implicit');
        const [dx] = refConv2dBackward(x, w, gy, d);
        const tol = sumTolF16(d.cout * d.kh * d.kw);
        expectClose(await tdx.toArray(), dx, tol, `conv2d implicit f16 ${name} dx`);
      }
    });
  });
});

describe.skipIf(!run)('attention f16 (f32 softmax and accumulators)', () => {
  // The f32 bounds of attention.test.ts plus one f16 rounding of out / dq / dk / dv, and one more
  // u of the gradient's scale in the absolute part; backward also reads the saved f16 output
  // (storedOut below bounds what that adds, element by element).
  const FWD = plusRounding({ rtol: 1e-4, atol: 5e-6 });
  // (The f32 test's rtol 1e-3 is not needed here: the rounding terms dominate; measured ~4e-4.)
  const BWD: Tol = { rtol: 1e-4 + U16, atol: 2e-5 + U16 };
  // Per-element terms for the f16-stored output that D = rowsum(dO·O) reads (see
  // attentionStoredOutTerms).
  const storedOut = (s: AttnShape, q: Float64Array, k: Float64Array, v: Float64Array,
    g: Float64Array) => attentionStoredOutTerms(s, q, k, v, g, U16);
  const withExtra = (extra: Float64Array): Tol => ({ ...BWD, extra });
  it.each([
    { B: 2, heads: 2, hd: 12, Nq: 49, Nk: 49 },
    { B: 3, heads: 1, hd: 96, Nq: 16, Nk: 64 },
  ])('attention %j', async (s) => {
    const C = s.heads * s.hd;
    await checkOp({
      label: `attention f16 B${s.B} h${s.heads} hd${s.hd} Nq${s.Nq} Nk${s.Nk}`,
      inputs: [randn(s.B * s.Nq * C), randn(s.B * s.Nk * C), randn(s.B * s.Nk * C)],
      shapes: [[s.B, s.Nq, C], [s.B, s.Nk, C], [s.B, s.Nk, C]],
      dtypes: ['f16', 'f16', 'f16'],
      outDtype: 'f16',
      gpu: (q, k, v) => attention(q, k, v, s.heads),
      ref: ([q, k, v]) => attentionRef(s, q, k, v),
      refBackward: ([q, k, v], g) => attentionRefBackward(s, q, k, v, g),
      outShape: [s.B, s.Nq, C],
      tol: FWD,
      gradTol: (i, [q, k, v], g) => withExtra(storedOut(s, q, k, v, g)[i]),
      fd: { samples: 8 },
    });
  });

  it('attentionQkv (packed f16 qkv, pooled f16 q)', async () => {
    const s = { B: 2, heads: 2, hd: 8, Nq: 9, Nk: 36 };
    const C = s.heads * s.hd;
    await checkOp({
      label: 'attentionQkv f16 B2 h2 hd8 N36 q9',
      inputs: [randn(s.B * s.Nk * 3 * C), randn(s.B * s.Nq * C)],
      shapes: [[s.B, s.Nk, 3 * C], [s.B, s.Nq, C]],
      dtypes: ['f16', 'f16'],
      outDtype: 'f16',
      gpu: (qkv, q) => attentionQkv(qkv, s.heads, q),
      ref: ([qkv, q]) => {
        const [, k, v] = splitQkv(qkv, s.B * s.Nk, C);
        return attentionRef(s, q, k, v);
      },
      refBackward: ([qkv, q], g) => {
        const [, k, v] = splitQkv(qkv, s.B * s.Nk, C);
        const [dq, dk, dv] = attentionRefBackward(s, q, k, v, g);
        return [packQkv([new Float64Array(k.length), dk, dv], s.B * s.Nk, C), dq];
      },
      outShape: [s.B, s.Nq, C],
      tol: FWD,
      gradTol: (i, [qkv, q], g) => {
        const [, k, v] = splitQkv(qkv, s.B * s.Nk, C);
        const [dq, dk, dv] = storedOut(s, q, k, v, g);
        return withExtra(i === 1 ? dq : packQkv([new Float64Array(k.length), dk, dv], s.B * s.Nk, C));
      },
      fd: { samples: 8 },
    });
  });

  it.each([
    [2, 4],
    [8, 32],
  ])('tiled (GPU) kernels at forced tiles BR %i, BC %i', async (BR, BC) => {
    const e = await testEngine();
    const s = { B: 2, heads: 2, hd: 12, Nq: 21, Nk: 30 };
    const C = s.heads * s.hd;
    const d: AttnDims = { ...s, scale: 1 / Math.sqrt(s.hd), tiles: { BR, BC } };
    const r16 = (m: number) => Float64Array.from(roundArrayF16(randn(s.B * m * C)));
    const [q, k, v, g] = [r16(s.Nq), r16(s.Nk), r16(s.Nk), r16(s.Nq)];
    const got = await e.scopeAsync(async () => {
      const [tq, tk, tv, tg] = [q, k, v, g].map((x) => e.fromArray(x, [x.length], false, 'f16'));
      const row = (t: { buffer: GPUBuffer }, stride = C, offset = 0) => ({
        buffer: t.buffer,
        stride,
        offset,
      });
      const out = e.empty([s.B * s.Nq * C], undefined, 'f16');
      const lse = e.empty([s.B * s.heads * s.Nq]);
      const dsum = e.empty([s.B * s.heads * s.Nq]);
      const dq = e.empty([s.B * s.Nq * C], undefined, 'f16');
      const dkv = e.empty([s.B * s.Nk * 2 * C], undefined, 'f16');
      attentionForward(e.gpu, d, row(tq), row(tk), row(tv), row(out), lse.buffer);
      attentionBackwardD(e.gpu, d, row(tg), row(out), dsum.buffer);
      const saved = {
        q: row(tq), k: row(tk), v: row(tv), gradOut: row(tg), lse: lse.buffer, dsum: dsum.buffer,
      };
      attentionBackwardQ(e.gpu, d, saved, row(dq));
      attentionBackwardKV(e.gpu, d, saved, dkv.buffer, { stride: 2 * C, offset: 0 },
        { stride: 2 * C, offset: C });
      return Promise.all([out.toArray(), dq.toArray(), dkv.toArray()]);
    });
    const [dqW, dkW, dvW] = attentionRefBackward(s, q, k, v, g);
    expectClose(got[0], attentionRef(s, q, k, v), FWD, `attention f16 tiles ${BR}x${BC} forward`);
    expectClose(got[1], dqW, BWD, `attention f16 tiles ${BR}x${BC} dq`);
    const [dkGot, dvGot] = splitColumns(Float64Array.from(got[2]), s.B * s.Nk, C, 2);
    expectClose(dkGot, dkW, BWD, `attention f16 tiles ${BR}x${BC} dk`);
    expectClose(dvGot, dvW, BWD, `attention f16 tiles ${BR}x${BC} dv`);
  });

  it('cast to f32 at the encoder output keeps gradients flowing', async () => {
    await checkOp({
      label: 'cast f16 -> f32',
      inputs: [randn(777)],
      shapes: [[777]],
      dtypes: ['f16'],
      outDtype: 'f32',
      gpu: (x) => cast(x, 'f32'),
      ref: ([x]) => x.slice(),
      refBackward: (_x, g) => [g.slice()],
      outShape: [777],
      tol: EXACT,
      // The f32 upstream gradient is rounded to f16 (x's dtype) once.
      gradTol: ONE_ROUNDING_F16,
    });
  });
});
