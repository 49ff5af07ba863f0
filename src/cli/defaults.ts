/**
 * The CLI's defaults, in one place: the commands use them and `bin/sam2-lora.js` builds its help
 * text from them, so what `--help` says is what runs. Constants only (no imports): the CLI loads
 * this module eagerly, before any command, and must start fast.
 */

/** WebGPU backends Dawn accepts for `--backend` (env SAM2_LORA_BACKEND). */
export const GPU_BACKENDS = ['vulkan', 'metal', 'd3d12', 'd3d11', 'opengl', 'opengles', 'null'] as const;

/** Encoder sizes `--model` accepts; `nano` is a miniature of tiny's structure (tests, demo). */
export const MODEL_SIZES = ['tiny', 'small', 'base_plus', 'large', 'nano'] as const;
export const TRAIN_MODES = ['head', 'lora', 'full'] as const;
export const HEAD_KINDS = ['stride16', 'fpn'] as const;
export const LOSSES = ['dice', 'bce', 'bce+dice'] as const;
/** `--precision`: f16 mixed precision or f32; absent, f16 where the adapter offers shader-f16. */
export const PRECISIONS = ['f16', 'f32'] as const;

/** Split names shared by `train` and `eval` (`--train-split`, `--val-split`, `--test-split`). */
export const SPLITS = { train: 'train', val: 'val', test: 'test' } as const;

/** `train` on real data (the reference recipe). */
export const TRAIN_DEFAULTS = {
  model: 'tiny',
  mode: 'lora',
  head: 'stride16',
  size: 512,
  batch: 4,
  epochs: 10,
  lr: 1e-4,
  headLr: 1e-3,
  weightDecay: 0.01,
  warmup: 0,
  clip: 1.0,
  accum: 1,
  loss: 'dice',
  loraR: 4,
  loraAlpha: 32,
  loraDropout: 0.05,
  loraTargets: 'qkv,proj,mlp,block_proj',
  seed: 0,
  maxBadSteps: 3,
} as const;

/**
 * `train` without --data and without SAM2 weights (`npm run train`): the `nano` encoder from
 * random weights on synthetic cracks wide and dark enough to learn in about two minutes on two
 * CPU cores. Measured on lavapipe: test Dice about 0.8 after 120 steps (README, "Quick start").
 */
export const DEMO_DEFAULTS = {
  model: 'nano',
  head: 'fpn',
  size: 64,
  batch: 2,
  /** A cap only: the demo stops at maxSteps. */
  epochs: 100,
  maxSteps: 120,
  /** Far above the reference recipe's rates: a random encoder, few steps. */
  lr: 4e-3,
  headLr: 2e-2,
  /** BCE gives every pixel a gradient from the first step; Dice alone starts slowly. */
  loss: 'bce+dice',
  /** Too few steps to learn through flips, rotations and crops. */
  augment: false,
  /**
   * Photo pixels per tile when predicting data/sample/crack_a.jpg: its 1-3 px cracks, magnified
   * to the model's 64 px, are as wide as the synthetic ones (2-5 px).
   */
  predictTile: 32,
} as const;

/** The demo when SAM2 weights are cached or given: SAM2-tiny, a finer grid, the same data. */
export const DEMO_SAM2_DEFAULTS = {
  head: 'fpn',
  size: 96,
  batch: 2,
  epochs: 100,
  maxSteps: 40,
  lr: 5e-4,
  headLr: 5e-3,
  loss: 'bce+dice',
  augment: false,
  predictTile: 48,
} as const;

/** The demo's synthetic set (see src/data/synthetic.ts): one distribution for every split. */
export const DEMO_DATA = {
  train: 48,
  val: 8,
  test: 8,
  size: 64,
  seed: 7,
  style: { width: [2, 5], dark: [0.15, 0.35], fraction: [0.03, 0.08] },
} as const;

/** `eval`. */
export const EVAL_DEFAULTS = { batch: 4, gallery: 200 } as const;

/** `predict`. */
export const PREDICT_DEFAULTS = { out: 'predictions' } as const;

/** `encode`. */
export const ENCODE_DEFAULTS = { model: 'tiny', size: 1024 } as const;
