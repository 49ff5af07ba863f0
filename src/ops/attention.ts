/** Multi-head scaled dot-product attention (SAM2 Hiera's MultiScaleAttention core). */
import { type Tensor, shapeStr } from '../autograd/tensor.js';
import {
  type AttnDims,
  type AttnSaved,
  type RowView,
  attentionBackwardD,
  attentionBackwardKV,
  attentionBackwardQ,
  attentionForward,
  copyColumns,
  zeroColumns,
} from '../kernels/attention.js';

function headDim(op: string, C: number, heads: number): number {
  if (!Number.isInteger(heads) || heads <= 0 || C % heads !== 0) {
    throw new Error(`${op}: ${C} channels do not split into ${heads} heads`);
  }
  return C / heads;
}

const view = (t: Tensor, stride: number, offset = 0): RowView => ({
  buffer: t.buffer,
  stride,
  offset,
});

/**
 * softmax(q k^T / sqrt(hd)) v per head, no mask (SAM2 lets zero-padded window tokens take part).
 * Channel c of a token belongs to head floor(c / hd), hd = C / heads.
 * Shapes: q [B, Nq, C], k [B, Nk, C], v [B, Nk, C] -> [B, Nq, C].
 */
export function attention(q: Tensor, k: Tensor, v: Tensor, heads: number): Tensor {
  const [B, Nq, C] = q.shape;
  const bad =
    q.shape.length !== 3 ||
    k.shape.length !== 3 ||
    shapeStr(k.shape) !== shapeStr(v.shape) ||
    k.shape[0] !== B ||
    k.shape[2] !== C;
  if (bad) {
    throw new Error(
      `attention: expected q [B, Nq, C], k and v [B, Nk, C], got q ${shapeStr(q.shape)}, ` +
        `k ${shapeStr(k.shape)}, v ${shapeStr(v.shape)}`,
    );
  }
  const hd = headDim('attention', C, heads);
  const Nk = k.shape[1];
  const d: AttnDims = { B, heads, hd, Nq, Nk, scale: 1 / Math.sqrt(hd) };
  const e = q.engine;
  const out = e.emptyLike(q, [B, Nq, C]);
  const lse = e.empty([B * heads * Nq]);
  attentionForward(e.gpu, d, view(q, C), view(k, C), view(v, C), view(out, C), lse.buffer);
  // lse only matters to backward; unrecorded, it goes back to the pool now (its dispatch is
  // already recorded, and the pool reuses nothing before the next submit).
  if (!e.needsTape([q, k, v])) lse.release();
  return e.record(
    {
      name: 'attention',
      inputs: [q, k, v],
      saved: [out, lse],
      backward: (g, needs) => {
        const s = savedFor(d, view(q, C), view(k, C), view(v, C), g, out, lse);
        let dq: Tensor | null = null;
        if (needs[0]) {
          dq = e.emptyLike(q);
          attentionBackwardQ(e.gpu, d, s, view(dq, C));
        }
        let dk: Tensor | null = null;
        let dv: Tensor | null = null;
        if (needs[1] || needs[2]) {
          // dk and dv come out of one dispatch into one buffer, then split into their tensors.
          const dkv = e.emptyLike(k, [B, Nk, 2 * C]);
          attentionBackwardKV(e.gpu, d, s, dkv.buffer, { stride: 2 * C, offset: 0 },
            { stride: 2 * C, offset: C });
          if (needs[1]) {
            dk = e.emptyLike(k);
            copyColumns(e.gpu, view(dkv, 2 * C), view(dk, C), B * Nk, C);
          }
          if (needs[2]) {
            dv = e.emptyLike(v);
            copyColumns(e.gpu, view(dkv, 2 * C, C), view(dv, C), B * Nk, C);
          }
        }
        return [dq, dk, dv];
      },
    },
    out,
  );
}

/**
 * attention(q, k, v) over a packed projection, read in place: qkv's channels are [3, heads, hd]
 * (q = [0, C), k = [C, 2C), v = [2C, 3C)), as SAM2's qkv Linear lays them out. With `q` given
 * (Hiera's q-pool blocks: the pooled queries), queries come from it and qkv's q columns are
 * unused (their gradient is zero).
 * Shapes: qkv [B, N, 3C], q [B, Nq, C] (default: Nq = N, from qkv) -> [B, Nq, C]; the gradient
 * of qkv comes back packed [B, N, 3C].
 */
export function attentionQkv(qkv: Tensor, heads: number, q?: Tensor): Tensor {
  if (qkv.shape.length !== 3 || qkv.shape[2] % 3 !== 0) {
    throw new Error(`attentionQkv: expected qkv [B, N, 3C], got ${shapeStr(qkv.shape)}`);
  }
  const [B, N, C3] = qkv.shape;
  const C = C3 / 3;
  if (q && (q.shape.length !== 3 || q.shape[0] !== B || q.shape[2] !== C)) {
    throw new Error(
      `attentionQkv: expected q [${B}, Nq, ${C}] for qkv ${shapeStr(qkv.shape)}, ` +
        `got ${shapeStr(q.shape)}`,
    );
  }
  const hd = headDim('attentionQkv', C, heads);
  const Nq = q ? q.shape[1] : N;
  const d: AttnDims = { B, heads, hd, Nq, Nk: N, scale: 1 / Math.sqrt(hd) };
  const e = qkv.engine;
  const inputs = q ? [qkv, q] : [qkv];
  const out = e.emptyLike(qkv, [B, Nq, C]);
  const lse = e.empty([B * heads * Nq]);
  const qv = () => (q ? view(q, C) : view(qkv, C3, 0));
  const kv = () => view(qkv, C3, C);
  const vv = () => view(qkv, C3, 2 * C);
  attentionForward(e.gpu, d, qv(), kv(), vv(), view(out, C), lse.buffer);
  if (!e.needsTape(inputs)) lse.release();
  return e.record(
    {
      name: 'attentionQkv',
      inputs,
      saved: [out, lse],
      // Views are rebuilt here: buffers are only read at backward time.
      backward: (g, needs) => {
        const s = savedFor(d, qv(), kv(), vv(), g, out, lse);
        let dqkv: Tensor | null = null;
        let dq: Tensor | null = null;
        if (needs[0]) {
          // dq (or zeros, with separate queries), dk, dv fill their column ranges of one tensor.
          dqkv = e.emptyLike(qkv);
          if (q) zeroColumns(e.gpu, view(dqkv, C3, 0), B * N, C);
          else attentionBackwardQ(e.gpu, d, s, view(dqkv, C3, 0));
          attentionBackwardKV(e.gpu, d, s, dqkv.buffer, { stride: C3, offset: C },
            { stride: C3, offset: 2 * C });
        }
        if (q && needs[1]) {
          dq = e.emptyLike(q);
          attentionBackwardQ(e.gpu, d, s, view(dq, C));
        }
        return q ? [dqkv, dq] : [dqkv];
      },
    },
    out,
  );
}

/** Computes D = rowsum(gradOut * out) (a tensor the caller's rule owns) and bundles the views. */
function savedFor(d: AttnDims, q: RowView, k: RowView, v: RowView, g: Tensor, out: Tensor,
  lse: Tensor): AttnSaved {
  const e = g.engine;
  const C = d.heads * d.hd;
  const dsum = e.empty([d.B * d.heads * d.Nq]);
  attentionBackwardD(e.gpu, d, view(g, C), view(out, C), dsum.buffer);
  return { q, k, v, gradOut: view(g, C), lse: lse.buffer, dsum: dsum.buffer };
}
