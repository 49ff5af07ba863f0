/** Launchers for shaders/optim.wgsl (fused AdamW update, global gradient-norm clipping). */
import { defineShader } from '../gpu/kernel.js';
import type { Gpu } from '../gpu/runtime.js';

const WG = 256;
const ITEMS = 8;
/** Chunks per tensor in the norm's first pass, at most (bounds the finalize pass's work). */
const MAX_CHUNKS = 256;

export const optim = defineShader('optim', {
  AdamWParams: {
    n: 'u32',
    decay: 'f32',
    beta2: 'f32',
    one_minus_beta1: 'f32',
    one_minus_beta2: 'f32',
    step_size: 'f32',
    bc2_sqrt: 'f32',
    eps: 'f32',
  },
  SumSqParams: { n: 'u32', chunk: 'u32', first: 'u32' },
  ClipParams: { P: 'u32', max_norm: 'f32' },
  ScaleParams: { n: 'u32' },
});

export const adamwKernel = optim.kernel({
  name: 'optim.adamw',
  entry: 'adamw',
  params: 'AdamWParams',
  bindings: ['grad', 'param', 'exp_avg', 'exp_avg_sq'],
  overrides: { WG },
});

export const sumsqKernel = optim.kernel({
  name: 'optim.sumsq_partial',
  entry: 'sumsq_partial',
  params: 'SumSqParams',
  bindings: ['x', 'partial'],
  overrides: { WG },
});

export const clipFinalizeKernel = optim.kernel({
  name: 'optim.clip_finalize',
  entry: 'clip_finalize',
  params: 'ClipParams',
  bindings: ['partial', 'norm', 'coef'],
  overrides: { WG },
});

export const scaleInplaceKernel = optim.kernel({
  name: 'optim.scale_inplace',
  entry: 'scale_inplace',
  params: 'ScaleParams',
  bindings: ['coef', 'x'],
  overrides: { WG },
});

export interface AdamWStep {
  lr: number;
  weightDecay: number;
  beta1: number;
  beta2: number;
  eps: number;
  /** 1-based step count of this parameter (bias corrections). */
  step: number;
}

/** One in-place AdamW update of a parameter of n elements (torch.optim.AdamW semantics). */
export function adamwUpdate(
  gpu: Gpu,
  grad: GPUBuffer,
  param: GPUBuffer,
  expAvg: GPUBuffer,
  expAvgSq: GPUBuffer,
  n: number,
  s: AdamWStep,
): void {
  // Scalars in float64 on the CPU, as PyTorch computes them in Python floats.
  const bc1 = 1 - s.beta1 ** s.step;
  const bc2 = 1 - s.beta2 ** s.step;
  gpu.run(adamwKernel, {
    buffers: [grad, param, expAvg, expAvgSq],
    params: {
      n,
      decay: 1 - s.lr * s.weightDecay,
      beta2: s.beta2,
      // 1 - beta in float64: 1 - f32(0.999) would be off by 1.3e-5 relative.
      one_minus_beta1: 1 - s.beta1,
      one_minus_beta2: 1 - s.beta2,
      step_size: s.lr / bc1,
      bc2_sqrt: Math.sqrt(bc2),
      eps: s.eps,
    },
    grid: gpu.grid(n, WG),
  });
}

function chunking(n: number): { chunk: number; P: number } {
  const chunk = Math.ceil(Math.max(WG * ITEMS, Math.ceil(n / MAX_CHUNKS)) / WG) * WG;
  return { chunk, P: Math.ceil(n / chunk) };
}

/**
 * Global L2 norm of several buffers and PyTorch's clip coefficient, both left on the GPU:
 * norm [1] = sqrt(sum of squares), coef [1] = min(1, maxNorm / (norm + 1e-6)).
 */
export function globalNormAndCoef(
  gpu: Gpu,
  xs: { buffer: GPUBuffer; n: number }[],
  norm: GPUBuffer,
  coef: GPUBuffer,
  maxNorm: number,
): void {
  const plans = xs.map((x) => chunking(x.n));
  const total = Math.max(1, plans.reduce((a, p) => a + p.P, 0));
  const partial = gpu.alloc(total * 4, 'clip.partial');
  let first = 0;
  xs.forEach((x, i) => {
    const { chunk, P } = plans[i];
    gpu.run(sumsqKernel, {
      buffers: [x.buffer, partial],
      params: { n: x.n, chunk, first },
      grid: [P],
    });
    first += P;
  });
  gpu.run(clipFinalizeKernel, {
    buffers: [partial, norm, coef],
    params: { P: first, max_norm: maxNorm },
    grid: [1],
  });
  // Reused only after the recorded work is submitted (see BufferPool.release).
  gpu.free(partial);
}

/** x *= coef[0] in place, coef a [1] GPU buffer. */
export function scaleInPlace(gpu: Gpu, coef: GPUBuffer, x: GPUBuffer, n: number): void {
  gpu.run(scaleInplaceKernel, { buffers: [coef, x], params: { n }, grid: gpu.grid(n, WG) });
}
