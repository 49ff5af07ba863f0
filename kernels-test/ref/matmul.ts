/**
 * Float64 references for matmul, linear and LoRA linear (forward and backward), and the LoRA
 * dropout mask re-derived in TS from the same (seed, element index) hash the kernels use.
 */

export interface MatmulDims {
  M: number;
  N: number;
  K: number;
  /** Batch count; an operand with shared=true is one 2-D matrix used by every batch entry. */
  batch: number;
  transA: boolean;
  transB: boolean;
  sharedA?: boolean;
  sharedB?: boolean;
}

/** C = op(A) · op(B), one matrix (offsets in elements). */
function mm2(
  a: Float64Array, oa: number, b: Float64Array, ob: number, c: Float64Array, oc: number,
  M: number, N: number, K: number, transA: boolean, transB: boolean, accumulate = false,
): void {
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let s = 0;
      for (let k = 0; k < K; k++) {
        const av = a[oa + (transA ? k * M + m : m * K + k)];
        const bv = b[ob + (transB ? n * K + k : k * N + n)];
        s += av * bv;
      }
      c[oc + m * N + n] = accumulate ? c[oc + m * N + n] + s : s;
    }
  }
}

export function refMatmul(a: Float64Array, b: Float64Array, d: MatmulDims): Float64Array {
  const { M, N, K, batch } = d;
  const c = new Float64Array(batch * M * N);
  for (let i = 0; i < batch; i++) {
    mm2(a, d.sharedA ? 0 : i * M * K, b, d.sharedB ? 0 : i * K * N, c, i * M * N, M, N, K,
      d.transA, d.transB);
  }
  return c;
}

/** Gradients of sum(g ⊙ op(A)·op(B)) written element by element from the definition. */
export function refMatmulBackward(
  a: Float64Array, b: Float64Array, g: Float64Array, d: MatmulDims,
): [Float64Array, Float64Array] {
  const { M, N, K, batch } = d;
  const da = new Float64Array(a.length);
  const db = new Float64Array(b.length);
  for (let i = 0; i < batch; i++) {
    const oa = d.sharedA ? 0 : i * M * K;
    const ob = d.sharedB ? 0 : i * K * N;
    for (let m = 0; m < M; m++) {
      for (let k = 0; k < K; k++) {
        const ai = oa + (d.transA ? k * M + m : m * K + k);
        for (let n = 0; n < N; n++) {
          const bi = ob + (d.transB ? n * K + k : k * N + n);
          const gv = g[i * M * N + m * N + n];
          da[ai] += gv * b[bi];
          db[bi] += gv * a[ai];
        }
      }
    }
  }
  return [da, db];
}

/** y = x · Wᵀ + bias over rows of x. */
export function refLinear(
  x: Float64Array, w: Float64Array, bias: Float64Array | null, rows: number, inF: number,
  outF: number,
): Float64Array {
  const y = new Float64Array(rows * outF);
  mm2(x, 0, w, 0, y, 0, rows, outF, inF, false, true);
  if (bias) {
    for (let r = 0; r < rows; r++) for (let o = 0; o < outF; o++) y[r * outF + o] += bias[o];
  }
  return y;
}

export function refLinearBackward(
  x: Float64Array, w: Float64Array, g: Float64Array, rows: number, inF: number, outF: number,
): { dx: Float64Array; dw: Float64Array; db: Float64Array } {
  const dx = new Float64Array(rows * inF);
  const dw = new Float64Array(outF * inF);
  const db = new Float64Array(outF);
  mm2(g, 0, w, 0, dx, 0, rows, inF, outF, false, false);
  mm2(g, 0, x, 0, dw, 0, outF, inF, rows, true, false);
  for (let r = 0; r < rows; r++) for (let o = 0; o < outF; o++) db[o] += g[r * outF + o];
  return { dx, dw, db };
}

/** lowbias32, written independently of the kernels' copy. */
function hash32(v: number): number {
  let x = v >>> 0;
  x = (x ^ (x >>> 16)) >>> 0;
  x = Math.imul(x, 0x7feb352d) >>> 0;
  x = (x ^ (x >>> 15)) >>> 0;
  x = Math.imul(x, 0x846ca68b) >>> 0;
  return (x ^ (x >>> 16)) >>> 0;
}

/**
 * Inverted-dropout factors for n elements: element i is kept (factor 1/(1-p)) when the top 24 bits
 * of hash(i ^ hash(seed)) reach floor(p * 2^24), else 0. p = 0 keeps everything with factor 1.
 */
export function refDropoutMask(n: number, p: number, seed: number): Float64Array {
  const out = new Float64Array(n);
  if (p === 0) return out.fill(1);
  const key = hash32(seed >>> 0);
  const thr = Math.floor(p * 2 ** 24);
  // The kernels scale by the f32 value of 1/(1-p).
  const keep = Math.fround(1 / (1 - p));
  for (let i = 0; i < n; i++) out[i] = hash32((i ^ key) >>> 0) >>> 8 >= thr ? keep : 0;
  return out;
}

export interface LoraDims {
  rows: number;
  inF: number;
  outF: number;
  rank: number;
  scale: number;
}

/** y = x · Wᵀ + b + scale · ((mask ⊙ x) · Aᵀ) · Bᵀ. */
export function refLora(
  x: Float64Array, w: Float64Array, bias: Float64Array | null, a: Float64Array, b: Float64Array,
  mask: Float64Array, d: LoraDims,
): Float64Array {
  const { rows, inF, outF, rank } = d;
  const y = refLinear(x, w, bias, rows, inF, outF);
  const xd = x.map((v, i) => v * mask[i]);
  const t = new Float64Array(rows * rank);
  mm2(xd, 0, a, 0, t, 0, rows, rank, inF, false, true);
  const up = new Float64Array(rows * outF);
  mm2(t, 0, b, 0, up, 0, rows, outF, rank, false, true);
  for (let i = 0; i < y.length; i++) y[i] += d.scale * up[i];
  return y;
}

export function refLoraBackward(
  x: Float64Array, w: Float64Array, a: Float64Array, b: Float64Array, mask: Float64Array,
  g: Float64Array, d: LoraDims,
): { dx: Float64Array; dw: Float64Array; db: Float64Array; da: Float64Array; dB: Float64Array } {
  const { rows, inF, outF, rank, scale } = d;
  const { dx, dw, db } = refLinearBackward(x, w, g, rows, inF, outF);
  const xd = x.map((v, i) => v * mask[i]);
  const u = new Float64Array(rows * rank); // g · B
  mm2(g, 0, b, 0, u, 0, rows, rank, outF, false, false);
  const ua = new Float64Array(rows * inF); // u · A
  mm2(u, 0, a, 0, ua, 0, rows, inF, rank, false, false);
  for (let i = 0; i < dx.length; i++) dx[i] += scale * mask[i] * ua[i];
  const da = new Float64Array(rank * inF);
  mm2(u, 0, xd, 0, da, 0, rank, inF, rows, true, false);
  const t = new Float64Array(rows * rank);
  mm2(xd, 0, a, 0, t, 0, rows, rank, inF, false, true);
  const dB = new Float64Array(outF * rank);
  mm2(g, 0, t, 0, dB, 0, outF, rank, rows, true, false);
  for (let i = 0; i < da.length; i++) da[i] *= scale;
  for (let i = 0; i < dB.length; i++) dB[i] *= scale;
  return { dx, dw, db, da, dB };
}
