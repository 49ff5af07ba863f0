/**
 * Float64 references for F.interpolate (align_corners=False, no antialias) on NHWC arrays. Each
 * mode is separable: an output coordinate reads a few input coordinates per axis with weights;
 * forward sums them, backward scatters the upstream gradient with the same weights.
 */
import type { ResizeDims } from '../../src/kernels/resize.js';

export type RefMode = 'nearest' | 'bilinear' | 'bicubic';

type Taps = [index: number, weight: number][];

/** Nearest index with PyTorch's f32 arithmetic (an index choice, so matched exactly). */
export function refNearestIndex(o: number, nin: number, nout: number): number {
  const scale = Math.fround(nin / nout);
  return Math.min(Math.floor(Math.fround(o * scale)), nin - 1);
}

function cubic(t: number): [number, number, number, number] {
  const a = -0.75;
  const c1 = (x: number) => ((a + 2) * x - (a + 3)) * x * x + 1;
  const c2 = (x: number) => ((a * x - 5 * a) * x + 8 * a) * x - 4 * a;
  return [c2(t + 1), c1(t), c1(1 - t), c2(2 - t)];
}

export function refTaps(mode: RefMode, o: number, nin: number, nout: number): Taps {
  const scale = nin / nout;
  if (mode === 'nearest') return [[refNearestIndex(o, nin, nout), 1]];
  const src = scale * (o + 0.5) - 0.5;
  if (mode === 'bilinear') {
    const s = Math.max(src, 0);
    const i0 = Math.min(Math.floor(s), nin - 1);
    const l1 = Math.min(Math.max(s - i0, 0), 1);
    return [
      [i0, 1 - l1],
      [Math.min(i0 + 1, nin - 1), l1],
    ];
  }
  const f = Math.floor(src);
  const w = cubic(src - f);
  return w.map((wt, k) => [Math.min(Math.max(f - 1 + k, 0), nin - 1), wt]);
}

/** The kernels' geometry record (a type only: the reference shares no code with them). */
export type RefResizeDims = ResizeDims;

/** Calls fn(yIndex, xIndex, weight) for every (output, input tap) pair. */
function forEachTap(
  mode: RefMode,
  d: RefResizeDims,
  fn: (yi: number, xi: number, wt: number) => void,
): void {
  const ty = Array.from({ length: d.ho }, (_, o) => refTaps(mode, o, d.h, d.ho));
  const tx = Array.from({ length: d.wo }, (_, o) => refTaps(mode, o, d.w, d.wo));
  for (let b = 0; b < d.b; b++) {
    for (let oy = 0; oy < d.ho; oy++) {
      for (let ox = 0; ox < d.wo; ox++) {
        for (const [iy, wy] of ty[oy]) {
          for (const [ix, wx] of tx[ox]) {
            const yBase = ((b * d.ho + oy) * d.wo + ox) * d.c;
            const xBase = ((b * d.h + iy) * d.w + ix) * d.c;
            for (let c = 0; c < d.c; c++) {
              fn(yBase + c, xBase + c, wy * wx);
            }
          }
        }
      }
    }
  }
}

export function refResize(mode: RefMode, x: Float64Array, d: RefResizeDims): Float64Array {
  const y = new Float64Array(d.b * d.ho * d.wo * d.c);
  forEachTap(mode, d, (yi, xi, wt) => {
    y[yi] += wt * x[xi];
  });
  return y;
}

export function refResizeBackward(mode: RefMode, gy: Float64Array, d: RefResizeDims): Float64Array {
  const dx = new Float64Array(d.b * d.h * d.w * d.c);
  forEachTap(mode, d, (yi, xi, wt) => {
    dx[xi] += wt * gy[yi];
  });
  return dx;
}
