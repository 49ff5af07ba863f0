/** Sums and means: to a scalar, or over leading dims (the backward of a broadcast). */
import { type Tensor, shapeStr } from '../autograd/tensor.js';
import { tile } from '../kernels/elementwise.js';
import { colsum } from '../kernels/reduce.js';

/** alpha * x summed over its leading `lead` dims, recorded; shared by sum, mean and sumDims. */
function reduceLeading(name: string, x: Tensor, lead: number, alpha: number): Tensor {
  const e = x.engine;
  const outShape = lead === x.shape.length ? [1] : x.shape.slice(lead);
  // Sums stay f32 whatever x's type (an f16 x is summed in f32 and not rounded back).
  const out = e.empty(outShape);
  const C = out.size;
  colsum(e.gpu, x.buffer, out.buffer, x.size / C, C, alpha);
  return e.record(
    {
      name,
      inputs: [x],
      saved: [],
      // Every summed element contributes alpha: the gradient is alpha * g repeated.
      backward: (g) => {
        const gx = e.emptyLike(x);
        tile(e.gpu, g.buffer, gx.buffer, x.size, C, alpha);
        return [gx];
      },
    },
    out,
  );
}

/**
 * Sum of all elements.
 * Shapes: x [...] -> [1].
 */
export function sum(x: Tensor): Tensor {
  return reduceLeading('sum', x, x.shape.length, 1);
}

/**
 * Mean of all elements.
 * Shapes: x [...] -> [1].
 */
export function mean(x: Tensor): Tensor {
  return reduceLeading('mean', x, x.shape.length, 1 / x.size);
}

/**
 * alpha * sum over the leading `leadingDims` dims (alpha defaults to 1).
 * Shapes: x [d0..dk-1, ...rest] with k = leadingDims -> [...rest] ([1] when k = rank).
 */
export function sumDims(x: Tensor, leadingDims: number, alpha = 1): Tensor {
  if (!Number.isInteger(leadingDims) || leadingDims < 0 || leadingDims > x.shape.length) {
    throw new Error(`sumDims: leadingDims ${leadingDims} for shape ${shapeStr(x.shape)}`);
  }
  return reduceLeading('sumDims', x, leadingDims, alpha);
}
