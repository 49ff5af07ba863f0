/**
 * `merge` writes a drop-in SAM2 checkpoint (every base key kept, the encoder folded, the head in
 * its own file), the merged encoder computes what the LoRA model computes, and merge/export never
 * write into what they read. `export` fills PEFT's LoraConfig. Nano-size synthetic checkpoints in
 * the official layout ({"model": {...}} with mask-decoder and memory keys beside the encoder).
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Engine } from '../src/autograd/tensor.js';
import { exportCommand, headPath, mergeCommand } from '../src/cli/merge.js';
import { getGpu } from '../src/gpu/runtime.js';
import { type StateDict, readCheckpoint, writeCheckpoint } from '../src/io/pt.js';
import { readSafetensors, writeSafetensors } from '../src/io/safetensors.js';
import { loadBaseWeights } from '../src/model/load.js';
import { ALL_LORA_TARGETS, Segmenter, type SegmenterConfig } from '../src/model/segmenter.js';
import { Rng } from '../src/util/random.js';
import { expectClose } from './helpers.js';
import { foldLora } from '../src/adapter/fold.js';

const dir = mkdtempSync(join(tmpdir(), 'sam2-merge-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const CFG: SegmenterConfig = {
  model: 'nano', head: 'stride16', mode: 'lora', seed: 11,
  lora: { r: 4, alpha: 8, dropout: 0.05, targets: ALL_LORA_TARGETS },
};

/** Keys SAM2 checkpoints hold besides the encoder (a few, small). */
const OTHER_KEYS: [string, number[]][] = [
  ['sam_mask_decoder.transformer.layers.0.self_attn.q_proj.weight', [8, 8]],
  ['sam_mask_decoder.iou_token.weight', [1, 8]],
  ['memory_attention.layers.0.linear1.weight', [16, 8]],
  ['memory_encoder.fuser.layers.0.gamma', [8]],
  ['maskmem_tpos_enc', [7, 1, 1, 4]],
  ['no_mem_embed', [1, 1, 8]],
];

let engine: Engine | null = null;
async function eng(): Promise<Engine> {
  engine ??= new Engine(await getGpu());
  return engine;
}

/** A base checkpoint: the seeded nano encoder under `image_encoder.` among other SAM2 keys. */
async function writeBase(path: string): Promise<StateDict> {
  const model = new Segmenter(await eng(), { ...CFG, mode: 'head', seed: 5 });
  const rng = new Rng(99);
  const sd: StateDict = new Map();
  sd.set(OTHER_KEYS[0][0], { shape: OTHER_KEYS[0][1], data: rng.fillUniform(64, 1) });
  for (const [k, v] of await model.image_encoder.stateDict()) sd.set(`image_encoder.${k}`, v);
  for (const [k, s] of OTHER_KEYS.slice(1)) sd.set(k, { shape: s, data: rng.fillUniform(s.reduce((a, b) => a * b), 1) });
  await writeCheckpoint(path, sd, { wrapModel: true });
  for (const p of model.parameters()) p.dispose();
  return sd;
}

/** An adapter folder as training writes it, with random (non-zero) LoRA B. */
async function writeAdapter(folder: string, base: string | null): Promise<void> {
  const model = new Segmenter(await eng(), CFG);
  const rng = new Rng(7);
  const tensors: StateDict = new Map();
  for (const [n, t] of model.trainable()) {
    const data = n.includes('lora_B') ? rng.fillUniform(t.size, 0.05) : await t.toArray();
    tensors.set(n, { shape: [...t.shape], data });
  }
  const config = { format: 'sam2-lora-adapter', version: 1, segmenter: CFG, size: 64,
    threshold: 0.5, baseCheckpoint: base };
  await writeSafetensors(join(folder, 'adapter.safetensors'), tensors,
    { format: 'sam2-lora-adapter', config: JSON.stringify(config) });
  for (const p of model.parameters()) p.dispose();
}

const basePt = join(dir, 'sam2_base.pt');
const adapterDir = join(dir, 'run', 'best');
const merged = join(dir, 'out', 'merged.pt');
let base: StateDict;

describe('merge: a drop-in SAM2 checkpoint', () => {
  it('keeps every base key bit-exact, folds the encoder, writes the head beside it', async () => {
    base = await writeBase(basePt);
    await writeAdapter(adapterDir, basePt);
    const r = await mergeCommand({ adapter: adapterDir, out: merged });
    engine = null; // the command closes the process-wide GPU runtime when it is done
    const out = await readCheckpoint(merged);
    expect([...out.keys()]).toEqual([...base.keys()]);
    expect(r).toMatchObject({ keys: base.size, head: headPath(merged), base: basePt });
    for (const [k, v] of base) {
      const g = out.get(k)!;
      expect(g.shape, k).toEqual(v.shape);
      if (!k.startsWith('image_encoder.')) expect(Buffer.from(g.data.buffer).equals(Buffer.from(v.data.buffer)), k).toBe(true);
    }
    // The folded weights are W + (alpha/r)·B·A; a LoRA'd layer changed, a norm did not.
    const { tensors } = await readSafetensors(join(adapterDir, 'adapter.safetensors'));
    const q = 'image_encoder.trunk.blocks.0.attn.qkv';
    const want = foldLora(new Map([[`${q}.weight`, base.get(`${q}.weight`)!],
      [`${q}.lora_A.weight`, tensors.get(`${q}.lora_A.weight`)!],
      [`${q}.lora_B.weight`, tensors.get(`${q}.lora_B.weight`)!]]), CFG.lora.alpha / CFG.lora.r);
    expect(Array.from(out.get(`${q}.weight`)!.data)).toEqual(Array.from(want.get(`${q}.weight`)!.data));
    expect(Array.from(out.get(`${q}.weight`)!.data)).not.toEqual(Array.from(base.get(`${q}.weight`)!.data));
    const n1 = 'image_encoder.trunk.blocks.0.norm1.weight';
    expect(Array.from(out.get(n1)!.data)).toEqual(Array.from(base.get(n1)!.data));
    const head = (await readSafetensors(headPath(merged))).tensors;
    expect([...head.keys()].sort()).toEqual(['head.conv1.bias', 'head.conv1.weight', 'head.conv2.bias', 'head.conv2.weight']);
  });

  it('merged encoder features equal the LoRA model\'s within float32 rounding', async () => {
    const e = await eng();
    const lora = new Segmenter(e, CFG);
    await loadBaseWeights(lora, basePt);
    lora.loadStateDict((await readSafetensors(join(adapterDir, 'adapter.safetensors'))).tensors, { strict: false });
    const plain = new Segmenter(e, { ...CFG, mode: 'head' });
    await loadBaseWeights(plain, merged);
    lora.train(false);
    plain.train(false);
    const x = new Rng(3).fillUniform(2 * 64 * 64 * 3, 2);
    const feats = async (m: Segmenter) => e.scopeAsync(async () => {
      const out = e.noGrad(() => m.image_encoder.forward(e.fromArray(x, [2, 64, 64, 3])));
      return Promise.all(out.fpn.map((t) => t!.toArray()));
    });
    const a = await feats(lora);
    const b = await feats(plain);
    // x·(W + sBA)ᵀ reassociates the LoRA sum x·Wᵀ + s(x·Aᵀ)·Bᵀ: a few f32 ulps per layer, carried
    // through 5 blocks and the neck: bound 2e-6 of max|feature| (measured in the printed lines).
    a.forEach((f, i) => expectClose(b[i], f, { rtol: 0, atol: 2e-6 }, `merged vs LoRA fpn ${i}`));
    for (const p of [...lora.parameters(), ...plain.parameters()]) p.dispose();
  });

  it('without a base checkpoint writes the encoder keys only, and says so', async () => {
    const folder = join(dir, 'random', 'best');
    await writeAdapter(folder, null);
    const out = join(dir, 'out', 'random.safetensors');
    const r = await mergeCommand({ adapter: folder, out });
    engine = null;
    const { tensors } = await readSafetensors(out);
    expect(r.base).toBeNull();
    expect([...tensors.keys()].every((k) => k.startsWith('image_encoder.'))).toBe(true);
    expect(tensors.size).toBe(r.encoderKeys);
    expect(existsSync(headPath(out))).toBe(true);
  });
});

describe('merge and export never write into what they read', () => {
  it.each([
    ['merge into the adapter folder', () => mergeCommand({ adapter: adapterDir, out: join(adapterDir, 'm.pt') }), /is inside the adapter folder/],
    ['merge over the base checkpoint', () => mergeCommand({ adapter: adapterDir, out: basePt }), /is the base checkpoint/],
    ['merge whose head file would be the base', () => mergeCommand({ adapter: adapterDir, out: join(dir, 'x.pt'), checkpoint: join(dir, 'x.head.safetensors') }), /is the base checkpoint/],
    ['export into the adapter folder', () => exportCommand({ adapter: adapterDir, out: adapterDir }), /is the adapter folder/],
    ['export below the adapter folder', () => exportCommand({ adapter: join(adapterDir, 'adapter.safetensors'), out: join(adapterDir, 'peft') }), /is inside the adapter folder/],
  ])('%s is refused', async (_, run, msg) => {
    const before = readFileSync(join(adapterDir, 'adapter.safetensors'));
    const baseBefore = readFileSync(basePt);
    await expect(run()).rejects.toThrow(msg);
    expect(readFileSync(join(adapterDir, 'adapter.safetensors')).equals(before)).toBe(true);
    expect(readFileSync(basePt).equals(baseBefore)).toBe(true);
  });
});

describe('export: PEFT LoraConfig fields and key names', () => {
  it('names the base model and fills what LoraConfig expects', async () => {
    const out = join(dir, 'peft');
    await exportCommand({ adapter: adapterDir, out });
    const cfg = JSON.parse(readFileSync(join(out, 'adapter_config.json'), 'utf8'));
    expect(cfg).toMatchObject({
      peft_type: 'LORA', task_type: null, base_model_name_or_path: basePt, revision: null,
      r: 4, lora_alpha: 8, lora_dropout: 0.05, fan_in_fan_out: false, bias: 'none',
      modules_to_save: null, init_lora_weights: true, inference_mode: true,
      layers_to_transform: null, layers_pattern: null, use_rslora: false, use_dora: false,
    });
    expect(cfg.target_modules).toContain('trunk.blocks.0.attn.qkv');
    expect(cfg.target_modules).toContain('trunk.blocks.1.proj');
    const { tensors } = await readSafetensors(join(out, 'adapter_model.safetensors'));
    expect([...tensors.keys()]).toContain('base_model.model.image_encoder.trunk.blocks.0.attn.qkv.lora_A.weight');
    expect([...tensors.keys()].every((k) => /^base_model\.model\.image_encoder\..*\.lora_[AB]\.weight$/.test(k))).toBe(true);
  });
});
