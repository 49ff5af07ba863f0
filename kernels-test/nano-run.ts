/**
 * Training options for the tests that run real (tiny) trainings: the `nano` model with LoRA on
 * every trunk Linear and the FPN head, on a synthetic crack set. Each test states what it varies.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll } from 'vitest';
import { type SyntheticOptions, writeSyntheticDataset } from '../src/data/synthetic.js';
import { closeGpu } from '../src/gpu/runtime.js';
import type { SegmenterConfig } from '../src/model/segmenter.js';
import type { TrainOptions } from '../src/train/trainer.js';

/**
 * A temp dir `dir` (named `sam2-lora-<name>-*`) holding a synthetic crack set in `dir/data`, made
 * before the calling file's tests; after them the file's GPU is closed and the dir removed. Call at
 * a test file's top level. The paths are fixed at once (so they can be destructured); the dir is
 * created, exclusively as by mkdtemp, only when the tests start.
 */
export function syntheticRunDir(name: string, set: SyntheticOptions): { dir: string; data: string } {
  const dir = join(tmpdir(), `sam2-lora-${name}-${randomBytes(6).toString('hex')}`);
  const data = join(dir, 'data');
  beforeAll(async () => {
    mkdirSync(dir, { mode: 0o700 });
    await writeSyntheticDataset(data, set);
  });
  afterAll(async () => {
    await closeGpu();
    await rm(dir, { recursive: true, force: true });
  });
  return { dir, data };
}

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
