/**
 * `sam2-lora merge`: folds LoRA into the encoder weights (W ← W + (alpha/r)·B·A) and writes a full
 * checkpoint: safetensors, or an official-style `.pt` ({"model": {"image_encoder.…": …}}) that
 * `torch.load(weights_only=True)` reads. `sam2-lora export`: the adapter in PEFT's layout.
 */
import { join } from 'node:path';
import { writeCheckpoint } from '../io/pt.js';
import type { StateDict } from '../io/pt.js';
import { writePeftAdapter } from '../io/peft.js';
import { writeSafetensors } from '../io/safetensors.js';
import { closeGpu } from '../gpu/runtime.js';
import { loadAdapter } from '../train/checkpoint.js';
import { UsageError, modelFromAdapter } from './common.js';

/** Folds every `<layer>.lora_A/B.weight` pair into `<layer>.weight`, on the CPU in float64. */
export function foldLora(sd: StateDict, scale: number): StateDict {
  const out: StateDict = new Map();
  for (const [k, v] of sd) if (!k.includes('.lora_')) out.set(k, { shape: v.shape, data: v.data.slice() });
  for (const [k, a] of sd) {
    const m = /^(.*)\.lora_A\.weight$/.exec(k);
    if (!m) continue;
    const b = sd.get(`${m[1]}.lora_B.weight`);
    const w = out.get(`${m[1]}.weight`);
    if (!b || !w) throw new Error(`merge: ${m[1]} has lora_A without lora_B or base weight`);
    const [r, inF] = a.shape;
    const [outF] = b.shape;
    if (w.shape[0] !== outF || w.shape[1] !== inF || b.shape[1] !== r) {
      throw new Error(`merge: ${m[1]}: shapes W [${w.shape}] A [${a.shape}] B [${b.shape}] disagree`);
    }
    for (let o = 0; o < outF; o++) {
      for (let i = 0; i < inF; i++) {
        let s = 0;
        for (let k2 = 0; k2 < r; k2++) s += b.data[o * r + k2] * a.data[k2 * inF + i];
        w.data[o * inF + i] += scale * s;
      }
    }
  }
  return out;
}

export async function mergeCommand(o: { adapter: string; out: string; checkpoint?: string }): Promise<void> {
  const { model, config } = await modelFromAdapter(o.adapter, { checkpoint: o.checkpoint });
  const sd = await model.stateDict();
  const lora = config.segmenter.lora;
  const merged = foldLora(sd, lora.alpha / lora.r);
  if (o.out.endsWith('.pt') || o.out.endsWith('.pth')) {
    await writeCheckpoint(o.out, merged, { wrapModel: true });
  } else if (o.out.endsWith('.safetensors')) {
    await writeSafetensors(o.out, merged, { format: 'pt', source: 'sam2-lora merge' });
  } else {
    throw new UsageError(`--out must end in .pt, .pth or .safetensors, got ${o.out}`);
  }
  console.log(`merged ${[...sd.keys()].filter((k) => k.includes('lora_A')).length} LoRA layers ` +
    `into ${o.out} (${merged.size} tensors: image_encoder.* as SAM2, head.* ours)`);
  await closeGpu();
}

export async function exportCommand(o: { adapter: string; out: string }): Promise<void> {
  const { tensors, config } = await loadAdapter(o.adapter);
  const lora: StateDict = new Map();
  const head: StateDict = new Map();
  for (const [k, v] of tensors) {
    if (k.includes('.lora_')) lora.set(k.replace(/^image_encoder\./, ''), v);
    else head.set(k, v);
  }
  if (lora.size === 0) throw new UsageError(`${o.adapter}: no LoRA tensors (mode ${config.segmenter.mode})`);
  const l = config.segmenter.lora;
  const targets = [...new Set([...lora.keys()].map((k) => k.replace(/\.lora_[AB]\.weight$/, '')))];
  await writePeftAdapter(o.out, {
    tensors: lora,
    config: { r: l.r, alpha: l.alpha, dropout: l.dropout, targetModules: targets },
  });
  if (head.size) await writeSafetensors(join(o.out, 'head.safetensors'), head);
  console.log(`PEFT adapter written to ${o.out} (adapter_model.safetensors, adapter_config.json` +
    `${head.size ? ', head.safetensors' : ''})`);
}
