import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getGpu, closeGpu, type Gpu } from '../src/gpu/runtime.js';
import { add, addKernel } from '../src/kernels/elementwise.js';
import { KernelError } from '../src/gpu/errors.js';
import { sizeClass } from '../src/gpu/pool.js';
import { nextRng } from './helpers.js';

let gpu: Gpu;
beforeAll(async () => {
  gpu = await getGpu();
});
afterAll(() => closeGpu());

describe('runtime', () => {
  it('finds an adapter', () => {
    expect(gpu.info.description.length).toBeGreaterThan(0);
  });

  it('adds with broadcast and writes every element', async () => {
    const n = 70_007; // 7 × 10001: not a multiple of the workgroup
    const nb = 7;
    const r = nextRng();
    const a = Float32Array.from({ length: n }, () => r() * 2 - 1);
    const b = Float32Array.from({ length: nb }, () => r() * 2 - 1);
    const ba = gpu.upload(a);
    const bb = gpu.upload(b);
    const out = gpu.upload(new Float32Array(n).fill(NaN));
    add(gpu, ba, bb, out, n, nb, -0.5);
    const got = await gpu.readF32(out, n);
    // a + alpha·b in f32 with alpha = -0.5 (exact scaling): one rounding, so exactly fround.
    let wrong = -1;
    for (let i = 0; i < n && wrong < 0; i++) {
      if (got[i] !== Math.fround(a[i] + -0.5 * b[i % nb])) wrong = i;
    }
    expect(wrong, `first element not equal to fround(a + alpha b) (NaN: unwritten)`).toBe(-1);
  });

  it('folds grids past 65535 workgroups', async () => {
    const n = 65_535 * 256 + 1000;
    const ba = gpu.upload(new Float32Array(n).fill(1));
    const bb = gpu.upload(new Float32Array(1).fill(2));
    const out = gpu.upload(new Float32Array(n).fill(NaN));
    add(gpu, ba, bb, out, n, 1);
    const got = await gpu.readF32(out, n);
    expect(got[0]).toBe(3);
    expect(got[n - 1]).toBe(3);
    expect(got.every((v) => v === 3)).toBe(true);
  });

  it('names the kernel when Dawn rejects a dispatch', async () => {
    const small = gpu.alloc(16);
    const big = gpu.alloc(1024);
    // A uniform-usage buffer bound as storage: a validation error at bind-group creation.
    const wrong = gpu.device.createBuffer({ size: 1024, usage: GPUBufferUsage.UNIFORM });
    gpu.run(addKernel, {
      buffers: [big, small, wrong],
      params: { n: 4, nb: 4, alpha: 1 },
      grid: [1],
    });
    const err = await gpu.sync().catch((e) => e);
    expect(err).toBeInstanceOf(KernelError);
    expect((err as KernelError).kernel).toBe('elementwise.add');
    expect(String(err.message)).toMatch(/elementwise\.add/);
    // The runtime stays usable after a reported error.
    const a = gpu.upload(new Float32Array([1, 2, 3, 4]));
    const out = gpu.alloc(16);
    add(gpu, a, a, out, 4);
    expect([...(await gpu.readF32(out, 4))]).toEqual([2, 4, 6, 8]);
  });

  it('rejects a wrong binding count before dispatch', () => {
    const a = gpu.alloc(16);
    expect(() =>
      gpu.run(addKernel, { buffers: [a, a], params: { n: 4, nb: 4, alpha: 1 }, grid: [1] }),
    ).toThrow(/elementwise\.add.*expects 3 buffers/);
  });

  it('pools buffers by size class', () => {
    expect(sizeClass(1)).toBe(256);
    expect(sizeClass(1000)).toBe(1024);
    expect(sizeClass(1025)).toBe(1280);
    const before = gpu.pool.stats.allocations;
    const x = gpu.alloc(5000); // class 5120, unused by earlier tests
    gpu.free(x);
    gpu.flush();
    const y = gpu.alloc(4900);
    expect(y).toBe(x);
    expect(gpu.pool.stats.allocations).toBe(before + 1);
  });
});

describe('device loss', () => {
  it('turns a lost device into GpuLostError on the next call, not a hang', async () => {
    const { Gpu } = await import('../src/gpu/runtime.js');
    const { GpuLostError } = await import('../src/gpu/errors.js');
    const own = await Gpu.open();
    const buf = own.alloc(64);
    own.device.destroy(); // what a driver reset looks like from here
    await own.device.lost;
    await new Promise((r) => setTimeout(r, 0));
    expect(() => add(own, buf, buf, own.alloc(64), 16)).toThrow(GpuLostError);
    await expect(own.sync()).rejects.toThrow(/device lost/);
  });
});

describe('kernel specs', () => {
  it('refuses a uniform field named like a WGSL reserved word', async () => {
    const { defineShader } = await import('../src/gpu/kernel.js');
    expect(() => defineShader('loss', { P: { n: 'u32', smooth: 'f32' } })).toThrow(
      /'smooth' .* reserved word in WGSL/,
    );
  });

  it('generates the shared-memory tree reductions, so no file spells one out', async () => {
    const { readdirSync, readFileSync } = await import('node:fs');
    const dir = new URL('../shaders/', import.meta.url);
    const tree = /for \(var \w+ = \w+ \/ 2u; \w+ > 0u; \w+ >>= 1u\)/;
    const files = readdirSync(dir).filter((f) => f.endsWith('.wgsl'));
    expect(files.length).toBeGreaterThan(5);
    for (const f of files) {
      expect([f, tree.test(readFileSync(new URL(f, dir), 'utf8'))]).toEqual([f, false]);
    }
    const { softmaxShader } = await import('../src/kernels/softmax.js');
    const src = softmaxShader.source();
    expect(src.match(/fn softmax_max\(t: u32\)/g)).toHaveLength(1);
    expect(src).toContain('softmax_sh[t] = max(softmax_sh[t], softmax_sh[t + s]);');
    const { reduce } = await import('../src/kernels/reduce.js');
    const strided = 'if (lane < s) {\n      colsum_sh[t] += colsum_sh[t + s * CT];';
    expect(reduce.source()).toContain(strided);
  });

  it('refuses a tree reduction over a name that is no var<workgroup> of the file', async () => {
    const { defineShader, treeSum } = await import('../src/gpu/kernel.js');
    const fam = defineShader('softmax', { SoftmaxParams: { rows: 'u32', cols: 'u32' } }, {
      trees: { t_sum: treeSum(['softmax_p']) },
    });
    expect(() => fam.source()).toThrow(
      /tree reduction t_sum reduces 'softmax_p', not a var<workgroup>/,
    );
    expect(() => defineShader('softmax', {}, { trees: { t: treeSum(['a[0]']) } })).toThrow(
      /tree reduction t: 'a\[0\]' is not a usable name/,
    );
  });

  it('binds the requested size, not the pool size class', async () => {
    // 1000 floats round up to a 4096-byte class; `add` must see exactly 1000 elements: it writes
    // all of them, and the class's other 24 floats (poisoned) stay untouched even when the kernel
    // is told to write past the end (robust access keeps stores inside the binding).
    const n = 1000;
    const r = nextRng();
    const a = Float32Array.from({ length: n }, () => r() * 2 - 1);
    const ba = gpu.upload(a);
    const one = gpu.upload(new Float32Array([1]));
    expect(ba.size).toBe(4096);
    expect(gpu.pool.requestedBytes(ba)).toBe(n * 4);
    const out = gpu.alloc(n * 4);
    expect(out.size).toBe(4096);
    const cls = out.size / 4;
    const POISON = -12345.5;
    const check = async (what: string, head: boolean) => {
      const got = await gpu.readF32(out, cls);
      if (head) {
        for (let i = 0; i < n; i++) {
          if (got[i] !== Math.fround(a[i] + 1)) expect(got[i], `${what}: element ${i}`).toBe(Math.fround(a[i] + 1));
        }
      }
      for (let i = n; i < cls; i++) {
        if (got[i] !== POISON) expect(got[i], `${what}: pool byte past the request, float ${i}`).toBe(POISON);
      }
    };
    gpu.write(out, new Float32Array(cls).fill(POISON));
    add(gpu, ba, one, out, n, 1);
    await check('n = 1000', true);
    gpu.write(out, new Float32Array(cls).fill(POISON));
    add(gpu, ba, one, out, cls, 1); // told 1024: the binding still ends at 1000
    await check('n = 1024 past the binding', false);
  });
});
