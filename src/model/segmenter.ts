/**
 * The fine-tuned model: SAM2 image encoder (+ optional LoRA adapters on its trunk linears) and a
 * segmentation head. Parameter names are `image_encoder.<SAM2 key>` and `head.<...>`, LoRA keys
 * sit beside their base layer as `<layer>.lora_A.weight` / `.lora_B.weight` (PEFT's names).
 */
import type { Engine, Tensor } from '../autograd/tensor.js';
import type { Linear, LoraOptions } from '../nn/layers.js';
import { Module } from '../nn/module.js';
import { Rng } from '../util/random.js';
import { type ModelSize, encoderConfig } from './config.js';
import { ImageEncoder } from './encoder.js';
import { type HeadKind, SegHead } from './head.js';
import type { Precision } from './precision.js';

export type TrainMode = 'head' | 'lora' | 'full';
/** qkv, attention proj, MLP layers, stage-transition proj: every Linear of the trunk. */
export type LoraTarget = 'qkv' | 'proj' | 'mlp' | 'block_proj';
export const ALL_LORA_TARGETS: LoraTarget[] = ['qkv', 'proj', 'mlp', 'block_proj'];

export interface SegmenterConfig {
  model: ModelSize;
  head: HeadKind;
  mode: TrainMode;
  lora: LoraOptions & { targets: LoraTarget[] };
  seed: number;
}

export const DEFAULT_LORA = { r: 4, alpha: 32, dropout: 0.05, targets: ALL_LORA_TARGETS };

export class Segmenter extends Module {
  readonly image_encoder: ImageEncoder;
  readonly head: SegHead;

  constructor(
    engine: Engine,
    readonly config: SegmenterConfig,
  ) {
    super(engine);
    const rng = new Rng(config.seed);
    const enc = encoderConfig(config.model);
    this.image_encoder = new ImageEncoder(engine, enc, rng);
    this.head = new SegHead(engine, config.head, enc.neck.dModel, rng);
    this.image_encoder.requiresGrad(config.mode === 'full');
    // Its bicubic resize has no backward; SAM2 fine-tunes keep it frozen too.
    this.image_encoder.trunk.pos_embed.requiresGrad = false;
    if (config.mode === 'lora') {
      const loraRng = new Rng(config.seed ^ 0x5eed1a7a);
      for (const layer of this.loraLayers(config.lora.targets)) {
        layer.addLora(config.lora, loraRng);
      }
    }
  }

  /** The trunk's Linear layers selected by `targets`, with their dotted names. */
  loraLayers(targets: LoraTarget[]): Linear[] {
    const out: Linear[] = [];
    for (const blk of this.image_encoder.trunk.blocks) {
      if (targets.includes('qkv')) out.push(blk.attn.qkv);
      if (targets.includes('proj')) out.push(blk.attn.proj);
      if (targets.includes('mlp')) out.push(...blk.mlp.layers);
      if (targets.includes('block_proj') && blk.proj) out.push(blk.proj);
    }
    return out;
  }

  /** Gives every LoRA layer a fresh dropout seed (call once per training step). */
  reseedDropout(rng: Rng): void {
    for (const layer of this.loraLayers(ALL_LORA_TARGETS)) layer.dropoutSeed = rng.seed();
  }

  /** x: [B, S, S, 3] normalised image → logits [B, S, S, 1]. */
  forward(x: Tensor): Tensor {
    const size = x.shape[1];
    if (x.shape[2] !== size || size % 32 !== 0) {
      throw new Error(`Segmenter: input must be square with a side that is a multiple of 32, ` +
        `got ${x.shape[1]}x${x.shape[2]}`);
    }
    const { fpn } = this.image_encoder.forward(x, this.head.levels);
    return this.head.forward(fpn, size);
  }

  /** The encoder's precision (see precision.ts); head, LoRA and loss stay f32. */
  get precision(): Precision {
    return this.image_encoder.precision;
  }

  /**
   * Runs the encoder in `precision`. f16 stores the encoder's Linear and Conv2d weights as f16:
   * those this mode does not train (`training`), or all of them (inference); LoRA A/B, layer
   * norms, position embeddings and the head stay f32. Call after all weights are loaded (base
   * checkpoint, then adapter).
   */
  setPrecision(precision: Precision, training: boolean): void {
    this.image_encoder.setPrecision(precision, training ? 'frozen' : 'all-but-lora');
  }

  /** Names of the parameters an adapter file holds: what this mode trains. */
  adapterKeys(): string[] {
    return this.trainable().map(([n]) => n);
  }
}
