/**
 * Decoding image/mask pairs with sharp into model inputs.
 *
 * Matches SAM2's `SAM2Transforms`: sharp decodes the photo to u8 pixels, then pixels.ts (shared
 * with the browser page) resizes it to a `size`x`size` square ignoring its aspect ratio
 * (torchvision `Resize((s, s))` on floats, antialiased bilinear, pixel centres aligned) and
 * normalises it with the ImageNet mean/std. The mask is binarised at its own resolution under
 * its dataset's encoding (0/255, 0/1, palette, 16-bit...: see mask-encoding.ts), then resized
 * nearest-neighbour with pixel-centre mapping (torch 'nearest-exact').
 * EXIF orientation is not applied (neither does PIL's Image.open), so image and mask stay aligned.
 */
import sharp from 'sharp';
import type { Sample } from './dataset.js';
import {
  type MaskEncoding, MaskEncodingError, type MaskProfile, binarize, encodingOf, profileMask, readMaskValues,
  sampleIndices,
} from './mask-encoding.js';
import { type RawImage, resizeNormalize } from './pixels.js';
import { resampleNearest } from './resample.js';

export { IMAGENET_MEAN, IMAGENET_STD, normalizeRgb, type RawImage, resizeNormalize } from './pixels.js';

/** A sample that could not be used, and why (for `--skip-bad` reports). */
export interface BadSample {
  id: string;
  file: string;
  reason: string;
}

export class SampleError extends Error {
  constructor(
    readonly id: string,
    readonly file: string,
    readonly reason: string,
  ) {
    super(`${file}: ${reason}`);
    this.name = 'SampleError';
  }

  toBad(): BadSample {
    return { id: this.id, file: this.file, reason: this.reason };
  }
}

export interface LoadedPair {
  id: string;
  /** NHWC [size, size, 3], ImageNet-normalised. */
  image: Float32Array;
  /** [size, size], 0 or 1. */
  mask: Float32Array;
  origWidth: number;
  origHeight: number;
}

export interface DecodeOptions {
  /**
   * Mask pixels strictly above this value are crack, whatever the encoding (an override; by
   * default the sample's `maskEncoding`, or its own mask's profile, decides).
   */
  maskThreshold?: number;
}

function errText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

async function size2d(id: string, file: string): Promise<{ width: number; height: number }> {
  try {
    const m = await sharp(file).metadata();
    if (!m.width || !m.height) throw new Error('no image dimensions');
    return { width: m.width, height: m.height };
  } catch (e) {
    throw new SampleError(id, file, `unreadable image (${errText(e)})`);
  }
}

/** Checks both files' headers (readable, same size) without decoding pixels. */
export async function checkPair(s: Sample): Promise<{ width: number; height: number }> {
  const [im, mk] = await Promise.all([size2d(s.id, s.image), size2d(s.id, s.mask)]);
  if (im.width !== mk.width || im.height !== mk.height) {
    throw new SampleError(
      s.id,
      s.mask,
      `mask is ${mk.width}x${mk.height} but its image ${s.image} is ${im.width}x${im.height}`,
    );
  }
  return im;
}

/** Decodes a whole photo to raw pixels (SampleError naming the file when unreadable). */
export async function decodeRaw(file: string, id = file): Promise<RawImage> {
  try {
    const { data, info } = await sharp(file).removeAlpha().raw().toBuffer({ resolveWithObject: true });
    return { data, width: info.width, height: info.height, channels: info.channels };
  } catch (e) {
    throw new SampleError(id, file, `unreadable image (${errText(e)})`);
  }
}

/** Decodes a photo to normalised NHWC [size, size, 3]. */
export async function loadImage(
  file: string,
  size: number,
  id = file,
): Promise<{ image: Float32Array; origWidth: number; origHeight: number }> {
  const raw = await decodeRaw(file, id);
  try {
    return { image: resizeNormalize(raw, size), origWidth: raw.width, origHeight: raw.height };
  } catch (e) {
    throw new SampleError(id, file, `cannot resize image (${errText(e)})`);
  }
}

/** Nearest-neighbour resize with pixel-centre mapping of a one-channel map. */
export function resizeNearest(
  src: ArrayLike<number>,
  sw: number,
  sh: number,
  dw: number,
  dh: number,
): Float32Array {
  return resampleNearest(src, sw, sh, 1, { x: 0, y: 0, w: sw, h: sh }, dw, dh);
}

/**
 * Decodes a mask at its own resolution to 0/1 under `encoding` (its dataset's; without one, the
 * mask's own values decide) or a fixed `threshold`. A mask that contradicts the encoding (a 0/1
 * file among 0/255 ones) is a SampleError naming it, never an empty mask.
 */
export async function loadMask(
  file: string,
  id = file,
  encoding?: MaskEncoding | number,
): Promise<{ mask: Uint8Array; width: number; height: number }> {
  let m;
  try {
    m = await readMaskValues(file);
  } catch (e) {
    throw new SampleError(id, file, `unreadable mask (${errText(e)})`);
  }
  if (typeof encoding === 'number') {
    const mask = Uint8Array.from(m.values, (v) => (v > encoding ? 1 : 0));
    return { mask, width: m.width, height: m.height };
  }
  try {
    return { mask: binarize(file, m, encoding), width: m.width, height: m.height };
  } catch (e) {
    if (e instanceof MaskEncodingError) throw new SampleError(id, file, e.message.replace(`${file}: `, ''));
    throw e;
  }
}

/**
 * Loads one pair at `size`x`size`. Throws SampleError naming the file for an unreadable image or
 * mask, and naming both files and sizes when the mask's size differs from its image's (never
 * silently resized: that is usually a pairing mistake).
 */
export async function loadPair(
  sample: Sample,
  size: number,
  opts: DecodeOptions = {},
): Promise<LoadedPair> {
  const dims = await checkPair(sample);
  const [im, mk] = await Promise.all([
    loadImage(sample.image, size, sample.id),
    loadMask(sample.mask, sample.id, opts.maskThreshold ?? sample.maskEncoding),
  ]);
  return {
    id: sample.id,
    image: im.image,
    mask: resizeNearest(mk.mask, mk.width, mk.height, size, size),
    origWidth: dims.width,
    origHeight: dims.height,
  };
}

/**
 * Header check of every pair (readable, mask size matches), then the masks' encoding detected from
 * up to `maskSample` of them (evenly spread; default 128) and attached to every good sample, so
 * decoding binarises them the same way. With `skipBad` the bad ones are returned with their
 * reasons instead of throwing on the first. Masks that mix encodings throw a MaskEncodingError
 * naming two files (with or without `skipBad`: the set itself needs fixing).
 */
export async function checkSamples(
  samples: Sample[],
  opts: { skipBad?: boolean; concurrency?: number; maskSample?: number } = {},
): Promise<{ good: Sample[]; bad: BadSample[]; maskEncoding?: MaskEncoding }> {
  let good: Sample[] = [];
  const bad: BadSample[] = [];
  const conc = opts.concurrency ?? 16;
  const settle = (r: PromiseSettledResult<unknown>): boolean => {
    if (r.status === 'fulfilled') return true;
    if (!opts.skipBad || !(r.reason instanceof SampleError)) throw r.reason;
    bad.push(r.reason.toBad());
    return false;
  };
  for (let i = 0; i < samples.length; i += conc) {
    const chunk = samples.slice(i, i + conc);
    const res = await Promise.allSettled(chunk.map((s) => checkPair(s)));
    res.forEach((r, j) => {
      if (settle(r)) good.push(chunk[j]);
    });
  }
  if (good.length === 0) return { good, bad };
  const picked = sampleIndices(good.length, opts.maskSample ?? 128).map((i) => good[i]);
  const profiles: MaskProfile[] = [];
  const dropped = new Set<Sample>();
  for (let i = 0; i < picked.length; i += conc) {
    const chunk = picked.slice(i, i + conc);
    const res = await Promise.allSettled(chunk.map(async (s) => {
      try {
        return profileMask(s.mask, await readMaskValues(s.mask));
      } catch (e) {
        throw new SampleError(s.id, s.mask, `unreadable mask (${errText(e)})`);
      }
    }));
    res.forEach((r, j) => {
      if (r.status === 'fulfilled') profiles.push(r.value);
      else if (!settle(r)) dropped.add(chunk[j]);
    });
  }
  if (dropped.size) good = good.filter((s) => !dropped.has(s));
  if (profiles.length === 0) return { good, bad };
  const maskEncoding = encodingOf(profiles, good.length);
  return { good: good.map((s) => ({ ...s, maskEncoding })), bad, maskEncoding };
}
