/**
 * The hot-kernel suite: every kernel the training step spends its time in, at the shapes
 * Hiera-tiny runs (bench/shapes.ts), forward and backward through the real ops (src/ops), with a
 * naive WGSL peer and a TensorFlow.js WebGPU peer on the same device for matmul, conv2d,
 * attention and layer norm (forward).
 */
import { type Engine, type Tensor, shapeStr } from '#src/autograd/tensor.js';
import type { Gpu } from '#src/gpu/runtime.js';
import { gelu } from '#src/ops/activation.js';
import { attentionQkv } from '#src/ops/attention.js';
import { conv2d } from '#src/ops/conv2d.js';
import { interpolate } from '#src/ops/interpolate.js';
import { layerNorm } from '#src/ops/layer-norm.js';
import { linear } from '#src/ops/linear.js';
import { loraLinear } from '#src/ops/lora-linear.js';
import { diceLoss } from '#src/ops/loss.js';
import { maxPool2d } from '#src/ops/pool.js';
import { AdamW } from '#src/train/optim.js';
import { type Budget, type MeasureSpec, type Timing, measure, ours } from '../measure.js';
import {
  naiveAttention, naiveAttentionScoreBytes, naiveConv2d, naiveLayerNorm, naiveMatmul,
} from '../naive/kernels.js';
import { type ModelShapes, modelShapes } from '../shapes.js';
import type { TfPeer, TfTensor } from '../tfjs.js';

export type Dir = 'fwd' | 'bwd' | 'step';
export type Bound = 'flop' | 'mem';

export interface PeerResult {
  timing?: Timing;
  /** Why the peer did not run (shape over a binding limit, peer unavailable, error). */
  skipped?: string;
}

export interface KernelRow {
  id: string;
  group: string;
  label: string;
  shape: string;
  size: number;
  batch: number;
  dir: Dir;
  /** What the backward computes (which gradients), for the reader. */
  note?: string;
  flops: number;
  bytes: number;
  bound: Bound;
  ours: Timing;
  naive?: PeerResult;
  tfjs?: PeerResult;
}

interface Prepared {
  ours: MeasureSpec;
  naive?: MeasureSpec | string;
  tfjs?: ((peer: TfPeer) => MeasureSpec & { dispose?: () => void }) | string;
  dispose(): void;
}

interface CaseDef {
  group: string;
  label: string;
  shape: string;
  size: number;
  batch: number;
  dir: Dir;
  note?: string;
  flops: number;
  bytes: number;
  bound: Bound;
  setup(): Prepared;
}

export const caseId = (c: { group: string; size: number; batch: number; label: string;
  dir: string }) => `${c.group}/${c.size}px-b${c.batch}/${c.label}/${c.dir}`;

/** Fast deterministic data in [-scale, scale): timing does not depend on its distribution. */
function rand(n: number, scale = 1, seed = 12345): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = ((s >>> 8) / 8388608 - 1) * scale;
  }
  return out;
}

const F = 4;

export interface SuiteContext {
  gpu: Gpu;
  engine: Engine;
  tf: TfPeer | null;
  tfError?: string;
  budget: Budget;
  quick: boolean;
  log: (s: string) => void;
}

class Maker {
  private made: Tensor[] = [];
  constructor(readonly engine: Engine) {}
  t(shape: number[], grad = false, scale = 1): { t: Tensor; data: Float32Array } {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = rand(n, scale, this.made.length * 7919 + n);
    const t = this.engine.fromArray(data, shape, grad);
    this.made.push(t);
    return { t, data };
  }
  dispose(): void {
    for (const t of this.made) t.dispose();
    this.made = [];
  }
}

/** Forward under noGrad; the output goes straight back to the pool (its dispatch is recorded). */
function fwdSpec(engine: Engine, name: string, f: () => Tensor): MeasureSpec {
  return { name, run: () => engine.noGrad(() => f().release()) };
}

/**
 * Times exactly one op's backward rule: the forward (untimed) records the node, the timed part
 * runs node.backward under a scope that frees every gradient it made.
 */
function bwdSpec(engine: Engine, name: string, f: () => Tensor): MeasureSpec & { free(): void } {
  let out: Tensor | null = null;
  let seed: Tensor | null = null;
  return {
    name,
    before: () => {
      out = f();
      seed ??= engine.fromArray(rand(out.size, 0.1, 99), out.shape);
    },
    run: () => {
      const node = out?.node;
      if (!node || !seed) throw new Error(`${name}: the forward recorded no tape node`);
      const g = seed;
      const needs = node.inputs.map((t) => t.requiresGrad);
      engine.noGrad(() => engine.scope(() => void node.backward(g, needs)));
    },
    after: () => {
      engine.clearTape();
      out?.release();
      out = null;
    },
    free: () => seed?.dispose(),
  };
}

function tfSpec(name: string, fn: () => TfTensor, free: () => void): (p: TfPeer) => MeasureSpec {
  return (p) => ({ name, run: () => p.time(fn), after: free });
}

const noop = () => {};

// ---- case builders ------------------------------------------------------------------------

function linearCase(e: Engine, s: ShapeCtx, label: string, rows: number, inF: number,
  outF: number, dir: Dir): CaseDef {
  const flops = (dir === 'fwd' ? 2 : 4) * rows * inF * outF;
  return {
    group: 'matmul', label, size: s.size, batch: s.batch, dir,
    shape: `[${rows},${inF}]·[${outF},${inF}]ᵀ`,
    note: dir === 'bwd' ? 'dx + dW + db' : undefined,
    flops, bytes: F * (rows * inF + inF * outF + rows * outF), bound: 'flop',
    setup() {
      const m = new Maker(e);
      const grad = dir === 'bwd';
      const x = m.t([rows, inF], grad);
      const w = m.t([outF, inF], grad, 1 / Math.sqrt(inF));
      const b = m.t([outF], grad, 0.1);
      if (dir === 'bwd') {
        const spec = bwdSpec(e, label, () => linear(x.t, w.t, b.t));
        return { ours: spec, dispose: () => (spec.free(), m.dispose()) };
      }
      const y = e.gpu.alloc(rows * outF * F, 'naive.y');
      return {
        ours: fwdSpec(e, label, () => linear(x.t, w.t, b.t)),
        naive: {
          name: label,
          run: () => naiveMatmul(e.gpu, x.t.buffer, w.t.buffer, b.t.buffer, y, rows, outF, inF),
        },
        tfjs: (p) => {
          const tf = p.tf;
          const tx = tf.tensor2d(x.data, [rows, inF]);
          const tw = tf.tensor2d(w.data, [outF, inF]);
          const tb = tf.tensor1d(b.data);
          const fn = () => tf.fused.matMul({ a: tx, b: tw, transposeB: true, bias: tb });
          return { ...tfSpec(label, fn, noop)(p), dispose: () => tf.dispose([tx, tw, tb]) };
        },
        dispose: () => (e.gpu.free(y), m.dispose()),
      };
    },
  };
}

function loraCase(e: Engine, s: ShapeCtx, label: string, rows: number, inF: number,
  outF: number, dir: Dir): CaseDef {
  const r = s.shapes.loraRank;
  const flops = dir === 'fwd'
    ? 2 * rows * (inF * outF + inF * r + r * outF)
    : 2 * rows * (inF * outF + 2 * r * outF + 2 * r * inF);
  return {
    group: 'lora', label, size: s.size, batch: s.batch, dir,
    shape: `[${rows},${inF}]→${outF} r${r}`,
    note: dir === 'bwd' ? 'dx + dA + dB (W frozen)' : undefined,
    flops, bytes: F * (rows * inF + inF * outF + rows * outF), bound: 'flop',
    setup() {
      const m = new Maker(e);
      const grad = dir === 'bwd';
      const x = m.t([rows, inF], grad);
      const w = m.t([outF, inF], false, 1 / Math.sqrt(inF));
      const b = m.t([outF], false, 0.1);
      const A = m.t([r, inF], grad, 1 / Math.sqrt(inF));
      const B = m.t([outF, r], grad, 0.01);
      const opts = { scale: 32 / r, dropout: 0.05, seed: 7, training: true };
      const f = () => loraLinear(x.t, w.t, b.t, A.t, B.t, opts);
      if (dir === 'bwd') {
        const spec = bwdSpec(e, label, f);
        return { ours: spec, dispose: () => (spec.free(), m.dispose()) };
      }
      return { ours: fwdSpec(e, label, f), dispose: () => m.dispose() };
    },
  };
}

function attentionCase(e: Engine, s: ShapeCtx, label: string, Bw: number, N: number,
  heads: number, hd: number, dir: Dir): CaseDef {
  const C = heads * hd;
  const mm = 2 * Bw * heads * N * N * hd;
  return {
    group: 'attention', label, size: s.size, batch: s.batch, dir,
    shape: `${Bw}×[${N} tok, ${heads}h×${hd}]`,
    note: dir === 'bwd' ? 'dqkv (5 matmuls counted)' : undefined,
    // Forward: q·kᵀ and p·v; backward: the usual five products (s recomputed, dv, dp, dq, dk).
    flops: (dir === 'fwd' ? 2 : 5) * mm,
    bytes: F * Bw * N * (3 * C + C), bound: 'flop',
    setup() {
      const m = new Maker(e);
      const qkv = m.t([Bw, N, 3 * C], dir === 'bwd');
      if (dir === 'bwd') {
        const spec = bwdSpec(e, label, () => attentionQkv(qkv.t, heads));
        return { ours: spec, dispose: () => (spec.free(), m.dispose()) };
      }
      const sBytes = naiveAttentionScoreBytes(Bw, heads, N);
      const limit = Math.min(e.gpu.limits.maxStorageBufferBindingSize, 2 ** 30);
      const tooBig = sBytes > limit
        ? `score matrix ${(sBytes / 2 ** 20).toFixed(0)} MiB > ${(limit / 2 ** 20).toFixed(0)} MiB`
        : null;
      let sBuf: GPUBuffer | null = null;
      let out: GPUBuffer | null = null;
      if (!tooBig) {
        sBuf = e.gpu.alloc(sBytes, 'naive.scores');
        out = e.gpu.alloc(Bw * N * C * F, 'naive.attn');
      }
      return {
        ours: fwdSpec(e, label, () => attentionQkv(qkv.t, heads)),
        naive: tooBig ?? {
          name: label,
          run: () => naiveAttention(e.gpu, qkv.t.buffer, sBuf!, out!, Bw, N, heads, hd),
        },
        tfjs: tooBig ?? ((p) => {
          const tf = p.tf;
          // q, k, v already split per head [Bw·heads, N, hd]: the layout most favourable to tfjs.
          const mk = (seed: number) => tf.tensor3d(rand(Bw * heads * N * hd, 1, seed),
            [Bw * heads, N, hd]);
          const [q, k, v] = [mk(1), mk(2), mk(3)];
          const scale = 1 / Math.sqrt(hd);
          const fn = () => tf.matMul(tf.softmax(tf.mul(tf.matMul(q, k, false, true), scale)), v);
          return { ...tfSpec(label, fn, noop)(p), dispose: () => tf.dispose([q, k, v]) };
        }),
        dispose: () => {
          if (sBuf) e.gpu.free(sBuf);
          if (out) e.gpu.free(out);
          m.dispose();
        },
      };
    },
  };
}

function convCase(e: Engine, s: ShapeCtx, label: string, d: { B: number; H: number; W: number;
  Cin: number; Cout: number; k: number; stride: number; pad: number; dx: boolean }, dir: Dir,
): CaseDef {
  const Ho = Math.floor((d.H + 2 * d.pad - d.k) / d.stride) + 1;
  const Wo = Math.floor((d.W + 2 * d.pad - d.k) / d.stride) + 1;
  const fl = 2 * d.B * Ho * Wo * d.Cout * d.Cin * d.k * d.k;
  return {
    group: 'conv2d', label, size: s.size, batch: s.batch, dir,
    shape: `[${d.B},${d.H},${d.W},${d.Cin}] ${d.k}×${d.k}/${d.stride} →${d.Cout}`,
    note: dir === 'bwd' ? (d.dx ? 'dx + dW + db' : 'dW + db (input frozen)') : undefined,
    flops: dir === 'fwd' ? fl : fl * (d.dx ? 2 : 1),
    bytes: F * (d.B * d.H * d.W * d.Cin + d.B * Ho * Wo * d.Cout + d.Cout * d.Cin * d.k * d.k),
    bound: 'flop',
    setup() {
      const m = new Maker(e);
      const x = m.t([d.B, d.H, d.W, d.Cin], dir === 'bwd' && d.dx);
      const w = m.t([d.Cout, d.Cin, d.k, d.k], dir === 'bwd', 1 / Math.sqrt(d.Cin * d.k * d.k));
      const b = m.t([d.Cout], dir === 'bwd', 0.1);
      const f = () => conv2d(x.t, w.t, b.t, { stride: d.stride, padding: d.pad });
      if (dir === 'bwd') {
        const spec = bwdSpec(e, label, f);
        return { ours: spec, dispose: () => (spec.free(), m.dispose()) };
      }
      const y = e.gpu.alloc(d.B * Ho * Wo * d.Cout * F, 'naive.conv');
      return {
        ours: fwdSpec(e, label, f),
        naive: {
          name: label,
          run: () => void naiveConv2d(e.gpu, x.t.buffer, w.t.buffer, b.t.buffer, y, {
            B: d.B, H: d.H, W: d.W, Cin: d.Cin, Cout: d.Cout, kh: d.k, kw: d.k,
            stride: d.stride, pad: d.pad,
          }),
        },
        tfjs: (p) => {
          const tf = p.tf;
          const tx = tf.tensor4d(x.data, [d.B, d.H, d.W, d.Cin]);
          // PyTorch [Cout, Cin, kh, kw] → tfjs [kh, kw, Cin, Cout].
          const tw = tf.tidy(() => tf.transpose(tf.tensor4d(w.data, [d.Cout, d.Cin, d.k, d.k]),
            [2, 3, 1, 0]));
          const tb = tf.tensor1d(b.data);
          const pad: [[number, number], [number, number], [number, number], [number, number]] =
            [[0, 0], [d.pad, d.pad], [d.pad, d.pad], [0, 0]];
          const fn = () => tf.fused.conv2d({ x: tx, filter: tw, strides: d.stride, pad, bias: tb });
          return { ...tfSpec(label, fn, noop)(p), dispose: () => tf.dispose([tx, tw, tb]) };
        },
        dispose: () => (e.gpu.free(y), m.dispose()),
      };
    },
  };
}

function layerNormCase(e: Engine, s: ShapeCtx, label: string, rows: number, C: number,
  dir: Dir): CaseDef {
  const n = rows * C;
  return {
    group: 'layer_norm', label, size: s.size, batch: s.batch, dir,
    shape: `[${rows},${C}]`, note: dir === 'bwd' ? 'dx (affine frozen)' : undefined,
    flops: (dir === 'fwd' ? 8 : 12) * n, bytes: F * n * (dir === 'fwd' ? 2 : 3), bound: 'mem',
    setup() {
      const m = new Maker(e);
      const x = m.t([rows, C], dir === 'bwd');
      const w = m.t([C], false);
      const b = m.t([C], false, 0.1);
      const f = () => layerNorm(x.t, w.t, b.t, 1e-6);
      if (dir === 'bwd') {
        const spec = bwdSpec(e, label, f);
        return { ours: spec, dispose: () => (spec.free(), m.dispose()) };
      }
      const y = e.gpu.alloc(n * F, 'naive.ln');
      return {
        ours: fwdSpec(e, label, f),
        naive: {
          name: label,
          run: () => naiveLayerNorm(e.gpu, x.t.buffer, w.t.buffer, b.t.buffer, y, rows, C),
        },
        tfjs: (p) => {
          const tf = p.tf;
          const tx = tf.tensor2d(x.data, [rows, C]);
          const tw = tf.tensor1d(w.data);
          const tb = tf.tensor1d(b.data);
          // tfjs has no layer-norm op: moments + the affine, as a tfjs model would write it.
          const fn = () => {
            const { mean, variance } = tf.moments(tx, -1, true);
            const xhat = tf.mul(tf.sub(tx, mean), tf.rsqrt(tf.add(variance, 1e-6)));
            return tf.add(tf.mul(xhat, tw), tb);
          };
          return { ...tfSpec(label, fn, noop)(p), dispose: () => tf.dispose([tx, tw, tb]) };
        },
        dispose: () => (e.gpu.free(y), m.dispose()),
      };
    },
  };
}

/** A memory-bound op with a single input (gelu, max-pool, resize). */
function unaryCase(e: Engine, s: ShapeCtx, group: string, label: string, shape: number[],
  outN: number, dir: Dir, f: (x: Tensor) => Tensor): CaseDef {
  const n = shape.reduce((a, b) => a * b, 1);
  return {
    group, label, size: s.size, batch: s.batch, dir, shape: shapeStr(shape),
    note: dir === 'bwd' ? 'dx' : undefined,
    flops: n, bytes: F * (dir === 'fwd' ? n + outN : n + 2 * outN), bound: 'mem',
    setup() {
      const m = new Maker(e);
      const x = m.t(shape, dir === 'bwd');
      if (dir === 'bwd') {
        const spec = bwdSpec(e, label, () => f(x.t));
        return { ours: spec, dispose: () => (spec.free(), m.dispose()) };
      }
      return { ours: fwdSpec(e, label, () => f(x.t)), dispose: () => m.dispose() };
    },
  };
}

function diceCase(e: Engine, s: ShapeCtx, dir: Dir): CaseDef {
  const shape = [s.batch, s.size, s.size, 1];
  const n = s.batch * s.size * s.size;
  return {
    group: 'dice', label: 'sigmoid Dice', size: s.size, batch: s.batch, dir,
    shape: shapeStr(shape), note: dir === 'bwd' ? 'dlogits' : undefined,
    flops: 10 * n, bytes: F * n * (dir === 'fwd' ? 2 : 3), bound: 'mem',
    setup() {
      const m = new Maker(e);
      const x = m.t(shape, dir === 'bwd', 3);
      const y = e.fromArray(rand(n).map((v) => (v > 0 ? 1 : 0)), shape);
      const f = () => diceLoss(x.t, y);
      if (dir === 'bwd') {
        const spec = bwdSpec(e, 'dice', f);
        return { ours: spec, dispose: () => (spec.free(), y.dispose(), m.dispose()) };
      }
      return { ours: fwdSpec(e, 'dice', f), dispose: () => (y.dispose(), m.dispose()) };
    },
  };
}

function adamwCase(e: Engine, s: ShapeCtx): CaseDef {
  const shapes = s.shapes.loraParams;
  const n = shapes.reduce((a, sh) => a + sh.reduce((x, y) => x * y, 1), 0);
  return {
    group: 'adamw', label: `LoRA-mode step (${shapes.length} tensors)`, size: s.size,
    batch: s.batch, dir: 'step', shape: `${n} params`,
    // Read p, g, m, v; write p, m, v.
    flops: 16 * n, bytes: F * n * 7, bound: 'mem',
    setup() {
      const params = shapes.map((sh, i) => {
        const p = e.parameter(rand(sh.reduce((a, b) => a * b, 1), 0.1, i), sh, true);
        p.grad = e.fromArray(rand(p.size, 0.01, i + 1000), sh);
        p.grad.isParameter = true;
        return p;
      });
      const opt = new AdamW([{ params, lr: 1e-4, weightDecay: 0.01 }]);
      return {
        ours: { name: 'adamw', run: () => opt.step() },
        dispose: () => {
          opt.dispose();
          for (const p of params) p.dispose();
        },
      };
    },
  };
}

interface ShapeCtx {
  size: number;
  batch: number;
  shapes: ModelShapes;
}

/**
 * Every case at one (size, batch). `quick` keeps stage 0 (qkv, fc1, LoRA qkv, window attention,
 * norm, GELU), the global block, one q-pool, patch embed, head conv1, resize, Dice and AdamW.
 */
export function kernelCases(e: Engine, size: number, batch: number, quick: boolean,
  withAdamw: boolean): CaseDef[] {
  const shapes = modelShapes('tiny', size, batch);
  const s: ShapeCtx = { size, batch, shapes };
  const out: CaseDef[] = [];
  const both = (mk: (d: Dir) => CaseDef) => out.push(mk('fwd'), mk('bwd'));
  const stages = quick ? shapes.stages.slice(0, 1) : shapes.stages;
  for (const st of stages) {
    const rows = batch * st.grid * st.grid;
    const C = st.dim;
    const tag = `s${st.stage}`;
    const lin: [string, number, number][] = [
      ['qkv', C, 3 * C], ['proj', C, C], ['mlp.fc1', C, st.mlpHidden], ['mlp.fc2', st.mlpHidden, C],
    ];
    // Quick: the widest projection and the MLP expansion; LoRA on qkv only.
    for (const [nm, i, o] of quick ? [lin[0], lin[2]] : lin) {
      both((d) => linearCase(e, s, `${tag}.${nm}`, rows, i, o, d));
    }
    for (const [nm, i, o] of quick ? [lin[0]] : [lin[0], lin[2]]) {
      both((d) => loraCase(e, s, `${tag}.${nm}`, rows, i, o, d));
    }
    const nw = Math.ceil(st.grid / st.window);
    both((d) => attentionCase(e, s, `${tag}.window${st.window}`, batch * nw * nw,
      st.window * st.window, st.heads, st.headDim, d));
    both((d) => layerNormCase(e, s, `${tag}.norm`, rows, C, d));
    both((d) => unaryCase(e, s, 'gelu', `${tag}.mlp`, [rows, st.mlpHidden], rows * st.mlpHidden,
      d, gelu));
  }
  const g = shapes.global;
  both((d) => attentionCase(e, s, `s${g.stage}.global(block ${g.block})`, batch, g.grid * g.grid,
    g.heads, g.headDim, d));
  for (const p of quick ? shapes.pools.slice(0, 1) : shapes.pools) {
    const ho = Math.floor(p.grid / p.k);
    both((d) => unaryCase(e, s, 'max_pool', `q-pool block ${p.block}`,
      [batch, p.grid, p.grid, p.channels], batch * ho * ho * p.channels, d,
      (x) => maxPool2d(x, p.k)));
  }
  const pe = shapes.patch;
  both((d) => convCase(e, s, 'patch_embed', {
    B: batch, H: size, W: size, Cin: pe.inChans, Cout: pe.embedDim, k: pe.kernel,
    stride: pe.stride, pad: pe.padding, dx: false,
  }, d));
  const h = shapes.head;
  both((d) => convCase(e, s, 'head.conv1', {
    B: batch, H: h.grid, W: h.grid, Cin: h.dModel, Cout: h.hidden, k: 3, stride: 1, pad: 1,
    dx: true,
  }, d));
  if (!quick) {
    both((d) => convCase(e, s, 'head.conv2', {
      B: batch, H: h.grid, W: h.grid, Cin: h.hidden, Cout: 1, k: 1, stride: 1, pad: 0, dx: true,
    }, d));
  }
  both((d) => unaryCase(e, s, 'resize', `head bilinear ×16`, [batch, h.grid, h.grid, 1],
    batch * size * size, d, (x) => interpolate(x, [size, size], 'bilinear')));
  both((d) => diceCase(e, s, d));
  if (withAdamw) out.push(adamwCase(e, s));
  return out;
}

async function runPeer(name: string, spec: MeasureSpec | undefined, budget: Budget,
  dispose?: () => void): Promise<PeerResult> {
  if (!spec) return { skipped: 'no peer' };
  try {
    return { timing: await measure(spec, budget) };
  } catch (err) {
    return { skipped: `${name} failed: ${(err as Error).message.split('\n')[0]}` };
  } finally {
    dispose?.();
  }
}

/** Runs the cases whose id matches `filter`; one row each (peers beside ours). */
export async function runKernelSuite(ctx: SuiteContext, sizes: number[], batches: number[],
  filter: RegExp | null): Promise<KernelRow[]> {
  const { gpu, engine, budget } = ctx;
  const rows: KernelRow[] = [];
  let first = true;
  for (const size of sizes) {
    for (const batch of batches) {
      const cases = kernelCases(engine, size, batch, ctx.quick, first);
      first = false;
      for (const c of cases) {
        const id = caseId(c);
        if (filter && !filter.test(id)) continue;
        const prep = c.setup();
        try {
          const t = await measure(ours(gpu, prep.ours), budget);
          const row: KernelRow = {
            id, group: c.group, label: c.label, shape: c.shape, size, batch, dir: c.dir,
            note: c.note, flops: c.flops, bytes: c.bytes, bound: c.bound, ours: t,
          };
          if (prep.naive !== undefined) {
            row.naive = typeof prep.naive === 'string'
              ? { skipped: prep.naive }
              : await runPeer('naive', ours(gpu, prep.naive), budget);
          }
          if (prep.tfjs !== undefined) {
            if (typeof prep.tfjs === 'string') row.tfjs = { skipped: prep.tfjs };
            else if (!ctx.tf) row.tfjs = { skipped: ctx.tfError ?? 'tfjs unavailable' };
            else {
              let spec: (MeasureSpec & { dispose?: () => void }) | undefined;
              try {
                spec = prep.tfjs(ctx.tf);
                row.tfjs = await runPeer('tfjs', spec, budget, spec.dispose);
              } catch (err) {
                row.tfjs = { skipped: `tfjs failed: ${(err as Error).message.split('\n')[0]}` };
              }
              await ctx.tf.reset();
            }
          }
          rows.push(row);
          ctx.log(formatRowLine(row));
        } finally {
          prep.dispose();
          await gpu.sync();
        }
      }
    }
  }
  return rows;
}

export function formatRowLine(r: KernelRow): string {
  const ms = (t?: Timing) => (t ? `${t.medianMs.toFixed(3)} ms` : '-');
  const peer = (name: string, p?: PeerResult) =>
    !p ? '' : p.timing ? `  ${name} ${ms(p.timing)}` : `  ${name} skipped`;
  return `${r.id.padEnd(48)} ${ms(r.ours).padStart(12)}${peer('naive', r.naive)}` +
    `${peer('tfjs', r.tfjs)}`;
}
