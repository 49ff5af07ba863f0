/**
 * Float64 references for the elementwise, activation, reduction, softmax and shape ops: plain
 * loops, written for clarity rather than speed.
 */

const TWO_OVER_SQRT_PI = 2 / Math.sqrt(Math.PI);

/**
 * erf in float64. |x| < 1: erf(x) = 2/sqrt(pi) e^{-x^2} sum_n 2^n x^{2n+1} / (2n+1)!! (all terms
 * positive, so no cancellation); otherwise 1 - erfc(x) with erfc from its continued fraction.
 */
export function erf64(x: number): number {
  const a = Math.abs(x);
  if (a >= 1) return Math.sign(x) * (1 - erfc64(a));
  let term = a;
  let s = a;
  for (let n = 0; n < 200 && term > 1e-18 * s; n++) {
    term *= (2 * a * a) / (2 * n + 3);
    s += term;
  }
  return Math.sign(x) * TWO_OVER_SQRT_PI * Math.exp(-a * a) * s;
}

/**
 * erfc in float64 with relative accuracy in the upper tail: for x >= 1 the continued fraction
 * erfc(x) = e^{-x^2}/sqrt(pi) / (x + (1/2)/(x + 1/(x + (3/2)/(x + ...)))), evaluated bottom-up
 * (500 terms: converged to 1 ulp at x = 1, checked against mpmath).
 */
export function erfc64(x: number): number {
  if (x < 1) return 1 - erf64(x);
  let f = x;
  for (let k = 500; k >= 1; k--) f = x + k / 2 / f;
  return Math.exp(-x * x) / (Math.sqrt(Math.PI) * f);
}

/** P(N(0,1) <= x), relative-accurate in both tails. */
export function normalCdf64(x: number): number {
  return 0.5 * erfc64(-x / Math.SQRT2);
}

export const relu64 = (x: number): number => Math.max(x, 0);
/** PyTorch's convention: the gradient at 0 is 0. */
export const reluGrad64 = (x: number): number => (x > 0 ? 1 : 0);
export const gelu64 = (x: number): number => x * normalCdf64(x);
export const geluGrad64 = (x: number): number =>
  normalCdf64(x) + (x * Math.exp(-0.5 * x * x)) / Math.sqrt(2 * Math.PI);
export const sigmoid64 = (x: number): number =>
  x >= 0 ? 1 / (1 + Math.exp(-x)) : Math.exp(x) / (1 + Math.exp(x));
export const sigmoidGrad64 = (x: number): number => sigmoid64(x) * (1 - sigmoid64(x));
export const erfGrad64 = (x: number): number => TWO_OVER_SQRT_PI * Math.exp(-x * x);

/** out[i] = f(a[i], b[i % nb]). */
export function broadcast2(
  a: Float64Array,
  b: Float64Array,
  f: (x: number, y: number) => number,
): Float64Array {
  return a.map((v, i) => f(v, b[i % b.length]));
}

/** Sum over the leading rows of a [R, C] array (C = suffix size): the broadcast-operand grad. */
export function sumLeading(x: Float64Array, C: number): Float64Array {
  const out = new Float64Array(C);
  for (let i = 0; i < x.length; i++) out[i % C] += x[i];
  return out;
}

export function softmax64(x: Float64Array, cols: number): Float64Array {
  const y = new Float64Array(x.length);
  for (let r = 0; r < x.length / cols; r++) {
    const row = x.subarray(r * cols, (r + 1) * cols);
    const m = Math.max(...row);
    let s = 0;
    for (let j = 0; j < cols; j++) s += Math.exp(row[j] - m);
    for (let j = 0; j < cols; j++) y[r * cols + j] = Math.exp(row[j] - m) / s;
  }
  return y;
}

/** dx = y * (g - sum(g * y)) per row. */
export function softmaxBackward64(x: Float64Array, g: Float64Array, cols: number): Float64Array {
  const y = softmax64(x, cols);
  const dx = new Float64Array(x.length);
  for (let r = 0; r < x.length / cols; r++) {
    let dot = 0;
    for (let j = 0; j < cols; j++) dot += g[r * cols + j] * y[r * cols + j];
    for (let j = 0; j < cols; j++) {
      const k = r * cols + j;
      dx[k] = y[k] * (g[k] - dot);
    }
  }
  return dx;
}

/** out dim k = x dim perm[k], row-major. */
export function permute64(x: Float64Array, shape: number[], perm: number[]): Float64Array {
  const r = shape.length;
  const stride = new Array<number>(r);
  let acc = 1;
  for (let i = r - 1; i >= 0; i--) {
    stride[i] = acc;
    acc *= shape[i];
  }
  const outShape = perm.map((p) => shape[p]);
  const out = new Float64Array(x.length);
  const idx = new Array<number>(r).fill(0);
  for (let o = 0; o < x.length; o++) {
    let src = 0;
    for (let k = 0; k < r; k++) src += idx[k] * stride[perm[k]];
    out[o] = x[src];
    for (let k = r - 1; k >= 0; k--) {
      if (++idx[k] < outShape[k]) break;
      idx[k] = 0;
    }
  }
  return out;
}

/** Columns [start, start+len) of a [rows, C] array. */
export function sliceLast64(x: Float64Array, C: number, start: number, len: number): Float64Array {
  const rows = x.length / C;
  const out = new Float64Array(rows * len);
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < len; j++) out[r * len + j] = x[r * C + start + j];
  }
  return out;
}

/** The transpose of sliceLast64: g placed in columns [start, start+len), zeros elsewhere. */
export function unsliceLast64(
  g: Float64Array,
  C: number,
  start: number,
  len: number,
): Float64Array {
  const rows = g.length / len;
  const out = new Float64Array(rows * C);
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < len; j++) out[r * C + start + j] = g[r * len + j];
  }
  return out;
}

export function concatLast64(xs: Float64Array[], widths: number[]): Float64Array {
  const C = widths.reduce((a, b) => a + b, 0);
  const rows = xs[0].length / widths[0];
  const out = new Float64Array(rows * C);
  let off = 0;
  xs.forEach((x, i) => {
    for (let r = 0; r < rows; r++) {
      for (let j = 0; j < widths[i]; j++) out[r * C + off + j] = x[r * widths[i] + j];
    }
    off += widths[i];
  });
  return out;
}
