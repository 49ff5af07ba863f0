/**
 * Export of LoRA adapters in Hugging Face PEFT's on-disk format, so `PeftModel.from_pretrained`
 * (with SAM2 as the base model) can load them: `adapter_model.safetensors` with keys
 * `base_model.model.<module path>.lora_{A,B}.weight` and `adapter_config.json`.
 */
import { join } from 'node:path';
import { atomicWrite } from './atomic.js';
import type { StateDict, TensorData } from './pt.js';
import { writeSafetensors } from './safetensors.js';

export interface PeftLoraConfig {
  r: number;
  alpha: number;
  dropout: number;
  /** Module names LoRA wraps, e.g. `['qkv', 'proj']` or full paths. */
  targetModules: string[];
  /**
   * `base_model_name_or_path`: what the adapter was trained on (a Hub id such as
   * `facebook/sam2.1-hiera-tiny`, or a checkpoint path); null for a random encoder.
   */
  baseModel?: string | null;
}

export interface PeftAdapter {
  /** Our keys, relative to the image encoder: `trunk.blocks.0.attn.qkv.lora_A.weight`. */
  tensors: StateDict;
  config: PeftLoraConfig;
}

/** Where the image encoder sits inside the PEFT-wrapped SAM2 model. */
export const PEFT_PREFIX = 'base_model.model.image_encoder.';

export class PeftError extends Error {
  constructor(dir: string, problem: string) {
    super(`${dir}: ${problem}`);
    this.name = 'PeftError';
  }
}

/**
 * PEFT's LoraConfig fields (names and defaults as `LoraConfig` defines them), for our adapter:
 * plain LoRA on nn.Linear (no DoRA/rsLoRA, no bias training), weights [out, in] (fan_in_fan_out
 * false), no module saved whole (our head is not part of SAM2: it travels as head.safetensors).
 */
export function peftConfigJson(config: PeftLoraConfig): Record<string, unknown> {
  return {
    peft_type: 'LORA',
    task_type: null,
    base_model_name_or_path: config.baseModel ?? null,
    revision: null,
    inference_mode: true,
    r: config.r,
    lora_alpha: config.alpha,
    lora_dropout: config.dropout,
    target_modules: config.targetModules,
    bias: 'none',
    fan_in_fan_out: false,
    init_lora_weights: true,
    use_rslora: false,
    use_dora: false,
    modules_to_save: null,
    layers_to_transform: null,
    layers_pattern: null,
    rank_pattern: {},
    alpha_pattern: {},
  };
}

/**
 * Writes `dir/adapter_model.safetensors` and `dir/adapter_config.json` (both atomically). Every
 * tensor must be a `lora_A.weight` [r, in] or `lora_B.weight` [out, r] of the configured rank.
 */
export async function writePeftAdapter(dir: string, adapter: PeftAdapter): Promise<void> {
  const { tensors, config } = adapter;
  if (!Number.isInteger(config.r) || config.r < 1) {
    throw new PeftError(dir, `bad LoRA rank ${config.r}`);
  }
  if (!config.targetModules.length) throw new PeftError(dir, 'targetModules is empty');
  const out = new Map<string, TensorData>();
  for (const [key, t] of tensors) {
    const m = /\.lora_([AB])\.weight$/.exec(key);
    if (!m) throw new PeftError(dir, `${key} is not a lora_A/lora_B weight`);
    const rankDim = m[1] === 'A' ? t.shape[0] : t.shape[1];
    if (t.shape.length !== 2 || rankDim !== config.r) {
      throw new PeftError(dir, `${key}: expected rank ${config.r} in ` +
        `${m[1] === 'A' ? '[r, in]' : '[out, r]'}, got [${t.shape.join(', ')}]`);
    }
    out.set(PEFT_PREFIX + key, t);
  }
  await writeSafetensors(join(dir, 'adapter_model.safetensors'), out, { format: 'pt' });
  await atomicWrite(join(dir, 'adapter_config.json'),
    `${JSON.stringify(peftConfigJson(config), null, 2)}\n`);
}
