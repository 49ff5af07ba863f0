/**
 * Just enough zip for PyTorch archives: a reader over a file handle (positioned reads, so a 1 GB
 * checkpoint is never held twice) that trusts only the central directory, and a writer of stored
 * entries aligned to 64 bytes the way `torch.save` lays them out. Zip64 both ways.
 */
import { open, type FileHandle } from 'node:fs/promises';
import * as zlib from 'node:zlib';
import { describeOpenError } from './fs-errors.js';

const SIG_LOCAL = 0x04034b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_EOCD = 0x06054b50;
const SIG_EOCD64 = 0x06064b50;
const SIG_EOCD64_LOC = 0x07064b50;
const U32_MAX = 0xffffffff;

export class ZipError extends Error {
  constructor(source: string, problem: string) {
    super(`${source}: ${problem}`);
    this.name = 'ZipError';
  }
}

export interface ZipEntry {
  name: string;
  method: number;
  flags: number;
  crc32: number;
  compressedSize: number;
  size: number;
  localHeaderOffset: number;
}

const crcTable = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** CRC-32 (zip's polynomial); Node ≥ 20.15 has a native one, older Node gets the table. */
export function crc32(data: Uint8Array, prev = 0): number {
  const native = (zlib as { crc32?: (d: Uint8Array, v?: number) => number }).crc32;
  if (native) return native(data, prev) >>> 0;
  let c = ~prev >>> 0;
  for (let i = 0; i < data.length; i++) c = crcTable[(c ^ data[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}

function u64(view: DataView, at: number): number {
  const v = view.getBigUint64(at, true);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new RangeError('64-bit value out of range');
  return Number(v);
}

/** A zip archive opened for reading; entries come from the central directory only. */
export class ZipReader {
  private constructor(
    readonly source: string,
    private readonly fh: FileHandle,
    readonly fileSize: number,
    readonly entries: Map<string, ZipEntry>,
    private readonly cdOffset: number,
  ) {}

  static async open(path: string): Promise<ZipReader> {
    const fh = await open(path, 'r').catch((e: NodeJS.ErrnoException) => {
      throw new ZipError(path, describeOpenError(e, 'a checkpoint (zip) file'));
    });
    try {
      const st = await fh.stat();
      // open() succeeds on a folder; reading it would fail with a bare EISDIR.
      if (st.isDirectory()) {
        throw new ZipError(path, 'cannot open it as a checkpoint (zip) file: it is a folder');
      }
      const size = st.size;
      const { entries, cdOffset } = await readCentralDirectory(fh, size, path);
      return new ZipReader(path, fh, size, entries, cdOffset);
    } catch (e) {
      await fh.close();
      throw e;
    }
  }

  async close(): Promise<void> {
    await this.fh.close();
  }

  /** Reads `length` bytes at `position` into `into` (or a fresh buffer); short reads fail. */
  async readAt(position: number, length: number, into?: Uint8Array): Promise<Uint8Array> {
    const buf = into ?? new Uint8Array(length);
    let done = 0;
    while (done < length) {
      const { bytesRead } = await this.fh.read(buf, done, length - done, position + done);
      if (bytesRead === 0) {
        throw new ZipError(this.source, `unexpected end of file at byte ${position + done}`);
      }
      done += bytesRead;
    }
    return buf;
  }

  /** Where the entry's bytes start: the local header's own name/extra lengths decide it. */
  async dataOffset(entry: ZipEntry): Promise<number> {
    const h = await this.readAt(entry.localHeaderOffset, 30);
    const v = new DataView(h.buffer, h.byteOffset, 30);
    if (v.getUint32(0, true) !== SIG_LOCAL) {
      throw new ZipError(this.source, `corrupt zip: no local header for ${entry.name}`);
    }
    const start = entry.localHeaderOffset + 30 + v.getUint16(26, true) + v.getUint16(28, true);
    if (start + entry.compressedSize > this.cdOffset) {
      throw new ZipError(this.source, `corrupt zip: ${entry.name} runs past the end of the data`);
    }
    return start;
  }

  /** Checks a stored entry's CRC in 8 MiB pieces (for verifying downloads without loading). */
  async checkCrc(name: string): Promise<void> {
    const e = this.entries.get(name);
    if (!e) throw new ZipError(this.source, `missing entry ${name}`);
    if (e.method !== 0) {
      await this.read(name);
      return;
    }
    const start = await this.dataOffset(e);
    const piece = new Uint8Array(Math.min(e.size, 8 << 20));
    let crc = 0;
    for (let done = 0; done < e.size; ) {
      const n = Math.min(piece.length, e.size - done);
      crc = crc32(await this.readAt(start + done, n, piece.subarray(0, n)), crc);
      done += n;
    }
    if (crc !== e.crc32) throw new ZipError(this.source, `corrupt zip: CRC mismatch in ${name}`);
  }

  /**
   * Reads a whole entry (stored or deflated), checking its CRC. `into` lets a caller read stored
   * bytes straight into the buffer that will back a tensor.
   */
  async read(name: string, into?: Uint8Array): Promise<Uint8Array> {
    const e = this.entries.get(name);
    if (!e) throw new ZipError(this.source, `missing entry ${name}`);
    if (into && into.byteLength !== e.size) {
      throw new ZipError(this.source,
        `${name}: expected ${into.byteLength} bytes, entry has ${e.size}`);
    }
    const start = await this.dataOffset(e);
    let data: Uint8Array;
    if (e.method === 0) {
      if (e.compressedSize !== e.size) {
        throw new ZipError(this.source, `corrupt zip: stored entry ${name} has two sizes`);
      }
      data = await this.readAt(start, e.size, into);
    } else if (e.method === 8) {
      // Deflate expands at most ~1032×: a larger claim is a zip bomb or corruption.
      if (e.size > 1032 * e.compressedSize + 64 || e.size > 2 ** 31) {
        throw new ZipError(this.source, `corrupt zip: ${name} claims ${e.size} bytes from ` +
          `${e.compressedSize} compressed`);
      }
      const raw = await this.readAt(start, e.compressedSize);
      try {
        data = zlib.inflateRawSync(raw, { maxOutputLength: Math.max(1, e.size) });
      } catch (err) {
        throw new ZipError(this.source,
          `corrupt zip: cannot inflate ${name} (${(err as Error).message})`);
      }
      if (data.byteLength !== e.size) {
        throw new ZipError(this.source, `corrupt zip: ${name} inflates to the wrong size`);
      }
      if (into) into.set(data);
    } else {
      throw new ZipError(this.source, `unsupported zip compression method ${e.method} for ${name}`);
    }
    if (crc32(data) !== e.crc32) {
      throw new ZipError(this.source, `corrupt zip: CRC mismatch in ${name}`);
    }
    return into ?? data;
  }
}

async function readCentralDirectory(
  fh: FileHandle,
  size: number,
  source: string,
): Promise<{ entries: Map<string, ZipEntry>; cdOffset: number }> {
  const missing = 'no central directory: the file is truncated or not a zip';
  if (size < 22) throw new ZipError(source, missing);
  // The end record sits in the last 22 bytes plus at most a 65535-byte comment.
  const tailLen = Math.min(size, 22 + 65535);
  const tailPos = size - tailLen;
  const tail = new Uint8Array(tailLen);
  await readFully(fh, tail, tailPos, source);
  const tv = new DataView(tail.buffer);
  let eocd = -1;
  for (let i = tailLen - 22; i >= 0; i--) {
    if (tv.getUint32(i, true) === SIG_EOCD && i + 22 + tv.getUint16(i + 20, true) <= tailLen) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) throw new ZipError(source, missing);
  let count = tv.getUint16(eocd + 10, true);
  let cdSize = tv.getUint32(eocd + 12, true);
  let cdOffset = tv.getUint32(eocd + 16, true);
  let cdEnd = tailPos + eocd;
  if (count === 0xffff || cdSize === U32_MAX || cdOffset === U32_MAX) {
    const loc = eocd - 20;
    if (loc < 0 || tv.getUint32(loc, true) !== SIG_EOCD64_LOC) {
      throw new ZipError(source, 'corrupt zip: zip64 end record locator missing');
    }
    const at = u64(tv, loc + 8);
    if (at + 56 > tailPos + loc) {
      throw new ZipError(source, 'corrupt zip: zip64 end record out of range');
    }
    const rec = new Uint8Array(56);
    await readFully(fh, rec, at, source);
    const rv = new DataView(rec.buffer);
    if (rv.getUint32(0, true) !== SIG_EOCD64) {
      throw new ZipError(source, 'corrupt zip: bad zip64 end record');
    }
    count = u64(rv, 32);
    cdSize = u64(rv, 40);
    cdOffset = u64(rv, 48);
    cdEnd = at;
  }
  if (cdOffset + cdSize > cdEnd) {
    throw new ZipError(source, 'corrupt zip: central directory points past the end of the file');
  }
  if (count * 46 > cdSize) throw new ZipError(source, `corrupt zip: ${count} entries cannot fit`);
  const cd = new Uint8Array(cdSize);
  await readFully(fh, cd, cdOffset, source);
  const v = new DataView(cd.buffer);
  const entries = new Map<string, ZipEntry>();
  const dec = new TextDecoder('utf-8', { fatal: false });
  let p = 0;
  for (let i = 0; i < count; i++) {
    if (p + 46 > cdSize || v.getUint32(p, true) !== SIG_CENTRAL) {
      throw new ZipError(source, `corrupt zip: bad central directory header ${i}`);
    }
    const flags = v.getUint16(p + 8, true);
    const method = v.getUint16(p + 10, true);
    const crc = v.getUint32(p + 16, true);
    let csize = v.getUint32(p + 20, true);
    let usize = v.getUint32(p + 24, true);
    const nameLen = v.getUint16(p + 28, true);
    const extraLen = v.getUint16(p + 30, true);
    const commentLen = v.getUint16(p + 32, true);
    let offset = v.getUint32(p + 42, true);
    const next = p + 46 + nameLen + extraLen + commentLen;
    if (next > cdSize) {
      throw new ZipError(source, `corrupt zip: central directory header ${i} overruns`);
    }
    const name = dec.decode(cd.subarray(p + 46, p + 46 + nameLen));
    // Zip64 extra (id 1) holds, in order, whichever of usize/csize/offset overflowed 32 bits.
    let q = p + 46 + nameLen;
    const extraEnd = q + extraLen;
    while (q + 4 <= extraEnd) {
      const id = v.getUint16(q, true);
      const len = v.getUint16(q + 2, true);
      if (q + 4 + len > extraEnd) {
        throw new ZipError(source, `corrupt zip: bad extra field in ${name}`);
      }
      if (id === 1) {
        let r = q + 4;
        const take = (): number => {
          if (r + 8 > q + 4 + len) {
            throw new ZipError(source, `corrupt zip: short zip64 field in ${name}`);
          }
          const x = u64(v, r);
          r += 8;
          return x;
        };
        if (usize === U32_MAX) usize = take();
        if (csize === U32_MAX) csize = take();
        if (offset === U32_MAX) offset = take();
      }
      q += 4 + len;
    }
    if (flags & 1) throw new ZipError(source, `encrypted zip entry ${name} is not supported`);
    if (offset + 30 + csize > cdOffset) {
      throw new ZipError(source, `corrupt zip: entry ${name} lies past the end of the data`);
    }
    if (entries.has(name)) throw new ZipError(source, `corrupt zip: duplicate entry ${name}`);
    entries.set(name, { name, method, flags, crc32: crc, compressedSize: csize, size: usize,
      localHeaderOffset: offset });
    p = next;
  }
  return { entries, cdOffset };
}

async function readFully(fh: FileHandle, buf: Uint8Array, pos: number, source: string) {
  let done = 0;
  while (done < buf.byteLength) {
    const { bytesRead } = await fh.read(buf, done, buf.byteLength - done, pos + done);
    if (bytesRead === 0) throw new ZipError(source, `unexpected end of file at byte ${pos + done}`);
    done += bytesRead;
  }
}

/** One stored entry to write: its bytes as one or more chunks (views are written, not copied). */
export interface ZipInput {
  name: string;
  chunks: Uint8Array[];
}

/**
 * Lays out a zip of stored entries whose data starts on `align`-byte boundaries (padding goes in
 * an extra field, id 0x4246 "FB", as PyTorch does) and yields it chunk by chunk. Zip64 records
 * are added when an offset or size needs them (or always, with `forceZip64`, for tests).
 */
export function* zipChunks(
  inputs: ZipInput[],
  opts: { align?: number; forceZip64?: boolean } = {},
): Generator<Uint8Array> {
  const align = opts.align ?? 64;
  const enc = new TextEncoder();
  const central: Uint8Array[] = [];
  let pos = 0;
  for (const input of inputs) {
    const name = enc.encode(input.name);
    let size = 0;
    let crc = 0;
    for (const c of input.chunks) {
      size += c.byteLength;
      crc = crc32(c, crc);
    }
    const z64 = opts.forceZip64 || size >= U32_MAX || pos >= U32_MAX;
    const z64Len = z64 ? 4 + 16 : 0; // local header: usize + csize
    const base = pos + 30 + name.length + z64Len;
    const pad = (align - ((base + 4) % align)) % align;
    const fbLen = 4 + pad;
    const local = new Uint8Array(30 + name.length + z64Len + fbLen);
    const lv = new DataView(local.buffer);
    lv.setUint32(0, SIG_LOCAL, true);
    lv.setUint16(4, z64 ? 45 : 20, true);
    lv.setUint16(6, 0x800, true); // names are UTF-8
    lv.setUint32(14, crc, true);
    lv.setUint32(18, z64 ? U32_MAX : size, true);
    lv.setUint32(22, z64 ? U32_MAX : size, true);
    lv.setUint16(26, name.length, true);
    lv.setUint16(28, z64Len + fbLen, true);
    local.set(name, 30);
    let q = 30 + name.length;
    if (z64) {
      lv.setUint16(q, 1, true);
      lv.setUint16(q + 2, 16, true);
      lv.setBigUint64(q + 4, BigInt(size), true);
      lv.setBigUint64(q + 12, BigInt(size), true);
      q += 20;
    }
    lv.setUint16(q, 0x4246, true);
    lv.setUint16(q + 2, pad, true);
    local.fill(0x5a, q + 4, q + 4 + pad); // 'Z', PyTorch's filler

    const cz64 = z64 ? 4 + 24 : 0; // central: usize + csize + offset
    const cen = new Uint8Array(46 + name.length + cz64);
    const cv = new DataView(cen.buffer);
    cv.setUint32(0, SIG_CENTRAL, true);
    cv.setUint16(4, z64 ? 45 : 20, true);
    cv.setUint16(6, z64 ? 45 : 20, true);
    cv.setUint16(8, 0x800, true);
    cv.setUint32(16, crc, true);
    cv.setUint32(20, z64 ? U32_MAX : size, true);
    cv.setUint32(24, z64 ? U32_MAX : size, true);
    cv.setUint16(28, name.length, true);
    cv.setUint16(30, cz64, true);
    cv.setUint32(42, z64 ? U32_MAX : pos, true);
    cen.set(name, 46);
    if (z64) {
      const r = 46 + name.length;
      cv.setUint16(r, 1, true);
      cv.setUint16(r + 2, 24, true);
      cv.setBigUint64(r + 4, BigInt(size), true);
      cv.setBigUint64(r + 12, BigInt(size), true);
      cv.setBigUint64(r + 20, BigInt(pos), true);
    }
    central.push(cen);
    yield local;
    for (const c of input.chunks) if (c.byteLength > 0) yield c;
    pos += local.byteLength + size;
  }
  const cdOffset = pos;
  let cdSize = 0;
  for (const c of central) {
    yield c;
    cdSize += c.byteLength;
  }
  const n = inputs.length;
  const z64 = opts.forceZip64 || n >= 0xffff || cdOffset >= U32_MAX || cdSize >= U32_MAX;
  if (z64) {
    const rec = new Uint8Array(56 + 20);
    const v = new DataView(rec.buffer);
    v.setUint32(0, SIG_EOCD64, true);
    v.setBigUint64(4, 44n, true);
    v.setUint16(12, 45, true);
    v.setUint16(14, 45, true);
    v.setBigUint64(24, BigInt(n), true);
    v.setBigUint64(32, BigInt(n), true);
    v.setBigUint64(40, BigInt(cdSize), true);
    v.setBigUint64(48, BigInt(cdOffset), true);
    v.setUint32(56, SIG_EOCD64_LOC, true);
    v.setBigUint64(64, BigInt(cdOffset + cdSize), true);
    v.setUint32(72, 1, true);
    yield rec;
  }
  const end = new Uint8Array(22);
  const ev = new DataView(end.buffer);
  ev.setUint32(0, SIG_EOCD, true);
  ev.setUint16(8, z64 ? 0xffff : n, true);
  ev.setUint16(10, z64 ? 0xffff : n, true);
  ev.setUint32(12, z64 ? U32_MAX : cdSize, true);
  ev.setUint32(16, z64 ? U32_MAX : cdOffset, true);
  yield end;
}
