/** Prediction inputs and outputs as images: tile crops for the model, mask and overlay PNGs. */
import sharp from 'sharp';
import { decodeRaw, resizeNormalize } from '../data/decode.js';
import { OVERLAY_ALPHA, OVERLAY_COLOR, maskPixels, overlayPixels, probPixels } from './render.js';
import { type PhotoProb, type PredictPhotoOptions, type TileMap, tiledProb } from './segment.js';
import type { Tile } from './tiling.js';

export type { PredictPhotoOptions, TileMap } from './segment.js';

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

/**
 * Full-resolution map for a photo file: decoded by sharp, then segment.ts's tiledProb.
 */
export async function predictPhoto(
  photoPath: string,
  opts: PredictPhotoOptions,
  run: (input: Float32Array, tile: Tile) => Promise<TileMap>,
): Promise<PhotoProb> {
  return tiledProb(await decodeRaw(photoPath), opts, run);
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
  const px = maskPixels(prob, threshold);
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
  const px = probPixels(prob);
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
  const out = overlayPixels(photo.data, photo.info.channels, prob, threshold, 3,
    opts.color ?? OVERLAY_COLOR, opts.alpha ?? OVERLAY_ALPHA);
  await sharp(out, { raw: { width: w, height: h, channels: 3 } }).png().toFile(path);
}
