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

/**
 * Per output index along one axis: the first source index, the tap count and the normalised
 * weights of the taps from there (`taps` slots per index). Antialiased linear (triangle) filter as
 * torch's `interpolate(mode='bilinear', antialias=True, align_corners=False)`: when shrinking, the
 * triangle widens to the scale so every source pixel contributes; when enlarging it is plain
 * bilinear (edges clamped).
 */
function aaTaps(start: number, len: number, out: number): { first: Int32Array; count: Int32Array; taps: number; w: Float64Array } {
  const scale = len / out;
  const support = scale >= 1 ? scale : 1;
  const inv = scale >= 1 ? 1 / scale : 1;
  const taps = Math.ceil(support) * 2 + 1;
  const first = new Int32Array(out);
  const count = new Int32Array(out);
  const w = new Float64Array(out * taps);
  for (let i = 0; i < out; i++) {
    const center = scale * (i + 0.5);
    const lo = Math.max(Math.trunc(center - support + 0.5), 0);
    const hi = Math.min(Math.trunc(center + support + 0.5), len);
    let total = 0;
    for (let j = lo; j < hi; j++) {
      const x = Math.abs((j - center + 0.5) * inv);
      const v = x < 1 ? 1 - x : 0;
      w[i * taps + j - lo] = v;
      total += v;
    }
    if (total > 0) for (let j = 0; j < hi - lo; j++) w[i * taps + j] /= total;
    first[i] = start + lo;
    count[i] = hi - lo;
  }
  return { first, count, taps, w };
}

/**
 * Antialiased bilinear resize of the integer window `win` of `src` ([sh, sw, c], e.g. u8 pixels)
 * to [dh, dw, c] in float: rows first, then columns, sums in float64. The resize of SAM2's
 * preprocessing (torchvision `Resize` on a float tensor), shared by Node and the browser.
 */
export function resampleAntialiased(
  src: Uint8Array | Float32Array,
  sw: number,
  sh: number,
  c: number,
  win: Window,
  dw: number,
  dh: number,
  out = new Float32Array(dw * dh * c),
): Float32Array {
  if (!Number.isInteger(win.x) || !Number.isInteger(win.y) || !Number.isInteger(win.w) ||
    !Number.isInteger(win.h) || win.x < 0 || win.y < 0 || win.w < 1 || win.h < 1 ||
    win.x + win.w > sw || win.y + win.h > sh) {
    throw new Error(`resampleAntialiased: window (${win.x}, ${win.y}, ${win.w}x${win.h}) is not ` +
      `an integer window inside the ${sw}x${sh} image`);
  }
  const hx = aaTaps(win.x, win.w, dw);
  const vy = aaTaps(win.y, win.h, dh);
  // Horizontal pass over the window's rows: [win.h, dw, c].
  const rowLen = dw * c;
  const mid = new Float64Array(win.h * rowLen);
  const acc = new Float64Array(c);
  for (let j = 0; j < win.h; j++) {
    const rowBase = (win.y + j) * sw * c;
    for (let i = 0; i < dw; i++) {
      const n = hx.count[i];
      const wo = i * hx.taps;
      let p = rowBase + hx.first[i] * c;
      const d = j * rowLen + i * c;
      if (c === 3) {
        // RGB, the common case, with scalar accumulators (several times faster than `acc`).
        let s0 = 0;
        let s1 = 0;
        let s2 = 0;
        for (let t = 0; t < n; t++, p += 3) {
          const w = hx.w[wo + t];
          s0 += w * src[p];
          s1 += w * src[p + 1];
          s2 += w * src[p + 2];
        }
        mid[d] = s0;
        mid[d + 1] = s1;
        mid[d + 2] = s2;
        continue;
      }
      acc.fill(0);
      for (let t = 0; t < n; t++, p += c) {
        const w = hx.w[wo + t];
        for (let k = 0; k < c; k++) acc[k] += w * src[p + k];
      }
      for (let k = 0; k < c; k++) mid[d + k] = acc[k];
    }
  }
  // Vertical pass: [dh, dw, c], one output row as a weighted sum of window rows.
  const row = new Float64Array(rowLen);
  for (let j = 0; j < dh; j++) {
    const y0 = vy.first[j] - win.y;
    const n = vy.count[j];
    const wo = j * vy.taps;
    row.fill(0);
    for (let t = 0; t < n; t++) {
      const w = vy.w[wo + t];
      const m = (y0 + t) * rowLen;
      for (let i = 0; i < rowLen; i++) row[i] += w * mid[m + i];
    }
    out.set(row, j * rowLen);
  }
  return out;
}
