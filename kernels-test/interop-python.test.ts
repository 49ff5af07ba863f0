/**
 * PyTorch reads what `merge` writes: scripts/interop/check_merged.py runs
 * `torch.load(path, weights_only=True)` and checks keys, order, shapes and bit-exact values, and
 * the image-encoder keys/shapes against an official SAM2.1 checkpoint's listing
 * (../shared/sam2-checkpoints/*.image_encoder_keys.txt). A tiny merge into a base with every key
 * of the official sam2.1_hiera_tiny.pt (from its complete pickle in ../shared) checks the
 * drop-in property end to end. Needs a python3 with torch (CI installs
 * Debian's python3-torch); skips with the reason otherwise. With SAM2_CHECKOUT=<checkout of
 * facebookresearch/sam2> (developers; CI cannot reach GitHub) the official ImageEncoder also
 * loads the merged encoder with load_state_dict(strict=True), and with SAM2_PEFT_PYTHON (a python
 * with peft) PEFT loads an exported adapter onto it (scripts/interop/check_peft.py).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Engine } from '../src/autograd/tensor.js';
import { exportCommand, mergeCommand } from '../src/cli/merge.js';
import { getGpu } from '../src/gpu/runtime.js';
import { type StateDict, listPickle, readCheckpoint, writeCheckpoint } from '../src/io/pt.js';
import { readSafetensors, writeSafetensors } from '../src/io/safetensors.js';
import { ALL_LORA_TARGETS, Segmenter, type SegmenterConfig } from '../src/model/segmenter.js';
import { Rng } from '../src/util/random.js';
import { foldLora } from '../src/adapter/fold.js';

const SCRIPT = 'scripts/interop/check_merged.py';
const KEYS = join('..', 'shared', 'sam2-checkpoints', 'sam2.1_hiera_tiny.image_encoder_keys.txt');

/** The first python with torch among $SAM2_PYTHON, python3, /usr/bin/python3 (Debian's). */
function findPython(): { python: string | null; why: string } {
  const tried: string[] = [];
  for (const p of [process.env.SAM2_PYTHON, 'python3', '/usr/bin/python3']) {
    if (!p) continue;
    const r = spawnSync(p, ['-c', 'import torch; print(torch.__version__)'], { encoding: 'utf8' });
    if (r.status === 0) return { python: p, why: `${p}: torch ${r.stdout.trim()}` };
    tried.push(`${p}: ${r.error ? r.error.message : (r.stderr.trim().split('\n').pop() ?? 'failed')}`);
  }
  return { python: null, why: `no python3 with torch (${tried.join('; ')}); install python3-torch` };
}

const { python, why } = findPython();
console.log(`interop-python: ${why}`);
const dir = mkdtempSync(join(tmpdir(), 'sam2-interop-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function check(args: string[]): Record<string, unknown> {
  const r = spawnSync(python!, [SCRIPT, ...args], { encoding: 'utf8', timeout: 240_000 });
  const last = r.stdout.trim().split('\n').pop() ?? '';
  console.log(`check_merged.py ${args.map((a) => a.replace(dir, '<tmp>')).join(' ')}\n  ${last}\n${r.stderr}`);
  expect(r.status, `${SCRIPT} failed: ${last} ${r.stderr}`).toBe(0);
  return JSON.parse(last) as Record<string, unknown>;
}

const CFG: SegmenterConfig = {
  model: 'nano', head: 'fpn', mode: 'lora', seed: 21,
  lora: { r: 4, alpha: 16, dropout: 0, targets: ALL_LORA_TARGETS },
};

describe.skipIf(!python)(`PyTorch reads merged checkpoints (${python ? why : `skipped: ${why}`})`, () => {
  it('torch.load(weights_only=True) on a merged .pt: every key, shape and value as intended', async () => {
    const e = new Engine(await getGpu());
    // Base: a seeded nano encoder among other SAM2 keys; adapter: random LoRA B.
    const baseModel = new Segmenter(e, { ...CFG, mode: 'head', seed: 2 });
    const rng = new Rng(5);
    const base: StateDict = new Map([['sam_mask_decoder.iou_token.weight', { shape: [4, 8], data: rng.fillUniform(32, 1) }]]);
    for (const [k, v] of await baseModel.image_encoder.stateDict()) base.set(`image_encoder.${k}`, v);
    base.set('memory_encoder.fuser.layers.0.gamma', { shape: [8], data: rng.fillUniform(8, 1) });
    const basePt = join(dir, 'base.pt');
    await writeCheckpoint(basePt, base, { wrapModel: true });
    const model = new Segmenter(e, CFG);
    const adapter: StateDict = new Map();
    for (const [n, t] of model.trainable()) {
      adapter.set(n, { shape: [...t.shape], data: n.includes('lora_B') ? rng.fillUniform(t.size, 0.05) : await t.toArray() });
    }
    for (const p of [...baseModel.parameters(), ...model.parameters()]) p.dispose();
    const config = { format: 'sam2-lora-adapter', version: 1, segmenter: CFG, size: 64, threshold: 0.5, baseCheckpoint: basePt };
    await writeSafetensors(join(dir, 'best', 'adapter.safetensors'), adapter,
      { format: 'sam2-lora-adapter', config: JSON.stringify(config) });
    const merged = join(dir, 'merged.pt');
    await mergeCommand({ adapter: join(dir, 'best'), out: merged });
    // What it must hold, computed without our .pt writer/reader: base keys, folded encoder.
    const folded = foldLora(new Map([...base, ...[...adapter].filter(([k]) => k.includes('lora_'))]),
      CFG.lora.alpha / CFG.lora.r);
    const want: StateDict = new Map([...base.keys()].map((k) => [k, folded.get(k)!]));
    await writeSafetensors(join(dir, 'expect.safetensors'), want);
    // Developers with a facebookresearch/sam2 checkout (SAM2_CHECKOUT=path) also get the official
    // ImageEncoder's load_state_dict(strict=True) on the encoder part.
    const official = process.env.SAM2_CHECKOUT ? ['--sam2', process.env.SAM2_CHECKOUT, '--model', 'nano'] : [];
    const r = check([merged, '--expect', join(dir, 'expect.safetensors'), ...official]);
    expect(r.ok).toBe(true);
    if (official.length) expect(r.official_strict_load).toMatch(/strict=True/);
    expect(r.expect).toMatch(/^\d+ keys/);
    expect((await readSafetensors(join(dir, 'merged.head.safetensors'))).tensors.size).toBe(4);
  });
});

/** A python with peft (not packaged for Debian: a developer's, via SAM2_PEFT_PYTHON). */
const peftPython = [process.env.SAM2_PEFT_PYTHON, python].find((p) => p &&
  spawnSync(p, ['-c', 'import peft, torch'], { encoding: 'utf8' }).status === 0) ?? null;
const PEFT_WHY = !process.env.SAM2_CHECKOUT ? 'needs SAM2_CHECKOUT (a facebookresearch/sam2 checkout)'
  : !peftPython ? 'needs a python with peft and torch (SAM2_PEFT_PYTHON)' : '';

describe.skipIf(!!PEFT_WHY)(`PEFT loads an exported adapter onto the official encoder${PEFT_WHY ? ` (skipped: ${PEFT_WHY})` : ''}`, () => {
  it('PeftModel.from_pretrained, then merge_and_unload equals our merge', async () => {
    // Reuses the nano base, adapter and merged.pt of the first test above.
    expect(existsSync(join(dir, 'merged.pt')), 'the torch.load test ran first').toBe(true);
    await exportCommand({ adapter: join(dir, 'best'), out: join(dir, 'peft') });
    const r = spawnSync(peftPython!, ['scripts/interop/check_peft.py', join(dir, 'peft'), '--base',
      join(dir, 'base.pt'), '--merged', join(dir, 'merged.pt'), '--sam2', process.env.SAM2_CHECKOUT!,
      '--model', 'nano'], { encoding: 'utf8', timeout: 240_000 });
    const last = r.stdout.trim().split('\n').pop() ?? '';
    console.log(`check_peft.py: ${last}`);
    expect(r.status, `${last} ${r.stderr.slice(-2000)}`).toBe(0);
    expect(JSON.parse(last).peft_lora_layers_loaded).toBe(23);
  });
});

const PKL = join('..', 'shared', 'sam2-checkpoints', 'sam2.1_hiera_tiny.data.pkl');
const HAVE_SHARED = existsSync(PKL) && existsSync(KEYS);

describe.skipIf(!HAVE_SHARED)(`merge into a full-key official-format SAM2.1 tiny checkpoint${HAVE_SHARED ? '' : ` (skipped: ${PKL} not present)`}`, () => {
  it('keeps all 471 official keys in order, non-encoder bit-exact; PyTorch reads it', async () => {
    // Every key, dtype and shape of the official sam2.1_hiera_tiny.pt (its complete pickle),
    // filled with seeded values: the base a user would merge into.
    const entries = listPickle(readFileSync(PKL), PKL);
    const rng = new Rng(17);
    const base: StateDict = new Map();
    for (const en of entries) {
      const n = en.shape.reduce((x, y) => x * y, 1);
      base.set(en.name, { shape: en.shape, data: rng.fillUniform(n, 0.05) });
    }
    const basePt = join(dir, 'sam2.1_hiera_tiny.pt');
    await writeCheckpoint(basePt, base, { wrapModel: true });
    const cfg: SegmenterConfig = { ...CFG, model: 'tiny', head: 'stride16' };
    const model = new Segmenter(new Engine(await getGpu()), cfg);
    const adapter: StateDict = new Map();
    for (const [n, t] of model.trainable()) {
      adapter.set(n, { shape: [...t.shape], data: n.includes('lora_B') ? rng.fillUniform(t.size, 0.01) : await t.toArray() });
    }
    for (const p of model.parameters()) p.dispose();
    const config = { format: 'sam2-lora-adapter', version: 1, segmenter: cfg, size: 512, threshold: 0.5, baseCheckpoint: basePt };
    await writeSafetensors(join(dir, 'tiny', 'best', 'adapter.safetensors'), adapter,
      { format: 'sam2-lora-adapter', config: JSON.stringify(config) });
    const merged = join(dir, 'tiny-merged.pt');
    const r = await mergeCommand({ adapter: join(dir, 'tiny', 'best'), out: merged });
    expect(r.keys).toBe(entries.length);
    const out = await readCheckpoint(merged);
    expect([...out.keys()]).toEqual(entries.map((en) => en.name));
    let encoder = 0;
    for (const [k, v] of base) {
      const g = out.get(k)!;
      expect(g.shape, k).toEqual(v.shape);
      if (k.startsWith('image_encoder.')) encoder++;
      else expect(Buffer.from(g.data.buffer).equals(Buffer.from(v.data.buffer)), k).toBe(true);
    }
    expect(encoder).toBe(r.encoderKeys);
    const q = 'image_encoder.trunk.blocks.3.attn.qkv.weight';
    expect(Array.from(out.get(q)!.data)).not.toEqual(Array.from(base.get(q)!.data));
    if (!python) {
      console.warn(`merge (tiny, full keys): PyTorch check skipped: ${why}`);
      return;
    }
    const official = process.env.SAM2_CHECKOUT ? ['--sam2', process.env.SAM2_CHECKOUT, '--model', 'tiny'] : [];
    const res = check([merged, '--official-keys', KEYS, ...official]);
    expect(res.weights_only_load).toBe(`${entries.length} tensors`);
    expect(res.official_keys).toMatch(/^\d+ image_encoder keys/);
    if (official.length) expect(res.official_strict_load).toMatch(/strict=True/);
    rmSync(merged);
    rmSync(basePt);
  });
});
