/** SAM2's ImageEncoder: Hiera trunk + FPN neck, scalp dropping the coarsest level. */
import type { Engine, Tensor } from '../autograd/tensor.js';
import { Conv2d, Linear } from '../nn/layers.js';
import { Module } from '../nn/module.js';
import { cast } from '../ops/cast.js';
import type { Rng } from '../util/random.js';
import { type EncoderConfig, trunkChannelList } from './config.js';
import { Hiera } from './hiera.js';
import { FpnNeck } from './neck.js';
import type { Precision } from './precision.js';

export interface EncoderOutput {
  /** Trunk stage outputs, finest first, [B, h, w, C_i]. */
  trunk: Tensor[];
  /** FPN levels after scalp, finest first (strides 4, 8, 16), null where not computed. */
  fpn: (Tensor | null)[];
}

export class ImageEncoder extends Module {
  readonly trunk: Hiera;
  readonly neck: FpnNeck;
  /** f16: the trunk and neck run on f16 activations; the FPN outputs are cast back to f32. */
  precision: Precision = 'f32';

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
    const f16 = this.precision === 'f16';
    // An f16 patch-embedding weight reads the f32 image as it is and outputs f16; a trainable
    // (f32) one needs the image in f16 to start the f16 activations. Every op after it keeps
    // the dtype of its activation input.
    const f32Embed = this.trunk.patch_embed.proj.weight.dtype === 'f32';
    const trunk = this.trunk.forward(f16 && f32Embed ? cast(x, 'f16') : x);
    const fpn = this.neck.forward(trunk, levels).slice(0, trunk.length - this.cfg.scalp);
    // The head, the loss and everything trained after the neck see f32.
    return { trunk, fpn: f16 ? fpn.map((t) => (t ? cast(t, 'f32') : t)) : fpn };
  }

  /**
   * Sets the precision. f16 stores the weights and biases of the trunk's and neck's Linear and
   * Conv2d layers as f16, in place: `frozen` ones only when training (trainable weights stay
   * f32 masters, which the f16 kernels read as they are), all of them for inference. LoRA A/B,
   * LayerNorm parameters and the position embeddings stay f32 (their kernels read f32). Load
   * every weight first: the conversion is one-way.
   */
  setPrecision(precision: Precision, which: 'frozen' | 'all-but-lora'): void {
    if (precision === 'f32') {
      const f16 = this.namedParameters().filter(([, t]) => t.dtype !== 'f32').map(([n]) => n);
      if (f16.length) throw new Error(`ImageEncoder: ${f16.length} weights are f16 already (${f16[0]}, ...)`);
      this.precision = precision;
      return;
    }
    this.precision = precision;
    for (const [, m] of this.namedModules()) {
      if (!(m instanceof Linear) && !(m instanceof Conv2d)) continue;
      for (const t of [m.weight, m.bias]) {
        if (!t || (which === 'frozen' && t.requiresGrad)) continue;
        t.convert('f16');
      }
    }
  }
}
