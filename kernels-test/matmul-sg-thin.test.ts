/**
 * matmul_sg_thin (shaders/matmul_sg.wgsl: products with a side of at most 4, the thin operand
 * shared across an 8-lane subgroup by shuffles; lavapipe's default for LoRA's x · Aᵀ and g · B)
 * against the float64 references: the four LoRA products in the layouts lora.ts uses (x · Aᵀ with
 * dropout on x, g · B, uᵀ · x with dropout on x, gᵀ · t), thin sides 1-4 on either side, ragged
 * long sides (past one and two 32-line blocks), K not a multiple of 4 where no operand is
 * contiguous in k, split-K, batches with a shared operand, the scalar epilogue, f16, and the
 * default selection. Outputs are NaN-poisoned (testEngine), so a missed element fails. Skipped
 * where the adapter has no subgroups of 8+ lanes (then the launcher never picks this path).
 */
import { afterAll, describe, expect, it } from 'vitest';
import { closeGpu, getGpu } from '../src/gpu/runtime.js';
import { loraDown, loraGradA, loraGradB, loraProject } from '../src/kernels/lora.js';
import { matmul as mmKernel, sgCapable } from '../src/kernels/matmul.js';
import { roundArrayF16 } from '../src/util/f16.js';
import { f16Supported, sumTolF16 } from './f16-helpers.js';
import { expectClose, f32, randn, reportError, spyRuns, sumTol, testEngine } from './helpers.js';
import { type MatmulDims, refDropoutMask, refMatmul } from './ref/matmul.js';

afterAll(() => closeGpu());

const run = sgCapable(await getGpu());
const f16 = run && (await f16Supported());

describe.skipIf(!run)('matmul sg-thin path', () => {
  it.each([
    // [transA, transB, M, N, K, batch, batched B, split-K]
    [false, true, 77, 4, 36, 1, false, 1], // x · Aᵀ (loraDown): 3 blocks, ragged
    [false, false, 45, 4, 68, 1, false, 1], // g · B (loraProject)
    [true, false, 4, 84, 197, 1, false, 1], // uᵀ · x (loraGradA): thin M, K % 4 != 0
    [true, false, 100, 4, 197, 1, false, 1], // gᵀ · t (loraGradB): K % 4 != 0
    [false, true, 600, 3, 40, 1, false, 1], // two blocks per workgroup (long side >= 512)
    [true, false, 4, 520, 61, 1, false, 1], // the same, thin M
    [false, true, 33, 1, 44, 2, false, 1], // a single column, B shared over the batch
    [false, false, 2, 52, 36, 2, true, 1], // thin M of 2, batched B
    [true, true, 4, 36, 40, 1, false, 1], // thin M, B contiguous in k
    [false, true, 64, 4, 1536, 1, false, 4], // split-K: slices summed by colsum
    [true, false, 4, 96, 1030, 1, false, 3], // split-K with K % 4 != 0
  ] as const)('transA %s transB %s %ix%ix%i batch %i (batched B %s, split %i)',
    async (tA, tB, M, N, K, batch, batchedB, split) => {
      const e = await testEngine();
      const a = f32(randn(batch * M * K));
      const b = f32(randn((batchedB ? batch : 1) * K * N));
      const d: MatmulDims = { M, N, K, batch, transA: tA, transB: tB, sharedB: !batchedB };
      const want = refMatmul(a, b, d);
      await e.scopeAsync(async () => {
        const ta = e.fromArray(a, [a.length]);
        const tb = e.fromArray(b, [b.length]);
        const tc = e.empty([batch * M * N]);
        const runs = spyRuns(e.gpu, () => mmKernel(e.gpu, {
          a: ta.buffer, b: tb.buffer, c: tc.buffer, M, N, K, batch, transA: tA, transB: tB,
          strideB: batchedB ? K * N : 0, path: 'sg-thin', splitK: split,
        }));
        expect(runs.map((x) => x.kernel)).toEqual(
          split > 1 ? ['matmul.sg_thin', 'matmul.colsum'] : ['matmul.sg_thin']);
        const r = expectClose(await tc.toArray(), want, sumTol(K), `sg-thin ${M}x${N}x${K}`);
        reportError('matmul kernel', 'path sg-thin', `${batch}x${M}x${N}x${K}`, r);
      });
    });

  // The scalar epilogue (mm_put) on both orientations: alpha, bias, beta·C, residual.
  it.each([false, true])('alpha·op(A)·op(B) + bias + beta·C + residual (thin M %s)',
    async (thinM) => {
      const e = await testEngine();
      const [M, N, K] = thinM ? [3, 70, 52] : [70, 3, 52];
      const [alpha, beta] = [0.75, -0.5];
      const a = f32(randn(M * K));
      const b = f32(randn(N * K));
      const bias = f32(randn(N));
      const c0 = f32(randn(M * N));
      const res = f32(randn(M * N));
      const want = refMatmul(a, b, { M, N, K, batch: 1, transA: false, transB: true });
      for (let i = 0; i < want.length; i++) {
        // C's f32 rounding before the residual, as the kernel (and a separate add) does.
        want[i] = Math.fround(alpha * want[i] + bias[i % N] + beta * c0[i]) + res[i];
      }
      await e.scopeAsync(async () => {
        const [ta, tb, tbias, tc, tres] = [a, b, bias, c0, res].map((v) => e.fromArray(v, [v.length]));
        mmKernel(e.gpu, {
          a: ta.buffer, b: tb.buffer, c: tc.buffer, M, N, K, transB: true, alpha, beta,
          bias: tbias.buffer, residual: tres.buffer, path: 'sg-thin',
        });
        const r = expectClose(await tc.toArray(), want, sumTol(K), 'sg-thin epilogue');
        reportError('matmul kernel', 'path sg-thin epilogue', `${M}x${N}x${K}`, r);
      });
    });

  // lora.ts's four rank-side products as the LoRA layer calls them, on the default selection:
  // x · Aᵀ and g · B take sg-thin, uᵀ · x and gᵀ · t (A transposed) stay on regs.
  it('LoRA products (dropout, alpha): default selection, float64', async () => {
    const e = await testEngine();
    const [rows, inF, outF, rank, s, p, seed] = [75, 36, 52, 4, 1.5, 0.25, 0x1234];
    const dims = { rows, inF, outF, rank };
    const x = f32(randn(rows * inF));
    const A = f32(randn(rank * inF));
    const B = f32(randn(outF * rank));
    const g = f32(randn(rows * outF));
    const u = f32(randn(rows * rank));
    const t = f32(randn(rows * rank));
    const mask = refDropoutMask(rows * inF, p, seed);
    const xd = x.map((v, i) => v * mask[i]);
    const wantT = refMatmul(xd, A, { M: rows, N: rank, K: inF, batch: 1, transA: false, transB: true });
    const wantU = refMatmul(g, B, { M: rows, N: rank, K: outF, batch: 1, transA: false, transB: false });
    const wantDA = refMatmul(u, xd, { M: rank, N: inF, K: rows, batch: 1, transA: true, transB: false })
      .map((v) => s * v);
    const wantDB = refMatmul(g, t, { M: outF, N: rank, K: rows, batch: 1, transA: true, transB: false })
      .map((v) => s * v);
    await e.scopeAsync(async () => {
      const [tx, tA, tB, tg, tu, tt] = [x, A, B, g, u, t].map((v) => e.fromArray(v, [v.length]));
      const outs = [rows * rank, rows * rank, rank * inF, outF * rank].map((n) => e.empty([n]));
      const drop = { p, seed };
      const runs = spyRuns(e.gpu, () => {
        loraDown(e.gpu, tx.buffer, tA.buffer, outs[0].buffer, dims, drop);
        loraProject(e.gpu, tg.buffer, tB.buffer, outs[1].buffer, dims);
        loraGradA(e.gpu, tu.buffer, tx.buffer, outs[2].buffer, dims, s, drop);
        loraGradB(e.gpu, tg.buffer, tt.buffer, outs[3].buffer, dims, s);
      });
      expect(runs.map((r) => r.kernel))
        .toEqual(['matmul.sg_thin', 'matmul.sg_thin', 'matmul.regs', 'matmul.regs']);
      const names = ['x·Aᵀ', 'g·B', 'uᵀ·x', 'gᵀ·t'];
      const wants = [wantT, wantU, wantDA, wantDB];
      const Ks = [inF, outF, rows, rows];
      for (let i = 0; i < 4; i++) {
        const r = expectClose(await outs[i].toArray(), wants[i], sumTol(Ks[i]), `LoRA ${names[i]}`);
        reportError('matmul kernel', `sg-thin LoRA ${names[i]}`, `${rows}x${inF}x${outF}`, r);
      }
    });
  });

  it.skipIf(!f16)('f16 operands and output, thin N and thin M', async () => {
    const e = await testEngine();
    for (const [M, N, K] of [[37, 4, 28], [4, 52, 36]]) {
      const d: MatmulDims = { M, N, K, batch: 1, transA: false, transB: true };
      const a = Float64Array.from(roundArrayF16(randn(M * K)));
      const b = Float64Array.from(roundArrayF16(randn(N * K)));
      const got = await e.scopeAsync(async () => {
        const [ta, tb] = [a, b].map((x) => e.fromArray(x, [x.length], false, 'f16'));
        const tc = e.empty([M * N], undefined, 'f16');
        mmKernel(e.gpu, {
          a: ta.buffer, b: tb.buffer, c: tc.buffer, M, N, K, transB: true, path: 'sg-thin',
        });
        return tc.toArray();
      });
      expectClose(got, refMatmul(a, b, d), sumTolF16(K), `matmul sg-thin f16 ${M}x${N}x${K}`);
    }
  });

  it('rejects sg-thin for a product without a side of 4 or less', async () => {
    const e = await testEngine();
    await e.scopeAsync(async () => {
      const [ta, tb, tc] = [5 * 8, 8 * 8, 40].map((n) => e.empty([n]));
      expect(() => mmKernel(e.gpu, {
        a: ta.buffer, b: tb.buffer, c: tc.buffer, M: 5, N: 8, K: 8, path: 'sg-thin',
      })).toThrow(/sg-thin.*M or N <= 4/);
    });
  });
});
