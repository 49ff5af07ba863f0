/** Launchers for shaders/elementwise.wgsl. */
import { defineShader } from '../gpu/kernel.js';
import type { Gpu } from '../gpu/runtime.js';

const WG = 256;

export const elementwise = defineShader('elementwise', {
  BinaryParams: { n: 'u32', nb: 'u32', alpha: 'f32' },
  FillParams: { n: 'u32', offset: 'u32', bits: 'u32' },
  AffineParams: { n: 'u32', s: 'f32', c: 'f32' },
  UnaryParams: { n: 'u32' },
});

export const addKernel = elementwise.kernel({
  name: 'elementwise.add',
  entry: 'add',
  params: 'BinaryParams',
  bindings: ['a', 'b', 'out'],
  overrides: { WG },
  types: { a: 'dt_a', b: 'dt_b', out: 'dt_out' },
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
  types: { out: 'dt_out' },
});

/** out[offset .. offset+n) = value. The value travels as its f32 bits so NaN (test poison) fits. */
export function fill(gpu: Gpu, out: GPUBuffer, n: number, value: number, offset = 0): void {
  const bits = new Uint32Array(new Float32Array([value]).buffer)[0];
  gpu.run(fillKernel, { buffers: [out], params: { n, offset, bits }, grid: gpu.grid(n, WG) });
}

export const castKernel = elementwise.kernel({
  name: 'elementwise.cast',
  entry: 'convert',
  params: 'UnaryParams',
  bindings: ['x', 'out'],
  overrides: { WG },
  types: { x: 'dt_a', out: 'dt_out' },
});

/** out[i] = x[i] converted to out's element type (the buffers' dtypes pick the variant). */
export function cast(gpu: Gpu, x: GPUBuffer, out: GPUBuffer, n: number): void {
  gpu.run(castKernel, { buffers: [x, out], params: { n }, grid: gpu.grid(n, WG) });
}

export const axpyKernel = elementwise.kernel({
  name: 'elementwise.axpy',
  entry: 'axpy',
  params: 'BinaryParams',
  bindings: ['x', 'y'],
  overrides: { WG },
  types: { x: 'dt_a', y: 'dt_out' },
});

/** y[i] += alpha * x[i % nb], in place. */
export function axpy(gpu: Gpu, x: GPUBuffer, y: GPUBuffer, n: number, alpha = 1, nb = n): void {
  if (nb <= 0 || n % nb !== 0) throw new Error(`axpy: broadcast length ${nb} does not divide ${n}`);
  gpu.run(axpyKernel, { buffers: [x, y], params: { n, nb, alpha }, grid: gpu.grid(n, WG) });
}

function checkBroadcast(name: string, n: number, nb: number): void {
  if (nb <= 0 || n % nb !== 0) {
    throw new Error(`${name}: broadcast length ${nb} does not divide ${n}`);
  }
}

export const mulKernel = elementwise.kernel({
  name: 'elementwise.mul',
  entry: 'mul',
  params: 'BinaryParams',
  bindings: ['a', 'b', 'out'],
  overrides: { WG },
  types: { a: 'dt_a', b: 'dt_b', out: 'dt_out' },
});

/** out[i] = alpha * a[i] * b[i % nb]. */
export function mul(
  gpu: Gpu,
  a: GPUBuffer,
  b: GPUBuffer,
  out: GPUBuffer,
  n: number,
  nb = n,
  alpha = 1,
): void {
  checkBroadcast('mul', n, nb);
  gpu.run(mulKernel, { buffers: [a, b, out], params: { n, nb, alpha }, grid: gpu.grid(n, WG) });
}

export const tileKernel = elementwise.kernel({
  name: 'elementwise.tile',
  entry: 'tile',
  params: 'BinaryParams',
  bindings: ['x', 'out'],
  overrides: { WG },
  types: { x: 'dt_a', out: 'dt_out' },
});

/** out[i] = alpha * x[i % nb] for i < n (repeats x, e.g. to broadcast a reduced gradient). */
export function tile(
  gpu: Gpu,
  x: GPUBuffer,
  out: GPUBuffer,
  n: number,
  nb: number,
  alpha = 1,
): void {
  checkBroadcast('tile', n, nb);
  gpu.run(tileKernel, { buffers: [x, out], params: { n, nb, alpha }, grid: gpu.grid(n, WG) });
}

export const affineKernel = elementwise.kernel({
  name: 'elementwise.affine',
  entry: 'affine',
  params: 'AffineParams',
  bindings: ['x', 'out'],
  overrides: { WG },
  types: { x: 'dt_a', out: 'dt_out' },
});

/** out[i] = s * x[i] + c. */
export function affine(gpu: Gpu, x: GPUBuffer, out: GPUBuffer, n: number, s: number, c = 0): void {
  gpu.run(affineKernel, { buffers: [x, out], params: { n, s, c }, grid: gpu.grid(n, WG) });
}

/**
 * Op codes of the `unary` / `unary_grad` entries (must match shaders/elementwise.wgsl), passed
 * as the OP pipeline constant: one pipeline per op, with only that op's code.
 */
export const UNARY = { relu: 0, gelu: 1, sigmoid: 2, erf: 3 } as const;
export type UnaryOp = keyof typeof UNARY;

export const unaryKernel = elementwise.kernel({
  name: 'elementwise.unary',
  entry: 'unary',
  params: 'UnaryParams',
  bindings: ['x', 'out'],
  overrides: { WG },
  types: { x: 'dt_a', out: 'dt_out' },
});

/** out[i] = op(x[i]) (relu, exact gelu, sigmoid, erf). */
export function unary(gpu: Gpu, op: UnaryOp, x: GPUBuffer, out: GPUBuffer, n: number): void {
  gpu.run(unaryKernel, {
    buffers: [x, out],
    params: { n },
    grid: gpu.grid(n, WG),
    overrides: { OP: UNARY[op] },
  });
}

export const unaryGradKernel = elementwise.kernel({
  name: 'elementwise.unary_grad',
  entry: 'unary_grad',
  params: 'UnaryParams',
  bindings: ['x', 'g', 'out'],
  overrides: { WG },
  types: { x: 'dt_a', g: 'dt_b', out: 'dt_out' },
});

/** out[i] = g[i] * op'(x[i]): the input gradient of `unary`. */
export function unaryGrad(
  gpu: Gpu,
  op: UnaryOp,
  x: GPUBuffer,
  g: GPUBuffer,
  out: GPUBuffer,
  n: number,
): void {
  gpu.run(unaryGradKernel, {
    buffers: [x, g, out],
    params: { n },
    grid: gpu.grid(n, WG),
    overrides: { OP: UNARY[op] },
  });
}
