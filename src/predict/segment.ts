/**
 * One photo's probability map from its decoded pixels: tiles planned, each resized and normalised
 * (data/pixels.ts), run through the model, stitched. No Node APIs: `predict` (after sharp decodes
 * the file) and the browser page (after the canvas does) both call this.
 */
import type { RawImage } from '../data/pixels.js';
import { resizeNormalize } from '../data/pixels.js';
import type { Segmenter } from '../model/segmenter.js';
import { sigmoid } from '../ops/activation.js';
import { type Tile, type TileProb, planTiles, stitch } from './tiling.js';

/** A tile's output map at the model's output resolution. */
export interface TileMap {
  prob: Float32Array;
  width: number;
  height: number;
}

export interface PredictPhotoOptions {
  /** Model input side (e.g. 1024). */
  size: number;
  /** Tile side in photo pixels (default `size`: no rescaling of large photos). */
  tile?: number;
  /** Tile overlap in photo pixels (default tile / 8). */
  overlap?: number;
}

export interface PhotoProb {
  prob: Float32Array;
  width: number;
  height: number;
  tiles: number;
}

/** The tiling `predict` uses for these options: tile side and overlap in photo pixels. */
export function tiling(opts: PredictPhotoOptions): { tile: number; overlap: number } {
  const tile = opts.tile ?? opts.size;
  return { tile, overlap: opts.overlap ?? Math.floor(tile / 8) };
}

/**
 * Full-resolution map of decoded pixels: `run` called on each tile's normalised [size, size, 3]
 * input (one at a time, in order; `onTile` after each), its map (any resolution, e.g. the mask
 * decoder's 256x256) resampled into the tile and blended. Probabilities blend better than logits
 * at seams; `run` decides which it returns.
 */
export async function tiledProb(
  raw: RawImage,
  opts: PredictPhotoOptions,
  run: (input: Float32Array, tile: Tile) => Promise<TileMap>,
  onTile?: (done: number, total: number) => void,
): Promise<PhotoProb> {
  const { tile, overlap } = tiling(opts);
  const tiles = planTiles(raw.width, raw.height, tile, overlap);
  const parts: TileProb[] = [];
  for (const t of tiles) {
    const out = await run(resizeNormalize(raw, opts.size, t), t);
    parts.push({ tile: t, ...out });
    onTile?.(parts.length, tiles.length);
  }
  const prob = stitch(raw.width, raw.height, parts, overlap);
  return { prob, width: raw.width, height: raw.height, tiles: tiles.length };
}

/** Runs one normalised tile through the model: sigmoid of its logits, [size, size]. */
export function segmenterTile(model: Segmenter, size: number): (input: Float32Array) => Promise<TileMap> {
  const engine = model.engine;
  return (input) =>
    engine.scopeAsync(async () => {
      const x = engine.fromArray(input, [1, size, size, 3]);
      const p = engine.noGrad(() => sigmoid(model.forward(x)));
      return { prob: await p.toArray(), width: size, height: size };
    });
}
