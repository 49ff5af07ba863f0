/**
 * Training checkpoints. A checkpoint directory holds:
 *  - adapter.safetensors: what the mode trains (LoRA + head for `lora`), a few MB;
 *  - adapter.json: the model/adapter config needed to rebuild the model for eval/predict;
 *  - optimizer.safetensors + trainer.json (only in `last/`): AdamW moments, step, loader and RNG
 *    state, so `--resume` continues exactly.
 * A directory is written beside its final name and renamed into place, so Ctrl-C or a crash
 * leaves the previous checkpoint intact.
 */
import { existsSync } from 'node:fs';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { readSafetensors, writeSafetensors } from '../io/safetensors.js';
import type { StateDict } from '../io/pt.js';
import type { LoaderState } from '../data/loader.js';
import type { SegmenterConfig } from '../model/segmenter.js';
import type { AdamWStateDict } from './optim.js';

export interface AdapterConfig {
  format: 'sam2-lora-adapter';
  version: 1;
  segmenter: SegmenterConfig;
  /** Model input side the adapter was trained at. */
  size: number;
  /** Best decision threshold found on the validation split (0.5 if none). */
  threshold: number;
  /** The base checkpoint (null: random initialisation). */
  baseCheckpoint: string | null;
  metrics?: Record<string, unknown>;
}

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
}

export interface CheckpointData {
  adapter: StateDict;
  config: AdapterConfig;
  optimizer?: { state: AdamWStateDict; names: string[] };
  trainer?: TrainerState;
}

/** Writes a checkpoint directory atomically (tmp dir, then rename over the old one). */
export async function saveCheckpoint(dir: string, data: CheckpointData): Promise<void> {
  const tmp = `${dir}.tmp-${process.pid}`;
  await rm(tmp, { recursive: true, force: true });
  await mkdir(tmp, { recursive: true });
  await writeSafetensors(join(tmp, 'adapter.safetensors'), data.adapter, {
    format: 'sam2-lora-adapter',
    config: JSON.stringify(data.config),
  });
  await writeFile(join(tmp, 'adapter.json'), `${JSON.stringify(data.config, null, 2)}\n`);
  if (data.optimizer && data.trainer) {
    const t: StateDict = new Map();
    const { state, names } = data.optimizer;
    names.forEach((n, i) => {
      t.set(`m.${n}`, { shape: [state.m[i].length], data: state.m[i] });
      t.set(`v.${n}`, { shape: [state.v[i].length], data: state.v[i] });
    });
    await writeSafetensors(join(tmp, 'optimizer.safetensors'), t);
    await writeFile(join(tmp, 'trainer.json'), `${JSON.stringify(data.trainer)}\n`);
  }
  await mkdir(dirname(dir), { recursive: true });
  const old = `${dir}.old-${process.pid}`;
  if (existsSync(dir)) await rename(dir, old);
  await rename(tmp, dir);
  await rm(old, { recursive: true, force: true });
}

/** Reads an adapter (a checkpoint directory or its adapter.safetensors). */
export async function loadAdapter(path: string): Promise<{ tensors: StateDict; config: AdapterConfig }> {
  const file = path.endsWith('.safetensors') ? path : join(path, 'adapter.safetensors');
  if (!existsSync(file)) throw new Error(`${file}: adapter not found`);
  const { tensors, metadata } = await readSafetensors(file);
  if (metadata.format !== 'sam2-lora-adapter' || !metadata.config) {
    throw new Error(`${file}: not a sam2-lora adapter (missing format/config metadata)`);
  }
  let config: AdapterConfig;
  try {
    config = JSON.parse(metadata.config) as AdapterConfig;
  } catch {
    throw new Error(`${file}: adapter config metadata is not valid JSON`);
  }
  return { tensors, config };
}

/** Reads the resume state of a checkpoint directory written with optimizer state. */
export async function loadResumeState(
  dir: string,
): Promise<{ trainer: TrainerState; moments: StateDict }> {
  const tj = join(dir, 'trainer.json');
  if (!existsSync(tj)) throw new Error(`${dir}: no trainer.json, cannot resume from it`);
  const trainer = JSON.parse(await readFile(tj, 'utf8')) as TrainerState;
  const { tensors } = await readSafetensors(join(dir, 'optimizer.safetensors'));
  return { trainer, moments: tensors };
}
