/**
 * Reads the PyTorch reference fixtures (kernels-test/fixtures/*.safetensors, written by
 * fixtures/generate.py) in float64: our safetensors reader widens everything to float32, which
 * would round the references the tests compare against.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Rng } from '../src/util/random.js';

export const FIXTURE_DIR = fileURLToPath(new URL('./fixtures', import.meta.url));

export interface F64Tensor {
  shape: number[];
  data: Float64Array;
}

export interface FixtureCase {
  name: string;
  [param: string]: unknown;
}

export interface Fixture {
  file: string;
  /** `__metadata__` with JSON values parsed (torch version, sam2_commit, init lists...). */
  meta: Record<string, unknown>;
  cases: FixtureCase[];
  case(name: string): FixtureCase;
  /** `<case>.<tensor>`; throws naming the file when absent. */
  get(caseName: string, tensor: string): F64Tensor;
  has(caseName: string, tensor: string): boolean;
  names(): string[];
}

export function readFixture(name: string): Fixture {
  const file = join(FIXTURE_DIR, `${name}.safetensors`);
  const buf = readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Record<string, unknown>;
  const rawMeta = (header.__metadata__ ?? {}) as Record<string, string>;
  delete header.__metadata__;
  const meta: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(rawMeta)) {
    try {
      meta[k] = JSON.parse(v);
    } catch {
      meta[k] = v;
    }
  }
  const body = 8 + n;
  const tensors = new Map<string, F64Tensor>();
  for (const [key, raw] of Object.entries(header)) {
    const t = raw as { dtype: string; shape: number[]; data_offsets: [number, number] };
    const [b, e] = t.data_offsets;
    const bytes = buf.subarray(body + b, body + e);
    const count = t.shape.reduce((a, d) => a * d, 1);
    const data = new Float64Array(count);
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    if (t.dtype === 'F64' && bytes.length === count * 8) {
      for (let i = 0; i < count; i++) data[i] = view.getFloat64(i * 8, true);
    } else if (t.dtype === 'F32' && bytes.length === count * 4) {
      for (let i = 0; i < count; i++) data[i] = view.getFloat32(i * 4, true);
    } else {
      throw new Error(`${file}: tensor ${key}: ${t.dtype} [${t.shape}] does not match its ` +
        `${bytes.length} bytes`);
    }
    tensors.set(key, { shape: t.shape, data });
  }
  const cases = (meta.cases ?? []) as FixtureCase[];
  return {
    file,
    meta,
    cases,
    case(c) {
      const found = cases.find((x) => x.name === c);
      if (!found) throw new Error(`${file}: no case ${c}`);
      return found;
    },
    get(c, t) {
      const v = tensors.get(`${c}.${t}`);
      if (!v) throw new Error(`${file}: no tensor ${c}.${t}`);
      return v;
    },
    has: (c, t) => tensors.has(`${c}.${t}`),
    names: () => [...tensors.keys()],
  };
}

/** One entry of a fixture's init list: name, shape, bound, offset, float64 sum of the values. */
export type InitSpec = [string, number[], number, number, number];

/**
 * Draws weights exactly as generate.py's draw_init: one Rng(seed) in list order, each value
 * float32(float32((next()·2 − 1)·bound) + offset). Checks each tensor's sum against the generator's, so
 * a drift between the two generators fails here, not as a mysterious numeric mismatch.
 */
export function drawInit(spec: InitSpec[], seed: number): Map<string, { shape: number[]; data: Float32Array }> {
  const rng = new Rng(seed);
  const out = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const [name, shape, bound, offset, sum] of spec) {
    const n = shape.reduce((a, d) => a * d, 1);
    const vals = rng.fillUniform(n, bound);
    const data = new Float32Array(n);
    let s = 0;
    for (let i = 0; i < n; i++) {
      data[i] = vals[i] + offset;
      s += data[i];
    }
    if (Math.abs(s - sum) > 1e-9 * Math.max(1, Math.abs(sum))) {
      throw new Error(`drawInit: ${name}: sum ${s} differs from the generator's ${sum}`);
    }
    out.set(name, { shape, data });
  }
  return out;
}

/** Converts a fixture tensor to float32 (inputs are float32-exact by construction). */
export function f32Of(t: F64Tensor): Float32Array {
  return Float32Array.from(t.data);
}
