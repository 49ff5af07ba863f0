/**
 * Launchers for the bench's own WGSL (bench/naive/*.wgsl): the naive peers of the tuned kernels
 * and the ceiling kernels, defined with src/gpu/kernel.ts's defineShader over bench/naive/, so the
 * bench never touches shaders/.
 */
import { join } from 'node:path';
import { PACKAGE_ROOT } from '#src/gpu/dawn.js';
import { type Kernel, defineShader } from '#src/gpu/kernel.js';
import type { Gpu } from '#src/gpu/runtime.js';

const WG = 256;
export const NAIVE_DIR = join(PACKAGE_ROOT, 'bench', 'naive');

const naive = defineShader('naive', {
  NaiveMatmulParams: { M: 'u32', N: 'u32', K: 'u32' },
  NaiveConvParams: {
    B: 'u32', H: 'u32', W: 'u32', Cin: 'u32', Cout: 'u32', Ho: 'u32', Wo: 'u32', kh: 'u32',
    kw: 'u32', stride: 'u32', pad: 'u32',
  },
  NaiveAttnParams: { N: 'u32', heads: 'u32', hd: 'u32', scale: 'f32' },
  NaiveRowsParams: { rows: 'u32', cols: 'u32' },
  NaiveLnParams: { rows: 'u32', C: 'u32', eps: 'f32' },
}, { dir: NAIVE_DIR });

const k = (name: string, params: string, bindings: string[]): Kernel =>
  naive.kernel({ name: `naive.${name}`, entry: `naive_${name}`, params, bindings,
    overrides: name === 'matmul' || name === 'scores' || name === 'pv' ? {} : { WG } });

const matmulK = k('matmul', 'NaiveMatmulParams', ['x', 'w', 'b', 'y']);
const convK = k('conv2d', 'NaiveConvParams', ['x', 'w', 'b', 'y']);
const scoresK = k('scores', 'NaiveAttnParams', ['qkv', 's']);
const softmaxK = k('softmax', 'NaiveRowsParams', ['s']);
const pvK = k('pv', 'NaiveAttnParams', ['s', 'qkv', 'out']);
const lnK = k('layer_norm', 'NaiveLnParams', ['x', 'w', 'b', 'y']);

function grid2(gpu: Gpu, x: number, y: number, z = 1): [number, number, number] {
  const max = gpu.limits.maxComputeWorkgroupsPerDimension;
  const g: [number, number, number] = [Math.ceil(x / 16), Math.ceil(y / 16), z];
  if (g.some((v) => v > max)) throw new Error(`naive kernel: grid [${g.join(',')}] too large`);
  return g;
}

/** y[M, N] = x[M, K] · w[N, K]ᵀ + b. */
export function naiveMatmul(gpu: Gpu, x: GPUBuffer, w: GPUBuffer, b: GPUBuffer, y: GPUBuffer,
  M: number, N: number, K: number): void {
  gpu.run(matmulK, { buffers: [x, w, b, y], params: { M, N, K }, grid: grid2(gpu, N, M) });
}

export interface NaiveConvDims {
  B: number; H: number; W: number; Cin: number; Cout: number; kh: number; kw: number;
  stride: number; pad: number;
}

export function naiveConv2d(gpu: Gpu, x: GPUBuffer, w: GPUBuffer, b: GPUBuffer, y: GPUBuffer,
  d: NaiveConvDims): [number, number] {
  const Ho = Math.floor((d.H + 2 * d.pad - d.kh) / d.stride) + 1;
  const Wo = Math.floor((d.W + 2 * d.pad - d.kw) / d.stride) + 1;
  gpu.run(convK, {
    buffers: [x, w, b, y],
    params: { ...d, Ho, Wo },
    grid: gpu.grid(d.B * Ho * Wo * d.Cout, WG),
  });
  return [Ho, Wo];
}

/** Bytes of the materialised score matrix the naive attention needs. */
export function naiveAttentionScoreBytes(Bw: number, heads: number, N: number): number {
  return Bw * heads * N * N * 4;
}

/** out [Bw, N, C] = softmax(q kᵀ · scale) v per head from packed qkv [Bw, N, 3C]; s: scratch. */
export function naiveAttention(gpu: Gpu, qkv: GPUBuffer, s: GPUBuffer, out: GPUBuffer,
  Bw: number, N: number, heads: number, hd: number): void {
  const p = { N, heads, hd, scale: 1 / Math.sqrt(hd) };
  gpu.run(scoresK, { buffers: [qkv, s], params: p, grid: grid2(gpu, N, N, Bw * heads) });
  const rows = Bw * heads * N;
  gpu.run(softmaxK, { buffers: [s], params: { rows, cols: N }, grid: gpu.grid(rows, WG) });
  gpu.run(pvK, { buffers: [s, qkv, out], params: p, grid: grid2(gpu, hd, N, Bw * heads) });
}

export function naiveLayerNorm(gpu: Gpu, x: GPUBuffer, w: GPUBuffer, b: GPUBuffer, y: GPUBuffer,
  rows: number, C: number, eps = 1e-6): void {
  gpu.run(lnK, { buffers: [x, w, b, y], params: { rows, C, eps }, grid: gpu.grid(rows, WG) });
}

const ceiling = defineShader('ceiling', {
  CeilFmaParams: { threads: 'u32', iters: 'u32', m: 'f32', c: 'f32' },
  CeilCopyParams: { n4: 'u32' },
}, { dir: NAIVE_DIR });

const fmaK = ceiling.kernel({ name: 'ceiling.fma', entry: 'ceil_fma', params: 'CeilFmaParams',
  bindings: ['out'], overrides: { WG } });
const copyK = ceiling.kernel({ name: 'ceiling.copy', entry: 'ceil_copy', params: 'CeilCopyParams',
  bindings: ['src', 'dst'], overrides: { WG } });

/** FLOPs one ceilingFma dispatch performs. */
export const fmaFlops = (threads: number, iters: number, chains = 8) =>
  threads * iters * chains * 4 * 2;

/** `chains` (8 or 2) independent vec4 FMA chains per thread, `iters` rounds each. */
export function ceilingFma(
  gpu: Gpu, out: GPUBuffer, threads: number, iters: number, chains: 8 | 2 = 8,
): void {
  gpu.run(fmaK, {
    buffers: [out],
    params: { threads, iters, m: 0.999, c: 1e-3 },
    grid: gpu.grid(threads, WG),
    overrides: { CHAINS: chains },
  });
}

/** Copies n4 vec4s (16 bytes each). */
export function ceilingCopy(gpu: Gpu, src: GPUBuffer, dst: GPUBuffer, n4: number): void {
  gpu.run(copyK, { buffers: [src, dst], params: { n4 }, grid: gpu.grid(n4, WG) });
}
