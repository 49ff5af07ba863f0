/** Max-pooling on NHWC activations (SAM2's Hiera q-pooling uses k = 2). */
import { type Tensor, shapeStr } from '../autograd/tensor.js';
import { type PoolDims, maxPool2dBackward, maxPool2dForward } from '../kernels/pool.js';

/**
 * PyTorch MaxPool2d(k, stride=k) (no padding, floor): odd H/W drop the last row/col. The gradient
 * goes to the first maximum of each window in scan order (PyTorch's choice on ties).
 * Shapes: x [B, H, W, C] -> [B, floor(H/k), floor(W/k), C].
 */
export function maxPool2d(x: Tensor, k: number): Tensor {
  if (x.shape.length !== 4) {
    throw new Error(`maxPool2d: x must be [B, H, W, C], got ${shapeStr(x.shape)}`);
  }
  const [b, h, w, c] = x.shape;
  if (!Number.isInteger(k) || k < 1 || k > h || k > w) {
    throw new Error(
      `maxPool2d: kernel ${k} must be an integer in [1, min(H, W)] for ${shapeStr(x.shape)}`,
    );
  }
  const d: PoolDims = { b, h, w, c, k };
  const e = x.engine;
  const out = e.emptyLike(x, [b, Math.floor(h / k), Math.floor(w / k), c]);
  maxPool2dForward(e.gpu, x.buffer, out.buffer, d);
  return e.record(
    {
      name: 'maxPool2d',
      inputs: [x],
      saved: [],
      backward: (g) => {
        // The argmax is recomputed from x (kept by the tape) rather than saved as indices.
        const dx = e.emptyLike(x);
        maxPool2dBackward(e.gpu, g.buffer, x.buffer, dx.buffer, d);
        return [dx];
      },
    },
    out,
  );
}
