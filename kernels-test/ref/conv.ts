/**
 * Float64 references for conv2d (NHWC x, PyTorch weight [Cout, Cin, kh, kw], zero padding) and
 * max-pooling (kernel = stride = k, floor), forward and backward, written as plain loops.
 */
import type { ConvDims } from '../../src/kernels/conv.js';

/** The kernels' geometry record (a type only: the reference shares no code with them). */
export type RefConvDims = ConvDims;

export function refConvOut(d: RefConvDims): [number, number] {
  return [
    Math.floor((d.h + 2 * d.pad - d.kh) / d.stride) + 1,
    Math.floor((d.w + 2 * d.pad - d.kw) / d.stride) + 1,
  ];
}

/** Calls fn(yIndex, xIndex, wIndex) for every (output, tap) pair that reads a real input pixel. */
function forEachTap(d: RefConvDims, fn: (yi: number, xi: number, wi: number) => void): void {
  const [ho, wo] = refConvOut(d);
  for (let b = 0; b < d.b; b++) {
    for (let oy = 0; oy < ho; oy++) {
      for (let ox = 0; ox < wo; ox++) {
        for (let ky = 0; ky < d.kh; ky++) {
          const iy = oy * d.stride - d.pad + ky;
          if (iy < 0 || iy >= d.h) continue;
          for (let kx = 0; kx < d.kw; kx++) {
            const ix = ox * d.stride - d.pad + kx;
            if (ix < 0 || ix >= d.w) continue;
            for (let co = 0; co < d.cout; co++) {
              const yi = ((b * ho + oy) * wo + ox) * d.cout + co;
              for (let ci = 0; ci < d.cin; ci++) {
                const xi = ((b * d.h + iy) * d.w + ix) * d.cin + ci;
                fn(yi, xi, ((co * d.cin + ci) * d.kh + ky) * d.kw + kx);
              }
            }
          }
        }
      }
    }
  }
}

export function refConv2d(
  x: Float64Array,
  w: Float64Array,
  bias: Float64Array | null,
  d: RefConvDims,
): Float64Array {
  const [ho, wo] = refConvOut(d);
  const y = new Float64Array(d.b * ho * wo * d.cout);
  if (bias) for (let i = 0; i < y.length; i++) y[i] = bias[i % d.cout];
  forEachTap(d, (yi, xi, wi) => {
    y[yi] += x[xi] * w[wi];
  });
  return y;
}

/** [dx, dw, db] of sum(gy · conv2d(x, w, b)). */
export function refConv2dBackward(
  x: Float64Array,
  w: Float64Array,
  gy: Float64Array,
  d: RefConvDims,
): [Float64Array, Float64Array, Float64Array] {
  const dx = new Float64Array(x.length);
  const dw = new Float64Array(w.length);
  const db = new Float64Array(d.cout);
  for (let i = 0; i < gy.length; i++) db[i % d.cout] += gy[i];
  forEachTap(d, (yi, xi, wi) => {
    dx[xi] += gy[yi] * w[wi];
    dw[wi] += gy[yi] * x[xi];
  });
  return [dx, dw, db];
}

/** Index (into x) of the first maximum of each k x k window, NHWC; windows past floor dropped. */
export function refMaxPoolArgmax(
  x: Float64Array,
  b: number,
  h: number,
  w: number,
  c: number,
  k: number,
): Int32Array {
  const ho = Math.floor(h / k);
  const wo = Math.floor(w / k);
  const arg = new Int32Array(b * ho * wo * c);
  for (let bi = 0; bi < b; bi++) {
    for (let oy = 0; oy < ho; oy++) {
      for (let ox = 0; ox < wo; ox++) {
        for (let ci = 0; ci < c; ci++) {
          let best = -1;
          for (let dy = 0; dy < k; dy++) {
            for (let dx = 0; dx < k; dx++) {
              const i = ((bi * h + oy * k + dy) * w + ox * k + dx) * c + ci;
              if (best < 0 || x[i] > x[best]) best = i;
            }
          }
          arg[((bi * ho + oy) * wo + ox) * c + ci] = best;
        }
      }
    }
  }
  return arg;
}

export function refMaxPool(x: Float64Array, b: number, h: number, w: number, c: number, k: number) {
  return Float64Array.from(refMaxPoolArgmax(x, b, h, w, c, k), (i) => x[i]);
}

export function refMaxPoolBackward(
  x: Float64Array,
  gy: Float64Array,
  b: number,
  h: number,
  w: number,
  c: number,
  k: number,
): Float64Array {
  const dx = new Float64Array(x.length);
  refMaxPoolArgmax(x, b, h, w, c, k).forEach((src, o) => {
    dx[src] += gy[o];
  });
  return dx;
}
