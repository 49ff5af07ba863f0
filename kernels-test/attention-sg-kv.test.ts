/**
 * attn_bwd_kv_sg (shaders/attention_sg.wgsl: 32 keys per 8-lane subgroup, query and dO rows shared
 * by shuffles, lavapipe's default dK/dV pass for 4-aligned views) against the float64 references:
 * ragged key and query counts around the 32-key workgroups and the 4- to 32-query blocks (1, 4,
 * 7, 12, 16, 17, 33, 49, 64, 196), Nq != Nk, several batches and heads, q/k/v/dO read in place
 * from packed rows, dk and dv written into separate regions, interleaved [dk | dv] rows or the k
 * and v columns of a packed qkv gradient (the q columns must stay NaN-poisoned), f16 operands with
 * an f16 output, gradients through the op (the reference backward checked by finite differences), the
 * fallback to attn_bwd_kv_regs for views that are not 4-aligned, and that the sg kernel is the one
 * dispatched. Outputs start NaN-poisoned (testEngine). Skipped where the adapter has no subgroups
 * of 8+ lanes (then the launcher never picks this path).
 */
import { afterAll, describe, expect, it } from 'vitest';
import { closeGpu, getGpu } from '../src/gpu/runtime.js';
import {
  type AttnDims,
  type RowView,
  attentionBackwardKV,
  kvSgLanes,
} from '../src/kernels/attention.js';
import { sgCapable } from '../src/kernels/matmul.js';
import { attention } from '../src/ops/attention.js';
import { roundArrayF16 } from '../src/util/f16.js';
import { U16, f16Supported } from './f16-helpers.js';
import { checkOp, expectClose, f32, randn, reportError, spyRuns, testEngine, type Tol } from './helpers.js';
import {
  type AttnShape,
  attentionDsumRef,
  attentionLseRef,
  attentionRef,
  attentionRefBackward,
  splitQkv,
} from './ref/attention.js';

afterAll(() => closeGpu());

const gpu = await getGpu();
const run = sgCapable(gpu);
const f16 = run && (await f16Supported());

// attention.test.ts's forward bound (the op checks; the sg kernels sum the same f32 products in
// another order).
const FWD: Tol = { rtol: 1e-4, atol: 5e-6 };
// attention.test.ts's backward bound, for dk, dv of the op (lse and D from the GPU forward).
const BWD: Tol = { rtol: 1e-3, atol: 2e-5 };
// The kernel alone, given float64 lse and D (rounded to f32): each P and dS carries the f32 error
// of two hd-long dot products, and dk, dv sum Nq of them; measured <= 9e-7 of max|want| up to
// hd 96, Nq 196, so 5e-6 (forward's bound) leaves ~5x.
const KV: Tol = { rtol: 1e-4, atol: 5e-6 };
// The f16 output adds one f16 rounding of each dk, dv element (u relative); the operands are
// exactly f16 on both sides.
const KV16: Tol = { rtol: KV.rtol + U16, atol: KV.atol };

/** Rows r of `width` columns at (stride, offset) of a flat [rows, stride] array. */
function cols(x: ArrayLike<number>, rows: number, stride: number, offset: number, width: number) {
  const out = new Float64Array(rows * width);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < width; c++) out[r * width + c] = x[r * stride + offset + c];
  }
  return out;
}

/**
 * With one key, P = 1 and dP = D, so dk is exactly 0 and a bound relative to max|dk| means
 * nothing. What is left is rounding: dP = dO.v in f32 (hd products) against the f32-rounded D, so
 * |dS_i| <= scale * (hd + 2) * 2^-24 * sum_d |dO_i,d v_d|, and dk = sum_i dS_i q_i. Checked per
 * (b, h) against that bound (1% over for P's own rounding, ~1e-6).
 */
function expectZeroDk(s: AttnShape, q: Float64Array, v: Float64Array, g: Float64Array,
  dk: Float64Array, label: string): void {
  const { B, heads, hd, Nq } = s;
  const C = heads * hd;
  const scale = 1 / Math.sqrt(hd);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < heads; h++) {
      let gv = 0;
      let qMax = 0;
      for (let i = 0; i < Nq; i++) {
        for (let d = 0; d < hd; d++) {
          const o = (b * Nq + i) * C + h * hd + d;
          gv += Math.abs(g[o] * v[b * C + h * hd + d]);
          qMax = Math.max(qMax, Math.abs(q[o]));
        }
      }
      const bound = 1.01 * scale * (hd + 2) * 2 ** -24 * gv * qMax;
      let worst = 0;
      for (let d = 0; d < hd; d++) {
        const x = dk[b * C + h * hd + d];
        worst = Number.isFinite(x) ? Math.max(worst, Math.abs(x)) : Infinity;
      }
      console.log(`${label} dk (exactly 0) b${b} h${h}: max |dk| ${worst.toExponential(2)}, ` +
        `bound ${bound.toExponential(2)}`);
      expect(worst <= bound, `${label} b${b} h${h}: max |dk| ${worst} > ${bound}`).toBe(true);
    }
  }
}

/** How dk and dv are laid out in the output buffer. */
type Layout =
  | 'regions' // dk rows [B * Nk, C] then dv rows [B * Nk, C], one buffer
  | 'interleaved' // [B * Nk, 2C] rows: dk | dv
  | 'packed'; // q, k, v, dO read from packed [B, N, 3C]; dk, dv into the k, v columns of [B, N, 3C]

interface KvCase extends AttnShape {
  layout: Layout;
  dtype?: 'f32' | 'f16';
}

/**
 * dk, dv at the launcher, path sg, given float64 lse and D (rounded to f32), so the check is of
 * attn_bwd_kv_sg alone. Checks the dispatched kernel and that nothing outside dk, dv was written.
 */
async function checkKv(c: KvCase): Promise<void> {
  const e = await testEngine();
  const { B, heads, hd, Nq, Nk, layout } = c;
  const dt = c.dtype ?? 'f32';
  const C = heads * hd;
  const s: AttnShape = { B, heads, hd, Nq, Nk };
  const label = `kv sg B${B} h${heads} hd${hd} Nq${Nq} Nk${Nk} ${layout} ${dt}`;
  const round = (x: Float64Array) => (dt === 'f16' ? Float64Array.from(roundArrayF16(x)) : f32(x));
  let q: Float64Array;
  let k: Float64Array;
  let v: Float64Array;
  let g: Float64Array;
  let packed: { qkv: Float64Array; g: Float64Array } | null = null;
  if (layout === 'packed') {
    if (Nq !== Nk) throw new Error(`${label}: a packed qkv has Nq = Nk`);
    // dO read from the middle columns of a wider row too: [B, N, 2C], offset C.
    packed = { qkv: round(randn(B * Nk * 3 * C)), g: round(randn(B * Nq * 2 * C)) };
    [q, k, v] = splitQkv(packed.qkv, B * Nk, C);
    g = cols(packed.g, B * Nq, 2 * C, C, C);
  } else {
    [q, k, v, g] = [Nq, Nk, Nk, Nq].map((n) => round(randn(B * n * C)));
  }
  const lseW = attentionLseRef(s, q, k);
  const dsumW = attentionDsumRef(s, g, attentionRef(s, q, k, v));
  const [, dkW, dvW] = attentionRefBackward(s, q, k, v, g);
  const d: AttnDims = { ...s, scale: 1 / Math.sqrt(hd), path: 'sg' };
  const width = layout === 'regions' ? 2 * B * Nk * C : B * Nk * (layout === 'packed' ? 3 : 2) * C;
  const got = await e.scopeAsync(async () => {
    const view = (buffer: GPUBuffer, stride: number, offset = 0): RowView => ({ buffer, stride, offset });
    const up = (x: Float64Array) => e.fromArray(x, [x.length], false, dt);
    let qv: RowView;
    let kv: RowView;
    let vv: RowView;
    let gv: RowView;
    if (packed) {
      const t = up(packed.qkv);
      [qv, kv, vv] = [0, C, 2 * C].map((o) => view(t.buffer, 3 * C, o));
      gv = view(up(packed.g).buffer, 2 * C, C);
    } else {
      [qv, kv, vv, gv] = [q, k, v, g].map((x) => view(up(x).buffer, C));
    }
    const lse = e.fromArray(f32(lseW), [lseW.length]);
    const dsum = e.fromArray(f32(dsumW), [dsumW.length]);
    const out = e.empty([width], dt);
    const [dkView, dvView] = layout === 'regions'
      ? [{ stride: C, offset: 0 }, { stride: C, offset: B * Nk * C }]
      : layout === 'interleaved'
        ? [{ stride: 2 * C, offset: 0 }, { stride: 2 * C, offset: C }]
        : [{ stride: 3 * C, offset: C }, { stride: 3 * C, offset: 2 * C }];
    const calls = spyRuns(e.gpu, () => attentionBackwardKV(e.gpu, d, {
      q: qv, k: kv, v: vv, gradOut: gv, lse: lse.buffer, dsum: dsum.buffer,
    }, out.buffer, dkView, dvView));
    // An f16 output goes through an f32 stand-in and two column copies.
    expect(calls.map((x) => x.kernel).filter((n) => n.startsWith('attention.')), label)
      .toEqual(['attention.bwd_kv_sg']);
    return out.toArray();
  });
  let dk: Float64Array;
  let dv: Float64Array;
  if (layout === 'regions') {
    dk = Float64Array.from(got.subarray(0, B * Nk * C));
    dv = Float64Array.from(got.subarray(B * Nk * C));
  } else if (layout === 'interleaved') {
    dk = cols(got, B * Nk, 2 * C, 0, C);
    dv = cols(got, B * Nk, 2 * C, C, C);
  } else {
    dk = cols(got, B * Nk, 3 * C, C, C);
    dv = cols(got, B * Nk, 3 * C, 2 * C, C);
    const rest = cols(got, B * Nk, 3 * C, 0, C);
    expect(rest.findIndex((x) => !Number.isNaN(x)), `${label}: wrote into the q columns`).toBe(-1);
  }
  const tol = dt === 'f16' ? KV16 : KV;
  if (Nk === 1) {
    expectZeroDk(s, q, v, g, dk, label);
  } else {
    reportError('attention sg', 'dk', label, expectClose(dk, dkW, tol, `${label} dk`));
  }
  reportError('attention sg', 'dv', label, expectClose(dv, dvW, tol, `${label} dv`));
}

describe.skipIf(!run)('attn_bwd_kv_sg at the launcher (path sg)', () => {
  it('streams query blocks of 4, 8, 16 up to Nq 4, 8, 16, of 32 above', () => {
    expect([1, 4, 5, 7, 8, 9, 16, 17, 33, 196].map(kvSgLanes)).toEqual([1, 1, 2, 2, 2, 4, 4, 8, 8, 8]);
  });

  it.each([
    // [B, heads, hd, Nq, Nk]
    [1, 1, 4, 1, 1], // one query, one key: dk exactly 0; 31 masked keys, 3 empty query slots
    [2, 3, 8, 7, 33], // 8-query blocks; a second key block holding one key
    [2, 4, 12, 4, 16], // a q-pooled block of 4x4 windows: one 4-query block, 16 keys
    [1, 2, 16, 12, 40], // one 16-query block with 4 empty slots
    [2, 2, 12, 33, 7], // 32-query blocks, the second with one query; one short key block
    [3, 2, 16, 49, 49], // ws 7 windows
    [1, 2, 96, 64, 196], // Hiera-tiny head dim; Nk a 14x14 window (7 key blocks, last of 4)
    [2, 1, 96, 196, 64], // 7 query blocks per key block
    [1, 4, 96, 16, 64], // a q-pooled block: Nq exactly one 16-query block
    [2, 2, 8, 17, 1], // one key (dk exactly 0), 17 queries: the smallest 32-query block
    [1, 1, 8, 1, 64], // one query
  ])('B %i, %i heads, hd %i, Nq %i, Nk %i, dk and dv in separate regions', (B, heads, hd, Nq, Nk) =>
    checkKv({ B, heads, hd, Nq, Nk, layout: 'regions' }));

  it.each([
    [2, 2, 12, 16, 61],
    [1, 3, 96, 49, 33],
  ])('B %i, %i heads, hd %i, Nq %i, Nk %i, interleaved [dk | dv] rows', (B, heads, hd, Nq, Nk) =>
    checkKv({ B, heads, hd, Nq, Nk, layout: 'interleaved' }));

  it.each([
    [2, 2, 8, 49],
    [1, 1, 96, 64],
    [1, 2, 96, 196],
  ])('packed qkv B %i, %i heads, hd %i, N %i: read in place, dk, dv into its columns', (B, heads, hd, N) =>
    checkKv({ B, heads, hd, Nq: N, Nk: N, layout: 'packed' }));

  it('a view that is not 4-aligned runs attn_bwd_kv_regs, with the same results', async () => {
    const e = await testEngine();
    const s: AttnShape = { B: 2, heads: 2, hd: 6, Nq: 33, Nk: 40 };
    const C = s.heads * s.hd;
    const [q, k, v, g] = [s.Nq, s.Nk, s.Nk, s.Nq].map((n) => f32(randn(s.B * n * C)));
    const lseW = attentionLseRef(s, q, k);
    const dsumW = attentionDsumRef(s, g, attentionRef(s, q, k, v));
    const [, dkW, dvW] = attentionRefBackward(s, q, k, v, g);
    const got = await e.scopeAsync(async () => {
      const [tq, tk, tv, tg] = [q, k, v, g].map((x) => e.fromArray(x, [x.length]));
      const lse = e.fromArray(f32(lseW), [lseW.length]);
      const dsum = e.fromArray(f32(dsumW), [dsumW.length]);
      const out = e.empty([s.B * s.Nk * 2 * C]);
      const d: AttnDims = { ...s, scale: 1 / Math.sqrt(s.hd), path: 'sg' };
      const row = (t: { buffer: GPUBuffer }) => ({ buffer: t.buffer, stride: C, offset: 0 });
      const calls = spyRuns(e.gpu, () => attentionBackwardKV(e.gpu, d, {
        q: row(tq), k: row(tk), v: row(tv), gradOut: row(tg), lse: lse.buffer, dsum: dsum.buffer,
      }, out.buffer, { stride: 2 * C, offset: 0 }, { stride: 2 * C, offset: C }));
      expect(calls.map((c) => c.kernel)).toEqual(['attention.bwd_kv_regs']);
      return out.toArray();
    });
    expectClose(cols(got, s.B * s.Nk, 2 * C, 0, C), dkW, KV, 'hd 6 (unaligned) dk');
    expectClose(cols(got, s.B * s.Nk, 2 * C, C, C), dvW, KV, 'hd 6 (unaligned) dv');
  });
});

describe.skipIf(!f16)('attn_bwd_kv_sg, f16 operands and output (f32 accumulators)', () => {
  it.each([
    [2, 2, 8, 37, 'packed'],
    [1, 2, 96, 16, 'interleaved'],
  ] as const)('B %i, %i heads, hd %i, N %i, %s', (B, heads, hd, N, layout) =>
    checkKv({ B, heads, hd, Nq: N, Nk: N, layout, dtype: 'f16' }));
});

describe.skipIf(!run)('attention op: dk, dv through attn_bwd_kv_sg', () => {
  it('is the dK/dV pass a CPU adapter with subgroups dispatches', async () => {
    const e = await testEngine();
    const [B, Nq, Nk, heads, hd] = [2, 33, 49, 2, 8];
    const C = heads * hd;
    const names = e.scope(() => {
      const q = e.fromArray(f32(randn(B * Nq * C)), [B, Nq, C], true);
      const k = e.fromArray(f32(randn(B * Nk * C)), [B, Nk, C], true);
      const v = e.fromArray(f32(randn(B * Nk * C)), [B, Nk, C], true);
      const y = attention(q, k, v, heads);
      const bwd = spyRuns(e.gpu, () => e.backward(y, e.fromArray(f32(randn(B * Nq * C)), [B, Nq, C])));
      return bwd.map((c) => c.kernel).filter((n) => n.startsWith('attention.bwd_kv'));
    });
    console.log(`attention backward dK/dV dispatch on '${gpu.info.description}': ${names.join(', ')}`);
    if (!gpu.info.cpuFallback) {
      // GPUs keep the workgroup-memory tiles whatever their subgroups.
      expect(names).toEqual(['attention.bwd_kv']);
      return;
    }
    expect(names).toEqual(['attention.bwd_kv_sg']);
  });

  /** dk, dv of the op against the reference backward, itself checked by finite differences. */
  async function checkGrads(s: AttnShape, qs = 1): Promise<void> {
    const C = s.heads * s.hd;
    const { B, Nq, Nk } = s;
    const label = `attention kv sg op B${B} h${s.heads} hd${s.hd} Nq${Nq} Nk${Nk}`;
    const r = await checkOp({
      label,
      inputs: [randn(B * Nq * C, undefined, qs), randn(B * Nk * C), randn(B * Nk * C)],
      shapes: [[B, Nq, C], [B, Nk, C], [B, Nk, C]],
      grads: [false, true, true],
      gpu: (q, k, v) => attention(q, k, v, s.heads),
      ref: ([q, k, v]) => attentionRef(s, q, k, v),
      refBackward: ([q, k, v], g) => attentionRefBackward(s, q, k, v, g),
      outShape: [B, Nq, C],
      tol: FWD,
      gradTol: BWD,
      fd: { samples: 12 },
    });
    console.log(`${label}: grads ${r.grads.map((g) => g.maxRel.toExponential(2)).join(' ')}`);
  }

  it('gradients, Nq 7 < Nk 33 (8-query blocks), 3 heads, hd 8', () =>
    checkGrads({ B: 2, heads: 3, hd: 8, Nq: 7, Nk: 33 }));

  it('gradients, Nq 49 > Nk 33 (32-query blocks), sharp softmax, hd 16', () =>
    checkGrads({ B: 1, heads: 2, hd: 16, Nq: 49, Nk: 33 }, 3));
});
