/**
 * SAM2.1 image-encoder configurations (Hiera trunk + FPN neck) for the four released sizes, and
 * the per-block plan derived from them by SAM2's construction rules.
 *
 * Facts come from facebookresearch/sam2: the yaml files `sam2/configs/sam2.1/sam2.1_hiera_*.yaml`
 * (what each size overrides) and the defaults of `Hiera.__init__` in
 * `sam2/modeling/backbones/hieradet.py` (what they leave alone; base_plus overrides only
 * embed_dim and num_heads). Field names are camelCase versions of the yaml/constructor names.
 */

/** The four released SAM2 sizes. */
export type Sam2Size = 'tiny' | 'small' | 'base_plus' | 'large';
/** Sam2Size, or `nano`: not a SAM2 model (see NANO_CONFIG). */
export type ModelSize = Sam2Size | 'nano';

/** Hiera trunk hyper-parameters (constructor arguments of `Hiera` in hieradet.py). */
export interface HieraConfig {
  /** embed_dim: channels after the patch embedding (stage 0 width). */
  embedDim: number;
  /** num_heads: attention heads in stage 0. */
  numHeads: number;
  /** stages: blocks per stage. */
  stages: number[];
  /** q_pool: how many stage transitions pool (downsample) the query; official default 3. */
  qPool: number;
  /** q_stride: MaxPool2d kernel = stride at those transitions; official default (2, 2). */
  qStride: [number, number];
  /** window_spec: attention window side per stage (0 would mean global). */
  windowSpec: number[];
  /** global_att_blocks: block indices that attend over the whole grid (window 0). */
  globalAttBlocks: number[];
  /** window_pos_embed_bkg_spatial_size: [h, w] of the `pos_embed` parameter. */
  windowPosEmbedBkgSpatialSize: [number, number];
  /** dim_mul, head_mul: width and head multipliers at each stage change; default 2. */
  dimMul: number;
  headMul: number;
  /** MultiScaleBlock mlp_ratio (default 4.0): hidden = int(dimOut * mlpRatio). */
  mlpRatio: number;
  /** LayerNorm eps: MultiScaleBlock builds nn.LayerNorm with eps=1e-6 from the string default. */
  layerNormEps: number;
  /** PatchEmbed defaults (backbones/utils.py): Conv2d(3, embedDim, 7, stride 4, padding 3). */
  patchKernel: number;
  patchStride: number;
  patchPadding: number;
  inChans: number;
}

/** FpnNeck arguments (image_encoder.py). */
export interface FpnNeckConfig {
  /** d_model: output channels of every lateral conv. */
  dModel: number;
  /** backbone_channel_list: trunk channels, coarsest first (= Hiera.channel_list). */
  backboneChannelList: number[];
  /** fpn_top_down_levels: output levels (0 = finest) that add the upsampled coarser level. */
  fpnTopDownLevels: number[];
  /** fpn_interp_model: all SAM2.1 configs use 'nearest' (scale factor 2). */
  fpnInterpModel: 'nearest';
  /** fuse_type default 'sum'. */
  fuseType: 'sum';
  /** Lateral conv kernel (default 1, stride 1, padding 0). */
  kernelSize: number;
}

export interface EncoderConfig {
  name: ModelSize;
  trunk: HieraConfig;
  neck: FpnNeckConfig;
  /** ImageEncoder.scalp: how many of the coarsest FPN levels are dropped (1 in every config). */
  scalp: number;
}

/** Hiera.__init__ defaults that the sam2.1 yaml files do not override. */
const HIERA_DEFAULTS = {
  qPool: 3,
  qStride: [2, 2] as [number, number],
  windowSpec: [8, 4, 14, 7],
  dimMul: 2,
  headMul: 2,
  mlpRatio: 4,
  layerNormEps: 1e-6,
  patchKernel: 7,
  patchStride: 4,
  patchPadding: 3,
  inChans: 3,
};

function neck(backboneChannelList: number[]): FpnNeckConfig {
  return {
    dModel: 256,
    backboneChannelList,
    // "output level 0 and 1 directly use the backbone features" (yaml comment).
    fpnTopDownLevels: [2, 3],
    fpnInterpModel: 'nearest',
    fuseType: 'sum',
    kernelSize: 1,
  };
}

export const MODEL_CONFIGS: Record<Sam2Size, EncoderConfig> = {
  tiny: {
    name: 'tiny',
    trunk: {
      ...HIERA_DEFAULTS,
      embedDim: 96,
      numHeads: 1,
      stages: [1, 2, 7, 2],
      globalAttBlocks: [5, 7, 9],
      windowPosEmbedBkgSpatialSize: [7, 7],
    },
    neck: neck([768, 384, 192, 96]),
    scalp: 1,
  },
  small: {
    name: 'small',
    trunk: {
      ...HIERA_DEFAULTS,
      embedDim: 96,
      numHeads: 1,
      stages: [1, 2, 11, 2],
      globalAttBlocks: [7, 10, 13],
      windowPosEmbedBkgSpatialSize: [7, 7],
    },
    neck: neck([768, 384, 192, 96]),
    scalp: 1,
  },
  // sam2.1_hiera_b+.yaml sets only embed_dim and num_heads: the rest are Hiera defaults.
  base_plus: {
    name: 'base_plus',
    trunk: {
      ...HIERA_DEFAULTS,
      embedDim: 112,
      numHeads: 2,
      stages: [2, 3, 16, 3],
      globalAttBlocks: [12, 16, 20],
      windowPosEmbedBkgSpatialSize: [14, 14],
    },
    neck: neck([896, 448, 224, 112]),
    scalp: 1,
  },
  large: {
    name: 'large',
    trunk: {
      ...HIERA_DEFAULTS,
      embedDim: 144,
      numHeads: 2,
      stages: [2, 6, 36, 4],
      globalAttBlocks: [23, 33, 43],
      windowPosEmbedBkgSpatialSize: [7, 7],
      windowSpec: [8, 4, 16, 8],
    },
    neck: neck([1152, 576, 288, 144]),
    scalp: 1,
  },
};

/**
 * Not a SAM2 size: Hiera-tiny's structure (four stages, q-pooling at every transition, windowed
 * and global blocks, the same position-embedding scheme and FPN rules) at a fraction of the
 * width and depth, so the whole pipeline can be tested and demonstrated on a CPU rasterizer in
 * seconds per step. No official checkpoint exists for it.
 */
export const NANO_CONFIG: EncoderConfig = {
  name: 'nano',
  trunk: {
    ...HIERA_DEFAULTS,
    embedDim: 16,
    numHeads: 1,
    stages: [1, 1, 2, 1],
    globalAttBlocks: [3],
    windowPosEmbedBkgSpatialSize: [7, 7],
  },
  neck: { ...neck([128, 64, 32, 16]), dModel: 32 },
  scalp: 1,
};

/** A config by name: the SAM2 sizes and `nano`. */
export function encoderConfig(name: string): EncoderConfig {
  if (name === 'nano') return NANO_CONFIG;
  const cfg = (MODEL_CONFIGS as Record<string, EncoderConfig>)[name];
  if (!cfg) throw new Error(`unknown model '${name}' (tiny, small, base_plus, large, or nano for tests)`);
  return cfg;
}

/** One MultiScaleBlock as Hiera.__init__ builds it. */
export interface BlockPlan {
  index: number;
  /** Stage this block's output belongs to (0-based). */
  stage: number;
  /** Input and output channels; they differ only in a stage's first block (stage > 0). */
  dim: number;
  dimOut: number;
  heads: number;
  /** dimOut / heads. */
  headDim: number;
  /** Window side for partitioning the block's *input* grid; 0 = global attention. */
  windowSize: number;
  /** MaxPool kernel = stride applied to q and to the shortcut, or null (no pooling). */
  qStride: [number, number] | null;
  /** Has `proj` (Linear dim -> dimOut on the normalised input, for the shortcut). */
  hasProj: boolean;
  /** MLP hidden width int(dimOut * mlpRatio). */
  mlpHidden: number;
  /** Last block of its stage: its output is one of the trunk's returned features. */
  isStageEnd: boolean;
}

/** Index of the last block of each stage (Hiera.stage_ends). */
export function stageEnds(cfg: HieraConfig): number[] {
  const ends: number[] = [];
  let n = 0;
  for (const s of cfg.stages) ends.push((n += s) - 1);
  return ends;
}

/** Blocks that pool q: the first block of stages 1..qPool (Hiera.q_pool_blocks). */
export function qPoolBlocks(cfg: HieraConfig): number[] {
  const ends = stageEnds(cfg);
  if (cfg.qPool < 0 || cfg.qPool > ends.length - 1) {
    throw new Error(`qPoolBlocks: qPool must be in [0, ${ends.length - 1}], got ${cfg.qPool}`);
  }
  return ends.slice(0, -1).map((e) => e + 1).slice(0, cfg.qPool);
}

/**
 * The block list as Hiera.__init__ builds it:
 * - the window size lags one block behind the stage: block i uses windowSpec[curStage] where
 *   curStage is only advanced *inside* the first block of a new stage, after the window is
 *   chosen, so a stage's first block partitions with the previous stage's window (it sees the
 *   previous stage's, not yet pooled, grid);
 * - blocks listed in globalAttBlocks use window 0 (global attention) instead;
 * - at the first block of each new stage, dimOut = int(dim * dimMul) and heads =
 *   int(heads * headMul); that block gets `proj` (Linear dim -> dimOut) for the shortcut;
 * - the first block of stages 1..qPool pools q (and the shortcut) with MaxPool(qStride).
 */
export function blockPlan(cfg: HieraConfig): BlockPlan[] {
  const ends = stageEnds(cfg);
  const pools = new Set(qPoolBlocks(cfg));
  const depth = ends[ends.length - 1] + 1;
  const plan: BlockPlan[] = [];
  let dim = cfg.embedDim;
  let heads = cfg.numHeads;
  let stage = 0;
  for (let i = 0; i < depth; i++) {
    let windowSize = cfg.windowSpec[stage];
    if (cfg.globalAttBlocks.includes(i)) windowSize = 0;
    let dimOut = dim;
    if (ends.includes(i - 1)) {
      dimOut = Math.trunc(dim * cfg.dimMul);
      heads = Math.trunc(heads * cfg.headMul);
      stage++;
    }
    const qStride = pools.has(i) ? ([...cfg.qStride] as [number, number]) : null;
    // The official block computes the pooled window as window // q_stride[0] with a modulo by
    // it, which fails for a global (window 0) pooling block: no released config has one.
    if (qStride && windowSize === 0) {
      throw new Error(`blockPlan: block ${i} pools q but uses global attention (unsupported)`);
    }
    if (dimOut % heads !== 0) {
      throw new Error(`blockPlan: block ${i} dim ${dimOut} not divisible by ${heads} heads`);
    }
    plan.push({
      index: i,
      stage,
      dim,
      dimOut,
      heads,
      headDim: dimOut / heads,
      windowSize,
      qStride,
      hasProj: dim !== dimOut,
      mlpHidden: Math.trunc(dimOut * cfg.mlpRatio),
      isStageEnd: ends.includes(i),
    });
    dim = dimOut;
  }
  return plan;
}

/** Trunk output channels, coarsest first (Hiera.channel_list); must equal the neck's list. */
export function trunkChannelList(cfg: HieraConfig): number[] {
  const plan = blockPlan(cfg);
  return stageEnds(cfg).map((e) => plan[e].dimOut).reverse();
}

/** Token grid side after the patch embedding conv for a square input of side `size`. */
export function tokenGrid(cfg: HieraConfig, size: number): number {
  return Math.floor((size + 2 * cfg.patchPadding - cfg.patchKernel) / cfg.patchStride) + 1;
}

export interface FeatureShapes {
  /** Square grid side of the patch-embedding tokens. */
  tokens: number;
  /** Trunk outputs, finest first, NCHW [1, C, H, W] (as Hiera.forward returns them). */
  trunk: number[][];
  /** FPN outputs after the scalp, finest first, NCHW [1, dModel, H, W]. */
  fpn: number[][];
}

/**
 * Feature shapes for a square input of side `size`, or an error when SAM2 itself could not run
 * it: `Hiera._get_pos_embed` tiles `pos_embed_window` floor(grid / window) times, so the token
 * grid must be a multiple of windowSpec[0]; the neck adds a nearest x2 upsample, so each
 * top-down level must be exactly twice the next coarser one; a pooling windowed block must give
 * as many pooled windows as the pooled grid needs.
 */
export function featureShapes(enc: EncoderConfig, size: number): FeatureShapes {
  const cfg = enc.trunk;
  const tokens = tokenGrid(cfg, size);
  if (!(tokens > 0) || tokens % cfg.windowSpec[0] !== 0) {
    throw new Error(
      `featureShapes: input ${size} gives a ${tokens}x${tokens} token grid; SAM2 needs a ` +
        `multiple of ${cfg.windowSpec[0]} ` +
        `(input a multiple of ${cfg.windowSpec[0] * cfg.patchStride})`,
    );
  }
  const plan = blockPlan(cfg);
  let h = tokens;
  const trunk: number[][] = [];
  for (const b of plan) {
    if (b.qStride) {
      // MaxPool2d(ceil_mode=False) floors. A pooling window block unpartitions its pooled
      // windows (side ws // stride) onto the pooled grid, so the window counts must agree, or
      // SAM2's reshape in window_unpartition fails.
      const ho = Math.floor(h / b.qStride[0]);
      const ws = b.windowSize;
      const wsOut = Math.floor(ws / b.qStride[0]);
      if (ws > 0 && (wsOut === 0 || Math.ceil(ho / wsOut) !== Math.ceil(h / ws))) {
        throw new Error(`featureShapes: block ${b.index} pools a ${h}x${h} grid in ${ws}x${ws} ` +
          `windows into ${ho}x${ho}, which ${wsOut}x${wsOut} windows do not tile alike ` +
          `(input ${size})`);
      }
      h = ho;
    }
    if (b.isStageEnd) trunk.push([1, b.dimOut, h, h]);
  }
  const grids = trunk.map((s) => s[2]);
  for (const lvl of enc.neck.fpnTopDownLevels) {
    if (lvl + 1 < grids.length && grids[lvl] !== 2 * grids[lvl + 1]) {
      throw new Error(
        `featureShapes: FPN level ${lvl} grid ${grids[lvl]} is not twice level ${lvl + 1} ` +
          `(${grids[lvl + 1]}) for input ${size}`,
      );
    }
  }
  const fpn = grids.slice(0, grids.length - enc.scalp).map((g) => [1, enc.neck.dModel, g, g]);
  return { tokens, trunk, fpn };
}

/**
 * Bytes of the widest activation one image needs at input side `size` (a block's qkv or MLP hidden
 * over its window-padded grid, or the full-size image/logits): it must fit one storage binding.
 */
export function widestActivationBytes(enc: EncoderConfig, size: number): number {
  const trunk = enc.trunk;
  let side = size / trunk.patchStride;
  let widest = size * size * 4;
  for (const b of blockPlan(trunk)) {
    const padded = b.windowSize > 0 ? Math.ceil(side / b.windowSize) * b.windowSize : side;
    widest = Math.max(widest, padded * padded * 3 * b.dimOut);
    if (b.qStride) side = Math.floor(side / b.qStride[0]);
    widest = Math.max(widest, side * side * b.mlpHidden);
  }
  return widest * 4;
}
