/**
 * attn_fwd_sg and attn_bwd_q_sg (shaders/attention_sg.wgsl: key/value rows shared across an
 * 8-lane subgroup, lavapipe's default for 4-aligned views) against the float64 references:
 * ragged query and key counts around the 32-query workgroups and 32-key blocks (1, 7, 33, 49, 64,
 * 196), Nq != Nk, several batches and heads, q/k/v read in place from a packed qkv and dq written
 * into its columns, f16 operands, gradients through the op (the reference backward itself checked
 * by finite differences), the fallback to the regs kernels for views that are not 4-aligned, and
 * that the sg kernels are the ones dispatched. Outputs start NaN-poisoned (testEngine). Skipped
 * where the adapter has no subgroups of 8+ lanes (then the launcher never picks this path).
 */
import { afterAll, describe, expect, it } from 'vitest';
import { closeGpu, getGpu } from '../src/gpu/runtime.js';
import {
  type AttnDims,
  type RowView,
  attentionBackwardD,
  attentionBackwardKV,
  attentionBackwardQ,
  attentionForward,
} from '../src/kernels/attention.js';
import { sgCapable } from '../src/kernels/matmul.js';
import { attention, attentionQkv } from '../src/ops/attention.js';
import { roundArrayF16 } from '../src/util/f16.js';
import { U16, f16Supported } from './f16-helpers.js';
import { checkOp, expectClose, f32, randn, reportError, spyRuns, testEngine, type Tol } from './helpers.js';
import {
  type AttnShape,
  attentionDsumRef as dsumRef,
  attentionLseRef as lseRef,
  attentionRef,
  attentionRefBackward,
  attentionStoredOutTerms,
  packQkv,
  splitQkv,
} from './ref/attention.js';

afterAll(() => closeGpu());

const gpu = await getGpu();
const run = sgCapable(gpu);
const f16 = run && (await f16Supported());

// The bounds of attention.test.ts (measured there for the regs and tiled kernels; the sg kernels
// sum the same f32 products in another order): forward ~1e-6 of max|out| measured for hd 96 and
// Nk ~ 300; backward adds a second dot product and the cancellation dP - D.
const FWD: Tol = { rtol: 1e-4, atol: 5e-6 };
const BWD: Tol = { rtol: 1e-3, atol: 2e-5 };
// lse = m + log(l): f32 rounding of the max and of log of a sum of Nk terms (|lse| ~ 1..10).
const LSE: Tol = { rtol: 1e-6, atol: 1e-6 };

/** Rows r of `width` columns at (stride, offset) of a flat [rows, stride] array. */
function cols(x: ArrayLike<number>, rows: number, stride: number, offset: number, width: number) {
  const out = new Float64Array(rows * width);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < width; c++) out[r * width + c] = x[r * stride + offset + c];
  }
  return out;
}

describe.skipIf(!run)('attention sg kernels (forced path sg)', () => {
  /**
   * Forward (out, lse) and dq at the launchers. With `packed`, q, k, v are columns of one
   * [B, Nk, 3C] buffer (Nq = Nk) and dq goes into the q columns of a poisoned [B, Nk, 3C]
   * gradient, whose other columns must stay untouched (NaN). Backward gets float64 lse and D
   * (rounded to f32), so dq checks attn_bwd_q_sg alone.
   */
  async function checkKernels(s: AttnShape, packed = false): Promise<void> {
    const e = await testEngine();
    const { B, heads, hd, Nq, Nk } = s;
    const C = heads * hd;
    const label = `sg B${B} h${heads} hd${hd} Nq${Nq} Nk${Nk}${packed ? ' packed' : ''}`;
    const d: AttnDims = { ...s, scale: 1 / Math.sqrt(hd), path: 'sg' };
    let q: Float64Array;
    let k: Float64Array;
    let v: Float64Array;
    let qkv: Float64Array | null = null;
    if (packed) {
      qkv = f32(randn(B * Nk * 3 * C));
      [q, k, v] = splitQkv(qkv, B * Nk, C);
    } else {
      [q, k, v] = [Nq, Nk, Nk].map((n) => f32(randn(B * n * C)));
    }
    const g = f32(randn(B * Nq * C));
    const want = attentionRef(s, q, k, v);
    const lseW = lseRef(s, q, k);
    const dsumW = dsumRef(s, g, want);
    const [dqW] = attentionRefBackward(s, q, k, v, g);
    const got = await e.scopeAsync(async () => {
      const view = (buffer: GPUBuffer, stride: number, offset = 0): RowView => ({ buffer, stride, offset });
      let qv: RowView;
      let kv: RowView;
      let vv: RowView;
      if (qkv) {
        const t = e.fromArray(qkv, [B, Nk, 3 * C]);
        [qv, kv, vv] = [0, C, 2 * C].map((o) => view(t.buffer, 3 * C, o));
      } else {
        const [tq, tk, tv] = [q, k, v].map((x) => e.fromArray(x, [x.length]));
        [qv, kv, vv] = [tq, tk, tv].map((t) => view(t.buffer, C));
      }
      const tg = e.fromArray(g, [g.length]);
      const out = e.empty([B * Nq * C]);
      const lse = e.empty([B * heads * Nq]);
      const dq = e.empty([B * Nq * (packed ? 3 * C : C)]);
      const lseIn = e.fromArray(f32(lseW), [lseW.length]);
      const dsumIn = e.fromArray(f32(dsumW), [dsumW.length]);
      const calls = spyRuns(e.gpu, () => {
        attentionForward(e.gpu, d, qv, kv, vv, view(out.buffer, C), lse.buffer);
        attentionBackwardQ(e.gpu, d, {
          q: qv, k: kv, v: vv, gradOut: view(tg.buffer, C), lse: lseIn.buffer, dsum: dsumIn.buffer,
        }, view(dq.buffer, packed ? 3 * C : C));
      });
      expect(calls.map((c) => c.kernel), label).toEqual(['attention.fwd_sg', 'attention.bwd_q_sg']);
      return Promise.all([out.toArray(), lse.toArray(), dq.toArray()]);
    });
    const r = expectClose(got[0], want, FWD, `${label} out`);
    reportError('attention sg', 'forward', label, r);
    expectClose(got[1], lseW, LSE, `${label} lse`);
    const dqGot = packed ? cols(got[2], B * Nq, 3 * C, 0, C) : got[2];
    if (Nk === 1) {
      // One key: P = 1 and dP = D, so dq is exactly 0 and a bound relative to max|dq| means
      // nothing. What is left is rounding: dP = g.v in f32 (hd products) against the f32 D, times
      // scale * k: |dq| <= scale * (hd + 2) * 2^-24 * max sum|g v| * max|k|.
      let gv = 0;
      for (let r = 0; r < B * Nq; r++) {
        for (let h = 0; h < heads; h++) {
          let sum = 0;
          for (let c = 0; c < hd; c++) {
            sum += Math.abs(g[r * C + h * hd + c] * v[Math.floor(r / Nq) * C + h * hd + c]);
          }
          gv = Math.max(gv, sum);
        }
      }
      const kMax = k.reduce((m, x) => Math.max(m, Math.abs(x)), 0);
      const bound = (d.scale * (hd + 2) * 2 ** -24) * gv * kMax;
      const worst = Array.from(dqGot).reduce((m, x) => Math.max(m, Math.abs(x)), 0);
      console.log(`${label} dq (exactly 0): max |dq| ${worst.toExponential(2)}, bound ${bound.toExponential(2)}`);
      expect(Number.isFinite(worst) && worst <= bound, `${label}: max |dq| ${worst} > ${bound}`).toBe(true);
    } else {
      reportError('attention sg', 'dq', label, expectClose(dqGot, dqW, BWD, `${label} dq`));
    }
    if (packed) {
      const rest = cols(got[2], B * Nq, 3 * C, C, 2 * C);
      const written = rest.findIndex((x) => !Number.isNaN(x));
      expect(written, `${label}: dq wrote outside its columns`).toBe(-1);
    }
  }

  it.each([
    // [B, heads, hd, Nq, Nk]
    [1, 1, 4, 1, 1], // one query, one key: 31 idle query slots, 31 masked keys
    [2, 3, 8, 7, 33], // two key blocks, the second with one key
    [2, 2, 12, 33, 7], // two query workgroups, the second with one query; one short key block
    [3, 2, 16, 49, 49], // ws 7 windows
    [1, 2, 96, 64, 196], // Hiera-tiny head dim; Nk a 14x14 window
    [2, 1, 96, 196, 64], // many query workgroups, two full key blocks
    [1, 4, 96, 1, 64],
    [1, 1, 8, 64, 1],
  ])('B %i, %i heads, hd %i, Nq %i, Nk %i', (B, heads, hd, Nq, Nk) =>
    checkKernels({ B, heads, hd, Nq, Nk }));

  it.each([
    [2, 49, 2, 8],
    [1, 196, 2, 96],
  ])('packed qkv B %i, N %i, %i heads, hd %i: read in place, dq into its columns', (B, N, heads, hd) =>
    checkKernels({ B, heads, hd, Nq: N, Nk: N }, true));

  it('a view that is not 4-aligned runs the regs kernels, with the same results', async () => {
    const e = await testEngine();
    const s: AttnShape = { B: 2, heads: 2, hd: 6, Nq: 33, Nk: 40 };
    const C = s.heads * s.hd;
    const [q, k, v] = [s.Nq, s.Nk, s.Nk].map((n) => f32(randn(s.B * n * C)));
    const want = attentionRef(s, q, k, v);
    const got = await e.scopeAsync(async () => {
      const [tq, tk, tv] = [q, k, v].map((x) => e.fromArray(x, [x.length]));
      const out = e.empty([s.B * s.Nq * C]);
      const lse = e.empty([s.B * s.heads * s.Nq]);
      const d: AttnDims = { ...s, scale: 1 / Math.sqrt(s.hd), path: 'sg' };
      const row = (t: { buffer: GPUBuffer }) => ({ buffer: t.buffer, stride: C, offset: 0 });
      const calls = spyRuns(e.gpu, () =>
        attentionForward(e.gpu, d, row(tq), row(tk), row(tv), row(out), lse.buffer));
      expect(calls.map((c) => c.kernel)).toEqual(['attention.fwd_regs']);
      return out.toArray();
    });
    expectClose(got, want, FWD, 'hd 6 (unaligned) forward');
  });
});

describe.skipIf(!run)('attention op on the sg path', () => {
  it('is what a CPU adapter with subgroups dispatches (fwd, bwd_q; bwd_kv sg or regs)', async () => {
    const e = await testEngine();
    const [B, N, heads, hd] = [2, 49, 2, 8];
    const C = heads * hd;
    const names = e.scope(() => {
      const qkv = e.fromArray(f32(randn(B * N * 3 * C)), [B, N, 3 * C], true);
      let y = qkv;
      const fwd = spyRuns(e.gpu, () => {
        y = attentionQkv(qkv, heads);
      });
      const bwd = spyRuns(e.gpu, () => e.backward(y, e.fromArray(f32(randn(B * N * C)), [B, N, C])));
      return [...fwd, ...bwd].map((c) => c.kernel).filter((n) => n.startsWith('attention.'));
    });
    console.log(`attentionQkv dispatches: ${names.join(', ')}`);
    if (!e.gpu.info.cpuFallback) {
      // GPUs keep the workgroup-memory tiles whatever their subgroups.
      expect(names).toContain('attention.fwd');
      return;
    }
    expect(names).toContain('attention.fwd_sg');
    expect(names).toContain('attention.bwd_q_sg');
    expect(names.filter((n) => n.startsWith('attention.bwd_kv'))).toHaveLength(1);
    expect(names.some((n) => /^attention\.(fwd|bwd_q)(_regs)?$/.test(n))).toBe(false);
  });

  it('keeps the regs kernels where a (b, h) has under 16 query rows (most sg lanes would idle)', async () => {
    const e = await testEngine();
    const [B, Nk, heads, hd] = [2, 16, 2, 8];
    const C = heads * hd;
    for (const [n, want] of [[15, 'regs'], [16, 'sg']] as const) {
      const names = e.scope(() => {
        const q = e.fromArray(f32(randn(B * n * C)), [B, n, C], true);
        const k = e.fromArray(f32(randn(B * Nk * C)), [B, Nk, C]);
        let y = q;
        const fwd = spyRuns(e.gpu, () => {
          y = attention(q, k, k, heads);
        });
        const bwd = spyRuns(e.gpu, () => e.backward(y, e.fromArray(f32(randn(B * n * C)), [B, n, C])));
        return [...fwd, ...bwd].map((c) => c.kernel);
      });
      if (!e.gpu.info.cpuFallback) continue;
      expect(names, `Nq ${n}`).toContain(`attention.fwd_${want}`);
      expect(names, `Nq ${n}`).toContain(`attention.bwd_q_${want}`);
    }
  });

  async function checkGrads(s: AttnShape, qs = 1): Promise<void> {
    const C = s.heads * s.hd;
    const { B, Nq, Nk } = s;
    const label = `attention sg op B${B} h${s.heads} hd${s.hd} Nq${Nq} Nk${Nk}`;
    const r = await checkOp({
      label,
      inputs: [randn(B * Nq * C, undefined, qs), randn(B * Nk * C), randn(B * Nk * C)],
      shapes: [[B, Nq, C], [B, Nk, C], [B, Nk, C]],
      gpu: (q, k, v) => attention(q, k, v, s.heads),
      ref: ([q, k, v]) => attentionRef(s, q, k, v),
      refBackward: ([q, k, v], g) => attentionRefBackward(s, q, k, v, g),
      outShape: [B, Nq, C],
      tol: FWD,
      gradTol: BWD,
      fd: { samples: 12 },
    });
    console.log(`${label}: fwd ${r.fwd.maxRel.toExponential(2)}, grads ` +
      r.grads.map((g) => g.maxRel.toExponential(2)).join(' '));
  }

  it('gradients, pooled queries Nq 16 < Nk 64, 2 heads, hd 12', () =>
    checkGrads({ B: 2, heads: 2, hd: 12, Nq: 16, Nk: 64 }));

  it('gradients, Nq 33 > Nk 7, sharp softmax', () =>
    checkGrads({ B: 1, heads: 3, hd: 8, Nq: 33, Nk: 7 }, 3));

  it('gradients through attentionQkv (packed, N 49, pooled q 16)', async () => {
    const [B, N, Nq, heads, hd] = [2, 49, 16, 2, 8];
    const C = heads * hd;
    const s: AttnShape = { B, heads, hd, Nq, Nk: N };
    await checkOp({
      label: `attentionQkv sg pooled q B${B} N${N} Nq${Nq}`,
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
      fd: { samples: 12 },
    });
  });
});

describe.skipIf(!f16)('attention sg path, f16 operands (f32 softmax and accumulators)', () => {
  // As f16-ops.test.ts: the f32 bounds plus one f16 rounding of out / dq / dk / dv, and for the
  // gradients one more u of their scale plus, element by element, what the saved f16 output adds
  // through D = rowsum(dO * O) (attentionStoredOutTerms; without it seed 1005 failed here).
  const FWD16: Tol = { rtol: FWD.rtol + U16, atol: FWD.atol };
  const BWD16: Tol = { rtol: 1e-4 + U16, atol: 2e-5 + U16 };

  it.each([
    { B: 2, heads: 2, hd: 12, Nq: 33, Nk: 49 },
    { B: 1, heads: 1, hd: 96, Nq: 17, Nk: 64 },
  ])('attention %j', async (s) => {
    const C = s.heads * s.hd;
    const e = await testEngine();
    await checkOp({
      label: `attention sg f16 B${s.B} h${s.heads} hd${s.hd} Nq${s.Nq} Nk${s.Nk}`,
      inputs: [randn(s.B * s.Nq * C), randn(s.B * s.Nk * C), randn(s.B * s.Nk * C)],
      shapes: [[s.B, s.Nq, C], [s.B, s.Nk, C], [s.B, s.Nk, C]],
      dtypes: ['f16', 'f16', 'f16'],
      outDtype: 'f16',
      gpu: (q, k, v) => {
        let y = q;
        const calls = spyRuns(e.gpu, () => {
          y = attention(q, k, v, s.heads);
        });
        if (e.gpu.info.cpuFallback) expect(calls.map((c) => c.kernel)).toContain('attention.fwd_sg');
        return y;
      },
      ref: ([q, k, v]) => attentionRef(s, q, k, v),
      refBackward: ([q, k, v], g) => attentionRefBackward(s, q, k, v, g),
      outShape: [s.B, s.Nq, C],
      tol: FWD16,
      gradTol: (i, [q, k, v], g) =>
        ({ ...BWD16, extra: attentionStoredOutTerms(s, q, k, v, g, U16)[i] }),
      fd: { samples: 8 },
    });
  });

  it('f16 packed qkv at the launchers (f16 operands read as vec4<f16>)', async () => {
    const e = await testEngine();
    const s: AttnShape = { B: 2, heads: 2, hd: 8, Nq: 37, Nk: 37 };
    const C = s.heads * s.hd;
    const qkv = Float64Array.from(roundArrayF16(randn(s.B * s.Nk * 3 * C)));
    const [q, k, v] = splitQkv(qkv, s.B * s.Nk, C);
    const want = attentionRef(s, q, k, v);
    const got = await e.scopeAsync(async () => {
      const t = e.fromArray(qkv, [qkv.length], false, 'f16');
      const out = e.empty([s.B * s.Nq * C]);
      const lse = e.empty([s.B * s.heads * s.Nq]);
      const d: AttnDims = { ...s, scale: 1 / Math.sqrt(s.hd), path: 'sg' };
      const [qv, kv, vv] = [0, C, 2 * C].map((offset) => ({ buffer: t.buffer, stride: 3 * C, offset }));
      attentionForward(e.gpu, d, qv, kv, vv, { buffer: out.buffer, stride: C, offset: 0 }, lse.buffer);
      return out.toArray();
    });
    // f32 output: the f32 bound alone (the inputs are exactly f16 values on both sides).
    expectClose(got, want, FWD, 'sg f16 packed qkv forward');
  });
});

// The backward kernels the sg path leaves to others still see consistent inputs: a full
// forward + backward at the launchers, sg where available, against the references.
describe.skipIf(!run)('attention sg path, all passes at the launchers', () => {
  it('B 2, 2 heads, hd 16, Nq 40, Nk 70', async () => {
    const e = await testEngine();
    const s: AttnShape = { B: 2, heads: 2, hd: 16, Nq: 40, Nk: 70 };
    const C = s.heads * s.hd;
    const d: AttnDims = { ...s, scale: 1 / Math.sqrt(s.hd), path: 'sg' };
    const [q, k, v] = [s.Nq, s.Nk, s.Nk].map((n) => f32(randn(s.B * n * C)));
    const g = f32(randn(s.B * s.Nq * C));
    const got = await e.scopeAsync(async () => {
      const [tq, tk, tv, tg] = [q, k, v, g].map((x) => e.fromArray(x, [x.length]));
      const row = (t: { buffer: GPUBuffer }, stride = C, offset = 0) => ({ buffer: t.buffer, stride, offset });
      const out = e.empty([s.B * s.Nq * C]);
      const lse = e.empty([s.B * s.heads * s.Nq]);
      const dsum = e.empty([s.B * s.heads * s.Nq]);
      const dq = e.empty([s.B * s.Nq * C]);
      const dkv = e.empty([s.B * s.Nk * 2 * C]);
      attentionForward(e.gpu, d, row(tq), row(tk), row(tv), row(out), lse.buffer);
      attentionBackwardD(e.gpu, d, row(tg), row(out), dsum.buffer);
      const saved = { q: row(tq), k: row(tk), v: row(tv), gradOut: row(tg), lse: lse.buffer, dsum: dsum.buffer };
      attentionBackwardQ(e.gpu, d, saved, row(dq));
      attentionBackwardKV(e.gpu, d, saved, dkv.buffer, { stride: 2 * C, offset: 0 }, { stride: 2 * C, offset: C });
      return Promise.all([out.toArray(), dq.toArray(), dkv.toArray()]);
    });
    const [dqW, dkW, dvW] = attentionRefBackward(s, q, k, v, g);
    expectClose(got[0], attentionRef(s, q, k, v), FWD, 'all passes forward');
    expectClose(got[1], dqW, BWD, 'all passes dq');
    expectClose(cols(got[2], s.B * s.Nk, 2 * C, 0, C), dkW, BWD, 'all passes dk');
    expectClose(cols(got[2], s.B * s.Nk, 2 * C, C, C), dvW, BWD, 'all passes dv');
  });
});
