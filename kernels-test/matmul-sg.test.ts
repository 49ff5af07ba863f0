/**
 * matmul_sg (shaders/matmul_sg.wgsl: the A operand shared across an 8-lane subgroup, lavapipe's
 * default for aligned products of 16+ rows and columns) forced explicitly, against the float64
 * references: 32x32 block edges, every transpose (with K not a multiple of 4 where no operand is
 * contiguous in k), batches with shared and batched operands, split-K, alpha (the direct store)
 * and the shared epilogue (bias, beta, the low-rank addend with its dropout mask), dropout on
 * either operand, and f16 operands. Skipped where the adapter has no subgroups of 8+ lanes
 * (then the launcher never picks this path).
 */
import { afterAll, describe, expect, it } from 'vitest';
import { closeGpu, getGpu } from '../src/gpu/runtime.js';
import { matmul as mmKernel, sgCapable } from '../src/kernels/matmul.js';
import { roundArrayF16 } from '../src/util/f16.js';
import { f16Supported, sumTolF16 } from './f16-helpers.js';
import { expectClose, f32, randn, reportError, spyRuns, sumTol, testEngine } from './helpers.js';
import { type MatmulDims, refDropoutMask, refMatmul } from './ref/matmul.js';

afterAll(() => closeGpu());

const run = sgCapable(await getGpu());
const f16 = run && (await f16Supported());

describe.skipIf(!run)('matmul sg path', () => {
  it.each([
    // [transA, transB, M, N, K, batch, batched B, split-K]
    [false, true, 37, 53, 28, 1, false, 1], // both operands contiguous in k; ragged M and N
    [false, false, 70, 36, 44, 2, false, 1], // B shared over the batch
    [true, false, 36, 72, 29, 2, true, 1], // K % 4 != 0: k past the end loads as zero
    [true, true, 68, 45, 72, 1, false, 1],
    [false, true, 33, 40, 600, 2, true, 3], // split-K slices summed by colsum
    [true, false, 96, 288, 256, 1, false, 2], // a weight gradient's layout, split
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
        mmKernel(e.gpu, {
          a: ta.buffer, b: tb.buffer, c: tc.buffer, M, N, K, batch, transA: tA, transB: tB,
          strideB: batchedB ? K * N : 0, path: 'sg', splitK: split,
        });
        const r = expectClose(await tc.toArray(), want, sumTol(K), `matmul sg ${M}x${N}x${K}`);
        reportError('matmul kernel', 'path sg', `${batch}x${M}x${N}x${K}`, r);
      });
    });

  // Rank <= 4 loads T and L once per block (T's rows by shuffles), a larger rank per 4 rows.
  it.each([
    [false, 4],
    [true, 4],
    [true, 3],
    [false, 6],
  ] as const)('alpha·A·Bᵀ + bias + beta·C + scale·mask⊙(T·op(L)) (L transposed %s, rank %i)',
    async (lTransposed, rank) => {
      const e = await testEngine();
      const [M, N, K, scale, p, seed] = [45, 70, 36, 1.5, 0.25, 0x5eed];
      const [alpha, beta] = [0.75, -0.5];
      const a = f32(randn(M * K));
      const b = f32(randn(N * K));
      const bias = f32(randn(N));
      const c0 = f32(randn(M * N));
      const t = f32(randn(M * rank));
      const l = f32(randn(N * rank));
      const mask = refDropoutMask(M * N, p, seed);
      const want = refMatmul(a, b, { M, N, K, batch: 1, transA: false, transB: true });
      for (let m = 0; m < M; m++) {
        for (let n = 0; n < N; n++) {
          let lr = 0;
          for (let r = 0; r < rank; r++) {
            lr += t[m * rank + r] * l[lTransposed ? r * N + n : n * rank + r];
          }
          const i = m * N + n;
          want[i] = alpha * want[i] + scale * mask[i] * lr + bias[n] + beta * c0[i];
        }
      }
      await e.scopeAsync(async () => {
        const [ta, tb, tbias, tc, tt, tl] =
          [a, b, bias, c0, t, l].map((v) => e.fromArray(v, [v.length]));
        const call = {
          a: ta.buffer, b: tb.buffer, c: tc.buffer, M, N, K, transB: true, alpha, beta,
          bias: tbias.buffer,
          lowRank: { t: tt.buffer, l: tl.buffer, rank, scale, lTransposed, mask: { p, seed } },
        };
        // The default on this adapter for 16+ rows and columns, epilogue or not.
        const runs = spyRuns(e.gpu, () => mmKernel(e.gpu, call));
        expect(runs.map((x) => x.kernel)).toEqual(['matmul.sg']);
        const r = expectClose(await tc.toArray(), want, sumTol(K), 'matmul sg epilogue');
        reportError('matmul kernel', 'path sg epilogue', `${M}x${N}x${K} r${rank}`, r);
      });
    });

  it.each(['a', 'b'] as const)('dropout on operand %s as it is loaded', async (operand) => {
    const e = await testEngine();
    const [M, N, K, p, seed] = [40, 36, 52, 0.3, 77];
    const a = f32(randn(M * K));
    const b = f32(randn(K * N));
    const mask = refDropoutMask(operand === 'a' ? M * K : K * N, p, seed);
    const am = operand === 'a' ? a.map((v, i) => v * mask[i]) : a;
    const bm = operand === 'b' ? b.map((v, i) => v * mask[i]) : b;
    const want = refMatmul(am, bm, { M, N, K, batch: 1, transA: false, transB: false });
    await e.scopeAsync(async () => {
      const [ta, tb] = [a, b].map((v) => e.fromArray(v, [v.length]));
      const tc = e.empty([M * N]);
      mmKernel(e.gpu, {
        a: ta.buffer, b: tb.buffer, c: tc.buffer, M, N, K, path: 'sg',
        dropout: { p, seed, operand },
      });
      const r = expectClose(await tc.toArray(), want, sumTol(K), `matmul sg dropout ${operand}`);
      reportError('matmul kernel', `path sg dropout ${operand}`, `${M}x${N}x${K}`, r);
    });
  });

  it.skipIf(!f16)('f16 operands and output', async () => {
    const e = await testEngine();
    const [M, N, K] = [37, 52, 28];
    const d: MatmulDims = { M, N, K, batch: 1, transA: false, transB: true };
    const a = Float64Array.from(roundArrayF16(randn(M * K)));
    const b = Float64Array.from(roundArrayF16(randn(N * K)));
    const got = await e.scopeAsync(async () => {
      const [ta, tb] = [a, b].map((x) => e.fromArray(x, [x.length], false, 'f16'));
      const tc = e.empty([M * N], undefined, 'f16');
      mmKernel(e.gpu, {
        a: ta.buffer, b: tb.buffer, c: tc.buffer, M, N, K, transB: true, path: 'sg',
      });
      return tc.toArray();
    });
    expectClose(got, refMatmul(a, b, d), sumTolF16(K), `matmul sg f16 ${M}x${N}x${K}`);
  });
});
