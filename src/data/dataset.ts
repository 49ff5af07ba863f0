/**
 * Dataset discovery: image/mask pairs in the Kaggle crack-segmentation layout
 * (`<root>/<split>/images`, `<root>/<split>/masks`) or an explicit pair of folders, matched by
 * file stem whatever the extensions (Kaggle masks are `.jpg`, other sets use `.png`).
 */
import { existsSync, realpathSync, statSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { extname, join, resolve } from 'node:path';
import { causeOf, folderProblem } from '../io/fs-errors.js';
import { hash32 } from '../util/random.js';
import type { MaskEncoding } from './mask-encoding.js';

export interface Sample {
  /** File stem shared by the image and its mask. */
  id: string;
  image: string;
  mask: string;
  /** How its dataset's masks encode crack (set by `checkSamples`; detected per file without it). */
  maskEncoding?: MaskEncoding;
}

export interface DatasetOptions {
  /** Dataset root holding `<split>/images` and `<split>/masks` (or `images`/`masks` directly). */
  root?: string;
  /** Split folder under `root` (train, val, test...). */
  split?: string;
  /** Explicit image folder (with `masks`); overrides root/split. */
  images?: string;
  masks?: string;
}

export class DatasetError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DatasetError';
  }
}

export const IMAGE_EXTENSIONS = ['.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp'];

function isDir(p: string): boolean {
  return existsSync(p) && statSync(p).isDirectory();
}

/** Image files in `dir` keyed by stem; duplicate stems (a.jpg + a.png) are an error. */
async function filesByStem(dir: string, what: string): Promise<Map<string, string>> {
  const problem = folderProblem(dir);
  if (problem) throw new DatasetError(`${what} folder ${problem}: ${dir}`);
  const listed = await readdir(dir).catch((e) => {
    throw new DatasetError(`${what} folder ${dir} cannot be listed: ${causeOf(e)}`);
  });
  const names = listed.filter(
    (n) => !n.startsWith('.') && IMAGE_EXTENSIONS.includes(extname(n).toLowerCase()),
  );
  if (names.length === 0) {
    throw new DatasetError(
      `${what} folder is empty: ${dir} (no ${IMAGE_EXTENSIONS.join('/')} files)`,
    );
  }
  names.sort();
  const out = new Map<string, string>();
  for (const n of names) {
    const stem = n.slice(0, n.length - extname(n).length);
    const prev = out.get(stem);
    if (prev !== undefined) {
      throw new DatasetError(
        `duplicate stem '${stem}' in ${what} folder ${dir}: ${prev} and ${join(dir, n)}`,
      );
    }
    out.set(stem, join(dir, n));
  }
  return out;
}

/** The split folders under a Kaggle-layout root (those with an `images` subfolder). */
export async function listSplits(root: string): Promise<string[]> {
  if (!isDir(root)) throw new DatasetError(`dataset root not found: ${root}`);
  const entries = await readdir(root);
  return entries.filter((e) => isDir(join(root, e, 'images'))).sort();
}

function resolveFolders(opts: DatasetOptions): { images: string; masks: string } {
  if (opts.images || opts.masks) {
    if (!opts.images || !opts.masks) {
      throw new DatasetError('give both an images folder and a masks folder');
    }
    return { images: resolve(opts.images), masks: resolve(opts.masks) };
  }
  if (!opts.root) throw new DatasetError('no dataset given: pass a root (and split) or images+masks');
  const root = resolve(opts.root);
  const problem = folderProblem(root);
  if (problem) throw new DatasetError(`dataset root ${problem}: ${root}`);
  const base = opts.split ? join(root, opts.split) : root;
  if (opts.split && !isDir(base)) {
    throw new DatasetError(`split '${opts.split}' not found: ${base}`);
  }
  return { images: join(base, 'images'), masks: join(base, 'masks') };
}

/**
 * Every image with its mask, sorted by id. Masks without an image are ignored (some sets ship
 * extra masks); an image without a mask is an error listing the first few.
 */
export async function openDataset(opts: DatasetOptions): Promise<Sample[]> {
  const dirs = resolveFolders(opts);
  // Images read as their own masks would train on nonsense (and pair every file with itself).
  if (isDir(dirs.images) && isDir(dirs.masks) &&
    realpathSync(dirs.images) === realpathSync(dirs.masks)) {
    throw new DatasetError(
      `the images folder and the masks folder are the same folder (${realpathSync(dirs.images)}): ` +
        'give the folder holding the masks with --masks',
    );
  }
  if (!isDir(dirs.images) && opts.root && !opts.split) {
    const splits = await listSplits(resolve(opts.root)).catch(() => []);
    throw new DatasetError(
      `no images folder at ${dirs.images}` +
        (splits.length ? `; pick a split: ${splits.join(', ')}` : ''),
    );
  }
  const images = await filesByStem(dirs.images, 'images');
  const masks = await filesByStem(dirs.masks, 'masks');
  const missing: string[] = [];
  const out: Sample[] = [];
  for (const [id, image] of images) {
    const mask = masks.get(id);
    if (mask === undefined) missing.push(image);
    else out.push({ id, image, mask });
  }
  if (missing.length) {
    const shown = missing.slice(0, 5).join(', ');
    const more = missing.length > 5 ? ` and ${missing.length - 5} more` : '';
    throw new DatasetError(
      `${missing.length} image(s) without a mask in ${dirs.masks}: ${shown}${more}`,
    );
  }
  return out;
}

/**
 * Deterministic train/val split for sets without a val folder: a sample goes to val when the hash
 * of its id (with the seed) falls below `valFraction`, so the split does not depend on file order
 * and adding a file never moves the others. At least one sample lands on each side when possible.
 */
export function splitTrainVal(
  samples: Sample[],
  valFraction: number,
  seed = 0,
): { train: Sample[]; val: Sample[] } {
  if (!(valFraction >= 0 && valFraction < 1)) {
    throw new DatasetError(`splitTrainVal: valFraction must be in [0, 1), got ${valFraction}`);
  }
  const keyed = samples.map((s) => ({ s, u: hash32(s.id, seed) / 4294967296 }));
  let train = keyed.filter((k) => k.u >= valFraction);
  let val = keyed.filter((k) => k.u < valFraction);
  if (valFraction > 0 && val.length === 0 && train.length > 1) {
    // Tiny sets: move the lowest-hash sample so val is never empty.
    const lowest = train.reduce((a, b) => (b.u < a.u ? b : a));
    val = [lowest];
    train = train.filter((k) => k !== lowest);
  }
  const byId = (a: { s: Sample }, b: { s: Sample }) => (a.s.id < b.s.id ? -1 : a.s.id > b.s.id ? 1 : 0);
  return { train: train.sort(byId).map((k) => k.s), val: val.sort(byId).map((k) => k.s) };
}
