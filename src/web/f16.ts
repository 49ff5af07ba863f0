/**
 * The site's f16 weights: rounding (nearest, ties to even) and widening are util/f16.ts's, shared
 * with the engine's f16 tensors; widening a whole weight file goes through a 65536-entry table.
 */
import { f16Bits, f16Value, toF16Bits } from '../util/f16.js';

export { f16Bits, f16Value };

export function toF16(src: Float32Array): Uint16Array {
  return toF16Bits(src);
}

export function fromF16(src: Uint16Array): Float32Array {
  const t = f16Table();
  const out = new Float32Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = t[src[i]];
  return out;
}

let table: Float32Array | null = null;
function f16Table(): Float32Array {
  if (!table) {
    table = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) table[h] = f16Value(h);
  }
  return table;
}
