/**
 * The training loop: data → model → fused loss → backward → clip → AdamW, with per-epoch
 * validation, crash-safe checkpoints (last + best, see run-dir.ts), exact resume, a JSONL log and
 * curve plots. A step whose loss, gradient norm or resulting parameters are not finite is never
 * applied or saved; several in a row stop the run.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { Engine, type Tensor } from '../autograd/tensor.js';
import { type Sample, openDataset, splitTrainVal } from '../data/dataset.js';
import { BatchLoader } from '../data/loader.js';
import { type BadSample, checkSamples } from '../data/decode.js';
import type { AdapterChoice } from '../gpu/dawn.js';
import { GpuError } from '../gpu/errors.js';
import { Gpu, getGpu } from '../gpu/runtime.js';
import type { StateDict } from '../io/pt.js';
import { globalNormAndCoef } from '../kernels/optim.js';
import { loadAdapterTensors, loadBaseWeights } from '../model/load.js';
import { Segmenter, type SegmenterConfig } from '../model/segmenter.js';
import { add } from '../ops/add.js';
import { scale } from '../ops/elementwise.js';
import { bceWithLogits, diceLoss } from '../ops/loss.js';
import { Rng } from '../util/random.js';
import { type Precision, PrecisionError, resolvePrecision } from '../model/precision.js';
import { type CheckpointData, type TrainerState, loadResumeState } from './checkpoint.js';
import { evaluate, microBatchSize, slice } from './evaluate.js';
import type { SegMetrics } from './metrics.js';
import { AdamW, clipGradNorm } from './optim.js';
import { type LossScaleOptions, LossScaler, unscaleGrads } from './loss-scale.js';
import {
  type ReplicaParams, allReduceGradients, broadcastParameters, resolveDevices, shardRanges,
} from './data-parallel.js';
import { renderCurves } from './plot.js';
import { Progress, time } from './progress.js';
import { RunDir } from './run-dir.js';
import { lrFactor } from './schedule.js';
import { type AdapterConfig, loadAdapter } from '../adapter/adapter.js';
import { findCheckpoint } from '../adapter/manifest.js';

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
  /** Run directory (or its last/ checkpoint) to resume from. */
  resume?: string;
  /**
   * Options the user gave explicitly (option path such as `lr` or `segmenter.lora.r` → the flag
   * as written, for messages). On resume these must agree with the run's own options, except
   * that epochs / maxSteps may grow; unlisted options silently take the run's values.
   */
  explicit?: ReadonlyMap<string, string>;
  /** Replace a run the output folder already holds. */
  force?: boolean;
  /** Stop after this many non-finite steps in a row (default 3). */
  maxBadSteps?: number;
  /** Validation batches per epoch (all when absent). */
  valBatches?: number;
  /** Images per forward pass at most (default: the whole batch when it fits the adapter). */
  microBatch?: number;
  /** Stop (as on Ctrl-C: checkpoint and return) after this many steps of this session. */
  stopAfter?: number;
  /** Recorded in the log's start record (the CLI's embedded demo). */
  demo?: boolean;
  adapter?: AdapterChoice;
  /**
   * f32, or f16 mixed precision (f16 frozen encoder weights and activations, f32 head, LoRA,
   * loss and optimizer; see model/precision.ts); `auto`: f16 where every device offers
   * shader-f16. Absent: f32. Recorded with the run's options: a resumed run keeps it.
   */
  precision?: Precision | 'auto';
  /**
   * Dynamic loss scaling (loss-scale.ts, as torch's GradScaler). Absent: on in f16, off in
   * f32; `false`: off; `true` or options: on.
   */
  lossScale?: boolean | LossScaleOptions;
  /**
   * Data parallel: one model replica per device (see data-parallel.ts): the devices, or the
   * CLI's `--gpus` spec (`all`, a count, `0,1`) resolved against `adapter`. Absent or one device:
   * `adapter` alone. Not saved: a resumed run may use other devices.
   */
  gpus?: string | AdapterChoice[];
  quiet?: boolean;
  /** Tests only: runs after each step's backward, before the gradients are checked. */
  afterBackward?: (step: number, params: readonly [string, Tensor][]) => void;
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
  /** The signal that interrupted the run (null: it ended, or stopAfter stopped it). */
  signal: 'SIGINT' | 'SIGTERM' | null;
  /** Steps skipped in this session because a value was not finite. */
  skippedSteps: number;
  /** Samples dropped by --skip-bad (with the file and the reason). */
  badSamples: BadSample[];
  /** The precision the run trained at (a resumed run keeps its own). */
  precision: Precision;
}

export class TrainingError extends Error {}

/** What a resumed run takes from the run it continues. */
const RESUMED_OPTIONS = [
  'data', 'size', 'batch', 'epochs', 'maxSteps', 'lr', 'headLr', 'weightDecay', 'warmup', 'clip',
  'accum', 'loss', 'augment', 'skipBad', 'microBatch', 'valBatches', 'precision', 'lossScale',
] as const satisfies readonly (keyof TrainOptions)[];

/** Options a resumed run may raise (extending it); lowering them is a conflict. */
const GROWABLE = new Set(['epochs', 'maxSteps']);
/** Options a resumed run may change freely: they do not change what is trained. */
const FREE = new Set(['microBatch', 'valBatches', 'gpus']);

/** Largest f32: clipping at it leaves gradients unchanged but still yields their norm. */
const F32_MAX = 3.4028234663852886e38;

// ---------------------------------------------------------------------------------------------
// Resume: where the state is, and the options a resumed run keeps.

/** What a run keeps when resumed: its training options, model config and base checkpoint. */
interface RunOptions {
  options: Partial<TrainOptions>;
  segmenter: SegmenterConfig;
  checkpoint: string | null;
}

interface Resumed {
  /** The checkpoint directory read. */
  dir: string;
  trainer: TrainerState;
  moments: StateDict;
  adapter: StateDict;
  config: AdapterConfig;
}

/**
 * The run folder a --resume path names: the path itself, or its parent when it is a checkpoint
 * directory (holds an adapter / manifest, or is a `last` lost in an interrupted save).
 */
export function resumeRunDir(resume: string): string {
  const p = resolve(resume);
  const isCkpt = ['adapter.safetensors', 'manifest.json', 'trainer.json'].some((f) => existsSync(join(p, f))) ||
    (!existsSync(p) && basename(p) === 'last');
  return isCkpt ? dirname(p) : p;
}

/** The options a run recorded in its log's start record (for a run with no checkpoint yet). */
function startOptions(run: RunDir): RunOptions | null {
  const log = join(run.path, 'log.jsonl');
  if (!existsSync(log)) return null;
  for (const line of readFileSync(log, 'utf8').split('\n')) {
    try {
      const r = JSON.parse(line);
      if (r.type === 'start' && r.run) return r.run as RunOptions;
    } catch {
      // a line cut by a kill
    }
  }
  return null;
}

/**
 * The state to resume from and the run's own options. A run killed before its first complete
 * checkpoint (in its first epoch or first save) has no state: it starts again from step 0 with
 * the options its log recorded.
 */
async function openResume(
  resume: string,
  run: RunDir,
  say: (s: string) => void,
): Promise<{ state: Resumed | null; saved: RunOptions }> {
  const runDir = resumeRunDir(resume);
  const named = resolve(resume) === runDir ? join(runDir, 'last') : resolve(resume);
  let dir: string;
  if (runDir === run.path && named === run.lastDir) {
    // Our own folder, locked: put the newest complete checkpoints in place first.
    const { last } = await run.recover();
    if (!last) {
      const saved = startOptions(run);
      if (!saved) throw new TrainingError(`${resume}: no checkpoint to resume from (${run.lastDir} missing)`);
      say(`${run.path}: no complete checkpoint yet (stopped in its first epoch): starting it again ` +
        'from step 0 with its own options');
      return { state: null, saved };
    }
    dir = last.path;
  } else {
    // Another folder: read its newest complete checkpoint, change nothing there.
    const found = await findCheckpoint(named);
    if (!found) throw new TrainingError(`${resume}: no checkpoint to resume from (${named} missing)`);
    dir = found.found.path;
  }
  const { tensors, config } = await loadAdapter(dir);
  const state = await loadResumeState(dir);
  say(`resuming from ${dir} at step ${state.trainer.step}`);
  return {
    state: { dir, ...state, adapter: tensors, config },
    saved: {
      options: (state.trainer.options ?? {}) as Partial<TrainOptions>,
      segmenter: config.segmenter,
      checkpoint: config.baseCheckpoint,
    },
  };
}

/** What a run records of its options (checkpoints and the log's start record). */
function runOptions(opts: TrainOptions): RunOptions {
  return {
    options: {
      ...Object.fromEntries(RESUMED_OPTIONS.map((k) => [k, opts[k]])),
      // Absolute, so a resume from another working directory finds the data.
      data: Object.fromEntries(Object.entries(opts.data).map(([k, v]) =>
        [k, typeof v === 'string' && ['root', 'images', 'masks'].includes(k) ? resolve(v) : v])),
    },
    segmenter: opts.segmenter,
    checkpoint: opts.checkpoint,
  };
}

function pathValue(o: unknown, path: string): unknown {
  return path.split('.').reduce<unknown>((v, k) => (v as Record<string, unknown> | undefined)?.[k], o);
}

function setPath(o: Record<string, unknown>, path: string, value: unknown): void {
  const keys = path.split('.');
  let at = o;
  for (const k of keys.slice(0, -1)) {
    at[k] = { ...(at[k] as Record<string, unknown>) };
    at = at[k] as Record<string, unknown>;
  }
  at[keys[keys.length - 1]] = value;
}

function sameValue(path: string, a: unknown, b: unknown): boolean {
  if (typeof a === 'string' && typeof b === 'string' && /^(data\.(root|images|masks)|checkpoint)$/.test(path)) {
    return resolve(a) === resolve(b);
  }
  if (Array.isArray(a) && Array.isArray(b)) return [...a].sort().join() === [...b].sort().join();
  return a === b || (a == null && b == null);
}

const show = (v: unknown) => (v === undefined || v === null ? 'none' : Array.isArray(v) ? v.join(',') : String(v));

/**
 * The options a resumed run continues with: the run's own (saved schedule, data, model) over
 * the caller's, except explicit ones that may change (epochs / maxSteps upwards, micro-batch,
 * validation batches). Any other explicit option that differs is an error listing them all.
 */
function mergeResumed(opts: TrainOptions, run: RunOptions, say: (s: string) => void): TrainOptions {
  // Checkpoints from before options were saved have none: then the caller's options stand.
  const saved = Object.keys(run.options).length ? run.options : undefined;
  const runs: Record<string, unknown> = { ...run.options, segmenter: run.segmenter, checkpoint: run.checkpoint };
  const merged: Record<string, unknown> = { ...opts, segmenter: run.segmenter, checkpoint: run.checkpoint };
  if (saved) for (const k of RESUMED_OPTIONS) merged[k] = saved[k];
  // Runs recorded before --precision existed trained in f32.
  if (saved && saved.precision === undefined) runs.precision = merged.precision = 'f32';
  const conflicts: string[] = [];
  for (const [path, flag] of opts.explicit ?? []) {
    const mine = pathValue(opts, path);
    const theirs = pathValue(runs, path);
    if (!saved && !path.startsWith('segmenter.') && path !== 'checkpoint') {
      merged[path.split('.')[0]] = (opts as unknown as Record<string, unknown>)[path.split('.')[0]];
    } else if (GROWABLE.has(path)) {
      if ((mine as number) >= ((theirs as number | undefined) ?? Infinity)) setPath(merged, path, mine);
      else conflicts.push(`${flag} ${show(mine)} (the run's: ${show(theirs)}; a resumed run can only grow)`);
    } else if (FREE.has(path)) {
      setPath(merged, path, mine);
    } else if ((path.startsWith('data.') || path === 'checkpoint') && typeof theirs === 'string' &&
      !existsSync(theirs)) {
      say(`${flag} ${show(mine)}: the run's own ${theirs} no longer exists, using ${show(mine)}`);
      setPath(merged, path, mine);
    } else if (!sameValue(path, mine, theirs)) {
      conflicts.push(`${flag} ${show(mine)} (the run's: ${show(theirs)})`);
    }
  }
  if (conflicts.length) {
    throw new TrainingError(
      `--resume ${opts.resume}: ${conflicts.length === 1 ? 'this option differs' : 'these options differ'} ` +
        `from the run's own, which a resumed run keeps (only --epochs / --max-steps may grow):\n  ` +
        `${conflicts.join('\n  ')}\nDrop ${conflicts.length === 1 ? 'it' : 'them'}, or start a new run ` +
        'with another --out.',
    );
  }
  return merged as unknown as TrainOptions;
}

// ---------------------------------------------------------------------------------------------
// Data.

interface Split {
  train: Sample[];
  val: Sample[];
  /** Pairs dropped by --skip-bad (unreadable or mismatched). */
  bad?: BadSample[];
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

/**
 * The splits with every pair's headers checked before the first step (unreadable files, mask
 * sizes), so a bad file stops the run now, not hours in; --skip-bad drops and counts them.
 */
async function checkedData(opts: TrainOptions, seed: number, say: (s: string) => void): Promise<Split> {
  const split = await loadSplits(opts.data, seed);
  const t = await checkSamples(split.train, { skipBad: opts.skipBad });
  const v = await checkSamples(split.val, { skipBad: opts.skipBad });
  for (const b of [...t.bad, ...v.bad]) say(`skipping ${b.file}: ${b.reason}`);
  if (t.bad.length + v.bad.length > 0) say(`skipped ${t.bad.length + v.bad.length} bad samples`);
  for (const [name, c] of [['train', t], ['val', v]] as const) {
    if (c.maskEncoding) say(`${name} masks: ${c.maskEncoding.description}`);
    if (c.maskEncoding?.warning) say(`WARNING (${name} masks): ${c.maskEncoding.warning}`);
  }
  say(`data: ${t.good.length} train, ${v.good.length} val images`);
  return { train: t.good, val: v.good, bad: [...t.bad, ...v.bad] };
}

// ---------------------------------------------------------------------------------------------
// Model and optimizer.

function lossFn(kind: LossKind, logits: Tensor, target: Tensor): Tensor {
  if (kind === 'dice') return diceLoss(logits, target);
  if (kind === 'bce') return bceWithLogits(logits, target);
  return add(bceWithLogits(logits, target), diceLoss(logits, target));
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

interface Trainable {
  model: Segmenter;
  optim: AdamW;
  params: [string, Tensor][];
  baseLrs: number[];
}

/** The model in training mode and AdamW over its trainable tensors (head group first). */
async function setupModel(
  engine: Engine,
  opts: TrainOptions,
  resumed: Resumed | null,
  say: (s: string) => void,
): Promise<Trainable> {
  const cfg = opts.segmenter;
  const model = await prepareModel(engine, cfg, opts.checkpoint, say);
  if (resumed) loadAdapterTensors(model, resumed.adapter, resumed.dir);
  // After every weight is loaded: f16 converts the frozen encoder weights in place.
  if (opts.precision === 'f16') model.setPrecision('f16', true);
  model.train(true);
  const params = model.trainable();
  const head = params.filter(([n]) => n.startsWith('head.'));
  const enc = params.filter(([n]) => !n.startsWith('head.'));
  const nParams = params.reduce((a, [, t]) => a + t.size, 0);
  say(`model: SAM2 ${cfg.model}, mode ${cfg.mode}, head ${cfg.head}, ${model.precision}, ` +
    `${params.length} trainable tensors (${(nParams / 1e6).toFixed(3)} M parameters)`);
  const groups = [{ params: head.map(([, t]) => t), lr: opts.headLr, weightDecay: 0 }];
  if (enc.length) groups.push({ params: enc.map(([, t]) => t), lr: opts.lr, weightDecay: opts.weightDecay });
  const optim = new AdamW(groups);
  // The optimizer's parameter order: its state and the checkpoint's moments follow it.
  const ordered = [...head, ...enc];
  return { model, optim, params: ordered, baseLrs: optim.paramGroups.map((g) => g.lr) };
}

/** A data-parallel model replica: its device, model, and trainable tensors in the optimizer's order. */
interface Replica extends ReplicaParams {
  model: Segmenter;
}

/**
 * Another replica of the model on its own device: the same base weights, its trainable tensors
 * in replica 0's order, then replica 0's values copied in (LoRA init, or the resumed adapter).
 */
async function setupReplica(engine: Engine, opts: TrainOptions, first: Trainable): Promise<Replica> {
  const model = await prepareModel(engine, opts.segmenter, opts.checkpoint, () => undefined);
  if (opts.precision === 'f16') model.setPrecision('f16', true);
  model.train(true);
  const byName = new Map(model.trainable());
  const params = first.params.map(([n]): [string, Tensor] => {
    const p = byName.get(n);
    if (!p) throw new TrainingError(`data parallel: replica has no trainable ${n}`);
    return [n, p];
  });
  return { gpu: engine.gpu, model, params };
}

// ---------------------------------------------------------------------------------------------
// Signals: the first SIGINT / SIGTERM finishes the step and saves; a second one exits at once.

class Interrupt {
  signal: 'SIGINT' | 'SIGTERM' | null = null;
  private readonly handler = (sig: NodeJS.Signals) => {
    const code = sig === 'SIGTERM' ? 143 : 130;
    if (this.signal) process.exit(code);
    this.signal = sig === 'SIGTERM' ? 'SIGTERM' : 'SIGINT';
    process.stderr.write(`\n${sig}: finishing this step and saving a checkpoint (again to abort)\n`);
  };

  constructor() {
    process.on('SIGINT', this.handler);
    process.on('SIGTERM', this.handler);
  }

  remove(): void {
    process.off('SIGINT', this.handler);
    process.off('SIGTERM', this.handler);
  }
}

// ---------------------------------------------------------------------------------------------
// One training session: steps, validation, checkpoints.

class Session {
  step = 0;
  /** Step of the last checkpoint this session wrote or started from (-1: none). */
  savedStep = -1;
  skipped = 0;
  private badInRow = 0;
  readonly history: { step: number; loss: number }[] = [];
  readonly epochs: TrainerState['epochs'] = [];
  bestDice = -1;
  lastVal: SegMetrics | null = null;
  private threshold = 0.5;
  private lossEma = NaN;
  private t0 = Date.now();
  private imgs = 0;
  readonly total: number;
  readonly stepsPerEpoch: number;
  private readonly micro: number;
  private readonly rng: Rng;
  private readonly loader: BatchLoader;
  private readonly progress: Progress;
  private readonly names: string[];
  /** Data-parallel replicas; the first is `t`'s model, which owns the optimizer. */
  private readonly replicas: readonly Replica[];
  /** Dynamic loss scaling (f16 by default), or null: the loss goes to backward as it is. */
  private readonly scaler: LossScaler | null;

  constructor(
    private readonly opts: TrainOptions,
    private readonly run: RunDir,
    private readonly gpu: Gpu,
    private readonly t: Trainable,
    private readonly data: Split,
    private readonly say: (s: string) => void,
    others: readonly Replica[] = [],
  ) {
    this.names = t.params.map(([n]) => n);
    this.replicas = [{ gpu, model: t.model, params: t.params }, ...others];
    this.loader = new BatchLoader(data.train, {
      batchSize: opts.batch,
      size: opts.size,
      seed: opts.segmenter.seed,
      augment: opts.augment ? {} : false,
      skipBad: opts.skipBad,
    });
    this.stepsPerEpoch = Math.max(1, Math.floor(this.loader.batchesPerEpoch / opts.accum));
    // Each device runs its shard of the batch (the first shards are the largest).
    const shard = Math.ceil(opts.batch / this.replicas.length);
    this.micro = Math.min(opts.microBatch ?? Infinity, microBatchSize(t.model, opts.size, shard));
    if (this.micro < shard) {
      say(`batch ${opts.batch} runs as micro-batches of ${this.micro} (same result as one batch)` +
        (this.micro < (opts.microBatch ?? Infinity) ? ': its widest activation exceeds this adapter\'s ' +
          `${gpu.limits.maxStorageBufferBindingSize}-byte storage binding limit` : ''));
    }
    this.total = Math.min(opts.epochs * this.stepsPerEpoch, opts.maxSteps ?? Infinity);
    this.rng = new Rng(opts.segmenter.seed ^ 0x7a11ed);
    const ls = opts.lossScale ?? opts.precision === 'f16';
    this.scaler = ls ? new LossScaler(ls === true ? {} : ls) : null;
    if (this.scaler) say(`dynamic loss scaling: initial scale ${this.scaler.scale}`);
    this.progress = new Progress('train', this.total);
  }

  /** Continues from a checkpoint's trainer and optimizer state. */
  restore(r: Resumed): void {
    const s = r.trainer;
    this.step = s.step;
    this.savedStep = s.step;
    this.bestDice = s.bestDice;
    this.history.push(...s.history);
    this.epochs.push(...s.epochs);
    this.rng.setState(s.rngState);
    this.loader.restore(s.loader);
    if (this.scaler && s.lossScale) this.scaler.setState(s.lossScale, join(r.dir, 'trainer.json'));
    const sizes = this.t.params.map(([, p]) => p.size);
    const fits = (labels: string[]) =>
      labels.every((n, i) => r.moments.get(`m.${n}`)?.data.length === sizes[i]);
    // Checkpoints written before the moments were labelled in the optimizer's order labelled
    // them in the model's order (same data, other names): read those as written.
    const legacy = this.t.model.trainable().map(([n]) => n);
    const labels = !fits(this.names) && fits(legacy) ? legacy : this.names;
    const m: Float32Array[] = [];
    const v: Float32Array[] = [];
    for (const n of labels) {
      const mm = r.moments.get(`m.${n}`);
      const vv = r.moments.get(`v.${n}`);
      if (!mm || !vv) throw new TrainingError(`${join(r.dir, 'optimizer.safetensors')}: no moments for ${n}`);
      m.push(mm.data);
      v.push(vv.data);
    }
    this.t.optim.loadStateDict({ ...s.optimizer, m, v });
  }

  close(): void {
    this.loader.close();
  }

  private lrs(): number[] {
    return this.t.optim.paramGroups.map((g) => g.lr);
  }

  /**
   * Forward + backward over the step's batches (accumulated); the step's mean loss. With several
   * replicas each takes a contiguous shard of every batch, concurrently; their gradients are
   * then summed into replica 0's (allReduceGradients).
   */
  private async forwardBackward(): Promise<number> {
    const { opts } = this;
    let stepLoss = 0;
    for (let a = 0; a < opts.accum; a++) {
      const batch = await this.loader.next();
      const shards = shardRanges(batch.count, this.replicas.length);
      // Dropout seeds: one device draws from the run's RNG as it goes (as before data
      // parallelism); several draw one seed per micro-batch up front, in a fixed order. Masks
      // then differ from a one-device run: only dropout-free runs are equal across device counts.
      const many = this.replicas.length > 1;
      const parts = shards.map(({ start, count }) => {
        const out: { start: number; count: number; rng: Rng }[] = [];
        for (let s = start; s < start + count; s += this.micro) {
          out.push({ start: s, count: Math.min(this.micro, start + count - s), rng: many ? new Rng(this.rng.seed()) : this.rng });
        }
        return out;
      });
      const values = await Promise.all(this.replicas.map(async (rep, r) => {
        const engine = rep.model.engine;
        let value = 0;
        for (const p of parts[r]) {
          const part = slice(batch, p.start, p.count, opts.size);
          // Each micro-batch's mean loss weighs by its share of the batch (and of accumulation).
          const weight = part.count / batch.count / opts.accum;
          // Loss scaling multiplies the loss (so every gradient) by the scale; unscaled later.
          const factor = weight * (this.scaler?.scale ?? 1);
          rep.model.reseedDropout(p.rng);
          const loss = engine.scope(() => {
            const x = engine.fromArray(part.images, [part.count, opts.size, opts.size, 3]);
            const y = engine.fromArray(part.masks, [part.count, opts.size, opts.size, 1]);
            const l = lossFn(opts.loss, rep.model.forward(x), y);
            return factor !== 1 ? scale(l, factor) : l;
          });
          engine.backward(loss);
          value += ((await loss.toArray())[0] / factor) * (part.count / batch.count);
          loss.release();
        }
        return value;
      }));
      stepLoss += values.reduce((x, y) => x + y, 0) / opts.accum;
      this.imgs += batch.count;
    }
    await allReduceGradients(this.replicas);
    return stepLoss;
  }

  /** L2 norm of all trainable parameters, computed on the GPU: NaN / Inf propagate through sums. */
  private async paramNorm(): Promise<number> {
    const engine = this.t.model.engine;
    const norm = engine.empty([1]);
    const coef = this.gpu.alloc(4, 'paramcheck.coef');
    const buffers = this.t.params.map(([, p]) => ({ buffer: p.buffer, n: p.size }));
    globalNormAndCoef(this.gpu, buffers, norm.buffer, coef, 1);
    this.gpu.free(coef);
    const value = (await norm.toArray())[0];
    norm.release();
    return value;
  }

  /**
   * One optimizer step. Loss and gradient norm are read back before the update: if either is
   * not finite the gradients are dropped and the step is skipped (logged); too many in a row
   * stop the run. Parameters are checked after the update, before anything can save them.
   */
  async trainStep(): Promise<'applied' | 'skipped'> {
    const { opts, t } = this;
    const factor = lrFactor(this.step, this.total, opts.warmup);
    t.optim.paramGroups.forEach((g, i) => (g.lr = t.baseLrs[i] * factor));
    const loss = await this.forwardBackward();
    opts.afterBackward?.(this.step, t.params);
    const { scaler } = this;
    // Unscaled before the norm, clipping and the optimizer (GradScaler.unscale_).
    if (scaler) unscaleGrads(t.params.map(([, p]) => p), scaler.scale);
    const normT = clipGradNorm(t.params.map(([, p]) => p), opts.clip > 0 ? opts.clip : F32_MAX);
    const gradNorm = (await normT.toArray())[0];
    normT.release();
    const scaleNow = scaler?.scale;
    if (scaler && Number.isFinite(loss) && !Number.isFinite(gradNorm) && !scaler.atFloor) {
      // A gradient overflow under loss scaling: expected now and then (GradScaler skips the step
      // and backs off); not a bad step unless the scale is already at its floor.
      t.optim.zeroGrad();
      this.skipped++;
      scaler.update(false);
      const what = `gradient overflow (norm ${gradNorm}) at loss scale ${scaleNow}`;
      this.run.log({ type: 'skip', step: this.step + 1, loss, gradNorm, lr: this.lrs(), reason: what,
        overflow: true, lossScale: scaleNow, nextLossScale: scaler.scale });
      this.say(`step ${this.step + 1}: ${what}, skipped; loss scale now ${scaler.scale}`);
      return 'skipped';
    }
    if (!Number.isFinite(loss) || !Number.isFinite(gradNorm)) {
      t.optim.zeroGrad();
      this.skipped++;
      this.badInRow++;
      // Non-finite gradients at the floor still back the tracker off (no growth after them).
      if (scaler && !Number.isFinite(gradNorm)) scaler.update(false);
      const what = !Number.isFinite(loss) ? `loss ${loss}` : `gradient norm ${gradNorm}` +
        (scaler ? ` at the loss scale's floor ${scaleNow}` : '');
      this.run.log({ type: 'skip', step: this.step + 1, loss, gradNorm, lr: this.lrs(), reason: what,
        ...(scaler ? { lossScale: scaleNow } : {}) });
      this.say(`step ${this.step + 1}: ${what}, skipped (not applied)`);
      if (this.badInRow >= (opts.maxBadSteps ?? 3)) {
        await this.diverged(`${this.badInRow} steps in a row had a non-finite loss or gradient (the last: ${what})`);
      }
      return 'skipped';
    }
    t.optim.step();
    t.optim.zeroGrad();
    scaler?.update(true);
    const pNorm = await this.paramNorm();
    if (!Number.isFinite(pNorm)) {
      // The update is in GPU memory but is never saved: the run stops here.
      await this.diverged(`the parameters' L2 norm became ${pNorm} after step ${this.step + 1} ` +
        '(a parameter is not finite or beyond ±1.8e19)');
    }
    await broadcastParameters(this.replicas);
    this.badInRow = 0;
    this.step++;
    this.lossEma = Number.isNaN(this.lossEma) ? loss : 0.9 * this.lossEma + 0.1 * loss;
    this.history.push({ step: this.step, loss });
    const ips = this.imgs / Math.max((Date.now() - this.t0) / 1000, 1e-9);
    this.run.log({ type: 'step', step: this.step, loss, lr: this.lrs(), gradNorm, paramNorm: pNorm,
      imagesPerSec: ips, ...(scaler ? { lossScale: scaleNow } : {}) });
    this.progress.update(this.step, { loss: this.lossEma, 'img/s': ips,
      ...(scaler ? { scale: scaler.scale } : {}) });
    return 'applied';
  }

  private async diverged(why: string): Promise<never> {
    const lrs = this.lrs().map((l) => l.toPrecision(3)).join(', ');
    const last = await this.run.lastGood();
    const msg = `training diverged at step ${this.step + 1}: ${why}; learning rates ${lrs} ` +
      `(head, encoder). Nothing of it was saved; the last good checkpoint is ` +
      `${last ? `${last} (step ${this.savedStep})` : 'none (no checkpoint was written yet)'}. ` +
      'Lower --lr / --head-lr, or check the data.';
    this.run.log({ type: 'diverged', step: this.step + 1, reason: why, lr: this.lrs(), lastGood: last });
    throw new TrainingError(msg);
  }

  /** True at an epoch's end or the run's last step. */
  atEpochEnd(): boolean {
    return this.step % this.stepsPerEpoch === 0 || this.step === this.total;
  }

  /** Validation (unless interrupted), then best/ (when Dice improved) and last/. */
  async endEpoch(validate: boolean): Promise<void> {
    const epoch = Math.ceil(this.step / this.stepsPerEpoch);
    let valDice = NaN;
    if (validate && this.data.val.length > 0) {
      this.lastVal = await evaluate(this.t.model, this.data.val, {
        size: this.opts.size,
        batch: this.opts.batch,
        maxBatches: this.opts.valBatches,
        skipBad: this.opts.skipBad,
        label: 'val  ',
      });
      valDice = this.lastVal.dice ?? NaN;
      this.threshold = this.lastVal.best?.threshold ?? 0.5;
      this.say(`epoch ${epoch}: loss ${this.lossEma.toFixed(4)}  val Dice ${fmt(valDice)} ` +
        `IoU ${fmt(this.lastVal.iou)} (best threshold ${this.threshold})`);
    }
    this.epochs.push({ epoch, step: this.step, loss: this.lossEma, valDice });
    this.run.log({ type: 'epoch', epoch, step: this.step, loss: this.lossEma, val: this.lastVal });
    // best/ first: a kill before last/ is saved replays this epoch, so its score is offered again.
    if (await this.run.offerBest(valDice, this.step, () => this.checkpointData(false))) {
      this.bestDice = valDice;
    }
    await this.saveLast(epoch);
  }

  async saveLast(epoch = Math.ceil(this.step / this.stepsPerEpoch)): Promise<void> {
    await this.run.saveLast(await this.checkpointData(true, epoch), this.step);
    this.savedStep = this.step;
  }

  async ensureBest(): Promise<void> {
    await this.run.ensureBest(this.step, () => this.checkpointData(false));
  }

  private adapterConfig(): AdapterConfig {
    const m = this.lastVal;
    return {
      format: 'sam2-lora-adapter',
      version: 1,
      segmenter: this.opts.segmenter,
      size: this.opts.size,
      threshold: this.threshold,
      baseCheckpoint: this.opts.checkpoint,
      metrics: m ? { dice: m.dice, iou: m.iou, precision: m.precision, recall: m.recall, best: m.best } : undefined,
    };
  }

  /** What a checkpoint holds: the adapter, plus (last/) optimizer and trainer state. */
  private async checkpointData(withState: boolean, epoch = 0): Promise<CheckpointData> {
    const trained = new Set(this.names);
    const adapter = await this.t.model.stateDict((n) => trained.has(n));
    const config = this.adapterConfig();
    if (!withState) return { adapter, config };
    const { m, v, ...rest } = await this.t.optim.stateDict();
    return {
      adapter,
      config,
      optimizer: { state: { ...rest, m, v }, names: this.names },
      trainer: {
        step: this.step,
        epoch,
        loader: this.loader.state(),
        rngState: this.rng.state(),
        bestDice: this.bestDice,
        history: this.history,
        epochs: this.epochs,
        optimizer: rest,
        options: runOptions(this.opts).options,
        ...(this.scaler ? { lossScale: this.scaler.state() } : {}),
      },
    };
  }
}

const fmt = (v: number | null | undefined) =>
  typeof v === 'number' && Number.isFinite(v) ? v.toFixed(4) : 'undefined';

// ---------------------------------------------------------------------------------------------
// The whole job.

/** Runs a whole training job; see TrainOptions. */
export async function train(input: TrainOptions): Promise<TrainResult> {
  const say = (s: string) => {
    if (!input.quiet) console.log(s);
  };
  const out = resolve(input.out);
  const sameRun = !!input.resume && resumeRunDir(input.resume) === out;
  const run = RunDir.open(out, { resume: sameRun, force: !!input.force, say });
  const interrupt = new Interrupt();
  let session: Session | null = null;
  const extraGpus: Gpu[] = [];
  try {
    const from = input.resume ? await openResume(input.resume, run, say) : null;
    const resumed = from?.state ?? null;
    const merged = from ? mergeResumed(input, from.saved, say) : input;
    let devices: (AdapterChoice | undefined)[] = [merged.adapter];
    if (typeof merged.gpus === 'string') {
      const r = await resolveDevices(merged.gpus, merged.adapter);
      devices = r.devices;
      say(`--gpus ${merged.gpus}: ${r.note}`);
    } else if (merged.gpus?.length) devices = merged.gpus;
    // Replica 0 uses the process-wide device; the others get devices of their own.
    const gpu: Gpu = await getGpu(devices[0]);
    for (const d of devices.slice(1)) extraGpus.push(await Gpu.open(d));
    for (const g of [gpu, ...extraGpus]) {
      say(`adapter: ${g.info.description}${g.info.cpuFallback ? ' (CPU fallback: slow)' : ''}`);
    }
    let chosen: { precision: Precision; reason: string };
    try {
      chosen = resolvePrecision(merged.precision, [gpu, ...extraGpus]);
    } catch (e) {
      if (!(e instanceof PrecisionError) || !resumed) throw e;
      const without = [gpu, ...extraGpus].filter((g) => !g.features.has('shader-f16'));
      throw new TrainingError(`--resume ${merged.resume}: the run trains in ${merged.precision}, which a ` +
        `resumed run keeps, but ${without.map((g) => g.info.description).join(', ')} does not offer ` +
        'shader-f16: resume it on an adapter that does (see `sam2-lora info`)');
    }
    const opts: TrainOptions = { ...merged, precision: chosen.precision };
    say(`precision: ${chosen.precision} (${chosen.reason})`);
    // Recorded before any step: a run killed before its first checkpoint restarts from these.
    run.log({ type: resumed ? 'resume' : 'start', demo: opts.demo, run: runOptions(opts) });
    if (devices.length > opts.batch) {
      throw new TrainingError(`--gpus: ${devices.length} devices for a batch of ${opts.batch}: ` +
        'each device needs at least one image of every batch (raise --batch)');
    }
    if (devices.length > 1) say(`data parallel: each batch of ${opts.batch} split over ${devices.length} devices`);
    const data = await checkedData(opts, opts.segmenter.seed, say);
    const trainable = await setupModel(new Engine(gpu), opts, resumed, say);
    const others: Replica[] = [];
    for (const g of extraGpus) others.push(await setupReplica(new Engine(g), opts, trainable));
    await broadcastParameters([{ gpu, params: trainable.params }, ...others]);
    session = new Session(opts, run, gpu, trainable, data, say, others);
    if (resumed) session.restore(resumed);
    if (resumed && session.step >= session.total) {
      say(`the run is complete at step ${session.step}; give a larger --epochs / --max-steps to extend it`);
    }
    run.log({ type: 'plan', step: session.step, total: session.total, stepsPerEpoch: session.stepsPerEpoch,
      devices: devices.length });
    const stopped = await trainLoop(session, opts, interrupt);
    if (session.step > session.savedStep && session.step > 0) await session.saveLast();
    const peak = gpu.pool.stats.peakLiveBytes / 2 ** 20;
    // Interrupted before the first step: nothing to keep.
    const discarded = session.savedStep < 0 && run.discardIfEmpty();
    if (discarded) say(`removed ${out}: interrupted before the first step`);
    else {
      await session.ensureBest();
      await plotRun(out, session.history, session.epochs);
      run.log({ type: 'end', step: session.step, interrupted: stopped, skipped: session.skipped, peakMiB: peak,
        precision: opts.precision });
      say(`${stopped ? 'interrupted' : 'done'} after ${session.step} steps; peak GPU memory ` +
        `${peak.toFixed(0)} MiB (${opts.precision}); checkpoints: ${run.lastDir} (resume), ${run.bestDir} (best)`);
    }
    return {
      out,
      steps: session.step,
      finalLoss: session.history.length ? session.history[session.history.length - 1].loss : NaN,
      bestDice: (await run.bestScore()) ?? -1,
      lastDir: run.lastDir,
      bestDir: run.bestDir,
      val: session.lastVal,
      history: session.history,
      interrupted: stopped,
      signal: interrupt.signal,
      skippedSteps: session.skipped,
      badSamples: data.bad ?? [],
      precision: opts.precision as Precision,
    };
  } catch (e) {
    throw await failed(e, run, session);
  } finally {
    interrupt.remove();
    session?.close();
    run.release();
    for (const g of extraGpus) await g.shutdown();
  }
}

/** Steps until the end, a signal or stopAfter; checkpoints at each epoch's end. */
async function trainLoop(s: Session, opts: TrainOptions, interrupt: Interrupt): Promise<boolean> {
  let sessionSteps = 0;
  let stop = false;
  while (s.step < s.total && !interrupt.signal && !stop) {
    if ((await s.trainStep()) === 'skipped') continue;
    if (opts.stopAfter !== undefined && ++sessionSteps >= opts.stopAfter) stop = true;
    const interrupted = stop || !!interrupt.signal;
    if (s.atEpochEnd() || interrupted) await s.endEpoch(!interrupted);
  }
  return stop || !!interrupt.signal;
}

/** The error to report: where the finished work is; an empty new folder is removed. */
async function failed(e: unknown, run: RunDir, session: Session | null): Promise<unknown> {
  if (!session || session.savedStep < 0) {
    if (run.discardIfEmpty()) {
      process.stderr.write(`removed ${run.path}: the run failed before its first checkpoint\n`);
    }
  }
  if (e instanceof GpuError) {
    const last = await run.lastGood();
    const where = last
      ? `the last good checkpoint is ${last} (resume with --resume ${run.path})`
      : 'no checkpoint was written yet';
    return new TrainingError(`${e.message} (at step ${session?.step ?? 0}); ${where}`);
  }
  return e;
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
