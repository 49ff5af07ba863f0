/** Folding LoRA into the weights it adapts (merge), on the CPU in float64. */
import type { StateDict } from '../io/pt.js';

/** Folds every `<layer>.lora_A/B.weight` pair into `<layer>.weight`, on the CPU in float64. */
export function foldLora(sd: StateDict, scale: number): StateDict {
  const out: StateDict = new Map();
  for (const [k, v] of sd) if (!k.includes('.lora_')) out.set(k, { shape: v.shape, data: v.data.slice() });
  for (const [k, a] of sd) {
    const m = /^(.*)\.lora_A\.weight$/.exec(k);
    if (!m) continue;
    const b = sd.get(`${m[1]}.lora_B.weight`);
    const w = out.get(`${m[1]}.weight`);
    if (!b || !w) throw new Error(`merge: ${m[1]} has lora_A without lora_B or base weight`);
    const [r, inF] = a.shape;
    const [outF] = b.shape;
    if (w.shape[0] !== outF || w.shape[1] !== inF || b.shape[1] !== r) {
      throw new Error(`merge: ${m[1]}: shapes W [${w.shape}] A [${a.shape}] B [${b.shape}] disagree`);
    }
    for (let o = 0; o < outF; o++) {
      for (let i = 0; i < inF; i++) {
        let s = 0;
        for (let k2 = 0; k2 < r; k2++) s += b.data[o * r + k2] * a.data[k2 * inF + i];
        w.data[o * inF + i] += scale * s;
      }
    }
  }
  return out;
}
