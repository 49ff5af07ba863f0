/** Softmax over the last dim. */
import { type Tensor, shapeStr } from '../autograd/tensor.js';
import { softmax as softmaxKernel, softmaxGrad } from '../kernels/softmax.js';

/**
 * Softmax over the last dim (numerically stable: the row max is subtracted first).
 * Shapes: x [..., n] -> same.
 */
export function softmax(x: Tensor): Tensor {
  if (x.shape.length < 1) throw new Error(`softmax: expected rank >= 1, got ${shapeStr(x.shape)}`);
  const e = x.engine;
  const cols = x.shape[x.shape.length - 1];
  const rows = x.size / cols;
  const y = e.empty(x.shape);
  softmaxKernel(e.gpu, x.buffer, y.buffer, rows, cols);
  return e.record(
    {
      name: 'softmax',
      inputs: [x],
      saved: [y],
      backward: (g) => {
        const gx = e.empty(x.shape);
        softmaxGrad(e.gpu, y.buffer, g.buffer, gx.buffer, rows, cols);
        return [gx];
      },
    },
    y,
  );
}
