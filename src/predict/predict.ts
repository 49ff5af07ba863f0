/** Segmenting photos with a trained adapter: tiles → model → sigmoid → stitched masks. */
import { existsSync, mkdirSync, readdirSync, statSync } from 'node:fs';
import { basename, extname, join } from 'node:path';
import { IMAGE_EXTENSIONS } from '../data/dataset.js';
import { sigmoid } from '../ops/activation.js';
import type { Segmenter } from '../model/segmenter.js';
import { predictPhoto, writeMaskPng, writeOverlayPng, writeProbPng } from './images.js';

export interface PredictOptions {
  size: number;
  threshold: number;
  /** Tile side in photo pixels (default: the model size, so large photos are not squashed). */
  tile?: number;
  overlap?: number;
  out: string;
}

export interface PredictedFile {
  input: string;
  mask: string;
  overlay: string;
  tiles: number;
  crackFraction: number;
}

/** Inputs: a file or every image in a folder. */
export function listInputs(path: string): string[] {
  if (!existsSync(path)) throw new Error(`${path}: not found`);
  if (statSync(path).isDirectory()) {
    const files = readdirSync(path)
      .filter((f) => IMAGE_EXTENSIONS.includes(extname(f).toLowerCase()))
      .sort()
      .map((f) => join(path, f));
    if (files.length === 0) throw new Error(`${path}: no images (${IMAGE_EXTENSIONS.join(' ')})`);
    return files;
  }
  return [path];
}

export async function predictFiles(
  model: Segmenter,
  inputs: string[],
  opts: PredictOptions,
): Promise<PredictedFile[]> {
  const engine = model.engine;
  model.train(false);
  mkdirSync(opts.out, { recursive: true });
  const results: PredictedFile[] = [];
  for (const input of inputs) {
    const stem = basename(input, extname(input));
    const { prob, width, height, tiles } = await predictPhoto(
      input,
      { size: opts.size, tile: opts.tile, overlap: opts.overlap },
      async (tileInput) =>
        engine.scopeAsync(async () => {
          const x = engine.fromArray(tileInput, [1, opts.size, opts.size, 3]);
          const p = engine.noGrad(() => sigmoid(model.forward(x)));
          return { prob: await p.toArray(), width: opts.size, height: opts.size };
        }),
    );
    const mask = join(opts.out, `${stem}.mask.png`);
    const overlay = join(opts.out, `${stem}.overlay.png`);
    await writeMaskPng(mask, prob, width, height, opts.threshold);
    await writeProbPng(join(opts.out, `${stem}.prob.png`), prob, width, height);
    await writeOverlayPng(overlay, input, prob, width, height, opts.threshold);
    let on = 0;
    for (const v of prob) if (v > opts.threshold) on++;
    results.push({ input, mask, overlay, tiles, crackFraction: on / prob.length });
  }
  return results;
}
