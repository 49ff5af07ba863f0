/**
 * An adapter in PEFT's terms: the LoRA tensors under the encoder's module names with their
 * LoraConfig, and the head (not a PEFT module) apart. `io/peft.ts` writes the files.
 */
import { basename } from 'node:path';
import type { PeftAdapter } from '../io/peft.js';
import type { StateDict } from '../io/pt.js';
import { type AdapterConfig, AdapterError } from './adapter.js';

/** PEFT's `base_model_name_or_path`: the Hub id of an official SAM2.1 file, else its path. */
export function peftBaseModel(base: string | null): string | null {
  if (!base) return null;
  const m = /^sam2\.1_hiera_(tiny|small|base_plus|large)\.pt$/.exec(basename(base));
  return m ? `facebook/sam2.1-hiera-${m[1].replace('_', '-')}` : base;
}

/** Splits an adapter into its PEFT part (LoRA of the encoder) and the rest (the head). */
export function toPeft(
  tensors: StateDict,
  config: AdapterConfig,
  source: string,
): { peft: PeftAdapter; head: StateDict } {
  const lora: StateDict = new Map();
  const head: StateDict = new Map();
  for (const [k, v] of tensors) {
    if (k.includes('.lora_')) lora.set(k.replace(/^image_encoder\./, ''), v);
    else head.set(k, v);
  }
  if (lora.size === 0) throw new AdapterError(`${source}: no LoRA tensors (mode ${config.segmenter.mode})`);
  const l = config.segmenter.lora;
  const targets = [...new Set([...lora.keys()].map((k) => k.replace(/\.lora_[AB]\.weight$/, '')))];
  const baseModel = peftBaseModel(config.baseCheckpoint);
  return {
    peft: { tensors: lora, config: { r: l.r, alpha: l.alpha, dropout: l.dropout, targetModules: targets, baseModel } },
    head,
  };
}
