/**
 * Seeded augmentation of decoded pairs. It runs on the decoded float arrays at model size (after
 * the resize and the ImageNet normalisation of pixels.ts), so it is pure, cheap, testable, and the same
 * code serves every dataset; the random resized crop resamples the window back to full size
 * (bilinear for the image, nearest for the mask, same pixel-centre mapping so they stay aligned).
 * Order: crop → flips → 90° rotation (one gather) → brightness/contrast (image only).
 */
import { IMAGENET_MEAN, IMAGENET_STD } from './decode.js';
import { type Window, resampleBilinear, resampleNearest } from './resample.js';
import { type Rng, withDefaults } from '../util/random.js';

export interface AugmentOptions {
  /** Probability of a horizontal flip (default 0.5). */
  hflip?: number;
  /** Probability of a vertical flip (default 0.5): cracks have no up/down. */
  vflip?: number;
  /** Random rotation by a multiple of 90° (default true). */
  rot90?: boolean;
  /** Brightness factor drawn from [1 - b, 1 + b] (default 0.2). */
  brightness?: number;
  /** Contrast factor drawn from [1 - c, 1 + c] around the image mean (default 0.2). */
  contrast?: number;
  /** Probability of a random resized crop (default 0.5). */
  cropProb?: number;
  /** Crop area as a fraction of the image (default [0.5, 1]). */
  cropScale?: [number, number];
  /** Crop aspect ratio w/h range (default [3/4, 4/3], as torchvision). */
  cropRatio?: [number, number];
}

export const DEFAULT_AUGMENT: Required<AugmentOptions> = {
  hflip: 0.5,
  vflip: 0.5,
  rot90: true,
  brightness: 0.2,
  contrast: 0.2,
  cropProb: 0.5,
  cropScale: [0.5, 1],
  cropRatio: [3 / 4, 4 / 3],
};

/** One draw of the augmentation parameters. */
export interface AugmentParams {
  crop: Window | null;
  hflip: boolean;
  vflip: boolean;
  /** Quarter turns clockwise. */
  rot: 0 | 1 | 2 | 3;
  brightness: number;
  contrast: number;
}

export function sampleAugment(rng: Rng, size: number, options: AugmentOptions = {}): AugmentParams {
  const o = withDefaults(DEFAULT_AUGMENT, options);
  // Always draw the same number of values so a parameter's setting never shifts the others.
  const u = Array.from({ length: 9 }, () => rng.next());
  let crop: Window | null = null;
  if (u[0] < o.cropProb) {
    const area = size * size * (o.cropScale[0] + (o.cropScale[1] - o.cropScale[0]) * u[1]);
    const [lr0, lr1] = [Math.log(o.cropRatio[0]), Math.log(o.cropRatio[1])];
    const ratio = Math.exp(lr0 + (lr1 - lr0) * u[2]);
    const w = Math.min(size, Math.max(1, Math.round(Math.sqrt(area * ratio))));
    const h = Math.min(size, Math.max(1, Math.round(Math.sqrt(area / ratio))));
    crop = { x: Math.floor(u[3] * (size - w + 1)), y: Math.floor(u[4] * (size - h + 1)), w, h };
  }
  return {
    crop,
    hflip: u[5] < o.hflip,
    vflip: u[6] < o.vflip,
    rot: (o.rot90 ? Math.floor(u[7] * 4) : 0) as 0 | 1 | 2 | 3,
    brightness: 1 + o.brightness * (2 * u[8] - 1),
    contrast: 1 + o.contrast * (2 * rng.next() - 1),
  };
}

/**
 * Applies `p` to an NHWC [size, size, 3] image and its [size, size] mask (new arrays).
 * Output pixel (x, y) reads the (pre-rotation, pre-flip) source given by the inverse transform.
 */
export function applyAugment(
  image: Float32Array,
  mask: Float32Array,
  size: number,
  p: AugmentParams,
): { image: Float32Array; mask: Float32Array } {
  const n = size * size;
  if (image.length !== n * 3 || mask.length !== n) {
    throw new Error(
      `applyAugment: expected image [${size},${size},3] and mask [${size},${size}], ` +
        `got ${image.length} and ${mask.length} values`,
    );
  }
  let img = image;
  let msk = mask;
  if (p.crop) {
    img = resampleBilinear(image, size, size, 3, p.crop, size, size);
    msk = resampleNearest(mask, size, size, 1, p.crop, size, size);
  }
  // The inverse of (flips, then clockwise quarter turns) is affine on indices:
  // source (sx, sy) = (ax*x + bx*y + cx, ay*x + by*y + cy), found from three probe points.
  const inv = (x: number, y: number): [number, number] => {
    let sx = x;
    let sy = y;
    if (p.rot === 1) [sx, sy] = [y, last - x];
    else if (p.rot === 2) [sx, sy] = [last - x, last - y];
    else if (p.rot === 3) [sx, sy] = [last - y, x];
    if (p.hflip) sx = last - sx;
    if (p.vflip) sy = last - sy;
    return [sx, sy];
  };
  const last = size - 1;
  const [cx, cy] = inv(0, 0);
  const [px, py] = inv(1, 0);
  const [qx, qy] = inv(0, 1);
  // Source flat index = c0 + x * dx + y * dy.
  const c0 = cy * size + cx;
  const dx = (py - cy) * size + (px - cx);
  const dy = (qy - cy) * size + (qx - cx);
  const outI = new Float32Array(n * 3);
  const outM = new Float32Array(n);
  for (let y = 0; y < size; y++) {
    let s = c0 + y * dy;
    let d = y * size;
    for (let x = 0; x < size; x++, s += dx, d++) {
      outM[d] = msk[s];
      outI[d * 3] = img[s * 3];
      outI[d * 3 + 1] = img[s * 3 + 1];
      outI[d * 3 + 2] = img[s * 3 + 2];
    }
  }
  if (p.brightness !== 1 || p.contrast !== 1) jitter(outI, p.brightness, p.contrast);
  return { image: outI, mask: outM };
}

/** Brightness (multiply) then contrast (around the mean grey), in [0, 1] space, clamped. */
function jitter(img: Float32Array, b: number, c: number): void {
  const n = img.length / 3;
  const sums = [0, 0, 0];
  for (let i = 0; i < n * 3; i += 3) {
    sums[0] += img[i];
    sums[1] += img[i + 1];
    sums[2] += img[i + 2];
  }
  let mean = 0;
  for (let k = 0; k < 3; k++) mean += (sums[k] / n) * IMAGENET_STD[k] + IMAGENET_MEAN[k];
  mean = (mean / 3) * b;
  // Per channel: pixel01 = clamp(x * A + B, 0, 1), then normalised again.
  for (let k = 0; k < 3; k++) {
    const A = IMAGENET_STD[k] * b * c;
    const B = IMAGENET_MEAN[k] * b * c + mean * (1 - c);
    const inv = 1 / IMAGENET_STD[k];
    const m = IMAGENET_MEAN[k];
    for (let i = k; i < n * 3; i += 3) {
      let v = img[i] * A + B;
      v = v < 0 ? 0 : v > 1 ? 1 : v;
      img[i] = (v - m) * inv;
    }
  }
}

/** Draws parameters from `rng` and applies them. */
export function augmentPair(
  image: Float32Array,
  mask: Float32Array,
  size: number,
  rng: Rng,
  options: AugmentOptions = {},
): { image: Float32Array; mask: Float32Array; params: AugmentParams } {
  const params = sampleAugment(rng, size, options);
  return { ...applyAugment(image, mask, size, params), params };
}
