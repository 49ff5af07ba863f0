/**
 * Per-dispatch floor: GPU time per dispatch of every kernel a training step uses, at shapes so
 * small that the work itself costs ~0.1 ms. A kernel well above that is paying a fixed cost per
 * dispatch; on lavapipe that is the driver recompiling the shader because a loop bound or branch
 * condition comes straight from the uniforms (see `sl_bound` in the WGSL prelude and
 * bench/README.md), which the end-to-end rows would hide inside their totals.
 */
import type { Engine, Tensor } from '#src/autograd/tensor.js';
import type { Gpu } from '#src/gpu/runtime.js';
import { gelu } from '#src/ops/activation.js';
import { add } from '#src/ops/add.js';
import { attentionQkv } from '#src/ops/attention.js';
import { conv2d } from '#src/ops/conv2d.js';
import { interpolate } from '#src/ops/interpolate.js';
import { layerNorm } from '#src/ops/layer-norm.js';
import { linear } from '#src/ops/linear.js';
import { diceLoss } from '#src/ops/loss.js';
import { maxPool2d } from '#src/ops/pool.js';
import { windowPartition, windowUnpartition } from '#src/ops/window.js';
import { AdamW } from '#src/train/optim.js';

export interface OverheadRow {
  /** Kernel name (`family.entry`). */
  name: string;
  /** Fastest round's GPU ms per dispatch of this kernel. */
  msPerDispatch: number;
  /** Dispatches of this kernel per round. */
  dispatches: number;
}

/** A kernel above this many ms per dispatch at these shapes is flagged in the report. */
export const OVERHEAD_FLAG_MS = 0.3;

function wave(n: number, k: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = Math.sin(i * k);
  return a;
}

/**
 * Forward and backward of each op at tiny shapes, twice per round with two shapes (so uniforms
 * change between dispatches of one pipeline), `rounds` profiled rounds after a warm-up; per
 * kernel the fastest round. Needs timestamp queries (returns [] without them).
 */
export async function runOverhead(gpu: Gpu, e: Engine, rounds = 3): Promise<OverheadRow[]> {
  if (!gpu.features.has('timestamp-query')) return [];
  const p = (shape: number[], k: number) =>
    e.parameter(wave(shape.reduce((a, b) => a * b, 1), k), shape);
  const qkv = [p([1, 8, 288], 0.37), p([2, 16, 288], 0.41)];
  const img = [p([1, 6, 6, 8], 0.29), p([1, 8, 8, 8], 0.31)];
  const rgb = p([1, 9, 9, 3], 0.23);
  const w3 = p([8, 3, 3, 3], 0.19);
  const feat = p([1, 2, 2, 16], 0.17);
  const w1 = p([1, 16, 1, 1], 0.13);
  const rows = [p([4, 16], 0.11), p([6, 16], 0.07)];
  const gamma = p([16], 0.05);
  const beta = p([16], 0.03);
  const wl = p([12, 16], 0.02);
  const params = [...qkv, ...img, rgb, w3, feat, w1, ...rows, gamma, beta, wl];
  const optim = new AdamW([{ params, lr: 1e-3, weightDecay: 0.01 }]);
  const ops: (() => Tensor)[] = [0, 1].flatMap((i) => [
    () => attentionQkv(qkv[i], 1),
    () => maxPool2d(img[i], 2),
    () => windowUnpartition(windowPartition(img[i], 4), 4, [img[i].shape[1], img[i].shape[2]]),
    () => interpolate(img[i], [16, 16], 'bilinear'),
    () => layerNorm(rows[i], gamma, beta),
    () => gelu(add(rows[i], beta)),
    () => linear(rows[i], wl, null),
  ]);
  // CPU adapters: im2col/col2im + matmul; cout 1 keeps the implicit conv kernels in use too.
  ops.push(() => conv2d(rgb, w3, null, { stride: 1, padding: 1 }), () => conv2d(feat, w1, null));
  const round = () => {
    for (const op of ops) {
      const loss = e.scope(() => {
        const y = op();
        return diceLoss(y, e.zeros(y.shape));
      });
      e.backward(loss);
      loss.release();
    }
    optim.step();
    optim.zeroGrad();
  };
  const best = new Map<string, OverheadRow>();
  try {
    round();
    await gpu.sync();
    for (let r = 0; r < rounds; r++) {
      gpu.profile = true;
      try {
        round();
      } finally {
        gpu.profile = false;
      }
      await gpu.sync();
      for (const [name, k] of gpu.timings) {
        const ms = k.totalNs / 1e6 / k.count;
        const prev = best.get(name);
        if (!prev || ms < prev.msPerDispatch) best.set(name, { name, msPerDispatch: ms, dispatches: k.count });
      }
      gpu.timings.clear();
    }
  } finally {
    optim.dispose();
    for (const t of params) t.dispose();
    await gpu.sync();
  }
  return [...best.values()].sort((a, b) => b.msPerDispatch - a.msPerDispatch);
}
