/**
 * Segmentation heads on the FPN features. `stride16` is the reference recipe's head:
 * Conv3x3(256→128) → ReLU → Conv1x1(128→1) on the stride-16 level, bilinear ×16 to the input.
 * `fpn` sums all three kept levels (upsampled bilinearly to stride 4) before the same convs, then
 * ×4: finer levels help thin cracks that stride 16 blurs.
 */
import type { Engine, Tensor } from '../autograd/tensor.js';
import { relu } from '../ops/activation.js';
import { add } from '../ops/add.js';
import { interpolate } from '../ops/interpolate.js';
import { Conv2d } from '../nn/layers.js';
import { Module } from '../nn/module.js';
import type { Rng } from '../util/random.js';

export type HeadKind = 'stride16' | 'fpn';

export class SegHead extends Module {
  readonly conv1: Conv2d;
  readonly conv2: Conv2d;

  constructor(
    engine: Engine,
    readonly kind: HeadKind,
    dModel: number,
    rng: Rng,
    hidden = 128,
  ) {
    super(engine);
    this.conv1 = new Conv2d(engine, dModel, hidden, 3, rng, 1, 1);
    this.conv2 = new Conv2d(engine, hidden, 1, 1, rng);
  }

  /** FPN levels this head reads (indices after scalp, finest first). */
  get levels(): Set<number> {
    return this.kind === 'stride16' ? new Set([2]) : new Set([0, 1, 2]);
  }

  /** fpn: kept levels finest first; returns logits [B, size, size, 1]. */
  forward(fpn: (Tensor | null)[], size: number): Tensor {
    let feat: Tensor;
    if (this.kind === 'stride16') {
      feat = need(fpn[2], 2);
    } else {
      const f0 = need(fpn[0], 0);
      const [, h, w] = f0.shape;
      feat = add(
        add(f0, interpolate(need(fpn[1], 1), [h, w], 'bilinear')),
        interpolate(need(fpn[2], 2), [h, w], 'bilinear'),
      );
    }
    const logits = this.conv2.forward(relu(this.conv1.forward(feat)));
    return interpolate(logits, [size, size], 'bilinear');
  }
}

function need(t: Tensor | null, level: number): Tensor {
  if (!t) throw new Error(`SegHead: FPN level ${level} was not computed`);
  return t;
}
