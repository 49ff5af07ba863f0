/**
 * Checkpoints through the model: an official-format `.pt` (random weights, the exact SAM2-tiny
 * key and shape set) loads into the GPU model key for key and comes back out bit-identical as
 * `.pt` and safetensors; bad checkpoints are refused naming the keys; merging LoRA into the
 * weights gives the same predictions as the adapter.
 */
import { mkdtempSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Engine } from '../src/autograd/tensor.js';
import { closeGpu, getGpu } from '../src/gpu/runtime.js';
import { type StateDict, readCheckpoint, writeCheckpoint } from '../src/io/pt.js';
import { readSafetensors, writeSafetensors } from '../src/io/safetensors.js';
import { MODEL_CONFIGS } from '../src/model/config.js';
import { loadBaseWeights } from '../src/model/load.js';
import { DEFAULT_LORA, Segmenter } from '../src/model/segmenter.js';
import { expectClose, randn, SEED } from './helpers.js';
import { randomEncoderWeights } from './ref/hiera.js';
import { foldLora } from '../src/adapter/fold.js';

const dir = mkdtempSync(join(tmpdir(), 'sam2-lora-model-io-'));
afterAll(async () => {
  await closeGpu();
  await rm(dir, { recursive: true, force: true });
});

function officialState(): StateDict {
  const sd: StateDict = new Map();
  for (const [k, v] of randomEncoderWeights(MODEL_CONFIGS.tiny, SEED)) {
    sd.set(`image_encoder.${k}`, { shape: v.shape, data: Float32Array.from(v.data) });
  }
  return sd;
}

describe('checkpoints through the model', () => {
  it('official .pt → GPU model → .pt / safetensors is bit-identical for every tensor', async () => {
    const official = officialState();
    const pt = join(dir, 'sam2.1_hiera_tiny.pt');
    await writeCheckpoint(pt, official, { wrapModel: true });
    const engine = new Engine(await getGpu());
    const model = new Segmenter(engine, { model: 'tiny', head: 'stride16', mode: 'lora', lora: DEFAULT_LORA, seed: 1 });
    await loadBaseWeights(model, pt);
    const back = await model.image_encoder.stateDict((n) => !n.includes('.lora_'));
    expect(back.size).toBe(official.size);
    for (const [k, v] of back) {
      const o = official.get(`image_encoder.${k}`);
      expect(o, k).toBeDefined();
      expect(v.shape, k).toEqual(o?.shape);
      expect(Buffer.from(v.data.buffer).equals(Buffer.from(o!.data.buffer)), k).toBe(true);
    }
    const pt2 = join(dir, 'again.pt');
    const prefixed: StateDict = new Map([...back].map(([k, v]) => [`image_encoder.${k}`, v]));
    await writeCheckpoint(pt2, prefixed, { wrapModel: true });
    const st = join(dir, 'again.safetensors');
    await writeSafetensors(st, prefixed);
    const fromPt = await readCheckpoint(pt2);
    const fromSt = (await readSafetensors(st)).tensors;
    for (const [k, v] of official) {
      expect(Buffer.from(fromPt.get(k)!.data.buffer).equals(Buffer.from(v.data.buffer)), k).toBe(true);
      expect(Buffer.from(fromSt.get(k)!.data.buffer).equals(Buffer.from(v.data.buffer)), k).toBe(true);
    }
    model.parameters().forEach((p) => p.dispose());
  });

  it('refuses a checkpoint with missing, unexpected and mis-shaped keys, naming them', async () => {
    const sd = officialState();
    sd.delete('image_encoder.trunk.blocks.3.attn.qkv.weight');
    sd.set('image_encoder.trunk.blocks.99.attn.qkv.weight', { shape: [1], data: new Float32Array(1) });
    const norm = sd.get('image_encoder.trunk.blocks.0.norm1.weight')!;
    sd.set('image_encoder.trunk.blocks.0.norm1.weight', { shape: [95], data: norm.data.subarray(0, 95) });
    const pt = join(dir, 'bad.pt');
    await writeCheckpoint(pt, sd, { wrapModel: true });
    const engine = new Engine(await getGpu());
    const model = new Segmenter(engine, { model: 'tiny', head: 'stride16', mode: 'head', lora: DEFAULT_LORA, seed: 1 });
    const err = await loadBaseWeights(model, pt).catch((e: Error) => e);
    expect(err).toBeInstanceOf(Error);
    const msg = (err as Error).message;
    expect(msg).toContain(pt);
    // Each fault named on its own line (the wording around the names may change).
    expect(msg).toMatch(/^ .*missing.*: .*trunk\.blocks\.3\.attn\.qkv\.weight/m);
    expect(msg).toMatch(/^ .*unexpected.*: .*trunk\.blocks\.99\.attn\.qkv\.weight/m);
    expect(msg).toMatch(/trunk\.blocks\.0\.norm1\.weight\b.*(\[96\].*\[95\]|\[95\].*\[96\])/);
    model.parameters().forEach((p) => p.dispose());
  });

  it('merged weights predict what the LoRA adapter predicts', async () => {
    const engine = new Engine(await getGpu());
    const cfg = { model: 'nano' as const, head: 'fpn' as const, lora: DEFAULT_LORA, seed: 9 };
    const lora = new Segmenter(engine, { ...cfg, mode: 'lora' });
    // Give every B a non-zero value so the adapter changes the output.
    const sd = await lora.stateDict();
    for (const [k, v] of sd) if (k.includes('lora_B')) v.data.set(Float32Array.from(randn(v.data.length, undefined, 0.05)));
    lora.loadStateDict(sd);
    const merged = new Segmenter(engine, { ...cfg, mode: 'head' });
    merged.loadStateDict(foldLora(sd, DEFAULT_LORA.alpha / DEFAULT_LORA.r));
    const x = Float32Array.from(randn(2 * 64 * 64 * 3));
    const run = (m: Segmenter) =>
      engine.scopeAsync(async () => engine.noGrad(() => m.forward(engine.fromArray(x, [2, 64, 64, 3]))).toArray());
    const a = await run(lora.train(false));
    const b = await run(merged.train(false));
    // The merged product x·(W + sBA)ᵀ reassociates the LoRA sum: f32 rounding, through 5 blocks
    // (measured 8.7e-7 of max|logit|; 1e-5, was 1e-4).
    expectClose(b, a, { rtol: 1e-5, atol: 1e-5 }, 'merged vs LoRA logits');
    const base = new Segmenter(engine, { ...cfg, mode: 'head' });
    const c = await run(base.train(false));
    let diff = 0;
    for (let i = 0; i < a.length; i++) diff = Math.max(diff, Math.abs(a[i] - c[i]));
    expect(diff, 'the adapter must change the output for this test to mean anything').toBeGreaterThan(1e-3);
  });
});
