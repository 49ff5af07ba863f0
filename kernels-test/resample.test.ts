/**
 * The CPU resamplers of `src/data/resample.ts` against the plain versions they replaced, bit for
 * bit: the antialiased resize (torch's, shared by Node and the page) was rewritten for speed and
 * must not move a single output bit. Its float64 torch-formula reference test is in
 * web-export.test.ts ('shared resize'); here the oracle is the old code, kept verbatim below.
 */
import { describe, expect, it } from 'vitest';
import {
  type Window, resampleAntialiased, resampleBilinear, resampleNearest,
} from '../src/data/resample.js';
import { nextRng } from './helpers.js';

// ---- The oracle: resample.ts's antialiased resize before the speed-up (commit 9195e53). ----

function oldTaps(start: number, len: number, out: number) {
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

function oldAntialiased(src: Uint8Array | Float32Array, sw: number, sh: number, c: number, win: Window,
  dw: number, dh: number): Float32Array {
  const out = new Float32Array(dw * dh * c);
  const hx = oldTaps(win.x, win.w, dw);
  const vy = oldTaps(win.y, win.h, dh);
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

// ---- The old bilinear and nearest: the same arithmetic, restated without the column tables. ----

function oldBilinear(src: ArrayLike<number>, sw: number, sh: number, c: number, win: Window, dw: number,
  dh: number): Float32Array {
  const out = new Float32Array(dw * dh * c);
  for (let j = 0; j < dh; j++) {
    const sy = Math.min(Math.max(win.y + ((j + 0.5) * win.h) / dh - 0.5, 0), sh - 1);
    const y0 = Math.floor(sy);
    const fy = sy - y0;
    const y1 = Math.min(y0 + 1, sh - 1);
    for (let i = 0; i < dw; i++) {
      const sx = Math.min(Math.max(win.x + ((i + 0.5) * win.w) / dw - 0.5, 0), sw - 1);
      const x0 = Math.floor(sx);
      const a = sx - x0;
      const x1 = Math.min(x0 + 1, sw - 1);
      for (let k = 0; k < c; k++) {
        out[(j * dw + i) * c + k] = src[(y0 * sw + x0) * c + k] * ((1 - a) * (1 - fy)) +
          src[(y0 * sw + x1) * c + k] * (a * (1 - fy)) + src[(y1 * sw + x0) * c + k] * ((1 - a) * fy) +
          src[(y1 * sw + x1) * c + k] * (a * fy);
      }
    }
  }
  return out;
}

function oldNearest(src: ArrayLike<number>, sw: number, sh: number, c: number, win: Window, dw: number,
  dh: number): Float32Array {
  const out = new Float32Array(dw * dh * c);
  for (let j = 0; j < dh; j++) {
    const sy = Math.min(Math.max(Math.round(win.y + ((j + 0.5) * win.h) / dh - 0.5), 0), sh - 1);
    for (let i = 0; i < dw; i++) {
      const sx = Math.min(Math.max(Math.round(win.x + ((i + 0.5) * win.w) / dw - 0.5), 0), sw - 1);
      for (let k = 0; k < c; k++) out[(j * dw + i) * c + k] = src[(sy * sw + sx) * c + k];
    }
  }
  return out;
}

// ---- Cases ----

/** The first element (index, new, old) whose bits differ, or null: NaN payloads included. */
function firstDiff(got: Float32Array, want: Float32Array): string | null {
  if (got.length !== want.length) return `length ${got.length} vs ${want.length}`;
  const a = new Uint32Array(got.buffer, got.byteOffset, got.length);
  const b = new Uint32Array(want.buffer, want.byteOffset, want.length);
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return `element ${i}: ${got[i]} vs ${want[i]}`;
  return null;
}

interface Case {
  sw: number;
  sh: number;
  c: number;
  win: Window;
  dw: number;
  dh: number;
  float: boolean;
}

/** A side in [1, max], small ones (1-pixel edges) as likely as large. */
const side = (r: () => number, max: number) => 1 + Math.floor(r() ** 2 * max);

function randomCase(r: () => number, max: number): Case {
  const sw = side(r, max);
  const sh = side(r, max);
  const c = 1 + Math.floor(r() * 4);
  // Whole image half the time; otherwise a random integer window inside it.
  const whole = r() < 0.5;
  const w = whole ? sw : side(r, sw - 1);
  const h = whole ? sh : side(r, sh - 1);
  const win = { x: Math.floor(r() * (sw - w + 1)), y: Math.floor(r() * (sh - h + 1)), w, h };
  return { sw, sh, c, win, dw: side(r, max), dh: side(r, max), float: r() < 0.4 };
}

/** u8 pixels, or floats with negatives, and (one case in four) NaN and ±Inf sprinkled in. */
function pixels(r: () => number, { sw, sh, c, float }: Case): Uint8Array | Float32Array {
  const n = sw * sh * c;
  if (!float) return Uint8Array.from({ length: n }, () => Math.floor(r() * 256));
  const odd = r() < 0.25;
  return Float32Array.from({ length: n }, () => {
    const u = r();
    if (odd && u < 0.01) return [Number.NaN, Infinity, -Infinity][Math.floor(r() * 3)];
    return (r() - 0.3) * 1000;
  });
}

const label = (k: Case) =>
  `${k.sw}x${k.sh}x${k.c} ${k.float ? 'f32' : 'u8'} window (${k.win.x}, ${k.win.y}, ${k.win.w}x${k.win.h}) -> ${k.dw}x${k.dh}`;

describe('resampleAntialiased: bit-identical to the plain two-pass version it replaced', () => {
  it('random sizes, windows and channel counts (up, down, mixed, 1-pixel edges, NaN/Inf floats)', () => {
    const r = nextRng();
    const fixed: Case[] = [
      // 1-pixel edges each way, and 1x1 to and from larger.
      { sw: 1, sh: 1, c: 3, win: { x: 0, y: 0, w: 1, h: 1 }, dw: 7, dh: 1, float: false },
      { sw: 9, sh: 1, c: 1, win: { x: 0, y: 0, w: 9, h: 1 }, dw: 1, dh: 5, float: false },
      { sw: 1, sh: 13, c: 4, win: { x: 0, y: 2, w: 1, h: 9 }, dw: 3, dh: 1, float: true },
      { sw: 23, sh: 17, c: 3, win: { x: 0, y: 0, w: 23, h: 17 }, dw: 1, dh: 1, float: false },
      // Exact 1:1, x2 up and x1/2 down, non-square.
      { sw: 31, sh: 12, c: 3, win: { x: 0, y: 0, w: 31, h: 12 }, dw: 31, dh: 12, float: false },
      { sw: 31, sh: 12, c: 2, win: { x: 0, y: 0, w: 31, h: 12 }, dw: 62, dh: 24, float: true },
      { sw: 64, sh: 40, c: 3, win: { x: 0, y: 0, w: 64, h: 40 }, dw: 32, dh: 20, float: false },
    ];
    const cases = [...fixed, ...Array.from({ length: 600 }, () => randomCase(r, 70))];
    for (const k of cases) {
      const img = pixels(r, k);
      const got = resampleAntialiased(img, k.sw, k.sh, k.c, k.win, k.dw, k.dh,
        new Float32Array(k.dw * k.dh * k.c).fill(Number.NaN));
      const want = oldAntialiased(img, k.sw, k.sh, k.c, k.win, k.dw, k.dh);
      expect(firstDiff(got, want), label(k)).toBeNull();
      // Not vacuous: a u8 image has finite outputs (the NaN poison was overwritten).
      if (!k.float) expect(got.every(Number.isFinite), label(k)).toBe(true);
    }
  });

  it('photo-like sizes: strong shrink (many taps), enlargement to 1024, windows of a large image', () => {
    const r = nextRng();
    const cases: Case[] = [
      { sw: 1203, sh: 901, c: 3, win: { x: 0, y: 0, w: 1203, h: 901 }, dw: 257, dh: 129, float: false },
      { sw: 1203, sh: 901, c: 3, win: { x: 101, y: 37, w: 1000, h: 801 }, dw: 64, dh: 64, float: false },
      { sw: 177, sh: 96, c: 3, win: { x: 0, y: 0, w: 177, h: 96 }, dw: 1024, dh: 1024, float: false },
      { sw: 640, sh: 3, c: 1, win: { x: 0, y: 0, w: 640, h: 3 }, dw: 5, dh: 300, float: false },
    ];
    for (const k of cases) {
      const img = pixels(r, k);
      const got = resampleAntialiased(img, k.sw, k.sh, k.c, k.win, k.dw, k.dh);
      expect(firstDiff(got, oldAntialiased(img, k.sw, k.sh, k.c, k.win, k.dw, k.dh)), label(k)).toBeNull();
    }
  });
});

describe('resampleBilinear and resampleNearest: unchanged outputs, one argument check', () => {
  it('equal the old code bit for bit (fractional windows for bilinear)', () => {
    const r = nextRng();
    for (let n = 0; n < 300; n++) {
      const k = randomCase(r, 40);
      // Fractional window inside the image (the random resized crop uses whole ones; tiles any).
      const fw = { ...k.win };
      if (r() < 0.5) {
        const w = k.win.w * (0.25 + 0.75 * r());
        const h = k.win.h * (0.25 + 0.75 * r());
        Object.assign(fw, { x: r() * (k.sw - w), y: r() * (k.sh - h), w, h });
      }
      const img = Float32Array.from({ length: k.sw * k.sh * k.c }, () => (r() - 0.5) * 10);
      const b = resampleBilinear(img, k.sw, k.sh, k.c, fw, k.dw, k.dh);
      expect(firstDiff(b, oldBilinear(img, k.sw, k.sh, k.c, fw, k.dw, k.dh)), `bilinear ${label(k)}`).toBeNull();
      const m = resampleNearest(img, k.sw, k.sh, k.c, fw, k.dw, k.dh);
      expect(firstDiff(m, oldNearest(img, k.sw, k.sh, k.c, fw, k.dw, k.dh)), `nearest ${label(k)}`).toBeNull();
    }
  });

  it('bad arguments are refused with the function, the problem and the sizes named', () => {
    const img = new Uint8Array(31 * 19);
    const whole = { x: 0, y: 0, w: 31, h: 19 };
    for (const [fn, f] of [['resampleBilinear', resampleBilinear], ['resampleNearest', resampleNearest],
      ['resampleAntialiased', resampleAntialiased]] as const) {
      expect(() => f(img, 31, 19, 1, { x: 20, y: 0, w: 17, h: 3 }, 4, 4))
        .toThrow(new RegExp(`^${fn}: window \\(20, 0, 17x3\\) is not an? (integer )?window inside the 31x19 image`));
      expect(() => f(img, 31, 19, 1, { x: 0, y: -1, w: 5, h: 3 }, 4, 4)).toThrow(/window \(0, -1, 5x3\)/);
      expect(() => f(img, 31, 19, 1, { x: 0, y: 0, w: 0, h: 3 }, 4, 4)).toThrow(/window \(0, 0, 0x3\)/);
      expect(() => f(img, 31, 19, 1, whole, 0, 4)).toThrow(new RegExp(`^${fn}: output width 0 is not a positive integer`));
      expect(() => f(img, 31, 19, 1, whole, 4, 2.5)).toThrow(/output height 2.5 is not a positive integer/);
      expect(() => f(img, 31, 19, 2, whole, 4, 4)).toThrow(new RegExp(`^${fn}: 31x19x2 source needs 1178 values, got 589`));
      expect(() => f(img, 31, 19, 1, whole, 4, 4, new Float32Array(15)))
        .toThrow(new RegExp(`^${fn}: 4x4x1 output needs 16 values, got 15`));
    }
    // Fractional windows: fine for bilinear and nearest, refused by the antialiased resize.
    const frac = { x: 0.5, y: 1.25, w: 20.5, h: 10 };
    expect(resampleBilinear(img, 31, 19, 1, frac, 4, 4)).toHaveLength(16);
    expect(resampleNearest(img, 31, 19, 1, frac, 4, 4)).toHaveLength(16);
    expect(() => resampleAntialiased(img, 31, 19, 1, frac, 4, 4))
      .toThrow(/resampleAntialiased: window \(0.5, 1.25, 20.5x10\) is not an integer window inside the 31x19 image/);
  });
});
