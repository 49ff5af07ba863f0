/**
 * The web exporter's pieces: f16 conversion (every half value round-trips; f32 → f16 is the
 * nearest half, ties to even, against a float64 reference), weight packing, the manifest checks,
 * the refusals of `sam2-lora web` (outputs never overwrite inputs; a foreign non-empty folder
 * needs --force; an interrupted export is incomplete, not mistaken for done), a full export whose
 * folded weights give what the LoRA model gives, and the shared antialiased resize against a
 * float64 reference of torch's antialiased bilinear.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Engine } from '../src/autograd/tensor.js';
import { resampleAntialiased } from '../src/data/resample.js';
import { closeGpu, getGpu } from '../src/gpu/runtime.js';
import { writeSafetensors } from '../src/io/safetensors.js';
import type { StateDict } from '../src/io/pt.js';
import { ALL_LORA_TARGETS, Segmenter, type SegmenterConfig } from '../src/model/segmenter.js';
import { Rng } from '../src/util/random.js';
import { f16Bits, f16Value, fromF16, toF16 } from '../src/web/f16.js';
import { checkSiteFolder, exportSite } from '../src/web/export.js';
import { MANIFEST_FILE, packTensors, parseManifest, unpackTensors } from '../src/web/manifest.js';
import { sigmoid } from '../src/ops/activation.js';
import { add } from '../src/ops/add.js';
import { Gpu } from '../src/gpu/device.js';

const dir = mkdtempSync(join(tmpdir(), 'sam2-lora-webexp-'));
afterAll(async () => {
  await closeGpu();
  rmSync(dir, { recursive: true, force: true });
});

const SEED = 20260;
console.log(`web-export: seed ${SEED}`);

describe('f16 weights', () => {
  it('every half value widens and narrows back to itself', () => {
    for (let h = 0; h < 65536; h++) {
      const v = f16Value(h);
      if (Number.isNaN(v)) {
        expect((h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0).toBe(true);
        expect(Number.isNaN(f16Value(f16Bits(v)))).toBe(true);
      } else expect(f16Bits(v), `h=${h.toString(16)}`).toBe(h);
    }
  });

  it('narrows f32 to the nearest half, ties to even (float64 reference), overflow to Inf', () => {
    const halves = Array.from({ length: 0x7c00 }, (_, h) => f16Value(h)); // +0 .. max finite
    const nearest = (x: number): number => {
      const a = Math.abs(x);
      // Binary search for the neighbours, then the closer (even on a tie); past max: Inf.
      if (a >= 65520) return x < 0 ? 0xfc00 : 0x7c00;
      let lo = 0;
      let hi = halves.length - 1;
      while (hi - lo > 1) {
        const mid = (lo + hi) >> 1;
        if (halves[mid] <= a) lo = mid;
        else hi = mid;
      }
      const dl = a - halves[lo];
      const dh = halves[hi] - a;
      const h = dl < dh || (dl === dh && lo % 2 === 0) ? lo : hi;
      return (x < 0 || Object.is(x, -0) ? 0x8000 : 0) | h;
    };
    const rng = new Rng(SEED);
    const xs = Float32Array.from({ length: 20000 }, (_, i) => {
      const u = rng.next(); // log-uniform magnitudes over the whole f16 range and beyond
      const v = Math.fround(Math.sign(rng.next() - 0.5) * 2 ** (-27 + 45 * u));
      if (i % 10 !== 0) return v;
      // Every tenth: exactly halfway between two neighbouring halves (representable in f32).
      const k = i % 0x7bff;
      return i % 10 === 0 ? Math.fround((f16Value(k) + f16Value(k + 1)) / 2) * (i % 20 ? 1 : -1) : v;
    });
    const got = toF16(xs);
    let wrong = 0;
    for (let i = 0; i < xs.length; i++) if (got[i] !== nearest(xs[i])) wrong++;
    expect(wrong).toBe(0);
    expect(fromF16(Uint16Array.from([0x3c00, 0xc000, 0x0001, 0x7bff]))).toEqual(
      Float32Array.from([1, -2, 2 ** -24, 65504]));
  });
});

describe('weight files and the manifest', () => {
  it('packs and unpacks tensors at 4-byte offsets, f32 exactly and f16 as rounded', () => {
    const rng = new Rng(SEED + 1);
    const sd = new Map([['a', { shape: [3], data: rng.fillUniform(3, 1) }],
      ['b.c', { shape: [2, 5], data: rng.fillUniform(10, 2) }], ['d', { shape: [1], data: Float32Array.of(7) }]]);
    for (const dtype of ['f32', 'f16'] as const) {
      const p = packTensors(sd, dtype);
      expect(p.tensors.map((t) => t.offset)).toEqual(dtype === 'f32' ? [0, 12, 52] : [0, 8, 28]);
      const w = { file: 'x.bin', dtype, bytes: p.bytes.byteLength, sha256: '0'.repeat(64), tensors: p.tensors };
      const back = unpackTensors(p.bytes.slice().buffer, w);
      for (const [k, t] of sd) {
        expect(back.get(k)!.shape).toEqual(t.shape);
        expect(back.get(k)!.data).toEqual(dtype === 'f32' ? t.data : fromF16(toF16(t.data)));
      }
      expect(() => unpackTensors(p.bytes.slice(4).buffer, w)).toThrow(/x\.bin: expected \d+ bytes/);
    }
    expect(() => packTensors([['z', { shape: [2, 2], data: new Float32Array(3) }]], 'f32')).toThrow(/z has shape \[2,2\]/);
  });

  it('refuses a manifest that is not ours or is malformed, naming the field', () => {
    const w = { file: 'e.bin', dtype: 'f32', bytes: 4, sha256: 'a'.repeat(64), tensors: [] };
    const ok = { format: 'sam2-lora-web', version: 1, size: 64, threshold: 0.4, tiling: { tile: 64, overlap: 8 },
      segmenter: { model: 'nano' }, weights: { encoder: w, head: w } };
    expect(parseManifest(JSON.stringify(ok), 's.json').threshold).toBe(0.4);
    const bad = (patch: object) => JSON.stringify({ ...ok, ...patch });
    expect(() => parseManifest('{', 's.json')).toThrow(/s\.json: not JSON/);
    expect(() => parseManifest(bad({ format: 'x' }), 's.json')).toThrow(/not a sam2-lora web manifest/);
    expect(() => parseManifest(bad({ version: 2 }), 's.json')).toThrow(/version 2/);
    expect(() => parseManifest(bad({ size: 50 }), 's.json')).toThrow(/bad size 50/);
    expect(() => parseManifest(bad({ threshold: 1.5 }), 's.json')).toThrow(/bad threshold/);
    expect(() => parseManifest(bad({ tiling: { tile: 64, overlap: 64 } }), 's.json')).toThrow(/bad tiling/);
    expect(() => parseManifest(bad({ weights: { encoder: { ...w, file: '../x' }, head: w } }), 's.json'))
      .toThrow(/weights\.encoder/);
  });
});

const CFG: SegmenterConfig = { model: 'nano', head: 'stride16', mode: 'lora', seed: 11,
  lora: { r: 4, alpha: 8, dropout: 0.05, targets: ALL_LORA_TARGETS } };

/** An adapter folder as training writes it, with random non-zero LoRA B (no base checkpoint). */
async function writeAdapter(folder: string): Promise<void> {
  mkdirSync(folder, { recursive: true });
  const model = new Segmenter(new Engine(await getGpu()), CFG);
  const rng = new Rng(SEED + 2);
  const tensors: StateDict = new Map();
  for (const [n, t] of model.trainable()) {
    tensors.set(n, { shape: [...t.shape], data: n.includes('lora_B') ? rng.fillUniform(t.size, 0.05) : await t.toArray() });
  }
  const config = { format: 'sam2-lora-adapter', version: 1, segmenter: CFG, size: 64, threshold: 0.35, baseCheckpoint: null };
  await writeSafetensors(join(folder, 'adapter.safetensors'), tensors,
    { format: 'sam2-lora-adapter', config: JSON.stringify(config) });
  for (const p of model.parameters()) p.dispose();
}

describe('sam2-lora web: export', () => {
  const adapter = join(dir, 'run', 'best');

  it('refuses outputs inside what it reads, and foreign non-empty folders without --force', async () => {
    await writeAdapter(adapter);
    const opts = { adapter, weightsDtype: 'f32' as const };
    await expect(exportSite({ ...opts, out: adapter })).rejects.toThrow(/--out .* is the adapter folder/);
    await expect(exportSite({ ...opts, out: join(adapter, 'site') })).rejects.toThrow(/is inside the adapter folder/);
    const ckpt = join(dir, 'base.pt');
    writeFileSync(ckpt, 'x');
    await expect(exportSite({ ...opts, checkpoint: ckpt, out: ckpt })).rejects.toThrow(/is the base checkpoint/);
    const foreign = join(dir, 'photos');
    mkdirSync(foreign);
    writeFileSync(join(foreign, 'a.jpg'), 'x');
    expect(() => checkSiteFolder(foreign)).toThrow(/not empty and is not a previous web export .*a\.jpg.*--force/);
    expect(checkSiteFolder(foreign, true)).toBe('forced');
    writeFileSync(join(dir, 'file'), 'x');
    expect(() => checkSiteFolder(join(dir, 'file'))).toThrow(/is a file/);
    expect(checkSiteFolder(join(dir, 'new'))).toBe('new');
    // An interrupted export (our files, temporaries, no site.json) may be written again.
    const half = join(dir, 'half');
    mkdirSync(half);
    writeFileSync(join(half, 'encoder.bin'), 'x');
    writeFileSync(join(half, '.head.bin.123-ab.tmp'), 'x');
    expect(checkSiteFolder(half)).toBe('previous');
    // A broken site.json among other files is not a previous export.
    writeFileSync(join(foreign, MANIFEST_FILE), '{"format":"other"}');
    expect(() => checkSiteFolder(foreign)).toThrow(/not a previous web export/);
  }, 120_000);

  it('writes the site: manifest last, checksums, folded weights that compute what the adapter computes', async () => {
    const out = join(dir, 'site');
    const r = await exportSite({ adapter, out, weightsDtype: 'f32' }, () => undefined);
    for (const f of ['index.html', 'app.js', 'encoder.bin', 'head.bin', MANIFEST_FILE]) expect(existsSync(join(out, f)), f).toBe(true);
    const m = parseManifest(readFileSync(join(out, MANIFEST_FILE), 'utf8'), 'site.json');
    expect(m).toEqual(r.manifest);
    expect(m.threshold).toBe(0.35);
    expect(m.size).toBe(64);
    expect(m.tiling).toEqual({ tile: 64, overlap: 8 });
    expect(m.segmenter).toEqual({ ...CFG, mode: 'head' });
    expect(m.adapter.baseCheckpoint).toBeNull();
    const { createHash } = await import('node:crypto');
    const sha = (f: string) => createHash('sha256').update(readFileSync(join(out, f))).digest('hex');
    expect(sha('encoder.bin')).toBe(m.weights.encoder.sha256);
    expect(sha('head.bin')).toBe(m.weights.head.sha256);
    expect(sha('app.js')).toBe(m.files['app.js']);
    expect(m.weights.encoder.tensors.some((t) => t.name.includes('lora'))).toBe(false);

    // The page's model (no LoRA layers, folded weights) against the adapter's, same input.
    const engine = new Engine(await getGpu());
    const folded = new Segmenter(engine, m.segmenter);
    const load = (w: typeof m.weights.encoder) => unpackTensors(new Uint8Array(readFileSync(join(out, w.file))).buffer, w);
    folded.loadStateDict(new Map([...load(m.weights.encoder), ...load(m.weights.head)]), { source: 'site' });
    folded.train(false);
    const { modelFromAdapter } = await import('../src/adapter/adapter.js');
    const { model } = await modelFromAdapter(adapter, {});
    const x = new Rng(SEED + 3).fillUniform(64 * 64 * 3, 2);
    const run = async (mdl: Segmenter) => engine.scopeAsync(async () =>
      engine.noGrad(() => sigmoid(mdl.forward(engine.fromArray(x, [1, 64, 64, 3])))).toArray());
    const a = await run(folded);
    const b = await run(model);
    let worst = 0;
    for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
    console.log(`web-export: folded vs LoRA model, max |prob diff| ${worst.toExponential(2)}`);
    expect(worst).toBeLessThan(1e-5);

    // f16: half the bytes; re-export into the previous export is allowed.
    const r16 = await exportSite({ adapter, out, weightsDtype: 'f16' }, () => undefined);
    const m16 = r16.manifest.weights;
    expect(m16.encoder.bytes).toBeLessThanOrEqual(m.weights.encoder.bytes / 2 + 4 * m.weights.encoder.tensors.length);
    expect(m16.encoder.dtype).toBe('f16');
    expect(r16.f16MaxError).toBeGreaterThan(0);
    console.log(`web-export: nano weights f32 ${m.weights.encoder.bytes + m.weights.head.bytes} B, ` +
      `f16 ${m16.encoder.bytes + m16.head.bytes} B, largest f16 rounding ${r16.f16MaxError!.toExponential(2)}`);
  }, 300_000);
});

describe('the engine on a device it did not open (as the page on navigator.gpu)', () => {
  it('Gpu.fromDevice runs kernels on an existing GPUDevice', async () => {
    const shared = await getGpu();
    const gpu = Gpu.fromDevice(shared.device, shared.adapter, { backend: 'test' });
    expect(gpu.info.description).toBe(shared.info.description);
    const engine = new Engine(gpu);
    const rng = new Rng(SEED + 5);
    const a = rng.fillUniform(37 * 3, 1);
    const b = rng.fillUniform(37 * 3, 1);
    const got = await engine.scopeAsync(async () =>
      add(engine.fromArray(a, [37, 3]), engine.fromArray(b, [37, 3])).toArray());
    let worst = 0;
    for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(got[i] - (a[i] + b[i])));
    expect(worst).toBeLessThanOrEqual(2 ** -23 * 2); // one f32 rounding of |a + b| <= 2
    await gpu.sync();
    // Not closed: the device is the shared runtime's.
  });
});

/** torch's antialiased bilinear (align_corners=False) on one axis, float64, written out directly. */
function aaRef(src: Float64Array, sw: number, sh: number, dw: number, dh: number): Float64Array {
  const axis = (len: number, out: number) => {
    const scale = len / out;
    const support = scale >= 1 ? scale : 1;
    const inv = scale >= 1 ? 1 / scale : 1;
    return Array.from({ length: out }, (_, i) => {
      const center = scale * (i + 0.5);
      const lo = Math.max(Math.trunc(center - support + 0.5), 0);
      const hi = Math.min(Math.trunc(center + support + 0.5), len);
      const w: [number, number][] = [];
      for (let j = lo; j < hi; j++) w.push([j, Math.max(0, 1 - Math.abs((j - center + 0.5) * inv))]);
      const total = w.reduce((a, [, v]) => a + v, 0);
      return w.map(([j, v]) => [j, v / total] as [number, number]);
    });
  };
  const ax = axis(sw, dw);
  const ay = axis(sh, dh);
  const out = new Float64Array(dw * dh);
  for (let y = 0; y < dh; y++) {
    for (let x = 0; x < dw; x++) {
      let s = 0;
      for (const [j, wy] of ay[y]) for (const [i, wx] of ax[x]) s += wy * wx * src[j * sw + i];
      out[y * dw + x] = s;
    }
  }
  return out;
}

describe('shared resize (data/resample.ts)', () => {
  it('matches torch-style antialiased bilinear (float64 reference) at awkward sizes, windows included', () => {
    const rng = new Rng(SEED + 4);
    // RGB (its own fast path), grey and RGBA (the general one).
    for (const [sw, sh, dw, dh, ch] of [[37, 23, 16, 16, 3], [13, 29, 64, 64, 3], [100, 7, 33, 5, 1], [5, 5, 5, 5, 3],
      [64, 64, 17, 90, 4], [41, 17, 9, 30, 1]]) {
      const img = Uint8Array.from({ length: sw * sh * ch }, () => Math.floor(rng.next() * 256));
      const got = resampleAntialiased(img, sw, sh, ch, { x: 0, y: 0, w: sw, h: sh }, dw, dh,
        new Float32Array(dw * dh * ch).fill(NaN));
      for (let c = 0; c < ch; c++) {
        const plane = Float64Array.from({ length: sw * sh }, (_, i) => img[i * ch + c]);
        const want = aaRef(plane, sw, sh, dw, dh);
        let worst = 0;
        for (let i = 0; i < dw * dh; i++) {
          expect(Number.isFinite(got[i * ch + c])).toBe(true);
          worst = Math.max(worst, Math.abs(got[i * ch + c] - want[i]));
        }
        // One f32 rounding of values < 256 (half an ulp: 2^-17 = 7.6e-6), plus float64 sums.
        expect(worst, `${sw}x${sh}x${ch} -> ${dw}x${dh} channel ${c}`).toBeLessThanOrEqual(2 ** -17 + 1e-9);
      }
    }
    // torch's F.interpolate([0, 255], size=4, mode='linear', align_corners=False), exactly.
    expect(resampleAntialiased(Uint8Array.of(0, 255), 2, 1, 1, { x: 0, y: 0, w: 2, h: 1 }, 4, 1))
      .toEqual(Float32Array.of(0, 63.75, 191.25, 255));
    // A window equals resizing the crop.
    const sw = 31;
    const sh = 19;
    const img = Uint8Array.from({ length: sw * sh }, () => Math.floor(rng.next() * 256));
    const win = { x: 7, y: 3, w: 17, h: 11 };
    const crop = Uint8Array.from({ length: win.w * win.h }, (_, i) => img[(win.y + Math.floor(i / win.w)) * sw + win.x + (i % win.w)]);
    expect(resampleAntialiased(img, sw, sh, 1, win, 9, 13)).toEqual(resampleAntialiased(crop, win.w, win.h, 1, { x: 0, y: 0, w: win.w, h: win.h }, 9, 13));
    expect(() => resampleAntialiased(img, sw, sh, 1, { x: 20, y: 0, w: 17, h: 3 }, 4, 4)).toThrow(/not an integer window inside the 31x19/);
  });
});

describe('the page bundle (scripts/build-web.mjs)', () => {
  it('bundles for the browser with no Node-only module and every shader embedded', async () => {
    // @ts-expect-error: a plain .mjs build script without types
    const { buildWeb } = await import('../scripts/build-web.mjs');
    const outfile = join(dir, 'app.js');
    const r = await buildWeb({ quiet: true, outfile }) as { bytes: number; inputs: string[] };
    expect(r.inputs.some((p) => p.endsWith('src/gpu/shader-source.browser.ts'))).toBe(true);
    expect(r.inputs.filter((p) => /src\/gpu\/(dawn|runtime|shader-source|package-root)\.ts$|node_modules\/(sharp|webgpu)\//.test(p))).toEqual([]);
    const js = readFileSync(outfile, 'utf8');
    expect(js).not.toMatch(/from\s*["']node:|require\(["']node:/);
    const { readdirSync } = await import('node:fs');
    const shaders = join(import.meta.dirname, '..', 'shaders');
    for (const f of readdirSync(shaders).filter((x) => x.endsWith('.wgsl'))) {
      // Each file's function declarations appear in the bundle's strings.
      const fns = readFileSync(join(shaders, f), 'utf8').match(/\bfn \w+\(/g) ?? [];
      expect(fns.length, f).toBeGreaterThan(0);
      for (const fn of fns) expect(js, `${f}: ${fn}`).toContain(fn);
    }
    console.log(`web-export: bundle ${(r.bytes / 1024).toFixed(0)} KiB from ${r.inputs.length} modules`);
  }, 60_000);

  it('the page typechecks against the DOM (tsconfig.web.json)', () => {
    const tsc = join(import.meta.dirname, '..', 'node_modules', 'typescript', 'bin', 'tsc');
    const r = spawnSync(process.execPath, [tsc, '-p', 'tsconfig.web.json'], { cwd: join(import.meta.dirname, '..'), encoding: 'utf8' });
    expect(r.stdout + r.stderr).toBe('');
    expect(r.status).toBe(0);
  }, 180_000);
});
