/** Building a Segmenter and loading SAM2 base weights and adapters into it. */
import type { Engine } from '../autograd/tensor.js';
import { expectPath } from '../io/fs-errors.js';
import { CheckpointError, listCheckpoint, readCheckpoint, type StateDict } from '../io/pt.js';
import { listSafetensors, readSafetensors } from '../io/safetensors.js';
import { MODEL_CONFIGS, NANO_CONFIG, type EncoderConfig } from './config.js';
import { encoderKeys } from './keys.js';
import { Segmenter, type SegmenterConfig } from './segmenter.js';

/**
 * Reads SAM2 image-encoder weights: an official `.pt` (the `model` wrapper and `image_encoder.`
 * prefix are handled) or a safetensors file with or without the `image_encoder.` prefix.
 */
export async function readEncoderWeights(path: string): Promise<StateDict> {
  expectPath(path, 'file', 'a SAM2 checkpoint (.pt or .safetensors)');
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

/** Encoder names and shapes of a checkpoint, from its header/pickle alone (no tensor data). */
export async function listEncoderWeights(path: string): Promise<Map<string, number[]>> {
  expectPath(path, 'file', 'a SAM2 checkpoint (.pt or .safetensors)');
  const strip = (entries: { name: string; shape: number[] }[], prefix: string) => {
    const has = entries.some((e) => e.name.startsWith(prefix));
    return new Map(entries.filter((e) => !has || e.name.startsWith(prefix))
      .map((e) => [has ? e.name.slice(prefix.length) : e.name, e.shape]));
  };
  if (path.endsWith('.safetensors')) {
    return strip((await listSafetensors(path)).entries, 'image_encoder.');
  }
  const sd = await listCheckpoint(path, { prefix: 'image_encoder.' });
  return new Map((sd.length ? sd : await listCheckpoint(path)).map((e) => [e.name, e.shape]));
}

const ALL_CONFIGS: EncoderConfig[] = [...Object.values(MODEL_CONFIGS), NANO_CONFIG];

/**
 * The model size these encoder keys look like: the config whose every key is present with its
 * shape, else one with the same patch-embedding width and block count; null when none fits.
 */
export function guessModelSize(got: Map<string, number[]>): string | null {
  for (const cfg of ALL_CONFIGS) {
    const keys = encoderKeys(cfg);
    if ([...keys].every(([k, s]) => got.get(k)?.join() === s.join())) return cfg.name;
  }
  const width = got.get('trunk.patch_embed.proj.weight')?.[0];
  const blocks = new Set([...got.keys()].map((k) => /^trunk\.blocks\.(\d+)\./.exec(k)?.[1])
    .filter((b) => b !== undefined)).size;
  const cfg = ALL_CONFIGS.find((c) =>
    c.trunk.embedDim === width && c.trunk.stages.reduce((a, b) => a + b, 0) === blocks);
  return cfg ? cfg.name : null;
}

/** What a shape map says about itself: "patch-embed width 96, 12 blocks". */
function describeKeys(got: Map<string, number[]>): string {
  const width = got.get('trunk.patch_embed.proj.weight')?.[0];
  const blocks = new Set([...got.keys()].map((k) => /^trunk\.blocks\.(\d+)\./.exec(k)?.[1])
    .filter((b) => b !== undefined)).size;
  return `${got.size} encoder tensors, patch-embed width ${width ?? '?'}, ${blocks} blocks`;
}

const few = (list: string[], n = 6) =>
  list.slice(0, n).join(', ') + (list.length > n ? ` and ${list.length - n} more` : '');

/**
 * Compares a checkpoint's encoder shapes with the model's before any tensor is read: a checkpoint
 * of another size says which ("looks like SAM2 small") instead of listing hundreds of keys.
 */
export function checkEncoderShapes(
  model: Segmenter,
  got: Map<string, number[]>,
  path: string,
): void {
  const expected = new Map(model.image_encoder.namedParameters()
    .filter(([n]) => !n.includes('.lora_'))
    .map(([n, t]) => [n, [...t.shape]]));
  const missing = [...expected.keys()].filter((k) => !got.has(k));
  const unexpected = [...got.keys()].filter((k) => !expected.has(k));
  const misShaped = [...expected].filter(([k, s]) => got.has(k) && got.get(k)!.join() !== s.join())
    .map(([k, s]) => `${k}: expected [${s.join(', ')}], got [${got.get(k)!.join(', ')}]`);
  if (!missing.length && !unexpected.length && !misShaped.length) return;
  const ours = model.image_encoder.cfg.name;
  const guess = guessModelSize(got);
  if (guess && guess !== ours) {
    throw new CheckpointError(path, `looks like SAM2 ${guess} (${describeKeys(got)}), but the ` +
      `model is SAM2 ${ours}: pass --model ${guess} (or a SAM2 ${ours} checkpoint)`);
  }
  const lines = [`does not match the SAM2 ${ours} image encoder (${describeKeys(got)})`];
  if (missing.length) lines.push(`  ${missing.length} missing keys: ${few(missing)}`);
  if (unexpected.length) lines.push(`  ${unexpected.length} unexpected keys: ${few(unexpected)}`);
  if (misShaped.length) lines.push(`  ${misShaped.length} shape mismatches: ${few(misShaped, 4)}`);
  throw new CheckpointError(path, lines.join('\n'));
}

/**
 * Loads base encoder weights strictly: every SAM2 key must be present with its shape, checked from
 * the file's header before any tensor is read (so a wrong or hostile file allocates nothing).
 */
export async function loadBaseWeights(model: Segmenter, path: string): Promise<void> {
  checkEncoderShapes(model, await listEncoderWeights(path), path);
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

