/** Layers with PyTorch parameter names and layouts. */
import { type Engine, type Tensor, mixedDtype } from '../autograd/tensor.js';
import { add } from '../ops/add.js';
import { conv2d } from '../ops/conv2d.js';
import { layerNorm } from '../ops/layer-norm.js';
import {
  type GeluOut, type LinearInput, linear, linearGelu, linearSource,
} from '../ops/linear.js';
import { type LoraOpts, loraLinear, loraLinearGelu } from '../ops/lora-linear.js';
import { Rng } from '../util/random.js';
import { Module } from './module.js';

/** Holds one weight, so LoRA keys read `<layer>.lora_A.weight` as in PEFT. */
export class WeightOnly extends Module {
  constructor(
    engine: Engine,
    readonly weight: Tensor,
  ) {
    super(engine);
  }
}

export interface LoraOptions {
  r: number;
  alpha: number;
  dropout: number;
}

/**
 * nn.Linear (weight [out, in], bias [out]), optionally with a LoRA adapter:
 * y = x·Wᵀ + b + (alpha/r)·(dropout(x)·Aᵀ)·Bᵀ.
 */
export class Linear extends Module {
  readonly weight: Tensor;
  readonly bias: Tensor | null;
  lora_A: WeightOnly | null = null;
  lora_B: WeightOnly | null = null;
  private loraScale = 0;
  private loraDropout = 0;
  /** Seed of this layer's dropout mask for the next forward (set per step by the model). */
  dropoutSeed = 0;

  constructor(
    engine: Engine,
    readonly inFeatures: number,
    readonly outFeatures: number,
    rng: Rng,
    bias = true,
  ) {
    super(engine);
    // PyTorch's default: kaiming_uniform(a=sqrt(5)) => U(-1/sqrt(in), 1/sqrt(in)), same for bias.
    const bound = 1 / Math.sqrt(inFeatures);
    this.weight = engine.parameter(rng.fillUniform(outFeatures * inFeatures, bound), [
      outFeatures,
      inFeatures,
    ]);
    this.bias = bias ? engine.parameter(rng.fillUniform(outFeatures, bound), [outFeatures]) : null;
  }

  /** Adds a LoRA adapter: A Kaiming-uniform (as PEFT), B zero, so the layer starts unchanged. */
  addLora(opts: LoraOptions, rng: Rng): void {
    const bound = 1 / Math.sqrt(this.inFeatures);
    const e = this.engine;
    this.lora_A = new WeightOnly(
      e,
      e.parameter(rng.fillUniform(opts.r * this.inFeatures, bound), [opts.r, this.inFeatures]),
    );
    this.lora_B = new WeightOnly(
      e,
      e.parameter(new Float32Array(this.outFeatures * opts.r), [this.outFeatures, opts.r]),
    );
    this.loraScale = opts.alpha / opts.r;
    this.loraDropout = opts.dropout;
  }

  /**
   * y = layer(x) (+ residual, added in the product's epilogue; by a separate add, as
   * `add(residual, y)`, when the residual's dtype is not y's).
   */
  forward(x: LinearInput, residual: Tensor | null = null): Tensor {
    if (residual && residual.dtype !== mixedDtype(linearSource(x).src, this.weight)) {
      return add(residual, this.forward(x));
    }
    if (!this.lora_A || !this.lora_B) return linear(x, this.weight, this.bias, residual);
    return loraLinear(
      x, this.weight, this.bias, this.lora_A.weight, this.lora_B.weight, this.loraOpts(), residual,
    );
  }

  /** gelu(layer(x)), GELU in the product's epilogue; feed it to the next layer's forward. */
  forwardGelu(x: LinearInput): GeluOut {
    if (!this.lora_A || !this.lora_B) return linearGelu(x, this.weight, this.bias);
    return loraLinearGelu(
      x, this.weight, this.bias, this.lora_A.weight, this.lora_B.weight, this.loraOpts(),
    );
  }

  private loraOpts(): LoraOpts {
    return {
      scale: this.loraScale,
      dropout: this.loraDropout,
      seed: this.dropoutSeed,
      training: this.isTraining,
    };
  }
}

/** nn.LayerNorm over the last dim. */
export class LayerNorm extends Module {
  readonly weight: Tensor;
  readonly bias: Tensor;

  constructor(
    engine: Engine,
    dim: number,
    readonly eps = 1e-6,
  ) {
    super(engine);
    this.weight = engine.parameter(new Float32Array(dim).fill(1), [dim]);
    this.bias = engine.parameter(new Float32Array(dim), [dim]);
  }

  forward(x: Tensor): Tensor {
    return layerNorm(x, this.weight, this.bias, this.eps);
  }
}

/** nn.Conv2d on channels-last activations; weight [Cout, Cin, kh, kw] as PyTorch. */
export class Conv2d extends Module {
  readonly weight: Tensor;
  readonly bias: Tensor | null;

  constructor(
    engine: Engine,
    cin: number,
    cout: number,
    readonly kernel: number,
    rng: Rng,
    readonly stride = 1,
    readonly padding = 0,
    bias = true,
  ) {
    super(engine);
    const fanIn = cin * kernel * kernel;
    const bound = 1 / Math.sqrt(fanIn);
    this.weight = engine.parameter(rng.fillUniform(cout * fanIn, bound), [
      cout,
      cin,
      kernel,
      kernel,
    ]);
    this.bias = bias ? engine.parameter(rng.fillUniform(cout, bound), [cout]) : null;
  }

  forward(x: Tensor): Tensor {
    return conv2d(x, this.weight, this.bias, { stride: this.stride, padding: this.padding });
  }
}

/**
 * SAM2's MLP: Linear → GELU → Linear, parameters under `layers.0`, `layers.1`. GELU runs in the
 * products' epilogues (forward in the first, its gradient in the second's input gradient).
 */
export class MLP extends Module {
  readonly layers: Linear[];

  constructor(engine: Engine, dim: number, hidden: number, out: number, rng: Rng) {
    super(engine);
    this.layers = [new Linear(engine, dim, hidden, rng), new Linear(engine, hidden, out, rng)];
  }

  /** mlp(x) (+ residual, added by the last product: a block's skip connection). */
  forward(x: Tensor, residual: Tensor | null = null): Tensor {
    return this.layers[1].forward(this.layers[0].forwardGelu(x), residual);
  }
}
