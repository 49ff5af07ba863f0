import { afterAll, describe, expect, it } from 'vitest';
import type { Engine, Tensor } from '../src/autograd/tensor.js';
import { closeGpu } from '../src/gpu/runtime.js';
import { gelu } from '../src/ops/activation.js';
import { add } from '../src/ops/add.js';
import { attentionQkv } from '../src/ops/attention.js';
import { layerNorm } from '../src/ops/layer-norm.js';
import { linear } from '../src/ops/linear.js';
import { loraLinear } from '../src/ops/lora-linear.js';
import { bceWithLogits, diceLoss } from '../src/ops/loss.js';
import { reshape } from '../src/ops/shape.js';
import { windowPartition, windowUnpartition } from '../src/ops/window.js';
import { AdamW, clipGradNorm } from '../src/train/optim.js';
import {
  type CompareResult, checkRefBackward, expectClose, f32, randn, reportError,
  testEngine, type Tol, uniform,
} from './helpers.js';
import {
  type AdamWHyper, type AdamWSlot, type CompositeConfig, type Params, adamw64, clipGradNorm64,
  compositeLossAndGrads, compositeShapes, isTrainable, loraSeed,
} from './ref/composite.js';

afterAll(() => closeGpu());

const STEPS = 5;

/**
 * Batch 2 on a 6x6 token grid, dim 16, 2 heads (hd 8), MLP 32, LoRA r 2 (alpha 4). Block 0 uses
 * 4x4 windows, so 6x6 pads to 8x8 and 3 of its 4 windows hold zero padding tokens; block 1 is
 * global (36 tokens).
 */
const BASE: CompositeConfig = {
  B: 2, H: 6, W: 6, C: 16, heads: 2, mlp: 32, windows: [4, 0], rank: 2, loraScale: 2,
  dropout: 0, lora: ['blocks.0.attn.qkv', 'blocks.1.attn.qkv', 'blocks.1.mlp.fc1'],
  lnEps: 1e-6, diceSmooth: 1e-5,
};

interface Variant {
  label: string;
  dropout: number;
  /** PEFT initialises lora_B to zero (the first step then gives lora_A no gradient). */
  zeroB: boolean;
}

const VARIANTS: Variant[] = [
  { label: 'no dropout, PEFT init (lora_B = 0)', dropout: 0, zeroB: true },
  { label: 'LoRA dropout 0.25, random lora_B', dropout: 0.25, zeroB: false },
];

/**
 * Optimiser groups: the LoRA factors with decay, the head without. eps is 1e-3 rather than
 * torch's 1e-8 on purpose: Adam divides each gradient by its own RMS, so with a tiny eps a
 * near-zero gradient element whose f32 sign differs from float64's moves its parameter by 2·lr
 * and no tolerance could tell that from a bug. eps bounds that gain to lr / eps (see the
 * tolerances); the gradients here are 1e-3..3e-1, so the optimiser still behaves like Adam.
 */
const HYPER: Record<'lora' | 'head', AdamWHyper> = {
  lora: { lr: 1e-2, weightDecay: 0.01, betas: [0.9, 0.999], eps: 1e-3 },
  head: { lr: 5e-3, weightDecay: 0, betas: [0.9, 0.999], eps: 1e-3 },
};
const groupOf = (name: string) => (name.startsWith('head.') ? 'head' : 'lora');

/** Fresh f32-representable parameters: frozen base weights ~ 1/sqrt(fan_in), LoRA as PEFT. */
function initParams(cfg: CompositeConfig, v: Variant): Params {
  const p: Params = {};
  for (const [name, shape] of compositeShapes(cfg)) {
    const n = shape.reduce((a, b) => a * b, 1);
    const fanIn = shape[shape.length - 1];
    let x: Float64Array;
    if (name.endsWith('.lora_A')) x = uniform(n, -1 / Math.sqrt(fanIn), 1 / Math.sqrt(fanIn));
    else if (name.endsWith('.lora_B')) x = v.zeroB ? new Float64Array(n) : randn(n, undefined, 0.2);
    else if (/norm\d\.weight$/.test(name)) x = randn(n, undefined, 0.1).map((t) => 1 + t);
    else if (name.endsWith('.bias')) x = randn(n, undefined, 0.1);
    else x = randn(n, undefined, 1 / Math.sqrt(fanIn));
    p[name] = f32(x);
  }
  return p;
}

/** The network on the engine's ops, mirroring compositeLossAndGrads. */
function forwardGpu(cfg: CompositeConfig, P: Map<string, Tensor>, x: Tensor, target: Tensor,
  step: number, training = true): Tensor {
  const { B, H, W, C } = cfg;
  const get = (name: string) => P.get(name)!;
  const lin = (name: string, t: Tensor) => {
    const w = get(`${name}.weight`);
    const b = get(`${name}.bias`);
    const k = cfg.lora.indexOf(name);
    if (k < 0) return linear(t, w, b);
    return loraLinear(t, w, b, get(`${name}.lora_A`), get(`${name}.lora_B`), {
      scale: cfg.loraScale, dropout: cfg.dropout, seed: loraSeed(step, k), training,
    });
  };
  let cur = x;
  cfg.windows.forEach((ws, i) => {
    const pre = `blocks.${i}`;
    const n1 = layerNorm(cur, get(`${pre}.norm1.weight`), get(`${pre}.norm1.bias`), cfg.lnEps);
    const xa = ws > 0 ? windowPartition(n1, ws) : reshape(n1, [B, H * W, C]);
    const att = attentionQkv(lin(`${pre}.attn.qkv`, xa), cfg.heads);
    const proj = lin(`${pre}.attn.proj`, att);
    const back = ws > 0 ? windowUnpartition(proj, ws, [H, W]) : reshape(proj, [B, H, W, C]);
    const x1 = add(cur, back);
    const n2 = layerNorm(x1, get(`${pre}.norm2.weight`), get(`${pre}.norm2.bias`), cfg.lnEps);
    cur = add(x1, lin(`${pre}.mlp.fc2`, gelu(lin(`${pre}.mlp.fc1`, n2))));
  });
  const logits = linear(cur, get('head.weight'), get('head.bias'));
  return add(diceLoss(logits, target, cfg.diceSmooth), bceWithLogits(logits, target));
}

/**
 * Tolerances. Gradients are compared with float64 evaluated at the GPU's own current parameters,
 * so they measure one f32 forward/backward through ~12 ops, each good to ≲ 1e-6·sqrt(L) of its
 * scale for sums of L ≤ 128 terms (the per-op tests' bound): ≲ 5e-5 in all (measured ≤ 8e-6).
 * Loss and parameters are compared with the independent float64 trajectory (nothing resyncs), so
 * they also carry the drift: AdamW turns a gradient error δg into at most lr·δg/eps of parameter
 * per step, ≤ 1e-2·3e-8/1e-3 = 3e-7 here, so five steps stay well below 1e-4 of the parameter
 * scale (measured ≤ 1.1e-5). The loss moves by that drift times its slope (≲ 1) plus one f32
 * forward: 1e-5 relative (measured ≤ 2e-7); the clip norm, a scalar sqrt of a sum, likewise.
 */
const LOSS_TOL: Tol = { rtol: 1e-5, atol: 0 };
const GRAD_RTOL = 5e-5;
const PARAM_RTOL = 1e-4;

/**
 * expectClose with the error scale max(max|want|, floor) in place of max|want| (the returned
 * maxRel is against that scale too). Why floors: a gradient's f32 error follows the terms of its
 * sums, not the sum itself (head.bias's gradient is a sum of 72 logit gradients of ~1e-2 that can
 * cancel to 1e-4), so gradients are floored at 1e-2 of the network's largest gradient; a
 * parameter near zero (lora_B after its zero init, a bias crossing zero) still moves by ~lr per
 * step and drifts by a fraction of that, so parameters are floored at lr.
 */
function closeAtScale(got: ArrayLike<number>, want: Float64Array, rtol: number, floor: number,
  label: string): CompareResult {
  let top = 0;
  for (const w of want) top = Math.max(top, Math.abs(w));
  const scale = Math.max(top, floor);
  // An all-zero want leaves no scale to express the floor in: it must then be met exactly.
  const r = expectClose(got, want, { rtol, atol: top > 0 ? (rtol * scale) / top : 0 }, label);
  return { ...r, maxRel: r.maxAbs / scale };
}

type Worst = Record<'loss' | 'norm' | 'grad' | 'param', CompareResult>;

interface Trained {
  losses: number[];
  /** Loss without dropout (eval mode) before and after training. */
  evalBefore: number;
  evalAfter: number;
  worst: Worst;
}

async function train(e: Engine, v: Variant): Promise<Trained> {
  const cfg: CompositeConfig = { ...BASE, dropout: v.dropout };
  const shapes = compositeShapes(cfg);
  const init = initParams(cfg, v);
  const tokens = cfg.B * cfg.H * cfg.W;
  const x = f32(randn(tokens * cfg.C));
  const target = Float64Array.from(uniform(tokens, 0, 1), (u) => (u < 0.35 ? 1 : 0));

  const names = [...shapes.keys()];
  const trainable = names.filter(isTrainable);
  const frozen = names.filter((n) => !isTrainable(n));
  const P = new Map<string, Tensor>();
  for (const n of names) P.set(n, e.parameter(Float32Array.from(init[n]), shapes.get(n)!,
    isTrainable(n), n));
  const tx = e.parameter(Float32Array.from(x), [cfg.B, cfg.H, cfg.W, cfg.C], false, 'x');
  const tt = e.parameter(Float32Array.from(target), [cfg.B, cfg.H, cfg.W, 1], false, 'target');
  const params = trainable.map((n) => P.get(n)!);
  const opt = new AdamW((['lora', 'head'] as const).map((gname) => ({
    params: trainable.filter((n) => groupOf(n) === gname).map((n) => P.get(n)!),
    lr: HYPER[gname].lr,
    weightDecay: HYPER[gname].weightDecay,
    betas: HYPER[gname].betas,
    eps: HYPER[gname].eps,
  })));

  // The float64 trajectory, kept independently of the GPU's (errors compound, nothing resyncs).
  const ref: Params = {};
  for (const n of names) ref[n] = init[n].slice();
  // The GPU's own parameters, read back after each step.
  const cur: Params = { ...init };
  const slots: Record<string, AdamWSlot> = {};
  for (const n of trainable) {
    slots[n] = { m: new Float64Array(ref[n].length), v: new Float64Array(ref[n].length), t: 0 };
  }
  // Clip at half the first step's norm, so clipping is active at least once.
  const first = compositeLossAndGrads(cfg, ref, x, target, 0).grads;
  const maxNorm = 0.5 * clipGradNorm64(trainable.map((n) => first[n]), Infinity);

  const none: CompareResult = { maxAbs: 0, maxRel: 0, worstIndex: -1, used: 0 };
  const worst: Worst = { loss: none, norm: none, grad: none, param: none };
  const note = (k: keyof Worst, r: CompareResult) => {
    if (r.maxRel >= worst[k].maxRel) worst[k] = r;
  };
  const losses: number[] = [];
  const sizes = `B${cfg.B} ${cfg.H}x${cfg.W}x${cfg.C} heads ${cfg.heads} mlp ${cfg.mlp} ` +
    `r${cfg.rank} ws ${cfg.windows.join('/')} p${cfg.dropout}`;
  const baseLive = e.gpu.pool.stats.liveBytes;
  let liveAfterFirst = -1;
  try {
    for (let step = 0; step < STEPS; step++) {
      // The float64 trajectory's step, and (for the gradients) float64 at the GPU's parameters.
      const want = compositeLossAndGrads(cfg, ref, x, target, step);
      const wantGrads = trainable.map((n) => want.grads[n]);
      clipGradNorm64(wantGrads, maxNorm);
      trainable.forEach((n, i) => adamw64(ref[n], wantGrads[i], slots[n], HYPER[groupOf(n)]));
      const local = compositeLossAndGrads(cfg, cur, x, target, step);
      const localGrads = trainable.map((n) => local.grads[n]);
      const localNorm = clipGradNorm64(localGrads, maxNorm);
      const gradFloor = 1e-2 * Math.max(...localGrads.map((g) => Math.max(...g.map(Math.abs))));

      const got = await e.scopeAsync(async () => {
        opt.zeroGrad();
        const loss = forwardGpu(cfg, P, tx, tt, step);
        e.backward(loss);
        expect(e.tapeLength, 'tape cleared by backward').toBe(0);
        const norm = clipGradNorm(params, maxNorm);
        const grads = await Promise.all(params.map((p) => p.grad!.toArray()));
        opt.step();
        return { loss: (await loss.toArray())[0], norm: (await norm.toArray())[0], grads };
      });
      const at = `${v.label}, step ${step + 1}`;
      losses.push(got.loss);
      if (v.zeroB && step === 0) {
        // u = g·lora_B is exactly zero, so lora_A gets an exact zero gradient (and only decay).
        trainable.forEach((n, i) => {
          if (n.endsWith('.lora_A')) expect(got.grads[i].every((g) => g === 0), n).toBe(true);
        });
      }
      note('loss', expectClose([got.loss], [want.loss], LOSS_TOL, `${at}: loss`));
      note('norm', expectClose([got.norm], [localNorm], LOSS_TOL, `${at}: grad norm`));
      for (let i = 0; i < trainable.length; i++) {
        const n = trainable[i];
        note('grad', closeAtScale(got.grads[i], localGrads[i], GRAD_RTOL, gradFloor,
          `${at}: grad ${n}`));
        const now = await params[i].toArray();
        note('param', closeAtScale(now, ref[n], PARAM_RTOL, HYPER[groupOf(n)].lr, `${at}: ${n}`));
        cur[n] = Float64Array.from(now);
      }
      // The tape, its saved tensors and every step temporary go back to the pool.
      if (step === 0) liveAfterFirst = e.gpu.pool.stats.liveBytes;
      else expect(e.gpu.pool.stats.liveBytes, `${at}: live GPU bytes`).toBe(liveAfterFirst);
    }
    expect(liveAfterFirst).toBeGreaterThan(baseLive);
    // Frozen base weights: no gradient ever, and bit-identical after training.
    for (const n of frozen) {
      const t = P.get(n)!;
      expect(t.grad, `${n}.grad`).toBeNull();
      expect(Array.from(await t.toArray()), n).toEqual(Array.from(Float32Array.from(init[n])));
    }
    expect(tx.grad).toBeNull();
    // Eval mode (no dropout mask even with p > 0), the trained GPU net against trained float64.
    const evalCfg = { ...cfg, dropout: 0 };
    const evalAfter = await e.scopeAsync(async () =>
      (await e.noGrad(() => forwardGpu(cfg, P, tx, tt, STEPS, false)).toArray())[0]);
    expect(e.tapeLength).toBe(0);
    note('loss', expectClose([evalAfter], [compositeLossAndGrads(evalCfg, ref, x, target, 0).loss],
      LOSS_TOL, `${v.label}: eval loss after training`));
    const evalBefore = compositeLossAndGrads(evalCfg, init, x, target, 0).loss;
    for (const [k, r] of Object.entries(worst)) {
      reportError('composite', `${k}, worst of ${STEPS} steps (${v.label})`, sizes, r);
    }
    return { losses, evalBefore, evalAfter, worst };
  } finally {
    opt.dispose();
    for (const t of [...P.values(), tx, tt]) t.dispose();
  }
}

describe('composite: two blocks (windowed + global attention, MLP) with LoRA', () => {
  it.each(VARIANTS)('the float64 reference backward matches finite differences ($label)',
    (v) => {
      const cfg: CompositeConfig = { ...BASE, dropout: v.dropout };
      const p = initParams(cfg, { ...v, zeroB: false });
      const tokens = cfg.B * cfg.H * cfg.W;
      const x = f32(randn(tokens * cfg.C));
      const target = Float64Array.from(uniform(tokens, 0, 1), (u) => (u < 0.35 ? 1 : 0));
      const trainable = Object.keys(p).filter(isTrainable);
      const withInputs = (xs: Float64Array[]) => {
        const q = { ...p };
        trainable.forEach((n, i) => (q[n] = xs[i]));
        return q;
      };
      checkRefBackward(
        (xs) => Float64Array.of(compositeLossAndGrads(cfg, withInputs(xs), x, target, 3).loss),
        (xs, g) => {
          const { grads } = compositeLossAndGrads(cfg, withInputs(xs), x, target, 3);
          return trainable.map((n) => grads[n].map((d) => d * g[0]));
        },
        trainable.map((n) => p[n].slice()),
        Float64Array.of(1),
        { samples: 8, label: `composite reference (${v.label})` },
      );
    });

  it.each(VARIANTS)(`trains ${STEPS} AdamW + clipping steps like float64 ($label)`,
    async (v) => {
      const e = await testEngine();
      const { losses, evalBefore, evalAfter, worst } = await train(e, v);
      const rel = (k: keyof typeof worst) => worst[k].maxRel.toExponential(2);
      console.log(`composite (${v.label}): losses ${losses.map((l) => l.toFixed(6)).join(' ')}; ` +
        `worst rel err loss ${rel('loss')}, norm ${rel('norm')}, grads ${rel('grad')}, ` +
        `params ${rel('param')}; eval loss ${evalBefore.toFixed(6)} -> ${evalAfter.toFixed(6)}`);
      // Training losses see a new dropout mask each step, so the decrease is judged in eval mode.
      expect(evalAfter).toBeLessThan(evalBefore);
      if (v.dropout === 0) expect(losses[STEPS - 1]).toBeLessThan(losses[0]);
    });
});
