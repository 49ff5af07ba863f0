/**
 * AdamW with several tensors per dispatch (adamw_multi, packed moments) against the float64
 * reference, on both dispatch paths whatever the adapter: 7 tensors per dispatch (the GPU default
 * where the device has 16 storage bindings) and one per dispatch (CPU adapters, fewer bindings).
 */
import { afterAll, describe, expect, it } from 'vitest';
import { closeGpu } from '../src/gpu/runtime.js';
import { ADAMW_SLOTS, adamwSlotsFor, maxAdamwSlots } from '../src/kernels/optim.js';
import { AdamW, clipGradNorm } from '../src/train/optim.js';
import { expectClose, f32, randn, reportError, setGrad, spyRuns, testEngine, type Tol } from './helpers.js';
import { type AdamWHyper, adamwRef } from './ref/adamw.js';

afterAll(() => closeGpu());

// As optim.test.ts: each step rounds p (twice), m and v once in f32; over 4 steps that stays
// under ~1e-6 of |p|; moments are a handful of f32 roundings of values the size of g and g^2.
const PARAM_TOL: Tol = { rtol: 2e-6, atol: 1e-6 };
const MOMENT_TOL: Tol = { rtol: 1e-5, atol: 1e-6 };

// Awkward sizes: single elements, workgroup edges (256 ± 1), a tensor past 4 workgroups; 17
// tensors so the multi path has full dispatches, a partial one and unused slots in both groups.
const SIZES = [1, 5, 256, 257, 1031, 64, 65, 3, 513, 7, 2049, 2, 300, 17, 1100, 9, 11];
const GROUP_OF = SIZES.map((_, i) => (i < 10 ? 0 : 1));
const HYPER: AdamWHyper[] = [
  { lr: 1e-3, wd: 0.01, b1: 0.9, b2: 0.999, eps: 1e-8 },
  { lr: 5e-3, wd: 0.1, b1: 0.8, b2: 0.95, eps: 1e-6 },
];

describe('AdamW, several tensors per dispatch', () => {
  it('defaults to several tensors per dispatch on GPUs with 16 storage bindings only', async () => {
    const e = await testEngine();
    const limit = e.gpu.limits.maxStorageBuffersPerShaderStage;
    expect(maxAdamwSlots(e.gpu)).toBe(limit >= 2 * ADAMW_SLOTS + 2 ? ADAMW_SLOTS : 1);
    expect(adamwSlotsFor(e.gpu)).toBe(e.gpu.info.cpuFallback ? 1 : maxAdamwSlots(e.gpu));
  });

  it.each([ADAMW_SLOTS, 1])('matches float64 over 4 steps, %i tensor(s) per dispatch',
    async (slots) => {
      const e = await testEngine();
      if (slots > maxAdamwSlots(e.gpu)) {
        console.log(`skipped: the device has ${e.gpu.limits.maxStorageBuffersPerShaderStage} ` +
          'storage bindings per stage, the multi-tensor kernel needs 16');
        return;
      }
      const init = SIZES.map((n) => f32(randn(n)));
      const params = init.map((x, i) => e.parameter(x, [x.length], true, `p${i}`));
      const opt = new AdamW([0, 1].map((gi) => ({
        params: params.filter((_, i) => GROUP_OF[i] === gi),
        lr: HYPER[gi].lr,
        weightDecay: HYPER[gi].wd,
        betas: [HYPER[gi].b1, HYPER[gi].b2] as [number, number],
        eps: HYPER[gi].eps,
      })), { slotsPerDispatch: slots });
      const ref = init.map((x) => ({ p: x.slice(), m: new Float64Array(x.length),
        v: new Float64Array(x.length), t: 0 }));
      for (let step = 1; step <= 4; step++) {
        // Tensors 3 and 12 get no gradient at step 2 (their own step counts fall behind), 6 only
        // from step 3 on, 15 never (left bit-identical).
        let withGrad = [0, 0];
        for (let i = 0; i < params.length; i++) {
          const has = i === 15 ? false : i === 6 ? step >= 3 : !((i === 3 || i === 12) && step === 2);
          const g = has ? f32(randn(SIZES[i], undefined, 0.3)) : null;
          await setGrad(params[i], g);
          if (g) {
            adamwRef(ref[i].p, ref[i].m, ref[i].v, g, ++ref[i].t, HYPER[GROUP_OF[i]]);
            withGrad[GROUP_OF[i]]++;
          }
        }
        const runs = spyRuns(e.gpu, () => opt.step());
        const want = withGrad.reduce((a, n) => a + Math.ceil(n / slots), 0);
        expect(runs.length, `dispatches at step ${step}`).toBe(want);
        withGrad = [0, 0];
        for (let i = 0; i < params.length; i++) {
          const r = expectClose(await params[i].toArray(), ref[i].p, PARAM_TOL,
            `adamw (${slots}/dispatch) step ${step} param ${i} [${SIZES[i]}]`);
          if (step === 4 && i % 4 === 0) {
            reportError(`adamw ${slots}/dispatch`, `param ${i} after 4 steps`, `${SIZES[i]}`, r);
          }
        }
      }
      const sd = await opt.stateDict();
      expect(sd.paramSteps).toEqual(SIZES.map((_, i) => (i === 15 ? 0 : i === 6 ? 2 : i === 3 ||
        i === 12 ? 3 : 4)));
      for (let i = 0; i < params.length; i++) {
        expect(sd.m[i].length).toBe(SIZES[i]);
        expectClose(sd.m[i], ref[i].m, MOMENT_TOL, `exp_avg ${i}`);
        expectClose(sd.v[i], ref[i].v, MOMENT_TOL, `exp_avg_sq ${i}`);
      }
      expect(Array.from(await params[15].toArray())).toEqual(Array.from(Float32Array.from(init[15])));
      opt.dispose();
      params.forEach((p) => p.dispose());
    });
});

describe('clipGradNorm over many chunks', () => {
  // A float64 sum of squares against f32 partial sums over chunks of >= 2048 elements and a
  // final sum over ~390 partials: ~1e-6 relative, as in optim.test.ts.
  const TOL: Tol = { rtol: 1e-5, atol: 1e-6 };

  it('matches float64 with more partial sums than finalize threads (256)', async () => {
    const e = await testEngine();
    // 235 + 147 + 1 + 2 + 1 + 1 chunks.
    const sizes = [600001, 300001, 2047, 2049, 1, 300];
    const params = sizes.map((n, i) => e.parameter(new Float32Array(n), [n], true, `c${i}`));
    const grads = sizes.map((n) => f32(randn(n)));
    for (let i = 0; i < params.length; i++) await setGrad(params[i], grads[i]);
    let sq = 0;
    for (const g of grads) for (const x of g) sq += x * x;
    const norm = Math.sqrt(sq);
    const maxNorm = 0.25 * norm;
    const coef = maxNorm / (norm + 1e-6);
    const got = await e.scopeAsync(async () => clipGradNorm(params, maxNorm).toArray());
    reportError('clip_grad_norm', 'norm', sizes.join(' '), expectClose(got, [norm], TOL, 'norm'));
    for (const i of [0, 1, 3, 4]) {
      expectClose(await params[i].grad!.toArray(), grads[i].map((x) => x * coef), TOL,
        `clipped grad ${i}`);
    }
    params.forEach((p) => p.dispose());
  });

  it('gives norm 0 when no parameter has a gradient', async () => {
    const e = await testEngine();
    const p = e.parameter(new Float32Array(5), [5], true, 'none');
    const got = await e.scopeAsync(async () => clipGradNorm([p], 1).toArray());
    expect(Array.from(got)).toEqual([0]);
    p.dispose();
  });
});
