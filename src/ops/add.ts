/** Elementwise addition of two same-shaped tensors. */
import { type Tensor, shapeStr } from '../autograd/tensor.js';
import { add as addKernel } from '../kernels/elementwise.js';

/**
 * out = a + b.
 * Shapes: a [...], b same shape as a -> out [...].
 */
export function add(a: Tensor, b: Tensor): Tensor {
  if (a.size !== b.size) throw new Error(`add: shapes ${shapeStr(a.shape)} and ${shapeStr(b.shape)}`);
  const e = a.engine;
  const out = e.empty(a.shape);
  addKernel(e.gpu, a.buffer, b.buffer, out.buffer, a.size);
  return e.record(
    {
      name: 'add',
      inputs: [a, b],
      saved: [],
      // d(a+b)/da = d(a+b)/db = 1: the upstream gradient passes through to both.
      backward: (g) => [g, g],
    },
    out,
  );
}
