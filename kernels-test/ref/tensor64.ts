/**
 * Plain float64 building blocks for the CPU references (no GPU, no vitest): dense layers, layer
 * norm, exact GELU, attention softmax, convolution, pooling, window partitioning and PyTorch's
 * interpolation rules. Activations are channels-last (NHWC) unless a name says NCHW; weights keep
 * PyTorch layouts (Linear [out, in], Conv2d [Cout, Cin, kh, kw]). Batch is folded into the
 * leading token count where a function takes `n` rows.
 */
import { Rng } from '../../src/util/random.js';

export type Arr = Float64Array | Float32Array;

/** The project's seeded generator as a plain function (no vitest import here). */
export function rng64(seed: number): () => number {
  const r = new Rng(seed);
  return () => r.next();
}

/** Box-Muller normal samples with standard deviation `std`, plus `mean`. */
export function normal64(n: number, r: () => number, std = 1, mean = 0): Float64Array {
  const out = new Float64Array(n);
  for (let i = 0; i < n; i += 2) {
    const u = Math.max(r(), 1e-12);
    const m = Math.sqrt(-2 * Math.log(u)) * std;
    const v = 2 * Math.PI * r();
    out[i] = mean + m * Math.cos(v);
    if (i + 1 < n) out[i + 1] = mean + m * Math.sin(v);
  }
  return out;
}

/**
 * y[n, o] = b[o] + sum_i x[n, i] * w[o, i]
 * (https://pytorch.org/docs/stable/generated/torch.nn.Linear.html).
 * All-zero rows (the zero padding of window partitions) get exactly b, as the full sum would;
 * other rows run two at a time against four weight rows (fewer loads per multiply-add).
 * Shapes: x [n, cin], w [cout, cin], b [cout] -> [n, cout].
 */
export function linear64(
  x: Arr,
  n: number,
  cin: number,
  w: Arr,
  b: Arr | null,
  cout: number,
): Float64Array {
  if (x.length !== n * cin || w.length !== cout * cin || (b && b.length !== cout)) {
    throw new Error(
      `linear64: x ${x.length} (want ${n}x${cin}), w ${w.length} (want ${cout}x${cin}), ` +
        `b ${b?.length} (want ${cout})`,
    );
  }
  const y = new Float64Array(n * cout);
  const rows: number[] = [];
  for (let r = 0; r < n; r++) {
    let nz = false;
    for (let i = r * cin, e = i + cin; i < e; i++) {
      if (x[i] !== 0) {
        nz = true;
        break;
      }
    }
    if (nz) rows.push(r);
    else if (b) for (let o = 0; o < cout; o++) y[r * cout + o] = b[o];
  }
  for (let p = 0; p < rows.length; p += 2) {
    const ra = rows[p];
    // An odd count repeats the last row (same result written twice).
    const rb = p + 1 < rows.length ? rows[p + 1] : ra;
    const xa = ra * cin;
    const xb = rb * cin;
    let o = 0;
    for (; o + 3 < cout; o += 4) {
      const w0 = o * cin;
      const w1 = w0 + cin;
      const w2 = w1 + cin;
      const w3 = w2 + cin;
      let a0 = 0, a1 = 0, a2 = 0, a3 = 0, b0 = 0, b1 = 0, b2 = 0, b3 = 0;
      for (let i = 0; i < cin; i++) {
        const u = x[xa + i];
        const v = x[xb + i];
        const k0 = w[w0 + i];
        const k1 = w[w1 + i];
        const k2 = w[w2 + i];
        const k3 = w[w3 + i];
        a0 += u * k0;
        a1 += u * k1;
        a2 += u * k2;
        a3 += u * k3;
        b0 += v * k0;
        b1 += v * k1;
        b2 += v * k2;
        b3 += v * k3;
      }
      const c0 = b ? b[o] : 0;
      const c1 = b ? b[o + 1] : 0;
      const c2 = b ? b[o + 2] : 0;
      const c3 = b ? b[o + 3] : 0;
      const ya = ra * cout + o;
      const yb = rb * cout + o;
      y[ya] = a0 + c0;
      y[ya + 1] = a1 + c1;
      y[ya + 2] = a2 + c2;
      y[ya + 3] = a3 + c3;
      y[yb] = b0 + c0;
      y[yb + 1] = b1 + c1;
      y[yb + 2] = b2 + c2;
      y[yb + 3] = b3 + c3;
    }
    for (; o < cout; o++) {
      const wo = o * cin;
      let a0 = 0;
      let b0 = 0;
      for (let i = 0; i < cin; i++) {
        a0 += x[xa + i] * w[wo + i];
        b0 += x[xb + i] * w[wo + i];
      }
      y[ra * cout + o] = a0 + (b ? b[o] : 0);
      y[rb * cout + o] = b0 + (b ? b[o] : 0);
    }
  }
  return y;
}

/**
 * torch.nn.LayerNorm over the last dim (biased variance, eps inside the square root;
 * https://pytorch.org/docs/stable/generated/torch.nn.LayerNorm.html).
 * Shapes: x [n, c], gamma [c], beta [c] -> [n, c].
 */
export function layerNorm64(x: Arr, n: number, c: number, gamma: Arr, beta: Arr, eps: number) {
  const y = new Float64Array(n * c);
  for (let r = 0; r < n; r++) {
    const o = r * c;
    let mean = 0;
    for (let i = 0; i < c; i++) mean += x[o + i];
    mean /= c;
    let v = 0;
    for (let i = 0; i < c; i++) {
      const d = x[o + i] - mean;
      v += d * d;
    }
    const inv = 1 / Math.sqrt(v / c + eps);
    for (let i = 0; i < c; i++) y[o + i] = (x[o + i] - mean) * inv * gamma[i] + beta[i];
  }
  return y;
}

const TWO_OVER_SQRT_PI = 2 / Math.sqrt(Math.PI);

/**
 * erfc(z) for z >= 0 the slow, direct way (~1e-15 relative): z < 0.5: 1 - erf(z) from the
 * positive series (erfc > 0.47 there, no cancellation); z >= 0.5: the Laplace continued fraction
 * erfc(z) = e^{-z^2}/sqrt(pi) / (z + (1/2)/(z + 1/(z + (3/2)/(z + ...)))) by modified Lentz,
 * which converges for every z > 0 (about 730 terms at 0.5, 30 at 3).
 */
export function erfcExact64(z: number): number {
  if (z < 0) return 2 - erfcExact64(-z);
  if (z < 0.5) return 1 - erfSeries(z);
  const tiny = 1e-300;
  let f = z;
  let c = z;
  let d = 0;
  for (let k = 1; k < 100000; k++) {
    const a = k / 2;
    d = z + a * d;
    d = Math.abs(d) < tiny ? tiny : d;
    c = z + a / c;
    c = Math.abs(c) < tiny ? tiny : c;
    d = 1 / d;
    const delta = c * d;
    f *= delta;
    if (Math.abs(delta - 1) < 1e-16) break;
  }
  return Math.exp(-z * z) / Math.sqrt(Math.PI) / f;
}

/** erf(z) = 2/sqrt(pi) e^{-z^2} sum_k (2z^2)^k z / (1*3*...*(2k+1)): positive terms only. */
function erfSeries(z: number): number {
  const z2 = z * z;
  let term = z;
  let sum = z;
  for (let k = 1; k < 400; k++) {
    term *= (2 * z2) / (2 * k + 1);
    sum += term;
    if (term < sum * 1e-17) break;
  }
  return TWO_OVER_SQRT_PI * Math.exp(-z2) * sum;
}

// erfc on a grid z_k = k / ERFC_STEPS_PER_UNIT over [0, ERFC_TABLE_MAX], from erfcExact64.
const ERFC_STEPS_PER_UNIT = 32;
const ERFC_TABLE_MAX = 6;
let erfcTable: { v: Float64Array; e: Float64Array } | null = null;
function getErfcTable() {
  if (!erfcTable) {
    const n = ERFC_TABLE_MAX * ERFC_STEPS_PER_UNIT + 1;
    const v = new Float64Array(n);
    const e = new Float64Array(n);
    for (let k = 0; k < n; k++) {
      const z = k / ERFC_STEPS_PER_UNIT;
      v[k] = erfcExact64(z);
      e[k] = TWO_OVER_SQRT_PI * Math.exp(-z * z);
    }
    erfcTable = { v, e };
  }
  return erfcTable;
}

/**
 * erfc in float64 (~1e-15 relative; JS has no erf). Between 0 and 6: Taylor series around the
 * nearest grid point z0 (|d| <= 1/64), using d^n/dz^n erfc = (-1)^n 2/sqrt(pi) H_{n-1}(z)
 * e^{-z^2} with physicists' Hermite polynomials (H_{m+1} = 2z H_m - 2m H_{m-1}); 14 terms put
 * the truncation below 1e-17 relative. Beyond 6: the continued fraction (fast there).
 */
export function erfc64(z: number): number {
  if (z < 0) return 2 - erfc64(-z);
  if (z >= ERFC_TABLE_MAX) return erfcExact64(z);
  const t = getErfcTable();
  const k = Math.round(z * ERFC_STEPS_PER_UNIT);
  const z0 = k / ERFC_STEPS_PER_UNIT;
  const d = z - z0;
  let hPrev = 1; // H_0
  let h = 2 * z0; // H_1
  let dn = -d; // (-d)^n / n! for n = 1
  let sum = dn * hPrev; // n = 1 uses H_0
  for (let nn = 2; nn <= 14; nn++) {
    dn *= -d / nn;
    sum += dn * h;
    const hNext = 2 * z0 * h - 2 * (nn - 1) * hPrev;
    hPrev = h;
    h = hNext;
  }
  return t.v[k] + t.e[k] * sum;
}

/** erf in float64: the positive series below 3, 1 - erfc above. */
export function erf64(z: number): number {
  if (z < 0) return -erf64(-z);
  return z < 3 ? erfSeries(z) : 1 - erfc64(z);
}

/**
 * Exact GELU (https://pytorch.org/docs/stable/generated/torch.nn.GELU.html, approximate='none'):
 * x * Phi(x) = x/2 * erfc(-x/sqrt2).
 */
export function gelu64(x: number): number {
  return 0.5 * x * erfc64(-x * Math.SQRT1_2);
}

/** In-place exact GELU over an array. */
export function geluInPlace64(x: Float64Array): Float64Array {
  for (let i = 0; i < x.length; i++) x[i] = gelu64(x[i]);
  return x;
}

/**
 * torch.nn.Conv2d on one NCHW image with zero padding and equal stride/padding on both axes
 * (https://pytorch.org/docs/stable/generated/torch.nn.Conv2d.html).
 * Shapes: x [cin, h, w], w [cout, cin, k, k], b [cout] -> [cout, ho, wo],
 * ho = floor((h + 2 pad - k) / stride) + 1.
 */
export function conv2dNchw64(
  x: Arr,
  cin: number,
  h: number,
  wd: number,
  w: Arr,
  b: Arr | null,
  cout: number,
  k: number,
  stride: number,
  pad: number,
): { y: Float64Array; ho: number; wo: number } {
  if (x.length !== cin * h * wd || w.length !== cout * cin * k * k) {
    throw new Error(`conv2dNchw64: x ${x.length} (want ${cin}x${h}x${wd}), w ${w.length} ` +
      `(want ${cout}x${cin}x${k}x${k})`);
  }
  const ho = Math.floor((h + 2 * pad - k) / stride) + 1;
  const wo = Math.floor((wd + 2 * pad - k) / stride) + 1;
  const y = new Float64Array(cout * ho * wo);
  for (let co = 0; co < cout; co++) {
    const bias = b ? b[co] : 0;
    for (let oy = 0; oy < ho; oy++) {
      for (let ox = 0; ox < wo; ox++) {
        let s = bias;
        for (let ci = 0; ci < cin; ci++) {
          for (let ky = 0; ky < k; ky++) {
            const iy = oy * stride - pad + ky;
            if (iy < 0 || iy >= h) continue;
            const xr = (ci * h + iy) * wd;
            const wr = ((co * cin + ci) * k + ky) * k;
            for (let kx = 0; kx < k; kx++) {
              const ix = ox * stride - pad + kx;
              if (ix < 0 || ix >= wd) continue;
              s += x[xr + ix] * w[wr + kx];
            }
          }
        }
        y[(co * ho + oy) * wo + ox] = s;
      }
    }
  }
  return { y, ho, wo };
}

/** [h, w, c] -> [c, h, w]. */
export function hwcToChw64(x: Arr, h: number, w: number, c: number): Float64Array {
  const y = new Float64Array(h * w * c);
  for (let p = 0; p < h * w; p++) for (let i = 0; i < c; i++) y[i * h * w + p] = x[p * c + i];
  return y;
}

/** [c, h, w] -> [h, w, c]. */
export function chwToHwc64(x: Arr, c: number, h: number, w: number): Float64Array {
  const y = new Float64Array(h * w * c);
  for (let i = 0; i < c; i++) for (let p = 0; p < h * w; p++) y[p * c + i] = x[i * h * w + p];
  return y;
}

/**
 * torch.nn.MaxPool2d(kernel = stride = (kh, kw), padding 0, ceil_mode=False) on channels-last
 * data: trailing rows/columns that do not fill a window are dropped
 * (https://pytorch.org/docs/stable/generated/torch.nn.MaxPool2d.html).
 * Shapes: x [b, h, w, c] -> [b, floor(h/kh), floor(w/kw), c].
 */
export function maxPoolNhwc64(
  x: Arr,
  b: number,
  h: number,
  w: number,
  c: number,
  kh: number,
  kw: number,
): { y: Float64Array; ho: number; wo: number } {
  const ho = Math.floor(h / kh);
  const wo = Math.floor(w / kw);
  const y = new Float64Array(b * ho * wo * c).fill(-Infinity);
  for (let n = 0; n < b; n++) {
    for (let oy = 0; oy < ho; oy++) {
      for (let ox = 0; ox < wo; ox++) {
        const yo = ((n * ho + oy) * wo + ox) * c;
        for (let dy = 0; dy < kh; dy++) {
          for (let dx = 0; dx < kw; dx++) {
            const xo = ((n * h + oy * kh + dy) * w + ox * kw + dx) * c;
            for (let i = 0; i < c; i++) if (x[xo + i] > y[yo + i]) y[yo + i] = x[xo + i];
          }
        }
      }
    }
  }
  return { y, ho, wo };
}

/**
 * window_partition (sam2/modeling/backbones/utils.py): zero-pad the bottom/right of the grid to
 * a multiple of `ws` (F.pad with zeros; no mask is kept), then cut ws x ws windows ordered
 * window-row-major (batch, window row, window column), tokens row-major inside a window.
 * Shapes: x [b, h, w, c] -> [b * nwh * nww, ws, ws, c], hp = nwh * ws, wp = nww * ws.
 */
export function windowPartition64(
  x: Arr,
  b: number,
  h: number,
  w: number,
  c: number,
  ws: number,
): { y: Float64Array; hp: number; wp: number; nw: number } {
  const hp = Math.ceil(h / ws) * ws;
  const wp = Math.ceil(w / ws) * ws;
  const nwh = hp / ws;
  const nww = wp / ws;
  const y = new Float64Array(b * hp * wp * c);
  for (let n = 0; n < b; n++) {
    for (let yy = 0; yy < h; yy++) {
      for (let xx = 0; xx < w; xx++) {
        const win = (n * nwh + Math.floor(yy / ws)) * nww + Math.floor(xx / ws);
        const dst = ((win * ws + (yy % ws)) * ws + (xx % ws)) * c;
        const src = ((n * h + yy) * w + xx) * c;
        for (let i = 0; i < c; i++) y[dst + i] = x[src + i];
      }
    }
  }
  return { y, hp, wp, nw: nwh * nww };
}

/**
 * window_unpartition: the inverse layout of windowPartition64 on a padded (hp, wp) grid, then
 * crop to (h, w).
 * Shapes: windows [b * (hp/ws) * (wp/ws), ws, ws, c] -> [b, h, w, c].
 */
export function windowUnpartition64(
  win: Arr,
  b: number,
  hp: number,
  wp: number,
  h: number,
  w: number,
  c: number,
  ws: number,
): Float64Array {
  const nwh = hp / ws;
  const nww = wp / ws;
  if (win.length !== b * hp * wp * c || !Number.isInteger(nwh) || !Number.isInteger(nww)) {
    throw new Error(`windowUnpartition64: ${win.length} values for b ${b}, padded ${hp}x${wp}, ` +
      `c ${c}, window ${ws}`);
  }
  const y = new Float64Array(b * h * w * c);
  for (let n = 0; n < b; n++) {
    for (let yy = 0; yy < h; yy++) {
      for (let xx = 0; xx < w; xx++) {
        const wi = (n * nwh + Math.floor(yy / ws)) * nww + Math.floor(xx / ws);
        const src = ((wi * ws + (yy % ws)) * ws + (xx % ws)) * c;
        const dst = ((n * h + yy) * w + xx) * c;
        for (let i = 0; i < c; i++) y[dst + i] = win[src + i];
      }
    }
  }
  return y;
}

/** PyTorch's cubic convolution weights for fraction t (upsample_bicubic2d, A = -0.75). */
export function cubicWeights64(t: number, A = -0.75): [number, number, number, number] {
  // Keys' kernel: |x| <= 1: ((A+2)|x| - (A+3)) x^2 + 1; 1 < |x| < 2: ((A|x| - 5A)|x| + 8A)|x| - 4A.
  const c1 = (x: number) => ((A + 2) * x - (A + 3)) * x * x + 1;
  const c2 = (x: number) => ((A * x - 5 * A) * x + 8 * A) * x - 4 * A;
  return [c2(t + 1), c1(t), c1(1 - t), c2(2 - t)];
}

/** Source index and weights along one axis, PyTorch align_corners=False, size given. */
function cubicAxis(inSize: number, outSize: number): { idx: Int32Array; wt: Float64Array } {
  // area_pixel_compute_scale: in/out when an output size (not a scale factor) is given.
  const scale = inSize / outSize;
  const idx = new Int32Array(outSize * 4);
  const wt = new Float64Array(outSize * 4);
  for (let o = 0; o < outSize; o++) {
    // area_pixel_compute_source_index with cubic=true: NOT clamped at 0 (unlike linear modes).
    const real = scale * (o + 0.5) - 0.5;
    // guard_index_and_lambda: floor capped at in-1, fraction clamped to [0, 1].
    const i0 = Math.min(Math.floor(real), inSize - 1);
    const t = Math.min(Math.max(real - i0, 0), 1);
    const ws = cubicWeights64(t);
    for (let j = 0; j < 4; j++) {
      // Taps read through upsample_get_value_bounded: indices clamped to [0, in-1].
      idx[o * 4 + j] = Math.min(Math.max(i0 - 1 + j, 0), inSize - 1);
      wt[o * 4 + j] = ws[j];
    }
  }
  return { idx, wt };
}

/**
 * F.interpolate(x, size=(ho, wo), mode='bicubic', align_corners=False) on NCHW planes
 * (separable: rows then columns, same result as PyTorch's 4x4 tap sum up to rounding;
 * https://pytorch.org/docs/stable/generated/torch.nn.functional.interpolate.html).
 * Shapes: x [c, h, w] -> [c, ho, wo].
 */
export function bicubicResizeNchw64(
  x: Arr,
  c: number,
  h: number,
  w: number,
  ho: number,
  wo: number,
): Float64Array {
  const ay = cubicAxis(h, ho);
  const ax = cubicAxis(w, wo);
  const y = new Float64Array(c * ho * wo);
  for (let ch = 0; ch < c; ch++) {
    const xp = ch * h * w;
    for (let oy = 0; oy < ho; oy++) {
      for (let ox = 0; ox < wo; ox++) {
        let s = 0;
        for (let j = 0; j < 4; j++) {
          const row = xp + ay.idx[oy * 4 + j] * w;
          let r = 0;
          for (let i = 0; i < 4; i++) r += ax.wt[ox * 4 + i] * x[row + ax.idx[ox * 4 + i]];
          s += ay.wt[oy * 4 + j] * r;
        }
        y[(ch * ho + oy) * wo + ox] = s;
      }
    }
  }
  return y;
}

/**
 * F.interpolate(x, scale_factor=2, mode='nearest') on NCHW planes: output side floor(2 * in),
 * source index floor(dst * 0.5) (PyTorch uses 1/scale_factor when a factor is given).
 * Shapes: x [c, h, w] -> [c, 2h, 2w].
 */
export function nearestUp2Nchw64(x: Arr, c: number, h: number, w: number): Float64Array {
  const ho = 2 * h;
  const wo = 2 * w;
  const y = new Float64Array(c * ho * wo);
  for (let ch = 0; ch < c; ch++) {
    for (let oy = 0; oy < ho; oy++) {
      for (let ox = 0; ox < wo; ox++) {
        y[(ch * ho + oy) * wo + ox] = x[(ch * h + (oy >> 1)) * w + (ox >> 1)];
      }
    }
  }
  return y;
}

/**
 * Multi-head scaled dot-product attention for one sequence, no mask, scale 1/sqrt(headDim)
 * (https://pytorch.org/docs/stable/generated/torch.nn.functional.scaled_dot_product_attention.html).
 * q, k, v are rows of `heads * headDim` channels with head h in channels
 * [h * headDim, (h+1) * headDim) (the (..., nHeads, C) reshape of SAM2).
 * Shapes: q [nq, heads*hd] (row stride qs), k/v [nk, heads*hd] (row strides ks, vs),
 * out [nq, heads*hd] written at `out` offset `oo` with row stride os.
 */
export function attention64(
  q: Arr,
  qo: number,
  qs: number,
  nq: number,
  k: Arr,
  ko: number,
  ks: number,
  v: Arr,
  vo: number,
  vs: number,
  nk: number,
  heads: number,
  hd: number,
  out: Float64Array,
  oo: number,
  os: number,
): void {
  const scale = 1 / Math.sqrt(hd);
  const p = new Float64Array(nk);
  for (let h = 0; h < heads; h++) {
    const ch = h * hd;
    for (let i = 0; i < nq; i++) {
      const qr = qo + i * qs + ch;
      let mx = -Infinity;
      for (let j = 0; j < nk; j++) {
        const kr = ko + j * ks + ch;
        let s = 0;
        for (let d = 0; d < hd; d++) s += q[qr + d] * k[kr + d];
        s *= scale;
        p[j] = s;
        if (s > mx) mx = s;
      }
      let den = 0;
      for (let j = 0; j < nk; j++) {
        p[j] = Math.exp(p[j] - mx);
        den += p[j];
      }
      const or = oo + i * os + ch;
      for (let d = 0; d < hd; d++) out[or + d] = 0;
      for (let j = 0; j < nk; j++) {
        const pj = p[j] / den;
        const vr = vo + j * vs + ch;
        for (let d = 0; d < hd; d++) out[or + d] += pj * v[vr + d];
      }
    }
  }
}
