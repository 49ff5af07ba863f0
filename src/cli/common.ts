/** Helpers shared by CLI commands: option parsing and model loading from adapters. */
import { Engine } from '../autograd/tensor.js';
import type { AdapterChoice } from '../gpu/dawn.js';
import { getGpu } from '../gpu/runtime.js';
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

export interface LoadedModel {
  model: Segmenter;
  config: AdapterConfig;
  engine: Engine;
}

/**
 * Rebuilds the model an adapter was trained with: its base checkpoint (or `checkpoint` when the
 * user overrides it: the file may have moved), then the adapter's tensors.
 */
export async function modelFromAdapter(
  adapterPath: string,
  opts: { checkpoint?: string; adapter?: AdapterChoice },
): Promise<LoadedModel> {
  const { tensors, config } = await loadAdapter(adapterPath);
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
