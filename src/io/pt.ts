/**
 * PyTorch `.pt` checkpoints (the zip format of `torch.save` since 1.6) without Python: listing,
 * loading into float32 state dicts, checking them against a model, and writing them back.
 * Official SAM2 checkpoints are `{"model": {name: tensor}}` with float32 or bfloat16 storages.
 */
import { endianness } from 'node:os';
import { open } from 'node:fs/promises';
import { atomicWrite } from './atomic.js';
import { fileError } from './fs-errors.js';
import {
  DTYPE_BYTES, PyDict, PickleError, pickleStateDict, pyTypeName, unpickle,
  type DType, type PyValue, type StorageRef, type TensorRef,
} from './pickle.js';
import { ZipError, ZipReader, zipChunks, type ZipInput } from './zip.js';

export interface TensorData {
  shape: number[];
  data: Float32Array;
}

/** Named float32 tensors, in checkpoint order. */
export type StateDict = Map<string, TensorData>;

export interface CheckpointEntry {
  name: string;
  dtype: DType;
  shape: number[];
}

export interface ReadOptions {
  /** Keep only keys under this prefix (e.g. `'image_encoder.'`), with the prefix removed. */
  prefix?: string;
}

export class CheckpointError extends Error {
  constructor(source: string, problem: string) {
    super(`${source}: ${problem}`);
    this.name = 'CheckpointError';
  }
}

const numelOf = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

/**
 * The tensors of an unpickled checkpoint: unwraps `{"model": …}` when present, applies `prefix`,
 * and refuses non-tensor values by key.
 */
export function tensorsOf(
  root: PyValue,
  source: string,
  opts: ReadOptions = {},
): Map<string, TensorRef> {
  let dict = root;
  if (dict instanceof PyDict && dict.map.get('model') instanceof PyDict) {
    dict = dict.map.get('model') as PyDict;
  }
  if (!(dict instanceof PyDict)) {
    throw new CheckpointError(source,
      `expected a state dict, the pickle holds a ${pyTypeName(dict)}`);
  }
  const prefix = opts.prefix ?? '';
  const out = new Map<string, TensorRef>();
  for (const [k, v] of dict.map) {
    if (typeof k !== 'string') {
      throw new CheckpointError(source, `state dict key ${String(k)} is not a string`);
    }
    if (!k.startsWith(prefix)) continue;
    if (typeof v !== 'object' || v === null || (v as TensorRef).kind !== 'tensor') {
      throw new CheckpointError(source,
        `state dict entry ${k} is a ${pyTypeName(v)}, not a tensor`);
    }
    const problem = viewProblem(v as TensorRef);
    if (problem) throw new CheckpointError(source, `tensor ${k}: ${problem}`);
    out.set(k.slice(prefix.length), v as TensorRef);
  }
  return out;
}

/**
 * Why a tensor view cannot be materialised from its storage, or null. Reading a view allocates its
 * element count, so a view must not claim more elements than its storage holds: no stride-0
 * (broadcast) dimension and no overlap between dimensions (with strides sorted, each must step
 * past everything the smaller ones reach, which every slice/transpose/permute view satisfies).
 * With the storage checked against its file entry, memory stays bounded by the file's size.
 */
export function viewProblem(t: TensorRef): string | null {
  const dims = t.shape
    .map((size, d) => ({ size, stride: t.stride[d] }))
    .filter((x) => x.size > 1);
  const shapeText = `[${t.shape.join(', ')}] with strides [${t.stride.join(', ')}]`;
  const zero = dims.find((x) => x.stride === 0);
  if (zero) return `stride-0 view ${shapeText} repeats storage elements (refusing to expand it)`;
  dims.sort((a, b) => a.stride - b.stride);
  let reach = 0; // furthest offset the smaller-stride dimensions span
  for (const x of dims) {
    if (x.stride <= reach) return `overlapping view ${shapeText} reuses storage elements`;
    reach += (x.size - 1) * x.stride;
  }
  const n = numelOf(t.shape);
  if (n > t.storage.numel) {
    return `view ${shapeText} claims ${n} elements from a storage of ${t.storage.numel}`;
  }
  return null;
}

/** Names, dtypes and shapes from a bare pickle (e.g. an extracted `archive/data.pkl`). */
export function listPickle(
  data: Uint8Array,
  source: string,
  opts: ReadOptions = {},
): CheckpointEntry[] {
  const tensors = tensorsOf(unpickle(data, source), source, opts);
  return [...tensors].map(([name, t]) => ({ name, dtype: t.storage.dtype, shape: t.shape }));
}

interface Archive {
  zip: ZipReader;
  prefix: string;
  bigEndian: boolean;
  tensors: Map<string, TensorRef>;
}

async function openArchive(path: string, opts: ReadOptions): Promise<Archive> {
  let zip: ZipReader;
  try {
    zip = await ZipReader.open(path);
  } catch (e) {
    const noDirectory = e instanceof ZipError && /no central directory/.test(e.message);
    if (noDirectory && (await startsWithPickle(path))) {
      throw new CheckpointError(path, 'legacy (non-zip) torch.save format is not supported: ' +
        're-save it with a recent PyTorch');
    }
    throw e;
  }
  try {
    const pkl = [...zip.entries.keys()].find((k) => /^[^/]+\/data\.pkl$/.test(k));
    if (!pkl) {
      throw new CheckpointError(path, 'not a PyTorch checkpoint: no <archive>/data.pkl entry');
    }
    const prefix = pkl.slice(0, -'data.pkl'.length);
    let bigEndian = false;
    if (zip.entries.has(`${prefix}byteorder`)) {
      const order = new TextDecoder().decode(await zip.read(`${prefix}byteorder`)).trim();
      if (order !== 'little' && order !== 'big') {
        throw new CheckpointError(path, `unknown byteorder ${JSON.stringify(order)}`);
      }
      bigEndian = order === 'big';
    }
    const tensors = tensorsOf(unpickle(await zip.read(pkl), path), path, opts);
    // Every storage must be present with exactly the bytes its dtype and element count need.
    for (const t of tensors.values()) storageEntry({ zip, prefix, bigEndian, tensors }, t.storage);
    return { zip, prefix, bigEndian, tensors };
  } catch (e) {
    await zip.close();
    throw e;
  }
}

async function startsWithPickle(path: string): Promise<boolean> {
  const fh = await open(path, 'r').catch((e) => {
    throw fileError(path, e, 'a checkpoint file');
  });
  try {
    const b = new Uint8Array(2);
    await fh.read(b, 0, 2, 0);
    return b[0] === 0x80 && b[1] >= 2 && b[1] <= 5;
  } finally {
    await fh.close();
  }
}

function storageEntry(a: Archive, s: StorageRef): string {
  const name = `${a.prefix}data/${s.key}`;
  const e = a.zip.entries.get(name);
  if (!e) throw new CheckpointError(a.zip.source, `storage ${s.key} missing: no entry ${name}`);
  const bytes = s.numel * DTYPE_BYTES[s.dtype];
  if (e.size !== bytes) {
    throw new CheckpointError(a.zip.source, `storage ${s.key} declares ${s.numel} ${s.dtype} ` +
      `(${bytes} bytes) but ${name} holds ${e.size} bytes`);
  }
  return name;
}

/** Names, dtypes and shapes of a `.pt` file's tensors, checking storages without loading them. */
export async function listCheckpoint(
  path: string,
  opts: ReadOptions = {},
): Promise<CheckpointEntry[]> {
  const a = await openArchive(path, opts);
  await a.zip.close();
  return [...a.tensors].map(([name, t]) => ({ name, dtype: t.storage.dtype, shape: t.shape }));
}

/**
 * Loads a `.pt` checkpoint as float32 tensors (float16/bfloat16/float64/integer storages are
 * converted). Float32 tensors that own their whole storage are read straight into their final
 * buffer, so a checkpoint is never in memory twice.
 */
export async function readCheckpoint(path: string, opts: ReadOptions = {}): Promise<StateDict> {
  const a = await openArchive(path, opts);
  try {
    const users = new Map<string, string[]>();
    for (const [name, t] of a.tensors) {
      const list = users.get(t.storage.key) ?? [];
      list.push(name);
      users.set(t.storage.key, list);
    }
    const out: StateDict = new Map();
    for (const name of a.tensors.keys()) out.set(name, { shape: [], data: new Float32Array(0) });
    for (const [key, names] of users) {
      const s = a.tensors.get(names[0])!.storage;
      // Each view fits its storage (tensorsOf), but many views of one storage would still
      // multiply it: distinct views (identical ones share their data, as tied weights) may claim
      // at most MAX_VIEWS_PER_STORAGE times its elements (a tensor, its transpose, slices...).
      const distinct = new Set(names.map((n) => viewKey(a.tensors.get(n)!)));
      let claimed = 0;
      for (const v of distinct) claimed += numelOf(JSON.parse(v)[1] as number[]);
      if (claimed > MAX_VIEWS_PER_STORAGE * s.numel) {
        throw new CheckpointError(path, `tensors ${names.slice(0, 4).join(', ')}` +
          `${names.length > 4 ? ` and ${names.length - 4} more` : ''} claim ${claimed} elements ` +
          `from storage ${key} of ${s.numel} (at most ${MAX_VIEWS_PER_STORAGE}x): refusing to ` +
          'expand so many views of one storage');
      }
      const entry = storageEntry(a, s);
      const first = a.tensors.get(names[0])!;
      const whole = names.length === 1 && first.offset === 0 && numelOf(first.shape) === s.numel &&
        isContiguous(first.shape, first.stride);
      if (whole && s.dtype === 'float32' && !a.bigEndian && endianness() === 'LE') {
        const data = new Float32Array(s.numel);
        await a.zip.read(entry, new Uint8Array(data.buffer));
        out.set(names[0], { shape: first.shape, data });
        continue;
      }
      const raw = await a.zip.read(entry);
      if (a.bigEndian) swapBytes(raw, DTYPE_BYTES[s.dtype]);
      let all: Float32Array;
      try {
        all = toFloat32(raw, s.dtype);
      } catch (e) {
        throw new CheckpointError(path, `storage ${key}: ${(e as Error).message}`);
      }
      const done = new Map<string, Float32Array>();
      for (const name of names) {
        const t = a.tensors.get(name)!;
        const vk = viewKey(t);
        const data = done.get(vk) ?? gather(all, t);
        done.set(vk, data);
        out.set(name, { shape: t.shape, data });
      }
    }
    return out;
  } finally {
    await a.zip.close();
  }
}

/** How many times its own size the distinct views of one storage may claim in all. */
export const MAX_VIEWS_PER_STORAGE = 4;

const viewKey = (t: TensorRef) => JSON.stringify([t.offset, t.shape, t.stride]);

function isContiguous(shape: number[], stride: number[]): boolean {
  let s = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    if (shape[d] !== 1 && stride[d] !== s) return false;
    s *= shape[d];
  }
  return true;
}

/** The tensor's elements in row-major order from its storage (views, offsets, any strides). */
function gather(all: Float32Array, t: TensorRef): Float32Array {
  const n = numelOf(t.shape);
  if (isContiguous(t.shape, t.stride)) {
    return t.offset === 0 && n === all.length ? all : all.slice(t.offset, t.offset + n);
  }
  const out = new Float32Array(n);
  const idx = new Array<number>(t.shape.length).fill(0);
  for (let i = 0; i < n; i++) {
    let at = t.offset;
    for (let d = 0; d < idx.length; d++) at += idx[d] * t.stride[d];
    out[i] = all[at];
    for (let d = idx.length - 1; d >= 0; d--) {
      if (++idx[d] < t.shape[d]) break;
      idx[d] = 0;
    }
  }
  return out;
}

function swapBytes(b: Uint8Array, size: number) {
  if (size === 1) return;
  for (let i = 0; i + size <= b.length; i += size) b.subarray(i, i + size).reverse();
}

/** Little-endian storage bytes of `dtype` → float32 (bfloat16 is the top half of a float32). */
export function toFloat32(bytes: Uint8Array, dtype: DType): Float32Array {
  const size = DTYPE_BYTES[dtype];
  if (bytes.byteLength % size) {
    throw new Error(`${bytes.byteLength} bytes is not a whole number of ${dtype}`);
  }
  const n = bytes.byteLength / size;
  // Copy into a fresh aligned buffer before viewing it as wider elements.
  const aligned = bytes.byteOffset % 8 === 0 ? bytes : bytes.slice();
  const ab = aligned.buffer;
  const off = aligned.byteOffset;
  switch (dtype) {
    case 'float32':
      return new Float32Array(ab.slice(off, off + bytes.byteLength) as ArrayBuffer);
    case 'bfloat16': {
      const src = new Uint16Array(ab, off, n);
      const out = new Uint32Array(n);
      for (let i = 0; i < n; i++) out[i] = src[i] << 16;
      return new Float32Array(out.buffer);
    }
    case 'float16': {
      const src = new Uint16Array(ab, off, n);
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = halfToFloat(src[i]);
      return out;
    }
    case 'float64':
      return Float32Array.from(new Float64Array(ab, off, n));
    case 'int64':
      return Float32Array.from(new BigInt64Array(ab, off, n), (v) => Number(v));
    case 'int32':
      return Float32Array.from(new Int32Array(ab, off, n));
    case 'int16':
      return Float32Array.from(new Int16Array(ab, off, n));
    case 'int8':
      return Float32Array.from(new Int8Array(ab, off, n));
    case 'uint8':
    case 'bool':
      return Float32Array.from(new Uint8Array(ab, off, n));
    default:
      throw new Error(`unsupported dtype ${String(dtype)}`);
  }
}

export function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

/**
 * Throws one error listing every missing, unexpected and mis-shaped key by full name, so a
 * checkpoint/model mismatch is diagnosed in one run.
 */
export function checkStateDict(
  expected: Map<string, number[]>,
  got: Map<string, { shape: number[] }>,
  source: string,
): void {
  const missing = [...expected.keys()].filter((k) => !got.has(k));
  const unexpected = [...got.keys()].filter((k) => !expected.has(k));
  const misShaped: string[] = [];
  for (const [k, shape] of expected) {
    const g = got.get(k);
    if (g && (g.shape.length !== shape.length || g.shape.some((d, i) => d !== shape[i]))) {
      misShaped.push(`${k}: expected [${shape.join(', ')}], got [${g.shape.join(', ')}]`);
    }
  }
  if (!missing.length && !unexpected.length && !misShaped.length) return;
  const lines = ['the state dict does not match the model'];
  if (missing.length) lines.push(`  missing (${missing.length}): ${missing.join(', ')}`);
  if (unexpected.length) {
    lines.push(`  unexpected (${unexpected.length}): ${unexpected.join(', ')}`);
  }
  if (misShaped.length) {
    lines.push(`  wrong shape (${misShaped.length}):`, ...misShaped.map((s) => `    ${s}`));
  }
  throw new CheckpointError(source, lines.join('\n'));
}

export interface WriteOptions {
  /** Wrap as `{"model": state_dict}` like the official SAM2 checkpoints. */
  wrapModel?: boolean;
  /** Force zip64 records even for small files (exercises the zip64 path in tests). */
  zip64?: boolean;
}

/**
 * Writes `state` as a float32 `.pt` that `torch.load(path, weights_only=True)` accepts: a zip of
 * stored entries (`archive/data.pkl`, `archive/data/N`, `archive/byteorder`, `archive/version`)
 * with tensor bytes aligned to 64. The file appears atomically.
 */
export async function writeCheckpoint(
  path: string,
  state: Map<string, TensorData>,
  opts: WriteOptions = {},
): Promise<void> {
  if (endianness() !== 'LE') throw new CheckpointError(path, 'writing needs a little-endian host');
  const enc = new TextEncoder();
  const tensors = [...state].map(([name, t], i) => {
    if (t.data.length !== numelOf(t.shape)) {
      throw new CheckpointError(path, `tensor ${name}: shape [${t.shape}] needs ` +
        `${numelOf(t.shape)} elements, data has ${t.data.length}`);
    }
    return { name, dtype: 'float32' as const, shape: t.shape, storageKey: String(i), data: t.data };
  });
  const inputs: ZipInput[] = [
    { name: 'archive/data.pkl', chunks: [pickleStateDict(tensors, opts.wrapModel ?? false)] },
    { name: 'archive/byteorder', chunks: [enc.encode('little')] },
    ...tensors.map((t) => ({
      name: `archive/data/${t.storageKey}`,
      chunks: [new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength)],
    })),
    { name: 'archive/version', chunks: [enc.encode('3\n')] },
  ];
  await atomicWrite(path, zipChunks(inputs, { align: 64, forceZip64: opts.zip64 }));
}

export { PickleError, ZipError };
