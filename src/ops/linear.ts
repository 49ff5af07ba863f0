/** Fully connected layer with PyTorch nn.Linear layouts. */
import { type Tensor, mixedDtype, shapeStr } from '../autograd/tensor.js';
import { colsum, matmul as mm } from '../kernels/matmul.js';

/**
 * y = x · weightᵀ + bias, over the last dim of x.
 * Shapes: x [..., in], weight [out, in], bias [out] or null -> y [..., out].
 */
export function linear(x: Tensor, weight: Tensor, bias: Tensor | null): Tensor {
  const { rows, inF, outF } = linearDims('linear', x, weight, bias);
  const e = x.engine;
  const y = e.empty([...x.shape.slice(0, -1), outF], undefined, mixedDtype(x, weight));
  mm(e.gpu, {
    a: x.buffer, b: weight.buffer, c: y.buffer, M: rows, N: outF, K: inF,
    transB: true, strideB: 0, bias: bias?.buffer ?? null,
  });
  const inputs = bias ? [x, weight, bias] : [x, weight];
  return e.record(
    {
      name: 'linear',
      inputs,
      saved: [],
      backward: (g, needs) => {
        const dx = needs[0] ? e.emptyLike(x) : null;
        // dx = g · W
        if (dx) {
          mm(e.gpu, { a: g.buffer, b: weight.buffer, c: dx.buffer, M: rows, N: inF, K: outF });
        }
        // Frozen base layers (needs false) cost no weight-gradient work at all.
        const dw = needs[1] ? e.emptyLike(weight) : null;
        if (dw) {
          mm(e.gpu, {
            a: g.buffer, b: x.buffer, c: dw.buffer, M: outF, N: inF, K: rows, transA: true,
          });
        }
        const db = bias && needs[2] ? e.emptyLike(bias) : null;
        if (db) colsum(e.gpu, g.buffer, db.buffer, rows, outF);
        return bias ? [dx, dw, db] : [dx, dw];
      },
    },
    y,
  );
}

/** Checks linear-layer shapes; `rows` is the product of x's leading dims. */
export function linearDims(
  op: string,
  x: Tensor,
  weight: Tensor,
  bias: Tensor | null,
): { rows: number; inF: number; outF: number } {
  if (weight.shape.length !== 2) {
    throw new Error(`${op}: weight must be [out, in], got ${shapeStr(weight.shape)}`);
  }
  const [outF, inF] = weight.shape;
  if (x.shape.length < 1 || x.shape[x.shape.length - 1] !== inF) {
    throw new Error(
      `${op}: x must be [..., ${inF}] for weight ${shapeStr(weight.shape)}, ` +
        `got ${shapeStr(x.shape)}`,
    );
  }
  if (bias && (bias.shape.length !== 1 || bias.shape[0] !== outF)) {
    throw new Error(`${op}: bias must be [${outF}], got ${shapeStr(bias.shape)}`);
  }
  return { rows: x.size / inF, inF, outF };
}
