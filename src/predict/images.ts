/** Prediction inputs and outputs as images: tile crops for the model, mask and overlay PNGs. */
import sharp from 'sharp';
import { decodeRaw, resizeNormalize } from '../data/decode.js';
import { type Tile, type TileProb, planTiles, stitch } from './tiling.js';

function checkMap(what: string, prob: ArrayLike<number>, w: number, h: number): void {
  if (prob.length !== w * h) {
    throw new Error(`${what}: expected a ${w}x${h} map (${w * h} values), got ${prob.length}`);
  }
}

/**
 * The model inputs for `tiles` of a photo: each window cropped and resized (bilinear, aspect
 * ignored) to `size`x`size`, ImageNet-normalised NHWC. Also returns the photo's size.
 */
export async function readTiles(
  photoPath: string,
  tiles: Tile[],
  size: number,
): Promise<{ inputs: Float32Array[]; width: number; height: number }> {
  const raw = await decodeRaw(photoPath); // once, not per tile
  const inputs = await Promise.all(tiles.map((t) => resizeNormalize(raw, size, t)));
  return { inputs, width: raw.width, height: raw.height };
}

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

/**
 * Full-resolution map for a photo: tiles planned and read, `run` called on each tile's
 * normalised [size, size, 3] input (one at a time, in order), its map (any resolution, e.g. the
 * mask decoder's 256x256) resampled into the tile and blended. Probabilities blend better than
 * logits at seams; `run` decides which it returns.
 */
export async function predictPhoto(
  photoPath: string,
  opts: PredictPhotoOptions,
  run: (input: Float32Array, tile: Tile) => Promise<TileMap>,
): Promise<{ prob: Float32Array; width: number; height: number; tiles: number }> {
  const tile = opts.tile ?? opts.size;
  const overlap = opts.overlap ?? Math.floor(tile / 8);
  const raw = await decodeRaw(photoPath);
  const tiles = planTiles(raw.width, raw.height, tile, overlap);
  const parts: TileProb[] = [];
  for (const t of tiles) {
    const out = await run(await resizeNormalize(raw, opts.size, t), t);
    parts.push({ tile: t, ...out });
  }
  const prob = stitch(raw.width, raw.height, parts, overlap);
  return { prob, width: raw.width, height: raw.height, tiles: tiles.length };
}

/** Binary mask PNG (crack 255, background 0) of prob > threshold. */
export async function writeMaskPng(
  path: string,
  prob: ArrayLike<number>,
  w: number,
  h: number,
  threshold = 0.5,
): Promise<void> {
  checkMap('writeMaskPng', prob, w, h);
  const px = Buffer.alloc(w * h);
  for (let i = 0; i < px.length; i++) px[i] = prob[i] > threshold ? 255 : 0;
  await sharp(px, { raw: { width: w, height: h, channels: 1 } })
    .toColourspace('b-w')
    .png()
    .toFile(path);
}

/** Greyscale PNG of a probability map (0 → black, 1 → white). */
export async function writeProbPng(
  path: string,
  prob: ArrayLike<number>,
  w: number,
  h: number,
): Promise<void> {
  checkMap('writeProbPng', prob, w, h);
  const px = Buffer.alloc(w * h);
  for (let i = 0; i < px.length; i++) px[i] = Math.round(255 * Math.min(1, Math.max(0, prob[i])));
  await sharp(px, { raw: { width: w, height: h, channels: 1 } })
    .toColourspace('b-w')
    .png()
    .toFile(path);
}

export interface OverlayOptions {
  /** RGB of the crack colour (default bright red-magenta [255, 0, 96]). */
  color?: [number, number, number];
  /** Opacity of the colour over the photo (default 0.75). */
  alpha?: number;
}

/**
 * The photo with predicted cracks (prob > threshold) painted in a bright colour. The map must be
 * at the photo's resolution; a photo of another size is resized to `w`x`h` first.
 */
export async function writeOverlayPng(
  path: string,
  photoPath: string,
  prob: ArrayLike<number>,
  w: number,
  h: number,
  threshold = 0.5,
  opts: OverlayOptions = {},
): Promise<void> {
  checkMap('writeOverlayPng', prob, w, h);
  const [r, g, b] = opts.color ?? [255, 0, 96];
  const a = opts.alpha ?? 0.75;
  let photo: { data: Buffer; info: sharp.OutputInfo };
  try {
    photo = await sharp(photoPath)
      .removeAlpha()
      .toColourspace('srgb')
      .resize(w, h, { fit: 'fill', kernel: 'linear' })
      .raw()
      .toBuffer({ resolveWithObject: true });
  } catch (e) {
    throw new Error(`${photoPath}: unreadable image (${e instanceof Error ? e.message : e})`);
  }
  const ch = photo.info.channels;
  const out = Buffer.alloc(w * h * 3);
  for (let i = 0; i < w * h; i++) {
    const src = [0, 1, 2].map((k) => photo.data[i * ch + (ch >= 3 ? k : 0)]);
    const on = prob[i] > threshold;
    out[i * 3] = on ? Math.round((1 - a) * src[0] + a * r) : src[0];
    out[i * 3 + 1] = on ? Math.round((1 - a) * src[1] + a * g) : src[1];
    out[i * 3 + 2] = on ? Math.round((1 - a) * src[2] + a * b) : src[2];
  }
  await sharp(out, { raw: { width: w, height: h, channels: 3 } }).png().toFile(path);
}
