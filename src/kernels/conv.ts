/**
 * Launchers for shaders/conv.wgsl: conv2d forward, input/weight/bias gradients. Two paths:
 * `implicit` (implicit GEMMs tiled through workgroup memory, the GPU path) and `gemm` (im2col /
 * col2im around matmul's products, the CPU-adapter path: lavapipe runs workgroup-memory tiles
 * slowly, and matmul_regs is its fastest product).
 */
import { defineShader } from '../gpu/kernel.js';
import type { Gpu } from '../gpu/runtime.js';
import { copyCols } from './copy.js';
import { fill } from './elementwise.js';
import { matmul } from './matmul.js';
import { storageBytes } from '../util/f16.js';

/** Threads per workgroup along n (x) and m (y); each thread computes a 4x4 block. */
const WGX = 16;
const WGY = 16;
const TK = 16;
const TM = WGY * 4;
const TN = WGX * 4;
/** colsum: rows one workgroup sums (its output has ceil(rows / RPW) rows). */
const RPW = 256;
const CS_X = 64;

export const conv = defineShader('conv', {
  ConvParams: {
    b: 'u32',
    h: 'u32',
    w: 'u32',
    cin: 'u32',
    ho: 'u32',
    wo: 'u32',
    cout: 'u32',
    kh: 'u32',
    kw: 'u32',
    stride: 'u32',
    pad: 'u32',
    direct: 'u32',
    has_bias: 'u32',
    m0: 'u32',
    chunk: 'u32',
  },
  ColsumParams: { rows: 'u32', cols: 'u32', rpw: 'u32' },
  ColParams: {
    b: 'u32',
    h: 'u32',
    w: 'u32',
    cin: 'u32',
    ho: 'u32',
    wo: 'u32',
    kh: 'u32',
    kw: 'u32',
    stride: 'u32',
    pad: 'u32',
    ldc: 'u32',
  },
});

export const im2colKernel = conv.kernel({
  name: 'conv.im2col',
  entry: 'im2col',
  params: 'ColParams',
  bindings: ['x', 'cols'],
  types: { x: 'dt_in', cols: 'dt_out' },
});

export const col2imKernel = conv.kernel({
  name: 'conv.col2im',
  entry: 'col2im',
  params: 'ColParams',
  bindings: ['dcols', 'dx'],
  types: { dcols: 'dt_in', dx: 'dt_out' },
});

const IC_WG = 64;

/** `implicit`: the conv kernels; `gemm`: im2col/col2im + matmul (see the file comment). */
export type ConvPath = 'implicit' | 'gemm';

/** gemm on CPU adapters (selected by adapter type, like matmul's `regs`), implicit on GPUs. */
export function defaultConvPath(gpu: Gpu): ConvPath {
  return gpu.info.cpuFallback ? 'gemm' : 'implicit';
}

const isDirect = (d: ConvDims) => d.kh === 1 && d.kw === 1 && d.stride === 1 && d.pad === 0;
/** Row length of im2col's matrix: K = Cin*kh*kw rounded up to a multiple of 4 (vec4 loads). */
const colLd = (d: ConvDims) => Math.ceil((d.cin * d.kh * d.kw) / 4) * 4;

function colParams(d: ConvDims) {
  const [ho, wo] = convOutSize(d);
  const { b, h, w, cin, kh, kw, stride, pad } = d;
  return { b, h, w, cin, ho, wo, kh, kw, stride, pad, ldc: colLd(d) };
}

/** im2col(x) into a fresh [B*Ho*Wo, ldc] buffer (caller frees). */
function im2col(gpu: Gpu, x: GPUBuffer, d: ConvDims): GPUBuffer {
  const p = colParams(d);
  const n = d.b * p.ho * p.wo * p.ldc;
  checkBinding(gpu, 'conv2d im2col', n);
  // cols has x's element type: an f16 x costs half the scratch (the values are x's own).
  const dt = gpu.pool.dtypeOf(x);
  const cols = gpu.alloc(storageBytes(n, dt), 'conv.cols', dt);
  gpu.run(im2colKernel, { buffers: [x, cols], params: p, grid: gpu.grid(n, IC_WG) });
  return cols;
}

/** The weight as [Cout, ldc] (zero columns past K); the weight itself when K is aligned. */
function paddedWeight(gpu: Gpu, weight: GPUBuffer, d: ConvDims): GPUBuffer {
  const K = d.cin * d.kh * d.kw;
  const ldc = colLd(d);
  if (ldc === K) return weight;
  const dt = gpu.pool.dtypeOf(weight);
  const wp = gpu.alloc(storageBytes(d.cout * ldc, dt), 'conv.weight_padded', dt);
  fill(gpu, wp, d.cout * ldc, 0);
  copyCols(gpu, weight, wp, d.cout, K, K, 0, ldc, 0);
  return wp;
}

const tiles = { WGX, WGY, TK };

export const convFwdKernel = conv.kernel({
  name: 'conv.fwd',
  entry: 'conv_fwd',
  params: 'ConvParams',
  bindings: ['x', 'weight', 'bias', 'y'],
  overrides: tiles,
  types: { x: 'dt_a', weight: 'dt_w', bias: 'dt_bias', y: 'dt_y' },
});

export const convDxKernel = conv.kernel({
  name: 'conv.dx',
  entry: 'conv_dx',
  params: 'ConvParams',
  bindings: ['dy', 'weight', 'dx'],
  overrides: tiles,
  types: { dy: 'dt_a', weight: 'dt_w', dx: 'dt_dx' },
});

export const convDwKernel = conv.kernel({
  name: 'conv.dw',
  entry: 'conv_dw',
  params: 'ConvParams',
  bindings: ['x', 'dy', 'dw'],
  overrides: tiles,
  types: { x: 'dt_a', dy: 'dt_dy', dw: 'dt_dw' },
});

export const colsumKernel = conv.kernel({
  name: 'conv.colsum',
  entry: 'colsum',
  params: 'ColsumParams',
  bindings: ['in', 'out'],
  overrides: { CS_X, CS_Y: 4 },
  types: { in: 'dt_in', out: 'dt_out' },
});

/** Geometry of one conv2d: NHWC input [b, h, w, cin], weight [cout, cin, kh, kw]. */
export interface ConvDims {
  b: number;
  h: number;
  w: number;
  cin: number;
  cout: number;
  kh: number;
  kw: number;
  stride: number;
  pad: number;
}

/** Output spatial size (PyTorch floor semantics). */
export function convOutSize(d: ConvDims): [number, number] {
  return [
    Math.floor((d.h + 2 * d.pad - d.kh) / d.stride) + 1,
    Math.floor((d.w + 2 * d.pad - d.kw) / d.stride) + 1,
  ];
}

function params(d: ConvDims, extra: { has_bias?: number; m0?: number; chunk?: number } = {}) {
  const [ho, wo] = convOutSize(d);
  const direct = d.kh === 1 && d.kw === 1 && d.stride === 1 && d.pad === 0 ? 1 : 0;
  return { ...d, ho, wo, direct, has_bias: 0, m0: 0, chunk: 0, ...extra };
}

function checkBinding(gpu: Gpu, what: string, floats: number): void {
  const max = gpu.limits.maxStorageBufferBindingSize;
  if (floats * 4 > max) {
    throw new Error(`${what}: ${floats * 4} bytes exceed maxStorageBufferBindingSize ${max}`);
  }
}

/** Dispatches m tiles in slices of at most maxComputeWorkgroupsPerDimension (x grid). */
function runRows(
  gpu: Gpu,
  rows: number,
  cols: number,
  dispatch: (m0: number, gx: number, gy: number) => void,
): void {
  const maxG = gpu.limits.maxComputeWorkgroupsPerDimension;
  const gy = Math.ceil(cols / TN);
  if (gy > maxG) throw new Error(`conv: ${cols} output channels exceed the workgroup grid`);
  const mTiles = Math.ceil(rows / TM);
  for (let t0 = 0; t0 < mTiles; t0 += maxG) dispatch(t0 * TM, Math.min(maxG, mTiles - t0), gy);
}

/** y[b, oy, ox, co] = bias[co] + sum over (ci, ky, kx) of x · weight. */
export function conv2dForward(
  gpu: Gpu,
  x: GPUBuffer,
  weight: GPUBuffer,
  bias: GPUBuffer | null,
  y: GPUBuffer,
  d: ConvDims,
  path?: ConvPath,
): void {
  const [ho, wo] = convOutSize(d);
  const rows = d.b * ho * wo;
  checkBinding(gpu, 'conv2d x', d.b * d.h * d.w * d.cin);
  checkBinding(gpu, 'conv2d y', rows * d.cout);
  if ((path ?? defaultConvPath(gpu)) === 'gemm') {
    // y [P, Cout] = cols [P, K] · W [Cout, K]ᵀ + bias; a 1x1 conv's cols are x itself.
    if (isDirect(d) && d.cin % 4 === 0) {
      matmul(gpu, { a: x, b: weight, c: y, M: rows, N: d.cout, K: d.cin, transB: true, bias });
      return;
    }
    if (!isDirect(d)) {
      const cols = im2col(gpu, x, d);
      const wp = paddedWeight(gpu, weight, d);
      matmul(gpu, { a: cols, b: wp, c: y, M: rows, N: d.cout, K: colLd(d), transB: true, bias });
      gpu.free(cols);
      if (wp !== weight) gpu.free(wp);
      return;
    }
  }
  runRows(gpu, rows, d.cout, (m0, gx, gy) => {
    gpu.run(convFwdKernel, {
      // Without a bias the weight stands in for the unused binding (both are read-only).
      buffers: [x, weight, bias ?? weight, y],
      params: params(d, { has_bias: bias ? 1 : 0, m0 }),
      grid: [gx, gy],
    });
  });
}

/** dx [b, h, w, cin] from dy [b, ho, wo, cout] (gather form: one writer per dx element). */
export function conv2dBackwardInput(
  gpu: Gpu,
  dy: GPUBuffer,
  weight: GPUBuffer,
  dx: GPUBuffer,
  d: ConvDims,
  path?: ConvPath,
): void {
  const rows = d.b * d.h * d.w;
  checkBinding(gpu, 'conv2d dx', rows * d.cin);
  // matmul's vec4 loads of dy [P, Cout] need Cout % 4 == 0 (else the implicit kernel is faster).
  if ((path ?? defaultConvPath(gpu)) === 'gemm' && d.cout % 4 === 0) {
    if (isDirect(d) && d.cin % 4 === 0) {
      // dx [P, Cin] = dy [P, Cout] · W [Cout, Cin].
      matmul(gpu, { a: dy, b: weight, c: dx, M: rows, N: d.cin, K: d.cout });
      return;
    }
    if (!isDirect(d)) {
      // dcols [P, ldc] = dy · W [Cout, ldc], then col2im sums each dx element's taps.
      const p = colParams(d);
      const P = d.b * p.ho * p.wo;
      checkBinding(gpu, 'conv2d dcols', P * p.ldc);
      const dcols = gpu.alloc(P * p.ldc * 4, 'conv.dcols');
      const wp = paddedWeight(gpu, weight, d);
      matmul(gpu, { a: dy, b: wp, c: dcols, M: P, N: p.ldc, K: d.cout });
      const n = rows * d.cin;
      gpu.run(col2imKernel, { buffers: [dcols, dx], params: p, grid: gpu.grid(n, IC_WG) });
      gpu.free(dcols);
      if (wp !== weight) gpu.free(wp);
      return;
    }
  }
  runRows(gpu, rows, d.cin, (m0, gx, gy) => {
    gpu.run(convDxKernel, { buffers: [dy, weight, dx], params: params(d, { m0 }), grid: [gx, gy] });
  });
}

/**
 * Number of slices the P = b*ho*wo reduction of the weight gradient is split into: enough
 * workgroups to fill a large GPU when the weight is small, each slice at least 256 rows.
 */
export function weightGradSplits(d: ConvDims): number {
  const [ho, wo] = convOutSize(d);
  const rows = d.b * ho * wo;
  const outTiles = Math.ceil(d.cout / TM) * Math.ceil((d.kh * d.kw * d.cin) / TN);
  return Math.max(1, Math.min(64, Math.ceil(512 / outTiles), Math.floor(rows / 256)));
}

/**
 * dW [cout, cin, kh, kw] = sum over (b, oy, ox) of dy ⊗ im2col(x). With `splits` > 1 each slice
 * of the reduction writes a partial dW into scratch and colsum adds them (implicit path; giving
 * `splits` selects that path unless `path` says otherwise; the gemm path lets matmul split).
 */
export function conv2dBackwardWeight(
  gpu: Gpu,
  dy: GPUBuffer,
  x: GPUBuffer,
  dw: GPUBuffer,
  d: ConvDims,
  splitsArg?: number,
  path?: ConvPath,
): void {
  const [ho, wo] = convOutSize(d);
  const rows = d.b * ho * wo;
  const kk = d.kh * d.kw * d.cin;
  const chosen = path ?? (splitsArg !== undefined ? 'implicit' : defaultConvPath(gpu));
  // dW [Cout, ldc] = dy [P, Cout]ᵀ · cols [P, ldc]: vec4 loads of dy along Cout need Cout % 4 == 0.
  if (chosen === 'gemm' && d.cout % 4 === 0 && (!isDirect(d) || d.cin % 4 === 0)) {
    if (isDirect(d)) {
      matmul(gpu, { a: dy, b: x, c: dw, M: d.cout, N: d.cin, K: rows, transA: true });
      return;
    }
    const ldc = colLd(d);
    const cols = im2col(gpu, x, d);
    const dwp = ldc === kk ? dw : gpu.alloc(d.cout * ldc * 4, 'conv.dw_padded');
    matmul(gpu, { a: dy, b: cols, c: dwp, M: d.cout, N: ldc, K: rows, transA: true });
    if (dwp !== dw) {
      copyCols(gpu, dwp, dw, d.cout, kk, ldc, 0, kk, 0);
      gpu.free(dwp);
    }
    gpu.free(cols);
    return;
  }
  const splits = splitsArg ?? weightGradSplits(d);
  const maxG = gpu.limits.maxComputeWorkgroupsPerDimension;
  const chunk = Math.ceil(Math.ceil(rows / splits) / TK) * TK;
  const s = Math.ceil(rows / chunk);
  const grid: [number, number, number] = [Math.ceil(d.cout / TM), Math.ceil(kk / TN), s];
  if (grid[1] > maxG || s > maxG) throw new Error(`conv2d dW: grid ${grid} too large`);
  const p = params(d, { chunk });
  if (s === 1) {
    gpu.run(convDwKernel, { buffers: [x, dy, dw], params: p, grid });
    return;
  }
  const n = d.cout * kk;
  checkBinding(gpu, 'conv2d dW partials', s * n);
  const scratch = gpu.alloc(s * n * 4, 'conv.dw.partials');
  gpu.run(convDwKernel, { buffers: [x, dy, scratch], params: p, grid });
  colsum(gpu, scratch, dw, s, n);
  gpu.free(scratch);
}

/** Bias gradient: db[co] = sum of dy [rows, cout] over rows. */
export function conv2dBackwardBias(
  gpu: Gpu,
  dy: GPUBuffer,
  db: GPUBuffer,
  rows: number,
  cout: number,
): void {
  colsum(gpu, dy, db, rows, cout);
}

/** out[c] = sum over r of inp[r, c], in passes of RPW rows (scratch between passes). */
export function colsum(gpu: Gpu, inp: GPUBuffer, out: GPUBuffer, rows: number, cols: number): void {
  const maxG = gpu.limits.maxComputeWorkgroupsPerDimension;
  const gx = Math.ceil(cols / CS_X);
  if (gx > maxG) throw new Error(`colsum: ${cols} columns exceed the workgroup grid`);
  let src = inp;
  let n = rows;
  const scratch: GPUBuffer[] = [];
  while (n > 0) {
    const next = Math.ceil(n / RPW);
    if (next > maxG) throw new Error(`colsum: ${rows} rows exceed the workgroup grid`);
    const dst = next === 1 ? out : gpu.alloc(next * cols * 4, 'conv.colsum.partials');
    if (dst !== out) scratch.push(dst);
    const params = { rows: n, cols, rpw: RPW };
    gpu.run(colsumKernel, { buffers: [src, dst], params, grid: [gx, next] });
    if (next === 1) break;
    src = dst;
    n = next;
  }
  for (const b of scratch) gpu.free(b);
}
