/**
 * GELU and the residual add fused into the matmul epilogues of SAM2's MLP (linearGelu /
 * loraLinearGelu feeding linear / loraLinear with a residual; kernels: MatmulCall.activation and
 * .residual). Checked three ways:
 * - against float64 references of r + fc2(gelu(fc1(x))) (plain and LoRA with dropout), forward and
 *   every gradient, the reference backward itself checked by central finite differences;
 * - against the unfused composition (linear → gelu → linear → add, and the kernels one by one),
 *   which the fused path must equal bit for bit (f32 and f16, every matmul path);
 * - by the dispatches a forward + backward records: no elementwise pass is left.
 */
import { afterAll, describe, expect, it } from 'vitest';
import type { DType, Engine, Tensor } from '../src/autograd/tensor.js';
import { closeGpu, getGpu } from '../src/gpu/runtime.js';
import { unary, unaryGrad, add as addKernel } from '../src/kernels/elementwise.js';
import { type MatmulPath, matmul as mmKernel, sgCapable } from '../src/kernels/matmul.js';
import { gelu } from '../src/ops/activation.js';
import { add } from '../src/ops/add.js';
import { linear, linearGelu } from '../src/ops/linear.js';
import { type LoraOpts, loraLinear, loraLinearGelu } from '../src/ops/lora-linear.js';
import { roundArrayF16 } from '../src/util/f16.js';
import { f16Supported, sumTolF16 } from './f16-helpers.js';
import { SEED, checkOp, randn, spyRuns, sumTol, testEngine } from './helpers.js';
import { gelu64, geluGrad64 } from './ref/elementwise.js';
import {
  refDropoutMask, refLinear, refLinearBackward, refLora, refLoraBackward,
} from './ref/matmul.js';

afterAll(() => closeGpu());

const f16 = await f16Supported();
const sg = sgCapable(await getGpu());

interface MlpCase {
  /** x's shape; its last dim is the MLP's input width. */
  x: number[];
  hid: number;
  out: number;
  /** LoRA rank on both layers (0: plain linears). */
  rank: number;
  /** LoRA dropout (training). */
  p: number;
}

const CASES: MlpCase[] = [
  // Unaligned widths: tiled scalar-load kernels everywhere.
  { x: [37, 29], hid: 53, out: 19, rank: 0, p: 0 },
  { x: [2, 25, 30], hid: 45, out: 30, rank: 3, p: 0.2 },
  // A Hiera stage-1 MLP (96 -> 384 -> 96) on 7x7 windows: aligned, so lavapipe takes the regs
  // kernel and GPUs the vec4 tiles. (One shape for both: lavapipe compiles each regs pipeline
  // variant for tens of seconds, and the plain products share the LoRA case's.)
  { x: [3, 49, 96], hid: 384, out: 96, rank: 4, p: 0.1 },
  { x: [3, 49, 96], hid: 384, out: 96, rank: 0, p: 0 },
];

/** Cases compiling new regs pipelines on lavapipe: 20-30 s each on a loaded 2-core machine. */
const SLOW = 1_200_000;

/** Inputs in checkOp order: x, W1, b1, (A1, B1), W2, b2, (A2, B2), residual. */
function mlpInputs(c: MlpCase): { inputs: Float64Array[]; shapes: number[][] } {
  const inF = c.x[c.x.length - 1];
  const rows = c.x.reduce((a, b) => a * b, 1) / inF;
  const layer = (i: number, o: number) => [
    [randn(o * i, undefined, 1 / Math.sqrt(i)), [o, i]],
    [randn(o, undefined, 0.3), [o]],
    ...(c.rank ? [
      [randn(c.rank * i, undefined, 1 / Math.sqrt(i)), [c.rank, i]],
      [randn(o * c.rank, undefined, 0.5), [o, c.rank]],
    ] : []),
  ] as [Float64Array, number[]][];
  const all: [Float64Array, number[]][] = [
    [randn(rows * inF), c.x],
    ...layer(inF, c.hid),
    ...layer(c.hid, c.out),
    [randn(rows * c.out), [...c.x.slice(0, -1), c.out]],
  ];
  return { inputs: all.map((a) => a[0]), shapes: all.map((a) => a[1]) };
}

const SCALE = 1.5;
const seeds = (c: MlpCase) => [0x51ed + c.hid, 0x7a3 + c.out];

/** y = r + fc2(gelu(fc1(x))) in float64, with every gradient. */
function refMlp(c: MlpCase) {
  const inF = c.x[c.x.length - 1];
  const rows = c.x.reduce((a, b) => a * b, 1) / inF;
  const [s1, s2] = seeds(c);
  const d1 = { rows, inF, outF: c.hid, rank: c.rank, scale: SCALE };
  const d2 = { rows, inF: c.hid, outF: c.out, rank: c.rank, scale: SCALE };
  const m1 = refDropoutMask(rows * inF, c.p, s1);
  const m2 = refDropoutMask(rows * c.hid, c.p, s2);
  const split = (xs: Float64Array[]) => {
    const k = c.rank ? 4 : 2;
    return { x: xs[0], l1: xs.slice(1, 1 + k), l2: xs.slice(1 + k, 1 + 2 * k), r: xs[1 + 2 * k] };
  };
  const fwdLayer = (x: Float64Array, l: Float64Array[], d: typeof d1, m: Float64Array) =>
    c.rank
      ? refLora(x, l[0], l[1], l[2], l[3], m, d)
      : refLinear(x, l[0], l[1], rows, d.inF, d.outF);
  const bwdLayer = (x: Float64Array, l: Float64Array[], g: Float64Array, d: typeof d1,
    m: Float64Array) => {
    if (c.rank) {
      const r = refLoraBackward(x, l[0], l[2], l[3], m, g, d);
      return { dx: r.dx, grads: [r.dw, r.db, r.da, r.dB] };
    }
    const r = refLinearBackward(x, l[0], g, rows, d.inF, d.outF);
    return { dx: r.dx, grads: [r.dw, r.db] };
  };
  const forward = (xs: Float64Array[]) => {
    const { x, l1, l2, r } = split(xs);
    const h = fwdLayer(x, l1, d1, m1);
    const a = h.map(gelu64);
    const y = fwdLayer(a, l2, d2, m2);
    return { h, a, y: y.map((v, i) => v + r[i]) };
  };
  return {
    ref: (xs: Float64Array[]) => forward(xs).y,
    refBackward: (xs: Float64Array[], g: Float64Array) => {
      const { x, l1, l2 } = split(xs);
      const { h, a } = forward(xs);
      const b2 = bwdLayer(a, l2, g, d2, m2);
      const gh = b2.dx.map((v, i) => v * geluGrad64(h[i]));
      const b1 = bwdLayer(x, l1, gh, d1, m1);
      return [b1.dx, ...b1.grads, ...b2.grads, g];
    },
    rows,
    inF,
  };
}

/** The fused MLP (+ residual) over checkOp's tensors. */
function fusedMlp(c: MlpCase, training = true) {
  const [s1, s2] = seeds(c);
  const opts = (seed: number): LoraOpts => ({ scale: SCALE, dropout: c.p, seed, training });
  return (...ts: Tensor[]): Tensor => {
    const [x] = ts;
    const r = ts[ts.length - 1];
    if (!c.rank) return linear(linearGelu(x, ts[1], ts[2]), ts[3], ts[4], r);
    const h = loraLinearGelu(x, ts[1], ts[2], ts[3], ts[4], opts(s1));
    return loraLinear(h, ts[5], ts[6], ts[7], ts[8], opts(s2), r);
  };
}

/** The same MLP from separate passes: linear, gelu, linear, add. */
function unfusedMlp(c: MlpCase, training = true) {
  const [s1, s2] = seeds(c);
  const opts = (seed: number): LoraOpts => ({ scale: SCALE, dropout: c.p, seed, training });
  return (...ts: Tensor[]): Tensor => {
    const [x] = ts;
    const r = ts[ts.length - 1];
    if (!c.rank) return add(r, linear(gelu(linear(x, ts[1], ts[2])), ts[3], ts[4]));
    const h = gelu(loraLinear(x, ts[1], ts[2], ts[3], ts[4], opts(s1)));
    return add(r, loraLinear(h, ts[5], ts[6], ts[7], ts[8], opts(s2)));
  };
}

const label = (c: MlpCase) =>
  `mlp ${c.x.join('x')} -> ${c.hid} -> ${c.out}${c.rank ? ` lora r${c.rank} p${c.p}` : ''}`;

describe('fused MLP (GELU and residual in the matmul epilogues), f32', () => {
  it.each(CASES)('matches float64 at %j', async (c) => {
    const { inputs, shapes } = mlpInputs(c);
    const { ref, refBackward, rows, inF } = refMlp(c);
    await checkOp({
      label: `fused ${label(c)}`,
      inputs,
      shapes,
      gpu: fusedMlp(c),
      ref,
      refBackward,
      outShape: shapes[shapes.length - 1],
      // Two chained sums (over in, then hid): the longer one's bound (measured 1.5-3.3e-7 of
      // max|want|, as the single linear layers).
      tol: sumTol(Math.max(inF, c.hid)),
      gradTol: sumTol(Math.max(rows, inF, c.hid, c.out)),
      fd: { samples: 6 },
    });
  }, SLOW);
});

/**
 * Runs fn over fresh tensors of `inputs` (all requiring grad but the f16 frozen weights), then
 * backward with upstream g; returns the output and every gradient, as f32 arrays.
 */
async function runMlp(
  e: Engine, inputs: Float64Array[], shapes: number[][], dtypes: DType[], g: Float64Array,
  fn: (...ts: Tensor[]) => Tensor, grads: boolean[],
): Promise<Float32Array[]> {
  return e.scopeAsync(async () => {
    const ts = inputs.map((x, i) => e.fromArray(x, shapes[i], grads[i], dtypes[i]));
    const y = fn(...ts);
    e.backward(y, e.fromArray(g, y.shape, false, y.dtype));
    const out = [await y.toArray()];
    for (const t of ts) {
      if (t.grad) out.push(await t.grad.toArray());
      t.grad?.dispose();
    }
    return out;
  });
}

/** Asserts bit-equal arrays (NaN never equals: a poisoned element fails). */
function expectIdentical(got: Float32Array[], want: Float32Array[], what: string): void {
  expect(got.length, `${what}: number of tensors`).toBe(want.length);
  got.forEach((a, k) => {
    let diff = 0;
    let first = -1;
    for (let i = 0; i < a.length; i++) {
      if (!(a[i] === want[k][i]) || Object.is(a[i], -0) !== Object.is(want[k][i], -0)) {
        diff++;
        if (first < 0) first = i;
      }
    }
    if (diff > 0) {
      throw new Error(
        `${what}: tensor ${k} differs at ${diff} of ${a.length} elements (first ${first}: ` +
          `${a[first]} vs ${want[k][first]}); seed ${SEED}`,
      );
    }
  });
  console.log(`${what}: ${got.length} tensors (${got.map((a) => a.length).join(', ')} ` +
    'elements) bit-identical to the unfused composition');
}

describe('fused MLP equals the unfused composition bit for bit', () => {
  const dtypeCases: DType[] = f16 ? ['f32', 'f16'] : ['f32'];
  for (const dt of dtypeCases) {
    it.each(CASES)(`${dt}: %j`, async (c) => {
      const e = await testEngine();
      const { inputs, shapes } = mlpInputs(c);
      const n = inputs.length;
      // f16: activations and frozen weights f16, LoRA A/B f32 (the f16 model's layout).
      const isAB = (i: number) => c.rank > 0 && (i % 4 === 3 || i % 4 === 0) && i > 0 && i < n - 1;
      const dtypes = inputs.map((_, i) => (dt === 'f16' && !isAB(i) ? 'f16' : 'f32') as DType);
      const grads = inputs.map((_, i) => dtypes[i] === 'f32' || i === 0 || i === n - 1);
      const xs = inputs.map((x, i) =>
        (dtypes[i] === 'f16' ? Float64Array.from(roundArrayF16(x)) : x));
      const g = randn(inputs[n - 1].length);
      const gq = dt === 'f16' ? Float64Array.from(roundArrayF16(g)) : g;
      const fused = await runMlp(e, xs, shapes, dtypes, gq, fusedMlp(c), grads);
      const plain = await runMlp(e, xs, shapes, dtypes, gq, unfusedMlp(c), grads);
      expectIdentical(fused, plain, `${dt} ${label(c)} forward + backward`);
    }, SLOW);
  }

  it('inference (no tape): one dispatch per layer, same values', async () => {
    const e = await testEngine();
    const c = CASES[2];
    const { inputs, shapes } = mlpInputs(c);
    const run = (fn: (...ts: Tensor[]) => Tensor) =>
      e.scopeAsync(async () => {
        const ts = inputs.map((x, i) => e.fromArray(x, shapes[i]));
        let y: Tensor | null = null;
        const calls = spyRuns(e.gpu, () => {
          y = fn(...ts);
        });
        return { calls: calls.map((k) => k.kernel), y: await y!.toArray() };
      });
    const fused = await run(fusedMlp(c, false));
    const plain = await run(unfusedMlp(c, false));
    expectIdentical([fused.y], [plain.y], `inference ${label(c)}`);
    // NaN poisoning adds fills; everything else is matmul work (the LoRA down-projections may be
    // split along K, with a colsum), and the unfused MLP adds a GELU and an add pass.
    const work = fused.calls.filter((k) => k !== 'elementwise.fill');
    expect(work.every((k) => k.startsWith('matmul.')), work.join(' ')).toBe(true);
    expect(plain.calls.filter((k) => k !== 'elementwise.fill').length).toBe(work.length + 2);
  }, SLOW);

  it('training: no GELU, GELU-gradient or add dispatch left in forward + backward', async () => {
    const e = await testEngine();
    for (const c of [CASES[0], CASES[2]]) {
      const { inputs, shapes } = mlpInputs(c);
      const count = (fn: (...ts: Tensor[]) => Tensor) =>
        e.scope(() => {
          const ts = inputs.map((x, i) => e.fromArray(x, shapes[i], true));
          const calls = spyRuns(e.gpu, () => {
            const y = fn(...ts);
            e.backward(y, e.fromArray(randn(y.size), y.shape));
          });
          for (const t of ts) t.grad?.dispose();
          return calls.map((k) => k.kernel).filter((k) => k !== 'elementwise.fill');
        });
      const fused = count(fusedMlp(c));
      const plain = count(unfusedMlp(c));
      const elementwise = fused.filter((k) => /unary|elementwise\.add/.test(k));
      expect(elementwise, label(c)).toEqual([]);
      // Forward: gelu and add; backward: gelu's gradient.
      expect(plain.length - fused.length, label(c)).toBe(3);
      console.log(`${label(c)}: forward + backward ${plain.length} -> ${fused.length} dispatches`);
    }
  }, SLOW);
});

describe.skipIf(!f16)('fused MLP f16 against float64', () => {
  it.each(CASES.filter((c) => c.rank > 0 || c.x.length === 2))('%j', async (c) => {
    const { inputs, shapes } = mlpInputs(c);
    const { ref, refBackward, rows, inF } = refMlp(c);
    const n = inputs.length;
    const isAB = (i: number) => c.rank > 0 && (i % 4 === 3 || i % 4 === 0) && i > 0 && i < n - 1;
    const dtypes = inputs.map((_, i) => (isAB(i) ? 'f32' : 'f16') as DType);
    const grads = inputs.map((_, i) => isAB(i) || i === 0 || i === n - 1);
    const L = Math.max(inF, c.hid);
    // f16 stores h, gelu(h), fc2's output and the sum: four roundings on the way to y (each
    // u = 2^-11 of its value; h's and gelu's reach y through fc2, whose random-sign sum keeps
    // them near u of max|y|), plus the f32 sums' own bound. Measured: forward 3.8-5.4e-4 of
    // max|y| (~1u), gradients 2.6-6.3e-4; at most 37% of this bound.
    const tol16 = { rtol: 2 * sumTolF16(L).rtol, atol: 2 * sumTolF16(L).atol + 2 * 2 ** -11 };
    await checkOp({
      label: `fused f16 ${label(c)}`,
      inputs,
      shapes,
      dtypes,
      outDtype: 'f16',
      gpu: fusedMlp(c),
      ref,
      refBackward: (xs, g) => refBackward(xs, g).map((v, i) => (grads[i] ? v : null)),
      grads,
      outShape: shapes[n - 1],
      tol: tol16,
      gradTol: {
        rtol: tol16.rtol, atol: 2 * sumTolF16(Math.max(rows, L, c.out)).atol + 2 * 2 ** -11,
      },
      fd: { samples: 6 },
    });
  }, SLOW);
});

describe('epilogue kernels equal the separate passes on every path', () => {
  const paths: { path: MatmulPath; vec4: boolean }[] = [
    // matmul_sg's vector epilogue (sg_put), where the adapter has subgroups of 8+ lanes.
    ...(sg ? [{ path: 'sg' as const, vec4: true }] : []),
    { path: 'regs', vec4: true },
    { path: 'tiled', vec4: true },
    { path: 'tiled', vec4: false },
  ];
  const dts: DType[] = f16 ? ['f32', 'f16'] : ['f32'];
  for (const dt of dts) {
    it.each(paths)(`${dt} %j`, async ({ path, vec4 }) => {
      const e = await testEngine();
      // fc1's product in the aligned MLP cases (the regs pipelines they compile are reused).
      const [M, N, K] = [147, 384, 96];
      const q = (x: Float64Array) => (dt === 'f16' ? Float64Array.from(roundArrayF16(x)) : x);
      const [a, b, bias, aux] = [randn(M * K), randn(N * K, undefined, 0.3), randn(N), randn(M * N)]
        .map(q);
      const got = await e.scopeAsync(async () => {
        const [ta, tb, tbias, taux] =
          [a, b, bias, aux].map((x) => e.fromArray(x, [x.length], false, dt));
        const out = () => e.empty([M * N], undefined, dt);
        const base = {
          a: ta.buffer, b: tb.buffer, M, N, K, transB: true, bias: tbias.buffer, path, vec4,
        };
        const [c1, c2, c3, c4, c5] = [out(), out(), out(), out(), out()];
        mmKernel(e.gpu, { ...base, c: c1.buffer, activation: { kind: 'gelu' } });
        const pair = { kind: 'gelu-pair', out: c3.buffer } as const;
        const grad = { kind: 'gelu-grad', pre: taux.buffer } as const;
        mmKernel(e.gpu, { ...base, c: c2.buffer, activation: pair });
        mmKernel(e.gpu, { ...base, c: c4.buffer, activation: grad });
        mmKernel(e.gpu, { ...base, c: c5.buffer, residual: taux.buffer });
        // Separate passes.
        const [p, u1, u2, u3] = [out(), out(), out(), out()];
        mmKernel(e.gpu, { ...base, c: p.buffer });
        unary(e.gpu, 'gelu', p.buffer, u1.buffer, M * N);
        unaryGrad(e.gpu, 'gelu', taux.buffer, p.buffer, u2.buffer, M * N);
        addKernel(e.gpu, taux.buffer, p.buffer, u3.buffer, M * N);
        const arr = async (ts: Tensor[]) => Promise.all(ts.map((t) => t.toArray()));
        return { fused: await arr([c1, c2, c3, c4, c5]), plain: await arr([u1, p, u1, u2, u3]) };
      });
      const what = `matmul ${path}${vec4 ? '' : ' scalar'} ${dt} epilogues`;
      expectIdentical(got.fused, got.plain, what);
    }, SLOW);
  }

  it('refuses a residual together with gelu-grad (one aux binding)', async () => {
    const e = await testEngine();
    e.scope(() => {
      const t = e.zeros([16]);
      const c = e.empty([16]);
      expect(() => mmKernel(e.gpu, {
        a: t.buffer, b: t.buffer, c: c.buffer, M: 4, N: 4, K: 4, residual: t.buffer,
        activation: { kind: 'gelu-grad', pre: t.buffer },
      })).toThrow(/residual and gelu-grad both need the aux binding/);
    });
  });

  it('refuses a residual of the wrong shape or dtype', async () => {
    const e = await testEngine();
    e.scope(() => {
      const x = e.zeros([5, 8]);
      const w = e.zeros([6, 8]);
      expect(() => linear(x, w, null, e.zeros([5, 7]))).toThrow(
        /linear: residual must be f32 \[5,6\] like the output, got f32 \[5,7\]/,
      );
    });
  });
});
