import { afterAll, describe, expect, it } from 'vitest';
import { closeGpu } from '../src/gpu/runtime.js';
import { colsum, matmul as mmKernel } from '../src/kernels/matmul.js';
import { matmul } from '../src/ops/matmul.js';
import { checkOp, expectClose, f32, randn, reportError, sumTol, testEngine } from './helpers.js';
import { type MatmulDims, refMatmul, refMatmulBackward } from './ref/matmul.js';

afterAll(() => closeGpu());

const tolFor = sumTol;

interface Case {
  batch: number[];
  M: number;
  N: number;
  K: number;
  transA?: boolean;
  transB?: boolean;
  /** Which operand is 2-D (shared over the batch). */
  shared?: 'a' | 'b';
}

async function runCase(c: Case) {
  const transA = !!c.transA;
  const transB = !!c.transB;
  const { M, N, K } = c;
  const nb = c.batch.reduce((x, y) => x * y, 1);
  const aMat = transA ? [K, M] : [M, K];
  const bMat = transB ? [N, K] : [K, N];
  const aShape = c.shared === 'a' ? aMat : [...c.batch, ...aMat];
  const bShape = c.shared === 'b' ? bMat : [...c.batch, ...bMat];
  const d: MatmulDims = {
    M, N, K, batch: nb, transA, transB, sharedA: c.shared === 'a', sharedB: c.shared === 'b',
  };
  const size = (s: number[]) => s.reduce((x, y) => x * y, 1);
  // The shared operand's gradient sums over the batch as well.
  const gradL = Math.max(N * (c.shared === 'a' ? nb : 1), M * (c.shared === 'b' ? nb : 1));
  const r = await checkOp({
    label:
      `matmul ${aShape.join('x')}${transA ? 'ᵀ' : ''} · ` +
      `${bShape.join('x')}${transB ? 'ᵀ' : ''}`,
    inputs: [randn(size(aShape)), randn(size(bShape))],
    shapes: [aShape, bShape],
    gpu: (a, b) => matmul(a, b, { transA, transB }),
    ref: ([a, b]) => refMatmul(a, b, d),
    refBackward: ([a, b], g) => refMatmulBackward(a, b, g, d),
    outShape: [...c.batch, M, N],
    tol: tolFor(K),
    gradTol: tolFor(gradL),
    fd: { samples: 12 },
  });
  return r;
}

describe('matmul op', () => {
  const cases: Case[] = [
    { batch: [], M: 37, N: 53, K: 29 },
    { batch: [3], M: 37, N: 53, K: 29 },
    { batch: [3], M: 37, N: 53, K: 29, transA: true },
    { batch: [3], M: 37, N: 53, K: 29, transB: true },
    { batch: [3], M: 37, N: 53, K: 29, transA: true, transB: true },
    { batch: [], M: 65, N: 129, K: 70 },
    { batch: [2, 3], M: 13, N: 21, K: 17, shared: 'b' },
    { batch: [3], M: 13, N: 21, K: 17, shared: 'b', transA: true, transB: true },
    { batch: [3], M: 13, N: 21, K: 17, shared: 'a', transB: true },
    { batch: [2], M: 300, N: 5, K: 33, transB: true },
    { batch: [], M: 6, N: 150, K: 40, transA: true },
    // Multiples of 4 on every contiguous axis: the vec4-load kernel.
    { batch: [3], M: 36, N: 52, K: 28 },
    { batch: [3], M: 36, N: 52, K: 28, transA: true, transB: true },
    { batch: [], M: 68, N: 132, K: 72, transB: true },
    { batch: [3], M: 12, N: 20, K: 16, shared: 'b', transA: true },
    { batch: [2], M: 300, N: 4, K: 32, transB: true },
  ];
  it.each(cases)('matches float64 at %j', async (c) => {
    await runCase(c);
  });

  it('rejects mismatched shapes', async () => {
    const e = await testEngine();
    e.scope(() => {
      const a = e.zeros([3, 4, 5]);
      const b = e.zeros([6, 7]);
      expect(() => matmul(a, b)).toThrow(/matmul: inner dims differ \(5 vs 6\)/);
      const c = e.zeros([2, 5, 7]);
      expect(() => matmul(a, c)).toThrow(/batch dims differ/);
    });
  });
});

describe('matmul kernel', () => {
  // alpha, bias and beta (accumulate) together, across 64x64 tile edges.
  it('computes alpha·A·Bᵀ + bias + beta·C', async () => {
    const e = await testEngine();
    const [M, N, K] = [70, 66, 45];
    const a = f32(randn(M * K));
    const b = f32(randn(N * K));
    const bias = f32(randn(N));
    const c0 = f32(randn(M * N));
    const [alpha, beta] = [0.75, -0.5];
    const want = refMatmul(a, b, { M, N, K, batch: 1, transA: false, transB: true });
    for (let m = 0; m < M; m++) {
      for (let n = 0; n < N; n++) {
        const i = m * N + n;
        want[i] = alpha * want[i] + bias[n] + beta * c0[i];
      }
    }
    await e.scopeAsync(async () => {
      const [ta, tb, tbias, tc] = [[a], [b], [bias], [c0]].map(([v]) => e.fromArray(v, [v.length]));
      mmKernel(e.gpu, {
        a: ta.buffer, b: tb.buffer, c: tc.buffer, M, N, K, transB: true, alpha, beta,
        bias: tbias.buffer,
      });
      const r = expectClose(await tc.toArray(), want, tolFor(K), 'matmul alpha/bias/beta');
      reportError('matmul kernel', 'alpha/bias/beta', `${M}x${N}x${K}`, r);
    });
  });

  // Split-K partials summed by colsum, batched with a shared B, both transposes.
  it.each([
    [3, false, false, 19, 23, 301],
    [5, true, true, 19, 23, 301],
    [4, true, false, 20, 24, 300], // vec4 loads
  ])('split-K into %i slices (transA %s, transB %s, %ix%ix%i)', async (split, tA, tB, M, N, K) => {
    const e = await testEngine();
    const batch = 2;
    const a = f32(randn(batch * M * K));
    const b = f32(randn(K * N));
    const d: MatmulDims = { M, N, K, batch, transA: tA, transB: tB, sharedB: true };
    const want = refMatmul(a, b, d);
    await e.scopeAsync(async () => {
      const ta = e.fromArray(a, [a.length]);
      const tb = e.fromArray(b, [b.length]);
      const tc = e.empty([batch * M * N]);
      mmKernel(e.gpu, {
        a: ta.buffer, b: tb.buffer, c: tc.buffer, M, N, K, batch, strideB: 0, transA: tA,
        transB: tB, alpha: 1, splitK: split,
      });
      const r = expectClose(await tc.toArray(), want, tolFor(K), `split-K ${split}`);
      reportError('matmul kernel', `split-K ${split}`, `${batch}x${M}x${N}x${K}`, r);
    });
  });

  // Every kernel path on every adapter: CI runs on a CPU adapter, which picks the `regs` path by
  // default, so the GPU default (`tiled`, scalar and vec4 loads) is forced here explicitly.
  it.each([
    ['tiled', false, true, 37, 53, 29, false], // scalar loads, tile edges
    ['tiled', true, false, 68, 132, 72, true], // vec4 loads, both operands batched
    ['tiled', false, false, 300, 4, 36, false], // thin (LoRA rank side)
    ['regs', false, true, 36, 52, 28, false],
    ['regs', true, true, 68, 132, 72, true],
    ['regs', false, false, 300, 4, 36, false],
  ] as const)('path %s (transA %s, transB %s, %ix%ix%i, batched B %s)', async (path, tA, tB, M, N, K, batchedB) => {
    const e = await testEngine();
    const batch = 2;
    const a = f32(randn(batch * M * K));
    const b = f32(randn((batchedB ? batch : 1) * K * N));
    const bias = f32(randn(N));
    const d: MatmulDims = { M, N, K, batch, transA: tA, transB: tB, sharedB: !batchedB };
    const want = refMatmul(a, b, d);
    for (let i = 0; i < want.length; i++) want[i] += bias[i % N];
    await e.scopeAsync(async () => {
      const ta = e.fromArray(a, [a.length]);
      const tb = e.fromArray(b, [b.length]);
      const tbias = e.fromArray(bias, [N]);
      const tc = e.empty([batch * M * N]);
      mmKernel(e.gpu, {
        a: ta.buffer, b: tb.buffer, c: tc.buffer, M, N, K, batch, transA: tA, transB: tB,
        strideB: batchedB ? K * N : 0, bias: tbias.buffer, path,
      });
      const r = expectClose(await tc.toArray(), want, tolFor(K), `matmul path ${path}`);
      reportError('matmul kernel', `path ${path}`, `${batch}x${M}x${N}x${K}`, r);
    });
  });

  // Two-pass column sum (rows > 1024) and a single pass; sequential f32 sums over R rows.
  it.each([
    [1500, 37],
    [77, 300],
  ])('colsum of [%i, %i] matches float64', async (R, N) => {
    const e = await testEngine();
    const g = f32(randn(R * N));
    const want = new Float64Array(N);
    for (let r = 0; r < R; r++) for (let n = 0; n < N; n++) want[n] += g[r * N + n];
    await e.scopeAsync(async () => {
      const tg = e.fromArray(g, [R, N]);
      const out = e.empty([N]);
      colsum(e.gpu, tg.buffer, out.buffer, R, N);
      const r = expectClose(await out.toArray(), want, tolFor(R), `colsum ${R}x${N}`);
      reportError('colsum', 'forward', `${R}x${N}`, r);
    });
  });
});
