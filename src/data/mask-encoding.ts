/**
 * How a dataset's masks encode crack pixels, detected from the masks' own values: 0/255 grey
 * (the common case), 0/1 (very common, and all background under a fixed > 127 rule), palette PNGs,
 * 16-bit PNGs, JPEG-noisy or anti-aliased grey. One encoding holds per dataset (split), so a mask
 * that disagrees with it (a 0/1 file among 0/255 ones) is an error naming the file rather than a
 * mask silently read as empty.
 *
 * A mask's value per pixel is its grey level, or for colour masks (palette PNGs decode to RGB) its
 * largest channel, at the file's own bit depth (8 or 16). A pixel is crack when value > threshold.
 */
import sharp from 'sharp';

export type MaskEncodingKind = '0/1' | '0/255' | 'grey' | 'palette' | '16-bit' | 'levels' | 'empty';

export interface MaskEncoding {
  kind: MaskEncodingKind;
  /** A pixel is crack when its value is strictly above this. */
  threshold: number;
  /** Bit depth of the masks' values (all masks of a dataset share it). */
  depth: 8 | 16;
  /** Highest value a mask of this encoding holds: a larger one means another encoding. */
  maxLevel: number;
  /** One line for the user, e.g. "0/1 (8-bit grey; crack > 0), from 40 of 40 masks". */
  description: string;
  /** Masks looked at, of `total`, and how many of those hold a crack pixel. */
  sampled: number;
  total: number;
  withCrack: number;
  /** Set when no sampled mask holds a crack pixel (Dice and IoU are then undefined). */
  warning?: string;
}

export class MaskEncodingError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'MaskEncodingError';
  }
}

/** A mask's values at its own resolution and bit depth. */
export interface MaskValues {
  values: Uint8Array | Uint16Array;
  width: number;
  height: number;
  depth: 8 | 16;
  palette: boolean;
}

/** Decodes a mask to one value per pixel (grey level, or largest colour channel). */
export async function readMaskValues(file: string): Promise<MaskValues> {
  const meta = await sharp(file).metadata();
  const depth: 8 | 16 = meta.depth === 'ushort' || meta.depth === 'short' ? 16 : 8;
  const colourChannels = (meta.channels ?? 1) - (meta.hasAlpha ? 1 : 0);
  let img = sharp(file).removeAlpha();
  // Grey files stay one channel (sharp would otherwise expand them to sRGB).
  if (colourChannels < 3) img = img.toColourspace(depth === 16 ? 'grey16' : 'b-w');
  const { data, info } = await img
    .raw(depth === 16 ? { depth: 'ushort' } : {})
    .toBuffer({ resolveWithObject: true });
  const n = info.width * info.height;
  const src =
    depth === 16
      ? new Uint16Array(data.buffer, data.byteOffset, data.byteLength >> 1)
      : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  const ch = info.channels;
  let values: Uint8Array | Uint16Array;
  if (ch === 1) values = src;
  else {
    values = depth === 16 ? new Uint16Array(n) : new Uint8Array(n);
    for (let i = 0; i < n; i++) {
      let m = 0;
      for (let c = 0; c < Math.min(ch, 3); c++) m = Math.max(m, src[i * ch + c]);
      values[i] = m;
    }
  }
  return { values, width: info.width, height: info.height, depth, palette: meta.isPalette === true };
}

/** What one mask's values say about its encoding. */
export interface MaskProfile {
  file: string;
  depth: 8 | 16;
  palette: boolean;
  max: number;
  /** Distinct values present (up to 3 are kept; `levels` counts them all). */
  distinct: number[];
  levels: number;
  /** 'empty': all 0; 'two-level': {0, k} or {k}; 'grey': many levels reaching past mid-scale. */
  shape: 'empty' | 'two-level' | 'grey' | 'ambiguous';
}

export function profileMask(file: string, m: MaskValues): MaskProfile {
  const hist = new Uint32Array(m.depth === 16 ? 65536 : 256);
  const v = m.values;
  for (let i = 0; i < v.length; i++) hist[v[i]]++;
  const distinct: number[] = [];
  let levels = 0;
  let max = 0;
  for (let k = 0; k < hist.length; k++) {
    if (!hist[k]) continue;
    levels++;
    max = k;
    if (distinct.length < 3) distinct.push(k);
  }
  const full = m.depth === 16 ? 65535 : 255;
  let shape: MaskProfile['shape'];
  if (max === 0) shape = 'empty';
  else if (levels === 1 || (levels === 2 && distinct[0] === 0)) shape = 'two-level';
  else if (max > full / 2) shape = 'grey';
  else shape = 'ambiguous';
  return { file, depth: m.depth, palette: m.palette, max, distinct, levels, shape };
}

const fullScale = (depth: 8 | 16) => (depth === 16 ? 65535 : 255);

function levelsText(p: MaskProfile): string {
  return p.levels <= 3 ? p.distinct.join('/') : `${p.levels} levels from ${p.distinct[0]} to ${p.max}`;
}

/**
 * The encoding shared by these masks' profiles. Throws MaskEncodingError naming files when they
 * disagree (0/1 next to 0/255, 8-bit next to 16-bit) or when a mask is not binary-like.
 */
export function encodingOf(profiles: MaskProfile[], total = profiles.length): MaskEncoding {
  // Low-level noise (several small values) is read as background in a grey (JPEG) dataset only.
  const hasGrey = profiles.some((p) => p.shape === 'grey');
  const bad = profiles.find((p) => p.shape === 'ambiguous');
  if (bad && !hasGrey) {
    throw new MaskEncodingError(
      `${bad.file}: mask values ${levelsText(bad)} are not a binary mask (expected two levels ` +
        'such as 0/1 or 0/255, or grey reaching past mid-scale)',
    );
  }
  const nonEmpty = profiles.filter((p) => p.shape === 'two-level' || p.shape === 'grey');
  const withCrack = nonEmpty.length;
  const sampledText = `from ${profiles.length} of ${total} masks`;
  const depths = new Set(profiles.map((p) => p.depth));
  if (depths.size > 1) {
    const a = profiles.find((p) => p.depth === 8)!;
    const b = profiles.find((p) => p.depth === 16)!;
    throw new MaskEncodingError(
      `masks mix bit depths: ${a.file} is 8-bit, ${b.file} is 16-bit; convert them to one encoding`,
    );
  }
  const depth = profiles[0]?.depth ?? 8;
  const full = fullScale(depth);
  if (nonEmpty.length === 0) {
    const all = profiles.length === total;
    const warning = all
      ? `no mask of these ${total} holds a crack pixel: Dice and IoU are undefined on them`
      : `none of the ${profiles.length} masks sampled (of ${total}) holds a crack pixel`;
    return {
      kind: 'empty', threshold: 0, depth, maxLevel: full, sampled: profiles.length, total,
      withCrack: 0, warning, description: `unknown (every mask sampled is all 0) ${sampledText}`,
    };
  }
  // The level each mask uses for crack (grey masks: full scale), and a threshold between 0 and the
  // lowest of them: every mask must put its crack above the threshold halfway to the highest.
  const level = (p: MaskProfile) => (p.shape === 'grey' ? full : p.max);
  const lo = nonEmpty.reduce((a, b) => (level(b) < level(a) ? b : a));
  const hi = nonEmpty.reduce((a, b) => (level(b) > level(a) ? b : a));
  const threshold = Math.floor(level(hi) / 2);
  if (level(lo) <= threshold) {
    throw new MaskEncodingError(
      `masks mix encodings: ${lo.file} has values ${levelsText(lo)} but ${hi.file} has ` +
        `${levelsText(hi)}; one threshold cannot read both (convert them to one encoding)`,
    );
  }
  const grey = nonEmpty.some((p) => p.shape === 'grey');
  const palette = nonEmpty.every((p) => p.palette);
  const k = level(hi);
  let kind: MaskEncodingKind;
  let what: string;
  if (palette) {
    kind = 'palette';
    what = `palette PNG (black background, crack colours up to level ${k} on their largest channel)`;
  } else if (depth === 16) {
    kind = '16-bit';
    what = grey ? '16-bit grey (several levels)' : `16-bit 0/${k}`;
  } else if (grey) {
    kind = 'grey';
    what = '0/255 with intermediate grey levels (JPEG noise or anti-aliasing)';
  } else if (k === 1) {
    kind = '0/1';
    what = '0/1';
  } else if (k === 255) {
    kind = '0/255';
    what = '0/255';
  } else {
    kind = 'levels';
    what = `0/${k}`;
  }
  return {
    kind,
    threshold,
    depth,
    maxLevel: grey ? full : k,
    description: `${what}: crack where value > ${threshold} (${sampledText}, ${withCrack} with crack)`,
    sampled: profiles.length,
    total,
    withCrack,
  };
}

/**
 * Binarises a decoded mask under `enc` (detected on its dataset), or under its own profile when no
 * encoding is known. Throws MaskEncodingError when the mask contradicts the encoding: its crack
 * would be lost (highest value at or below the threshold) or it uses levels the encoding has not.
 */
export function binarize(file: string, m: MaskValues, enc?: MaskEncoding): Uint8Array {
  const p = profileMask(file, m);
  let e = enc;
  if (!e || e.kind === 'empty') e = encodingOf([p]);
  else if (p.shape !== 'empty') {
    const said = `the dataset's masks are ${e.description.split(':')[0]}`;
    if (p.depth !== e.depth) {
      throw new MaskEncodingError(`${file}: a ${p.depth}-bit mask, but ${said}`);
    }
    const noise = p.shape === 'ambiguous' && e.kind === 'grey' && p.max <= e.threshold;
    const lost = p.max <= e.threshold && !noise;
    if ((p.shape === 'ambiguous' && !noise) || p.max > e.maxLevel || lost) {
      throw new MaskEncodingError(
        `${file}: mask values ${levelsText(p)} do not fit the dataset's encoding (${said}, ` +
          `crack where value > ${e.threshold})`,
      );
    }
  }
  const out = new Uint8Array(m.values.length);
  const t = e.threshold;
  for (let i = 0; i < out.length; i++) out[i] = m.values[i] > t ? 1 : 0;
  return out;
}

/** Evenly spread indices of at most `max` of `n` items (all of them when n <= max). */
export function sampleIndices(n: number, max: number): number[] {
  if (n <= max) return Array.from({ length: n }, (_, i) => i);
  return Array.from({ length: max }, (_, i) => Math.floor((i * n) / max));
}
