/**
 * Procedural crack photos: a concrete-like background (multi-octave value noise, grain, aggregate
 * speckles, uneven lighting) crossed by thin dark cracks drawn as smoothed random walks with
 * branches, 1-4 px wide and tapering at the tips. The embedded default dataset for a fresh machine
 * (no download); each sample is a pure function of (seed, size).
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { Rng, hash32 } from '../util/random.js';

export interface CrackSample {
  /** RGB, [height, width, 3]. */
  image: Uint8Array;
  /** [height, width], 0 or 255. */
  mask: Uint8Array;
  width: number;
  height: number;
}

/** Smooth value noise with `cell`-pixel lattice, in [0, 1]. */
function valueNoise(rng: Rng, w: number, h: number, cell: number, out: Float32Array, amp: number) {
  const gw = Math.ceil(w / cell) + 2;
  const gh = Math.ceil(h / cell) + 2;
  const g = Float32Array.from({ length: gw * gh }, () => rng.next());
  const ox = rng.next() * cell;
  const oy = rng.next() * cell;
  const smooth = (t: number) => t * t * (3 - 2 * t);
  for (let y = 0; y < h; y++) {
    const fy = (y + oy) / cell;
    const iy = Math.floor(fy);
    const ty = smooth(fy - iy);
    for (let x = 0; x < w; x++) {
      const fx = (x + ox) / cell;
      const ix = Math.floor(fx);
      const tx = smooth(fx - ix);
      const a = g[iy * gw + ix] * (1 - tx) + g[iy * gw + ix + 1] * tx;
      const b = g[(iy + 1) * gw + ix] * (1 - tx) + g[(iy + 1) * gw + ix + 1] * tx;
      out[y * w + x] += amp * (a * (1 - ty) + b * ty);
    }
  }
}

/** Anti-aliased disc into a coverage map (max-combined). */
function stamp(cov: Float32Array, w: number, h: number, cx: number, cy: number, r: number) {
  const x0 = Math.max(0, Math.floor(cx - r - 1));
  const x1 = Math.min(w - 1, Math.ceil(cx + r + 1));
  const y0 = Math.max(0, Math.floor(cy - r - 1));
  const y1 = Math.min(h - 1, Math.ceil(cy + r + 1));
  for (let y = y0; y <= y1; y++) {
    for (let x = x0; x <= x1; x++) {
      const d = Math.hypot(x + 0.5 - cx, y + 0.5 - cy);
      const c = Math.min(1, Math.max(0, r + 0.5 - d));
      const i = y * w + x;
      if (c > cov[i]) cov[i] = c;
    }
  }
}

interface Walk {
  x: number;
  y: number;
  angle: number;
  length: number;
  width: number;
  depth: number;
}

/** One crack: a random walk from (x, y), stamping discs every half pixel, spawning branches. */
function drawCrack(rng: Rng, cov: Float32Array, w: number, h: number, start: Walk) {
  const stack: Walk[] = [start];
  while (stack.length) {
    const k = stack.pop()!;
    let { x, y } = k;
    // A slowly drifting heading plus a mean-reverting jag: jagged but directional, no loops.
    let heading = k.angle;
    let jag = 0;
    let angle = heading;
    const steps = Math.floor(k.length / 0.5);
    for (let s = 0; s < steps; s++) {
      if (x < -4 || y < -4 || x > w + 4 || y > h + 4) break;
      heading += 0.012 * rng.normal();
      if (s % 4 === 0) jag = 0.85 * jag + 0.22 * rng.normal();
      angle = heading + jag;
      x += 0.5 * Math.cos(angle);
      y += 0.5 * Math.sin(angle);
      const t = s / steps;
      const taper = Math.min(1, (1 - t) * 6, k.depth === 0 ? 1 : t * 12 + 0.3);
      const width = Math.max(1, k.width * taper * (0.85 + 0.3 * rng.next()));
      stamp(cov, w, h, x, y, width / 2);
      if (k.depth < 2 && rng.next() < 0.004) {
        const side = rng.next() < 0.5 ? -1 : 1;
        stack.push({
          x,
          y,
          angle: angle + side * rng.range(0.4, 1.2),
          length: (k.length - s * 0.5) * rng.range(0.2, 0.6),
          width: Math.max(1, k.width * rng.range(0.5, 0.8)),
          depth: k.depth + 1,
        });
      }
    }
  }
}

/**
 * How the cracks look. The defaults mimic real photos (thin, low-contrast cracks); the CLI demo
 * asks for wider, darker ones so that a small randomly initialised model learns them in minutes.
 */
export interface CrackStyle {
  /** Main crack width in pixels, drawn uniformly in [min, max] (default [1, 4]). */
  width?: [number, number];
  /** Crack luminance as a fraction of the background's, drawn in [min, max] (default [0.25, 0.5]). */
  dark?: [number, number];
  /** Target crack fraction of the pixels, drawn in [min, max] (default [0.015, 0.06]). */
  fraction?: [number, number];
}

/**
 * A `width`x`height` crack photo and its mask (height defaults to width). Deterministic per seed
 * and style; by default the crack fraction is drawn in about [1.5%, 6%] of the pixels.
 */
export function generateCrackSample(
  seed: number,
  size: number,
  height = size,
  style: CrackStyle = {},
): CrackSample {
  const [wMin, wMax] = style.width ?? [1, 4];
  const [dMin, dMax] = style.dark ?? [0.25, 0.5];
  const [fMin, fMax] = style.fraction ?? [0.015, 0.06];
  const w = size;
  const h = height;
  const n = w * h;
  const rng = new Rng(hash32('crack', seed, w, h));
  // Background luminance in [0, 1].
  const lum = new Float32Array(n);
  const scale = Math.max(w, h);
  valueNoise(rng, w, h, Math.max(4, scale / 3), lum, 0.35);
  valueNoise(rng, w, h, Math.max(3, scale / 10), lum, 0.2);
  valueNoise(rng, w, h, 6, lum, 0.12);
  valueNoise(rng, w, h, 2, lum, 0.08);
  const base = rng.range(0.35, 0.55);
  const gx = rng.range(-0.15, 0.15);
  const gy = rng.range(-0.15, 0.15);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const i = y * w + x;
      lum[i] = base + (lum[i] - 0.375) * 0.5 + gx * (x / w - 0.5) + gy * (y / h - 0.5);
    }
  }
  // Aggregate speckles and pores.
  const speckles = Math.floor((n / 400) * rng.range(0.5, 1.5));
  for (let s = 0; s < speckles; s++) {
    const cx = rng.next() * w;
    const cy = rng.next() * h;
    const r = rng.range(0.5, 2.2);
    const dv = rng.next() < 0.3 ? -rng.range(0.08, 0.2) : rng.range(-0.06, 0.08);
    for (let y = Math.max(0, Math.floor(cy - r)); y < Math.min(h, cy + r); y++) {
      for (let x = Math.max(0, Math.floor(cx - r)); x < Math.min(w, cx + r); x++) {
        if (Math.hypot(x + 0.5 - cx, y + 0.5 - cy) <= r) lum[y * w + x] += dv;
      }
    }
  }
  // Cracks until the target fraction is reached.
  const cov = new Float32Array(n);
  const target = rng.range(fMin, fMax);
  let frac = 0;
  for (let c = 0; c < 12 && frac < target; c++) {
    const x = rng.range(0.1, 0.9) * w;
    const y = rng.range(0.1, 0.9) * h;
    const angle = rng.next() * 2 * Math.PI;
    const length = rng.range(0.3, 0.7) * scale;
    const width = rng.range(wMin, wMax);
    drawCrack(rng, cov, w, h, { x, y, angle, length, width, depth: 0 });
    drawCrack(rng, cov, w, h, { x, y, angle: angle + Math.PI, length, width, depth: 0 });
    let m = 0;
    for (let i = 0; i < n; i++) if (cov[i] >= 0.5) m++;
    frac = m / n;
  }
  // Shade: cracks are dark with a slightly darker core; grain on top; a warm or cool grey tint.
  const dark = rng.range(dMin, dMax);
  const tint = [rng.range(-0.03, 0.04), rng.range(-0.02, 0.02), rng.range(-0.04, 0.03)];
  const image = new Uint8Array(n * 3);
  const mask = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    const v = lum[i] * (1 - (1 - dark) * cov[i]) + 0.025 * rng.normal();
    for (let k = 0; k < 3; k++) {
      image[i * 3 + k] = Math.round(255 * Math.min(1, Math.max(0, v + tint[k])));
    }
    mask[i] = cov[i] >= 0.5 ? 255 : 0;
  }
  return { image, mask, width: w, height: h };
}

/** Writes one sample: the photo as JPEG (quality 92 by default), the mask as PNG. */
export async function writeCrackSample(
  s: CrackSample,
  imagePath: string,
  maskPath: string,
  quality = 92,
): Promise<void> {
  const raw = (ch: 1 | 3) => ({ raw: { width: s.width, height: s.height, channels: ch } });
  await Promise.all([
    sharp(Buffer.from(s.image.buffer, s.image.byteOffset, s.image.length), raw(3))
      .jpeg({ quality })
      .toFile(imagePath),
    sharp(Buffer.from(s.mask.buffer, s.mask.byteOffset, s.mask.length), raw(1))
      .toColourspace('b-w')
      .png({ compressionLevel: 9 })
      .toFile(maskPath),
  ]);
}

export interface SyntheticOptions {
  train: number;
  val: number;
  test: number;
  size: number;
  seed: number;
  /** Crack look (default: thin, low-contrast, as real photos). */
  style?: CrackStyle;
}

/**
 * Writes a synthetic set in the Kaggle layout (`<dir>/<split>/images/*.jpg`, `masks/*.png`).
 * A `manifest.json` records the options: a second call with the same options reuses the files.
 */
export async function writeSyntheticDataset(
  dir: string,
  opts: SyntheticOptions,
): Promise<{ root: string; reused: boolean }> {
  const manifestPath = join(dir, 'manifest.json');
  const manifest = JSON.stringify({ generator: 'sam2-lora synthetic cracks v1', ...opts });
  if (existsSync(manifestPath) && readFileSync(manifestPath, 'utf8') === manifest) {
    return { root: dir, reused: true };
  }
  for (const split of ['train', 'val', 'test'] as const) {
    const count = opts[split];
    if (count <= 0) continue;
    const images = join(dir, split, 'images');
    const masks = join(dir, split, 'masks');
    mkdirSync(images, { recursive: true });
    mkdirSync(masks, { recursive: true });
    const jobs: Promise<void>[] = [];
    for (let i = 0; i < count; i++) {
      const id = `syn_${split}_${String(i).padStart(4, '0')}`;
      const s = generateCrackSample(hash32(split, opts.seed, i), opts.size, opts.size, opts.style);
      jobs.push(writeCrackSample(s, join(images, `${id}.jpg`), join(masks, `${id}.png`)));
      if (jobs.length >= 8) await Promise.all(jobs.splice(0));
    }
    await Promise.all(jobs);
  }
  writeFileSync(manifestPath, manifest);
  return { root: dir, reused: false };
}
