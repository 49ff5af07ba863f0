/**
 * Tiled prediction for photos larger than the model input: overlapping tiles (the last one flush
 * with the border), each predicted at model size, resampled back to its window and blended with
 * a weight window that ramps linearly across the overlaps, so seams vanish. A photo no larger
 * than the tile is one tile (the whole photo, resized to the model size as SAM2 does).
 */
import { resampleBilinear } from '../data/resample.js';

/** A window of the photo in pixels. */
export interface Tile {
  x: number;
  y: number;
  w: number;
  h: number;
}

function axis(len: number, tile: number, overlap: number): [number, number][] {
  if (len <= tile) return [[0, len]];
  const stride = tile - overlap;
  const out: [number, number][] = [];
  for (let p = 0; p + tile < len; p += stride) out.push([p, tile]);
  out.push([len - tile, tile]);
  return out;
}

/**
 * Tiles of `tile`x`tile` pixels covering a `width`x`height` photo, neighbours overlapping by at
 * least `overlap` pixels (more for the last, flush one). Row-major order.
 */
export function planTiles(width: number, height: number, tile: number, overlap: number): Tile[] {
  if (!(width >= 1 && height >= 1 && tile >= 1)) {
    throw new Error(`planTiles: expected positive sizes, got ${width}x${height}, tile ${tile}`);
  }
  if (!(overlap >= 0 && overlap < tile)) {
    throw new Error(`planTiles: overlap must be in [0, tile=${tile}), got ${overlap}`);
  }
  const xs = axis(width, tile, overlap);
  const ys = axis(height, tile, overlap);
  return ys.flatMap(([y, h]) => xs.map(([x, w]) => ({ x, y, w, h })));
}

/** A tile's prediction at the model's output resolution (any size; resampled to the window). */
export interface TileProb {
  tile: Tile;
  /** [height, width] map (probabilities or logits). */
  prob: Float32Array;
  width: number;
  height: number;
}

/** 1-D weights: a linear ramp over `ramp` pixels at each side that borders another tile. */
function ramp1d(n: number, ramp: number, left: boolean, right: boolean): Float32Array {
  const w = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    let v = 1;
    if (ramp > 0 && left) v = Math.min(v, (i + 0.5) / ramp);
    if (ramp > 0 && right) v = Math.min(v, (n - i - 0.5) / ramp);
    w[i] = v;
  }
  return w;
}

/**
 * Blends tile maps into one `width`x`height` map: sum(w * p) / sum(w) per pixel, with weights
 * ramping linearly over `overlap` pixels at interior tile edges (edges on the photo border keep
 * weight 1). Every pixel must be covered by some tile.
 *
 * Shapes: parts[i].prob [parts[i].height, parts[i].width] → [height, width].
 */
export function stitch(
  width: number,
  height: number,
  parts: TileProb[],
  overlap: number,
): Float32Array {
  const acc = new Float64Array(width * height);
  const wsum = new Float64Array(width * height);
  for (const { tile: t, prob, width: pw, height: ph } of parts) {
    if (prob.length !== pw * ph) {
      throw new Error(`stitch: tile map expected ${pw}x${ph} = ${pw * ph} values, got ${prob.length}`);
    }
    if (t.x < 0 || t.y < 0 || t.x + t.w > width || t.y + t.h > height) {
      throw new Error(
        `stitch: tile (${t.x}, ${t.y}, ${t.w}x${t.h}) outside the ${width}x${height} image`,
      );
    }
    const win =
      pw === t.w && ph === t.h
        ? prob
        : resampleBilinear(prob, pw, ph, 1, { x: 0, y: 0, w: pw, h: ph }, t.w, t.h);
    const wx = ramp1d(t.w, overlap, t.x > 0, t.x + t.w < width);
    const wy = ramp1d(t.h, overlap, t.y > 0, t.y + t.h < height);
    for (let j = 0; j < t.h; j++) {
      const row = (t.y + j) * width + t.x;
      for (let i = 0; i < t.w; i++) {
        const w = wx[i] * wy[j];
        acc[row + i] += w * win[j * t.w + i];
        wsum[row + i] += w;
      }
    }
  }
  const out = new Float32Array(width * height);
  for (let i = 0; i < out.length; i++) {
    if (wsum[i] === 0) {
      throw new Error(`stitch: pixel (${i % width}, ${Math.floor(i / width)}) not covered by any tile`);
    }
    out[i] = acc[i] / wsum[i];
  }
  return out;
}
