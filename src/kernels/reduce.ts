/** Launchers for shaders/reduce.wgsl. */
import { defineShader, treeSum } from '../gpu/kernel.js';
import type { Gpu } from '../gpu/runtime.js';

const THREADS = 256;
/** Rows each thread sums serially in stage 1 before the shared-memory tree. */
const ROWS_PER_THREAD = 16;
/** Most partial rows stage 1 may leave (so stage 2 is one small dispatch). */
const MAX_SPLITS = 1024;

export const reduce = defineShader('reduce', {
  ReduceParams: { R: 'u32', C: 'u32', chunk: 'u32', alpha: 'f32' },
}, { trees: { colsum_tree: treeSum(['colsum_sh'], 'RT', 'CT') } });

export const colsumKernel = reduce.kernel({
  name: 'reduce.colsum',
  entry: 'colsum',
  params: 'ReduceParams',
  bindings: ['x', 'out'],
  overrides: { CT: 32, RT: 8 },
  types: { x: 'dt_x', out: 'dt_out' },
});

/**
 * out[c] = alpha * sum_r x[r, c] for a row-major [R, C] array (C = 1: the sum of all elements).
 * Two stages: R rows to at most 1024 partial rows, then those to one row; each stage is a
 * shared-memory tree per workgroup.
 */
export function colsum(
  gpu: Gpu,
  x: GPUBuffer,
  out: GPUBuffer,
  R: number,
  C: number,
  alpha = 1,
): void {
  if (!(R >= 1 && C >= 1)) throw new Error(`colsum: bad size [${R},${C}]`);
  // Columns per workgroup: the next power of two >= C up to 32; the rest of the 256 threads
  // share the rows, so small C (a full sum, C = 1) still uses every thread.
  let CT = 1;
  while (CT < C && CT < 32) CT *= 2;
  const RT = THREADS / CT;
  // Column groups fold into z past the x limit (a [B] + [H,W,C] broadcast has millions).
  const [gx, gz] = gpu.grid(Math.ceil(C / CT), 1);
  const chunk = Math.max(RT * ROWS_PER_THREAD, Math.ceil(R / MAX_SPLITS));
  const S = Math.ceil(R / chunk);
  if (S === 1) {
    gpu.run(colsumKernel, {
      buffers: [x, out],
      params: { R, C, chunk, alpha },
      grid: [gx, 1, gz],
      overrides: { CT, RT },
    });
    return;
  }
  const partial = gpu.alloc(S * C * 4, 'colsum.partial');
  gpu.run(colsumKernel, {
    buffers: [x, partial],
    params: { R, C, chunk, alpha: 1 },
    grid: [gx, S, gz],
    overrides: { CT, RT },
  });
  colsum(gpu, partial, out, S, C, alpha);
  // Reusable only after this encoder is submitted (BufferPool.release), so this is safe.
  gpu.free(partial);
}
