/**
 * `sam2-lora web --adapter A --out DIR`: a static site that segments photos in the browser with
 * our WGSL kernels on `navigator.gpu`. The adapter's model is rebuilt as `predict` does, LoRA is
 * folded into the encoder weights (the page builds the model without LoRA layers), and the site
 * gets the page, its bundle, the weights and `site.json` (written last: a folder without it is
 * an interrupted export, never mistaken for a complete one).
 */
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { loadAdapter, modelFromAdapter } from '../adapter/adapter.js';
import { foldLora } from '../adapter/fold.js';
import { refuseOverwrite } from '../cli/merge.js';
import { UsageError } from '../cli/common.js';
import type { AdapterChoice } from '../gpu/dawn.js';
import { atomicWrite } from '../io/atomic.js';
import { tiling } from '../predict/segment.js';
import { bundleFile } from './bundle.js';
import { pageHtml } from './html.js';
import {
  MANIFEST_FILE, SITE_FORMAT, type SiteManifest, type WeightsDtype, type WeightsFile, f16Error, packTensors,
  parseManifest,
} from './manifest.js';

/** Every file an export writes (the folder may hold nothing else unless --force). */
export const SITE_FILES = ['index.html', 'app.js', 'encoder.bin', 'head.bin', MANIFEST_FILE];

export interface WebExportOptions {
  adapter: string;
  out: string;
  checkpoint?: string;
  weightsDtype: WeightsDtype;
  tile?: number;
  overlap?: number;
  /** Write into a non-empty folder that is not a previous export (its other files are kept). */
  force?: boolean;
  gpu?: AdapterChoice;
}

export interface WebExportResult {
  manifest: SiteManifest;
  files: string[];
  /** Largest |f16 - f32| over the weights (f16 only). */
  f16MaxError?: number;
}

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** Refuses an --out that exists and is not an empty folder, a previous export or ours alone. */
export function checkSiteFolder(out: string, force = false): 'new' | 'previous' | 'forced' {
  if (!existsSync(out)) return 'new';
  if (!statSync(out).isDirectory()) throw new UsageError(`web: --out ${out} is a file, not a folder`);
  const entries = readdirSync(out);
  if (entries.length === 0) return 'new';
  const manifest = join(out, MANIFEST_FILE);
  if (existsSync(manifest)) {
    try {
      parseManifest(readFileSync(manifest, 'utf8'), manifest);
      return 'previous';
    } catch {
      // not ours: handled below
    }
  }
  // An interrupted export holds our files (and temporaries) only.
  const ours = (f: string) => SITE_FILES.includes(f) || SITE_FILES.some((s) => f.startsWith(`.${s}.`) && f.endsWith('.tmp'));
  if (entries.every(ours)) return 'previous';
  if (force) return 'forced';
  throw new UsageError(`web: --out ${out} is not empty and is not a previous web export (no valid ` +
    `${MANIFEST_FILE}; it holds e.g. ${entries.filter((f) => !ours(f)).slice(0, 3).join(', ')}): ` +
    'choose an empty or new folder, or pass --force to write the site into it');
}

function weightsEntry(file: string, dtype: WeightsDtype, packed: { bytes: Uint8Array; tensors: WeightsFile['tensors'] }): WeightsFile {
  return { file, dtype, bytes: packed.bytes.byteLength, sha256: sha256(packed.bytes), tensors: packed.tensors };
}

export async function exportSite(o: WebExportOptions, say: (s: string) => void = console.log): Promise<WebExportResult> {
  const { config, file } = await loadAdapter(o.adapter);
  const base = o.checkpoint ?? config.baseCheckpoint;
  refuseOverwrite('web', [o.out], [
    { path: dirname(file), what: 'the adapter folder' },
    ...(base ? [{ path: base, what: 'the base checkpoint' }] : []),
  ]);
  checkSiteFolder(o.out, o.force);
  const bundle = await bundleFile(say);
  const { tile, overlap } = tiling({ size: config.size, tile: o.tile, overlap: o.overlap });
  if (overlap >= tile) throw new UsageError(`web: --overlap ${overlap} must be below the tile side ${tile}`);

  const { model } = await modelFromAdapter(o.adapter, { checkpoint: o.checkpoint, adapter: o.gpu });
  const sd = await model.stateDict();
  const lora = config.segmenter.lora;
  const folded = config.segmenter.mode === 'lora' ? foldLora(sd, lora.alpha / lora.r) : sd;
  const part = (prefix: string) => [...folded].filter(([k]) => k.startsWith(prefix));
  const enc = packTensors(part('image_encoder.'), o.weightsDtype);
  const head = packTensors(part('head.'), o.weightsDtype);
  let f16MaxError: number | undefined;
  if (o.weightsDtype === 'f16') f16MaxError = Math.max(...[...folded.values()].map((t) => f16Error(t.data)));

  const appJs = readFileSync(bundle);
  const html = Buffer.from(pageHtml(), 'utf8');
  const manifest: SiteManifest = {
    format: SITE_FORMAT,
    version: 1,
    adapter: { file, sha256: sha256(readFileSync(file)), baseCheckpoint: base ?? null },
    segmenter: { ...config.segmenter, mode: 'head' },
    size: config.size,
    threshold: config.threshold,
    tiling: { tile, overlap },
    weights: {
      encoder: weightsEntry('encoder.bin', o.weightsDtype, enc),
      head: weightsEntry('head.bin', o.weightsDtype, head),
    },
    files: { 'index.html': sha256(html), 'app.js': sha256(appJs) },
  };
  // The old manifest goes first, the new one last: in between the folder is visibly incomplete.
  await unlink(join(o.out, MANIFEST_FILE)).catch(() => undefined);
  await atomicWrite(join(o.out, 'encoder.bin'), enc.bytes);
  await atomicWrite(join(o.out, 'head.bin'), head.bytes);
  await atomicWrite(join(o.out, 'app.js'), appJs);
  await atomicWrite(join(o.out, 'index.html'), html);
  await atomicWrite(join(o.out, MANIFEST_FILE), `${JSON.stringify(manifest, null, 2)}\n`);
  return { manifest, files: SITE_FILES.map((f) => join(o.out, f)), f16MaxError };
}
