/** Building a Segmenter and loading SAM2 base weights and adapters into it. */
import { existsSync } from 'node:fs';
import type { Engine } from '../autograd/tensor.js';
import { readCheckpoint, type StateDict } from '../io/pt.js';
import { readSafetensors } from '../io/safetensors.js';
import type { AdapterConfig } from '../train/checkpoint.js';
import { Segmenter, type SegmenterConfig } from './segmenter.js';

/**
 * Reads SAM2 image-encoder weights: an official `.pt` (the `model` wrapper and `image_encoder.`
 * prefix are handled) or a safetensors file with or without the `image_encoder.` prefix.
 */
export async function readEncoderWeights(path: string): Promise<StateDict> {
  if (!existsSync(path)) throw new Error(`${path}: checkpoint not found`);
  if (path.endsWith('.safetensors')) {
    const { tensors } = await readSafetensors(path);
    const prefixed = [...tensors.keys()].some((k) => k.startsWith('image_encoder.'));
    if (!prefixed) return tensors;
    const out: StateDict = new Map();
    for (const [k, v] of tensors) {
      if (k.startsWith('image_encoder.')) out.set(k.slice('image_encoder.'.length), v);
    }
    return out;
  }
  const sd = await readCheckpoint(path, { prefix: 'image_encoder.' });
  if (sd.size === 0) {
    // Some exports (e.g. an encoder saved on its own) have no prefix.
    return readCheckpoint(path);
  }
  return sd;
}

/** Loads base encoder weights strictly: every SAM2 key must be present with its shape. */
export async function loadBaseWeights(model: Segmenter, path: string): Promise<void> {
  const sd = await readEncoderWeights(path);
  // LoRA keys are ours, not SAM2's: they may be absent from a base checkpoint.
  model.image_encoder.loadStateDict(sd, {
    source: path,
    allowMissing: (n) => n.includes('.lora_'),
  });
}

/** Loads an adapter's tensors (LoRA + head, or more) into a model built from its config. */
export function loadAdapterTensors(model: Segmenter, tensors: StateDict, source: string): void {
  const params = new Set(model.namedParameters().map(([n]) => n));
  const unknown = [...tensors.keys()].filter((k) => !params.has(k));
  if (unknown.length) throw new Error(`${source}: adapter keys not in the model: ${unknown.join(', ')}`);
  model.loadStateDict(tensors, { strict: false, source });
}

export function buildSegmenter(engine: Engine, cfg: SegmenterConfig): Segmenter {
  return new Segmenter(engine, cfg);
}

export type { AdapterConfig };
