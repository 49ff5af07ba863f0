/**
 * Every image-encoder parameter of a SAM2.1 checkpoint, by name (without the `image_encoder.`
 * prefix, which checkpoints nest under `model.`), with its PyTorch shape.
 *
 * Module structure (facebookresearch/sam2): `Hiera` (hieradet.py) owns `pos_embed`
 * [1, C, *bkg_size], `pos_embed_window` [1, C, windowSpec[0], windowSpec[0]],
 * `patch_embed.proj` (Conv2d) and `blocks.N`; a `MultiScaleBlock` owns norm1, attn.qkv
 * (Linear dim -> 3 * dimOut: input width, output width of the block), attn.proj
 * (dimOut -> dimOut), norm2, mlp.layers.{0,1} (`MLP` in sam2_utils.py) and, when dim != dimOut,
 * proj (dim -> dimOut). `FpnNeck` (image_encoder.py) owns convs.N.conv (Conv2d 1x1, convs.0 for
 * the coarsest level). The neck's position encoding has no parameters.
 */
import { type EncoderConfig, blockPlan } from './config.js';

/** Name -> shape, in checkpoint order (trunk, then blocks, then neck). */
export function encoderKeys(enc: EncoderConfig): Map<string, number[]> {
  const cfg = enc.trunk;
  const c0 = cfg.embedDim;
  const keys = new Map<string, number[]>();
  keys.set('trunk.pos_embed', [1, c0, ...cfg.windowPosEmbedBkgSpatialSize]);
  keys.set('trunk.pos_embed_window', [1, c0, cfg.windowSpec[0], cfg.windowSpec[0]]);
  const k = cfg.patchKernel;
  keys.set('trunk.patch_embed.proj.weight', [c0, cfg.inChans, k, k]);
  keys.set('trunk.patch_embed.proj.bias', [c0]);
  for (const b of blockPlan(cfg)) {
    const p = `trunk.blocks.${b.index}`;
    keys.set(`${p}.norm1.weight`, [b.dim]);
    keys.set(`${p}.norm1.bias`, [b.dim]);
    keys.set(`${p}.attn.qkv.weight`, [3 * b.dimOut, b.dim]);
    keys.set(`${p}.attn.qkv.bias`, [3 * b.dimOut]);
    keys.set(`${p}.attn.proj.weight`, [b.dimOut, b.dimOut]);
    keys.set(`${p}.attn.proj.bias`, [b.dimOut]);
    keys.set(`${p}.norm2.weight`, [b.dimOut]);
    keys.set(`${p}.norm2.bias`, [b.dimOut]);
    keys.set(`${p}.mlp.layers.0.weight`, [b.mlpHidden, b.dimOut]);
    keys.set(`${p}.mlp.layers.0.bias`, [b.mlpHidden]);
    keys.set(`${p}.mlp.layers.1.weight`, [b.dimOut, b.mlpHidden]);
    keys.set(`${p}.mlp.layers.1.bias`, [b.dimOut]);
    if (b.hasProj) {
      keys.set(`${p}.proj.weight`, [b.dimOut, b.dim]);
      keys.set(`${p}.proj.bias`, [b.dimOut]);
    }
  }
  const n = enc.neck;
  const ks = n.kernelSize;
  n.backboneChannelList.forEach((cin, i) => {
    keys.set(`neck.convs.${i}.conv.weight`, [n.dModel, cin, ks, ks]);
    keys.set(`neck.convs.${i}.conv.bias`, [n.dModel]);
  });
  return keys;
}

/** Total parameter count of the image encoder. */
export function encoderParamCount(enc: EncoderConfig): number {
  let n = 0;
  for (const s of encoderKeys(enc).values()) n += s.reduce((a, b) => a * b, 1);
  return n;
}
