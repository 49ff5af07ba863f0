import { afterAll, describe, expect, it } from 'vitest';
import {
  type AttnDims,
  attentionBackwardD,
  attentionBackwardKV,
  attentionBackwardQ,
  attentionForward,
  attentionTiles,
} from '../src/kernels/attention.js';
import { closeGpu } from '../src/gpu/runtime.js';
import { attention, attentionQkv } from '../src/ops/attention.js';
import { windowPartition } from '../src/ops/window.js';
import { checkOp, expectClose, f32, randn, testEngine, type Tol } from './helpers.js';
import {
  type AttnShape,
  attentionRef,
  attentionRefBackward,
  packQkv,
  splitColumns,
  splitQkv,
  windowPartitionRef,
} from './ref/attention.js';

afterAll(() => closeGpu());

// Scores are f32 dot products of length hd (error ~sqrt(hd) * 6e-8 of |q||k|), softmax turns
// their absolute error into relative error of P, and the output sums Nk such terms: ~1e-6 of
// max|out| measured, so 5e-6 (~40 ulp) covers hd 96 and Nk ~ 300 with margin.
const FWD: Tol = { rtol: 1e-4, atol: 5e-6 };
// Backward adds a second K-length dot product (dP = g v^T) and the cancellation dP - D before
// two more Nk/Nq-length sums: allow 4x forward's absolute bound.
const BWD: Tol = { rtol: 1e-3, atol: 2e-5 };

interface Case extends AttnShape {
  /** Scale of q (sharper softmax for larger values). */
  qs?: number;
  grads?: boolean[];
}

async function checkAttention(c: Case): Promise<void> {
  const C = c.heads * c.hd;
  const { B, Nq, Nk } = c;
  const label = `attention B${B} h${c.heads} hd${c.hd} Nq${Nq} Nk${Nk}`;
  const r = await checkOp({
    label,
    inputs: [randn(B * Nq * C, undefined, c.qs ?? 1), randn(B * Nk * C), randn(B * Nk * C)],
    shapes: [[B, Nq, C], [B, Nk, C], [B, Nk, C]],
    grads: c.grads,
    gpu: (q, k, v) => attention(q, k, v, c.heads),
    ref: ([q, k, v]) => attentionRef(c, q, k, v),
    refBackward: ([q, k, v], g) => attentionRefBackward(c, q, k, v, g),
    outShape: [B, Nq, C],
    tol: FWD,
    gradTol: BWD,
    fd: { samples: Nq * Nk > 20000 ? 6 : 16 },
  });
  console.log(
    `${label}: fwd ${r.fwd.maxRel.toExponential(2)}, grads ` +
      r.grads.map((g) => g.maxRel.toExponential(2)).join(' '),
  );
}

describe('attention', () => {
  it('picks tiles that fit the device', async () => {
    const e = await testEngine();
    const l = e.gpu.limits;
    const kinds = ['fwd', 'q', 'kv'] as const;
    for (const hd of [8, 12, 16, 96]) {
      for (const w of kinds) {
        const t = attentionTiles(e.gpu, w, hd);
        // 16 threads per resident row; streamed blocks of 4..32 keys.
        expect(t.BR * 16, `${w} hd ${hd}`).toBeLessThanOrEqual(l.maxComputeInvocationsPerWorkgroup);
        expect([1, 2, 4, 8, 16], `${w} hd ${hd} BR`).toContain(t.BR);
        expect([4, 8, 16, 32], `${w} hd ${hd} BC`).toContain(t.BC);
      }
    }
    console.log(
      `workgroup storage ${l.maxComputeWorkgroupStorageSize}, invocations ` +
        `${l.maxComputeInvocationsPerWorkgroup}; hd 96 tiles: ` +
        kinds.map((w) => `${w} ${JSON.stringify(attentionTiles(e.gpu, w, 96))}`).join(', '),
    );
    // Other devices, by their limits alone. Forward at hd 96 (row stride 97) holds
    // BR·97 + 2·BC·97 + BR·BC floats: 16x32 is 33088 bytes (fits 48 KiB), 16x16 is 19648 bytes
    // and 16x8 12928 bytes (so 16 KiB gets 16x8).
    const dev = (bytes: number, threads: number) =>
      ({ limits: { maxComputeWorkgroupStorageSize: bytes, maxComputeInvocationsPerWorkgroup: threads } }) as
        unknown as typeof e.gpu;
    expect(attentionTiles(dev(49152, 256), 'fwd', 96)).toEqual({ BR: 16, BC: 32 });
    expect(attentionTiles(dev(16384, 256), 'fwd', 96)).toEqual({ BR: 16, BC: 8 });
    // 64 invocations hold 4 rows of 16 threads.
    expect(attentionTiles(dev(49152, 64), 'fwd', 96).BR).toBe(4);
    // 1 KiB cannot hold one row of 97 floats plus two key rows.
    expect(() => attentionTiles(dev(1024, 256), 'fwd', 96)).toThrow(/head dim 96 does not fit 1024 bytes/);
  });

  it('window-sized, 1 head, hd 8, N 49 (ws 7)', () =>
    checkAttention({ B: 2, heads: 1, hd: 8, Nq: 49, Nk: 49 }));

  it('pooled queries: 2 heads, hd 12, Nq 17 != Nk 61', () =>
    checkAttention({ B: 2, heads: 2, hd: 12, Nq: 17, Nk: 61 }));

  it('3 heads, hd 16, B 3, N 37, sharp softmax', () =>
    checkAttention({ B: 3, heads: 3, hd: 16, Nq: 37, Nk: 37, qs: 3 }));

  it('Hiera-tiny head dim 96, several key blocks', () =>
    checkAttention({ B: 2, heads: 1, hd: 96, Nq: 19, Nk: 70 }));

  it('only k and v need gradients', () =>
    checkAttention({ B: 2, heads: 2, hd: 8, Nq: 9, Nk: 23, grads: [false, true, true] }));

  it('only q needs a gradient', () =>
    checkAttention({ B: 2, heads: 2, hd: 8, Nq: 23, Nk: 9, grads: [true, false, false] }));

  it('global: N 300, streams over many key and query blocks', () =>
    checkAttention({ B: 2, heads: 1, hd: 16, Nq: 300, Nk: 300 }));
});

describe('attention kernels at forced tiles', () => {
  // Small-memory devices get smaller tiles; lavapipe's 32 KiB would never pick these, so the
  // launchers are driven directly with each tile shape (streamed block < threads per row, etc.).
  it.each([
    [2, 4],
    [8, 32],
  ])('BR %i, BC %i', async (BR, BC) => {
    const e = await testEngine();
    const s: AttnShape = { B: 2, heads: 2, hd: 12, Nq: 21, Nk: 30 };
    const C = s.heads * s.hd;
    const d: AttnDims = { ...s, scale: 1 / Math.sqrt(s.hd), tiles: { BR, BC } };
    const [q, k, v] = [s.Nq, s.Nk, s.Nk].map((n) => f32(randn(s.B * n * C)));
    const g = f32(randn(s.B * s.Nq * C));
    const got = await e.scopeAsync(async () => {
      const [tq, tk, tv, tg] = [q, k, v, g].map((x, i) =>
        e.fromArray(x, [s.B, i === 0 || i === 3 ? s.Nq : s.Nk, C]));
      const row = (t: { buffer: GPUBuffer }, stride = C, offset = 0) => ({
        buffer: t.buffer,
        stride,
        offset,
      });
      const out = e.empty([s.B, s.Nq, C]);
      const lse = e.empty([s.B * s.heads * s.Nq]);
      const dsum = e.empty([s.B * s.heads * s.Nq]);
      const dq = e.empty([s.B, s.Nq, C]);
      const dkv = e.empty([s.B, s.Nk, 2 * C]);
      attentionForward(e.gpu, d, row(tq), row(tk), row(tv), row(out), lse.buffer);
      attentionBackwardD(e.gpu, d, row(tg), row(out), dsum.buffer);
      const saved = {
        q: row(tq),
        k: row(tk),
        v: row(tv),
        gradOut: row(tg),
        lse: lse.buffer,
        dsum: dsum.buffer,
      };
      attentionBackwardQ(e.gpu, d, saved, row(dq));
      attentionBackwardKV(e.gpu, d, saved, dkv.buffer, { stride: 2 * C, offset: 0 },
        { stride: 2 * C, offset: C });
      return Promise.all([out.toArray(), dq.toArray(), dkv.toArray()]);
    });
    const [dqW, dkW, dvW] = attentionRefBackward(s, q, k, v, g);
    expectClose(got[0], attentionRef(s, q, k, v), FWD, `tiles ${BR}x${BC} forward`);
    expectClose(got[1], dqW, BWD, `tiles ${BR}x${BC} dq`);
    const [dkGot, dvGot] = splitColumns(Float64Array.from(got[2]), s.B * s.Nk, C, 2);
    expectClose(dkGot, dkW, BWD, `tiles ${BR}x${BC} dk`);
    expectClose(dvGot, dvW, BWD, `tiles ${BR}x${BC} dv`);
  });
});

describe('attentionQkv', () => {
  async function checkPacked(B: number, N: number, heads: number, hd: number): Promise<void> {
    const C = heads * hd;
    const s: AttnShape = { B, heads, hd, Nq: N, Nk: N };
    const label = `attentionQkv B${B} N${N} h${heads} hd${hd}`;
    const r = await checkOp({
      label,
      inputs: [randn(B * N * 3 * C)],
      shapes: [[B, N, 3 * C]],
      gpu: (qkv) => attentionQkv(qkv, heads),
      ref: ([qkv]) => {
        const [q, k, v] = splitQkv(qkv, B * N, C);
        return attentionRef(s, q, k, v);
      },
      refBackward: ([qkv], g) => {
        const [q, k, v] = splitQkv(qkv, B * N, C);
        return [packQkv(attentionRefBackward(s, q, k, v, g), B * N, C)];
      },
      outShape: [B, N, C],
      tol: FWD,
      gradTol: BWD,
      fd: { samples: 16 },
    });
    const [fwd, grad] = [r.fwd, r.grads[0]].map((x) => x.maxRel.toExponential(2));
    console.log(`${label}: fwd ${fwd}, grad ${grad}`);
  }

  it('ws 14 windows (N 196), 2 heads, hd 8', () => checkPacked(2, 196, 2, 8));
  it('3 heads, hd 12, N 61', () => checkPacked(3, 61, 3, 12));

  it('with separate (pooled) queries: Nq 16, N 49, 2 heads, hd 8', async () => {
    const [B, N, Nq, heads, hd] = [2, 49, 16, 2, 8];
    const C = heads * hd;
    const s: AttnShape = { B, heads, hd, Nq, Nk: N };
    const label = `attentionQkv pooled q B${B} N${N} Nq${Nq} h${heads} hd${hd}`;
    const r = await checkOp({
      label,
      inputs: [randn(B * N * 3 * C), randn(B * Nq * C)],
      shapes: [[B, N, 3 * C], [B, Nq, C]],
      gpu: (qkv, q) => attentionQkv(qkv, heads, q),
      ref: ([qkv, q]) => {
        const [, k, v] = splitQkv(qkv, B * N, C);
        return attentionRef(s, q, k, v);
      },
      refBackward: ([qkv, q], g) => {
        const [, k, v] = splitQkv(qkv, B * N, C);
        const [dq, dk, dv] = attentionRefBackward(s, q, k, v, g);
        return [packQkv([new Float64Array(B * N * C), dk, dv], B * N, C), dq];
      },
      outShape: [B, Nq, C],
      tol: FWD,
      gradTol: BWD,
      fd: { samples: 16 },
    });
    console.log(`${label}: fwd ${r.fwd.maxRel.toExponential(2)}, grads ` +
      r.grads.map((g) => g.maxRel.toExponential(2)).join(' '));
  });

  it('over zero-padded windows matches SAM2 (padding tokens attend, unmasked)', async () => {
    // x 5x6 with ws 4: three of four windows hold padding tokens, which must join the softmax.
    const e = await testEngine();
    const [B, H, W, heads, hd, ws] = [2, 5, 6, 2, 8, 4];
    const C3 = 3 * heads * hd;
    const x = f32(randn(B * H * W * C3));
    const got = await e.scopeAsync(async () => {
      const t = e.fromArray(x, [B, H, W, C3]);
      return attentionQkv(windowPartition(t, ws), heads).toArray();
    });
    const win = windowPartitionRef({ B, H, W, C: C3, ws }, x);
    const nWin = win.length / (ws * ws * C3);
    const [q, k, v] = splitQkv(win, nWin * ws * ws, heads * hd);
    const want = attentionRef({ B: nWin, heads, hd, Nq: ws * ws, Nk: ws * ws }, q, k, v);
    const r = expectClose(got, want, FWD, 'windowed attentionQkv');
    expect(r.maxRel).toBeLessThan(FWD.atol);
  });

  it('rejects mismatched shapes', async () => {
    const e = await testEngine();
    e.scope(() => {
      const q = e.zeros([2, 5, 8]);
      const k = e.zeros([2, 6, 8]);
      expect(() => attention(q, k, e.zeros([2, 7, 8]), 2)).toThrow(/attention: expected/);
      expect(() => attention(q, k, k, 3)).toThrow(/do not split into 3 heads/);
      expect(() => attentionQkv(e.zeros([2, 5, 7]), 1)).toThrow(/attentionQkv: expected/);
    });
  });
});
