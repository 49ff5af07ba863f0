/** Helpers shared by CLI commands: option parsing and model loading from adapters. */
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Engine } from '../autograd/tensor.js';
import type { AdapterChoice } from '../gpu/dawn.js';
import { getGpu } from '../gpu/runtime.js';
import { fileError } from '../io/fs-errors.js';
import type { StateDict } from '../io/pt.js';
import { encoderConfig, widestActivationBytes } from '../model/config.js';
import { loadAdapterTensors, loadBaseWeights } from '../model/load.js';
import { Segmenter } from '../model/segmenter.js';
import { type AdapterConfig, loadAdapter } from '../train/checkpoint.js';

export class UsageError extends Error {}

export function int(name: string, v: string | number | undefined, min = 1): number {
  const n = typeof v === 'number' ? v : Number(v);
  if (!Number.isInteger(n) || n < min) throw new UsageError(`--${name} must be an integer >= ${min}, got ${v}`);
  return n;
}

export function num(name: string, v: string | number | undefined, min = 0): number {
  const n = typeof v === 'number' ? v : Number(v);
  if (!Number.isFinite(n) || n < min) throw new UsageError(`--${name} must be a number >= ${min}, got ${v}`);
  return n;
}

/** A probability in [0, 1) (dropout: 1 would drop everything). */
export function fraction(name: string, v: string | number | undefined): number {
  const n = typeof v === 'number' ? v : Number(v);
  if (!Number.isFinite(n) || n < 0 || n >= 1) {
    throw new UsageError(`--${name} must be a number in [0, 1), got ${v}`);
  }
  return n;
}

/**
 * Checks `--size` at the command line: a multiple of 32, at least 32, and small enough that one
 * image's widest activation fits the adapter's storage binding limit (else it names the largest
 * size that does).
 */
export async function checkInputSize(
  size: number,
  model: string,
  bindingLimit: () => Promise<number>,
): Promise<void> {
  if (!(Number.isInteger(size) && size >= 32 && size % 32 === 0)) {
    throw new UsageError(`--size must be a multiple of 32 and at least 32, got ${size}`);
  }
  const enc = encoderConfig(model);
  const need = widestActivationBytes(enc, size);
  const limit = await bindingLimit();
  if (need <= limit) return;
  let fits = size;
  while (fits > 32 && widestActivationBytes(enc, fits) > limit) fits -= 32;
  const mb = (b: number) => `${(b / 2 ** 20).toFixed(0)} MiB`;
  throw new UsageError(`--size ${size} is too large for this GPU adapter: one image's widest ` +
    `activation (SAM2 ${model}) takes ${mb(need)}, above its maxStorageBufferBindingSize of ` +
    `${mb(limit)}; the largest size that fits is ${fits}`);
}

export interface LoadedModel {
  model: Segmenter;
  config: AdapterConfig;
  engine: Engine;
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
    throw new UsageError(`${path}: a run folder, not an adapter: give ${join(path, 'best')} ` +
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
      throw new UsageError(`${file}: tensor ${name} holds ${bad} non-finite value(s) ` +
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
  opts: { checkpoint?: string; adapter?: AdapterChoice },
): Promise<LoadedModel> {
  const file = adapterFile(adapterPath);
  const { tensors, config } = await loadAdapter(adapterPath);
  checkFinite(tensors, file);
  const engine = new Engine(await getGpu(opts.adapter));
  const model = new Segmenter(engine, config.segmenter);
  const base = opts.checkpoint ?? config.baseCheckpoint;
  if (base) await loadBaseWeights(model, base);
  else {
    console.warn(`${adapterPath}: trained on a randomly initialised encoder (no SAM2 weights); ` +
      'the model is rebuilt from the same seed');
  }
  loadAdapterTensors(model, tensors, adapterPath);
  model.train(false);
  return { model, config, engine };
}
