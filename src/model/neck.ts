/** SAM2's FpnNeck (sam2/modeling/backbones/image_encoder.py), channels-last. */
import type { Engine, Tensor } from '../autograd/tensor.js';
import { add } from '../ops/add.js';
import { interpolate } from '../ops/interpolate.js';
import { Conv2d } from '../nn/layers.js';
import { Module } from '../nn/module.js';
import type { Rng } from '../util/random.js';
import type { FpnNeckConfig } from './config.js';

/** `neck.convs.N` is an nn.Sequential holding `conv`. */
export class LateralConv extends Module {
  readonly conv: Conv2d;
  constructor(engine: Engine, cin: number, cout: number, rng: Rng) {
    super(engine);
    this.conv = new Conv2d(engine, cin, cout, 1, rng);
  }
}

export class FpnNeck extends Module {
  readonly convs: LateralConv[];

  constructor(
    engine: Engine,
    readonly cfg: FpnNeckConfig,
    rng: Rng,
  ) {
    super(engine);
    // convs[0] serves the coarsest trunk level (backbone_channel_list is coarsest first).
    this.convs = cfg.backboneChannelList.map((c) => new LateralConv(engine, c, cfg.dModel, rng));
  }

  /**
   * xs: trunk outputs finest first. Returns one [B, h_i, w_i, d_model] map per level (finest
   * first); levels not in `wanted` (and not needed to build a wanted one) are null. Top-down
   * (nearest ×2, summed) only into the levels of fpnTopDownLevels, as SAM2.
   */
  forward(xs: Tensor[], wanted?: Set<number>): (Tensor | null)[] {
    const n = this.convs.length - 1;
    if (xs.length !== n + 1) throw new Error(`FpnNeck: expected ${n + 1} levels, got ${xs.length}`);
    const out: (Tensor | null)[] = new Array(n + 1).fill(null);
    // A level is needed if wanted, or if a wanted level takes top-down features from it.
    const needed = new Array(n + 1).fill(false);
    for (let i = 0; i <= n; i++) needed[i] = !wanted || wanted.has(i);
    for (let i = 0; i < n; i++) {
      if (needed[i] && this.cfg.fpnTopDownLevels.includes(i)) {
        for (let j = i + 1; j <= n && this.cfg.fpnTopDownLevels.includes(j - 1); j++) {
          needed[j] = true;
        }
      }
    }
    let prev: Tensor | null = null;
    for (let i = n; i >= 0; i--) {
      if (!needed[i]) {
        prev = null;
        continue;
      }
      const lateral = this.convs[n - i].conv.forward(xs[i]);
      if (this.cfg.fpnTopDownLevels.includes(i) && prev) {
        const [, h, w] = lateral.shape;
        prev = add(lateral, interpolate(prev, [h, w], 'nearest'));
      } else {
        prev = lateral;
      }
      out[i] = prev;
    }
    return out;
  }
}
