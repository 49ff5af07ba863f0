/**
 * Training checkpoints. A checkpoint directory holds:
 *  - adapter.safetensors: what the mode trains (LoRA + head for `lora`), a few MB;
 *  - adapter.json: the model/adapter config needed to rebuild the model for eval/predict;
 *  - optimizer.safetensors + trainer.json (only in `last/`): AdamW moments, step, loader and RNG
 *    state, so `--resume` continues exactly;
 *  - manifest.json, written last: every file's size and sha256, the step and (for best/) the
 *    score. A directory whose manifest verifies is complete; anything else is not.
 * A save writes `X.tmp-<pid>` fully (each file fsynced), then renames X → `X.old-<pid>`,
 * tmp → X, and removes the old one. A kill at any instant leaves at least one complete
 * checkpoint among X, X.old-*, X.tmp-*; recoverCheckpoint() puts the newest back in place.
 */
import { existsSync } from 'node:fs';
import { mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { readSafetensors, writeSafetensors } from '../io/safetensors.js';
import type { StateDict } from '../io/pt.js';
import type { LoaderState } from '../data/loader.js';
import type { SegmenterConfig } from '../model/segmenter.js';
import { type AdapterConfig, writeAdapterFiles } from '../adapter/adapter.js';
import {
  type CheckpointManifest, type FoundCheckpoint, MANIFEST, candidates, findCheckpoint, sha256,
} from '../adapter/manifest.js';
import { failpoint } from './failpoint.js';
import type { AdamWStateDict } from './optim.js';
import type { LossScaleState } from './loss-scale.js';
import { fsyncPath } from '../io/atomic.js';

export interface TrainerState {
  step: number;
  epoch: number;
  loader: LoaderState;
  rngState: number;
  bestDice: number;
  history: { step: number; loss: number }[];
  epochs: { epoch: number; step: number; loss: number; valDice: number }[];
  optimizer: Omit<AdamWStateDict, 'm' | 'v'>;
  /** The run's training options, restored on resume so it continues exactly. */
  options?: Record<string, unknown>;
  /** Dynamic loss scaling's scale and growth tracker (runs with loss scaling). */
  lossScale?: LossScaleState;
}

export interface CheckpointData {
  adapter: StateDict;
  config: AdapterConfig;
  optimizer?: { state: AdamWStateDict; names: string[] };
  trainer?: TrainerState;
}

/**
 * Writes a checkpoint directory so that a kill at any instant leaves a complete one findable:
 * tmp written and fsynced with its manifest last, then old → X.old-<pid>, tmp → X, old removed.
 */
export async function saveCheckpoint(
  dir: string,
  data: CheckpointData,
  meta: { step: number; score?: number | null } = { step: data.trainer?.step ?? 0 },
): Promise<void> {
  const target = basename(dir);
  const tmp = `${dir}.tmp-${process.pid}`;
  await rm(tmp, { recursive: true, force: true });
  await mkdir(tmp, { recursive: true });
  const files: string[] = [];
  const done = async (name: string) => {
    await fsyncPath(join(tmp, name));
    files.push(name);
    failpoint(target, 'write');
  };
  for (const name of await writeAdapterFiles(tmp, data.adapter, data.config)) await done(name);
  if (data.optimizer && data.trainer) {
    const t: StateDict = new Map();
    const { state, names } = data.optimizer;
    names.forEach((n, i) => {
      t.set(`m.${n}`, { shape: [state.m[i].length], data: state.m[i] });
      t.set(`v.${n}`, { shape: [state.v[i].length], data: state.v[i] });
    });
    await writeSafetensors(join(tmp, 'optimizer.safetensors'), t);
    await done('optimizer.safetensors');
    await writeFile(join(tmp, 'trainer.json'), `${JSON.stringify(data.trainer)}\n`);
    await done('trainer.json');
  }
  const manifest: CheckpointManifest = {
    format: 'sam2-lora-checkpoint',
    version: 1,
    step: meta.step,
    score: meta.score ?? null,
    savedAt: Date.now(),
    files: await Promise.all(files.map(async (name) => ({
      name,
      size: (await stat(join(tmp, name))).size,
      sha256: await sha256(join(tmp, name)),
    }))),
  };
  await writeFile(join(tmp, MANIFEST), `${JSON.stringify(manifest, null, 2)}\n`);
  await fsyncPath(join(tmp, MANIFEST));
  await fsyncPath(tmp);
  failpoint(target, 'manifest');
  await mkdir(dirname(dir), { recursive: true });
  const old = `${dir}.old-${process.pid}`;
  await rm(old, { recursive: true, force: true });
  if (existsSync(dir)) {
    await rename(dir, old);
    failpoint(target, 'rename-old');
  }
  await rename(tmp, dir);
  await fsyncPath(dirname(dir));
  failpoint(target, 'rename-new');
  await rm(old, { recursive: true, force: true });
  failpoint(target, 'remove-old');
}

/**
 * findCheckpoint(), then puts the newest complete checkpoint at `dir` and removes the others
 * (older or incomplete leftovers of an interrupted save), saying what it did. Only for the
 * process that holds the run's lock.
 */
export async function recoverCheckpoint(
  dir: string,
  say: (s: string) => void,
): Promise<FoundCheckpoint | null> {
  const r = await findCheckpoint(dir);
  if (!r) {
    for (const p of candidates(dir)) {
      await rm(p, { recursive: true, force: true });
      say(`removed ${p}: an unfinished first save`);
    }
    return null;
  }
  const { found, others } = r;
  if (found.path !== dir) {
    const stale = `${dir}.stale-${process.pid}`;
    if (existsSync(dir)) await rename(dir, stale);
    await rename(found.path, dir);
    await fsyncPath(dirname(dir));
    say(`recovered ${dir} from ${basename(found.path)} (step ${found.manifest?.step}): a save ` +
      'was interrupted');
    if (existsSync(stale)) others.push(stale);
  }
  for (const p of others.filter((o) => o !== dir)) {
    await rm(p, { recursive: true, force: true });
    say(`removed ${p}: left over from an interrupted save`);
  }
  return { path: dir, manifest: found.manifest };
}

/** Reads the resume state of a checkpoint directory written with optimizer state. */
export async function loadResumeState(
  dir: string,
): Promise<{ trainer: TrainerState; moments: StateDict }> {
  const tj = join(dir, 'trainer.json');
  if (!existsSync(tj)) throw new Error(`${dir}: no trainer.json, cannot resume from it`);
  let trainer: TrainerState;
  try {
    trainer = JSON.parse(await readFile(tj, 'utf8')) as TrainerState;
  } catch (e) {
    throw new Error(`${tj}: not valid JSON (${(e as Error).message}); cannot resume from it`);
  }
  const problem = trainerStateProblem(trainer);
  if (problem) throw new Error(`${tj}: ${problem}; cannot resume from it`);
  const of = join(dir, 'optimizer.safetensors');
  if (!existsSync(of)) throw new Error(`${of}: missing, cannot resume from ${dir}`);
  try {
    const { tensors } = await readSafetensors(of);
    return { trainer, moments: tensors };
  } catch (e) {
    const msg = (e as Error).message;
    throw new Error(msg.includes(of) ? msg : `${of}: ${msg}`);
  }
}

/** What is wrong with a parsed trainer.json, or null. */
function trainerStateProblem(t: TrainerState): string | null {
  if (typeof t !== 'object' || t === null) return 'not a JSON object';
  if (!Number.isInteger(t.step) || t.step < 0) return `step is ${JSON.stringify(t.step)}, not a count`;
  if (!Array.isArray(t.history)) return 'history is missing or not a list';
  if (!Array.isArray(t.epochs)) return 'epochs is missing or not a list';
  if (typeof t.loader !== 'object' || t.loader === null) return 'loader state is missing';
  if (typeof t.rngState !== 'number') return 'rngState is missing';
  if (typeof t.optimizer !== 'object' || t.optimizer === null) return 'optimizer state is missing';
  return null;
}

