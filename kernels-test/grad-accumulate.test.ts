/**
 * Gradient accumulation in the engine's backward: the first gradient that reaches a tensor is
 * taken over (its storage moved into the map or the leaf's .grad) or copied once, never
 * zero-filled and added; later ones accumulate with axpy (in place only when nothing else can see
 * the target). These cases are the aliasing traps: a rule returning the same tensor for two inputs
 * (add), a rule returning a view (reshape), a tensor with two consumers, a leaf's .grad kept across
 * backward calls and zero(), and f16 activation gradients. Values are checked against float64
 * references on f32- (or f16-) rounded inputs; storage sharing is checked directly.
 */
import { afterAll, describe, expect, it } from 'vitest';
import type { Engine, Tensor } from '../src/autograd/tensor.js';
import { closeGpu } from '../src/gpu/runtime.js';
import { add } from '../src/ops/add.js';
import { mul, scale } from '../src/ops/elementwise.js';
import { reshape } from '../src/ops/shape.js';
import { F16_EPS, roundArrayF16 } from '../src/util/f16.js';
import { f16Supported } from './f16-helpers.js';
import { expectClose, f32, randn, spyRuns, testEngine, type Tol, uniform } from './helpers.js';

afterAll(() => closeGpu());

/** f32 unit roundoff. */
const U = 2 ** -24;
/** One f32 rounding of an exact result (sums of two terms, products). */
const ONE_ROUNDING: Tol = { rtol: U, atol: 0 };

const lin = (x: Float64Array, s: number) => x.map((v) => s * v);
const sum2 = (a: Float64Array, b: Float64Array) => a.map((v, i) => v + b[i]);

function leaf(e: Engine, data: Float64Array, shape: number[]): Tensor {
  return e.fromArray(Float32Array.from(data), shape, true);
}

function seedOf(e: Engine, data: Float64Array, shape: number[]): Tensor {
  return e.fromArray(Float32Array.from(data), shape);
}

/** Runs backward from `build()` seeded with `seed` (released after). */
function backward(e: Engine, build: () => Tensor, seed: Tensor): void {
  const out = e.scope(build);
  e.backward(out, seed);
  out.release();
  seed.release();
}

async function grad(t: Tensor): Promise<Float32Array> {
  if (!t.grad) throw new Error(`${t.name ?? 'tensor'} has no gradient`);
  return t.grad.toArray();
}

describe('gradient accumulation: taken over first, axpy after', () => {
  it('a rule returning the same tensor for two leaves (add) gives them separate storage', async () => {
    const e = await testEngine();
    const n = 37;
    const a = leaf(e, f32(randn(n)), [n]);
    const b = leaf(e, f32(randn(n)), [n]);
    // scale's fresh gradient 2s (exact) reaches add, whose rule returns that one tensor for a and b.
    const s1 = f32(randn(n));
    const s2 = f32(randn(n));
    backward(e, () => scale(add(a, b), 2), seedOf(e, s1, [n]));
    expect(a.grad!.buffer).not.toBe(b.grad!.buffer);
    expectClose(await grad(a), lin(s1, 2), ONE_ROUNDING, 'add twice: a.grad, 1st backward');
    expectClose(await grad(b), lin(s1, 2), ONE_ROUNDING, 'add twice: b.grad, 1st backward');
    // A second backward adds in place: had a and b shared storage, each would get 2·s2 twice.
    backward(e, () => scale(add(a, b), 2), seedOf(e, s2, [n]));
    const want = sum2(lin(s1, 2), lin(s2, 2));
    expectClose(await grad(a), want, ONE_ROUNDING, 'add twice: a.grad, 2 backwards');
    expectClose(await grad(b), want, ONE_ROUNDING, 'add twice: b.grad, 2 backwards');
    for (const t of [a, b]) t.dispose();
  });

  it('the same gradient returned twice for one input (add(x, x)) is summed, not doubled in place', async () => {
    const e = await testEngine();
    const n = 29;
    const x = leaf(e, f32(randn(n)), [n]);
    const s = f32(randn(n));
    backward(e, () => scale(add(x, x), 0.5), seedOf(e, s, [n]));
    // d/dx 0.5·(x + x) = 1: 0.5·s twice, summed (exact in f32).
    expectClose(await grad(x), s, { rtol: 0, atol: 0 }, 'add(x, x): x.grad');
    x.dispose();
  });

  it('a view returned by a rule (reshape) and the tensor it views do not alias', async () => {
    const e = await testEngine();
    const m = 5;
    const k = 7;
    const n = m * k;
    const a = leaf(e, f32(randn(n)), [m, k]);
    const b = leaf(e, f32(randn(n)), [n]);
    // add returns 2s for reshape(a) and b; reshape's rule returns a view of it for a.
    const build = () => scale(add(reshape(a, [n]), b), 2);
    const s1 = f32(randn(n));
    const s2 = f32(randn(n));
    backward(e, build, seedOf(e, s1, [n]));
    expect(a.grad!.buffer).not.toBe(b.grad!.buffer);
    expect(a.grad!.shape).toEqual([m, k]);
    expectClose(await grad(a), lin(s1, 2), ONE_ROUNDING, 'view: a.grad, 1st backward');
    expectClose(await grad(b), lin(s1, 2), ONE_ROUNDING, 'view: b.grad, 1st backward');
    backward(e, build, seedOf(e, s2, [n]));
    const want = sum2(lin(s1, 2), lin(s2, 2));
    expectClose(await grad(a), want, ONE_ROUNDING, 'view: a.grad, 2 backwards');
    expectClose(await grad(b), want, ONE_ROUNDING, 'view: b.grad, 2 backwards');
    // The seed itself (held by the caller) reaches b unchanged: it must be copied, not taken.
    const s3 = f32(randn(n));
    const seed = seedOf(e, s3, [n]);
    a.grad!.zero();
    b.grad!.zero();
    const out = e.scope(() => add(reshape(a, [n]), b));
    e.backward(out, seed);
    out.release();
    expect(b.grad!.buffer).not.toBe(seed.buffer);
    expectClose(await seed.toArray(), s3, { rtol: 0, atol: 0 }, 'view: seed unchanged');
    expectClose(await grad(b), s3, { rtol: 0, atol: 0 }, 'view: b.grad = seed after zero');
    expectClose(await grad(a), s3, { rtol: 0, atol: 0 }, 'view: a.grad = seed after zero');
    seed.release();
    for (const t of [a, b]) t.dispose();
  });

  it('a tensor with two consumers sums both gradients before its own rule runs', async () => {
    const e = await testEngine();
    const n = 41;
    const av = f32(randn(n));
    const wv = f32(randn(n));
    // Positive factors: the two contributions to dh share a sign, so the bound below holds
    // relative to each element (no cancellation).
    const c1v = f32(uniform(n, 0.5, 1.5));
    const c2v = f32(uniform(n, 0.5, 1.5));
    const a = leaf(e, av, [n]);
    const w = leaf(e, wv, [n]);
    const c1 = seedOf(e, c1v, [n]);
    const c2 = seedOf(e, c2v, [n]);
    const s = f32(randn(n));
    // h = a·w has two consumers; each mul rule returns a fresh gradient for h.
    backward(e, () => {
      const h = mul(a, w);
      return add(mul(h, c1), mul(h, c2));
    }, seedOf(e, s, [n]));
    const dh = s.map((v, i) => v * c1v[i] + v * c2v[i]);
    // dh: two products and their sum, rounded (<= 2u(1+u)|dh|); da, db one more product.
    const tol: Tol = { rtol: 3 * U * (1 + 1e-6), atol: 0 };
    expectClose(await grad(a), dh.map((v, i) => v * wv[i]), tol, 'two consumers: a.grad');
    expectClose(await grad(w), dh.map((v, i) => v * av[i]), tol, 'two consumers: w.grad');
    for (const t of [a, w, c1, c2]) t.dispose();
  });

  it('a leaf .grad keeps its object across zero(); the next first gradient replaces the values', async () => {
    const e = await testEngine();
    const n = 23;
    const p = leaf(e, f32(randn(n)), [n]);
    const q = leaf(e, f32(randn(n)), [n]);
    const s1 = f32(randn(n));
    backward(e, () => add(scale(p, 2), q), seedOf(e, s1, [n]));
    const gp = p.grad!;
    const gq = q.grad!;
    // Micro-batch style: a second backward accumulates into the same tensors.
    const s2 = f32(randn(n));
    backward(e, () => add(scale(p, 2), q), seedOf(e, s2, [n]));
    expect(p.grad).toBe(gp);
    expectClose(await grad(p), sum2(lin(s1, 2), lin(s2, 2)), ONE_ROUNDING, 'leaf: p.grad, 2 backwards');
    expectClose(await grad(q), sum2(s1, s2), ONE_ROUNDING, 'leaf: q.grad, 2 backwards');
    // Optimizer-style zero: the same objects; a view of p.grad alive forces the copy path.
    e.zeroGrad([p, q]);
    const pView = gp.view([1, n]);
    const s3 = f32(randn(n));
    backward(e, () => scale(p, 2), seedOf(e, s3, [n]));
    expect(p.grad).toBe(gp);
    expect(q.grad).toBe(gq);
    expectClose(await grad(p), lin(s3, 2), { rtol: 0, atol: 0 }, 'leaf: p.grad after zero');
    expectClose(await pView.toArray(), lin(s3, 2), { rtol: 0, atol: 0 }, 'leaf: view of p.grad after zero');
    // q got nothing since zero: it reads as zeros.
    expect(Array.from(await grad(q))).toEqual(new Array(n).fill(0));
    pView.release();
    for (const t of [p, q]) t.dispose();
  });

  it('a zeroed parameter gradient costs no fill and no axpy when the first gradient is fresh', async () => {
    const e = await testEngine();
    const n = 19;
    const p = leaf(e, f32(randn(n)), [n]);
    const s = f32(randn(n));
    backward(e, () => scale(p, 4), seedOf(e, s, [n]));
    e.zeroGrad([p]);
    const prevPoison = e.poisonOutputs;
    e.poisonOutputs = false; // NaN poisoning adds its own fills
    const seed = seedOf(e, s, [n]);
    const out = e.scope(() => scale(p, 4));
    let runs: string[];
    try {
      runs = spyRuns(e.gpu, () => e.backward(out, seed)).map((r) => r.kernel);
    } finally {
      e.poisonOutputs = prevPoison;
    }
    out.release();
    seed.release();
    // Only scale's rule runs: its fresh 4·s becomes p.grad's storage.
    expect(runs).toEqual(['elementwise.affine']);
    expectClose(await grad(p), lin(s, 4), ONE_ROUNDING, 'no-dispatch take-over: p.grad');
    p.dispose();
  });

  it('f16 activation gradients: summed in f16, cast once into the f32 leaf gradient', async (ctx) => {
    if (!(await f16Supported())) ctx.skip();
    const e = await testEngine();
    const n = 33;
    const xv = Float64Array.from(roundArrayF16(randn(n)));
    const cv = Float64Array.from(roundArrayF16(uniform(n, 0.5, 1.5)));
    const x = e.fromArray(xv, [n], true, 'f16');
    const c = e.fromArray(cv, [n], false, 'f16');
    // Seeds of one sign per element and magnitude in [0.25, 2]: no cancellation, no f16 subnormals.
    const sign = uniform(n).map((v) => (v < 0 ? -1 : 1));
    const s1 = Float64Array.from(roundArrayF16(uniform(n, 0.25, 2).map((v, i) => v * sign[i])));
    const s2 = Float64Array.from(roundArrayF16(uniform(n, 0.25, 2).map((v, i) => v * sign[i])));
    // x has two consumers: dx = s·c + 0.5·s, each rounded to f16 and summed in f16.
    const build = () => add(mul(x, c), scale(x, 0.5));
    backward(e, build, e.fromArray(s1, [n], false, 'f16'));
    expect(x.grad!.dtype).toBe('f32');
    const d1 = s1.map((v, i) => v * cv[i] + 0.5 * v);
    // s·c rounded (u16·|s·c|), the f16 sum rounded (u16·|dx|); 0.5·s is exact: 2·u16·(1+u16).
    const tol1: Tol = { rtol: 2 * F16_EPS * (1 + F16_EPS), atol: 0 };
    expectClose(await grad(x), d1, tol1, 'f16: x.grad, 1st backward');
    backward(e, build, e.fromArray(s2, [n], false, 'f16'));
    const d2 = s2.map((v, i) => v * cv[i] + 0.5 * v);
    // Both terms share a sign: the f16 errors add relative to the sum, plus one f32 rounding.
    const tol2: Tol = { rtol: 2 * F16_EPS * (1 + F16_EPS) + U, atol: 0 };
    expectClose(await grad(x), sum2(d1, d2), tol2, 'f16: x.grad, 2 backwards');
    for (const t of [x, c]) t.dispose();
  });
});
