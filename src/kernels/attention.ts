/** Launchers for shaders/attention.wgsl (flash-style multi-head attention, forward + backward). */
import { defineShader, type Kernel } from '../gpu/kernel.js';
import type { BufferRef, Gpu } from '../gpu/runtime.js';
import { copyCols } from './copy.js';
import { sgCapable } from './matmul.js';

const WG = 256;
/** Threads per row; a thread owns up to MAXDT (16, in the shader) dims of a head. */
const TPR = 16;
const MAXDT = 16;

export const attentionShader = defineShader('attention', {
  AttnParams: {
    BH: 'u32',
    heads: 'u32',
    Nq: 'u32',
    Nk: 'u32',
    scale: 'f32',
    sq: 'u32',
    oq: 'u32',
    sk: 'u32',
    ok: 'u32',
    sv: 'u32',
    ov: 'u32',
    so: 'u32',
    oo: 'u32',
    sg: 'u32',
    og: 'u32',
    s1: 'u32',
    o1: 'u32',
    s2: 'u32',
    o2: 'u32',
  },
  ColsParams: { rows: 'u32', cols: 'u32', so: 'u32', oo: 'u32' },
});

export const attnFwdKernel = attentionShader.kernel({
  name: 'attention.fwd',
  entry: 'attn_fwd',
  params: 'AttnParams',
  bindings: ['q', 'k', 'v', 'out', 'lse'],
  types: { q: 'dt_q', k: 'dt_k', v: 'dt_v', out: 'dt_o' },
});

export const attnBwdDKernel = attentionShader.kernel({
  name: 'attention.bwd_d',
  entry: 'attn_bwd_d',
  params: 'AttnParams',
  bindings: ['gradOut', 'out', 'dsum'],
  overrides: { WG },
  types: { gradOut: 'dt_g', out: 'dt_o' },
});

export const attnBwdQKernel = attentionShader.kernel({
  name: 'attention.bwd_q',
  entry: 'attn_bwd_q',
  params: 'AttnParams',
  bindings: ['q', 'k', 'v', 'gradOut', 'lse', 'dsum', 'dq'],
  types: { q: 'dt_q', k: 'dt_k', v: 'dt_v', gradOut: 'dt_g', dq: 'dt_out' },
});

export const attnBwdKVKernel = attentionShader.kernel({
  name: 'attention.bwd_kv',
  entry: 'attn_bwd_kv',
  params: 'AttnParams',
  bindings: ['q', 'k', 'v', 'gradOut', 'lse', 'dsum', 'dkv'],
  types: { q: 'dt_q', k: 'dt_k', v: 'dt_v', gradOut: 'dt_g', dkv: 'dt_out' },
});

/** The same passes without workgroup memory (attn_*_regs in the shader), for CPU adapters. */
export const attnFwdRegsKernel = attentionShader.kernel({
  name: 'attention.fwd_regs',
  entry: 'attn_fwd_regs',
  params: 'AttnParams',
  bindings: ['q', 'k', 'v', 'out', 'lse'],
  types: { q: 'dt_q', k: 'dt_k', v: 'dt_v' },
});

export const attnBwdQRegsKernel = attentionShader.kernel({
  name: 'attention.bwd_q_regs',
  entry: 'attn_bwd_q_regs',
  params: 'AttnParams',
  bindings: ['q', 'k', 'v', 'gradOut', 'lse', 'dsum', 'dq'],
  types: { q: 'dt_q', k: 'dt_k', v: 'dt_v', gradOut: 'dt_g' },
});

export const attnBwdKVRegsKernel = attentionShader.kernel({
  name: 'attention.bwd_kv_regs',
  entry: 'attn_bwd_kv_regs',
  params: 'AttnParams',
  bindings: ['q', 'k', 'v', 'gradOut', 'lse', 'dsum', 'dkv'],
  types: { q: 'dt_q', k: 'dt_k', v: 'dt_v', gradOut: 'dt_g' },
});

/** attention.wgsl with shaders/attention_sg.wgsl appended behind `enable subgroups;`. */
export const attentionSgFamily = defineShader('attention', attentionShader.structs, {
  enables: ['subgroups'],
  append: ['attention_sg'],
});

/**
 * The regs passes with the streamed key/value rows shared across an 8-lane subgroup (shaders/
 * attention_sg.wgsl): CPU adapters with subgroups of 8+ lanes and 4-aligned views (see sgFits).
 */
export const attnFwdSgKernel = attentionSgFamily.kernel({
  name: 'attention.fwd_sg',
  entry: 'attn_fwd_sg',
  params: 'AttnParams',
  bindings: ['q', 'k', 'v', 'out', 'lse'],
  types: { q: 'dt_q', k: 'dt_k', v: 'dt_v' },
});

export const attnBwdQSgKernel = attentionSgFamily.kernel({
  name: 'attention.bwd_q_sg',
  entry: 'attn_bwd_q_sg',
  params: 'AttnParams',
  bindings: ['q', 'k', 'v', 'gradOut', 'lse', 'dsum', 'dq'],
  types: { q: 'dt_q', k: 'dt_k', v: 'dt_v', gradOut: 'dt_g' },
});

/** dk, dv with 32 keys per 8-lane subgroup and the query rows shared by shuffles. */
export const attnBwdKVSgKernel = attentionSgFamily.kernel({
  name: 'attention.bwd_kv_sg',
  entry: 'attn_bwd_kv_sg',
  params: 'AttnParams',
  bindings: ['q', 'k', 'v', 'gradOut', 'lse', 'dsum', 'dkv'],
  types: { q: 'dt_q', k: 'dt_k', v: 'dt_v', gradOut: 'dt_g' },
});

/**
 * Lanes whose 4 queries make one streamed block of attn_bwd_kv_sg (KV_LANES): the fewest whose
 * block holds all of Nq up to 16 (q-pooled blocks, 4x4 windows), else 8 (32 queries): a block
 * wider than Nq computes scores nobody uses. Measured on lavapipe (2 cores, busy; best of runs,
 * GPU ms): 16 windows x 2 heads, Nq 16, Nk 64: 8 lanes 3.9 / 2.4, 4 lanes 2.0 / 1.8; Nq 8:
 * 4 lanes 2.0 / 1.9, 2 lanes 1.8; 16 windows x 4 heads, Nq 4, Nk 16: 4 lanes 1.8 / 1.2, 1 lane
 * 1.4 / 0.8.
 */
export function kvSgLanes(Nq: number): number {
  return Nq <= 4 ? 1 : Nq <= 8 ? 2 : Nq <= 16 ? 4 : 8;
}

/** Invocations per workgroup of the CPU variants (4 rows each): small, so cores share many. */
const REGS_WG = 16;

/**
 * Rows of one operand: token (b, n) of a [B, N, *] tensor starts at (b * N + n) * stride, and
 * the heads' channels start `offset` into the row (q, k, v of a packed qkv share a buffer).
 */
export interface RowView {
  buffer: GPUBuffer;
  stride: number;
  offset: number;
}

export interface AttnDims {
  B: number;
  heads: number;
  /** Head dim. */
  hd: number;
  Nq: number;
  Nk: number;
  /** Softmax scale (SAM2: 1 / sqrt(hd)). */
  scale: number;
  /** Tile sizes instead of attentionTiles' choice (tests use it to cover small-memory tiles). */
  tiles?: { BR: number; BC: number };
  /**
   * Workgroup-memory tiles (default on GPUs; implied by `tiles`) or a CPU variant (default on
   * CPU adapters: sg with subgroups of 8+ lanes, 4-aligned views and 16+ rows, else regs).
   */
  path?: AttnPath;
}

type Which = 'fwd' | 'q' | 'kv';
/**
 * 'sg' (CPU adapters with subgroups) falls back to 'regs' for a pass without an sg kernel, or
 * whose views are not 4-aligned (see sgFits).
 */
export type AttnPath = 'tiled' | 'regs' | 'sg';

/**
 * Tiles win on GPUs; on CPU adapters they cost more than they save (see the shader), and the
 * subgroup kernels beat the regs ones where the adapter has subgroups of 8+ lanes.
 */
function choosePath(gpu: Gpu, d: AttnDims): AttnPath {
  if (d.tiles) return 'tiled';
  if (d.path === 'sg' && !sgCapable(gpu)) {
    throw new Error("attention: path 'sg' needs the 'subgroups' feature with subgroups of 8 or more");
  }
  return d.path ?? (gpu.info.cpuFallback ? (sgCapable(gpu) ? 'sg' : 'regs') : 'tiled');
}

/** Subgroup kernels by pass; a pass without one runs its regs kernel. */
const SG: Partial<Record<Which, Kernel>> = {
  fwd: attnFwdSgKernel,
  q: attnBwdQSgKernel,
  kv: attnBwdKVSgKernel,
};

/** Uniform fields that hold a view's stride or offset, in elements. */
const VIEW_FIELDS = ['sq', 'oq', 'sk', 'ok', 'sv', 'ov', 'so', 'oo', 'sg', 'og', 's1', 'o1', 's2', 'o2'];

/**
 * The sg kernels read and write rows as vec4s: every view's stride and offset and the head dim
 * must be multiples of 4 (SAM2's are: hd 96, 3C-strided packed qkv).
 */
function sgFits(d: AttnDims, p: Record<string, number>): boolean {
  return d.hd % 4 === 0 && VIEW_FIELDS.every((f) => p[f] % 4 === 0);
}

const REGS: Record<Which, Kernel> = {
  fwd: attnFwdRegsKernel,
  q: attnBwdQRegsKernel,
  kv: attnBwdKVRegsKernel,
};

/** Workgroup-memory floats a kernel needs at tile sizes (BR rows resident, BC streamed). */
function sharedFloats(which: Which, hd: number, BR: number, BC: number): number {
  const hs = hd + 1; // tile row stride (HS in the shader)
  if (which === 'fwd') return BR * hs + 2 * BC * hs + BR * BC;
  if (which === 'q') return 2 * BR * hs + 2 * BC * hs + BR * BC;
  return 2 * BR * hs + 2 * BC * hs + 2 * BC + 2 * BC * BR;
}

/**
 * Tiles for this device: 16 resident rows x 16 threads (256 invocations) and the longest streamed
 * block that fits workgroup memory (at hd 96: 32 under 48 KiB, 8 under the 16 KiB floor, where
 * the gradient kernels also drop to 8 resident rows).
 */
export function attentionTiles(gpu: Gpu, which: Which, hd: number): { BR: number; BC: number } {
  const bytes = gpu.limits.maxComputeWorkgroupStorageSize;
  const threads = gpu.limits.maxComputeInvocationsPerWorkgroup;
  for (const BR of [16, 8, 4, 2, 1]) {
    if (BR * TPR > threads) continue;
    for (const BC of [32, 16, 8, 4]) {
      if (4 * sharedFloats(which, hd, BR, BC) <= bytes) return { BR, BC };
    }
  }
  throw new Error(`attention: head dim ${hd} does not fit ${bytes} bytes of workgroup memory`);
}

function checkDims(d: AttnDims): void {
  const ok = [d.B, d.heads, d.hd, d.Nq, d.Nk].every((x) => Number.isInteger(x) && x > 0);
  if (!ok) throw new Error(`attention: bad dims ${JSON.stringify(d)}`);
  if (d.hd > TPR * MAXDT) throw new Error(`attention: head dim ${d.hd} exceeds ${TPR * MAXDT}`);
}

/** Binds exactly the span a view reads, checked against the storage binding limit. */
function bind(gpu: Gpu, v: RowView, rows: number, width: number, what: string): BufferRef {
  const floats = (rows - 1) * v.stride + v.offset + width;
  const size = gpu.pool.dtypeOf(v.buffer) === 'f16' ? Math.ceil(floats / 2) * 4 : floats * 4;
  const max = gpu.limits.maxStorageBufferBindingSize;
  if (size > max) {
    throw new Error(
      `attention: ${what} spans ${size} bytes, above maxStorageBufferBindingSize ${max}`,
    );
  }
  if (size > v.buffer.size) {
    throw new Error(`attention: ${what} needs ${size} bytes, its buffer has ${v.buffer.size}`);
  }
  return { buffer: v.buffer, offset: 0, size };
}

function flat(buffer: GPUBuffer, n: number): RowView {
  return { buffer, stride: n, offset: 0 };
}

type Span = { stride: number; offset: number };

function params(
  d: AttnDims,
  views: Partial<Record<'q' | 'k' | 'v' | 'o' | 'g' | '1' | '2', Span>>,
): Record<string, number> {
  const s = (k: keyof typeof views) => views[k]?.stride ?? 0;
  const o = (k: keyof typeof views) => views[k]?.offset ?? 0;
  return {
    BH: d.B * d.heads,
    heads: d.heads,
    Nq: d.Nq,
    Nk: d.Nk,
    scale: d.scale,
    sq: s('q'),
    oq: o('q'),
    sk: s('k'),
    ok: o('k'),
    sv: s('v'),
    ov: o('v'),
    so: s('o'),
    oo: o('o'),
    sg: s('g'),
    og: o('g'),
    s1: s('1'),
    o1: o('1'),
    s2: s('2'),
    o2: o('2'),
  };
}

/** grid.x row blocks, B * heads folded over y and z. */
function grid(gpu: Gpu, rows: number, BR: number, BH: number): [number, number, number] {
  const max = gpu.limits.maxComputeWorkgroupsPerDimension;
  const gy = Math.min(BH, max);
  const gz = Math.ceil(BH / gy);
  if (gz > max) throw new Error(`attention: ${BH} batch-heads exceed the workgroup grid`);
  return [Math.ceil(rows / BR), gy, gz];
}

/**
 * Fewest rows per (b, h) for which the default CPU path picks an sg kernel: a workgroup owns 32
 * rows, 4 per lane, so under 16 most lanes idle, and the regs kernels (4 rows per thread, many
 * (b, h) per workgroup) were faster on lavapipe (64 (b, h) of Nq 4, Nk 16, hd 96: fwd 0.52 vs
 * 0.98 ms, dq 0.66 vs 1.51 ms; at Nq 16, Nk 16 sg is already ~1.4x faster). An explicit path
 * 'sg' ignores it.
 */
const SG_MIN_ROWS = 16;

/**
 * The CPU kernel of `which`: the sg kernel (8-lane workgroups of 32 rows of one (b, h)) where
 * `sg` and the views fit it, else the regs kernel (4 query rows per thread).
 */
function runCpu(gpu: Gpu, which: Which, d: AttnDims, rows: number, buffers: BufferRef[],
  p: Record<string, number>, sg: boolean): void {
  const sgKernel = SG[which];
  if (sg && sgKernel && sgFits(d, p) && (d.path === 'sg' || rows >= SG_MIN_ROWS)) {
    gpu.run(sgKernel, {
      buffers,
      params: p,
      grid: grid(gpu, rows, 32, d.B * d.heads),
      overrides: which === 'kv' ? { HD: d.hd, KV_LANES: kvSgLanes(d.Nq) } : { HD: d.hd },
    });
    return;
  }
  gpu.run(REGS[which], {
    buffers,
    params: p,
    grid: gpu.grid(d.B * d.heads * Math.ceil(rows / 4), REGS_WG),
    overrides: { HD: d.hd, WG: REGS_WG },
  });
}

function run(gpu: Gpu, kernel: Kernel, which: Which, d: AttnDims, rows: number,
  buffers: BufferRef[], p: Record<string, number>): void {
  const path = choosePath(gpu, d);
  if (path !== 'tiled') {
    const sg = path === 'sg';
    const oi = which === 'fwd' ? 3 : 6;
    const out = buffers[oi];
    if (gpu.pool.dtypeOf(out.buffer) !== 'f16') {
      runCpu(gpu, which, d, rows, buffers, p, sg);
      return;
    }
    // The CPU kernels accumulate in their output rows across key blocks: an f16 output gets an
    // f32 stand-in (accumulators stay f32), whose rows are then converted. The stand-in holds only
    // the columns written, packed ([rows, views * C]), not the output's whole strided span: a
    // packed qkv gradient in f32 would pass the binding limit where its f16 original does not.
    const C = d.heads * d.hd;
    const views: ['so' | 's1' | 's2', 'oo' | 'o1' | 'o2'][] =
      which === 'fwd' ? [['so', 'oo']] : which === 'q' ? [['s1', 'o1']] : [['s1', 'o1'], ['s2', 'o2']];
    const width = views.length * C;
    const span = d.B * rows * width * 4;
    const max = gpu.limits.maxStorageBufferBindingSize;
    if (span > max) {
      throw new Error(`attention: f32 stand-in of ${span} bytes, above maxStorageBufferBindingSize ${max}`);
    }
    const scratch = gpu.alloc(span, 'attention.f32_out');
    const bufs = [...buffers];
    bufs[oi] = { buffer: scratch, offset: 0, size: span };
    const pr = { ...p };
    views.forEach(([st, of], i) => {
      pr[st] = width;
      pr[of] = i * C;
    });
    runCpu(gpu, which, d, rows, bufs, pr, sg);
    views.forEach(([st, of], i) => {
      copyColumns(gpu, { buffer: scratch, stride: width, offset: i * C },
        { buffer: out.buffer, stride: p[st], offset: p[of] }, d.B * rows, C);
    });
    gpu.free(scratch);
    return;
  }
  const { BR, BC } = d.tiles ?? attentionTiles(gpu, which, d.hd);
  gpu.run(kernel, {
    buffers,
    params: p,
    grid: grid(gpu, rows, BR, d.B * d.heads),
    overrides: { HD: d.hd, BR, BC, TPR },
  });
}

/**
 * out = softmax(scale * q k^T) v per (batch, head), and lse [B * heads, Nq] = logsumexp of each
 * score row (saved for backward).
 */
export function attentionForward(
  gpu: Gpu,
  d: AttnDims,
  q: RowView,
  k: RowView,
  v: RowView,
  out: RowView,
  lse: GPUBuffer,
): void {
  checkDims(d);
  const C = d.heads * d.hd;
  const BH = d.B * d.heads;
  const bufs = [
    bind(gpu, q, d.B * d.Nq, C, 'q'),
    bind(gpu, k, d.B * d.Nk, C, 'k'),
    bind(gpu, v, d.B * d.Nk, C, 'v'),
    bind(gpu, out, d.B * d.Nq, C, 'out'),
    bind(gpu, flat(lse, BH * d.Nq), 1, BH * d.Nq, 'lse'),
  ];
  run(gpu, attnFwdKernel, 'fwd', d, d.Nq, bufs, params(d, { q, k, v, o: out }));
}

/** dsum [B * heads, Nq] = rowsum over each head of gradOut * out. */
export function attentionBackwardD(
  gpu: Gpu,
  d: AttnDims,
  gradOut: RowView,
  out: RowView,
  dsum: GPUBuffer,
): void {
  checkDims(d);
  const C = d.heads * d.hd;
  const n = d.B * d.heads * d.Nq;
  gpu.run(attnBwdDKernel, {
    buffers: [
      bind(gpu, gradOut, d.B * d.Nq, C, 'gradOut'),
      bind(gpu, out, d.B * d.Nq, C, 'out'),
      bind(gpu, flat(dsum, n), 1, n, 'dsum'),
    ],
    params: params(d, { g: gradOut, o: out }),
    grid: gpu.grid(n, WG),
    overrides: { HD: d.hd },
  });
}

export interface AttnSaved {
  q: RowView;
  k: RowView;
  v: RowView;
  gradOut: RowView;
  lse: GPUBuffer;
  dsum: GPUBuffer;
}

function savedBuffers(gpu: Gpu, d: AttnDims, s: AttnSaved): BufferRef[] {
  const C = d.heads * d.hd;
  const n = d.B * d.heads * d.Nq;
  return [
    bind(gpu, s.q, d.B * d.Nq, C, 'q'),
    bind(gpu, s.k, d.B * d.Nk, C, 'k'),
    bind(gpu, s.v, d.B * d.Nk, C, 'v'),
    bind(gpu, s.gradOut, d.B * d.Nq, C, 'gradOut'),
    bind(gpu, flat(s.lse, n), 1, n, 'lse'),
    bind(gpu, flat(s.dsum, n), 1, n, 'dsum'),
  ];
}

/** dq = scale * (P * (gradOut v^T - dsum)) k, written through the `dq` view. */
export function attentionBackwardQ(gpu: Gpu, d: AttnDims, s: AttnSaved, dq: RowView): void {
  checkDims(d);
  const bufs = [...savedBuffers(gpu, d, s), bind(gpu, dq, d.B * d.Nq, d.heads * d.hd, 'dq')];
  const p = params(d, { q: s.q, k: s.k, v: s.v, g: s.gradOut, 1: dq });
  run(gpu, attnBwdQKernel, 'q', d, d.Nq, bufs, p);
}

/**
 * dk = scale * dS^T q and dv = P^T gradOut, both into `out` (one binding: in the packed case
 * they are columns of one tensor) through (stride, offset) pairs.
 */
export function attentionBackwardKV(
  gpu: Gpu,
  d: AttnDims,
  s: AttnSaved,
  out: GPUBuffer,
  dk: { stride: number; offset: number },
  dv: { stride: number; offset: number },
): void {
  checkDims(d);
  const C = d.heads * d.hd;
  const last = Math.max(dk.offset, dv.offset);
  const stride = Math.max(dk.stride, dv.stride);
  const bufs = [...savedBuffers(gpu, d, s), bind(gpu, { buffer: out, stride, offset: last },
    d.B * d.Nk, C, 'dkv')];
  const p = params(d, { q: s.q, k: s.k, v: s.v, g: s.gradOut, 1: dk, 2: dv });
  run(gpu, attnBwdKVKernel, 'kv', d, d.Nk, bufs, p);
}

/**
 * dst row r, columns [0, cols) = src row r, the same columns (strided views, `rows` rows): copy's
 * cols kernel over the views' bound ranges.
 */
export function copyColumns(
  gpu: Gpu,
  src: RowView,
  dst: RowView,
  rows: number,
  cols: number,
): void {
  const x = bind(gpu, src, rows, cols, 'src');
  const out = bind(gpu, dst, rows, cols, 'dst');
  copyCols(gpu, x, out, rows, cols, src.stride, src.offset, dst.stride, dst.offset);
}

export const attnZeroColsKernel = attentionShader.kernel({
  name: 'attention.zero_cols',
  entry: 'attn_zero_cols',
  params: 'ColsParams',
  bindings: ['dst'],
  overrides: { WG },
  types: { dst: 'dt_out' },
});

/** dst row r, columns [0, cols) = 0 (a strided view, `rows` rows). */
export function zeroColumns(gpu: Gpu, dst: RowView, rows: number, cols: number): void {
  const n = rows * cols;
  gpu.run(attnZeroColsKernel, {
    buffers: [bind(gpu, dst, rows, cols, 'dst')],
    params: { rows, cols, so: dst.stride, oo: dst.offset },
    grid: gpu.grid(n, WG),
  });
}
