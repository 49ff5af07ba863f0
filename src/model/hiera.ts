/**
 * SAM2's Hiera trunk on the engine (facts from sam2/modeling/backbones/hieradet.py). Activations
 * are channels-last [B, H, W, C] throughout, as in the official blocks; field names are SAM2's so
 * `namedParameters()` yields the checkpoint keys (`blocks.3.attn.qkv.weight`).
 */
import type { Engine, Tensor } from '../autograd/tensor.js';
import { add } from '../ops/add.js';
import { attentionQkv } from '../ops/attention.js';
import { interpolate } from '../ops/interpolate.js';
import { maxPool2d } from '../ops/pool.js';
import { permute, reshape, sliceLast } from '../ops/shape.js';
import { windowPartition, windowUnpartition } from '../ops/window.js';
import { Conv2d, LayerNorm, Linear, MLP } from '../nn/layers.js';
import { Module } from '../nn/module.js';
import type { Rng } from '../util/random.js';
import { type BlockPlan, type HieraConfig, blockPlan } from './config.js';

export class PatchEmbed extends Module {
  readonly proj: Conv2d;

  constructor(engine: Engine, cfg: HieraConfig, rng: Rng) {
    super(engine);
    this.proj = new Conv2d(
      engine,
      cfg.inChans,
      cfg.embedDim,
      cfg.patchKernel,
      rng,
      cfg.patchStride,
      cfg.patchPadding,
    );
  }

  /** [B, S, S, 3] → [B, S/4, S/4, embedDim]. */
  forward(x: Tensor): Tensor {
    return this.proj.forward(x);
  }
}

export class MultiScaleAttention extends Module {
  readonly qkv: Linear;
  readonly proj: Linear;

  constructor(
    engine: Engine,
    readonly plan: BlockPlan,
    rng: Rng,
  ) {
    super(engine);
    this.qkv = new Linear(engine, plan.dim, plan.dimOut * 3, rng);
    this.proj = new Linear(engine, plan.dimOut, plan.dimOut, rng);
  }

  /**
   * Global attention over the whole grid x [B, h, w, C] → [B, h', w', dimOut], where q (and so
   * the output grid) is max-pooled by qStride in pooling blocks; `residual` ([B, h', w', dimOut])
   * is added by the output projection's epilogue.
   */
  forward(x: Tensor, residual: Tensor | null = null): Tensor {
    const [b, h, w] = x.shape;
    const qkv = this.qkv.forward(reshape(x, [b, h * w, x.shape[3]]));
    const { out, oh, ow } = this.attend(qkv, b, h, w);
    const d = this.plan.dimOut;
    const res = residual && reshape(residual, [b, oh * ow, d]);
    return reshape(this.proj.forward(out, res), [b, oh, ow, d]);
  }

  /**
   * Attention inside ws×ws windows of x [B, H, W, C] (zero-padded at the bottom and right, no
   * mask: padding tokens take part, as in SAM2) → [B, H', W', dimOut], H' = floor(H / qStride)
   * in pooling blocks (q pooled per window); `residual` ([B, H', W', dimOut]) is added by the
   * output projection's epilogue.
   * SAM2 partitions first; qkv and proj are per-token, so here they run outside the windows, on
   * the real tokens only. When the grid needs padding, qkv runs before the partition, which pads
   * with what qkv makes of a zero token (its bias; a LoRA branch adds B·A·0 = 0); without
   * padding, the partition comes first as in SAM2, as it then moves C channels, not 3·dimOut.
   * proj always runs after the unpartition, which drops the padding rows proj would compute for
   * nothing, and adds the residual in its epilogue. Same values, fewer rows.
   */
  forwardWindowed(x: Tensor, ws: number, residual: Tensor | null = null): Tensor {
    const [b, h, w] = x.shape;
    const nWin = Math.ceil(h / ws) * Math.ceil(w / ws);
    const padded = h % ws !== 0 || w % ws !== 0;
    const qkv = padded
      ? windowPartition(this.qkv.forward(x), ws, this.qkv.bias)
      : this.qkv.forward(windowPartition(x, ws));
    const { out, oh: wsOut } = this.attend(qkv, b * nWin, ws, ws);
    const qs = this.plan.qStride?.[0] ?? 1;
    const y = windowUnpartition(out, wsOut, [Math.floor(h / qs), Math.floor(w / qs)]);
    return this.proj.forward(y, residual);
  }

  /**
   * The attention core on packed qkv rows [b, h·w, 3·dimOut] of b grids (or windows) h×w: q is
   * split off and max-pooled on its grid in pooling blocks (official order), then attends to all
   * k/v, read in place from the packed qkv → out [b, h'·w', dimOut] on the grid h'×w'.
   */
  attend(qkv: Tensor, b: number, h: number, w: number): { out: Tensor; oh: number; ow: number } {
    const d = this.plan.dimOut;
    const heads = this.plan.heads;
    const qs = this.plan.qStride;
    if (!qs) return { out: attentionQkv(qkv, heads), oh: h, ow: w };
    const q = maxPool2d(reshape(sliceLast(qkv, 0, d), [b, h, w, d]), qs[0]);
    const [, oh, ow] = q.shape;
    return { out: attentionQkv(qkv, heads, reshape(q, [b, oh * ow, d])), oh, ow };
  }
}

export class MultiScaleBlock extends Module {
  readonly norm1: LayerNorm;
  readonly attn: MultiScaleAttention;
  readonly norm2: LayerNorm;
  readonly mlp: MLP;
  readonly proj: Linear | null;

  constructor(
    engine: Engine,
    readonly plan: BlockPlan,
    eps: number,
    rng: Rng,
  ) {
    super(engine);
    this.norm1 = new LayerNorm(engine, plan.dim, eps);
    this.attn = new MultiScaleAttention(engine, plan, rng);
    this.norm2 = new LayerNorm(engine, plan.dimOut, eps);
    this.mlp = new MLP(engine, plan.dimOut, plan.mlpHidden, plan.dimOut, rng);
    this.proj = plan.hasProj ? new Linear(engine, plan.dim, plan.dimOut, rng) : null;
  }

  forward(x: Tensor): Tensor {
    const { windowSize: ws, qStride } = this.plan;
    const xn = this.norm1.forward(x);
    let shortcut = x;
    if (this.proj) {
      // The shortcut is projected from the *normalised* input, then pooled like q.
      shortcut = this.proj.forward(xn);
      if (qStride) shortcut = maxPool2d(shortcut, qStride[0]);
    }
    // Skip connections are added in the epilogues of the products that end each branch (the
    // attention's output projection and the MLP's).
    const x1 = ws > 0
      ? this.attn.forwardWindowed(xn, ws, shortcut)
      : this.attn.forward(xn, shortcut);
    return this.mlp.forward(this.norm2.forward(x1), x1);
  }
}

export class Hiera extends Module {
  readonly patch_embed: PatchEmbed;
  readonly pos_embed: Tensor;
  readonly pos_embed_window: Tensor;
  readonly blocks: MultiScaleBlock[];
  private posCache = new Map<string, Tensor>();

  constructor(
    engine: Engine,
    readonly cfg: HieraConfig,
    rng: Rng,
  ) {
    super(engine);
    const c = cfg.embedDim;
    const [bh, bw] = cfg.windowPosEmbedBkgSpatialSize;
    const ws = cfg.windowSpec[0];
    this.patch_embed = new PatchEmbed(engine, cfg, rng);
    // Official init is zeros (trained values come from the checkpoint); small noise keeps a
    // random-weight model from being position-blind.
    this.pos_embed = engine.parameter(rng.fillUniform(c * bh * bw, 0.02), [1, c, bh, bw]);
    this.pos_embed_window = engine.parameter(rng.fillUniform(c * ws * ws, 0.02), [1, c, ws, ws]);
    this.blocks = blockPlan(cfg).map((p) => new MultiScaleBlock(engine, p, cfg.layerNormEps, rng));
  }

  /**
   * Position embedding for an h×w token grid, [h, w, C]: the background bicubic-resized to the
   * grid plus the window embedding tiled over it (Hiera._get_pos_embed). Cached while both
   * parameters are frozen.
   */
  posEmbed(h: number, w: number): Tensor {
    const frozen = !this.pos_embed.requiresGrad && !this.pos_embed_window.requiresGrad;
    const key = `${h}x${w}`;
    const cached = frozen ? this.posCache.get(key) : undefined;
    if (cached && !cached.isReleased) return cached;
    if (this.pos_embed.requiresGrad && this.engine.isGradEnabled) {
      throw new Error(
        'trunk.pos_embed cannot be trained: its bicubic resize has no backward (freeze it)',
      );
    }
    const c = this.cfg.embedDim;
    const ws = this.pos_embed_window.shape[2];
    if (h % ws !== 0 || w % ws !== 0) {
      throw new Error(`Hiera: token grid ${h}x${w} is not a multiple of the ${ws}x${ws} window ` +
        'embedding (input size must be a multiple of 32)');
    }
    const build = () => {
      const bg = interpolate(permute(this.pos_embed, [0, 2, 3, 1]), [h, w], 'bicubic');
      const win = reshape(permute(this.pos_embed_window, [0, 2, 3, 1]), [ws, ws, c]);
      // Tile by viewing the grid as [h/ws, ws, w/ws, ws, C] and broadcasting win over the tiles.
      const tiles = permute(reshape(bg, [h / ws, ws, w / ws, ws, c]), [0, 2, 1, 3, 4]);
      const summed = add(tiles, win);
      return reshape(permute(summed, [0, 2, 1, 3, 4]), [h, w, c]);
    };
    if (!frozen) return build();
    const pos = this.engine.noGrad(build);
    pos.isParameter = true; // cached across steps: no scope may release it
    this.posCache.set(key, pos);
    return pos;
  }

  /** [B, S, S, 3] → the four stage outputs [B, S/4·2^-i, S/4·2^-i, C_i], finest first. */
  forward(x: Tensor): Tensor[] {
    let t = this.patch_embed.forward(x);
    t = add(t, this.posEmbed(t.shape[1], t.shape[2]));
    const outs: Tensor[] = [];
    for (const blk of this.blocks) {
      // A scope per block frees its intermediates right away; what backward needs is held by
      // the tape, and the block output is returned to the caller's scope.
      const input = t;
      t = this.engine.scope(() => blk.forward(input));
      if (blk.plan.isStageEnd) outs.push(t);
    }
    return outs;
  }
}
