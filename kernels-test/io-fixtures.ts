/**
 * Fixtures for the checkpoint I/O tests: a seeded generator (kept here so these CPU-only tests do
 * not load the GPU runtime), the shared SAM2 assets, a temp folder, and a tiny pickle emitter for
 * hand-built (including hostile) pickles.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { StateDict } from '../src/io/pt.js';
import { Rng } from '../src/util/random.js';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const SHARED_CKPT = resolve(ROOT, '../shared/sam2-checkpoints');
export const HAVE_SHARED = existsSync(SHARED_CKPT);

export const SEED = process.env.SAM2_TEST_SEED
  ? Number(process.env.SAM2_TEST_SEED)
  : (Date.now() ^ (process.pid << 16)) >>> 0;

/** The project's seeded generator as a plain function. */
export function rng(seed = SEED): () => number {
  const r = new Rng(seed);
  return () => r.next();
}

/** Random float32 tensors for the given shapes (uniform in [-2, 2)). */
export function randomState(shapes: Map<string, number[]>, r = rng()): StateDict {
  const out: StateDict = new Map();
  for (const [k, shape] of shapes) {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) data[i] = 4 * r() - 2;
    out.set(k, { shape, data });
  }
  return out;
}

export interface KeyLine {
  name: string;
  dtype: string;
  shape: number[];
}

/** `*.image_encoder_keys.txt`: `name<TAB>dtype<TAB>[shape]<TAB>…`, `#` comments. */
export function readKeysFile(path: string): KeyLine[] {
  return readFileSync(path, 'utf8')
    .split('\n')
    .filter((l) => l.trim() && !l.startsWith('#'))
    .map((l) => {
      const [name, dtype, shape] = l.split('\t');
      return { name, dtype, shape: JSON.parse(shape) as number[] };
    });
}

export function tempDir(): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'sam2-lora-io-'));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export function bytesOf(a: Float32Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/** A pickle emitter: each method appends one opcode (protocol 2/4 encodings). */
export class Pk {
  private out: number[] = [];
  private enc = new TextEncoder();
  private u32(v: number) {
    this.out.push(v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff);
    return this;
  }
  op(...b: number[]) {
    this.out.push(...b);
    return this;
  }
  proto(v = 2) {
    return this.op(0x80, v);
  }
  mark() {
    return this.op(0x28);
  }
  str(s: string) {
    const b = this.enc.encode(s);
    this.op(0x58).u32(b.length);
    return this.op(...b);
  }
  int(v: number) {
    if (v < 2 ** 31) return this.op(0x4a).u32(v);
    const b: number[] = [];
    for (let x = BigInt(v); x > 0n; x >>= 8n) b.push(Number(x & 0xffn));
    if (b[b.length - 1] & 0x80) b.push(0);
    return this.op(0x8a, b.length, ...b); // LONG1
  }
  global(module: string, name: string) {
    return this.op(0x63, ...this.enc.encode(`${module}\n${name}\n`));
  }
  tuple(...ints: number[]) {
    this.mark();
    for (const v of ints) this.int(v);
    return this.op(0x74);
  }
  emptyDict() {
    return this.op(0x7d);
  }
  emptyTuple() {
    return this.op(0x29);
  }
  reduce() {
    return this.op(0x52);
  }
  orderedDict() {
    return this.global('collections', 'OrderedDict').emptyTuple().reduce();
  }
  /** Pushes `_rebuild_tensor_v2(storage(...), offset, shape, stride, False, OrderedDict())`. */
  tensor(cls: string, key: string, numel: number, offset: number, shape: number[], stride: number[]) {
    this.global('torch._utils', '_rebuild_tensor_v2').mark();
    this.mark().str('storage').global('torch', cls).str(key).str('cpu').int(numel).op(0x74, 0x51);
    this.int(offset).tuple(...shape).tuple(...stride).op(0x89).orderedDict();
    return this.op(0x74).reduce();
  }
  setitem() {
    return this.op(0x73);
  }
  stop() {
    return this.op(0x2e);
  }
  bytes(): Uint8Array {
    return Uint8Array.from(this.out);
  }
}
