/**
 * Writes a report folder: `img/` (gallery photos, ground truths, TP/FP/FN overlays), then
 * `metrics.json`, then `index.html` last and atomically, so a page on disk always refers to
 * images that exist.
 */
import { mkdir, readdir, unlink } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import sharp from 'sharp';
import { atomicWrite } from '../io/atomic.js';
import type { KeptMaps } from './collect.js';
import { type ReportInput, type ReportJson, galleryFiles, galleryOrder, overlayIndex, reportJson } from './data.js';
import { renderHtml } from './html.js';

export interface WrittenReport {
  dir: string;
  index: string;
  json: string;
  doc: ReportJson;
  /** Every file written, index.html and metrics.json included. */
  files: string[];
}

const TP = [0, 208, 0];
const FP = [255, 40, 40];
const FN = [40, 110, 255];

/** Display size: the photo's aspect, longest side the model size clamped to [256, 512]. */
function displaySize(w: number, h: number, size: number): [number, number] {
  const long = Math.min(512, Math.max(256, size));
  return w >= h ? [long, Math.max(1, Math.round((long * h) / w))] : [Math.max(1, Math.round((long * w) / h)), long];
}

async function photoAt(file: string, w: number, h: number): Promise<Buffer> {
  try {
    return await sharp(file).removeAlpha().toColourspace('srgb').resize(w, h, { fit: 'fill', kernel: 'linear' })
      .raw().toBuffer();
  } catch (e) {
    throw new Error(`${file}: unreadable image (${e instanceof Error ? e.message : e})`);
  }
}

/**
 * The photo as the model saw it (size x size) with TP green, FP red, FN blue, others dimmed,
 * stretched back to the display size with nearest sampling (no blended class colours).
 */
async function writeOverlay(path: string, photo: string, maps: KeptMaps, size: number, dw: number, dh: number) {
  const px = await photoAt(photo, size, size);
  const out = Buffer.alloc(size * size * 3);
  for (let i = 0; i < size * size; i++) {
    const p = maps.pred[i];
    const t = maps.truth[i];
    const c = p && t ? TP : p ? FP : t ? FN : null;
    for (let k = 0; k < 3; k++) out[i * 3 + k] = c ? c[k] : Math.round(px[i * 3 + k] * 0.55);
  }
  await sharp(out, { raw: { width: size, height: size, channels: 3 } })
    .resize(dw, dh, { fit: 'fill', kernel: 'nearest' }).png().toFile(path);
}

async function writeTruth(path: string, truth: Uint8Array, size: number, dw: number, dh: number) {
  const px = Buffer.from(truth.map((v) => (v ? 255 : 0)));
  await sharp(px, { raw: { width: size, height: size, channels: 1 } })
    .resize(dw, dh, { fit: 'fill', kernel: 'nearest' }).toColourspace('b-w').png().toFile(path);
}

/** Writes the report of `input` into `dir` (created if needed). */
export async function writeReport(dir: string, input: ReportInput): Promise<WrittenReport> {
  dir = resolve(dir);
  await mkdir(join(dir, 'img'), { recursive: true });
  // A previous report's gallery images (our names only), so img/ holds this page's and no more.
  for (const f of await readdir(join(dir, 'img'))) {
    if (/^\d{4}-(photo\.jpg|truth\.png|pred\d+\.png)$/.test(f)) await unlink(join(dir, 'img', f));
  }
  const order = galleryOrder(input);
  const files: string[] = [];
  const sizes = new Map<string, { width: number; height: number }>();
  const first = input.adapters[0];
  const byId = new Map(first.collected.images.map((r) => [r.id, r]));
  for (let e = 0; e < order.length; e++) {
    const id = order[e];
    const r = byId.get(id)!;
    let { width, height } = r;
    if (!width || !height) {
      const meta = await sharp(r.image).metadata().catch(() => ({ width: 0, height: 0 }));
      [width, height] = [meta.width ?? 0, meta.height ?? 0];
    }
    if (!width || !height) throw new Error(`${r.image}: cannot read the image size`);
    sizes.set(id, { width, height });
    const names = galleryFiles(e + 1, input.adapters.length);
    const [dw, dh] = displaySize(width, height, first.info.size);
    const photo = join(dir, names.photo);
    await sharp(await photoAt(r.image, dw, dh), { raw: { width: dw, height: dh, channels: 3 } })
      .jpeg({ quality: 85 }).toFile(photo);
    files.push(photo);
    const firstMaps = first.collected.kept.get(id);
    if (!firstMaps) throw new Error(`report: no prediction kept for gallery image ${id}`);
    const truth = join(dir, names.truth);
    await writeTruth(truth, firstMaps.truth, first.info.size, dw, dh);
    files.push(truth);
    for (let i = 0; i < input.adapters.length; i++) {
      const a = input.adapters[i];
      const maps = a.collected.kept.get(id);
      if (!maps) throw new Error(`report: no prediction of ${a.info.name} kept for gallery image ${id}`);
      if (overlayIndex(a) < 0) throw new Error(`report: ${a.info.name}: validation threshold not evaluated`);
      const f = join(dir, names.overlays[i]);
      await writeOverlay(f, r.image, maps, a.info.size, dw, dh);
      files.push(f);
    }
  }
  const doc = reportJson(input, sizes);
  const json = join(dir, 'metrics.json');
  await atomicWrite(json, `${JSON.stringify(doc, null, 2)}\n`);
  const index = join(dir, 'index.html');
  await atomicWrite(index, renderHtml(doc));
  files.push(json, index);
  return { dir, index, json, doc, files };
}
