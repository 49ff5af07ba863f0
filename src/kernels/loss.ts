/** Launchers for shaders/loss.wgsl (fused sigmoid + Dice, BCE with logits). */
import { defineShader, treeSum } from '../gpu/kernel.js';
import type { Gpu } from '../gpu/runtime.js';

const WG = 256;
/** Elements per thread at least, and the most chunks one reduction's finalize pass reads. */
const ITEMS = 8;
const MAX_CHUNKS = 1024;

export const loss = defineShader('loss', {
  DicePartialParams: { N: 'u32', P: 'u32', chunk: 'u32' },
  DiceFinalizeParams: { B: 'u32', P: 'u32', smoothing: 'f32' },
  DiceGradParams: { n: 'u32', N: 'u32', inv_B: 'f32' },
  ChunkParams: { n: 'u32', chunk: 'u32' },
  SumParams: { P: 'u32', scale: 'f32' },
  BceGradParams: { n: 'u32', inv_n: 'f32' },
}, {
  trees: {
    dp_sum: treeSum(['dp_r0', 'dp_r1', 'dp_r2']),
    df_sum: treeSum(['df_r0', 'df_r1', 'df_r2']),
    bp_sum: treeSum(['bp_r']),
    sf_sum: treeSum(['sf_r']),
  },
});

const k = (entry: string, params: string, bindings: string[]) =>
  loss.kernel({ name: `loss.${entry}`, entry, params, bindings, overrides: { WG } });

export const dicePartialKernel = k('dice_partial', 'DicePartialParams', ['x', 'y', 'partial']);
export const diceFinalizeKernel = k('dice_finalize', 'DiceFinalizeParams', [
  'partial',
  'stats',
  'loss',
]);
export const diceGradKernel = k('dice_grad', 'DiceGradParams', ['x', 'y', 'stats', 'gup', 'dx']);
export const bcePartialKernel = k('bce_partial', 'ChunkParams', ['x', 'y', 'partial']);
export const sumFinalizeKernel = k('sum_finalize', 'SumParams', ['partial', 'out']);
export const bceGradKernel = k('bce_grad', 'BceGradParams', ['x', 'y', 'gup', 'dx']);

/** Chunk length (a multiple of WG) so that n elements make at most MAX_CHUNKS chunks. */
function chunking(n: number): { chunk: number; P: number } {
  const chunk = Math.ceil(Math.max(WG * ITEMS, Math.ceil(n / MAX_CHUNKS)) / WG) * WG;
  return { chunk, P: Math.ceil(n / chunk) };
}

/**
 * Dice over sigmoid(x) per sample of [B, N]: writes stats [B, 2] = (num, den) and
 * loss [1] = mean_b (1 - num/den), num = 2*sum(p*y) + smooth, den = sum(p) + sum(y) + smooth.
 */
export function diceForward(
  gpu: Gpu,
  x: GPUBuffer,
  y: GPUBuffer,
  stats: GPUBuffer,
  lossOut: GPUBuffer,
  B: number,
  N: number,
  smooth: number,
): void {
  const maxG = gpu.limits.maxComputeWorkgroupsPerDimension;
  if (B > maxG) throw new Error(`diceLoss: batch ${B} exceeds ${maxG} workgroups`);
  const { chunk, P } = chunking(N);
  const partial = gpu.alloc(B * P * 3 * 4, 'dice.partial');
  gpu.run(dicePartialKernel, { buffers: [x, y, partial], params: { N, P, chunk }, grid: [P, B] });
  gpu.run(diceFinalizeKernel, {
    buffers: [partial, stats, lossOut],
    params: { B, P, smoothing: smooth },
    grid: [1],
  });
  // Reused only after the recorded work is submitted (see BufferPool.release).
  gpu.free(partial);
}

/** dx = gup[0] * dDice/dx, from the forward's stats; gup is a [1] GPU buffer (no readback). */
export function diceBackward(
  gpu: Gpu,
  x: GPUBuffer,
  y: GPUBuffer,
  stats: GPUBuffer,
  gup: GPUBuffer,
  dx: GPUBuffer,
  B: number,
  N: number,
): void {
  const n = B * N;
  gpu.run(diceGradKernel, {
    buffers: [x, y, stats, gup, dx],
    params: { n, N, inv_B: 1 / B },
    grid: gpu.grid(n, WG),
  });
}

/** loss [1] = mean over n of max(x,0) - x*y + log(1 + exp(-|x|)). */
export function bceForward(gpu: Gpu, x: GPUBuffer, y: GPUBuffer, lossOut: GPUBuffer, n: number) {
  const { chunk, P } = chunking(n);
  const partial = gpu.alloc(P * 4, 'bce.partial');
  gpu.run(bcePartialKernel, { buffers: [x, y, partial], params: { n, chunk }, grid: [P] });
  gpu.run(sumFinalizeKernel, {
    buffers: [partial, lossOut],
    params: { P, scale: 1 / n },
    grid: [1],
  });
  gpu.free(partial);
}

/** dx = gup[0] * (sigmoid(x) - y) / n. */
export function bceBackward(
  gpu: Gpu,
  x: GPUBuffer,
  y: GPUBuffer,
  gup: GPUBuffer,
  dx: GPUBuffer,
  n: number,
): void {
  gpu.run(bceGradKernel, {
    buffers: [x, y, gup, dx],
    params: { n, inv_n: 1 / n },
    grid: gpu.grid(n, WG),
  });
}
