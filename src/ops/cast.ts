/** Casts between storage types (f32 <-> f16): where the f32 and f16 parts of a model meet. */
import type { DType, Tensor } from '../autograd/tensor.js';
import { cast as castKernel } from '../kernels/elementwise.js';

/**
 * x converted to `dtype` (f32 -> f16 rounds to nearest even, past 65504 to ±inf; f16 -> f32 is
 * exact). The gradient is cast back to x's dtype. Casting to x's own dtype returns a view.
 * Shapes: x [...] -> same.
 */
export function cast(x: Tensor, dtype: DType): Tensor {
  const e = x.engine;
  if (x.dtype === dtype) {
    const same = x.view(x.shape);
    return e.record({ name: 'cast', inputs: [x], saved: [], backward: (g) => [g] }, same);
  }
  const out = e.empty(x.shape, undefined, dtype);
  castKernel(e.gpu, x.buffer, out.buffer, x.size);
  return e.record(
    {
      name: 'cast',
      inputs: [x],
      saved: [],
      backward: (g) => {
        const gx = e.emptyLike(x);
        castKernel(e.gpu, g.buffer, gx.buffer, x.size);
        return [gx];
      },
    },
    out,
  );
}
