/**
 * IEEE 754 binary16 on the CPU (this Node has no Float16Array): uploads round to f16 here and
 * downloads widen from it. Rounding is to nearest, ties to even, straight from the float64 value
 * (no double rounding through f32); past the largest finite half (65504, ties included: 65520
 * rounds up) the result is ±Inf; subnormals are kept; NaN stays NaN (quiet, sign kept).
 */

/** The binary16 bits of x, rounded to nearest even. */
export function f16Bits(x: number): number {
  if (Number.isNaN(x)) return 0x7e00;
  const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
  const a = Math.abs(x);
  if (a >= 65520) return sign | 0x7c00;
  if (a < 2 ** -14) {
    // Subnormal (or zero): units of 2^-24; rounding up to 1024 lands on the smallest normal.
    return sign | roundEven(a * 2 ** 24);
  }
  let e = Math.floor(Math.log2(a));
  // log2 may be off by one next to a power of two: fix e so that 2^e <= a < 2^(e+1).
  if (2 ** e > a) e--;
  else if (2 ** (e + 1) <= a) e++;
  let m = roundEven((a / 2 ** e) * 1024); // 1024 .. 2048, exact scaling by a power of two
  if (m === 2048) {
    e++;
    m = 1024;
  }
  return sign | ((e + 15) << 10) | (m - 1024);
}

function roundEven(v: number): number {
  const f = Math.floor(v);
  const d = v - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/** The value of binary16 bits h. */
export function f16Value(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return sign * m * 2 ** -24;
  if (e === 31) return m ? NaN : sign * Infinity;
  return sign * (1024 + m) * 2 ** (e - 25);
}

/** Rounds every value to f16 and packs the bits. */
export function toF16Bits(data: ArrayLike<number>): Uint16Array {
  const out = new Uint16Array(data.length);
  for (let i = 0; i < data.length; i++) out[i] = f16Bits(data[i]);
  return out;
}

/** Widens packed f16 bits to f32 (exact: every half is a float). */
export function fromF16Bits(bits: Uint16Array): Float32Array {
  const out = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) out[i] = f16Value(bits[i]);
  return out;
}

/** x rounded to the nearest f16, as a number (what an f16 tensor holds for x). */
export function roundF16(x: number): number {
  return f16Value(f16Bits(x));
}

/** Rounds an array through f16 (test inputs, so a reference sees what the kernel sees). */
export function roundArrayF16(data: ArrayLike<number>): Float32Array {
  const out = new Float32Array(data.length);
  for (let i = 0; i < data.length; i++) out[i] = roundF16(data[i]);
  return out;
}

/** Unit roundoff of f16 (2^-11): the relative error bound of one rounding to nearest. */
export const F16_EPS = 2 ** -11;

/** Bytes a tensor of n elements of `dtype` stores (rounded up to a multiple of 4). */
export function storageBytes(n: number, dtype: 'f32' | 'f16'): number {
  return dtype === 'f16' ? Math.ceil(n / 2) * 4 : n * 4;
}
