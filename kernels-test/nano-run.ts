/**
 * Training options for the tests that run real (tiny) trainings: the `nano` model with LoRA on
 * every trunk Linear and the FPN head, on a synthetic crack set. Each test states what it varies.
 */
import type { SegmenterConfig } from '../src/model/segmenter.js';
import type { TrainOptions } from '../src/train/trainer.js';

export function nanoTrainOptions(
  data: string,
  out: string,
  over: Partial<TrainOptions> = {},
  segmenter: Partial<SegmenterConfig> & { dropout?: number } = {},
): TrainOptions {
  const { dropout = 0.05, ...seg } = segmenter;
  return {
    data: { root: data },
    out,
    segmenter: {
      model: 'nano',
      head: 'fpn',
      mode: 'lora',
      lora: { r: 4, alpha: 32, dropout, targets: ['qkv', 'proj', 'mlp', 'block_proj'] },
      seed: 5,
      ...seg,
    },
    checkpoint: null,
    size: 64,
    batch: 2,
    epochs: 100,
    lr: 2e-3,
    headLr: 1e-2,
    weightDecay: 0.01,
    warmup: 0,
    clip: 1,
    accum: 1,
    loss: 'dice',
    augment: false,
    skipBad: false,
    quiet: true,
    ...over,
  };
}
