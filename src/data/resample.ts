/** Resampling of channels-last float maps, pixel centres aligned (align_corners=False). */

/** A source window in pixels (may be fractional). */
export interface Window {
  x: number;
  y: number;
  w: number;
  h: number;
}

/**
 * Bilinear resample of window `win` of `src` ([sh, sw, c]) to [dh, dw, c]. Destination pixel
 * centre i maps to win.x + (i + 0.5) * win.w / dw - 0.5, clamped to the source. No antialiasing:
 * meant for upsampling and mild downsampling (crops, tile probabilities).
 */
export function resampleBilinear(
  src: ArrayLike<number>,
  sw: number,
  sh: number,
  c: number,
  win: Window,
  dw: number,
  dh: number,
  out = new Float32Array(dw * dh * c),
): Float32Array {
  // Per destination column: the two source element offsets (already times c) and the weight.
  const o0 = new Int32Array(dw);
  const o1 = new Int32Array(dw);
  const fx = new Float64Array(dw);
  for (let i = 0; i < dw; i++) {
    const s = Math.min(Math.max(win.x + ((i + 0.5) * win.w) / dw - 0.5, 0), sw - 1);
    const x0 = Math.floor(s);
    o0[i] = x0 * c;
    o1[i] = Math.min(x0 + 1, sw - 1) * c;
    fx[i] = s - x0;
  }
  for (let j = 0; j < dh; j++) {
    const s = Math.min(Math.max(win.y + ((j + 0.5) * win.h) / dh - 0.5, 0), sh - 1);
    const y0 = Math.floor(s);
    const fy = s - y0;
    const r0 = y0 * sw * c;
    const r1 = Math.min(y0 + 1, sh - 1) * sw * c;
    let d = j * dw * c;
    for (let i = 0; i < dw; i++) {
      const a = fx[i];
      const w00 = (1 - a) * (1 - fy);
      const w01 = a * (1 - fy);
      const w10 = (1 - a) * fy;
      const w11 = a * fy;
      const p00 = r0 + o0[i];
      const p01 = r0 + o1[i];
      const p10 = r1 + o0[i];
      const p11 = r1 + o1[i];
      for (let k = 0; k < c; k++, d++) {
        out[d] = src[p00 + k] * w00 + src[p01 + k] * w01 + src[p10 + k] * w10 + src[p11 + k] * w11;
      }
    }
  }
  return out;
}

/** Nearest resample of a window, with the same centre mapping as resampleBilinear (round). */
export function resampleNearest(
  src: ArrayLike<number>,
  sw: number,
  sh: number,
  c: number,
  win: Window,
  dw: number,
  dh: number,
  out = new Float32Array(dw * dh * c),
): Float32Array {
  const xs = new Int32Array(dw);
  for (let i = 0; i < dw; i++) {
    const s = win.x + ((i + 0.5) * win.w) / dw - 0.5;
    xs[i] = Math.min(Math.max(Math.round(s), 0), sw - 1);
  }
  for (let j = 0; j < dh; j++) {
    const s = win.y + ((j + 0.5) * win.h) / dh - 0.5;
    const sy = Math.min(Math.max(Math.round(s), 0), sh - 1);
    for (let i = 0; i < dw; i++) {
      for (let k = 0; k < c; k++) out[(j * dw + i) * c + k] = src[(sy * sw + xs[i]) * c + k];
    }
  }
  return out;
}

/** Whole-map bilinear resize of [sh, sw, c] to [dh, dw, c]. */
export function resizeBilinear(
  src: ArrayLike<number>,
  sw: number,
  sh: number,
  c: number,
  dw: number,
  dh: number,
): Float32Array {
  return resampleBilinear(src, sw, sh, c, { x: 0, y: 0, w: sw, h: sh }, dw, dh);
}
