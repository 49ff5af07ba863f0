/**
 * The shapes Hiera-tiny really runs at a given input size and batch, derived from the model's
 * own block plan (src/model/config.ts) so they can never drift from the model: per stage one
 * representative windowed block (window 8, 4, 14, 7 for tiny), the first global-attention block,
 * the q-pool transitions, the patch embedding, the head, the loss and the LoRA-mode optimizer.
 */
import { type ModelSize, blockPlan, encoderConfig, tokenGrid } from '#src/model/config.js';
import { DEFAULT_LORA } from '#src/model/segmenter.js';

export interface StageShape {
  stage: number;
  /** Token grid side of the stage (after its q-pool). */
  grid: number;
  dim: number;
  heads: number;
  headDim: number;
  window: number;
  mlpHidden: number;
}

export interface PoolShape {
  /** Grid side before pooling, channels after the projection (dimOut). */
  grid: number;
  channels: number;
  k: number;
  block: number;
}

export interface ModelShapes {
  size: number;
  batch: number;
  tokens: number;
  stages: StageShape[];
  /** The first global-attention block (tiny: block 5, stage 2). */
  global: StageShape & { block: number };
  pools: PoolShape[];
  patch: { inChans: number; embedDim: number; kernel: number; stride: number; padding: number };
  /** Head (stride16): conv3x3 dModel→hidden and conv1x1 hidden→1 on the stride-16 grid. */
  head: { grid: number; dModel: number; hidden: number };
  /** Trainable tensor shapes in LoRA mode (LoRA A/B of every trunk linear + the head). */
  loraParams: number[][];
  loraRank: number;
}

export function modelShapes(model: ModelSize, size: number, batch: number): ModelShapes {
  const enc = encoderConfig(model);
  const cfg = enc.trunk;
  const plan = blockPlan(cfg);
  const tokens = tokenGrid(cfg, size);
  let h = tokens;
  const stages: StageShape[] = [];
  const pools: PoolShape[] = [];
  let global: ModelShapes['global'] | null = null;
  const r = DEFAULT_LORA.r;
  const loraParams: number[][] = [];
  const lora = (inF: number, outF: number) => loraParams.push([r, inF], [outF, r]);
  for (const b of plan) {
    // qkv and the shortcut proj see the un-pooled grid; pooling happens after them.
    lora(b.dim, 3 * b.dimOut);
    lora(b.dimOut, b.dimOut);
    lora(b.dimOut, b.mlpHidden);
    lora(b.mlpHidden, b.dimOut);
    if (b.hasProj) lora(b.dim, b.dimOut);
    if (b.qStride) {
      pools.push({ grid: h, channels: b.dimOut, k: b.qStride[0], block: b.index });
      h = Math.floor(h / b.qStride[0]);
      continue;
    }
    const s: StageShape = {
      stage: b.stage, grid: h, dim: b.dimOut, heads: b.heads, headDim: b.headDim,
      window: b.windowSize, mlpHidden: b.mlpHidden,
    };
    if (b.windowSize === 0) {
      global ??= { ...s, block: b.index };
    } else if (!stages.some((x) => x.stage === b.stage)) {
      stages.push(s);
    }
  }
  if (!global) throw new Error(`modelShapes: ${model} has no global-attention block`);
  const hidden = 128;
  const dModel = enc.neck.dModel;
  loraParams.push([hidden, dModel, 3, 3], [hidden], [1, hidden, 1, 1], [1]);
  return {
    size,
    batch,
    tokens,
    stages,
    global,
    pools,
    patch: {
      inChans: cfg.inChans, embedDim: cfg.embedDim, kernel: cfg.patchKernel,
      stride: cfg.patchStride, padding: cfg.patchPadding,
    },
    head: { grid: size / 16, dModel, hidden },
    loraParams,
    loraRank: r,
  };
}
