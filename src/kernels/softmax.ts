/** Launchers for shaders/softmax.wgsl. */
import { defineShader, treeMax, treeSum } from '../gpu/kernel.js';
import type { Gpu } from '../gpu/runtime.js';

const WG = 256;

export const softmaxShader = defineShader('softmax', {
  SoftmaxParams: { rows: 'u32', cols: 'u32' },
}, {
  trees: {
    softmax_max: treeMax(['softmax_sh']),
    softmax_sum: treeSum(['softmax_sh']),
    softmax_grad_sum: treeSum(['softmax_grad_sh']),
  },
});

export const softmaxKernel = softmaxShader.kernel({
  name: 'softmax.forward',
  entry: 'softmax',
  params: 'SoftmaxParams',
  bindings: ['x', 'y'],
  overrides: { WG },
});

/** y = softmax of each row of a row-major [rows, cols] array (one workgroup per row). */
export function softmax(gpu: Gpu, x: GPUBuffer, y: GPUBuffer, rows: number, cols: number): void {
  gpu.run(softmaxKernel, {
    buffers: [x, y],
    params: { rows, cols },
    grid: gpu.grid(rows * WG, WG),
  });
}

export const softmaxGradKernel = softmaxShader.kernel({
  name: 'softmax.backward',
  entry: 'softmax_grad',
  params: 'SoftmaxParams',
  bindings: ['y', 'g', 'out'],
  overrides: { WG },
});

/** out = y * (g - rowsum(g * y)): the input gradient of softmax from its output y. */
export function softmaxGrad(
  gpu: Gpu,
  y: GPUBuffer,
  g: GPUBuffer,
  out: GPUBuffer,
  rows: number,
  cols: number,
): void {
  gpu.run(softmaxGradKernel, {
    buffers: [y, g, out],
    params: { rows, cols },
    grid: gpu.grid(rows * WG, WG),
  });
}
