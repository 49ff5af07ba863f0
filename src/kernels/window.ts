/** Launchers for shaders/window.wgsl (window partition / unpartition of NHWC maps). */
import { defineShader } from '../gpu/kernel.js';
import type { Gpu } from '../gpu/runtime.js';

const WG = 256;

export const windowShader = defineShader('window', {
  WinParams: {
    n: 'u32',
    B: 'u32',
    H: 'u32',
    W: 'u32',
    C: 'u32',
    ws: 'u32',
    nh: 'u32',
    nw: 'u32',
  },
});

export const winPartitionKernel = windowShader.kernel({
  name: 'window.partition',
  entry: 'win_partition',
  params: 'WinParams',
  bindings: ['x', 'out'],
  overrides: { WG },
  types: { x: 'dt_x', out: 'dt_out' },
});

export const winUnpartitionKernel = windowShader.kernel({
  name: 'window.unpartition',
  entry: 'win_unpartition',
  params: 'WinParams',
  bindings: ['windows', 'out'],
  overrides: { WG },
  types: { windows: 'dt_x', out: 'dt_out' },
});

export interface WinDims {
  B: number;
  H: number;
  W: number;
  C: number;
  ws: number;
}

/** Windows per column and per row: ceil(H / ws), ceil(W / ws). */
export function windowCounts(H: number, W: number, ws: number): [number, number] {
  return [Math.ceil(H / ws), Math.ceil(W / ws)];
}

function winParams(d: WinDims, n: number): Record<string, number> {
  const [nh, nw] = windowCounts(d.H, d.W, d.ws);
  return { n, B: d.B, H: d.H, W: d.W, C: d.C, ws: d.ws, nh, nw };
}

/** out [B * nh * nw, ws * ws, C] = zero-padded windows of x [B, H, W, C]. */
export function windowPartition(gpu: Gpu, x: GPUBuffer, out: GPUBuffer, d: WinDims): void {
  const [nh, nw] = windowCounts(d.H, d.W, d.ws);
  const n = d.B * nh * nw * d.ws * d.ws * d.C;
  gpu.run(winPartitionKernel, {
    buffers: [x, out],
    params: winParams(d, n),
    grid: gpu.grid(n, WG),
  });
}

/** out [B, H, W, C] = windows [B * nh * nw, ws * ws, C] stitched back, padding dropped. */
export function windowUnpartition(gpu: Gpu, windows: GPUBuffer, out: GPUBuffer, d: WinDims): void {
  const n = d.B * d.H * d.W * d.C;
  gpu.run(winUnpartitionKernel, {
    buffers: [windows, out],
    params: winParams(d, n),
    grid: gpu.grid(n, WG),
  });
}
