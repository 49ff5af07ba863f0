/**
 * Every op family against PyTorch's own float64 autograd (kernels-test/fixtures/*.safetensors,
 * written by fixtures/generate.py; CI needs no Python). Inputs are float32-exact, so the error is
 * our float32 arithmetic alone. Bounds follow the per-op tests: sums of L unit-scale products
 * round to ~2e-8·sqrt(L) of max|want| in f32; sumTol(L) = 1e-6·sqrt(L) of max|want| plus 1e-5 of
 * |want| leaves a ~50x margin; what each comparison measured is printed beside its bound.
 */
import { afterAll, describe, expect, it } from 'vitest';
import type { Engine, Tensor } from '../src/autograd/tensor.js';
import { closeGpu } from '../src/gpu/runtime.js';
import { gelu } from '../src/ops/activation.js';
import { attentionQkv } from '../src/ops/attention.js';
import { conv2d } from '../src/ops/conv2d.js';
import { interpolate } from '../src/ops/interpolate.js';
import { layerNorm } from '../src/ops/layer-norm.js';
import { linear } from '../src/ops/linear.js';
import { loraLinear } from '../src/ops/lora-linear.js';
import { bceWithLogits, diceLoss } from '../src/ops/loss.js';
import { matmul } from '../src/ops/matmul.js';
import { maxPool2d } from '../src/ops/pool.js';
import { reshape, sliceLast } from '../src/ops/shape.js';
import { AdamW, clipGradNorm } from '../src/train/optim.js';
import { type F64Tensor, type Fixture, readFixture } from './fixture-file.js';
import { type CompareResult, type Tol, expectClose, reportError, sumTol, testEngine } from './helpers.js';

afterAll(() => closeGpu());

/** Worst error per fixture file, forward and gradient, printed at the end (for the issue note). */
const worst = new Map<string, { fwd: number; grad: number }>();
function note(file: string, kind: 'fwd' | 'grad', r: CompareResult): void {
  const w = worst.get(file) ?? { fwd: 0, grad: 0 };
  w[kind] = Math.max(w[kind], r.maxRel);
  worst.set(file, w);
}
afterAll(() => {
  for (const [f, w] of worst) {
    console.log(`fixture ${f}: worst max|err|/max|want| forward ${w.fwd.toExponential(2)}, ` +
      `gradient ${w.grad.toExponential(2)}`);
  }
});

interface Run {
  /** Builds the op's output from the input tensors (created from the named fixture tensors). */
  inputs: string[];
  /** Inputs that get a gradient (compared with `g<name>`). */
  grads?: string[];
  op: (...xs: Tensor[]) => Tensor;
  fwdTol: Tol;
  gradTol?: Tol;
}

/** Runs one case: forward vs `y`, then backward under `gy` vs `g<input>` for each grad input. */
async function runCase(e: Engine, fx: Fixture, file: string, name: string, r: Run): Promise<void> {
  const t = (k: string): F64Tensor => fx.get(name, k);
  await e.scopeAsync(async () => {
    const grads = new Set(r.grads ?? []);
    const xs = r.inputs.map((k) => e.fromArray(t(k).data, t(k).shape, grads.has(k)));
    const y = r.op(...xs);
    const want = t('y');
    expect([...y.shape], `${file}/${name}: output shape`).toEqual(want.shape);
    const fwd = expectClose(await y.toArray(), want.data, r.fwdTol, `${file}/${name} forward`);
    note(file, 'fwd', fwd);
    reportError(`fixture ${file}`, `${name} forward`, want.shape.join('x'), fwd);
    if (!grads.size) return;
    e.backward(y, e.fromArray(t('gy').data, y.shape));
    for (const [i, k] of r.inputs.entries()) {
      if (!grads.has(k)) continue;
      const g = xs[i].grad;
      if (!g) throw new Error(`${file}/${name}: ${k} got no gradient`);
      const res = expectClose(await g.toArray(), t(`g${k}`).data, r.gradTol ?? r.fwdTol,
        `${file}/${name} grad ${k}`);
      note(file, 'grad', res);
      reportError(`fixture ${file}`, `${name} grad ${k}`, t(k).shape.join('x'), res);
    }
  });
}

const cases = (fx: Fixture, op?: string) =>
  fx.cases.filter((c) => !op || c.op === op).map((c) => c.name);

describe('PyTorch fixtures: linear, matmul, LoRA linear', () => {
  const fx = readFixture('linear');
  it.each(cases(fx, 'linear'))('linear %s', async (name) => {
    const c = fx.case(name);
    const K = fx.get(name, 'x').shape.at(-1)!;
    const rows = fx.get(name, 'x').data.length / K;
    const inputs = c.bias ? ['x', 'weight', 'bias'] : ['x', 'weight'];
    await runCase(await testEngine(), fx, 'linear', name, {
      inputs, grads: inputs,
      op: (x, w, b) => linear(x, w, b ?? null),
      // dW sums over the rows, dx over the outputs.
      fwdTol: sumTol(K), gradTol: sumTol(Math.max(rows, fx.get(name, 'weight').shape[0])),
    });
  });
  it.each(cases(fx, 'matmul'))('matmul %s', async (name) => {
    const c = fx.case(name);
    const a = fx.get(name, 'a').shape;
    await runCase(await testEngine(), fx, 'linear', name, {
      inputs: ['a', 'b'], grads: ['a', 'b'],
      op: (x, y) => matmul(x, y, { transB: !!c.transB }),
      fwdTol: sumTol(a.at(-1)!), gradTol: sumTol(64),
    });
  });
  it.each(cases(fx, 'lora_linear'))('LoRA linear (PEFT semantics, dropout 0) %s', async (name) => {
    const c = fx.case(name);
    const K = fx.get(name, 'x').shape.at(-1)!;
    await runCase(await testEngine(), fx, 'linear', name, {
      inputs: ['x', 'weight', 'bias', 'lora_A', 'lora_B'],
      grads: ['x', 'weight', 'bias', 'lora_A', 'lora_B'],
      op: (x, w, b, la, lb) => loraLinear(x, w, b, la, lb,
        { scale: c.scale as number, dropout: 0, seed: 1, training: true }),
      fwdTol: sumTol(K), gradTol: sumTol(Math.max(K, 96)),
    });
  });
});

describe('PyTorch fixtures: attention as MultiScaleAttention calls it', () => {
  const fx = readFixture('attention');
  it.each(cases(fx))('%s', async (name) => {
    const c = fx.case(name) as unknown as { heads: number; h: number; w: number; pool: boolean };
    const [b, n, c3] = fx.get(name, 'qkv').shape;
    const C = c3 / 3;
    await runCase(await testEngine(), fx, 'attention', name, {
      inputs: ['qkv'], grads: ['qkv'],
      op: (qkv) => {
        if (!c.pool) return attentionQkv(qkv, c.heads);
        // Hiera's order: q split off, max-pooled 2x2 on its (h, w) grid, attends to all k/v.
        const q = maxPool2d(reshape(sliceLast(qkv, 0, C), [b, c.h, c.w, C]), 2);
        return attentionQkv(qkv, c.heads, reshape(q, [b, q.shape[1] * q.shape[2], C]));
      },
      // Softmax-weighted sums over n keys of width hd.
      fwdTol: sumTol(n + C / c.heads), gradTol: sumTol(2 * (n + C / c.heads)),
    });
  });
});

describe('PyTorch fixtures: conv2d (7x7 s4 p3 patch embed, 3x3 head, 1x1 neck)', () => {
  const fx = readFixture('conv2d');
  it.each(cases(fx))('%s', async (name) => {
    const c = fx.case(name) as unknown as { stride: number; padding: number };
    const [cout, cin, k] = fx.get(name, 'weight').shape;
    const [b, h, w] = fx.get(name, 'x').shape;
    await runCase(await testEngine(), fx, 'conv2d', name, {
      inputs: ['x', 'weight', 'bias'], grads: ['x', 'weight', 'bias'],
      op: (x, wt, bias) => conv2d(x, wt, bias, { stride: c.stride, padding: c.padding }),
      fwdTol: sumTol(cin * k * k),
      // dW sums over every output position, dx over Cout·k²/stride² taps.
      gradTol: sumTol(Math.max(b * h * w, cout * k * k)),
    });
  });
});

describe('PyTorch fixtures: layer norm (eps 1e-6), exact GELU, max-pool 2x2', () => {
  const fx = readFixture('norm-act-pool');
  it.each(cases(fx, 'layer_norm'))('layer norm %s', async (name) => {
    const C = fx.get(name, 'x').shape.at(-1)!;
    const rows = fx.get(name, 'x').data.length / C;
    await runCase(await testEngine(), fx, 'norm-act-pool', name, {
      inputs: ['x', 'weight', 'bias'], grads: ['x', 'weight', 'bias'],
      op: (x, w, b) => layerNorm(x, w, b, 1e-6),
      fwdTol: sumTol(C), gradTol: sumTol(Math.max(C, rows)),
    });
  });
  it('exact (erf) GELU', async () => {
    await runCase(await testEngine(), fx, 'norm-act-pool', 'gelu', {
      inputs: ['x'], grads: ['x'], op: gelu,
      // Elementwise: a few ulps of the value (and of the erf it uses).
      fwdTol: { rtol: 1e-6, atol: 1e-7 },
    });
  });
  it.each(cases(fx, 'max_pool'))('max-pool %s', async (name) => {
    await runCase(await testEngine(), fx, 'norm-act-pool', name, {
      inputs: ['x'], grads: ['x'], op: (x) => maxPool2d(x, 2),
      // A max and a routed gradient are exact (ties go to the first maximum, as PyTorch).
      fwdTol: { rtol: 0, atol: 0 },
    });
  });
});

describe('PyTorch fixtures: F.interpolate (nearest, bilinear, bicubic; align_corners False)', () => {
  const fx = readFixture('interpolate');
  it.each(cases(fx))('%s', async (name) => {
    const c = fx.case(name) as unknown as { mode: 'nearest' | 'bilinear' | 'bicubic'; size: [number, number] };
    const hasGrad = fx.has(name, 'gx');
    await runCase(await testEngine(), fx, 'interpolate', name, {
      inputs: ['x'], grads: hasGrad ? ['x'] : [],
      op: (x) => interpolate(x, c.size, c.mode),
      // nearest copies; bilinear/bicubic weigh 4/16 taps; backward sums up to (in/out ratio)^2
      // such contributions per input pixel (16x16 for the x16 head upsample).
      fwdTol: c.mode === 'nearest' ? { rtol: 0, atol: 0 } : sumTol(16),
      gradTol: c.mode === 'nearest' ? sumTol(4) : sumTol(4 * 16 * 16),
    });
  });
});

describe('PyTorch fixtures: MONAI Dice (sigmoid=True defaults) and BCE with logits', () => {
  const fx = readFixture('loss');
  it.each(cases(fx))('%s', async (name) => {
    const c = fx.case(name);
    const n = fx.get(name, 'logits').data.length;
    const e = await testEngine();
    await runCase(e, fx, 'loss', name, {
      inputs: ['logits', 'target'], grads: ['logits'],
      op: (x, t) => (c.op === 'dice' ? diceLoss(x, t, 1e-5) : bceWithLogits(x, t)),
      // Sums of n terms reduced to one scalar; the gradient is elementwise given the sums.
      fwdTol: sumTol(n), gradTol: sumTol(n),
    });
  });
});

describe('PyTorch fixtures: torch.optim.AdamW steps and clip_grad_norm_', () => {
  const fx = readFixture('adamw');
  it('AdamW, two groups, 5 steps', async () => {
    const e = await testEngine();
    const c = fx.case('two_groups') as unknown as {
      groups: { lr: number; betas: [number, number]; eps: number; weight_decay: number }[];
      steps: number;
    };
    const ps = [0, 1].map((i) => {
      const t = fx.get('two_groups', `p${i}.init`);
      return e.parameter(t.data, t.shape, true, `p${i}`);
    });
    const opt = new AdamW(c.groups.map((g, i) => ({
      params: [ps[i]], lr: g.lr, weightDecay: g.weight_decay, betas: g.betas, eps: g.eps,
    })));
    try {
      for (let s = 0; s < c.steps; s++) {
        for (const [i, p] of ps.entries()) {
          const g = fx.get('two_groups', `p${i}.grad${s}`);
          p.grad?.dispose();
          p.grad = e.parameter(g.data, g.shape, false);
        }
        opt.step();
        for (const [i, p] of ps.entries()) {
          // Each step rounds p, m and v in f32: ~1e-6 of |p| after 5 steps (optim.test.ts).
          const r = expectClose(await p.toArray(), fx.get('two_groups', `p${i}.step${s}`).data,
            { rtol: 2e-6, atol: 1e-6 }, `adamw step ${s + 1} p${i}`);
          note('adamw', 'fwd', r);
        }
      }
    } finally {
      opt.dispose();
      for (const p of ps) {
        p.grad?.dispose();
        p.dispose();
      }
    }
  });
  it.each(['clip_active', 'clip_inactive'])('clip_grad_norm_ %s', async (name) => {
    const e = await testEngine();
    const c = fx.case(name) as unknown as { max_norm: number };
    const ps = [0, 1].map((i) => {
      const g = fx.get(name, `g${i}`);
      const p = e.parameter(new Float32Array(g.data.length), g.shape, true);
      p.grad = e.parameter(g.data, g.shape, false);
      return p;
    });
    try {
      const norm = clipGradNorm(ps, c.max_norm);
      const n = expectClose(await norm.toArray(), fx.get(name, 'norm').data, sumTol(35),
        `${name} norm`);
      norm.release();
      note('adamw', 'grad', n);
      for (const [i, p] of ps.entries()) {
        note('adamw', 'grad', expectClose(await p.grad!.toArray(), fx.get(name, `out${i}`).data,
          sumTol(35), `${name} grad ${i}`));
      }
    } finally {
      for (const p of ps) {
        p.grad?.dispose();
        p.dispose();
      }
    }
  });
});
