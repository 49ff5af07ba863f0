/**
 * `sam2-lora merge`: folds LoRA into the encoder weights (W ← W + (alpha/r)·B·A) and writes a
 * drop-in SAM2 checkpoint: every key of the base checkpoint kept (mask decoder, memory modules…,
 * bit-exact for float32 files), `image_encoder.*` replaced by the folded weights, as safetensors
 * or an official-style `.pt` ({"model": {…}}) that `torch.load(weights_only=True)` and SAM2's
 * `build_sam2` read. Our head is not SAM2's: it goes to `<out>.head.safetensors`.
 * `sam2-lora export`: the adapter in PEFT's layout.
 * Neither writes into what it reads (the adapter folder, the base checkpoint).
 */
import { existsSync, realpathSync } from 'node:fs';
import { basename, dirname, join, resolve, sep } from 'node:path';
import { listCheckpoint, readCheckpoint, writeCheckpoint } from '../io/pt.js';
import type { StateDict } from '../io/pt.js';
import { writePeftAdapter } from '../io/peft.js';
import { readSafetensors, writeSafetensors } from '../io/safetensors.js';
import { closeGpu } from '../gpu/runtime.js';
import { loadAdapter, modelFromAdapter } from '../adapter/adapter.js';
import { foldLora } from '../adapter/fold.js';
import { toPeft } from '../adapter/peft.js';
import { type GpuCliOptions, UsageError, gpuChoice } from './common.js';
import { wroteLine } from './output.js';

/** A path with symlinks resolved as far as it exists (outputs usually do not exist yet). */
function canonical(path: string): string {
  let p = resolve(path);
  const rest: string[] = [];
  while (!existsSync(p) && dirname(p) !== p) {
    rest.unshift(basename(p));
    p = dirname(p);
  }
  return join(existsSync(p) ? realpathSync(p) : p, ...rest);
}

/**
 * Throws when an output is, or lies inside, an input: writing there would destroy what the
 * command reads (a checkpoint save replaces the adapter folder wholesale, too).
 */
export function refuseOverwrite(
  command: string,
  outputs: string[],
  inputs: { path: string; what: string }[],
): void {
  for (const out of outputs) {
    const o = canonical(out);
    for (const inp of inputs) {
      const i = canonical(inp.path);
      if (o === i || o.startsWith(i.endsWith(sep) ? i : i + sep)) {
        throw new UsageError(`${command}: --out ${out} ${o === i ? 'is' : 'is inside'} ` +
          `${inp.what} ${inp.path}, which ${command} reads; choose another path`);
      }
    }
  }
}

/** `<out>` without its extension + `.head.safetensors`. */
export function headPath(out: string): string {
  return `${out.replace(/\.(pt|pth|safetensors)$/, '')}.head.safetensors`;
}

/** Every tensor of a checkpoint (.pt with or without the `model` wrapper, or safetensors). */
async function readAll(path: string): Promise<StateDict> {
  if (path.endsWith('.safetensors')) return (await readSafetensors(path)).tensors;
  return readCheckpoint(path);
}

/**
 * The base checkpoint's keys in its order, with its image-encoder tensors replaced by
 * `encoder` (keys `image_encoder.…`). A base without the prefix (an encoder saved alone) keeps
 * its own names. Every encoder key must be in the base and vice versa, with equal shapes.
 */
export function replaceEncoder(base: StateDict, encoder: StateDict, source: string): StateDict {
  const prefixed = [...base.keys()].some((k) => k.startsWith('image_encoder.'));
  const encKey = (k: string) => (prefixed ? k : `image_encoder.${k}`);
  const out: StateDict = new Map();
  const used = new Set<string>();
  const problems: string[] = [];
  for (const [k, v] of base) {
    if (prefixed && !k.startsWith('image_encoder.')) {
      out.set(k, v);
      continue;
    }
    const m = encoder.get(encKey(k));
    if (!m) problems.push(`${k} has no merged tensor`);
    else if (m.shape.join() !== v.shape.join()) {
      problems.push(`${k}: base [${v.shape}], merged [${m.shape}]`);
    } else {
      out.set(k, m);
      used.add(encKey(k));
    }
  }
  for (const k of encoder.keys()) if (!used.has(k) && !problems.length) problems.push(`${k} is not in the base`);
  if (problems.length) {
    throw new UsageError(`${source}: the base checkpoint does not match the adapter's encoder: ` +
      `${problems.slice(0, 5).join('; ')}${problems.length > 5 ? ` (+${problems.length - 5} more)` : ''}`);
  }
  return out;
}

export interface MergeOptions extends GpuCliOptions {
  adapter: string;
  out: string;
  checkpoint?: string;
}

export interface MergeResult {
  /** Tensors written to `out`, and how many of them are the folded encoder's. */
  keys: number;
  encoderKeys: number;
  loraLayers: number;
  head: string | null;
  base: string | null;
}

export async function mergeCommand(o: MergeOptions): Promise<MergeResult> {
  const isPt = /\.(pt|pth)$/.test(o.out);
  if (!isPt && !o.out.endsWith('.safetensors')) {
    throw new UsageError(`--out must end in .pt, .pth or .safetensors, got ${o.out}`);
  }
  const { config, file } = await loadAdapter(o.adapter);
  const base = o.checkpoint ?? config.baseCheckpoint;
  const head = headPath(o.out);
  refuseOverwrite('merge', [o.out, head], [
    { path: dirname(file), what: 'the adapter folder' },
    ...(base ? [{ path: base, what: 'the base checkpoint' }] : []),
  ]);
  const { model } = await modelFromAdapter(o.adapter, { checkpoint: o.checkpoint, adapter: gpuChoice(o) });
  try {
    const sd = await model.stateDict();
    const lora = config.segmenter.lora;
    const folded = foldLora(sd, lora.alpha / lora.r);
    const encoder: StateDict = new Map([...folded].filter(([k]) => k.startsWith('image_encoder.')));
    const headSd: StateDict = new Map([...folded].filter(([k]) => k.startsWith('head.')));
    let merged: StateDict;
    let converted: string[] = [];
    if (base) {
      merged = replaceEncoder(await readAll(base), encoder, base);
      if (!base.endsWith('.safetensors')) {
        converted = (await listCheckpoint(base)).filter((e) => e.dtype !== 'float32').map((e) => e.name);
      }
    } else {
      merged = encoder;
      console.warn(`${o.adapter}: no base checkpoint (a randomly initialised ${config.segmenter.model} ` +
        'encoder): writing the image_encoder.* keys only, not a full SAM2 checkpoint');
    }
    if (isPt) await writeCheckpoint(o.out, merged, { wrapModel: true });
    else await writeSafetensors(o.out, merged, { format: 'pt', source: 'sam2-lora merge' });
    if (headSd.size) await writeSafetensors(head, headSd, { format: 'pt', source: 'sam2-lora merge' });
    const layers = [...sd.keys()].filter((k) => k.includes('lora_A')).length;
    console.log(`merged ${layers} LoRA layers into ${o.out}: ${merged.size} tensors ` +
      `(${encoder.size} image_encoder.* folded${base ? `, ${merged.size - encoder.size} kept ` +
        `from ${base}` : ''}); head: ${headSd.size ? head : 'none'}`);
    if (converted.length) {
      console.warn(`${base}: ${converted.length} tensors were not float32 (e.g. ${converted[0]}); ` +
        'they are written as float32 with the same values');
    }
    console.log(wroteLine(headSd.size ? [o.out, head] : [o.out]));
    return { keys: merged.size, encoderKeys: encoder.size, loraLayers: layers,
      head: headSd.size ? head : null, base: base ?? null };
  } finally {
    await closeGpu();
  }
}

export async function exportCommand(o: { adapter: string; out: string }): Promise<void> {
  const { tensors, config, file } = await loadAdapter(o.adapter);
  refuseOverwrite('export', [o.out], [{ path: dirname(file), what: 'the adapter folder' }]);
  const { peft, head } = toPeft(tensors, config, o.adapter);
  const baseModel = peft.config.baseModel;
  await writePeftAdapter(o.out, peft);
  if (head.size) await writeSafetensors(join(o.out, 'head.safetensors'), head);
  console.log(`PEFT adapter in ${o.out}; base model: ${baseModel ?? 'none (random ' +
      'initialisation: the adapter only fits the encoder rebuilt from its seed)'}`);
  const names = ['adapter_model.safetensors', 'adapter_config.json', ...(head.size ? ['head.safetensors'] : [])];
  console.log(wroteLine(names.map((n) => join(o.out, n))));
}
