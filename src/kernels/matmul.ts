/** Launchers for shaders/matmul.wgsl: tiled (batched, split-K) matrix products and column sums. */
import { defineShader } from '../gpu/kernel.js';
import type { BufferRef, Gpu } from '../gpu/runtime.js';

/** Register block per thread (consts in the shader) and the default workgroup shape. */
const RM = 4;
const RN = 4;
const WGX = 16;
const WGY = 16;
const BK = 16;

type TileShape = {
  WGX: number;
  WGY: number;
  BK: number;
};

/**
 * 256 threads in every shape. Skinny products (LoRA's rank-r side, N or M <= 16) get a 256x16
 * (or 16x256) tile so the idle part of a 64x64 tile is not wasted; BK 8 keeps that tile's shared
 * memory (8.7 KB) under WebGPU's default 16 KB.
 */
function tileShape(M: number, N: number): TileShape {
  if (N <= 16 && M > 64) return { WGX: 4, WGY: 64, BK: 8 };
  if (M <= 16 && N > 64) return { WGX: 64, WGY: 4, BK: 8 };
  return { WGX, WGY, BK };
}
/**
 * Kernel family for aligned operands: workgroup-memory tiles, registers only, or registers with
 * the A operand shared across an 8-lane subgroup (matmul_sg: CPU adapters with subgroups), or for
 * a side of at most 4 the thin operand shared that way (matmul_sg_thin, likewise).
 */
export type MatmulPath = 'tiled' | 'regs' | 'sg' | 'sg-thin';

/** Invocations per matmul_regs workgroup: one or two 8-lane SIMD rows of a CPU core. */
const REGS_THREADS = 16;

type RegsShape = TileShape & { TM: number; TN: number };

/**
 * matmul_regs workgroups: 8x8 outputs per thread (4 on a side of at most 4, LoRA's rank), and
 * few invocations per group, so even a small product gives each CPU core several workgroups.
 */
function regsShape(M: number, N: number): RegsShape {
  const TM = M > 4 ? 8 : 4;
  const TN = N > 4 ? 8 : 4;
  const rows = pow2(Math.ceil(M / TM));
  const cols = pow2(Math.ceil(N / TN));
  const wgy = Math.min(rows, REGS_THREADS / Math.min(cols, 8));
  return { WGX: Math.min(cols, REGS_THREADS / wgy), WGY: wgy, BK: 4, TM, TN };
}

function pow2(x: number): number {
  return 2 ** Math.ceil(Math.log2(Math.max(1, x)));
}

/**
 * Workgroup-memory tiles on GPUs. CPU adapters (lavapipe) run a workgroup as a SIMD loop over its
 * invocations, where barriers and shared-memory traffic cost more than the reuse they buy.
 */
function defaultPath(gpu: Gpu, M: number, N: number, transA: boolean): MatmulPath {
  if (!gpu.info.cpuFallback) return 'tiled';
  if (!sgCapable(gpu)) return 'regs';
  if (N <= THIN_MAX && !transA) return 'sg-thin';
  return M >= SG_MIN && N >= SG_MIN ? 'sg' : 'regs';
}

/**
 * matmul_sg: one 8-invocation workgroup (one SIMD row of a CPU core, so one subgroup when the
 * adapter's subgroups have at least 8 lanes) per 32x32 block of C. Below SG_MIN rows or columns
 * (LoRA's rank side) most of that block would be idle: matmul_regs' 4-wide blocks waste less.
 */
const SG_SHAPE: RegsShape = { WGX: 1, WGY: 1, BK: 4, TM: 32, TN: 32 };
const SG_MIN = 16;

/**
 * matmul_sg_thin (lavapipe): products with a side of at most THIN_MAX (LoRA's rank side), one
 * 8-lane workgroup per 32 lines of the long side (64 when the long side gives the cores enough
 * workgroups anyway), the thin side's operand shared by shuffles. The default only where it
 * measured faster than matmul_regs: a thin N with A contiguous in k (x · Aᵀ, g · B: ~1.4-1.8x).
 * With the long operand contiguous along the long side (uᵀ · x, gᵀ · t) it was slower (0.6-0.8x,
 * cause not found) and those stay on regs; forcing the path runs every layout.
 */
const THIN_MAX = 4;
function thinShape(M: number, N: number): RegsShape & { swap: boolean; blocks: number } {
  const swap = N > THIN_MAX;
  const long = swap ? N : M;
  const blocks = long >= 512 ? 2 : 1;
  return {
    WGX: 1, WGY: 1, BK: 4, swap, blocks,
    TM: swap ? THIN_MAX : 32 * blocks, TN: swap ? 32 * blocks : THIN_MAX,
  };
}

export function sgCapable(gpu: Gpu): boolean {
  return gpu.features.has('subgroups') && (gpu.info.subgroupMinSize ?? 0) >= 8;
}

/** CPU split-K: only to give the cores at least 8 workgroups, in slices of 128 or more. */
function chooseSplitCpu(tiles: number, K: number): number {
  if (tiles >= 8 || K < 256) return 1;
  return Math.min(Math.floor(K / 128), Math.ceil(8 / tiles));
}

const CS_WGX = 64;
const CS_WGY = 4;

export const matmulFamily = defineShader('matmul', {
  MatmulParams: {
    M: 'u32',
    N: 'u32',
    K: 'u32',
    lda: 'u32',
    ldb: 'u32',
    sA: 'u32',
    sB: 'u32',
    sC: 'u32',
    batch: 'u32',
    kChunk: 'u32',
    transA: 'u32',
    transB: 'u32',
    alpha: 'f32',
    beta: 'f32',
    hasBias: 'u32',
    dropOn: 'u32',
    dropKey: 'u32',
    dropThr: 'u32',
    dropScale: 'f32',
    rank: 'u32',
    lrScale: 'f32',
    lrTrans: 'u32',
    lrMask: 'u32',
  },
  ColsumParams: { R: 'u32', N: 'u32', rowsPerGroup: 'u32' },
});

/** Storage bindings of every matmul entry point (they share the epilogue, mm_put). */
const MM_BINDINGS = ['a', 'b', 'bias', 'lt', 'lr', 'c', 'aux', 'c2'];
const MM_TYPES = {
  a: 'dt_a', b: 'dt_b', bias: 'dt_bias', lt: 'dt_lt', lr: 'dt_lr', c: 'dt_c', aux: 'dt_aux',
  c2: 'dt_c2',
};
/** Epilogue fusions off (MM_ACT codes: see mm_put in the shader). */
const MM_EPILOGUE = { MM_RES: 0, MM_ACT: 0 };
const MM_ACT = { gelu: 1, 'gelu-pair': 2, 'gelu-grad': 3 } as const;

export const matmulKernel = matmulFamily.kernel({
  name: 'matmul.tiled',
  entry: 'matmul',
  params: 'MatmulParams',
  bindings: MM_BINDINGS,
  overrides: { WGX, WGY, BK, ...MM_EPILOGUE },
  types: MM_TYPES,
});

/** The same product with vec4 loads of a and b (see matmul_v4 in the shader). */
export const matmulV4Kernel = matmulFamily.kernel({
  name: 'matmul.tiled_v4',
  entry: 'matmul_v4',
  params: 'MatmulParams',
  bindings: MM_BINDINGS,
  overrides: { WGX, WGY, BK, ...MM_EPILOGUE },
  types: MM_TYPES,
});

/**
 * The same product without workgroup memory (matmul_regs in the shader), for CPU adapters; needs
 * the vec4 kernel's alignment conditions.
 */
export const matmulRegsKernel = matmulFamily.kernel({
  name: 'matmul.regs',
  entry: 'matmul_regs',
  params: 'MatmulParams',
  bindings: MM_BINDINGS,
  overrides: {
    WGX: 8, WGY: 8, RG_TA: 0, RG_TB: 0, RG_2M: 1, RG_2N: 1, RG_DROP: 0, ...MM_EPILOGUE,
  },
  types: MM_TYPES,
});

/** matmul.wgsl with shaders/matmul_sg.wgsl appended behind `enable subgroups;`. */
export const matmulSgFamily = defineShader('matmul', matmulFamily.structs, {
  enables: ['subgroups'],
  append: ['matmul_sg'],
});

/**
 * matmul_regs with the A operand shared across the subgroup by shuffles (matmul_sg in
 * shaders/matmul_sg.wgsl): CPU adapters with subgroups of 8 or more lanes (see sgCapable).
 */
export const matmulSgKernel = matmulSgFamily.kernel({
  name: 'matmul.sg',
  entry: 'matmul_sg',
  params: 'MatmulParams',
  bindings: MM_BINDINGS,
  overrides: {
    RG_TA: 0, RG_TB: 0, RG_DROP: 0, SG_BIAS: 0, SG_LR: 0, SG_MASK: 0, SG_BETA: 0, ...MM_EPILOGUE,
  },
  types: MM_TYPES,
});

/**
 * Products with a side of at most 4 (LoRA's rank side) on CPU adapters with subgroups
 * (matmul_sg_thin in shaders/matmul_sg.wgsl).
 */
export const matmulSgThinKernel = matmulSgFamily.kernel({
  name: 'matmul.sg_thin',
  entry: 'matmul_sg_thin',
  params: 'MatmulParams',
  bindings: MM_BINDINGS,
  overrides: { RG_TA: 0, RG_TB: 0, RG_DROP: 0, SG_SWAP: 0, THIN_BLOCKS: 1, ...MM_EPILOGUE },
  types: MM_TYPES,
});

export const colsumKernel = matmulFamily.kernel({
  name: 'matmul.colsum',
  entry: 'colsum',
  params: 'ColsumParams',
  bindings: ['g', 'out'],
  overrides: { CS_WGX, CS_WGY },
  types: { g: 'dt_g', out: 'dt_out' },
});

/** lowbias32 (Chris Wellons), the shader's mm_hash. */
function hash32(v: number): number {
  let x = v >>> 0;
  x = (x ^ (x >>> 16)) >>> 0;
  x = Math.imul(x, 0x7feb352d) >>> 0;
  x = (x ^ (x >>> 15)) >>> 0;
  x = Math.imul(x, 0x846ca68b) >>> 0;
  return (x ^ (x >>> 16)) >>> 0;
}

/** Inverted dropout keyed by (seed, element index): see mm_drop in the shader. */
export interface DropoutSpec {
  p: number;
  seed: number;
}

function dropoutUniforms(d: DropoutSpec | null | undefined) {
  if (!d || d.p === 0) return { dropKey: 0, dropThr: 0, dropScale: 1 };
  if (!(d.p > 0 && d.p < 1)) throw new Error(`matmul: dropout p must be in [0, 1), got ${d.p}`);
  return {
    // The seed's hash, once here rather than per element in the kernels.
    dropKey: hash32(d.seed >>> 0),
    dropThr: Math.floor(d.p * 2 ** 24),
    dropScale: 1 / (1 - d.p),
  };
}

/**
 * One batched product. Matrices are contiguous row-major; with `transA`, A is stored [K, M]
 * (likewise B [N, K] with `transB`). C is [batch, M, N].
 */
export interface MatmulCall {
  a: GPUBuffer;
  b: GPUBuffer;
  c: GPUBuffer;
  M: number;
  N: number;
  K: number;
  batch?: number;
  transA?: boolean;
  transB?: boolean;
  /** Elements between batch entries of A (default M*K; 0 shares A over the batch). */
  strideA?: number;
  /** Elements between batch entries of B (default K*N; 0 shares B, e.g. a weight). */
  strideB?: number;
  alpha?: number;
  /** C = ... + beta * C (the old C is read only when beta != 0). */
  beta?: number;
  /** [N], added to every row. */
  bias?: GPUBuffer | null;
  /** Dropout applied to the elements of A or B as they are loaded. */
  dropout?: (DropoutSpec & { operand: 'a' | 'b' }) | null;
  /**
   * Adds scale * T · Lᵀ to C, with T [M, rank] and L stored [N, rank] (or the product T · L with
   * L stored [rank, N] when `lTransposed`), optionally times the dropout mask at C's own element
   * index (batch 1 only).
   */
  lowRank?: {
    t: GPUBuffer;
    l: GPUBuffer;
    rank: number;
    scale: number;
    lTransposed: boolean;
    mask?: DropoutSpec | null;
  } | null;
  /**
   * [batch, M, N] like C, added after everything above (a residual connection): C's type rounds
   * the sum before it, as a separate add pass would see it.
   */
  residual?: GPUBuffer | null;
  /** Exact GELU in the epilogue (applied last; see MatmulActivation). */
  activation?: MatmulActivation | null;
  /** Number of K slices summed by a colsum pass; default chosen from the grid size. */
  splitK?: number;
  /** false forces scalar loads; by default vec4 loads are used when both operands are aligned. */
  vec4?: boolean;
  /**
   * Kernel for aligned operands: default 'tiled' on GPUs; on CPU adapters with subgroups 'sg-thin'
   * for N <= 4 with A not transposed, 'sg' for 16+ on both sides, else (and without subgroups)
   * 'regs'.
   */
  path?: MatmulPath;
}

/**
 * GELU fused into a product's epilogue, v being the value C would otherwise get:
 * - `gelu`: C = gelu(v);
 * - `gelu-pair`: C = v and `out` = gelu(v) (an MLP's first layer while training: backward needs v);
 * - `gelu-grad`: C = v * gelu'(`pre`) (the gradient through GELU of the next layer's input
 *   gradient v, pre being GELU's input, [batch, M, N] like C).
 * Each equals the separate elementwise pass over C's stored values, bit for bit.
 */
export type MatmulActivation =
  | { kind: 'gelu' }
  | { kind: 'gelu-pair'; out: GPUBuffer }
  | { kind: 'gelu-grad'; pre: GPUBuffer };

/**
 * A binding of exactly `elems` elements of the buffer's dtype (pool buffers may be larger; f16
 * rounds up to whole 4-byte words), checked against the limit.
 */
function bind(gpu: Gpu, buffer: GPUBuffer, elems: number, what: string): BufferRef {
  const n = Math.max(1, elems);
  const bytes = gpu.pool.dtypeOf(buffer) === 'f16' ? Math.ceil(n / 2) * 4 : n * 4;
  const limit = gpu.limits.maxStorageBufferBindingSize;
  if (bytes > limit) {
    throw new Error(`matmul: ${what} needs ${bytes} bytes, over the ${limit}-byte binding limit`);
  }
  if (bytes > buffer.size) {
    throw new Error(`matmul: ${what} needs ${bytes} bytes, its buffer has ${buffer.size}`);
  }
  return { buffer, size: bytes };
}

/**
 * The binding for an unused c2: a writable binding may not alias another, so it gets its own
 * word, one per device (outside the pool: it lives as long as the device, which frees it).
 */
const c2Scratch = new WeakMap<Gpu, GPUBuffer>();
function unusedC2(gpu: Gpu): BufferRef {
  let buffer = c2Scratch.get(gpu);
  if (!buffer) {
    buffer = gpu.device.createBuffer({
      size: 4, usage: GPUBufferUsage.STORAGE, label: 'matmul.c2-unused',
    });
    c2Scratch.set(gpu, buffer);
  }
  return { buffer, size: 4 };
}

function chooseSplit(tiles: number, K: number): number {
  // Few output tiles and a long K (weight gradients: K = all rows of the batch) leave most of a
  // real GPU idle; cut K into slices of at least 256 until there are ~128 workgroups.
  if (tiles >= 64 || K < 512) return 1;
  return Math.min(Math.ceil(K / 256), Math.ceil(128 / tiles), 64);
}

export function matmul(gpu: Gpu, call: MatmulCall): void {
  const { M, N, K } = call;
  const batch = call.batch ?? 1;
  const transA = !!call.transA;
  const transB = !!call.transB;
  const sA = call.strideA ?? M * K;
  const sB = call.strideB ?? K * N;
  const alpha = call.alpha ?? 1;
  const beta = call.beta ?? 0;
  const lr = call.lowRank ?? null;
  for (const [k, v] of Object.entries({ M, N, K, batch })) {
    if (!Number.isInteger(v) || v <= 0) throw new Error(`matmul: ${k} must be positive, got ${v}`);
  }
  if (lr && batch !== 1) throw new Error(`matmul: the low-rank addend needs batch 1, got ${batch}`);
  if (lr && !(Number.isInteger(lr.rank) && lr.rank > 0)) {
    throw new Error(`matmul: the low-rank addend's rank must be positive, got ${lr.rank}`);
  }

  // vec4 loads need every row start and batch offset of both operands at a multiple of 4
  // (K slices are multiples of BK, itself a multiple of 4).
  const lda = transA ? M : K;
  const ldb = transB ? K : N;
  const aligned = lda % 4 === 0 && ldb % 4 === 0 && sA % 4 === 0 && sB % 4 === 0;
  const vec4 = aligned && call.vec4 !== false;
  const path = vec4 ? (call.path ?? defaultPath(gpu, M, N, transA)) : 'tiled';
  if ((path === 'sg' || path === 'sg-thin') && !sgCapable(gpu)) {
    throw new Error(`matmul: path '${path}' needs the 'subgroups' feature with subgroups of 8+`);
  }
  if (path === 'sg-thin' && Math.min(M, N) > THIN_MAX) {
    throw new Error(`matmul: path 'sg-thin' needs M or N <= ${THIN_MAX}, got ${M}x${N}`);
  }
  const sg = path === 'sg';
  const thin = path === 'sg-thin' ? thinShape(M, N) : null;
  const regs = path === 'regs' || sg || !!thin;
  const kernel = thin
    ? matmulSgThinKernel
    : sg ? matmulSgKernel : regs ? matmulRegsKernel : vec4 ? matmulV4Kernel : matmulKernel;
  const shape: TileShape & Partial<RegsShape> =
    thin ?? (sg ? SG_SHAPE : regs ? regsShape(M, N) : tileShape(M, N));
  const BM = shape.WGY * (shape.TM ?? RM);
  const BN = shape.WGX * (shape.TN ?? RN);
  const tilesM = Math.ceil(M / BM);
  const tilesN = Math.ceil(N / BN);
  const maxG = gpu.limits.maxComputeWorkgroupsPerDimension;
  const act = call.activation ?? null;
  const res = call.residual ?? null;
  if (res && act?.kind === 'gelu-grad') {
    throw new Error('matmul: a residual and gelu-grad both need the aux binding; pick one');
  }
  // No epilogue beyond alpha: split-K may sum partial products.
  const plain = !call.bias && beta === 0 && !lr && !act && !res;
  const autoSplit = regs ? chooseSplitCpu : chooseSplit;
  let nSplit = plain ? (call.splitK ?? autoSplit(tilesM * tilesN * batch, K)) : 1;
  let kChunk = K;
  if (nSplit > 1) {
    kChunk = Math.ceil(Math.ceil(K / nSplit) / shape.BK) * shape.BK;
    nSplit = Math.ceil(K / kChunk);
  }
  if (tilesM > maxG || tilesN > maxG || batch * nSplit > maxG) {
    throw new Error(`matmul: grid ${tilesN}x${tilesM}x${batch * nSplit} exceeds ${maxG}`);
  }
  const dropOn = call.dropout && call.dropout.p > 0 ? (call.dropout.operand === 'a' ? 1 : 2) : 0;
  const overrides: Record<string, number> = thin
    ? {
        RG_TA: transA ? 1 : 0, RG_TB: transB ? 1 : 0, RG_DROP: dropOn,
        SG_SWAP: thin.swap ? 1 : 0, THIN_BLOCKS: thin.blocks,
      }
    : sg
    ? {
        RG_TA: transA ? 1 : 0, RG_TB: transB ? 1 : 0, RG_DROP: dropOn,
        // The epilogue's parts in use, as constants (see sg_put in the shader).
        // SG_LR 2: rank <= 4, T and L loaded once per block.
        SG_BIAS: call.bias ? 1 : 0, SG_LR: lr ? (lr.rank <= 4 ? 2 : 1) : 0,
        SG_MASK: lr?.mask && lr.mask.p > 0 ? 1 : 0,
        SG_BETA: beta !== 0 ? 1 : 0,
      }
    : regs
    ? {
        WGX: shape.WGX, WGY: shape.WGY, RG_TA: transA ? 1 : 0, RG_TB: transB ? 1 : 0,
        RG_2M: shape.TM === 8 ? 1 : 0, RG_2N: shape.TN === 8 ? 1 : 0, RG_DROP: dropOn,
      }
    : { WGX: shape.WGX, WGY: shape.WGY, BK: shape.BK };
  if (act) overrides.MM_ACT = MM_ACT[act.kind];
  if (res) overrides.MM_RES = 1;

  const aElems = (batch - 1) * sA + M * K;
  const bElems = (batch - 1) * sB + K * N;
  const a = bind(gpu, call.a, aElems, 'A');
  const b = bind(gpu, call.b, bElems, 'B');
  const bias = call.bias ? bind(gpu, call.bias, N, 'bias') : a;
  const lt = lr ? bind(gpu, lr.t, M * lr.rank, 'T') : a;
  const ll = lr ? bind(gpu, lr.l, N * lr.rank, 'L') : a;
  const drop = dropoutUniforms(call.dropout ?? lr?.mask);
  if (call.dropout && lr?.mask) throw new Error('matmul: one dropout mask per call');

  const params = {
    M,
    N,
    K,
    lda,
    ldb,
    sA,
    sB,
    sC: M * N,
    batch,
    kChunk,
    transA: transA ? 1 : 0,
    transB: transB ? 1 : 0,
    alpha,
    beta,
    hasBias: call.bias ? 1 : 0,
    dropOn,
    ...drop,
    rank: lr?.rank ?? 0,
    lrScale: lr?.scale ?? 0,
    lrTrans: lr?.lTransposed ? 1 : 0,
    lrMask: lr?.mask && lr.mask.p > 0 ? 1 : 0,
  };
  const outElems = batch * M * N;
  if (nSplit === 1) {
    const c = bind(gpu, call.c, outElems, 'C');
    const auxBuf = res ?? (act?.kind === 'gelu-grad' ? act.pre : null);
    const aux = auxBuf ? bind(gpu, auxBuf, outElems, res ? 'residual' : 'GELU input') : a;
    const c2 = act?.kind === 'gelu-pair'
      ? bind(gpu, act.out, outElems, 'GELU output')
      : unusedC2(gpu);
    gpu.run(kernel, {
      buffers: [a, b, bias, lt, ll, c, aux, c2],
      params,
      grid: [tilesN, tilesM, batch],
      overrides,
    });
    return;
  }
  // Partials [nSplit, batch, M, N], then one column sum over the slices.
  const tmp = gpu.alloc(nSplit * outElems * 4, 'matmul.splitK');
  const part = bind(gpu, tmp, nSplit * outElems, 'split-K partials');
  gpu.run(kernel, {
    buffers: [a, b, bias, lt, ll, part, a, unusedC2(gpu)],
    params,
    grid: [tilesN, tilesM, batch * nSplit],
    overrides,
  });
  colsum(gpu, tmp, call.c, nSplit, outElems);
  gpu.free(tmp);
}

/**
 * out[n] = sum over r of g[r * N + n]. Long columns are cut into row groups whose partial sums a
 * second pass adds, so a [rows, channels] bias gradient with few channels still fills the GPU.
 */
export function colsum(gpu: Gpu, g: GPUBuffer, out: GPUBuffer, R: number, N: number): void {
  if (!(Number.isInteger(R) && R > 0 && Number.isInteger(N) && N > 0)) {
    throw new Error(`colsum: bad size [${R}, ${N}]`);
  }
  const colGroups = Math.ceil(N / CS_WGX);
  const groups =
    R <= 1024 ? 1 : Math.min(Math.ceil(R / 256), Math.max(1, Math.ceil(256 / colGroups)));
  const rowsPerGroup = Math.ceil(R / groups);
  const [gx, gz] = gpu.grid(N, CS_WGX);
  const run = (src: GPUBuffer, dst: GPUBuffer, rows: number, rpg: number, ny: number) =>
    gpu.run(colsumKernel, {
      buffers: [bind(gpu, src, rows * N, 'colsum input'), bind(gpu, dst, ny * N, 'colsum out')],
      params: { R: rows, N, rowsPerGroup: rpg },
      grid: [gx, ny, gz],
    });
  if (groups === 1) {
    run(g, out, R, R, 1);
    return;
  }
  const tmp = gpu.alloc(groups * N * 4, 'colsum.partials');
  run(g, tmp, R, rowsPerGroup, groups);
  run(tmp, out, groups, groups, 1);
  gpu.free(tmp);
}
