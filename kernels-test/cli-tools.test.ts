/**
 * The library behind `sam2-lora encode` and `sam2-lora export`: encode writes every feature the
 * fidelity check needs with SAM2's names and NCHW shapes; export writes a PEFT adapter.
 * Each command closes with one line listing every file it wrote.
 */
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { Engine } from '../src/autograd/tensor.js';
import { encodeCommand } from '../src/cli/encode.js';
import { exportCommand, mergeCommand } from '../src/cli/merge.js';
import { predictCommand } from '../src/cli/predict.js';
import { closeGpu, getGpu } from '../src/gpu/runtime.js';
import { readSafetensors, writeSafetensors } from '../src/io/safetensors.js';
import { DEFAULT_LORA, Segmenter } from '../src/model/segmenter.js';
import { saveCheckpoint } from '../src/train/checkpoint.js';
import { randn } from './helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'sam2-lora-cli-'));
afterAll(async () => {
  await closeGpu();
  await rm(dir, { recursive: true, force: true });
});

describe('CLI commands: encode, export, predict, merge', () => {
  it('encode writes input, trunk.0-3, fpn.0-2 and vision_features as NCHW', async () => {
    const input = join(dir, 'input.safetensors');
    await writeSafetensors(input, new Map([['input', { shape: [1, 3, 64, 64], data: Float32Array.from(randn(3 * 64 * 64)) }]]));
    const out = join(dir, 'feats.safetensors');
    const log = vi.spyOn(console, 'log').mockImplementation(() => {});
    try {
      await encodeCommand({ model: 'tiny', size: '64', inputTensor: input, out });
      // The closing line lists every file the command wrote.
      expect(log.mock.calls.at(-1)).toEqual([`wrote ${out}`]);
    } finally {
      log.mockRestore();
    }
    const { tensors } = await readSafetensors(out);
    const shapes = Object.fromEntries([...tensors].map(([k, v]) => [k, v.shape]));
    expect(shapes).toEqual({
      input: [1, 3, 64, 64],
      'trunk.0': [1, 96, 16, 16],
      'trunk.1': [1, 192, 8, 8],
      'trunk.2': [1, 384, 4, 4],
      'trunk.3': [1, 768, 2, 2],
      'fpn.0': [1, 256, 16, 16],
      'fpn.1': [1, 256, 8, 8],
      'fpn.2': [1, 256, 4, 4],
      vision_features: [1, 256, 4, 4],
    });
    expect(tensors.get('vision_features')!.data).toEqual(tensors.get('fpn.2')!.data);
    expect([...tensors.get('fpn.0')!.data].every(Number.isFinite)).toBe(true);
  });

  it('export writes the LoRA tensors in PEFT layout and the head beside them', async () => {
    const engine = new Engine(await getGpu());
    const seg = { model: 'nano' as const, head: 'stride16' as const, mode: 'lora' as const, lora: DEFAULT_LORA, seed: 2 };
    const model = new Segmenter(engine, seg);
    const names = model.trainable().map(([n]) => n);
    const adapter = await model.stateDict((n) => names.includes(n));
    const ckpt = join(dir, 'best');
    await saveCheckpoint(ckpt, {
      adapter,
      config: { format: 'sam2-lora-adapter', version: 1, segmenter: seg, size: 64, threshold: 0.5, baseCheckpoint: null },
    });
    const out = join(dir, 'peft');
    const log = vi.spyOn(console, 'log').mockImplementation(() => {});
    try {
      await exportCommand({ adapter: ckpt, out });
      const files = ['adapter_model.safetensors', 'adapter_config.json', 'head.safetensors'];
      expect(log.mock.calls.at(-1)).toEqual([`wrote ${files.map((f) => join(out, f)).join(', ')}`]);
    } finally {
      log.mockRestore();
    }
    const { tensors } = await readSafetensors(join(out, 'adapter_model.safetensors'));
    const cfg = JSON.parse(readFileSync(join(out, 'adapter_config.json'), 'utf8'));
    expect(cfg.peft_type).toBe('LORA');
    expect(cfg.r).toBe(4);
    expect(cfg.lora_alpha).toBe(32);
    const loraKeys = names.filter((n) => n.includes('.lora_'));
    expect(tensors.size).toBe(loraKeys.length);
    expect(tensors.has('base_model.model.image_encoder.trunk.blocks.0.attn.qkv.lora_A.weight')).toBe(true);
    const head = await readSafetensors(join(out, 'head.safetensors'));
    expect([...head.tensors.keys()].sort()).toEqual(names.filter((n) => n.startsWith('head.')).sort());
  });

  it('predict and merge close with one line listing every file they wrote', async () => {
    const engine = new Engine(await getGpu());
    const seg = { model: 'nano' as const, head: 'fpn' as const, mode: 'lora' as const, lora: DEFAULT_LORA, seed: 3 };
    const model = new Segmenter(engine, seg);
    const names = model.trainable().map(([n]) => n);
    const ckpt = join(dir, 'closing', 'best');
    await saveCheckpoint(ckpt, {
      adapter: await model.stateDict((n) => names.includes(n)),
      config: { format: 'sam2-lora-adapter', version: 1, segmenter: seg, size: 32, threshold: 0.5, baseCheckpoint: null },
    });
    const photos = join(import.meta.dirname, '..', 'data', 'sample', 'images');
    const out = join(dir, 'closing', 'pred');
    const merged = join(dir, 'closing', 'merged.safetensors');
    const log = vi.spyOn(console, 'log').mockImplementation(() => {});
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => {});
    try {
      await predictCommand(photos, { adapter: ckpt, out, tile: '128' });
      const files = ['crack_a', 'crack_b'].flatMap((n) =>
        ['.mask.png', '.prob.png', '.overlay.png'].map((x) => join(out, `${n}${x}`)));
      for (const f of files) expect(existsSync(f), f).toBe(true);
      expect(log.mock.calls.at(-1)).toEqual([`predicted 2 of 2 photo(s); wrote ${files.join(', ')}`]);
      await mergeCommand({ adapter: ckpt, out: merged });
      const head = join(dir, 'closing', 'merged.head.safetensors');
      expect(existsSync(merged) && existsSync(head)).toBe(true);
      expect(log.mock.calls.at(-1)).toEqual([`wrote ${merged}, ${head}`]);
    } finally {
      log.mockRestore();
      warn.mockRestore();
    }
  });
});
