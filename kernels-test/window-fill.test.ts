/**
 * Window partition padded with a fill vector (a Linear's bias), and the Hiera block order it
 * enables: qkv before the partition and proj after the unpartition, so neither Linear computes
 * the padding tokens. The block is checked against SAM2's partition-first order, kept here only.
 */
import { afterAll, describe, expect, it } from 'vitest';
import type { Engine, Tensor } from '../src/autograd/tensor.js';
import { closeGpu } from '../src/gpu/runtime.js';
import type { BlockPlan } from '../src/model/config.js';
import { MultiScaleBlock } from '../src/model/hiera.js';
import { add } from '../src/ops/add.js';
import { maxPool2d } from '../src/ops/pool.js';
import { windowPartition, windowUnpartition } from '../src/ops/window.js';
import { roundArrayF16 } from '../src/util/f16.js';
import { Rng } from '../src/util/random.js';
import { f16Supported } from './f16-helpers.js';
import {
  type Tol,
  SEED,
  checkOp,
  expectClose,
  f32,
  nextRng,
  randn,
  setGrad,
  spyRuns,
  sumTol,
  testEngine,
} from './helpers.js';
import {
  type WinShape,
  windowFillGradRef,
  windowPartitionFillRef,
  windowUnpartitionRef,
} from './ref/attention.js';

afterAll(() => closeGpu());

const EXACT: Tol = { rtol: 0, atol: 0 };
const f16 = await f16Supported();

function windowCount(s: WinShape): number {
  return s.B * Math.ceil(s.H / s.ws) * Math.ceil(s.W / s.ws);
}

function paddingTokens(s: WinShape): number {
  return windowCount(s) * s.ws * s.ws - s.B * s.H * s.W;
}

/** Fresh awkward grids per seed: sides not multiples of ws, and a window larger than the map. */
function randomCases(): [number, number, number, number, number][] {
  const r = nextRng();
  const int = (lo: number, hi: number) => lo + Math.floor(r() * (hi - lo + 1));
  const out: [number, number, number, number, number][] = [];
  for (let i = 0; i < 3; i++) {
    const ws = int(2, 7);
    const side = () => {
      const v = int(ws + 1, 3 * ws);
      return v % ws === 0 ? v + 1 : v;
    };
    out.push([int(1, 3), side(), side(), int(1, 9), ws]);
  }
  const ws = int(6, 9);
  out.push([int(1, 2), int(1, ws - 1), int(1, ws - 1), int(2, 6), ws]);
  return out;
}

// [B, H, W, C, ws]: SAM2-tiny's stage 3 at 128 px (8x8 in 14x14 windows, C 3·384 cut to 7),
// an exact fit (no padding: the fill gets a zero gradient), more tokens (one workgroup each)
// than a grid dimension holds (257x260 in ws 8: 69696), then fresh random awkward grids.
const CASES: [number, number, number, number, number][] = [
  [1, 8, 8, 7, 14],
  [2, 8, 12, 3, 4],
  [1, 257, 260, 1, 8],
  ...randomCases(),
];

describe('windowPartition with a fill vector', () => {
  it.each(CASES)('B %i, %ix%i, C %i, ws %i', async (B, H, W, C, ws) => {
    const s: WinShape = { B, H, W, C, ws };
    const { grads } = await checkOp({
      label: `windowPartition fill ${B}x${H}x${W}x${C} ws${ws} (seed ${SEED})`,
      inputs: [randn(B * H * W * C), randn(C)],
      shapes: [[B, H, W, C], [C]],
      gpu: (x, fill) => windowPartition(x, ws, fill),
      ref: ([x, fill]) => windowPartitionFillRef(s, x, fill),
      refBackward: (_x, g) => [windowUnpartitionRef(s, g), windowFillGradRef(s, g)],
      outShape: [windowCount(s), ws * ws, C],
      tol: EXACT,
      // The fill's gradient sums the padding tokens' rows in f32; x's is a copy (exact, below).
      gradTol: sumTol(Math.max(1, paddingTokens(s))),
    });
    expect(grads[0].maxAbs, 'x gradient is a copy').toBe(0);
  });

  it('needs no fill gradient pass when the fill is frozen', async () => {
    const e = await testEngine();
    const s: WinShape = { B: 1, H: 5, W: 6, C: 3, ws: 4 };
    e.scope(() => {
      const x = e.fromArray(f32(randn(30 * 3)), [1, 5, 6, 3], true);
      const fill = e.fromArray(f32(randn(3)), [3], false);
      const y = windowPartition(x, s.ws, fill);
      const runs = spyRuns(e.gpu, () => e.backward(y, e.fromArray(f32(randn(y.size)), y.shape)));
      expect(runs.map((r) => r.kernel)).not.toContain('window.fill_grad');
      expect(runs.map((r) => r.kernel)).toContain('window.unpartition');
      x.grad?.dispose();
    });
  });

  it.skipIf(!f16)('f16 windows padded with an f32 fill (one rounding of the fill)', async () => {
    const s: WinShape = { B: 2, H: 9, W: 6, C: 5, ws: 4 };
    await checkOp({
      label: `windowPartition fill f16 (seed ${SEED})`,
      inputs: [randn(2 * 9 * 6 * 5), randn(5)],
      shapes: [[2, 9, 6, 5], [5]],
      dtypes: ['f16', 'f32'],
      outDtype: 'f16',
      gpu: (x, fill) => windowPartition(x, s.ws, fill),
      // The f16 output holds the fill rounded to f16, once: exact against that.
      ref: ([x, fill]) => windowPartitionFillRef(s, x, Float64Array.from(roundArrayF16(fill))),
      refBackward: (_x, g) => [windowUnpartitionRef(s, g), windowFillGradRef(s, g)],
      outShape: [windowCount(s), 16, 5],
      tol: EXACT,
      // FD runs on the reference as given (it rounds the fill): skip the fill there.
      fd: { skip: [1] },
      gradTol: sumTol(paddingTokens(s)),
    });
  });

  it('rejects a fill that does not match the channels', async () => {
    const e = await testEngine();
    e.scope(() => {
      expect(() => windowPartition(e.zeros([1, 4, 4, 3]), 3, e.zeros([4]))).toThrow(
        /windowPartition: fill must be \[3\] like x's channels, got \[4\]/,
      );
    });
  });
});

/**
 * SAM2's order, kept only as this test's oracle: norm1 → partition (zero padding) → qkv →
 * attention → proj → unpartition → shortcut add → MLP.
 */
function partitionFirst(blk: MultiScaleBlock, x: Tensor): Tensor {
  const { windowSize: ws, qStride, dimOut } = blk.plan;
  const [b, h, w] = x.shape;
  const xn = blk.norm1.forward(x);
  let shortcut = x;
  if (blk.proj) {
    shortcut = blk.proj.forward(xn);
    if (qStride) shortcut = maxPool2d(shortcut, qStride[0]);
  }
  const nWin = Math.ceil(h / ws) * Math.ceil(w / ws);
  const qkv = blk.attn.qkv.forward(windowPartition(xn, ws));
  const { out, oh } = blk.attn.attend(qkv, b * nWin, ws, ws);
  const y = windowUnpartition(blk.attn.proj.forward(out), oh, [shortcut.shape[1], shortcut.shape[2]]);
  expect(y.shape[3]).toBe(dimOut);
  const x1 = add(shortcut, y);
  return blk.mlp.forward(blk.norm2.forward(x1), x1);
}

function plan(p: Partial<BlockPlan> & Pick<BlockPlan, 'dim' | 'dimOut' | 'heads' | 'windowSize'>): BlockPlan {
  return {
    index: 0, stage: 0, headDim: p.dimOut / p.heads, qStride: null, hasProj: p.dim !== p.dimOut,
    mlpHidden: 2 * p.dimOut, isStageEnd: false, ...p,
  };
}

interface BlockRun {
  y: Float32Array;
  grads: Map<string, Float32Array>;
}

async function runBlock(
  e: Engine, blk: MultiScaleBlock, x: Float64Array, shape: number[], gy: Float64Array,
  order: 'padding-free' | 'partition-first',
): Promise<BlockRun> {
  return e.scopeAsync(async () => {
    const xt = e.fromArray(x, shape, true);
    const y = order === 'padding-free' ? blk.forward(xt) : partitionFirst(blk, xt);
    const yv = await y.toArray();
    e.backward(y, e.fromArray(gy, y.shape));
    const grads = new Map<string, Float32Array>([['x', await xt.grad!.toArray()]]);
    xt.grad!.dispose();
    for (const [name, p] of blk.namedParameters()) {
      if (!p.requiresGrad) continue;
      if (!p.grad) throw new Error(`${name}: no gradient`);
      grads.set(name, await p.grad.toArray());
      await setGrad(p, null);
    }
    return { y: yv, grads };
  });
}

// Gradients: the orders sum the same products in different groupings (the weight gradients'
// row sums run over fewer rows, and the qkv bias gets the padding rows' sum apart from the real
// rows'), so they agree to f32 rounding of sums over L = (partitioned rows) terms, not bit for
// bit. Bound: sumTol's 1e-6·sqrt(L) of max|grad| (L 96-400 here: 1e-5 to 2e-5); measured over 7
// seeds at most 8.0e-7 (qkv bias), 4.8e-7 elsewhere. A dropped padding gradient moves the qkv
// bias gradient by ~1e-1 of its size.
function gradTol(rows: number): Tol {
  return { rtol: 0, atol: 1e-6 * Math.sqrt(rows) };
}

describe('Hiera block: qkv/proj outside the windows = SAM2 partition-first order', () => {
  const r = nextRng();
  const even = (lo: number, hi: number) => 2 * (lo + Math.floor(r() * (hi - lo + 1)));
  // Pooled blocks need ceil(H/ws) = ceil((H/2)/(ws/2)): even sides, 4 ∤ side for padding.
  const pooledSide = () => {
    const v = even(3, 7);
    return v % 4 === 0 ? v + 2 : v;
  };
  const cases: [string, BlockPlan, number[], boolean][] = [
    ['q-pooled first block of a stage, 16 → 32, ws 4', plan({
      dim: 16, dimOut: 32, heads: 2, windowSize: 4, qStride: [2, 2],
    }), [2, pooledSide(), pooledSide(), 16], false],
    ['windowed, 24 channels, 3 heads, ws 5', plan({ dim: 24, dimOut: 24, heads: 3, windowSize: 5 }),
      [1, 6 + Math.floor(r() * 4), 11 + Math.floor(r() * 4), 24], false],
    ['window larger than the grid, ws 8 on 5x6', plan({ dim: 16, dimOut: 16, heads: 2, windowSize: 8 }),
      [2, 5, 6, 16], false],
    ['no padding (partition first, proj after), q-pooled 16 → 32, ws 4 on 8x12', plan({
      dim: 16, dimOut: 32, heads: 2, windowSize: 4, qStride: [2, 2],
    }), [1, 8, 12, 16], false],
    ['LoRA on every Linear (frozen base), q-pooled 8 → 16, ws 6', plan({
      dim: 8, dimOut: 16, heads: 2, windowSize: 6, qStride: [2, 2],
    }), [1, 10, 14, 8], true],
  ];

  it.each(cases)('%s', async (_label, p, shape, lora) => {
    const e = await testEngine();
    const blk = new MultiScaleBlock(e, p, 1e-6, new Rng(SEED));
    // Random values everywhere (LayerNorm and LoRA B start at constants that would hide terms).
    const sd = new Map<string, { shape: number[]; data: Float32Array }>();
    const loraRng = new Rng(SEED + 1);
    if (lora) {
      blk.requiresGrad(false);
      const linears = [blk.attn.qkv, blk.attn.proj, ...blk.mlp.layers, ...(blk.proj ? [blk.proj] : [])];
      for (const l of linears) l.addLora({ r: 2, alpha: 4, dropout: 0 }, loraRng);
    }
    for (const [name, t] of blk.namedParameters()) {
      sd.set(name, { shape: [...t.shape], data: Float32Array.from(randn(t.size, nextRng(), 0.5)) });
    }
    blk.loadStateDict(sd);
    const x = f32(randn(shape.reduce((a, b) => a * b)));
    const outShape = [shape[0], shape[1] / (p.qStride?.[0] ?? 1), shape[2] / (p.qStride?.[0] ?? 1), p.dimOut];
    const gy = f32(randn(outShape.reduce((a, b) => a * b)));
    const nu = await runBlock(e, blk, x, shape, gy, 'padding-free');
    const old = await runBlock(e, blk, x, shape, gy, 'partition-first');
    // Same rows through the same kernels: the forward is bit-identical.
    const fwd = expectClose(nu.y, old.y, EXACT, `${_label}: forward (seed ${SEED})`);
    expect(fwd.maxAbs).toBe(0);
    expect([...nu.grads.keys()]).toEqual([...old.grads.keys()]);
    if (lora) expect(nu.grads.has('attn.qkv.lora_B.weight')).toBe(true);
    else expect(nu.grads.has('attn.qkv.bias')).toBe(true);
    const ws = p.windowSize;
    const rows = shape[0] * Math.ceil(shape[1] / ws) * Math.ceil(shape[2] / ws) * ws * ws;
    for (const [name, g] of nu.grads) {
      expectClose(g, old.grads.get(name)!, gradTol(rows), `${_label}: grad ${name} (seed ${SEED})`);
    }
    for (const t of blk.parameters()) t.dispose();
  });
});
