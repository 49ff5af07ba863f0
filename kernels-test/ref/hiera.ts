/**
 * Float64 CPU reference of the SAM2.1 image encoder (Hiera trunk + FPN neck), batch 1, written
 * from the official definitions in facebookresearch/sam2 (read for facts, not copied):
 * - sam2/modeling/backbones/hieradet.py: Hiera (.forward, ._get_pos_embed), MultiScaleBlock,
 *   MultiScaleAttention, do_pool;
 * - sam2/modeling/backbones/utils.py: PatchEmbed, window_partition, window_unpartition;
 * - sam2/modeling/backbones/image_encoder.py: ImageEncoder (scalp), FpnNeck.forward;
 * - sam2/modeling/sam2_utils.py: MLP (Linear, act, Linear; act = nn.GELU, exact erf form).
 * Non-obvious facts are noted where they are used. The neck's sine position encoding has no
 * parameters and does not change the features, so it is not computed.
 */
import {
  type BlockPlan,
  type EncoderConfig,
  blockPlan,
  featureShapes,
} from '../../src/model/config.js';
import { encoderKeys } from '../../src/model/keys.js';
import {
  type Arr,
  attention64,
  bicubicResizeNchw64,
  chwToHwc64,
  conv2dNchw64,
  geluInPlace64,
  hwcToChw64,
  layerNorm64,
  linear64,
  maxPoolNhwc64,
  nearestUp2Nchw64,
  normal64,
  rng64,
  windowPartition64,
  windowUnpartition64,
} from './tensor64.js';

export interface WeightTensor {
  shape: number[];
  data: Float64Array | Float32Array;
}
/** Official key names without the `image_encoder.` prefix (see src/model/keys.ts). */
export type WeightMap = Map<string, WeightTensor>;

export interface HieraRefOptions {
  /** Also return every block's output (NHWC [h, w, c]), for localising a GPU mismatch. */
  keepBlocks?: boolean;
}

export interface HieraRefOutput {
  /** Trunk features per stage, finest first, NCHW [1, C, H, W] (Hiera.forward's list). */
  trunk: Float64Array[];
  /** FPN features after the scalp, finest first (strides 4, 8, 16), NCHW [1, 256, H, W]. */
  fpn: Float64Array[];
  shapes: { trunk: number[][]; fpn: number[][] };
  /** Patch embedding + position embedding, NHWC [tokens, tokens, embedDim]. */
  embedded: Float64Array;
  /** With keepBlocks: block i's output, NHWC, and its [h, w, c]. */
  blocks?: { data: Float64Array; shape: [number, number, number] }[];
}

/** A weight by official name, checked against the shape the config implies. */
function param(weights: WeightMap, keys: Map<string, number[]>, name: string): Arr {
  const want = keys.get(name);
  const t = weights.get(name);
  if (!want) throw new Error(`hieraReference: ${name} is not an image-encoder key of this config`);
  if (!t) throw new Error(`hieraReference: missing weight ${name} (shape [${want}])`);
  const n = want.reduce((a, b) => a * b, 1);
  if (t.shape.join(',') !== want.join(',') || t.data.length !== n) {
    throw new Error(`hieraReference: ${name} expected shape [${want}], got [${t.shape}] ` +
      `with ${t.data.length} values`);
  }
  return t.data;
}

/**
 * PatchEmbed: Conv2d(3, C, 7, stride 4, padding 3) on the NCHW image, then permute to NHWC.
 * Shapes: input [1, 3, size, size] -> [g, g, C], g = floor((size - 1) / 4) + 1.
 */
export function patchEmbedRef(
  enc: EncoderConfig,
  weights: WeightMap,
  input: Arr,
  size: number,
): { x: Float64Array; g: number } {
  const cfg = enc.trunk;
  if (input.length !== cfg.inChans * size * size) {
    throw new Error(`patchEmbedRef: input expected [1, ${cfg.inChans}, ${size}, ${size}] ` +
      `(${cfg.inChans * size * size} values), got ${input.length}`);
  }
  const keys = encoderKeys(enc);
  const w = param(weights, keys, 'trunk.patch_embed.proj.weight');
  const b = param(weights, keys, 'trunk.patch_embed.proj.bias');
  const { y, ho } = conv2dNchw64(input, cfg.inChans, size, size, w, b, cfg.embedDim,
    cfg.patchKernel, cfg.patchStride, cfg.patchPadding);
  return { x: chwToHwc64(y, cfg.embedDim, ho, ho), g: ho };
}

/**
 * Hiera._get_pos_embed: F.interpolate(pos_embed, size=(h, w), mode='bicubic') (align_corners
 * defaults to False; PyTorch's cubic coefficient A = -0.75) plus pos_embed_window tiled
 * floor(h / ws0) x floor(w / ws0) times, so (h, w) must be multiples of windowSpec[0]:
 * element (y, x) gets window[y % ws0][x % ws0].
 * Shapes: -> [h, w, C] (NHWC, as added to the tokens).
 */
export function posEmbedRef(enc: EncoderConfig, weights: WeightMap, h: number, w: number) {
  const cfg = enc.trunk;
  const keys = encoderKeys(enc);
  const c = cfg.embedDim;
  const [bh, bw] = cfg.windowPosEmbedBkgSpatialSize;
  const ws = cfg.windowSpec[0];
  if (h % ws !== 0 || w % ws !== 0) {
    throw new Error(`posEmbedRef: grid ${h}x${w} is not a multiple of the ${ws}x${ws} window ` +
      `embedding (SAM2's tile would not cover it)`);
  }
  const bkg = bicubicResizeNchw64(param(weights, keys, 'trunk.pos_embed'), c, bh, bw, h, w);
  const win = param(weights, keys, 'trunk.pos_embed_window');
  for (let ch = 0; ch < c; ch++) {
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        bkg[(ch * h + y) * w + x] += win[(ch * ws + (y % ws)) * ws + (x % ws)];
      }
    }
  }
  return chwToHwc64(bkg, c, h, w);
}

/**
 * One MultiScaleBlock.forward on an NHWC grid.
 * Facts (hieradet.py, MultiScaleBlock.forward / MultiScaleAttention.forward):
 * - the dim-changing shortcut is proj(norm1(x)), i.e. taken from the NORMALISED input, then
 *   max-pooled over the full unpadded grid (MaxPool2d ceil_mode=False, so odd sides floor);
 * - windows are cut from norm1(x) with zero padding and no attention mask: padded tokens are
 *   zeros, so their k/v are the qkv biases, and they take part in the softmax;
 * - qkv = Linear(dim, 3 * dimOut) reshaped (..., 3, heads, headDim): q, k, v are the channel
 *   thirds, head h the h-th headDim slice of each;
 * - q pooling runs per window on the window's ws x ws grid (padded tokens included), before
 *   attention; attention is SDPA with scale 1/sqrt(headDim);
 * - after pooling the windows are unpartitioned with window ws // qStride[0] onto the shortcut's
 *   grid padded up to a multiple of it, then cropped;
 * - x = shortcut + attn; x = x + mlp(norm2(x)) (no layer scale; drop path is identity at
 *   inference).
 * Shapes: x [h, w, dim] -> [h', w', dimOut] (h' = floor(h / qStride) when pooling).
 */
export function blockRef(
  enc: EncoderConfig,
  weights: WeightMap,
  b: BlockPlan,
  x: Float64Array,
  h: number,
  w: number,
  keys: Map<string, number[]> = encoderKeys(enc),
): { x: Float64Array; h: number; w: number } {
  const eps = enc.trunk.layerNormEps;
  const p = (s: string) => param(weights, keys, `trunk.blocks.${b.index}.${s}`);
  const { dim, dimOut, heads, headDim } = b;
  if (x.length !== h * w * dim) {
    throw new Error(`blockRef ${b.index}: expected [${h}, ${w}, ${dim}], got ${x.length} values`);
  }
  const xn = layerNorm64(x, h * w, dim, p('norm1.weight'), p('norm1.bias'), eps);

  let shortcut: Float64Array = x;
  let ho = h;
  let wo = w;
  if (b.hasProj) shortcut = linear64(xn, h * w, dim, p('proj.weight'), p('proj.bias'), dimOut);
  if (b.qStride) {
    // do_pool(proj(x), pool): the shortcut is pooled whether or not it was projected.
    const r = maxPoolNhwc64(shortcut, 1, h, w, dimOut, b.qStride[0], b.qStride[1]);
    shortcut = r.y;
    ho = r.ho;
    wo = r.wo;
  } else if (dim !== dimOut) {
    throw new Error(`blockRef ${b.index}: width changes without pooling (not in SAM2 configs)`);
  }

  // Attention "batches": ws x ws windows of the padded grid, or the whole grid when global.
  const ws = b.windowSize;
  let seq: Float64Array;
  let nw: number;
  let gh: number;
  let gw: number;
  if (ws > 0) {
    const part = windowPartition64(xn, 1, h, w, dim, ws);
    seq = part.y;
    nw = part.nw;
    gh = ws;
    gw = ws;
  } else {
    seq = xn;
    nw = 1;
    gh = h;
    gw = w;
  }
  const nk = gh * gw;
  const qkv = linear64(seq, nw * nk, dim, p('attn.qkv.weight'), p('attn.qkv.bias'), 3 * dimOut);

  // Queries: the first third of qkv, optionally max-pooled on each window's own grid.
  let q: Float64Array = qkv;
  let qOff = 0;
  let qStrideRow = 3 * dimOut;
  let qh = gh;
  let qw = gw;
  if (b.qStride) {
    const qs = new Float64Array(nw * nk * dimOut);
    for (let t = 0; t < nw * nk; t++) {
      for (let c = 0; c < dimOut; c++) qs[t * dimOut + c] = qkv[t * 3 * dimOut + c];
    }
    const r = maxPoolNhwc64(qs, nw, gh, gw, dimOut, b.qStride[0], b.qStride[1]);
    q = r.y;
    qh = r.ho;
    qw = r.wo;
    qStrideRow = dimOut;
  }
  const nq = qh * qw;
  const att = new Float64Array(nw * nq * dimOut);
  for (let win = 0; win < nw; win++) {
    if (b.qStride) qOff = win * nq * dimOut;
    else qOff = win * nk * 3 * dimOut;
    const kvBase = win * nk * 3 * dimOut;
    attention64(q, qOff, qStrideRow, nq, qkv, kvBase + dimOut, 3 * dimOut, qkv,
      kvBase + 2 * dimOut, 3 * dimOut, nk, heads, headDim, att, win * nq * dimOut, dimOut);
  }
  const proj = linear64(att, nw * nq, dimOut, p('attn.proj.weight'), p('attn.proj.bias'), dimOut);

  let y: Float64Array;
  if (ws > 0) {
    // Official: window = ws // qStride[0] after pooling, padded grid recomputed from the
    // shortcut's (pooled) size.
    const wsOut = b.qStride ? Math.floor(ws / b.qStride[0]) : ws;
    const hp = Math.ceil(ho / wsOut) * wsOut;
    const wp = Math.ceil(wo / wsOut) * wsOut;
    if (qh !== wsOut || qw !== wsOut || (hp / wsOut) * (wp / wsOut) !== nw) {
      throw new Error(`blockRef ${b.index}: pooled windows ${qh}x${qw} x${nw} do not tile ` +
        `${hp}x${wp} with window ${wsOut}`);
    }
    y = windowUnpartition64(proj, 1, hp, wp, ho, wo, dimOut, wsOut);
  } else {
    y = proj;
  }
  for (let i = 0; i < y.length; i++) y[i] += shortcut[i];

  const n2 = layerNorm64(y, ho * wo, dimOut, p('norm2.weight'), p('norm2.bias'), eps);
  const hid = geluInPlace64(
    linear64(n2, ho * wo, dimOut, p('mlp.layers.0.weight'), p('mlp.layers.0.bias'), b.mlpHidden),
  );
  const m = linear64(hid, ho * wo, b.mlpHidden, p('mlp.layers.1.weight'), p('mlp.layers.1.bias'),
    dimOut);
  for (let i = 0; i < y.length; i++) y[i] += m[i];
  return { x: y, h: ho, w: wo };
}

/**
 * FpnNeck.forward then ImageEncoder's scalp. Facts (image_encoder.py):
 * - convs[n - i] (n = levels - 1) is applied to trunk level i: convs.0 is the coarsest;
 * - levels run coarsest to finest; a level in fpnTopDownLevels that has a coarser result adds
 *   F.interpolate(prev, scale_factor=2, mode='nearest') of it; otherwise it is its lateral
 *   alone, and either way it becomes `prev` for the next finer level;
 * - fuse 'sum' (no averaging); scalp = 1 drops the coarsest output.
 * Shapes: trunk NHWC levels (finest first) [h_i, h_i, C_i] -> NCHW [1, dModel, h_i, h_i] for the
 * kept levels.
 */
export function fpnNeckRef(
  enc: EncoderConfig,
  weights: WeightMap,
  levels: { x: Float64Array; h: number; w: number; c: number }[],
): Float64Array[] {
  const neck = enc.neck;
  const keys = encoderKeys(enc);
  if (neck.kernelSize !== 1) throw new Error(`fpnNeckRef: kernel ${neck.kernelSize} unsupported`);
  const n = levels.length - 1;
  if (n + 1 !== neck.backboneChannelList.length) {
    throw new Error(`fpnNeckRef: ${levels.length} levels, neck expects ` +
      `${neck.backboneChannelList.length}`);
  }
  const d = neck.dModel;
  const out: Float64Array[] = new Array(levels.length);
  let prev: Float64Array | null = null;
  let prevH = 0;
  let prevW = 0;
  for (let i = n; i >= 0; i--) {
    const { x, h, w, c } = levels[i];
    const ci = n - i;
    // A 1x1 conv on NHWC is a Linear with the [Cout, Cin, 1, 1] weight read as [Cout, Cin].
    const lat = hwcToChw64(
      linear64(x, h * w, c, param(weights, keys, `neck.convs.${ci}.conv.weight`),
        param(weights, keys, `neck.convs.${ci}.conv.bias`), d),
      h, w, d,
    );
    if (neck.fpnTopDownLevels.includes(i) && prev) {
      if (2 * prevH !== h || 2 * prevW !== w) {
        throw new Error(`fpnNeckRef: level ${i} is ${h}x${w}, upsampled level ${i + 1} is ` +
          `${2 * prevH}x${2 * prevW}`);
      }
      const up = nearestUp2Nchw64(prev, d, prevH, prevW);
      for (let k = 0; k < lat.length; k++) lat[k] += up[k];
    }
    prev = lat;
    prevH = h;
    prevW = w;
    out[i] = lat;
  }
  return out.slice(0, out.length - enc.scalp);
}

/**
 * The whole image encoder: patch embed, position embedding, every block, the stage-end features
 * (trunk, NCHW) and the FPN outputs after the scalp.
 * Shapes: input [1, 3, size, size] (NCHW, already normalised) -> trunk [1, C_i, g_i, g_i]
 * (i = 0..3), fpn [1, 256, g_i, g_i] (i = 0..2), g_0 = tokens = floor((size - 1) / 4) + 1.
 */
export function hieraReference(
  enc: EncoderConfig,
  weights: WeightMap,
  input: Float64Array | Float32Array,
  size: number,
  opts: HieraRefOptions = {},
): HieraRefOutput {
  const shapes = featureShapes(enc, size);
  const keys = encoderKeys(enc);
  const pe = patchEmbedRef(enc, weights, input, size);
  const pos = posEmbedRef(enc, weights, pe.g, pe.g);
  const embedded = pe.x;
  for (let i = 0; i < embedded.length; i++) embedded[i] += pos[i];

  let x = embedded;
  let h = pe.g;
  let w = pe.g;
  const levels: { x: Float64Array; h: number; w: number; c: number }[] = [];
  const blocks: { data: Float64Array; shape: [number, number, number] }[] = [];
  for (const b of blockPlan(enc.trunk)) {
    const r = blockRef(enc, weights, b, x, h, w, keys);
    x = r.x;
    h = r.h;
    w = r.w;
    if (opts.keepBlocks) blocks.push({ data: x, shape: [h, w, b.dimOut] });
    if (b.isStageEnd) levels.push({ x, h, w, c: b.dimOut });
  }
  const trunk = levels.map((l) => hwcToChw64(l.x, l.h, l.w, l.c));
  const fpn = fpnNeckRef(enc, weights, levels);
  const out: HieraRefOutput = {
    trunk,
    fpn,
    shapes: { trunk: shapes.trunk, fpn: shapes.fpn },
    // Blocks never write into their input, so this is still the embedded tokens.
    embedded,
  };
  if (opts.keepBlocks) out.blocks = blocks;
  return out;
}

/**
 * Random weights for every official key of `enc`, float32-valued (so a GPU run and this
 * reference see identical numbers). Scales keep activations O(1) through the trunk:
 * Linear/Conv weights N(0, 1/fan_in) (unit gain, like a trained net's typical spread), biases
 * N(0, 0.1^2), LayerNorm gains 1 + N(0, 0.1^2), position embeddings N(0, 0.5^2) (large enough
 * that a wrong resize or tiling shows up clearly in the outputs).
 */
export function randomEncoderWeights(enc: EncoderConfig, seed: number): WeightMap {
  const r = rng64(seed);
  const out: WeightMap = new Map();
  for (const [name, shape] of encoderKeys(enc)) {
    const n = shape.reduce((a, b) => a * b, 1);
    let v: Float64Array;
    if (name.includes('pos_embed')) v = normal64(n, r, 0.5);
    else if (/norm\d\.weight$/.test(name)) v = normal64(n, r, 0.1, 1);
    else if (name.endsWith('.bias')) v = normal64(n, r, 0.1);
    else v = normal64(n, r, 1 / Math.sqrt(n / shape[0]));
    out.set(name, { shape: [...shape], data: Float32Array.from(v) });
  }
  return out;
}
