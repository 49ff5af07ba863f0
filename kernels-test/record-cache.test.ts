/**
 * The runtime's per-dispatch caches (src/gpu/device.ts): bind groups reused by buffer identity,
 * uniforms packed into staging chunks reused in order after every submit, and the pool handing
 * out its oldest free buffer first. Reuse must never change a result: every case checks exact
 * values on NaN-poisoned outputs.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UNIFORM_CHUNK, closeGpu, getGpu, type Gpu } from '../src/gpu/runtime.js';
import { KernelError } from '../src/gpu/errors.js';
import { add, addKernel } from '../src/kernels/elementwise.js';
import { nextRng } from './helpers.js';

let gpu: Gpu;
beforeAll(async () => {
  gpu = await getGpu();
});
afterAll(() => closeGpu());

function rand(n: number, r = nextRng()): Float32Array {
  return Float32Array.from({ length: n }, () => r() * 2 - 1);
}

/** Index of the first element of `got` that is not fround(a + alpha·b[i % nb]), or -1. */
function firstWrong(got: Float32Array, a: Float32Array, b: Float32Array, alpha: number, n: number) {
  for (let i = 0; i < n; i++) {
    if (got[i] !== Math.fround(a[i] + alpha * b[i % b.length])) return i;
  }
  return -1;
}

describe('bind-group cache', () => {
  it('reuses a bind group for the same buffers, and the results follow the new contents', async () => {
    const n = 1000;
    const a = gpu.upload(rand(n));
    const b = gpu.upload(rand(n));
    const out = gpu.upload(new Float32Array(n).fill(NaN));
    add(gpu, a, b, out, n);
    await gpu.sync();
    // Same buffers, same slot after the submit: a hit, with new contents in every input.
    const a2 = rand(n);
    const b2 = rand(n);
    gpu.write(a, a2);
    gpu.write(b, b2);
    gpu.write(out, new Float32Array(n).fill(NaN));
    const hits = gpu.recordStats.bindGroupHits;
    add(gpu, a, b, out, n);
    const got = await gpu.readF32(out, n);
    expect(gpu.recordStats.bindGroupHits).toBe(hits + 1);
    expect(firstWrong(got, a2, b2, 1, n), 'first wrong element (NaN: unwritten)').toBe(-1);
    for (const x of [a, b, out]) gpu.free(x);
  });

  it('a pooled buffer freed and re-acquired at another size and contents binds afresh', async () => {
    const n1 = 1200; // 4800 bytes: size class 5120, shared with n2
    const n2 = 1100;
    const a = gpu.upload(rand(n1));
    const b = gpu.upload(rand(n1));
    const out = gpu.upload(new Float32Array(n1).fill(NaN));
    add(gpu, a, b, out, n1);
    await gpu.sync();
    for (const x of [a, b, out]) gpu.free(x);
    gpu.flush();
    // The pool hands the same objects back (oldest first), now holding n2 elements.
    const a2 = rand(n2);
    const b2 = rand(n2);
    const ra = gpu.upload(a2);
    const rb = gpu.upload(b2);
    const rout = gpu.upload(new Float32Array(n2).fill(NaN));
    expect([ra === a, rb === b, rout === out]).toEqual([true, true, true]);
    const misses = gpu.recordStats.bindGroupMisses;
    // Same buffers, smaller bound sizes: no cached group may be handed out.
    add(gpu, ra, rb, rout, n2);
    const got = await gpu.readF32(rout, n2);
    expect(gpu.recordStats.bindGroupMisses).toBe(misses + 1);
    expect(firstWrong(got, a2, b2, 1, n2), 'first wrong element (NaN: unwritten)').toBe(-1);
    for (const x of [ra, rb, rout]) gpu.free(x);
  });

  it('after a rejected bind group, the same dispatch is rejected again (no error object reused)', async () => {
    const small = gpu.alloc(16);
    const big = gpu.alloc(1024);
    const wrong = gpu.device.createBuffer({ size: 1024, usage: GPUBufferUsage.UNIFORM });
    for (let round = 0; round < 2; round++) {
      gpu.run(addKernel, { buffers: [big, small, wrong], params: { n: 4, nb: 4, alpha: 1 }, grid: [1] });
      const err = await gpu.sync().catch((e) => e);
      expect(err).toBeInstanceOf(KernelError);
      expect((err as KernelError).kernel).toBe('elementwise.add');
    }
    wrong.destroy();
    gpu.free(small);
    gpu.free(big);
  });
});

describe('uniform staging chunks', () => {
  it('wrap across chunks within one submit and are rewritten right on the next submits', async () => {
    const align = gpu.limits.minUniformBufferOffsetAlignment;
    const slot = Math.ceil(16 / align) * align; // BinaryParams: 3 fields, packed in 16 bytes
    const count = Math.ceil((2.5 * UNIFORM_CHUNK) / slot); // spans 3 chunks
    // One 64-float slice per dispatch of a, b and out, at storage-offset-aligned strides.
    const stride = Math.max(256, gpu.limits.minStorageBufferOffsetAlignment) / 4;
    const A = rand(count * stride);
    const B = rand(count * stride);
    const a = gpu.upload(A);
    const b = gpu.upload(B);
    const out = gpu.alloc(count * stride * 4);
    const chunksBefore = gpu.recordStats.uniformChunks;
    for (let round = 0; round < 3; round++) {
      gpu.write(out, new Float32Array(count * stride).fill(NaN));
      // Every dispatch differs in n and alpha (exact powers of two: one rounding per element).
      const ns: number[] = [];
      const alphas: number[] = [];
      for (let i = 0; i < count; i++) {
        ns.push(1 + ((i * 37 + round * 11) % 64));
        alphas.push((i % 2 ? -1 : 1) * 2 ** ((i + round) % 5 - 2));
        const ref = (buffer: GPUBuffer) => ({ buffer, offset: i * stride * 4, size: 256 });
        gpu.run(addKernel, {
          buffers: [ref(a), ref(b), ref(out)],
          params: { n: ns[i], nb: ns[i], alpha: alphas[i] },
          grid: [1],
        });
      }
      const got = await gpu.readF32(out, count * stride);
      let bad = '';
      for (let i = 0; i < count && !bad; i++) {
        const o = i * stride;
        for (let j = 0; j < 64 && !bad; j++) {
          const want = j < ns[i] ? Math.fround(A[o + j] + alphas[i] * B[o + j]) : NaN;
          if (!Object.is(got[o + j], want)) bad = `dispatch ${i} element ${j}: ${got[o + j]} != ${want}`;
        }
      }
      expect(bad, `round ${round}`).toBe('');
    }
    // One submit needed three chunks; the later rounds reused them.
    expect(gpu.recordStats.uniformChunks - chunksBefore).toBeLessThanOrEqual(3);
    expect(gpu.recordStats.uniformChunks).toBeGreaterThanOrEqual(3);
    for (const x of [a, b, out]) gpu.free(x);
  });
});

describe('buffer pool order', () => {
  it('hands out free buffers oldest first, whatever order they were released in', () => {
    const bytes = 7000; // class 7168, unused by the other cases
    const xs = [gpu.alloc(bytes), gpu.alloc(bytes), gpu.alloc(bytes)];
    for (const i of [2, 0, 1]) gpu.free(xs[i]);
    gpu.flush();
    const ys = [gpu.alloc(bytes), gpu.alloc(bytes), gpu.alloc(bytes)];
    expect(ys.map((y, i) => y === xs[i])).toEqual([true, true, true]);
    for (const y of ys) gpu.free(y);
    gpu.flush();
  });
});
