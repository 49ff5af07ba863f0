/** SAM2's ImageEncoder: Hiera trunk + FPN neck, scalp dropping the coarsest level. */
import type { Engine, Tensor } from '../autograd/tensor.js';
import { Module } from '../nn/module.js';
import type { Rng } from '../util/random.js';
import { type EncoderConfig, trunkChannelList } from './config.js';
import { Hiera } from './hiera.js';
import { FpnNeck } from './neck.js';

export interface EncoderOutput {
  /** Trunk stage outputs, finest first, [B, h, w, C_i]. */
  trunk: Tensor[];
  /** FPN levels after scalp, finest first (strides 4, 8, 16), null where not computed. */
  fpn: (Tensor | null)[];
}

export class ImageEncoder extends Module {
  readonly trunk: Hiera;
  readonly neck: FpnNeck;

  constructor(
    engine: Engine,
    readonly cfg: EncoderConfig,
    rng: Rng,
  ) {
    super(engine);
    const channels = trunkChannelList(cfg.trunk);
    if (channels.join() !== cfg.neck.backboneChannelList.join()) {
      throw new Error(`ImageEncoder: trunk channels ${channels} do not match neck ` +
        `${cfg.neck.backboneChannelList}`);
    }
    this.trunk = new Hiera(engine, cfg.trunk, rng);
    this.neck = new FpnNeck(engine, cfg.neck, rng);
  }

  /** x: [B, S, S, 3] normalised image; `levels`: FPN levels (after scalp) to compute. */
  forward(x: Tensor, levels?: Set<number>): EncoderOutput {
    const trunk = this.trunk.forward(x);
    const fpn = this.neck.forward(trunk, levels).slice(0, trunk.length - this.cfg.scalp);
    return { trunk, fpn };
  }
}
