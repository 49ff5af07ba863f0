/**
 * Float64 reference of the composite training test: two Hiera-style blocks (layer norm, windowed
 * or global multi-head attention with a LoRA qkv, projection, residual, layer norm, GELU MLP,
 * residual) on a [B, H, W, C] token grid, a 1-channel linear head, Dice + BCE loss, its backward
 * written out by hand from the per-op references, and torch's AdamW and clip_grad_norm_.
 * Parameters are named like SAM2's state dict (`blocks.0.attn.qkv.weight`, `...lora_A`).
 */
import {
  attentionRef, attentionRefBackward, packQkv, splitQkv, windowPartitionRef,
  windowUnpartitionRef, type WinShape,
} from './attention.js';
import { gelu64, geluGrad64 } from './elementwise.js';
import { bceRef, bceRefBackward, diceRef, diceRefBackward } from './loss.js';
import {
  type LoraDims, refDropoutMask, refLinear, refLinearBackward, refLora, refLoraBackward,
} from './matmul.js';
import { layerNormRef, layerNormRefBackward } from './norm.js';

export interface CompositeConfig {
  B: number;
  H: number;
  W: number;
  C: number;
  heads: number;
  mlp: number;
  /** Window size per block; 0 = global attention. */
  windows: number[];
  rank: number;
  /** LoRA alpha / r. */
  loraScale: number;
  /** LoRA dropout probability (training mode). */
  dropout: number;
  /** Layers that carry a LoRA adapter, e.g. `blocks.0.attn.qkv`, `blocks.1.mlp.fc1`. */
  lora: string[];
  lnEps: number;
  diceSmooth: number;
}

export type Params = Record<string, Float64Array>;

/** Every parameter's shape, in a fixed order (frozen base weights, LoRA factors, head). */
export function compositeShapes(cfg: CompositeConfig): Map<string, number[]> {
  const { C, mlp, rank } = cfg;
  const s = new Map<string, number[]>();
  const lin = (name: string, out: number, inF: number) => {
    s.set(`${name}.weight`, [out, inF]);
    s.set(`${name}.bias`, [out]);
    if (cfg.lora.includes(name)) {
      s.set(`${name}.lora_A`, [rank, inF]);
      s.set(`${name}.lora_B`, [out, rank]);
    }
  };
  cfg.windows.forEach((_, i) => {
    const p = `blocks.${i}`;
    s.set(`${p}.norm1.weight`, [C]);
    s.set(`${p}.norm1.bias`, [C]);
    lin(`${p}.attn.qkv`, 3 * C, C);
    lin(`${p}.attn.proj`, C, C);
    s.set(`${p}.norm2.weight`, [C]);
    s.set(`${p}.norm2.bias`, [C]);
    lin(`${p}.mlp.fc1`, mlp, C);
    lin(`${p}.mlp.fc2`, C, mlp);
  });
  s.set('head.weight', [1, C]);
  s.set('head.bias', [1]);
  return s;
}

/** The trainable parameters: LoRA factors and the head (the base stays frozen). */
export function isTrainable(name: string): boolean {
  return name.includes('.lora_') || name.startsWith('head.');
}

/** Dropout seed of one LoRA layer at one step (any fixed injective-enough mix will do). */
export function loraSeed(step: number, layer: number): number {
  return (0x51ed27 + step * 7919 + layer * 104729) >>> 0;
}

/** A linear layer, with its LoRA branch when it has one; keeps what its backward needs. */
interface LinCache {
  name: string;
  x: Float64Array;
  rows: number;
  inF: number;
  outF: number;
  mask: Float64Array | null;
}

function linFwd(
  cfg: CompositeConfig, p: Params, name: string, x: Float64Array, rows: number, inF: number,
  outF: number, seed: number, caches: LinCache[],
): Float64Array {
  const w = p[`${name}.weight`];
  const b = p[`${name}.bias`];
  if (!cfg.lora.includes(name)) {
    caches.push({ name, x, rows, inF, outF, mask: null });
    return refLinear(x, w, b, rows, inF, outF);
  }
  const d: LoraDims = { rows, inF, outF, rank: cfg.rank, scale: cfg.loraScale };
  const mask = refDropoutMask(rows * inF, cfg.dropout, seed);
  caches.push({ name, x, rows, inF, outF, mask });
  return refLora(x, w, b, p[`${name}.lora_A`], p[`${name}.lora_B`], mask, d);
}

/** Returns dx and adds the trainable factors' gradients into `grads`. */
function linBwd(cfg: CompositeConfig, p: Params, c: LinCache, g: Float64Array,
  grads: Params): Float64Array {
  const w = p[`${c.name}.weight`];
  if (!c.mask) return refLinearBackward(c.x, w, g, c.rows, c.inF, c.outF).dx;
  const d: LoraDims = {
    rows: c.rows, inF: c.inF, outF: c.outF, rank: cfg.rank, scale: cfg.loraScale,
  };
  const r = refLoraBackward(c.x, w, p[`${c.name}.lora_A`], p[`${c.name}.lora_B`], c.mask, g, d);
  accumulate(grads, `${c.name}.lora_A`, r.da);
  accumulate(grads, `${c.name}.lora_B`, r.dB);
  return r.dx;
}

function accumulate(grads: Params, name: string, g: Float64Array): void {
  const prev = grads[name];
  if (!prev) grads[name] = g.slice();
  else for (let i = 0; i < g.length; i++) prev[i] += g[i];
}

const addTo = (a: Float64Array, b: Float64Array) => a.map((v, i) => v + b[i]);

/**
 * Loss and gradients of every trainable parameter for one step. `step` picks the dropout masks
 * (the GPU side passes loraSeed(step, layer) to the layer with LoRA index `layer`).
 * Shapes: x [B, H, W, C], target [B, H, W, 1] (0/1).
 */
export function compositeLossAndGrads(
  cfg: CompositeConfig, p: Params, x: Float64Array, target: Float64Array, step: number,
): { loss: number; logits: Float64Array; grads: Params } {
  const { B, H, W, C, heads } = cfg;
  const hd = C / heads;
  const tokens = B * H * W;
  const lins: LinCache[] = [];
  const seed = (name: string) => loraSeed(step, cfg.lora.indexOf(name));
  interface BlockCache {
    x: Float64Array;
    win: WinShape | null;
    rows: number;
    n: number;
    qkv: Float64Array[];
    x1: Float64Array;
    h: Float64Array;
  }
  const blocks: BlockCache[] = [];
  let cur = x;
  cfg.windows.forEach((ws, i) => {
    const pre = `blocks.${i}`;
    const n1 = layerNormRef(cur, p[`${pre}.norm1.weight`], p[`${pre}.norm1.bias`], C, cfg.lnEps);
    const win: WinShape | null = ws > 0 ? { B, H, W, C, ws } : null;
    // Windowed: [B * windows, ws * ws, C] with zero padding tokens taking part (as SAM2).
    const xa = win ? windowPartitionRef(win, n1) : n1;
    const rows = xa.length / C;
    const n = win ? ws * ws : H * W;
    const qkv = linFwd(cfg, p, `${pre}.attn.qkv`, xa, rows, C, 3 * C, seed(`${pre}.attn.qkv`),
      lins);
    const parts = splitQkv(qkv, rows, C);
    const att = attentionRef({ B: rows / n, heads, hd, Nq: n, Nk: n }, parts[0], parts[1],
      parts[2]);
    let proj = linFwd(cfg, p, `${pre}.attn.proj`, att, rows, C, C, seed(`${pre}.attn.proj`),
      lins);
    if (win) proj = windowUnpartitionRef(win, proj);
    const x1 = addTo(cur, proj);
    const n2 = layerNormRef(x1, p[`${pre}.norm2.weight`], p[`${pre}.norm2.bias`], C, cfg.lnEps);
    const h = linFwd(cfg, p, `${pre}.mlp.fc1`, n2, tokens, C, cfg.mlp, seed(`${pre}.mlp.fc1`),
      lins);
    const a = h.map(gelu64);
    const o = linFwd(cfg, p, `${pre}.mlp.fc2`, a, tokens, cfg.mlp, C, seed(`${pre}.mlp.fc2`),
      lins);
    blocks.push({ x: cur, win, rows, n, qkv: parts, x1, h });
    cur = addTo(x1, o);
  });
  const logits = linFwd(cfg, p, 'head', cur, tokens, C, 1, 0, lins);
  const loss = diceRef(logits, target, B, cfg.diceSmooth)[0] + bceRef(logits, target)[0];

  // Backward, in reverse order of the forward above; `lins` is popped as a stack.
  const grads: Params = {};
  const head = lins.pop()!;
  const gLogits = addTo(diceRefBackward(logits, target, B, cfg.diceSmooth, 1),
    bceRefBackward(logits, target, 1));
  const hb = refLinearBackward(head.x, p['head.weight'], gLogits, tokens, C, 1);
  grads['head.weight'] = hb.dw;
  grads['head.bias'] = hb.db;
  let g = hb.dx;
  for (let i = cfg.windows.length - 1; i >= 0; i--) {
    const pre = `blocks.${i}`;
    const bc = blocks[i];
    // x2 = x1 + fc2(gelu(fc1(norm2(x1)))).
    const ga = linBwd(cfg, p, lins.pop()!, g, grads);
    const gh = ga.map((v, j) => v * geluGrad64(bc.h[j]));
    const gn2 = linBwd(cfg, p, lins.pop()!, gh, grads);
    const gx1 = addTo(g, layerNormRefBackward(bc.x1, p[`${pre}.norm2.weight`], gn2, C,
      cfg.lnEps)[0]);
    // x1 = x + unpartition(proj(attention(qkv(partition(norm1(x)))))).
    const gproj = bc.win ? windowPartitionRef(bc.win, gx1) : gx1;
    const gatt = linBwd(cfg, p, lins.pop()!, gproj, grads);
    const [q, k, v] = bc.qkv;
    const shape = { B: bc.rows / bc.n, heads, hd, Nq: bc.n, Nk: bc.n };
    const gqkv = packQkv(attentionRefBackward(shape, q, k, v, gatt), bc.rows, C);
    const gxa = linBwd(cfg, p, lins.pop()!, gqkv, grads);
    const gn1 = bc.win ? windowUnpartitionRef(bc.win, gxa) : gxa;
    g = addTo(gx1, layerNormRefBackward(bc.x, p[`${pre}.norm1.weight`], gn1, C, cfg.lnEps)[0]);
  }
  return { loss, logits, grads };
}

export interface AdamWHyper {
  lr: number;
  weightDecay: number;
  betas: [number, number];
  eps: number;
}

export interface AdamWSlot {
  m: Float64Array;
  v: Float64Array;
  t: number;
}

/** torch.optim.AdamW (amsgrad off): one in-place update of p with gradient g. */
export function adamw64(p: Float64Array, g: Float64Array, s: AdamWSlot, h: AdamWHyper): void {
  const [b1, b2] = h.betas;
  s.t++;
  const bc1 = 1 - b1 ** s.t;
  const bc2 = 1 - b2 ** s.t;
  for (let i = 0; i < p.length; i++) {
    p[i] *= 1 - h.lr * h.weightDecay;
    s.m[i] = b1 * s.m[i] + (1 - b1) * g[i];
    s.v[i] = b2 * s.v[i] + (1 - b2) * g[i] * g[i];
    p[i] -= ((h.lr / bc1) * s.m[i]) / (Math.sqrt(s.v[i]) / Math.sqrt(bc2) + h.eps);
  }
}

/**
 * torch.nn.utils.clip_grad_norm_ (L2) in place: every gradient is scaled by
 * min(1, maxNorm / (norm + 1e-6)). Returns the pre-clipping norm.
 */
export function clipGradNorm64(grads: Float64Array[], maxNorm: number): number {
  let sq = 0;
  for (const g of grads) for (const v of g) sq += v * v;
  const norm = Math.sqrt(sq);
  const coef = Math.min(1, maxNorm / (norm + 1e-6));
  for (const g of grads) for (let i = 0; i < g.length; i++) g[i] *= coef;
  return norm;
}
