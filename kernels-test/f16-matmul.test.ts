/**
 * f16 variants of the matmul family (linear, batched matmul, the fused LoRA passes) against the
 * float64 references. Inputs stored as f16 are rounded to f16 before the reference sees them, so
 * what is measured is the kernel's own error: f32 accumulation (as in the f32 tests) plus one
 * f16 rounding of each f16 output, u = 2^-11 relative (sumTolF16). Outputs that stay f32 (LoRA
 * A/B gradients) keep the f32 bound (sumTol).
 */
import { afterAll, describe, it } from 'vitest';
import type { DType } from '../src/autograd/tensor.js';
import { closeGpu } from '../src/gpu/runtime.js';
import { linear } from '../src/ops/linear.js';
import { loraLinear } from '../src/ops/lora-linear.js';
import { matmul } from '../src/ops/matmul.js';
import { checkOp, expectClose, randn, sumTol, testEngine } from './helpers.js';
import { matmul as mmKernel } from '../src/kernels/matmul.js';
import { roundArrayF16 } from '../src/util/f16.js';
import { f16Supported, sumTolF16 } from './f16-helpers.js';
import {
  type LoraDims, type MatmulDims, refDropoutMask, refLinear, refLinearBackward, refLora,
  refLoraBackward, refMatmul, refMatmulBackward,
} from './ref/matmul.js';

afterAll(() => closeGpu());

const run = await f16Supported();

describe.skipIf(!run)('linear f16', () => {
  it.each([
    // [x shape, out, bias dtype]: 29/53 scalar loads; 96 -> 288 vec4 loads (a qkv layer);
    // 1100 rows: split-K weight gradient and two-pass bias gradient.
    [[37, 29], 53, 'f16'],
    [[3, 49, 96], 288, 'f32'],
    [[2, 550, 24], 12, 'f16'],
  ] as [number[], number, DType][])('x %j f16, W f16, out %i, bias %s', async (xs, outF, bdt) => {
    const inF = xs[xs.length - 1];
    const rows = xs.reduce((a, b) => a * b, 1) / inF;
    await checkOp({
      label: `linear f16 ${xs.join('x')} -> ${outF} bias ${bdt}`,
      inputs: [randn(rows * inF), randn(outF * inF, undefined, 0.2), randn(outF)],
      shapes: [xs, [outF, inF], [outF]],
      dtypes: ['f16', 'f16', bdt],
      outDtype: 'f16',
      gpu: (x, w, b) => linear(x, w, b),
      ref: ([x, w, b]) => refLinear(x, w, b, rows, inF, outF),
      refBackward: ([x, w], g) => {
        const r = refLinearBackward(x, w, g, rows, inF, outF);
        return [r.dx, r.dw, r.db];
      },
      outShape: [...xs.slice(0, -1), outF],
      tol: sumTolF16(inF),
      // dx sums over out, dW/db over rows; each is rounded once to its (f16 or f32) type.
      gradTol: sumTolF16(Math.max(rows, outF)),
      fd: { samples: 8 },
    });
  });
});

describe.skipIf(!run)('linear f16 x with f32 master weights (full fine-tuning)', () => {
  it('x f16, W and bias f32 trainable', async () => {
    const [rows, inF, outF] = [45, 33, 27];
    await checkOp({
      label: `linear f16 x, f32 W ${rows}x${inF} -> ${outF}`,
      inputs: [randn(rows * inF), randn(outF * inF, undefined, 0.2), randn(outF)],
      shapes: [[rows, inF], [outF, inF], [outF]],
      dtypes: ['f16', 'f32', 'f32'],
      outDtype: 'f16',
      gpu: (x, w, b) => linear(x, w, b),
      ref: ([x, w, b]) => refLinear(x, w, b, rows, inF, outF),
      refBackward: ([x, w], g) => {
        const r = refLinearBackward(x, w, g, rows, inF, outF);
        return [r.dx, r.dw, r.db];
      },
      outShape: [rows, outF],
      tol: sumTolF16(inF),
      // dx f16 (one rounding); dW and db are f32 sums of f16-exact products: the f32 bound.
      gradTol: sumTolF16(Math.max(rows, outF)),
      fd: { samples: 8 },
    });
  });
});

describe.skipIf(!run)('matmul op f16', () => {
  it.each([
    { batch: 3, M: 37, N: 53, K: 29, transA: false, transB: true },
    { batch: 2, M: 36, N: 52, K: 28, transA: true, transB: false },
  ])('%j', async (c) => {
    const { M, N, K, transA, transB } = c;
    const d: MatmulDims = {
      M, N, K, batch: c.batch, transA, transB, sharedA: false, sharedB: false,
    };
    const aShape = [c.batch, ...(transA ? [K, M] : [M, K])];
    const bShape = [c.batch, ...(transB ? [N, K] : [K, N])];
    await checkOp({
      label:
        `matmul f16 ${aShape.join('x')}${transA ? 'ᵀ' : ''} · ` +
        `${bShape.join('x')}${transB ? 'ᵀ' : ''}`,
      inputs: [randn(c.batch * M * K), randn(c.batch * K * N)],
      shapes: [aShape, bShape],
      dtypes: ['f16', 'f16'],
      outDtype: 'f16',
      gpu: (a, b) => matmul(a, b, { transA, transB }),
      ref: ([a, b]) => refMatmul(a, b, d),
      refBackward: ([a, b], g) => refMatmulBackward(a, b, g, d),
      outShape: [c.batch, M, N],
      tol: sumTolF16(K),
      gradTol: sumTolF16(Math.max(M, N)),
      fd: { samples: 8 },
    });
  });
});

describe.skipIf(!run)('matmul kernels f16, every path', () => {
  // regs is lavapipe's default for aligned operands; tiled (scalar loads) and tiled_v4 are the GPU
  // paths: each must take f16 operands and write f16 results. 36x52x28 is aligned (vec4 loads).
  it.each(['regs', 'tiled'] as const)('%s path, aligned and unaligned', async (path) => {
    const e = await testEngine();
    for (const [M, N, K] of [[36, 52, 28], [37, 53, 29]]) {
      const d: MatmulDims = {
        M, N, K, batch: 1, transA: false, transB: true, sharedA: false, sharedB: false,
      };
      const a = Float64Array.from(roundArrayF16(randn(M * K)));
      const b = Float64Array.from(roundArrayF16(randn(N * K)));
      const got = await e.scopeAsync(async () => {
        const [ta, tb] = [a, b].map((x) => e.fromArray(x, [x.length], false, 'f16'));
        const tc = e.empty([M * N], undefined, 'f16');
        mmKernel(e.gpu, { a: ta.buffer, b: tb.buffer, c: tc.buffer, M, N, K, transB: true, path });
        return tc.toArray();
      });
      expectClose(got, refMatmul(a, b, d), sumTolF16(K), `matmul f16 ${path} ${M}x${N}x${K}`);
    }
  });
});

describe.skipIf(!run)('loraLinear f16 (frozen f16 W and bias, f32 A/B)', () => {
  it.each([
    { x: [3, 49, 96], outF: 288, rank: 4, p: 0.1 },
    { x: [2, 25, 30], outF: 45, rank: 3, p: 0.2 },
    { x: [37, 29], outF: 53, rank: 7, p: 0 },
  ])('%j', async (c) => {
    const inF = c.x[c.x.length - 1];
    const rows = c.x.reduce((a, b) => a * b, 1) / inF;
    const d: LoraDims = { rows, inF, outF: c.outF, rank: c.rank, scale: 2 };
    const seed = 0x51 + rows;
    const mask = refDropoutMask(rows * inF, c.p, seed);
    const gradTol16 = sumTolF16(Math.max(rows, c.outF, inF));
    const r = await checkOp({
      label: `loraLinear f16 ${c.x.join('x')} -> ${c.outF} r${c.rank} p${c.p}`,
      inputs: [
        randn(rows * inF),
        randn(c.outF * inF, undefined, 0.2),
        randn(c.outF),
        randn(c.rank * inF, undefined, 0.2),
        randn(c.outF * c.rank, undefined, 0.5),
      ],
      shapes: [c.x, [c.outF, inF], [c.outF], [c.rank, inF], [c.outF, c.rank]],
      dtypes: ['f16', 'f16', 'f16', 'f32', 'f32'],
      outDtype: 'f16',
      gpu: (x, w, b, a, bl) =>
        loraLinear(x, w, b, a, bl, { scale: d.scale, dropout: c.p, seed, training: true }),
      ref: ([x, w, b, a, bl]) => refLora(x, w, b, a, bl, mask, d),
      refBackward: ([x, w, , a, bl], g) => {
        const g2 = refLoraBackward(x, w, a, bl, mask, g, d);
        return [g2.dx, null, null, g2.da, g2.dB];
      },
      grads: [true, false, false, true, true],
      outShape: [...c.x.slice(0, -1), c.outF],
      tol: sumTolF16(inF),
      // dx is f16 (one rounding); dA, dB are f32 sums over the rows of f16-exact operands.
      gradTol: gradTol16,
      fd: { samples: 8 },
    });
    // The f32 gradients of A and B must also meet the f32 bound.
    const f32Bound = sumTol(Math.max(rows, c.outF, inF));
    for (const g of r.grads.slice(1)) {
      if (!(g.maxRel <= f32Bound.atol + f32Bound.rtol)) {
        throw new Error(`LoRA A/B gradient error ${g.maxRel} exceeds the f32 bound`);
      }
    }
  });
});
