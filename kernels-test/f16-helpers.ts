/**
 * Shared by the f16 kernel tests: adapter support (tests skip with a printed reason without it)
 * and tolerances derived from f16 rounding.
 */
import type { Engine, Tensor } from '../src/autograd/tensor.js';
import { getGpu } from '../src/gpu/runtime.js';
import { bceForward } from '../src/kernels/loss.js';
import { F16_EPS } from '../src/util/f16.js';
import type { Tol } from './helpers.js';

let supported: boolean | null = null;

/** Whether the adapter offers shader-f16; says so on the log when it does not. */
export async function f16Supported(): Promise<boolean> {
  if (supported === null) {
    const gpu = await getGpu();
    supported = gpu.features.has('shader-f16');
    if (!supported) {
      console.warn(`SKIP f16 kernel tests: adapter '${gpu.info.description}' lacks 'shader-f16'`);
    }
  }
  return supported;
}

/** Calls a kernel family with no f16 variant (the loss) on an f16 buffer: must throw. */
export function lossKernelsRefuseF16(e: Engine, x: Tensor): void {
  const out = e.empty([1]);
  try {
    bceForward(e.gpu, x.buffer, x.buffer, out.buffer, x.size);
  } finally {
    out.dispose();
  }
}

/** u = 2^-11, the unit roundoff of f16. */
export const U16 = F16_EPS;

/**
 * One f16 rounding of an f32-computed value: |err| <= u·|want| (+ the f32 computation's own
 * ~1e-6 relative, and 2^-25 absolute where the result is subnormal in f16: ≤ 1e-7·max|want|
 * for outputs of unit scale).
 */
export const ONE_ROUNDING_F16: Tol = { rtol: U16 + 1e-6, atol: 1e-7 };

/**
 * A sum of L f16-rounded products accumulated in f32 whose result is rounded to f16 once: the
 * inputs are already f16 in the reference, so only the f32 accumulation (~L·2^-24 relative of
 * the sum of |terms|, bounded by sqrt(L) of max|want| for random signs, with margin) and the
 * final f16 rounding (u·|want|) remain.
 */
export function sumTolF16(L: number): Tol {
  return { rtol: U16 + 1e-5, atol: 1e-6 * Math.sqrt(L) + 2 ** -25 };
}
