/**
 * The web site's manifest (`site.json`) and weight files: what `sam2-lora web` writes and the page
 * reads. Pure TypeScript, shared by both sides. A weight file is the tensors' values back to back
 * (f16 or f32, little-endian, each at a 4-byte-aligned offset); the manifest lists names, shapes,
 * offsets and the file's sha256, which the page checks and keys its cache by.
 */
import type { SegmenterConfig } from '../model/segmenter.js';
import { f16Value, fromF16, toF16 } from './f16.js';

export const SITE_FORMAT = 'sam2-lora-web';
/** Written last by an export: a folder without it is not a complete site. */
export const MANIFEST_FILE = 'site.json';

export type WeightsDtype = 'f16' | 'f32';

export interface TensorEntry {
  name: string;
  shape: number[];
  /** Byte offset in the file. */
  offset: number;
}

export interface WeightsFile {
  file: string;
  dtype: WeightsDtype;
  bytes: number;
  sha256: string;
  tensors: TensorEntry[];
}

export interface SiteManifest {
  format: typeof SITE_FORMAT;
  version: 1;
  /** The adapter the site was exported from (its file and sha256) and the base checkpoint. */
  adapter: { file: string; sha256: string; baseCheckpoint: string | null };
  /** The model, rebuilt without LoRA layers: the weights have them folded in. */
  segmenter: SegmenterConfig;
  /** Model input side. */
  size: number;
  /** Default decision threshold: the adapter's validation threshold. */
  threshold: number;
  /** Tiling as `predict` does it: tile side and overlap in photo pixels. */
  tiling: { tile: number; overlap: number };
  weights: { encoder: WeightsFile; head: WeightsFile };
  /** The page's files (index.html, the bundle) with their sha256, for `--serve` and checks. */
  files: Record<string, string>;
}

/** Tensors (name → shape + float32 values) packed into one file's bytes. */
export function packTensors(
  tensors: Iterable<[string, { shape: number[]; data: Float32Array }]>,
  dtype: WeightsDtype,
): { bytes: Uint8Array; tensors: TensorEntry[] } {
  const list = [...tensors];
  const width = dtype === 'f16' ? 2 : 4;
  const entries: TensorEntry[] = [];
  let offset = 0;
  for (const [name, t] of list) {
    const n = t.shape.reduce((a, b) => a * b, 1);
    if (n !== t.data.length) throw new Error(`packTensors: ${name} has shape [${t.shape}] but ${t.data.length} values`);
    entries.push({ name, shape: [...t.shape], offset });
    offset += Math.ceil((n * width) / 4) * 4;
  }
  const bytes = new Uint8Array(offset);
  list.forEach(([, t], i) => {
    const src = dtype === 'f16' ? toF16(t.data) : t.data;
    bytes.set(new Uint8Array(src.buffer, src.byteOffset, src.byteLength), entries[i].offset);
  });
  return { bytes, tensors: entries };
}

/** The float32 tensors of a weight file's bytes (f16 widened exactly). */
export function unpackTensors(
  buf: ArrayBuffer,
  w: WeightsFile,
): Map<string, { shape: number[]; data: Float32Array }> {
  if (buf.byteLength !== w.bytes) {
    throw new Error(`${w.file}: expected ${w.bytes} bytes, got ${buf.byteLength}`);
  }
  const width = w.dtype === 'f16' ? 2 : 4;
  const out = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const t of w.tensors) {
    const n = t.shape.reduce((a, b) => a * b, 1);
    if (t.offset % 4 !== 0 || t.offset + n * width > buf.byteLength) {
      throw new Error(`${w.file}: tensor ${t.name} [${t.shape}] at ${t.offset} lies outside the file`);
    }
    const data = w.dtype === 'f16'
      ? fromF16(new Uint16Array(buf, t.offset, n))
      : new Float32Array(buf.slice(t.offset, t.offset + n * 4));
    out.set(t.name, { shape: t.shape, data });
  }
  return out;
}

/** Largest |f16(x) - x| over `data`: what storing it as f16 costs. */
export function f16Error(data: Float32Array): number {
  const h = toF16(data);
  let worst = 0;
  for (let i = 0; i < data.length; i++) worst = Math.max(worst, Math.abs(f16Value(h[i]) - data[i]));
  return worst;
}

const isNum = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);

function checkWeights(w: unknown, what: string, source: string): WeightsFile {
  const x = w as WeightsFile;
  if (!x || typeof x.file !== 'string' || !/^[\w.-]+$/.test(x.file) || (x.dtype !== 'f16' && x.dtype !== 'f32') ||
    !isNum(x.bytes) || typeof x.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(x.sha256) ||
    !Array.isArray(x.tensors) || !x.tensors.every((t) => typeof t?.name === 'string' &&
      Array.isArray(t.shape) && t.shape.every(isNum) && isNum(t.offset))) {
    throw new Error(`${source}: weights.${what} is not a valid weight file entry`);
  }
  return x;
}

/** Parses and checks a manifest (text from `site.json`); errors name `source` and the field. */
export function parseManifest(text: string, source: string): SiteManifest {
  let m: SiteManifest;
  try {
    m = JSON.parse(text) as SiteManifest;
  } catch (e) {
    throw new Error(`${source}: not JSON (${(e as Error).message})`);
  }
  if (!m || m.format !== SITE_FORMAT) throw new Error(`${source}: not a sam2-lora web manifest`);
  if (m.version !== 1) throw new Error(`${source}: manifest version ${m.version}, this page reads 1`);
  if (!isNum(m.size) || m.size % 32 !== 0 || m.size <= 0) throw new Error(`${source}: bad size ${m.size}`);
  if (!isNum(m.threshold) || m.threshold < 0 || m.threshold > 1) {
    throw new Error(`${source}: bad threshold ${m.threshold}`);
  }
  if (!m.tiling || !isNum(m.tiling.tile) || !isNum(m.tiling.overlap) || m.tiling.tile < 1 ||
    m.tiling.overlap < 0 || m.tiling.overlap >= m.tiling.tile) {
    throw new Error(`${source}: bad tiling ${JSON.stringify(m.tiling)}`);
  }
  if (!m.segmenter || typeof m.segmenter.model !== 'string') throw new Error(`${source}: no segmenter config`);
  checkWeights(m.weights?.encoder, 'encoder', source);
  checkWeights(m.weights?.head, 'head', source);
  return m;
}
