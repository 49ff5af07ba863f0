import { afterAll, describe, expect, it } from 'vitest';
import type { Tensor } from '../src/autograd/tensor.js';
import { closeGpu } from '../src/gpu/runtime.js';
import { AdamW, clipGradNorm, type ParamGroup } from '../src/train/optim.js';
import { expectClose, f32, randn, reportError, setGrad, testEngine, type Tol } from './helpers.js';
import { type AdamWHyper, adamwRef } from './ref/adamw.js';

afterAll(() => closeGpu());

// Parameters: each step rounds p (twice), m and v once in f32; over 6 steps that accumulates to
// at most ~1e-6 of |p| (the update itself is ~lr, so its own f32 error is far below that).
const PARAM_TOL: Tol = { rtol: 2e-6, atol: 1e-6 };
// Moments: a handful of f32 roundings of values of the size of g (m) and g^2 (v).
const MOMENT_TOL: Tol = { rtol: 1e-5, atol: 1e-6 };

const SHAPES = [[1031], [7, 3], [13, 17], [5]];
const size = (s: number[]) => s.reduce((a, b) => a * b, 1);

describe('AdamW', () => {
  it('matches torch.optim.AdamW in float64 over several steps with two groups', async () => {
    const e = await testEngine();
    const init = SHAPES.map((s) => f32(randn(size(s))));
    const params = init.map((x, i) => e.parameter(x, SHAPES[i], true, `p${i}`));
    const hyper: AdamWHyper[] = [
      { lr: 1e-3, wd: 0.01, b1: 0.9, b2: 0.999, eps: 1e-8 },
      { lr: 5e-3, wd: 0, b1: 0.8, b2: 0.95, eps: 1e-6 },
    ];
    const groups: ParamGroup[] = [
      { params: [params[0], params[1]], lr: hyper[0].lr, weightDecay: hyper[0].wd },
      {
        params: [params[2], params[3]],
        lr: hyper[1].lr,
        weightDecay: hyper[1].wd,
        betas: [hyper[1].b1, hyper[1].b2],
        eps: hyper[1].eps,
      },
    ];
    const groupOf = [0, 0, 1, 1];
    const opt = new AdamW(groups);
    const ref = init.map((x) => ({ p: x.slice(), m: new Float64Array(x.length),
      v: new Float64Array(x.length), t: 0 }));
    for (let step = 1; step <= 6; step++) {
      // A schedule on group 0; p2 first gets a gradient at step 3; p3 never does (skipped).
      opt.paramGroups[0].lr = hyper[0].lr = 1e-3 * (1 - step / 10);
      for (let i = 0; i < params.length; i++) {
        const has = i === 3 ? false : i === 2 ? step >= 3 : true;
        const g = has ? f32(randn(params[i].size)) : null;
        await setGrad(params[i], g);
        if (g) adamwRef(ref[i].p, ref[i].m, ref[i].v, g, ++ref[i].t, hyper[groupOf[i]]);
      }
      opt.step();
      for (let i = 0; i < params.length; i++) {
        const r = expectClose(await params[i].toArray(), ref[i].p, PARAM_TOL,
          `adamw step ${step} param ${i}`);
        if (step === 6) reportError('adamw', `param ${i} after 6 steps`, SHAPES[i].join('x'), r);
      }
    }
    const sd = await opt.stateDict();
    expect(sd.step).toBe(6);
    expect(sd.paramSteps).toEqual([6, 6, 4, 0]);
    expect(sd.groups[0].lr).toBeCloseTo(1e-3 * 0.4, 12);
    for (let i = 0; i < params.length; i++) {
      reportError('adamw', `exp_avg ${i}`, SHAPES[i].join('x'),
        expectClose(sd.m[i], ref[i].m, MOMENT_TOL, `adamw exp_avg ${i}`));
      reportError('adamw', `exp_avg_sq ${i}`, SHAPES[i].join('x'),
        expectClose(sd.v[i], ref[i].v, MOMENT_TOL, `adamw exp_avg_sq ${i}`));
    }
    // The never-updated parameter is bit-identical to its initial value.
    expect(Array.from(await params[3].toArray())).toEqual(Array.from(Float32Array.from(init[3])));
    opt.dispose();
    params.forEach((p) => p.dispose());
  });

  it('resumes exactly from stateDict / loadStateDict', async () => {
    const e = await testEngine();
    const shapes = [[1031], [7, 3], [13, 17]];
    const mk = (vals: Float32Array[]) =>
      vals.map((x, i) => e.parameter(x, shapes[i], true, `q${i}`));
    const a = mk(shapes.map((s) => Float32Array.from(randn(size(s)))));
    const groupsFor = (ps: Tensor[], lr0: number): ParamGroup[] => [
      { params: [ps[0], ps[1]], lr: lr0, weightDecay: 0.05 },
      { params: [ps[2]], lr: 2e-3, weightDecay: 0, betas: [0.85, 0.99], eps: 1e-7 },
    ];
    const optA = new AdamW(groupsFor(a, 3e-3));
    for (let step = 0; step < 3; step++) {
      for (const p of a) await setGrad(p, randn(p.size));
      optA.paramGroups[0].lr *= 0.5;
      optA.step();
    }
    const sd = await optA.stateDict();
    // A fresh optimizer over copies of the parameters, deliberately built with another lr.
    const b = mk(await Promise.all(a.map((p) => p.toArray())));
    const optB = new AdamW(groupsFor(b, 1));
    optB.loadStateDict(sd);
    expect(optB.paramGroups[0].lr).toBe(optA.paramGroups[0].lr);
    for (let i = 0; i < a.length; i++) {
      const g = randn(a[i].size);
      await setGrad(a[i], g);
      await setGrad(b[i], g);
    }
    optA.step();
    optB.step();
    for (let i = 0; i < a.length; i++) {
      expect(Array.from(await b[i].toArray()), `param ${i}`).toEqual(
        Array.from(await a[i].toArray()),
      );
    }
    const [sa, sb] = [await optA.stateDict(), await optB.stateDict()];
    expect(sb.paramSteps).toEqual(sa.paramSteps);
    sa.m.forEach((m, i) => expect(Array.from(sb.m[i])).toEqual(Array.from(m)));
    sa.v.forEach((v, i) => expect(Array.from(sb.v[i])).toEqual(Array.from(v)));
    expect(() => optB.loadStateDict({ ...sd, m: sd.m.slice(1) })).toThrow(/expected state for 3/);
    optA.dispose();
    optB.dispose();
    [...a, ...b].forEach((p) => p.dispose());
  });

  it('zeroGrad keeps or drops the gradient buffers', async () => {
    const e = await testEngine();
    const p = e.parameter(Float32Array.from(randn(37)), [37], true, 'z');
    const opt = new AdamW([{ params: [p], lr: 1e-3, weightDecay: 0 }]);
    await setGrad(p, randn(37));
    opt.zeroGrad();
    expect(Array.from(await p.grad!.toArray())).toEqual(new Array(37).fill(0));
    opt.zeroGrad(true);
    expect(p.grad).toBeNull();
    opt.dispose();
    p.dispose();
  });
});

describe('clipGradNorm', () => {
  // The norm is a sqrt of an f32 tree sum of ~6400 positive squares: ~1e-6 relative; the clipped
  // gradients are one f32 product more.
  const TOL: Tol = { rtol: 1e-5, atol: 1e-6 };

  it.each([0.5, 10])('matches torch clip_grad_norm_ (maxNorm = %s x norm)', async (factor) => {
    const e = await testEngine();
    const shapes = [[1031], [7, 3], [5003], [300], [4]];
    const params = shapes.map((s, i) => e.parameter(new Float32Array(size(s)), s, true, `c${i}`));
    const grads = shapes.map((s, i) => (i === 4 ? null : f32(randn(size(s)))));
    for (let i = 0; i < params.length; i++) await setGrad(params[i], grads[i]);
    let sq = 0;
    for (const g of grads) if (g) for (const x of g) sq += x * x;
    const norm = Math.sqrt(sq);
    const maxNorm = factor * norm;
    const coef = Math.min(1, maxNorm / (norm + 1e-6));
    const got = await e.scopeAsync(async () => clipGradNorm(params, maxNorm).toArray());
    reportError('clip_grad_norm', 'norm', shapes.map((s) => s.join('x')).join(' '),
      expectClose(got, [norm], TOL, 'clip norm'));
    for (let i = 0; i < params.length; i++) {
      const g = grads[i];
      if (!g) {
        expect(params[i].grad).toBeNull();
        continue;
      }
      const r = expectClose(await params[i].grad!.toArray(), g.map((x) => x * coef), TOL,
        `clipped grad ${i}`);
      reportError('clip_grad_norm', `grad ${i} (factor ${factor})`, shapes[i].join('x'), r);
    }
    params.forEach((p) => p.dispose());
  });
});
