/** Batched matrix product with optional transposes (attention scores, projections). */
import { type Tensor, numel, shapeStr } from '../autograd/tensor.js';
import { colsum, matmul as mm } from '../kernels/matmul.js';

export interface MatmulOpts {
  transA?: boolean;
  transB?: boolean;
}

/**
 * out = op(a) · op(b), op = optional transpose of the last two dims. Either operand may be 2-D
 * (shared over the other's batch dims); otherwise both carry the same batch dims.
 * Shapes: a [..., M, K] ([..., K, M] with transA), b [..., K, N] ([..., N, K] with transB)
 * -> out [..., M, N].
 */
export function matmul(a: Tensor, b: Tensor, opts: MatmulOpts = {}): Tensor {
  const transA = !!opts.transA;
  const transB = !!opts.transB;
  const ra = a.shape.length;
  const rb = b.shape.length;
  const desc = () =>
    `a ${shapeStr(a.shape)}${transA ? 'ᵀ' : ''}, b ${shapeStr(b.shape)}${transB ? 'ᵀ' : ''}`;
  if (ra < 2 || rb < 2) throw new Error(`matmul: operands must be at least 2-D, got ${desc()}`);
  const M = transA ? a.shape[ra - 1] : a.shape[ra - 2];
  const K = transA ? a.shape[ra - 2] : a.shape[ra - 1];
  const Kb = transB ? b.shape[rb - 1] : b.shape[rb - 2];
  const N = transB ? b.shape[rb - 2] : b.shape[rb - 1];
  if (K !== Kb) throw new Error(`matmul: inner dims differ (${K} vs ${Kb}) in ${desc()}`);
  const aBatch = a.shape.slice(0, -2);
  const bBatch = b.shape.slice(0, -2);
  let batchDims: number[];
  if (rb === 2) batchDims = [...aBatch];
  else if (ra === 2) batchDims = [...bBatch];
  else if (shapeStr(aBatch) === shapeStr(bBatch)) batchDims = [...aBatch];
  else throw new Error(`matmul: batch dims differ in ${desc()}; expected equal or a 2-D operand`);
  const batch = numel(batchDims);
  const sA = ra === 2 ? 0 : M * K;
  const sB = rb === 2 ? 0 : K * N;
  // A shared right operand and row-major a: the whole batch is one [batch*M, K] product.
  const flat = sB === 0 && !transA && batch > 1;
  const e = a.engine;
  const out = e.emptyLike(a, [...batchDims, M, N]);
  const fwd = flat
    ? { M: batch * M, batch: 1, sA: batch * M * K, sB: 0 }
    : { M, batch, sA, sB };
  mm(e.gpu, {
    a: a.buffer,
    b: b.buffer,
    c: out.buffer,
    M: fwd.M,
    N,
    K,
    batch: fwd.batch,
    strideA: fwd.sA,
    strideB: fwd.sB,
    transA,
    transB,
  });
  return e.record(
    {
      name: 'matmul',
      inputs: [a, b],
      saved: [],
      backward: (g, needs) => {
        const { M: Mf, batch: bf, sA: sAf, sB: sBf } = fwd;
        const sG = Mf * N;
        // Per-batch gradient of a shared operand goes to [batch, ...] and is summed by colsum.
        const reduce = (grad: Tensor, perBatch: Tensor | null, size: number) => {
          if (perBatch) colsum(e.gpu, perBatch.buffer, grad.buffer, bf, size);
        };
        let da: Tensor | null = null;
        let db: Tensor | null = null;
        if (needs[0]) {
          da = e.emptyLike(a);
          const tmp = sAf === 0 && bf > 1 ? e.empty([bf, M * K]) : null;
          const dst = (tmp ?? da).buffer;
          if (!transA) {
            // dA = G · op(B)ᵀ
            mm(e.gpu, {
              a: g.buffer, b: b.buffer, c: dst, M: Mf, N: K, K: N, batch: bf,
              strideA: sG, strideB: sBf, transB: !transB,
            });
          } else {
            // dA (stored [K, M]) = op(B) · Gᵀ
            mm(e.gpu, {
              a: b.buffer, b: g.buffer, c: dst, M: K, N: Mf, K: N, batch: bf,
              strideA: sBf, strideB: sG, transA: transB, transB: true,
            });
          }
          reduce(da, tmp, M * K);
        }
        if (needs[1]) {
          db = e.emptyLike(b);
          const tmp = sBf === 0 && bf > 1 ? e.empty([bf, K * N]) : null;
          const dst = (tmp ?? db).buffer;
          if (!transB) {
            // dB = op(A)ᵀ · G
            mm(e.gpu, {
              a: a.buffer, b: g.buffer, c: dst, M: K, N, K: Mf, batch: bf,
              strideA: sAf, strideB: sG, transA: !transA,
            });
          } else {
            // dB (stored [N, K]) = Gᵀ · op(A)
            mm(e.gpu, {
              a: g.buffer, b: a.buffer, c: dst, M: N, N: K, K: Mf, batch: bf,
              strideA: sG, strideB: sAf, transA: true, transB: transA,
            });
          }
          reduce(db, tmp, K * N);
        }
        return [da, db];
      },
    },
    out,
  );
}
