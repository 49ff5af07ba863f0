/** Segmenting photos with a trained adapter: tiles → model → sigmoid → stitched masks. */
import { existsSync, mkdirSync, readdirSync, realpathSync, statSync } from 'node:fs';
import { basename, dirname, extname, join, relative, resolve, isAbsolute } from 'node:path';
import { IMAGE_EXTENSIONS } from '../data/dataset.js';
import { type BadSample, SampleError } from '../data/decode.js';
import { fileError } from '../io/fs-errors.js';
import type { Segmenter } from '../model/segmenter.js';
import { predictPhoto, writeMaskPng, writeOverlayPng, writeProbPng } from './images.js';
import { type PhotoProb, segmenterTile } from './segment.js';

export type { PhotoProb } from './segment.js';

export interface PredictOptions {
  size: number;
  threshold: number;
  /** Tile side in photo pixels (default: the model size, so large photos are not squashed). */
  tile?: number;
  overlap?: number;
  out: string;
  /** Skip photos that cannot be read (reported through `onSkip`) instead of stopping. */
  skipBad?: boolean;
  onSkip?: (bad: BadSample) => void;
}

export interface PredictedFile {
  input: string;
  mask: string;
  overlay: string;
  tiles: number;
  crackFraction: number;
}

export class PredictError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PredictError';
  }
}

/** The files predict writes for each photo: `<name>.mask.png`, `.prob.png`, `.overlay.png`. */
export const OUTPUT_SUFFIXES = ['.mask.png', '.prob.png', '.overlay.png'];
const isOutputName = (f: string) => OUTPUT_SUFFIXES.some((s) => f.toLowerCase().endsWith(s));

/**
 * Inputs: a file or every image directly in a folder (not its subfolders, so an output folder
 * inside it is never read). Files named like our own outputs (`*.mask.png`, ...) are left out:
 * predict never reads its own outputs back.
 */
export function listInputs(path: string): string[] {
  let st;
  try {
    st = statSync(path);
  } catch (e) {
    throw fileError(path, e, 'a photo or a folder of photos');
  }
  if (st.isDirectory()) {
    const files = readdirSync(path)
      .filter((f) => IMAGE_EXTENSIONS.includes(extname(f).toLowerCase()) && !isOutputName(f))
      .sort()
      .map((f) => join(path, f));
    if (files.length === 0) {
      throw new PredictError(`${path}: no images (${IMAGE_EXTENSIONS.join(' ')}) in this folder`);
    }
    return files;
  }
  return [path];
}

/** Real path of `p`, or of its nearest existing parent joined with the rest (p may not exist yet). */
function realish(p: string): string {
  const abs = resolve(p);
  if (existsSync(abs)) return realpathSync(abs);
  const parent = dirname(abs);
  return parent === abs ? abs : join(realish(parent), basename(abs));
}

/** True when `inner` is `outer` or lies inside it. */
function within(inner: string, outer: string): boolean {
  const r = relative(outer, inner);
  return r === '' || (!r.startsWith('..') && !isAbsolute(r));
}

/**
 * Refuses an output folder that would overwrite an input or be read back as one: the output equal
 * to (or inside) an input photo, or equal to a folder the input photos lie in (the masks would sit
 * among the photos and be predicted on the next run), or holding a file the prediction needs
 * (`protect`: the adapter, the base checkpoint). An output folder inside the input folder (e.g.
 * `photos/predictions`) is fine: inputs are listed without descending into subfolders, and files
 * named like our outputs are never listed as inputs.
 */
export function checkOutputFolder(
  out: string,
  input: string,
  inputs: string[],
  protect: { what: string; path: string }[] = [],
): void {
  const o = realish(out);
  const inp = realish(input);
  if (existsSync(inp) && statSync(inp).isDirectory() && o === inp) {
    throw new PredictError(`--out ${out} is the input folder ${input}: the masks would be written ` +
      'among the photos and read back as photos on the next run; choose another folder (e.g. ' +
      `${join(input, 'predictions')})`);
  }
  for (const f of inputs) {
    const r = realish(f);
    if (within(o, r)) throw new PredictError(`--out ${out} is an input photo (${f}); choose a folder`);
    if (dirname(r) === o) {
      throw new PredictError(`--out ${out} is the folder of the input photo ${f}: outputs and ` +
        'inputs must not mix (a later run would read the masks back); choose another --out');
    }
  }
  for (const p of protect) {
    if (p.path && within(realish(p.path), o)) {
      throw new PredictError(`the ${p.what} ${p.path} lies inside the output folder ${out}; ` +
        'choose another --out');
    }
  }
}

/**
 * Output base names, unique per input: `<stem>` normally, `<name with its extension>` (`a.jpg`,
 * `a.png`) for inputs whose stems collide, so `a.jpg` and `a.png` never overwrite each other.
 */
export function outputNames(inputs: string[]): string[] {
  const stem = (f: string) => basename(f, extname(f));
  const count = new Map<string, number>();
  for (const f of inputs) count.set(stem(f).toLowerCase(), (count.get(stem(f).toLowerCase()) ?? 0) + 1);
  const names = inputs.map((f) => (count.get(stem(f).toLowerCase())! > 1 ? basename(f) : stem(f)));
  const seen = new Set<string>();
  for (let i = 0; i < names.length; i++) {
    // Two inputs with one name (only possible across folders): number the later ones.
    let n = names[i];
    for (let k = 2; seen.has(n.toLowerCase()); k++) n = `${names[i]}-${k}`;
    names[i] = n;
    seen.add(n.toLowerCase());
  }
  return names;
}

/** The files of one photo whose output base is `base` (folder + name from outputNames). */
export function outputPaths(base: string): { mask: string; prob: string; overlay: string } {
  return { mask: `${base}.mask.png`, prob: `${base}.prob.png`, overlay: `${base}.overlay.png` };
}

/** One photo's probability map at its own resolution (tiled, stitched); SampleError if unreadable. */
export async function predictProb(
  model: Segmenter,
  input: string,
  opts: Pick<PredictOptions, 'size' | 'tile' | 'overlap'>,
): Promise<PhotoProb> {
  model.train(false);
  return predictPhoto(input, { size: opts.size, tile: opts.tile, overlap: opts.overlap },
    segmenterTile(model, opts.size));
}

/**
 * Writes one photo's mask, probability and overlay PNGs to `paths` (the distributed worker
 * passes temporary names it renames afterwards); returns the crack fraction.
 */
export async function writePhotoOutputs(
  paths: { mask: string; prob: string; overlay: string },
  input: string,
  photo: PhotoProb,
  threshold: number,
): Promise<number> {
  const { prob, width, height } = photo;
  await writeMaskPng(paths.mask, prob, width, height, threshold);
  await writeProbPng(paths.prob, prob, width, height);
  await writeOverlayPng(paths.overlay, input, prob, width, height, threshold);
  let on = 0;
  for (const v of prob) if (v > threshold) on++;
  return on / prob.length;
}

export async function predictFiles(
  model: Segmenter,
  inputs: string[],
  opts: PredictOptions,
): Promise<PredictedFile[]> {
  try {
    mkdirSync(opts.out, { recursive: true });
  } catch (e) {
    throw fileError(opts.out, e, 'an output folder', 'create');
  }
  const names = outputNames(inputs);
  const results: PredictedFile[] = [];
  for (const [i, input] of inputs.entries()) {
    let photo;
    try {
      photo = await predictProb(model, input, opts);
    } catch (e) {
      if (opts.skipBad && e instanceof SampleError) {
        opts.onSkip?.(e.toBad());
        continue;
      }
      throw e;
    }
    const paths = outputPaths(join(opts.out, names[i]));
    const crackFraction = await writePhotoOutputs(paths, input, photo, opts.threshold);
    results.push({ input, mask: paths.mask, overlay: paths.overlay, tiles: photo.tiles, crackFraction });
  }
  return results;
}
