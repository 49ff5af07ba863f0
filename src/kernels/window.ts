/** Launchers for shaders/window.wgsl (window partition / unpartition of NHWC maps). */
import { defineShader } from '../gpu/kernel.js';
import type { Gpu } from '../gpu/runtime.js';

/** Invocations per workgroup: one group per token, striding over its channels. */
const WG = 64;

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

export const winPartitionFillKernel = windowShader.kernel({
  name: 'window.partition_fill',
  entry: 'win_partition_fill',
  params: 'WinParams',
  bindings: ['x', 'fill', 'out'],
  overrides: { WG },
  types: { x: 'dt_x', fill: 'dt_fill', out: 'dt_out' },
});

export const winFillGradKernel = windowShader.kernel({
  name: 'window.fill_grad',
  entry: 'win_fill_grad',
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
  const n = d.B * nh * nw * d.ws * d.ws;
  gpu.run(winPartitionKernel, {
    buffers: [x, out],
    params: winParams(d, n),
    grid: gpu.grid(n, 1),
  });
}

/** out [B, H, W, C] = windows [B * nh * nw, ws * ws, C] stitched back, padding dropped. */
export function windowUnpartition(gpu: Gpu, windows: GPUBuffer, out: GPUBuffer, d: WinDims): void {
  const n = d.B * d.H * d.W;
  gpu.run(winUnpartitionKernel, {
    buffers: [windows, out],
    params: winParams(d, n),
    grid: gpu.grid(n, 1),
  });
}

/** out [B * nh * nw, ws * ws, C] = windows of x [B, H, W, C], padding tokens set to fill [C]. */
export function windowPartitionFill(
  gpu: Gpu, x: GPUBuffer, fill: GPUBuffer, out: GPUBuffer, d: WinDims,
): void {
  const [nh, nw] = windowCounts(d.H, d.W, d.ws);
  const n = d.B * nh * nw * d.ws * d.ws;
  gpu.run(winPartitionFillKernel, {
    buffers: [x, fill, out],
    params: winParams(d, n),
    grid: gpu.grid(n, 1),
  });
}

/** out [C] = sum of the padding tokens' rows of windows [B * nh * nw, ws * ws, C]. */
export function windowFillGrad(gpu: Gpu, windows: GPUBuffer, out: GPUBuffer, d: WinDims): void {
  gpu.run(winFillGradKernel, {
    buffers: [windows, out],
    params: winParams(d, d.C),
    grid: gpu.grid(d.C, WG),
  });
}
