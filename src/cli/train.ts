/**
 * `sam2-lora train`. Without --data it runs the embedded demo end to end on a fresh machine:
 * a synthetic crack set generated on the spot, SAM2-tiny (random weights unless a checkpoint is
 * cached or given), a short LoRA run at a small input size, then evaluation on the synthetic test
 * split and one prediction image.
 */
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { PACKAGE_ROOT } from '../gpu/dawn.js';
import { closeGpu } from '../gpu/runtime.js';
import { openDataset } from '../data/dataset.js';
import { writeSyntheticDataset } from '../data/synthetic.js';
import { resolveCheckpoint } from '../io/download.js';
import type { ModelSize } from '../model/config.js';
import type { HeadKind } from '../model/head.js';
import { ALL_LORA_TARGETS, type LoraTarget, type TrainMode } from '../model/segmenter.js';
import { predictFiles } from '../predict/predict.js';
import { formatTable, metricsJson } from '../train/metrics.js';
import { type LossKind, evaluate, train } from '../train/trainer.js';
import { UsageError, int, modelFromAdapter, num } from './common.js';

export interface TrainCliOptions {
  data?: string;
  images?: string;
  masks?: string;
  trainSplit: string;
  valSplit: string;
  testSplit: string;
  out?: string;
  model?: string;
  mode: string;
  head?: string;
  checkpoint?: string;
  size?: string;
  batch?: string;
  epochs?: string;
  maxSteps?: string;
  lr?: string;
  headLr?: string;
  weightDecay: string;
  warmup: string;
  clip: string;
  accum: string;
  microBatch?: string;
  loss: string;
  loraR: string;
  loraAlpha: string;
  loraDropout: string;
  loraTargets: string;
  seed: string;
  augment: boolean;
  skipBad?: boolean;
  resume?: string;
  valBatches?: string;
  eval: boolean;
  adapter?: string;
  backend?: string;
}

const MODELS = ['tiny', 'small', 'base_plus', 'large', 'nano'];

function choice<T extends string>(name: string, v: string, allowed: readonly string[]): T {
  if (!allowed.includes(v)) throw new UsageError(`--${name} must be one of ${allowed.join(', ')}, got ${v}`);
  return v as T;
}

export async function trainCommand(o: TrainCliOptions): Promise<void> {
  const demo = !o.data && !o.images && !o.resume;
  const out = resolve(o.out ?? (demo ? 'runs/demo' : `runs/${new Date().toISOString().replace(/[:.]/g, '-')}`));
  let dataRoot = o.data;
  let predictInput: string | null = null;
  const cached = resolveCheckpoint(((o.model ?? 'tiny') === 'nano' ? 'tiny' : o.model ?? 'tiny') as 'tiny');
  let checkpoint = o.checkpoint ?? (o.model === 'nano' ? null : cached) ?? null;
  if (o.checkpoint && !existsSync(o.checkpoint)) throw new UsageError(`${o.checkpoint}: checkpoint not found`);
  // Without SAM2 weights a randomly initialised tiny model teaches nothing and is slow on a CPU:
  // the demo then uses `nano` (tiny's structure in miniature) so it finishes in minutes.
  const nanoDemo = demo && !checkpoint && !o.model;
  const model = o.model ?? (nanoDemo ? 'nano' : 'tiny');
  if (model === 'nano') checkpoint = null;
  if (demo) {
    console.log(
      'No --data given: running the embedded demo on synthetic cracks ' +
        (nanoDemo
          ? '(no SAM2 checkpoint found, so the `nano` model: SAM2-tiny\'s structure in miniature, ' +
            'random weights) '
          : `(SAM2 ${model}) `) +
        'to show the whole pipeline: train, evaluate, predict. Point it at real data with ' +
        '--data <kaggle-layout-root> and real weights with --checkpoint or ' +
        '`sam2-lora weights download tiny`.',
    );
    const { root, reused } = await writeSyntheticDataset(join(out, 'data'), {
      train: 24,
      val: 6,
      test: 8,
      size: 96,
      seed: 7,
    });
    console.log(`${reused ? 'reusing' : 'generated'} synthetic dataset in ${root}`);
    dataRoot = root;
    predictInput = join(PACKAGE_ROOT, 'data', 'sample', 'images', 'crack_a.jpg');
  }
  // Demo sizes: nano learns the synthetic cracks at 64 px; SAM2 weights get a finer grid (96 px,
  // the synthetic photos' own size) and the FPN head, still a few minutes on a CPU.
  const size = int('size', o.size ?? (nanoDemo ? 64 : demo ? 96 : 512));
  if (size % 32 !== 0) throw new UsageError(`--size must be a multiple of 32, got ${size}`);
  const result = await train({
    data: {
      root: dataRoot,
      images: o.images,
      masks: o.masks,
      trainSplit: o.trainSplit,
      valSplit: o.valSplit,
    },
    out,
    segmenter: {
      model: choice<ModelSize>('model', model, MODELS),
      head: choice<HeadKind>('head', o.head ?? (demo ? 'fpn' : 'stride16'), ['stride16', 'fpn']),
      mode: choice<TrainMode>('mode', o.mode, ['head', 'lora', 'full']),
      lora: {
        r: int('lora-r', o.loraR),
        alpha: num('lora-alpha', o.loraAlpha),
        dropout: num('lora-dropout', o.loraDropout),
        targets: o.loraTargets.split(',').map((t) => choice<LoraTarget>('lora-targets', t.trim(), ALL_LORA_TARGETS)),
      },
      seed: int('seed', o.seed, 0),
    },
    checkpoint,
    size,
    batch: int('batch', o.batch ?? (demo ? 2 : 4)),
    epochs: int('epochs', o.epochs ?? (demo ? 100 : 10)),
    maxSteps: o.maxSteps ? int('max-steps', o.maxSteps) : demo ? 40 : undefined,
    // 40 steps: the demo uses rates higher than the reference recipe's 1e-4 / 1e-3.
    lr: num('lr', o.lr ?? (nanoDemo ? 2e-3 : demo ? 5e-4 : 1e-4)),
    headLr: num('head-lr', o.headLr ?? (nanoDemo ? 1e-2 : demo ? 5e-3 : 1e-3)),
    weightDecay: num('weight-decay', o.weightDecay),
    warmup: int('warmup', o.warmup, 0),
    clip: num('clip', o.clip),
    accum: int('accum', o.accum),
    microBatch: o.microBatch ? int('micro-batch', o.microBatch) : undefined,
    loss: choice<LossKind>('loss', o.loss, ['dice', 'bce', 'bce+dice']),
    // 40 steps are too few to learn through augmentation: the demo trains on the plain samples.
    augment: o.augment && !demo,
    skipBad: !!o.skipBad,
    resume: o.resume,
    valBatches: o.valBatches ? int('val-batches', o.valBatches) : undefined,
    adapter: { adapter: o.adapter, backend: o.backend as never },
  });
  if (!o.eval || result.interrupted) return;

  // Test-split evaluation of the best adapter, when the data has one.
  if (dataRoot && existsSync(join(dataRoot, o.testSplit))) {
    const { model, config } = await modelFromAdapter(result.bestDir, { checkpoint: checkpoint ?? undefined });
    const test = await openDataset({ root: dataRoot, split: o.testSplit });
    const metrics = await evaluate(model, test, { size: config.size, batch: 2, label: 'test ' });
    const rows = [{ name: `${config.segmenter.mode} (${o.testSplit})`, metrics }];
    console.log(`\n${formatTable(rows)}`);
    await writeFile(join(out, 'test-metrics.json'), metricsJson(rows));
    if (predictInput && existsSync(predictInput)) {
      const files = await predictFiles(model, [predictInput], {
        size: config.size,
        threshold: config.threshold,
        // The synthetic training photos are 96 px wide: predict tiles at that scale.
        tile: 96,
        out: join(out, 'predict'),
      });
      for (const f of files) console.log(`prediction: ${f.mask}, overlay: ${f.overlay}`);
    }
  }
  console.log(`\nrun written to ${out}: log.jsonl, loss.png, last/ (resume), best/ (adapter)`);
  await closeGpu();
}
