/**
 * safetensors (https://huggingface.co/docs/safetensors): an 8-byte little-endian header length,
 * a JSON header `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {…}}`, then
 * the tensor bytes. Reading accepts F32/F16/BF16 (and F64) and validates the header strictly;
 * writing produces F32, atomically.
 */
import { open } from 'node:fs/promises';
import { endianness } from 'node:os';
import { atomicWrite } from './atomic.js';
import { describeOpenError } from './fs-errors.js';
import { halfToFloat, type StateDict, type TensorData } from './pt.js';

export class SafetensorsError extends Error {
  constructor(source: string, problem: string) {
    super(`${source}: ${problem}`);
    this.name = 'SafetensorsError';
  }
}

/** The reference implementation refuses headers above 100 MB; so do we. */
export const MAX_HEADER_BYTES = 100_000_000;

const DTYPE_SIZE: Record<string, number> = { F32: 4, F16: 2, BF16: 2, F64: 8 };

interface HeaderEntry {
  name: string;
  dtype: string;
  shape: number[];
  begin: number;
  end: number;
}

function parseHeader(
  json: string,
  dataLength: number,
  source: string,
): { entries: HeaderEntry[]; metadata: Record<string, string> } {
  const fail = (problem: string): never => {
    throw new SafetensorsError(source, problem);
  };
  let header: unknown;
  try {
    header = JSON.parse(json);
  } catch (e) {
    return fail(`header is not valid JSON (${(e as Error).message})`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) {
    return fail('header is not a JSON object');
  }
  const metadata: Record<string, string> = {};
  const entries: HeaderEntry[] = [];
  for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
        fail('__metadata__ is not an object');
      }
      for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
        if (typeof v !== 'string') fail(`__metadata__.${k} is not a string`);
        metadata[k] = v as string;
      }
      continue;
    }
    const t = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (typeof t !== 'object' || t === null) return fail(`tensor ${name}: not an object`);
    const keys = Object.keys(t).sort().join(',');
    if (keys !== 'data_offsets,dtype,shape') fail(`tensor ${name}: unexpected fields ${keys}`);
    if (typeof t.dtype !== 'string') return fail(`tensor ${name}: dtype is not a string`);
    const size = DTYPE_SIZE[t.dtype];
    if (!size) fail(`tensor ${name}: unsupported dtype ${t.dtype} (F32, F16, BF16, F64 are read)`);
    const isDim = (d: unknown) => typeof d === 'number' && Number.isSafeInteger(d) && d >= 0;
    if (!Array.isArray(t.shape) || !t.shape.every(isDim) || t.shape.length > 16) {
      fail(`tensor ${name}: bad shape ${JSON.stringify(t.shape)}`);
    }
    const off = t.data_offsets;
    if (!Array.isArray(off) || off.length !== 2 || !off.every(isDim)) {
      return fail(`tensor ${name}: bad data_offsets ${JSON.stringify(off)}`);
    }
    const [begin, end] = off as number[];
    if (begin > end || end > dataLength) {
      fail(`tensor ${name}: data_offsets [${begin}, ${end}] outside the ${dataLength} data bytes`);
    }
    const shape = t.shape as number[];
    const bytes = shape.reduce((a, b) => a * b, 1) * size;
    if (bytes !== end - begin) {
      fail(`tensor ${name}: ${t.dtype} [${shape}] needs ${bytes} bytes, ` +
        `data_offsets span ${end - begin}`);
    }
    entries.push({ name, dtype: t.dtype, shape, begin, end });
  }
  // Offsets must tile the data exactly: no gaps, no overlaps, nothing left over.
  const sorted = [...entries].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let at = 0;
  for (const e of sorted) {
    if (e.begin !== at) {
      fail(`tensor ${e.name}: data starts at ${e.begin}, expected ${at} (gap or overlap)`);
    }
    at = e.end;
  }
  if (at !== dataLength) fail(`tensors cover ${at} of the ${dataLength} data bytes`);
  return { entries, metadata };
}

type FileHandle = Awaited<ReturnType<typeof open>>;

async function openFile(path: string): Promise<FileHandle> {
  return open(path, 'r').catch((e: NodeJS.ErrnoException) => {
    throw new SafetensorsError(path, describeOpenError(e, 'a safetensors file'));
  });
}

/** Reads and validates the header (never the tensor bytes). */
async function readHeader(fh: FileHandle, path: string) {
  const st = await fh.stat();
  if (st.isDirectory()) {
    throw new SafetensorsError(path, 'cannot open it as a safetensors file: it is a folder');
  }
  const fileSize = st.size;
  const readAt = async (pos: number, buf: Uint8Array) => {
    let done = 0;
    while (done < buf.byteLength) {
      const { bytesRead } = await fh.read(buf, done, buf.byteLength - done, pos + done);
      if (bytesRead === 0) throw new SafetensorsError(path, 'unexpected end of file');
      done += bytesRead;
    }
  };
  if (fileSize < 8) throw new SafetensorsError(path, 'too short to be safetensors');
  const lenBuf = new Uint8Array(8);
  await readAt(0, lenBuf);
  const headerLen = new DataView(lenBuf.buffer).getBigUint64(0, true);
  if (headerLen > BigInt(Math.min(MAX_HEADER_BYTES, fileSize - 8))) {
    throw new SafetensorsError(path,
      `header length ${headerLen} exceeds the file or the 100 MB limit`);
  }
  const hb = new Uint8Array(Number(headerLen));
  await readAt(8, hb);
  if (hb[0] !== 0x7b) throw new SafetensorsError(path, 'header does not start with "{"');
  let json: string;
  try {
    json = new TextDecoder('utf-8', { fatal: true }).decode(hb);
  } catch {
    throw new SafetensorsError(path, 'header is not valid UTF-8');
  }
  const dataStart = 8 + hb.byteLength;
  return { ...parseHeader(json, fileSize - dataStart, path), dataStart, readAt };
}

/** Names, dtypes and shapes from the header alone (checked against the file size). */
export async function listSafetensors(
  path: string,
): Promise<{ entries: { name: string; dtype: string; shape: number[] }[]; metadata: Record<string, string> }> {
  const fh = await openFile(path);
  try {
    const { entries, metadata } = await readHeader(fh, path);
    return { entries: entries.map(({ name, dtype, shape }) => ({ name, dtype, shape })), metadata };
  } finally {
    await fh.close();
  }
}

/** Reads every tensor as float32, in header order, plus the `__metadata__` strings. */
export async function readSafetensors(
  path: string,
): Promise<{ tensors: StateDict; metadata: Record<string, string> }> {
  const fh = await openFile(path);
  try {
    const { entries, metadata, dataStart, readAt } = await readHeader(fh, path);
    const tensors: StateDict = new Map();
    const le = endianness() === 'LE';
    for (const e of entries) {
      const n = e.shape.reduce((a, b) => a * b, 1);
      let data: Float32Array;
      if (e.dtype === 'F32' && le) {
        data = new Float32Array(n);
        await readAt(dataStart + e.begin, new Uint8Array(data.buffer));
      } else {
        const raw = new Uint8Array(e.end - e.begin);
        await readAt(dataStart + e.begin, raw);
        data = decode(raw, e.dtype, n);
      }
      tensors.set(e.name, { shape: e.shape, data });
    }
    return { tensors, metadata };
  } finally {
    await fh.close();
  }
}

function decode(raw: Uint8Array, dtype: string, n: number): Float32Array {
  const v = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const out = new Float32Array(n);
  if (dtype === 'BF16') {
    // bfloat16 is the top half of a float32's bits.
    const bits = new Uint32Array(out.buffer);
    for (let i = 0; i < n; i++) bits[i] = v.getUint16(2 * i, true) << 16;
  } else if (dtype === 'F16') {
    for (let i = 0; i < n; i++) out[i] = halfToFloat(v.getUint16(2 * i, true));
  } else if (dtype === 'F64') {
    for (let i = 0; i < n; i++) out[i] = v.getFloat64(8 * i, true);
  } else {
    for (let i = 0; i < n; i++) out[i] = v.getFloat32(4 * i, true);
  }
  return out;
}

/**
 * Writes float32 tensors (header order = map order) with optional string metadata. The header
 * is padded with spaces to a multiple of 8 so every tensor's bytes stay 8-aligned.
 */
export async function writeSafetensors(
  path: string,
  tensors: Map<string, TensorData>,
  metadata?: Record<string, string>,
): Promise<void> {
  if (endianness() !== 'LE') throw new SafetensorsError(path, 'writing needs a little-endian host');
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length) header.__metadata__ = metadata;
  let at = 0;
  const chunks: Uint8Array[] = [];
  for (const [name, t] of tensors) {
    if (name === '__metadata__') {
      throw new SafetensorsError(path, 'a tensor may not be named __metadata__');
    }
    const n = t.shape.reduce((a, b) => a * b, 1);
    if (t.data.length !== n) {
      throw new SafetensorsError(path, `tensor ${name}: shape [${t.shape}] needs ${n} elements, ` +
        `data has ${t.data.length}`);
    }
    header[name] = { dtype: 'F32', shape: t.shape, data_offsets: [at, at + t.data.byteLength] };
    at += t.data.byteLength;
    chunks.push(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
  }
  let json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil(json.byteLength / 8) * 8;
  if (padded !== json.byteLength) {
    const p = new Uint8Array(padded).fill(0x20);
    p.set(json);
    json = p;
  }
  const len = new Uint8Array(8);
  new DataView(len.buffer).setBigUint64(0, BigInt(json.byteLength), true);
  await atomicWrite(path, [len, json, ...chunks]);
}
