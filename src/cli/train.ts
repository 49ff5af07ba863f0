/**
 * `sam2-lora train`. Without --data it runs the embedded demo end to end on a fresh machine:
 * a synthetic crack set generated on the spot, SAM2-tiny from a cached or given checkpoint (else
 * `nano` from random weights), a short LoRA run at a small input size, then evaluation on the
 * synthetic test split, the run's HTML report and one prediction image. Every default (demo or
 * not) comes from ./defaults.ts, which `--help` shows.
 */
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { PACKAGE_ROOT, openAdapter } from '../gpu/dawn.js';
import { closeGpu } from '../gpu/runtime.js';
import { openDataset } from '../data/dataset.js';
import { writeSyntheticDataset } from '../data/synthetic.js';
import { resolveCheckpoint } from '../io/download.js';
import type { ModelSize } from '../model/config.js';
import { PRECISIONS, type Precision } from '../model/precision.js';
import type { HeadKind } from '../model/head.js';
import { ALL_LORA_TARGETS, type LoraTarget, type TrainMode } from '../model/segmenter.js';
import { predictFiles } from '../predict/predict.js';
import { formatTable, metricsJson } from '../train/metrics.js';
import { type LossKind, resumeRunDir, train } from '../train/trainer.js';
import { writeRunReport, tableRows } from '../report/index.js';
import { checkSamples } from '../data/decode.js';
import {
  type GpuCliOptions, UsageError, checkInputSize, fraction, gpuChoice, int, num,
} from './common.js';
import {
  DEMO_DATA, DEMO_DEFAULTS, DEMO_SAM2_DEFAULTS, HEAD_KINDS, LOSSES, MODEL_SIZES, SPLITS,
  TRAIN_DEFAULTS, TRAIN_MODES,
} from './defaults.js';
import { wroteLine } from './output.js';
import { modelFromAdapter } from '../adapter/adapter.js';
import { findCheckpoint } from '../adapter/manifest.js';

export interface TrainCliOptions extends GpuCliOptions {
  data?: string;
  images?: string;
  masks?: string;
  trainSplit: string;
  valSplit: string;
  testSplit: string;
  out?: string;
  model?: string;
  mode?: string;
  head?: string;
  checkpoint?: string;
  size?: string;
  batch?: string;
  epochs?: string;
  maxSteps?: string;
  lr?: string;
  headLr?: string;
  weightDecay?: string;
  warmup?: string;
  clip?: string;
  accum?: string;
  microBatch?: string;
  /** Data parallel devices: all | N | 0,1 (see train/data-parallel.ts). */
  gpus?: string;
  loss?: string;
  loraR?: string;
  loraAlpha?: string;
  loraDropout?: string;
  loraTargets?: string;
  seed?: string;
  augment: boolean;
  skipBad?: boolean;
  resume?: string;
  valBatches?: string;
  eval: boolean;
  force?: boolean;
  maxBadSteps?: string;
  /** f16 | f32; absent: f16 where the adapter offers shader-f16. */
  precision?: string;
}


function choice<T extends string>(name: string, v: string, allowed: readonly string[]): T {
  if (!allowed.includes(v)) throw new UsageError(`--${name} must be one of ${allowed.join(', ')}, got ${v}`);
  return v as T;
}

/** Where each train flag lands in TrainOptions (to check a resume's explicit flags). */
const FLAG_OPTION: Record<string, string> = {
  data: 'data.root', images: 'data.images', masks: 'data.masks', trainSplit: 'data.trainSplit',
  valSplit: 'data.valSplit', model: 'segmenter.model', mode: 'segmenter.mode', head: 'segmenter.head',
  checkpoint: 'checkpoint', size: 'size', batch: 'batch', epochs: 'epochs', maxSteps: 'maxSteps',
  lr: 'lr', headLr: 'headLr', weightDecay: 'weightDecay', warmup: 'warmup', clip: 'clip',
  accum: 'accum', microBatch: 'microBatch', loss: 'loss', loraR: 'segmenter.lora.r',
  loraAlpha: 'segmenter.lora.alpha', loraDropout: 'segmenter.lora.dropout',
  loraTargets: 'segmenter.lora.targets', seed: 'segmenter.seed', augment: 'augment',
  skipBad: 'skipBad', valBatches: 'valBatches', precision: 'precision',
};

const flagText = (attr: string) =>
  attr === 'augment' ? '--no-augment' : `--${attr.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;

/** Whether `dir` holds a run of the embedded demo (which a new demo run may replace). */
function isDemoRun(dir: string): boolean {
  try {
    const first = JSON.parse(readFileSync(join(dir, 'log.jsonl'), 'utf8').split('\n')[0]);
    if (first.demo === true) return true;
  } catch {
    // no log, or unreadable: look at the data
  }
  try {
    return JSON.parse(readFileSync(join(dir, 'data', 'manifest.json'), 'utf8')).generator
      ?.startsWith('sam2-lora synthetic') === true;
  } catch {
    return false;
  }
}

/**
 * `given`: the attribute names of the flags the user typed (commander's value source 'cli'),
 * so a resume can tell a flag given on purpose from a default.
 */
export async function trainCommand(o: TrainCliOptions, given: readonly string[] = []): Promise<void> {
  const demo = !o.data && !o.images && !o.resume;
  const out = resolve(o.out ?? (o.resume ? resumeRunDir(o.resume)
    : demo ? 'runs/demo' : `runs/${new Date().toISOString().replace(/[:.]/g, '-')}`));
  // The demo replaces its own previous run in runs/demo, so `npm run train` works every time;
  // an explicit --out (or a folder holding another run) gets the usual ownership rules.
  const replaceDemo = demo && !o.out && !o.force && isDemoRun(out) &&
    ['log.jsonl', 'last', 'best'].some((f) => existsSync(join(out, f)));
  if (replaceDemo) console.log(`replacing the previous demo run in ${out}`);
  const explicit = new Map<string, string>();
  for (const attr of given) if (FLAG_OPTION[attr]) explicit.set(FLAG_OPTION[attr], flagText(attr));
  let dataRoot = o.data;
  let predictInput: string | null = null;
  const cached = resolveCheckpoint(((o.model ?? 'tiny') === 'nano' ? 'tiny' : o.model ?? 'tiny') as 'tiny');
  let checkpoint = o.checkpoint ?? (o.model === 'nano' ? null : cached) ?? null;
  if (o.checkpoint && !existsSync(o.checkpoint)) throw new UsageError(`${o.checkpoint}: checkpoint not found`);
  // Without SAM2 weights a randomly initialised tiny model teaches nothing and is slow on a CPU:
  // the demo then uses `nano` (tiny's structure in miniature) so it finishes in minutes.
  const nanoDemo = demo && !checkpoint && !o.model;
  const model = o.model ?? (nanoDemo ? DEMO_DEFAULTS.model : TRAIN_DEFAULTS.model);
  // The defaults of this run: the nano demo's, the demo's with SAM2 weights, or the recipe's.
  const d = nanoDemo ? DEMO_DEFAULTS : demo ? DEMO_SAM2_DEFAULTS : TRAIN_DEFAULTS;
  if (model === 'nano') checkpoint = null;
  if (demo) {
    console.log(
      'No --data given: running the embedded demo on synthetic cracks ' +
        (nanoDemo
          ? '(no SAM2 checkpoint found, so the `nano` model: SAM2-tiny\'s structure in miniature, ' +
            'random weights) '
          : `(SAM2 ${model}) `) +
        'to show the whole pipeline: train, evaluate, report, predict. Point it at real data with ' +
        '--data <kaggle-layout-root> and real weights with --checkpoint or ' +
        '`sam2-lora weights download tiny`.',
    );
    const { root, reused } = await writeSyntheticDataset(join(out, 'data'), {
      ...DEMO_DATA,
      style: {
        width: [...DEMO_DATA.style.width],
        dark: [...DEMO_DATA.style.dark],
        fraction: [...DEMO_DATA.style.fraction],
      },
    });
    console.log(`${reused ? 'reusing' : 'generated'} synthetic dataset in ${root}`);
    dataRoot = root;
    predictInput = join(PACKAGE_ROOT, 'data', 'sample', 'images', 'crack_a.jpg');
  }
  // Demo sizes: nano learns the synthetic cracks at 64 px; SAM2 weights get a finer grid (96 px)
  // and the FPN head, still a few minutes on a CPU.
  const size = int('size', o.size ?? d.size);
  // A resumed run keeps its own size unless --size is given.
  if (!o.resume || o.size !== undefined) {
    // The adapter's own limit (the device requests its maximum); no device is created here.
    await checkInputSize(size, model, async () =>
      (await openAdapter(gpuChoice(o))).adapter.limits.maxStorageBufferBindingSize);
  }
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
      model: choice<ModelSize>('model', model, MODEL_SIZES),
      head: choice<HeadKind>('head', o.head ?? d.head, HEAD_KINDS),
      mode: choice<TrainMode>('mode', o.mode ?? TRAIN_DEFAULTS.mode, TRAIN_MODES),
      lora: {
        r: int('lora-r', o.loraR ?? TRAIN_DEFAULTS.loraR),
        alpha: num('lora-alpha', o.loraAlpha ?? TRAIN_DEFAULTS.loraAlpha),
        dropout: fraction('lora-dropout', o.loraDropout ?? TRAIN_DEFAULTS.loraDropout),
        targets: (o.loraTargets ?? TRAIN_DEFAULTS.loraTargets).split(',').map((t) => choice<LoraTarget>('lora-targets', t.trim(), ALL_LORA_TARGETS)),
      },
      seed: int('seed', o.seed ?? TRAIN_DEFAULTS.seed, 0),
    },
    checkpoint,
    size,
    batch: int('batch', o.batch ?? d.batch),
    epochs: int('epochs', o.epochs ?? d.epochs),
    maxSteps: o.maxSteps ? int('max-steps', o.maxSteps) : 'maxSteps' in d ? d.maxSteps : undefined,
    lr: num('lr', o.lr ?? d.lr),
    headLr: num('head-lr', o.headLr ?? d.headLr),
    weightDecay: num('weight-decay', o.weightDecay ?? TRAIN_DEFAULTS.weightDecay),
    warmup: int('warmup', o.warmup ?? TRAIN_DEFAULTS.warmup, 0),
    clip: num('clip', o.clip ?? TRAIN_DEFAULTS.clip),
    accum: int('accum', o.accum ?? TRAIN_DEFAULTS.accum),
    microBatch: o.microBatch ? int('micro-batch', o.microBatch) : undefined,
    gpus: o.gpus,
    loss: choice<LossKind>('loss', o.loss ?? d.loss, LOSSES),
    // The demo's few steps are too few to learn through augmentation (unless it says otherwise).
    augment: o.augment && (!demo || ('augment' in d && d.augment)),
    skipBad: !!o.skipBad,
    resume: o.resume,
    explicit,
    force: !!o.force || replaceDemo,
    maxBadSteps: int('max-bad-steps', o.maxBadSteps ?? TRAIN_DEFAULTS.maxBadSteps),
    demo,
    valBatches: o.valBatches ? int('val-batches', o.valBatches) : undefined,
    adapter: gpuChoice(o),
    precision: o.precision ? choice<Precision>('precision', o.precision, PRECISIONS) : 'auto',
  });
  if (result.signal) {
    // As a shell reports a process a signal ended: 128 + SIGINT (2) / SIGTERM (15).
    process.exitCode = result.signal === 'SIGTERM' ? 143 : 130;
    if (existsSync(join(out, 'last'))) console.log(`interrupted: continue with --resume ${out}`);
  }
  if (!o.eval || result.interrupted) {
    console.log(`\nrun ${out}: ${wroteLine(runFiles(out))}`);
    await closeGpu();
    return;
  }

  // The best adapter on the test split, when the data has one: the metrics table and the run's
  // HTML report (one evaluation pass serves both).
  let reportPage: string | null = null;
  const testSplit = o.testSplit ?? SPLITS.test;
  if (dataRoot && existsSync(join(dataRoot, testSplit))) {
    const best = (await findCheckpoint(result.bestDir))?.found.path ?? result.bestDir;
    const { model, config } = await modelFromAdapter(best, {
      checkpoint: checkpoint ?? undefined,
      adapter: gpuChoice(o),
      precision: result.precision,
    });
    const checked = await checkSamples(await openDataset({ root: dataRoot, split: testSplit }),
      { skipBad: o.skipBad });
    for (const b of checked.bad) console.warn(`skipping ${b.file}: ${b.reason}`);
    if (checked.good.length) {
      const report = await writeRunReport(out, {
        model,
        config,
        samples: checked.good,
        adapterPath: best,
        dataset: `${dataRoot}, split ${testSplit}`,
        skipBad: o.skipBad,
        command: `sam2-lora ${process.argv.slice(2).join(' ')}`.trim(),
      });
      const rows = tableRows(report.results, 'model');
      console.log(`\ntest split (${checked.good.length} images):\n${formatTable(rows)}`);
      await writeFile(join(out, 'test-metrics.json'), metricsJson(rows));
      reportPage = report.index;
    }
    if (predictInput && existsSync(predictInput)) {
      await predictFiles(model, [predictInput], {
        size: config.size,
        threshold: config.threshold,
        // The sample's thin cracks, magnified to the width the demo learnt (see defaults.ts).
        tile: 'predictTile' in d ? d.predictTile : undefined,
        out: join(out, 'predict'),
      });
    }
  }
  if (demo) {
    console.log('\nThis demo shows the pipeline working and the model learning; real quality on ' +
      'real photos needs SAM2 weights (`sam2-lora weights download tiny`) and a GPU.');
  }
  if (reportPage) console.log(`\nreport: ${reportPage}`);
  console.log(`\nrun ${out}: ${wroteLine(runFiles(out))}`);
  await closeGpu();
}

/**
 * The run folder's files (its checkpoints and report folders by name and file count), as the
 * closing line lists them.
 */
function runFiles(out: string): string[] {
  const entries = readdirSync(out, { withFileTypes: true })
    .filter((e) => e.name !== 'run.lock')
    .sort((a, b) => a.name.localeCompare(b.name));
  return entries.map((e) => {
    if (!e.isDirectory()) return e.name;
    const n = countFiles(join(out, e.name));
    return `${e.name}/ (${n} file${n === 1 ? '' : 's'})`;
  });
}

function countFiles(dir: string): number {
  return readdirSync(dir, { withFileTypes: true })
    .reduce((n, e) => n + (e.isDirectory() ? countFiles(join(dir, e.name)) : 1), 0);
}
