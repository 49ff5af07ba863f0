/**
 * The training loop: data → model → fused loss → backward → clip → AdamW, with per-epoch
 * validation, atomic checkpoints (last + best), exact resume, a JSONL log and curve plots.
 */
import { appendFileSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Engine, type Tensor } from '../autograd/tensor.js';
import { type Sample, openDataset, splitTrainVal } from '../data/dataset.js';
import { type Batch, BatchLoader } from '../data/loader.js';
import { checkSamples } from '../data/decode.js';
import type { AdapterChoice } from '../gpu/dawn.js';
import { GpuError } from '../gpu/errors.js';
import { getGpu, type Gpu } from '../gpu/runtime.js';
import type { StateDict } from '../io/pt.js';
import { blockPlan } from '../model/config.js';
import { loadAdapterTensors, loadBaseWeights } from '../model/load.js';
import { Segmenter, type SegmenterConfig } from '../model/segmenter.js';
import { add } from '../ops/add.js';
import { scale } from '../ops/elementwise.js';
import { bceWithLogits, diceLoss } from '../ops/loss.js';
import { Rng } from '../util/random.js';
import {
  type AdapterConfig,
  type TrainerState,
  loadAdapter,
  loadResumeState,
  saveCheckpoint,
} from './checkpoint.js';
import { type SegMetrics, SegMetricsAccumulator } from './metrics.js';
import { AdamW, clipGradNorm } from './optim.js';
import { renderCurves } from './plot.js';
import { Progress, time } from './progress.js';
import { lrFactor } from './schedule.js';

export type LossKind = 'dice' | 'bce' | 'bce+dice';

export interface DataOptions {
  /** Kaggle-layout root (`<root>/<split>/images|masks`). */
  root?: string;
  images?: string;
  masks?: string;
  trainSplit?: string;
  valSplit?: string;
  /** Fraction held out for validation when there is no val split. */
  valFraction?: number;
}

export interface TrainOptions {
  data: DataOptions;
  out: string;
  segmenter: SegmenterConfig;
  /** SAM2 checkpoint (.pt / .safetensors); null trains from random weights (a loud warning). */
  checkpoint: string | null;
  size: number;
  batch: number;
  epochs: number;
  /** Stop after this many optimizer steps (whatever the epochs say). */
  maxSteps?: number;
  /** LoRA / encoder learning rate (AdamW). */
  lr: number;
  /** Head learning rate (Adam: AdamW without weight decay, as the reference recipe). */
  headLr: number;
  weightDecay: number;
  warmup: number;
  clip: number;
  accum: number;
  loss: LossKind;
  augment: boolean;
  skipBad: boolean;
  /** Checkpoint directory (or run directory) to resume from. */
  resume?: string;
  /** Validation batches per epoch (all when absent). */
  valBatches?: number;
  /** Images per forward pass at most (default: the whole batch when it fits the adapter). */
  microBatch?: number;
  /** Stop (as on Ctrl-C: checkpoint and return) after this many steps of this session. */
  stopAfter?: number;
  adapter?: AdapterChoice;
  quiet?: boolean;
}

export interface TrainResult {
  out: string;
  steps: number;
  finalLoss: number;
  bestDice: number;
  lastDir: string;
  bestDir: string;
  val: SegMetrics | null;
  history: { step: number; loss: number }[];
  interrupted: boolean;
}

export class TrainingError extends Error {}

/** What a resumed run takes from the run it continues. */
const RESUMED_OPTIONS = [
  'data', 'size', 'batch', 'epochs', 'maxSteps', 'lr', 'headLr', 'weightDecay', 'warmup', 'clip',
  'accum', 'loss', 'augment', 'skipBad', 'microBatch', 'valBatches',
] as const satisfies readonly (keyof TrainOptions)[];

interface Split {
  train: Sample[];
  val: Sample[];
}

async function loadSplits(d: DataOptions, seed: number): Promise<Split> {
  if (d.images || d.masks) {
    const all = await openDataset({ images: d.images, masks: d.masks });
    return splitTrainVal(all, d.valFraction ?? 0.1, seed);
  }
  if (!d.root) throw new TrainingError('no data: give --data DIR or --images DIR --masks DIR');
  const train = await openDataset({ root: d.root, split: d.trainSplit ?? 'train' });
  const valSplit = d.valSplit ?? 'val';
  if (existsSync(join(d.root, valSplit))) {
    return { train, val: await openDataset({ root: d.root, split: valSplit }) };
  }
  return splitTrainVal(train, d.valFraction ?? 0.1, seed);
}

function lossFn(kind: LossKind, logits: Tensor, target: Tensor): Tensor {
  if (kind === 'dice') return diceLoss(logits, target);
  if (kind === 'bce') return bceWithLogits(logits, target);
  return add(bceWithLogits(logits, target), diceLoss(logits, target));
}

export interface EvalOptions {
  size: number;
  batch: number;
  maxBatches?: number;
  skipBad?: boolean;
  label?: string;
}

/** Validation / test metrics of a model over samples at threshold 0.5 (with a sweep). */
export async function evaluate(model: Segmenter, samples: Sample[], opts: EvalOptions): Promise<SegMetrics> {
  return (await evaluateAt(model, samples, [0.5], opts))[0];
}

/**
 * Metrics at each decision threshold (e.g. 0.5 and the one chosen on validation), from one pass
 * of the model: no tape, logits read back per batch.
 */
export async function evaluateAt(
  model: Segmenter,
  samples: Sample[],
  thresholds: number[],
  opts: EvalOptions,
): Promise<SegMetrics[]> {
  const engine = model.engine;
  const loader = new BatchLoader(samples, {
    batchSize: opts.batch,
    size: opts.size,
    shuffle: false,
    dropLast: false,
    augment: false,
    skipBad: opts.skipBad,
  });
  const accs = thresholds.map((threshold) => new SegMetricsAccumulator({ logits: true, threshold }));
  const wasTraining = model.isTraining;
  model.train(false);
  const total = Math.min(loader.batchesPerEpoch, opts.maxBatches ?? Infinity);
  const micro = microBatchSize(model, opts.size, opts.batch);
  const bar = new Progress(opts.label ?? 'eval ', total);
  try {
    for (let i = 0; i < total; i++) {
      const batch = await loader.next();
      for (let s = 0; s < batch.count; s += micro) {
        const part = slice(batch, s, Math.min(micro, batch.count - s), opts.size);
        const logits = await engine.scopeAsync(async () => {
          const x = engine.fromArray(part.images, [part.count, opts.size, opts.size, 3]);
          const y = engine.noGrad(() => model.forward(x));
          return y.toArray();
        });
        for (const acc of accs) acc.update(logits, part.masks, part.count);
      }
      bar.update(i + 1, {});
    }
  } finally {
    loader.close();
    model.train(wasTraining);
  }
  return accs.map((a) => a.result());
}

/**
 * Images per forward pass such that the widest activation (a block's qkv or MLP hidden over its
 * window-padded grid) fits one storage binding of this adapter. A batch larger than that runs as
 * micro-batches with the same result (per-sample Dice and per-pixel BCE average the same way).
 */
export function microBatchSize(model: Segmenter, size: number, batch: number): number {
  const trunk = model.image_encoder.cfg.trunk;
  let side = size / trunk.patchStride;
  let widest = size * size * 4; // the image itself and the full-size logits
  for (const b of blockPlan(trunk)) {
    const padded = b.windowSize > 0 ? Math.ceil(side / b.windowSize) * b.windowSize : side;
    widest = Math.max(widest, padded * padded * 3 * b.dimOut);
    if (b.qStride) side = Math.floor(side / b.qStride[0]);
    widest = Math.max(widest, side * side * b.mlpHidden);
  }
  const limit = model.engine.gpu.limits.maxStorageBufferBindingSize;
  return Math.max(1, Math.min(batch, Math.floor(limit / (widest * 4))));
}

/** Slices [start, start + n) of a batch's images and masks. */
function slice(batch: Batch, start: number, n: number, size: number) {
  const px = size * size;
  return {
    images: batch.images.subarray(start * px * 3, (start + n) * px * 3),
    masks: batch.masks.subarray(start * px, (start + n) * px),
    count: n,
  };
}

function log(out: string, record: Record<string, unknown>): void {
  appendFileSync(join(out, 'log.jsonl'), `${JSON.stringify({ time: Date.now(), ...record })}\n`);
}

/** Builds the model, loads weights (base checkpoint, then an adapter to resume from). */
export async function prepareModel(
  engine: Engine,
  cfg: SegmenterConfig,
  checkpoint: string | null,
  say: (s: string) => void,
): Promise<Segmenter> {
  const model = new Segmenter(engine, cfg);
  if (checkpoint) {
    await loadBaseWeights(model, checkpoint);
    say(`weights: ${checkpoint}`);
  } else {
    say(
      'WARNING: no SAM2 checkpoint given (--checkpoint or `sam2-lora weights download`): the ' +
        'encoder starts from RANDOM weights. Results then mean nothing for real use.',
    );
  }
  return model;
}

/** Runs a whole training job; see TrainOptions. */
export async function train(opts: TrainOptions): Promise<TrainResult> {
  const say = (s: string) => {
    if (!opts.quiet) console.log(s);
  };
  const out = resolve(opts.out);
  mkdirSync(out, { recursive: true });
  const gpu: Gpu = await getGpu(opts.adapter);
  if (gpu.info.cpuFallback) say(`adapter: ${gpu.info.description} (CPU fallback: slow)`);
  else say(`adapter: ${gpu.info.description}`);
  const engine = new Engine(gpu);

  // Resume: the checkpoint's config wins over the command line for everything model-shaped.
  let resume: { trainer: TrainerState; moments: StateDict; adapter: StateDict } | null = null;
  let segCfg = opts.segmenter;
  let checkpoint = opts.checkpoint;
  if (opts.resume) {
    const dir = existsSync(join(opts.resume, 'last')) ? join(opts.resume, 'last') : opts.resume;
    const { tensors, config } = await loadAdapter(dir);
    const state = await loadResumeState(dir);
    resume = { ...state, adapter: tensors };
    segCfg = config.segmenter;
    checkpoint = config.baseCheckpoint;
    // The run's own options (schedule, batch, size, data...) win over the command line's
    // defaults, or the resumed run would not continue the same way.
    const saved = state.trainer.options as Partial<TrainOptions> | undefined;
    if (saved) {
      const hasData = !!(opts.data.root || opts.data.images);
      opts = { ...opts, ...saved, data: hasData ? opts.data : (saved.data ?? opts.data),
        out: opts.out, resume: opts.resume, stopAfter: opts.stopAfter, quiet: opts.quiet,
        adapter: opts.adapter, valBatches: opts.valBatches ?? saved.valBatches };
    }
    say(`resuming from ${dir} at step ${state.trainer.step}`);
  }

  const split = await loadSplits(opts.data, segCfg.seed);
  let train = split.train;
  let val = split.val;
  // Every pair's headers are checked before the first step (unreadable files, mask sizes), so a
  // bad file stops the run now, not hours in; --skip-bad drops and counts them instead.
  {
    const t = await checkSamples(train, { skipBad: opts.skipBad });
    const v = await checkSamples(val, { skipBad: opts.skipBad });
    for (const b of [...t.bad, ...v.bad]) say(`skipping ${b.file}: ${b.reason}`);
    if (t.bad.length + v.bad.length > 0) say(`skipped ${t.bad.length + v.bad.length} bad samples`);
    train = t.good;
    val = v.good;
  }
  say(`data: ${train.length} train, ${val.length} val images`);

  const model = await prepareModel(engine, segCfg, checkpoint, say);
  if (resume) loadAdapterTensors(model, resume.adapter, opts.resume ?? '');
  model.train(true);
  const trainable = model.trainable();
  const headParams = trainable.filter(([n]) => n.startsWith('head.')).map(([, t]) => t);
  const encParams = trainable.filter(([n]) => !n.startsWith('head.')).map(([, t]) => t);
  const nParams = trainable.reduce((a, [, t]) => a + t.size, 0);
  say(`model: SAM2 ${segCfg.model}, mode ${segCfg.mode}, head ${segCfg.head}, ` +
    `${trainable.length} trainable tensors (${(nParams / 1e6).toFixed(3)} M parameters)`);
  const groups = [{ params: headParams, lr: opts.headLr, weightDecay: 0 }];
  if (encParams.length) groups.push({ params: encParams, lr: opts.lr, weightDecay: opts.weightDecay });
  const optim = new AdamW(groups);
  const baseLrs = optim.paramGroups.map((g) => g.lr);
  const names = trainable.map(([n]) => n);

  const loader = new BatchLoader(train, {
    batchSize: opts.batch,
    size: opts.size,
    seed: segCfg.seed,
    augment: opts.augment ? {} : false,
    skipBad: opts.skipBad,
  });
  const stepsPerEpoch = Math.max(1, Math.floor(loader.batchesPerEpoch / opts.accum));
  const micro = Math.min(opts.microBatch ?? Infinity, microBatchSize(model, opts.size, opts.batch));
  if (micro < opts.batch) {
    say(`batch ${opts.batch} runs as micro-batches of ${micro} (same result as one batch)` +
      (micro < (opts.microBatch ?? Infinity) ? ': its widest activation exceeds this adapter\'s ' +
        `${gpu.limits.maxStorageBufferBindingSize}-byte storage binding limit` : ''));
  }
  const total = Math.min(opts.epochs * stepsPerEpoch, opts.maxSteps ?? Infinity);
  const rng = new Rng(segCfg.seed ^ 0x7a11ed);
  let step = 0;
  let bestDice = -1;
  const history: { step: number; loss: number }[] = [];
  const epochs: TrainerState['epochs'] = [];
  if (resume) {
    const t = resume.trainer;
    step = t.step;
    bestDice = t.bestDice;
    history.push(...t.history);
    epochs.push(...t.epochs);
    rng.setState(t.rngState);
    loader.restore(t.loader);
    const m: Float32Array[] = [];
    const v: Float32Array[] = [];
    for (const n of names) {
      const mm = resume.moments.get(`m.${n}`);
      const vv = resume.moments.get(`v.${n}`);
      if (!mm || !vv) throw new TrainingError(`${opts.resume}: optimizer state lacks ${n}`);
      m.push(mm.data);
      v.push(vv.data);
    }
    optim.loadStateDict({ ...t.optimizer, m, v });
  }

  const adapterConfig = (threshold: number, metrics?: SegMetrics): AdapterConfig => ({
    format: 'sam2-lora-adapter',
    version: 1,
    segmenter: segCfg,
    size: opts.size,
    threshold,
    baseCheckpoint: checkpoint,
    metrics: metrics ? { dice: metrics.dice, iou: metrics.iou, precision: metrics.precision,
      recall: metrics.recall, best: metrics.best } : undefined,
  });
  const lastDir = join(out, 'last');
  const bestDir = join(out, 'best');
  let threshold = 0.5;
  let lastVal: SegMetrics | null = null;

  const trainedNames = new Set(names);
  const adapterTensors = () => model.stateDict((n) => trainedNames.has(n));
  const saveBest = async () =>
    saveCheckpoint(bestDir, {
      adapter: await adapterTensors(),
      config: adapterConfig(threshold, lastVal ?? undefined),
    });

  const saveLast = async (epoch: number) => {
    const adapter = await adapterTensors();
    const state = await optim.stateDict();
    const { m, v, ...rest } = state;
    await saveCheckpoint(lastDir, {
      adapter,
      config: adapterConfig(threshold, lastVal ?? undefined),
      optimizer: { state: { ...rest, m, v }, names },
      trainer: {
        step,
        epoch,
        loader: loader.state(),
        rngState: rng.state(),
        bestDice,
        history,
        epochs,
        optimizer: rest,
        options: {
          ...Object.fromEntries(RESUMED_OPTIONS.map((k) => [k, opts[k]])),
          // Absolute, so a resume from another working directory finds the data.
          data: Object.fromEntries(Object.entries(opts.data).map(([k, v]) =>
            [k, typeof v === 'string' && ['root', 'images', 'masks'].includes(k) ? resolve(v) : v])),
        },
      },
    });
  };

  let interrupted = false;
  const onSignal = () => {
    if (interrupted) process.exit(130);
    interrupted = true;
    process.stderr.write('\ninterrupt: finishing this step and saving a checkpoint (again to abort)\n');
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const progress = new Progress('train', total);
  let lossEma = NaN;
  let sessionSteps = 0;
  let t0 = Date.now();
  let imgs = 0;
  log(out, { type: 'start', total, stepsPerEpoch, options: { ...opts, adapter: undefined } });
  try {
    while (step < total && !interrupted) {
      const factor = lrFactor(step, total, opts.warmup);
      optim.paramGroups.forEach((g, i) => (g.lr = baseLrs[i] * factor));
      let stepLoss = 0;
      for (let a = 0; a < opts.accum; a++) {
        const batch = await loader.next();
        let value = 0;
        for (let s = 0; s < batch.count; s += micro) {
          const part = slice(batch, s, Math.min(micro, batch.count - s), opts.size);
          // Each micro-batch's mean loss weighs by its share of the batch (and of accumulation).
          const weight = part.count / batch.count / opts.accum;
          model.reseedDropout(rng);
          const loss = engine.scope(() => {
            const x = engine.fromArray(part.images, [part.count, opts.size, opts.size, 3]);
            const y = engine.fromArray(part.masks, [part.count, opts.size, opts.size, 1]);
            const l = lossFn(opts.loss, model.forward(x), y);
            return weight !== 1 ? scale(l, weight) : l;
          });
          engine.backward(loss);
          value += ((await loss.toArray())[0] / weight) * (part.count / batch.count);
          loss.release();
        }
        if (!Number.isFinite(value)) {
          throw new TrainingError(
            `loss became ${value} at step ${step} (batch ${batch.ids.join(', ')}); the last ` +
              `good checkpoint is ${existsSync(lastDir) ? lastDir : 'not written yet'}. Lower ` +
              '--lr or check the data.',
          );
        }
        stepLoss += value / opts.accum;
        imgs += batch.count;
      }
      const norm = opts.clip > 0 ? clipGradNorm([...headParams, ...encParams], opts.clip) : null;
      optim.step();
      optim.zeroGrad();
      const gradNorm = norm ? (await norm.toArray())[0] : undefined;
      norm?.release();
      step++;
      lossEma = Number.isNaN(lossEma) ? stepLoss : 0.9 * lossEma + 0.1 * stepLoss;
      history.push({ step, loss: stepLoss });
      const secs = (Date.now() - t0) / 1000;
      const ips = imgs / Math.max(secs, 1e-9);
      log(out, { type: 'step', step, loss: stepLoss, lr: optim.paramGroups.map((g) => g.lr),
        gradNorm, imagesPerSec: ips });
      progress.update(step, { loss: lossEma, 'img/s': ips });
      if (opts.stopAfter !== undefined && ++sessionSteps >= opts.stopAfter) interrupted = true;
      if (step % stepsPerEpoch === 0 || step === total || interrupted) {
        const epoch = Math.ceil(step / stepsPerEpoch);
        let valDice = NaN;
        if (val.length > 0 && !interrupted) {
          lastVal = await evaluate(model, val, {
            size: opts.size,
            batch: opts.batch,
            maxBatches: opts.valBatches,
            skipBad: opts.skipBad,
            label: 'val  ',
          });
          valDice = lastVal.dice;
          threshold = lastVal.best?.threshold ?? 0.5;
          say(`epoch ${epoch}: loss ${lossEma.toFixed(4)}  val Dice ${valDice.toFixed(4)} ` +
            `IoU ${lastVal.iou.toFixed(4)} (best threshold ${threshold})`);
        }
        epochs.push({ epoch, step, loss: lossEma, valDice });
        log(out, { type: 'epoch', epoch, step, loss: lossEma, val: lastVal });
        await saveLast(epoch);
        if (valDice > bestDice) {
          bestDice = valDice;
          await saveBest();
        }
        t0 = Date.now();
        imgs = 0;
      }
    }
  } catch (e) {
    // GPU lost / out of memory / a kernel error: say where the finished work is.
    if (e instanceof GpuError) {
      const where = existsSync(lastDir)
        ? `the last good checkpoint is ${lastDir} (resume with --resume ${out})`
        : 'no checkpoint was written yet';
      throw new TrainingError(`${e.message} (at step ${step}); ${where}`);
    }
    throw e;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    loader.close();
  }
  if (!existsSync(bestDir)) {
    await saveBest();
  }
  await plotRun(out, history, epochs);
  const peak = gpu.pool.stats.peakLiveBytes / 2 ** 20;
  log(out, { type: 'end', step, interrupted, peakMiB: peak });
  say(`${interrupted ? 'interrupted' : 'done'} after ${step} steps; peak GPU memory ` +
    `${peak.toFixed(0)} MiB; checkpoints: ${lastDir} (resume), ${bestDir} (best)`);
  return {
    out,
    steps: step,
    finalLoss: history.length ? history[history.length - 1].loss : NaN,
    bestDice,
    lastDir,
    bestDir,
    val: lastVal,
    history,
    interrupted,
  };
}

async function plotRun(
  out: string,
  history: { step: number; loss: number }[],
  epochs: TrainerState['epochs'],
): Promise<void> {
  if (history.length < 2) return;
  await renderCurves(join(out, 'loss.png'), [
    { name: 'train loss', points: history.map((h) => [h.step, h.loss] as [number, number]) },
  ], { title: 'Training loss', xLabel: 'step', yLabel: 'loss' });
  const dice = epochs.filter((e) => Number.isFinite(e.valDice));
  if (dice.length >= 1) {
    await renderCurves(join(out, 'dice.png'), [
      { name: 'val Dice', points: dice.map((e) => [e.step, e.valDice] as [number, number]) },
    ], { title: 'Validation Dice', xLabel: 'step', yLabel: 'Dice' });
  }
  writeFileSync(join(out, 'history.json'), JSON.stringify({ history, epochs }));
}

export { time };
