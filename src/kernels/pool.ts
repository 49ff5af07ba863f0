/** Launchers for shaders/pool.wgsl: max-pooling (kernel = stride) on NHWC tensors. */
import { defineShader } from '../gpu/kernel.js';
import type { Gpu } from '../gpu/runtime.js';

const WG = 256;

export const pool = defineShader('pool', {
  PoolParams: { b: 'u32', h: 'u32', w: 'u32', c: 'u32', ho: 'u32', wo: 'u32', k: 'u32' },
});

export const maxPoolFwdKernel = pool.kernel({
  name: 'pool.maxpool_fwd',
  entry: 'maxpool_fwd',
  params: 'PoolParams',
  bindings: ['x', 'y'],
  overrides: { WG },
  types: { x: 'dt_x', y: 'dt_y' },
});

export const maxPoolBwdKernel = pool.kernel({
  name: 'pool.maxpool_bwd',
  entry: 'maxpool_bwd',
  params: 'PoolParams',
  bindings: ['dy', 'x', 'dx'],
  overrides: { WG },
  types: { dy: 'dt_dy', x: 'dt_x', dx: 'dt_dx' },
});

/** NHWC input [b, h, w, c] pooled by k x k windows with stride k. */
export interface PoolDims {
  b: number;
  h: number;
  w: number;
  c: number;
  k: number;
}

function params(d: PoolDims) {
  return { ...d, ho: Math.floor(d.h / d.k), wo: Math.floor(d.w / d.k) };
}

/** y [b, h/k, w/k, c] = max over each window (floor: a partial last window is dropped). */
export function maxPool2dForward(gpu: Gpu, x: GPUBuffer, y: GPUBuffer, d: PoolDims): void {
  const p = params(d);
  const n = d.b * p.ho * p.wo * d.c;
  gpu.run(maxPoolFwdKernel, { buffers: [x, y], params: p, grid: gpu.grid(n, WG) });
}

/** dx [b, h, w, c]: dy routed to each window's first maximum, 0 elsewhere. */
export function maxPool2dBackward(
  gpu: Gpu,
  dy: GPUBuffer,
  x: GPUBuffer,
  dx: GPUBuffer,
  d: PoolDims,
): void {
  const n = d.b * d.h * d.w * d.c;
  gpu.run(maxPoolBwdKernel, { buffers: [dy, x, dx], params: params(d), grid: gpu.grid(n, WG) });
}
