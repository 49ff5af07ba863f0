/** Launchers for shaders/norm.wgsl (layer norm over the last dim, forward and backward). */
import { defineShader, treeSum } from '../gpu/kernel.js';
import type { Gpu } from '../gpu/runtime.js';

/** Column tile x row lanes of the dweight/dbias partial-sum kernel (256 threads). */
const TC = 32;
const TR = 8;
const REDUCE_WG = 256;
/** At most this many row chunks feed the second reduction pass (bounds its per-thread loop). */
const MAX_CHUNKS = 256;
const MIN_ROWS_PER_CHUNK = 64;

export const norm = defineShader('norm', {
  LnParams: { rows: 'u32', C: 'u32', eps: 'f32' },
  LnPartialParams: { rows: 'u32', C: 'u32', rows_per_chunk: 'u32', chunks: 'u32' },
  LnReduceParams: { C: 'u32', chunks: 'u32', first: 'u32' },
}, {
  trees: {
    lnf_sum: treeSum(['lnf_red']),
    lndx_sum: treeSum(['lndx_r1', 'lndx_r2']),
    // dweight/dbias partials: the TR row lanes of each of the TC columns.
    lnp_sum: treeSum(['lnp_rw', 'lnp_rb'], 'TR', 'TC'),
  },
});

export const lnForwardKernel = norm.kernel({
  name: 'norm.ln_forward',
  entry: 'ln_forward',
  params: 'LnParams',
  bindings: ['x', 'w', 'b', 'y', 'stats'],
  overrides: { WG: 256 },
  types: { x: 'dt_x', y: 'dt_y' },
});

export const lnDxKernel = norm.kernel({
  name: 'norm.ln_dx',
  entry: 'ln_dx',
  params: 'LnParams',
  bindings: ['g', 'x', 'w', 'stats', 'dx'],
  overrides: { WG: 256 },
  types: { g: 'dt_g', x: 'dt_x', dx: 'dt_dx' },
});

export const lnDwbPartialKernel = norm.kernel({
  name: 'norm.ln_dwb_partial',
  entry: 'ln_dwb_partial',
  params: 'LnPartialParams',
  bindings: ['g', 'x', 'stats', 'partial'],
  overrides: { TC, TR },
  types: { g: 'dt_g', x: 'dt_x' },
});

export const lnDwbReduceKernel = norm.kernel({
  name: 'norm.ln_dwb_reduce',
  entry: 'ln_dwb_reduce',
  params: 'LnReduceParams',
  bindings: ['partial', 'out'],
  overrides: { WG: REDUCE_WG },
});

/**
 * 'groups': one workgroup per row with tree reductions in workgroup memory (GPUs). 'rows': one
 * invocation per row, no workgroup memory (CPU adapters, where a workgroup is a SIMD loop and
 * barriers cost more than they save); vec4 loads when C % 4 == 0.
 */
export type LnPath = 'groups' | 'rows';

export function defaultLnPath(gpu: Gpu): LnPath {
  return gpu.info.cpuFallback ? 'rows' : 'groups';
}

/** Activations (and their gradients) may be f16; w, b, stats and partials stay f32. */
const LN_TYPES: Record<string, string> = { x: 'dt_x', y: 'dt_y', g: 'dt_g', dx: 'dt_dx' };
const lnTypes = (bindings: string[]) =>
  Object.fromEntries(bindings.filter((b) => LN_TYPES[b]).map((b) => [b, LN_TYPES[b]]));

const rowKernel = (name: string, entry: string, bindings: string[], params = 'LnParams') =>
  norm.kernel({
    name: `norm.${name}`, entry, params, bindings, overrides: { WG: 64 }, types: lnTypes(bindings),
  });

export const lnForwardRowsKernel = rowKernel('ln_forward_rows', 'ln_forward_rows',
  ['x', 'w', 'b', 'y', 'stats']);
export const lnForwardRows4Kernel = rowKernel('ln_forward_rows4', 'ln_forward_rows4',
  ['x', 'w', 'b', 'y', 'stats']);
export const lnDxRowsKernel = rowKernel('ln_dx_rows', 'ln_dx_rows',
  ['g', 'x', 'w', 'stats', 'dx']);
export const lnDxRows4Kernel = rowKernel('ln_dx_rows4', 'ln_dx_rows4',
  ['g', 'x', 'w', 'stats', 'dx']);
export const lnDwbPartialColsKernel = rowKernel('ln_dwb_partial_cols', 'ln_dwb_partial_cols',
  ['g', 'x', 'stats', 'partial'], 'LnPartialParams');

/**
 * Invocations per workgroup of the 'rows' kernels: at most 64, but small enough that a CPU's
 * worker threads each get several workgroups (at least 8 in all) when the rows allow it.
 */
export function rowsWorkgroup(rows: number): number {
  let wg = 64;
  while (wg > 8 && rows < wg * 8) wg /= 2;
  return wg;
}

/** Threads per row: about 4 elements per thread, a power of two in [32, 256]. */
export function rowWorkgroup(C: number): number {
  let wg = 32;
  while (wg < 256 && wg * 4 < C) wg *= 2;
  return wg;
}

function rowGrid(gpu: Gpu, rows: number): [number, number, number] {
  // One workgroup per row: gpu.grid with wg = 1 folds the row count into y past the x limit.
  return gpu.grid(rows, 1);
}

/** y = (x - mean) * rstd * w + b per row of [rows, C]; stats[r] = (mean, rstd). */
export function layerNormForward(
  gpu: Gpu,
  x: GPUBuffer,
  w: GPUBuffer,
  b: GPUBuffer,
  y: GPUBuffer,
  stats: GPUBuffer,
  rows: number,
  C: number,
  eps: number,
  path: LnPath = defaultLnPath(gpu),
): void {
  if (path === 'rows') {
    const wg = rowsWorkgroup(rows);
    gpu.run(C % 4 === 0 ? lnForwardRows4Kernel : lnForwardRowsKernel, {
      // w bound as exactly C floats: the kernel takes the row length from its arrayLength.
      buffers: [x, { buffer: w, size: C * 4 }, b, y, stats],
      params: { rows, C, eps },
      grid: gpu.grid(rows, wg),
      overrides: { WG: wg },
    });
    return;
  }
  gpu.run(lnForwardKernel, {
    buffers: [x, w, b, y, stats],
    params: { rows, C, eps },
    grid: rowGrid(gpu, rows),
    overrides: { WG: rowWorkgroup(C) },
  });
}

/** dx of layer norm from the upstream gradient g and the forward's saved stats. */
export function layerNormBackwardInput(
  gpu: Gpu,
  g: GPUBuffer,
  x: GPUBuffer,
  w: GPUBuffer,
  stats: GPUBuffer,
  dx: GPUBuffer,
  rows: number,
  C: number,
  path: LnPath = defaultLnPath(gpu),
): void {
  if (path === 'rows') {
    const wg = rowsWorkgroup(rows);
    gpu.run(C % 4 === 0 ? lnDxRows4Kernel : lnDxRowsKernel, {
      buffers: [g, x, { buffer: w, size: C * 4 }, stats, dx],
      params: { rows, C, eps: 0 },
      grid: gpu.grid(rows, wg),
      overrides: { WG: wg },
    });
    return;
  }
  gpu.run(lnDxKernel, {
    buffers: [g, x, w, stats, dx],
    params: { rows, C, eps: 0 },
    grid: rowGrid(gpu, rows),
    overrides: { WG: rowWorkgroup(C) },
  });
}

/**
 * dweight[c] = sum_r g[r,c] * xhat[r,c] and dbias[c] = sum_r g[r,c], each written only when its
 * buffer is given. Two passes: per-(column tile, row chunk) partial sums, then a per-column sum
 * over the chunks.
 */
export function layerNormBackwardParams(
  gpu: Gpu,
  g: GPUBuffer,
  x: GPUBuffer,
  stats: GPUBuffer,
  dw: GPUBuffer | null,
  db: GPUBuffer | null,
  rows: number,
  C: number,
  path: LnPath = defaultLnPath(gpu),
): void {
  if (!dw && !db) return;
  const rowsPerChunk = Math.max(MIN_ROWS_PER_CHUNK, Math.ceil(rows / MAX_CHUNKS));
  const chunks = Math.ceil(rows / rowsPerChunk);
  const partial = gpu.alloc(2 * chunks * C * 4, 'layer_norm.partial');
  const partialParams = { rows, C, rows_per_chunk: rowsPerChunk, chunks };
  if (path === 'rows') {
    const wg = Math.min(64, 2 ** Math.ceil(Math.log2(C)));
    gpu.run(lnDwbPartialColsKernel, {
      buffers: [g, x, stats, partial],
      params: partialParams,
      grid: [Math.ceil(C / wg), chunks, 1],
      overrides: { WG: wg },
    });
  } else {
    gpu.run(lnDwbPartialKernel, {
      buffers: [g, x, stats, partial],
      params: partialParams,
      grid: [Math.ceil(C / TC), chunks, 1],
    });
  }
  const grid = gpu.grid(C, REDUCE_WG);
  if (dw) {
    gpu.run(lnDwbReduceKernel, { buffers: [partial, dw], params: { C, chunks, first: 0 }, grid });
  }
  if (db) {
    gpu.run(lnDwbReduceKernel, {
      buffers: [partial, db],
      params: { C, chunks, first: chunks * C },
      grid,
    });
  }
  // The pool keeps a released buffer out of reuse until the recorded work is submitted.
  gpu.free(partial);
}
