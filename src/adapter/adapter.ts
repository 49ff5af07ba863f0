/**
 * Trained adapters: what a run's `best/` or `last/` holds for inference (`adapter.safetensors`,
 * with its config also in the file's metadata, and `adapter.json` for people). One module below
 * the trainer and the CLI: writing and reading the files, the finiteness check, and rebuilding
 * the model an adapter was trained with.
 */
import { existsSync, statSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Engine } from '../autograd/tensor.js';
import type { AdapterChoice } from '../gpu/dawn.js';
import { getGpu } from '../gpu/runtime.js';
import { fileError } from '../io/fs-errors.js';
import type { StateDict } from '../io/pt.js';
import { readSafetensors, writeSafetensors } from '../io/safetensors.js';
import { loadAdapterTensors, loadBaseWeights } from '../model/load.js';
import { candidates, findCheckpoint } from './manifest.js';
import { Segmenter, type SegmenterConfig } from '../model/segmenter.js';
import { type Precision, resolvePrecision } from '../model/precision.js';

/** A user-facing problem with an adapter file (the CLI prints the message alone). */
export class AdapterError extends Error {}

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

/**
 * Writes an adapter's two files into `dir` (which must exist) and returns their names; the
 * caller (a checkpoint save) fsyncs and lists them in its manifest.
 */
export async function writeAdapterFiles(
  dir: string,
  tensors: StateDict,
  config: AdapterConfig,
): Promise<string[]> {
  await writeSafetensors(join(dir, 'adapter.safetensors'), tensors, {
    format: 'sam2-lora-adapter',
    config: JSON.stringify(config),
  });
  await writeFile(join(dir, 'adapter.json'), `${JSON.stringify(config, null, 2)}\n`);
  return ['adapter.safetensors', 'adapter.json'];
}

/**
 * The adapter file to read for `path` (a checkpoint folder or its adapter.safetensors). A folder
 * with a manifest is verified (sizes and sha256: a corrupt or half-copied adapter is refused,
 * naming the file). When a save into the folder was interrupted, the newest complete folder the
 * save left (`X.old-*`, `X.tmp-*`) is read instead, with a note; nothing is moved (the run's next
 * `--resume` puts it back in place).
 */
export async function locateAdapter(path: string, say: (s: string) => void = console.warn): Promise<string> {
  if (path.endsWith('.safetensors')) return adapterFile(path);
  const own = existsSync(join(path, 'adapter.safetensors'));
  if (!own && candidates(path).every((p) => p === path)) return adapterFile(path);
  let found;
  try {
    found = await findCheckpoint(path);
  } catch (e) {
    throw new AdapterError((e as Error).message);
  }
  if (!found) return adapterFile(path);
  if (found.found.path !== path) {
    say(`${path}: a save into it was interrupted; reading the complete checkpoint ` +
      `${found.found.path} (step ${found.found.manifest?.step}) instead`);
  }
  return join(found.found.path, 'adapter.safetensors');
}

/** Reads an adapter (a checkpoint folder or its adapter.safetensors; see locateAdapter). */
export async function loadAdapter(
  path: string,
  say?: (s: string) => void,
): Promise<{ tensors: StateDict; config: AdapterConfig; file: string }> {
  const file = await locateAdapter(path, say);
  const { tensors, metadata } = await readSafetensors(file);
  if (metadata.format !== 'sam2-lora-adapter' || !metadata.config) {
    throw new AdapterError(`${file}: not a sam2-lora adapter (missing format/config metadata)`);
  }
  let config: AdapterConfig;
  try {
    config = JSON.parse(metadata.config) as AdapterConfig;
  } catch {
    throw new AdapterError(`${file}: adapter config metadata is not valid JSON`);
  }
  return { tensors, config, file };
}

export interface LoadedModel {
  model: Segmenter;
  config: AdapterConfig;
  engine: Engine;
  /** The encoder's precision, and why it was chosen. */
  precision: { precision: Precision; reason: string };
}

/**
 * The adapter file an adapter argument names (a checkpoint folder such as runs/X/best, or its
 * adapter.safetensors), checked before loading: errno causes named, a run folder pointed at its
 * best/ and last/.
 */
export function adapterFile(path: string): string {
  let st;
  try {
    st = statSync(path);
  } catch (e) {
    throw fileError(path, e, 'an adapter (a checkpoint folder such as runs/X/best, or its ' +
      'adapter.safetensors)');
  }
  if (!st.isDirectory()) return path;
  const file = join(path, 'adapter.safetensors');
  if (!existsSync(file) && existsSync(join(path, 'best'))) {
    throw new AdapterError(`${path}: a run folder, not an adapter: give ${join(path, 'best')} ` +
      `(or ${join(path, 'last')})`);
  }
  return file;
}

/**
 * Refuses an adapter holding NaN or Inf (a diverged run): it would predict garbage silently.
 * Names the file, the tensor, how many values and the first index.
 */
export function checkFinite(tensors: StateDict, file: string): void {
  for (const [name, t] of tensors) {
    let bad = 0;
    let first = -1;
    for (let i = 0; i < t.data.length; i++) {
      if (!Number.isFinite(t.data[i])) {
        if (first < 0) first = i;
        bad++;
      }
    }
    if (bad) {
      throw new AdapterError(`${file}: tensor ${name} holds ${bad} non-finite value(s) ` +
        `(first ${t.data[first]} at index ${first}): the run that wrote it diverged; refusing ` +
        'to use it (take an earlier checkpoint)');
    }
  }
}

/**
 * Rebuilds the model an adapter was trained with: its base checkpoint (or `checkpoint` when the
 * user overrides it: the file may have moved), then the adapter's tensors.
 */
export async function modelFromAdapter(
  adapterPath: string,
  opts: { checkpoint?: string; adapter?: AdapterChoice; precision?: Precision | 'auto' },
): Promise<LoadedModel> {
  const { tensors, config, file } = await loadAdapter(adapterPath);
  checkFinite(tensors, file);
  const gpu = await getGpu(opts.adapter);
  // Before any weight is read: a forced f16 on an adapter without shader-f16 fails at once.
  const precision = resolvePrecision(opts.precision, [gpu]);
  const engine = new Engine(gpu);
  const model = new Segmenter(engine, config.segmenter);
  const base = opts.checkpoint ?? config.baseCheckpoint;
  if (base) await loadBaseWeights(model, base);
  else {
    console.warn(`${adapterPath}: trained on a randomly initialised encoder (no SAM2 weights); ` +
      'the model is rebuilt from the same seed');
  }
  loadAdapterTensors(model, tensors, adapterPath);
  if (precision.precision === 'f16') model.setPrecision('f16', false);
  model.train(false);
  return { model, config, engine, precision };
}
