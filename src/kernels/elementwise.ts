/** Launchers for shaders/elementwise.wgsl. */
import { defineShader } from '../gpu/kernel.js';
import type { Gpu } from '../gpu/runtime.js';

const WG = 256;

export const elementwise = defineShader('elementwise', {
  BinaryParams: { n: 'u32', nb: 'u32', alpha: 'f32' },
  FillParams: { n: 'u32', offset: 'u32', bits: 'u32' },
});

export const addKernel = elementwise.kernel({
  name: 'elementwise.add',
  entry: 'add',
  params: 'BinaryParams',
  bindings: ['a', 'b', 'out'],
  overrides: { WG },
});

/** out[i] = a[i] + alpha * b[i % nb]. */
export function add(
  gpu: Gpu,
  a: GPUBuffer,
  b: GPUBuffer,
  out: GPUBuffer,
  n: number,
  nb = n,
  alpha = 1,
): void {
  if (nb <= 0 || n % nb !== 0) throw new Error(`add: broadcast length ${nb} does not divide ${n}`);
  gpu.run(addKernel, { buffers: [a, b, out], params: { n, nb, alpha }, grid: gpu.grid(n, WG) });
}

export const fillKernel = elementwise.kernel({
  name: 'elementwise.fill',
  entry: 'fill',
  params: 'FillParams',
  bindings: ['out'],
  overrides: { WG },
});

/** out[offset .. offset+n) = value. The value travels as its f32 bits so NaN (test poison) fits. */
export function fill(gpu: Gpu, out: GPUBuffer, n: number, value: number, offset = 0): void {
  const bits = new Uint32Array(new Float32Array([value]).buffer)[0];
  gpu.run(fillKernel, { buffers: [out], params: { n, offset, bits }, grid: gpu.grid(n, WG) });
}

export const axpyKernel = elementwise.kernel({
  name: 'elementwise.axpy',
  entry: 'axpy',
  params: 'BinaryParams',
  bindings: ['x', 'y'],
  overrides: { WG },
});

/** y[i] += alpha * x[i % nb], in place. */
export function axpy(gpu: Gpu, x: GPUBuffer, y: GPUBuffer, n: number, alpha = 1, nb = n): void {
  if (nb <= 0 || n % nb !== 0) throw new Error(`axpy: broadcast length ${nb} does not divide ${n}`);
  gpu.run(axpyKernel, { buffers: [x, y], params: { n, nb, alpha }, grid: gpu.grid(n, WG) });
}
