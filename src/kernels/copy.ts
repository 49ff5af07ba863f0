/** Launchers for shaders/copy.wgsl. */
import { defineShader } from '../gpu/kernel.js';
import type { BufferRef, Gpu } from '../gpu/runtime.js';
import { storageBytes } from '../util/f16.js';
import { cast } from './elementwise.js';

const WG = 256;
const TILE = 32;

const dims6 = (p: string) => Object.fromEntries([0, 1, 2, 3, 4, 5].map((i) => [`${p}${i}`, 'u32']));
const dims4 = (p: string) => Object.fromEntries([0, 1, 2, 3].map((i) => [`${p}${i}`, 'u32']));

export const copyShader = defineShader('copy', {
  PermuteParams: { n: 'u32', ...dims6('o'), ...dims6('s') },
  TransposeParams: {
    A: 'u32',
    B: 'u32',
    sInB: 'u32',
    sOutA: 'u32',
    tilesA: 'u32',
    tilesB: 'u32',
    nbatch: 'u32',
    ...dims4('e'),
    ...dims4('is'),
    ...dims4('os'),
  },
  ColsParams: {
    rows: 'u32',
    count: 'u32',
    inC: 'u32',
    outC: 'u32',
    inOff: 'u32',
    outOff: 'u32',
  },
});

export const permuteKernel = copyShader.kernel({
  name: 'copy.permute',
  entry: 'permute',
  params: 'PermuteParams',
  bindings: ['x', 'out'],
  overrides: { WG },
  types: { x: 'dt_x', out: 'dt_out' },
});

export const transposeKernel = copyShader.kernel({
  name: 'copy.transpose',
  entry: 'transpose',
  params: 'TransposeParams',
  bindings: ['x', 'out'],
  types: { x: 'dt_x', out: 'dt_out' },
});

export const colsKernel = copyShader.kernel({
  name: 'copy.cols',
  entry: 'cols',
  params: 'ColsParams',
  bindings: ['x', 'out'],
  overrides: { WG },
  types: { x: 'dt_x', out: 'dt_out' },
});

/**
 * Drops size-1 dims and merges input dims that stay adjacent and in order under `perm`, so
 * e.g. [B,H,W,C] -> [B,W,H,C] becomes a rank-4 problem but [B,N,h,d] -> [B,h,N,d] a rank-4 one
 * with d kept contiguous, and a pure reshape-like permute becomes rank 1 (a plain copy).
 */
export function canonicalPermute(
  shape: readonly number[],
  perm: readonly number[],
): { shape: number[]; perm: number[] } {
  const keep = shape.map((d) => d !== 1);
  const newIndex: number[] = [];
  let k = 0;
  for (let i = 0; i < shape.length; i++) newIndex.push(keep[i] ? k++ : -1);
  let s = shape.filter((d) => d !== 1);
  let p = perm.filter((q) => keep[q]).map((q) => newIndex[q]);
  // Merge runs p[j], p[j]+1, ...: those input dims move together.
  const groups: number[][] = [];
  for (const q of p) {
    const last = groups[groups.length - 1];
    if (last && last[last.length - 1] + 1 === q) last.push(q);
    else groups.push([q]);
  }
  const order = groups.map((g) => g[0]).sort((a, b) => a - b);
  const merged = order.map((first) => {
    const g = groups.find((x) => x[0] === first) as number[];
    return g.reduce((acc, q) => acc * s[q], 1);
  });
  p = groups.map((g) => order.indexOf(g[0]));
  s = merged;
  return { shape: s, perm: p };
}

/** out = x permuted: out dim k is input dim perm[k] (rank up to 6, contiguous row-major). */
export function permute(
  gpu: Gpu,
  x: GPUBuffer,
  out: GPUBuffer,
  shape: readonly number[],
  perm: readonly number[],
): void {
  const n = shape.reduce((a, b) => a * b, 1);
  const c = canonicalPermute(shape, perm);
  const r = c.shape.length;
  if (r <= 1) {
    // Nothing moves: a byte copy, or a conversion when the element types differ.
    const dt = gpu.pool.dtypeOf(x);
    if (dt === gpu.pool.dtypeOf(out)) gpu.copy(x, 0, out, 0, storageBytes(n, dt));
    else cast(gpu, x, out, n);
    return;
  }
  if (r > 6) throw new Error(`permute: rank ${r} after merging dims exceeds 6`);
  const inStride: number[] = new Array(r);
  let acc = 1;
  for (let i = r - 1; i >= 0; i--) {
    inStride[i] = acc;
    acc *= c.shape[i];
  }
  const outShape = c.perm.map((q) => c.shape[q]);
  if (c.perm[r - 1] === r - 1) {
    const params: Record<string, number> = { n };
    for (let k = 0; k < 6; k++) {
      const j = k - (6 - r);
      params[`o${k}`] = j >= 0 ? outShape[j] : 1;
      params[`s${k}`] = j >= 0 ? inStride[c.perm[j]] : 0;
    }
    gpu.run(permuteKernel, { buffers: [x, out], params, grid: gpu.grid(n, WG) });
    return;
  }
  const outStride: number[] = new Array(r);
  acc = 1;
  for (let i = r - 1; i >= 0; i--) {
    outStride[i] = acc;
    acc *= outShape[i];
  }
  const q = c.perm.indexOf(r - 1);
  const A = c.shape[r - 1];
  const B = outShape[r - 1];
  const others = [...Array(r).keys()].filter((k) => k !== q && k !== r - 1);
  const params: Record<string, number> = {
    A,
    B,
    sInB: inStride[c.perm[r - 1]],
    sOutA: outStride[q],
    tilesA: Math.ceil(A / TILE),
    tilesB: Math.ceil(B / TILE),
    nbatch: others.reduce((m, k) => m * outShape[k], 1),
  };
  for (let k = 0; k < 4; k++) {
    const j = k - (4 - others.length);
    const d = j >= 0 ? others[j] : -1;
    params[`e${k}`] = d >= 0 ? outShape[d] : 1;
    params[`is${k}`] = d >= 0 ? inStride[c.perm[d]] : 0;
    params[`os${k}`] = d >= 0 ? outStride[d] : 0;
  }
  const groups = params.tilesA * params.tilesB * params.nbatch;
  gpu.run(transposeKernel, {
    buffers: [x, out],
    params,
    grid: gpu.grid(groups, 1),
  });
}

/**
 * out[r, outOff + j] = x[r, inOff + j] for r < rows, j < count; x is [rows, inC], out [rows, outC].
 * Other columns of out are left as they are. x and out may be bound ranges (strided views).
 */
export function copyCols(
  gpu: Gpu,
  x: GPUBuffer | BufferRef,
  out: GPUBuffer | BufferRef,
  rows: number,
  count: number,
  inC: number,
  inOff: number,
  outC: number,
  outOff: number,
): void {
  if (inOff + count > inC || outOff + count > outC) {
    throw new Error(
      `copyCols: columns [${inOff},${inOff + count}) of ${inC} into [${outOff},` +
        `${outOff + count}) of ${outC}`,
    );
  }
  gpu.run(colsKernel, {
    buffers: [x, out],
    params: { rows, count, inC, outC, inOff, outOff },
    grid: gpu.grid(rows * count, WG),
  });
}
