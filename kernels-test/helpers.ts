/**
 * Test helpers shared by every kernel test: seeded random inputs (fresh seed each run, printed on
 * failure and settable with SAM2_TEST_SEED), comparison against float64 references with stated
 * tolerances, finite-difference checks of reference backwards, and a one-call `checkOp` that runs
 * forward (outputs NaN-poisoned) and backward on the GPU against the reference.
 */
import { appendFileSync, mkdirSync } from 'node:fs';
import { beforeEach, expect } from 'vitest';
import { type DType, Engine, Tensor, numel } from '../src/autograd/tensor.js';
import type { Kernel } from '../src/gpu/kernel.js';
import { type Gpu, type RunArgs, getGpu } from '../src/gpu/runtime.js';
import { roundArrayF16 } from '../src/util/f16.js';
import { Rng } from '../src/util/random.js';

let engine: Engine | null = null;

/** The shared engine for a test file, with output poisoning on. */
export async function testEngine(): Promise<Engine> {
  if (!engine) {
    engine = new Engine(await getGpu());
    engine.poisonOutputs = true;
  }
  return engine;
}

export const SEED = process.env.SAM2_TEST_SEED
  ? Number(process.env.SAM2_TEST_SEED)
  : (Date.now() ^ (process.pid << 16)) >>> 0;

// Every failure names the seed, whichever assertion failed (helpers' own errors name it too).
beforeEach((ctx) => {
  ctx.onTestFailed(() => {
    console.error(`${ctx.task.name}: failed with test seed ${SEED} (replay: SAM2_TEST_SEED=${SEED})`);
  });
});

/** The project's seeded generator (mulberry32) as a plain function. */
export function rng(seed: number): () => number {
  const r = new Rng(seed);
  return () => r.next();
}

let seedCounter = 0;
/** A new generator per call, derived from the run's seed (so each test gets fresh data). */
export function nextRng(): () => number {
  return rng(SEED + 0x9e3779b9 * ++seedCounter);
}

export function randn(n: number, r = nextRng(), scale = 1): Float64Array {
  const out = new Float64Array(n);
  for (let i = 0; i < n; i += 2) {
    const u = Math.max(r(), 1e-12);
    const v = r();
    const m = Math.sqrt(-2 * Math.log(u)) * scale;
    out[i] = m * Math.cos(2 * Math.PI * v);
    if (i + 1 < n) out[i + 1] = m * Math.sin(2 * Math.PI * v);
  }
  return out;
}

export function uniform(n: number, lo = -1, hi = 1, r = nextRng()): Float64Array {
  return Float64Array.from({ length: n }, () => lo + (hi - lo) * r());
}

/** Round to f32 so the GPU and the float64 reference see identical inputs. */
export function f32(x: ArrayLike<number>): Float64Array {
  return Float64Array.from(Float32Array.from(x as ArrayLike<number>));
}

export interface Tol {
  /** Relative part of the bound: a fraction of |want_i|. */
  rtol: number;
  /**
   * Absolute part of the bound, as a fraction of max|want| (the output's magnitude), so the
   * bound applied to element i is |got_i - want_i| <= atol·max|want| + rtol·|want_i|.
   */
  atol: number;
  /**
   * Per-element absolute terms added to element i's bound, for a derived bound that differs
   * element by element (e.g. an f16-stored intermediate whose error scales with another tensor).
   */
  extra?: ArrayLike<number>;
}

export interface CompareResult {
  maxAbs: number;
  /** max|got - want| / max|want|: the figure quoted in issue notes. */
  maxRel: number;
  worstIndex: number;
  /** max_i |got_i - want_i| / bound_i: the fraction of the bound used (<= 1 passes). */
  used: number;
}

const fmt = (x: number) => x.toExponential(2);
/** A tolerance as written in the test (1e-6, not 0.000001). */
const num = (x: number) => (x > 0 && x < 1e-3 ? x.toExponential() : String(x));

/** The bound as applied, in words and numbers, for logs and errors. */
export function describeTol(tol: Tol, scale: number): string {
  return `bound |got-want| <= atol ${num(tol.atol)}·max|want| (= ${fmt(tol.atol * scale)}) + rtol ${num(tol.rtol)}·|want|` +
    (tol.extra ? ' + a derived per-element term' : '');
}

/**
 * Element i passes when |got - want| <= atol·max|want| + rtol·|want_i|. A non-finite value on
 * either side (an unwritten, NaN-poisoned output; a broken reference) fails with its index.
 * Prints one line with the measured error and the bound applied.
 */
export function expectClose(
  got: ArrayLike<number>,
  want: ArrayLike<number>,
  tol: Tol,
  label: string,
): CompareResult {
  if (got.length !== want.length) {
    throw new Error(`${label}: got ${got.length} elements, want ${want.length}; seed ${SEED}`);
  }
  if (!(tol.atol >= 0 && tol.rtol >= 0)) throw new Error(`${label}: bad tolerance ${JSON.stringify(tol)}`);
  let scale = 0;
  for (let i = 0; i < want.length; i++) {
    const w = want[i];
    if (!Number.isFinite(w)) {
      throw new Error(`${label}: reference element ${i} is ${w} (a non-finite reference checks nothing); seed ${SEED}`);
    }
    scale = Math.max(scale, Math.abs(w));
  }
  if (tol.extra && tol.extra.length !== want.length) {
    throw new Error(`${label}: ${tol.extra.length} per-element bounds for ${want.length} elements`);
  }
  const floor = tol.atol * scale;
  let maxAbs = 0;
  let worst = -1;
  let used = 0;
  for (let i = 0; i < want.length; i++) {
    const g = got[i];
    const w = want[i];
    if (!Number.isFinite(g)) {
      throw new Error(`${label}: output element ${i} is ${g} (want ${w}); seed ${SEED}`);
    }
    const d = Math.abs(g - w);
    const bound = floor + tol.rtol * Math.abs(w) + (tol.extra ? tol.extra[i] : 0);
    const ratio = d === 0 ? 0 : d / bound; // d > 0 against a zero bound: Infinity, fails
    if (d > maxAbs) maxAbs = d;
    if (ratio > used || worst < 0) {
      used = Math.max(used, ratio);
      worst = i;
    }
  }
  const result: CompareResult = {
    maxAbs,
    maxRel: scale > 0 ? maxAbs / scale : maxAbs === 0 ? 0 : Infinity,
    worstIndex: worst,
    used,
  };
  const measured = `max abs ${fmt(maxAbs)}, max abs/max|want| ${fmt(result.maxRel)} (max|want| ${fmt(scale)})`;
  if (!(used <= 1)) {
    throw new Error(
      `${label}: element ${worst} got ${got[worst]} want ${want[worst]}; ${measured}; ` +
        `${describeTol(tol, scale)}; seed ${SEED}`,
    );
  }
  console.log(`${label}: ${measured}; ${describeTol(tol, scale)}; uses ${(100 * used).toFixed(1)}% of it`);
  return result;
}

/** Appends a measured error to the SAM2_ERROR_REPORT file (jsonl, quoted in issue notes). */
export function reportError(op: string, what: string, sizes: string, r: CompareResult): void {
  if (!process.env.SAM2_ERROR_REPORT) return;
  mkdirSync('test-results', { recursive: true });
  appendFileSync(
    process.env.SAM2_ERROR_REPORT,
    `${JSON.stringify({ op, what, sizes, maxRel: r.maxRel, maxAbs: r.maxAbs, used: r.used })}\n`,
  );
}

export type RefFn = (inputs: Float64Array[]) => Float64Array;
export type RefBackward = (inputs: Float64Array[], gradOut: Float64Array) => (Float64Array | null)[];

/**
 * Checks a float64 reference backward against central finite differences of the float64
 * reference forward, on up to `samples` coordinates per input. In float64 with h = 1e-6 the
 * truncation and rounding error is ~1e-9 relative, so 1e-6 is a safe, still-sharp bound.
 */
export function checkRefBackward(
  ref: RefFn,
  refBackward: RefBackward,
  inputs: Float64Array[],
  gradOut: Float64Array,
  opts: { samples?: number; h?: number; tol?: number; skip?: number[]; label: string },
): void {
  const { samples = 24, h = 1e-6, tol = 1e-6 } = opts;
  const analytic = refBackward(inputs, gradOut);
  const r = nextRng();
  let worst = 0;
  const dot = (y: Float64Array) => {
    let s = 0;
    for (let i = 0; i < y.length; i++) s += y[i] * gradOut[i];
    return s;
  };
  let checked = 0;
  // Rounding floor of a central difference: fp and fm each carry ~eps·sum|y_i·g_i| of float64
  // rounding, divided by 2h, so below ~eps·F/h no difference is measurable (an input whose
  // gradients are all ~1e-4 would otherwise fail on noise: seed 409732660, composite, 2.0e-10
  // off with eps·F/h = 2.6e-10). Allowed: 8× that, on top of tol.
  const y0 = ref(inputs);
  let mag = 0;
  for (let i = 0; i < y0.length; i++) mag += Math.abs(y0[i] * gradOut[i]);
  const floor = (8 * Number.EPSILON * mag) / h;
  inputs.forEach((x, k) => {
    const a = analytic[k];
    if (!a) return;
    if (a.length !== x.length) {
      throw new Error(`${opts.label}: reference grad of input ${k} has ${a.length} elements, input ${x.length}`);
    }
    const bad = a.findIndex((v) => !Number.isFinite(v));
    if (bad >= 0) {
      throw new Error(`${opts.label}: reference grad of input ${k}[${bad}] is ${a[bad]}; seed ${SEED}`);
    }
    if (opts.skip?.includes(k)) return;
    checked++;
    let scale = 0;
    for (const v of a) scale = Math.max(scale, Math.abs(v));
    const idx = x.length <= samples ? [...x.keys()] : Array.from({ length: samples }, () =>
      Math.floor(r() * x.length));
    for (const i of idx) {
      const old = x[i];
      x[i] = old + h;
      const fp = dot(ref(inputs));
      x[i] = old - h;
      const fm = dot(ref(inputs));
      x[i] = old;
      const fd = (fp - fm) / (2 * h);
      if (!Number.isFinite(fd)) {
        throw new Error(`${opts.label}: finite difference of input ${k}[${i}] is ${fd}; seed ${SEED}`);
      }
      const err = Math.abs(fd - a[i]) / (Math.max(scale, 1e-12) + Math.abs(a[i]));
      if (!(Math.abs(fd - a[i]) <= tol * (Math.max(scale, 1e-12) + Math.abs(a[i])) + floor)) {
        throw new Error(
          `${opts.label}: reference grad of input ${k}[${i}] = ${a[i]}, finite difference ` +
            `${fd} (rel err ${err.toExponential(2)} > ${tol}, and |fd - grad| ` +
            `${Math.abs(fd - a[i]).toExponential(2)} > the rounding floor ${floor.toExponential(2)}); ` +
            `seed ${SEED}`,
        );
      }
      worst = Math.max(worst, err);
    }
  });
  console.log(
    `${opts.label}: reference backward vs central differences (h ${num(h)}) on ${checked} input(s): ` +
      `max |fd-grad|/(max|grad|+|grad_i|) ${fmt(worst)}; bound ${num(tol)} ` +
      `(+ rounding floor ${fmt(floor)} absolute)`,
  );
}

export interface OpCase {
  /** Label used in errors and the error report. */
  label: string;
  /** Float64 inputs (rounded to f32 by checkOp). */
  inputs: Float64Array[];
  shapes: number[][];
  /** Which inputs get a gradient check (default: all). */
  grads?: boolean[];
  /** GPU op under test. */
  gpu: (...xs: Tensor[]) => Tensor;
  ref: RefFn;
  refBackward?: RefBackward;
  outShape: number[];
  tol: Tol;
  /** Bound for the gradients; a function gets the input's index, the inputs and the upstream grad. */
  gradTol?: Tol | ((input: number, xs: Float64Array[], gy: Float64Array) => Tol);
  /** Finite-difference options for the reference backward. */
  fd?: { samples?: number; h?: number; tol?: number; skip?: number[] };
  /**
   * Storage type of each input (default f32). An f16 input is rounded to f16 before the reference
   * sees it; so is the upstream gradient when the output is f16. Leaf gradients are f32.
   */
  dtypes?: DType[];
  /** Expected dtype of the output (checked; default: whatever the op gives). */
  outDtype?: DType;
}

/** Forward against the reference, then (if refBackward) backward under a random upstream grad. */
export async function checkOp(c: OpCase): Promise<{ fwd: CompareResult; grads: CompareResult[] }> {
  const e = await testEngine();
  const dts = c.dtypes ?? c.inputs.map(() => 'f32' as DType);
  const xs = c.inputs.map((x, i) => (dts[i] === 'f16' ? Float64Array.from(roundArrayF16(x)) : f32(x)));
  c.shapes.forEach((s, i) => expect(numel(s), `${c.label}: input ${i} size`).toBe(xs[i].length));
  const needGrad = c.grads ?? xs.map(() => true);
  const out = await e.scopeAsync(async () => {
    const ts = xs.map((x, i) =>
      e.fromArray(x, c.shapes[i], !!c.refBackward && needGrad[i], dts[i]),
    );
    const y = c.gpu(...ts);
    expect([...y.shape], `${c.label}: output shape`).toEqual(c.outShape);
    if (c.outDtype) expect(y.dtype, `${c.label}: output dtype`).toBe(c.outDtype);
    const want = c.ref(xs);
    const got = await y.toArray();
    const fwd = expectClose(got, want, c.tol, `${c.label} forward`);
    reportError(c.label, 'forward', c.shapes.map((s) => s.join('x')).join(' '), fwd);
    const grads: CompareResult[] = [];
    if (c.refBackward) {
      const gy = y.dtype === 'f16' ? Float64Array.from(roundArrayF16(randn(y.size))) : f32(randn(y.size));
      checkRefBackward(c.ref, c.refBackward, xs.map((x) => x.slice()), gy, {
        ...c.fd,
        label: c.label,
      });
      const wantGrads = c.refBackward(xs, gy);
      e.backward(y, e.fromArray(gy, y.shape, false, y.dtype));
      for (let i = 0; i < ts.length; i++) {
        const w = wantGrads[i];
        const gt = ts[i].grad;
        if (!needGrad[i]) {
          if (gt) throw new Error(`${c.label}: input ${i} needs no gradient but got one`);
          continue;
        }
        // A gradient the reference does not give is a gradient nobody checks: an error.
        if (!w) throw new Error(`${c.label}: reference backward gives no gradient for input ${i}`);
        if (!gt) throw new Error(`${c.label}: input ${i} got no gradient`);
        const tol = typeof c.gradTol === 'function' ? c.gradTol(i, xs, gy) : c.gradTol ?? c.tol;
        const r = expectClose(await gt.toArray(), w, tol, `${c.label} backward input ${i}`);
        reportError(c.label, `grad input ${i}`, c.shapes.map((s) => s.join('x')).join(' '), r);
        grads.push(r);
      }
      ts.forEach((t) => t.grad?.dispose());
    }
    return { fwd, grads };
  });
  return out;
}

/**
 * Tolerance for f32 sums over L unit-scale products: the rounding error is ~2e-8·sqrt(L) of
 * max|want|, so 1e-6·sqrt(L) leaves a 50× margin.
 */
export function sumTol(L: number): Tol {
  return { rtol: 1e-5, atol: 1e-6 * Math.sqrt(L) };
}

/** Records the kernels dispatched while fn runs (to check that skipped work is skipped). */
export function spyRuns(gpu: Gpu, fn: () => void): { kernel: string; params: RunArgs['params'] }[] {
  const calls: { kernel: string; params: RunArgs['params'] }[] = [];
  const orig = gpu.run;
  gpu.run = (k: Kernel, args: RunArgs) => {
    calls.push({ kernel: k.name, params: args.params });
    orig.call(gpu, k, args);
  };
  try {
    fn();
  } finally {
    gpu.run = orig;
  }
  return calls;
}

/** Sets (or, with null, clears) a parameter's gradient to the given values, as backward would. */
export async function setGrad(p: Tensor, g: Float64Array | null): Promise<void> {
  if (!g) {
    p.grad?.dispose();
    p.grad = null;
    return;
  }
  const data = Float32Array.from(g);
  if (p.grad) p.gpu.write(p.grad.buffer, data);
  else p.grad = p.engine.parameter(data, p.shape, false);
}
