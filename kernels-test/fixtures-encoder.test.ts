/**
 * Our image encoder against the official SAM2 code (kernels-test/fixtures/encoder.safetensors and
 * block-tiny.safetensors, written by fixtures/generate.py from facebookresearch/sam2's own
 * Hiera, FpnNeck, ImageEncoder and MultiScaleBlock in float64; the SAM2 commit is in the files'
 * metadata). The same seeded weights are drawn here and loaded through our loaders.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { closeGpu } from '../src/gpu/runtime.js';
import { diceLoss } from '../src/ops/loss.js';
import { MODEL_CONFIGS, blockPlan } from '../src/model/config.js';
import { MultiScaleBlock } from '../src/model/hiera.js';
import { ALL_LORA_TARGETS, Segmenter, type SegmenterConfig } from '../src/model/segmenter.js';
import { Rng } from '../src/util/random.js';
import { type InitSpec, drawInit, readFixture } from './fixture-file.js';
import { type CompareResult, type Tol, expectClose, reportError, testEngine } from './helpers.js';

afterAll(() => closeGpu());

const enc = readFixture('encoder');
const blockFx = readFixture('block-tiny');

const worst: Record<string, { fwd: number; grad: number }> = {};
function note(file: string, kind: 'fwd' | 'grad', r: CompareResult): void {
  worst[file] ??= { fwd: 0, grad: 0 };
  worst[file][kind] = Math.max(worst[file][kind], r.maxRel);
  reportError(`fixture ${file}`, kind, '', r);
}
afterAll(() => {
  for (const [f, w] of Object.entries(worst)) {
    console.log(`fixture ${f}: worst max|err|/max|want| forward ${w.fwd.toExponential(2)}, ` +
      `gradient ${w.grad.toExponential(2)}`);
  }
});

/**
 * Bounds. One f32 forward through the nano encoder chains ~40 ops (5 blocks of LayerNorm,
 * qkv/attention/proj, MLP, residual adds; patch embed; neck); each is good to ~1e-7·sqrt(L) of
 * its output scale, and residual blocks pass errors on without amplifying them much, so the
 * features land near 1e-6 of max|feature| (measured ≤ 6.9e-7, the printed lines).
 * Gradients pass back through the same chain plus the head and Dice; each tensor is judged
 * against its own max|grad|, and the deepest block's are 500x smaller than the head's, so their
 * f32 error is larger relative to themselves: 1e-5 (measured ≤ 4.7e-6, on
 * blocks.4.attn.qkv.lora_A, max|grad| 6e-5 against 3e-2 for the head; the figure moves a little
 * with kernel changes: 3.8e-6 before the matmul rework).
 */
const FEATURE_TOL: Tol = { rtol: 0, atol: 3e-6 };
const GRAD_TOL: Tol = { rtol: 0, atol: 1e-5 };
/** One official-size block (96 → 192 channels, hd 96): ~10 ops, sums of up to 768 terms. */
const BLOCK_TOL: Tol = { rtol: 0, atol: 2e-6 };

const nanoConfig = (mode: SegmenterConfig['mode']): SegmenterConfig => ({
  model: 'nano', head: 'fpn', mode, seed: 1,
  lora: { r: 4, alpha: 32, dropout: 0, targets: ALL_LORA_TARGETS },
});

function strip(prefix: string, sd: Map<string, { shape: number[]; data: Float32Array }>) {
  return new Map([...sd].map(([k, v]) => [k.startsWith(prefix) ? k.slice(prefix.length) : k, v]));
}

describe('official SAM2 ImageEncoder (nano config) vs ours', () => {
  it('records the SAM2 commit and torch version it was generated with', () => {
    expect(enc.meta.sam2_commit).toMatch(/^[0-9a-f]{40}$/);
    expect(String(enc.meta.torch)).toMatch(/^\d+\.\d+/);
    console.log(`encoder fixtures: SAM2 ${enc.meta.sam2_commit}, torch ${enc.meta.torch}`);
  });

  it.each(['features64', 'features96'])('trunk and FPN features (%s)', async (name) => {
    const e = await testEngine();
    const model = new Segmenter(e, nanoConfig('head'));
    const base = drawInit(enc.meta.init as InitSpec[], Number(enc.meta.init_seed));
    model.image_encoder.loadStateDict(strip('image_encoder.', base), { source: enc.file });
    const x = enc.get(name, 'x');
    await e.scopeAsync(async () => {
      const out = e.noGrad(() => model.image_encoder.forward(e.fromArray(x.data, x.shape)));
      for (const [i, t] of out.trunk.entries()) {
        const want = enc.get(name, `trunk${i}`);
        expect([...t.shape]).toEqual(want.shape);
        note('encoder', 'fwd', expectClose(await t.toArray(), want.data, FEATURE_TOL,
          `${name} trunk ${i}`));
      }
      expect(out.fpn.length).toBe(3);
      for (const [i, t] of out.fpn.entries()) {
        const want = enc.get(name, `fpn${i}`);
        expect([...t!.shape]).toEqual(want.shape);
        note('encoder', 'fwd', expectClose(await t!.toArray(), want.data, FEATURE_TOL,
          `${name} fpn ${i}`));
      }
    });
    for (const p of model.parameters()) p.dispose();
  });

  it('Dice-loss gradients of every LoRA A/B and head parameter after one backward', async () => {
    const e = await testEngine();
    const c = enc.case('lora_dice_grads') as unknown as { adapter_init: InitSpec[]; adapter_seed: string };
    const model = new Segmenter(e, nanoConfig('lora'));
    const sd = new Map([
      ...drawInit(enc.meta.init as InitSpec[], Number(enc.meta.init_seed)),
      ...drawInit(c.adapter_init, Number(c.adapter_seed)),
    ]);
    model.loadStateDict(sd, { source: enc.file });
    model.train(true);
    const trainable = model.trainable();
    const wantNames = enc.names().filter((k) => k.startsWith('lora_dice_grads.grad.'))
      .map((k) => k.slice('lora_dice_grads.grad.'.length));
    expect(trainable.map(([n]) => n).sort()).toEqual([...wantNames].sort());
    const x = enc.get('lora_dice_grads', 'x');
    const target = enc.get('lora_dice_grads', 'target');
    await e.scopeAsync(async () => {
      const logits = model.forward(e.fromArray(x.data, x.shape));
      note('encoder', 'fwd', expectClose(await logits.toArray(),
        enc.get('lora_dice_grads', 'logits').data, FEATURE_TOL, 'LoRA model logits'));
      const loss = diceLoss(logits, e.fromArray(target.data, target.shape));
      note('encoder', 'fwd', expectClose(await loss.toArray(), enc.get('lora_dice_grads', 'loss').data,
        { rtol: 1e-6, atol: 0 }, 'Dice loss'));
      e.backward(loss);
    });
    for (const [n, p] of trainable) {
      note('encoder', 'grad', expectClose(await p.grad!.toArray(),
        enc.get('lora_dice_grads', `grad.${n}`).data, GRAD_TOL, `grad ${n}`));
    }
    for (const p of model.parameters()) {
      p.grad?.dispose();
      p.dispose();
    }
  });
});

describe('official-size Hiera-tiny block (blocks.1: 96 → 192, q-pool, 8x8 windows) vs ours', () => {
  it('forward and input gradient', async () => {
    const e = await testEngine();
    const plan = blockPlan(MODEL_CONFIGS.tiny.trunk)[1];
    expect(plan).toMatchObject({ dim: 96, dimOut: 192, heads: 2, windowSize: 8, qStride: [2, 2] });
    const blk = new MultiScaleBlock(e, plan, 1e-6, new Rng(1));
    blk.loadStateDict(drawInit(blockFx.meta.init as InitSpec[], Number(blockFx.meta.init_seed)),
      { source: blockFx.file });
    const x = blockFx.get('block1', 'x');
    await e.scopeAsync(async () => {
      const xt = e.fromArray(x.data, x.shape, true);
      const y = blk.forward(xt);
      expect([...y.shape]).toEqual(blockFx.get('block1', 'y').shape);
      note('block-tiny', 'fwd', expectClose(await y.toArray(), blockFx.get('block1', 'y').data,
        BLOCK_TOL, 'tiny block 1 forward'));
      e.backward(y, e.fromArray(blockFx.get('block1', 'gy').data, y.shape));
      note('block-tiny', 'grad', expectClose(await xt.grad!.toArray(),
        blockFx.get('block1', 'gx').data, BLOCK_TOL, 'tiny block 1 grad x'));
    });
    for (const p of blk.parameters()) {
      p.grad?.dispose();
      p.dispose();
    }
  });
});
