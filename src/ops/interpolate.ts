/** Resizing of NHWC activations with PyTorch F.interpolate semantics. */
import { type Tensor, shapeStr } from '../autograd/tensor.js';
import {
  type ResizeDims,
  type ResizeMode,
  resizeBackward,
  resizeForward,
} from '../kernels/resize.js';

/**
 * F.interpolate(x, size, mode, align_corners=False) without antialiasing, on channels-last
 * tensors. nearest: src = floor(dst * in/out); bilinear: src = (dst + 0.5) * in/out - 0.5,
 * clamped at 0; bicubic: same transform, Keys kernel with A = -0.75, border-clamped taps.
 * Backward exists for nearest and bilinear; bicubic is forward only (an error is thrown when a
 * gradient would have to flow through it).
 * Shapes: x [B, H, W, C], size [Ho, Wo] -> [B, Ho, Wo, C].
 */
export function interpolate(x: Tensor, size: [number, number], mode: ResizeMode): Tensor {
  if (x.shape.length !== 4) {
    throw new Error(`interpolate: x must be [B, H, W, C], got ${shapeStr(x.shape)}`);
  }
  const [ho, wo] = size;
  if (!size.every((s) => Number.isInteger(s) && s >= 1)) {
    throw new Error(`interpolate: size must be two positive integers, got [${size.join(', ')}]`);
  }
  if (mode !== 'nearest' && mode !== 'bilinear' && mode !== 'bicubic') {
    throw new Error(`interpolate: unknown mode '${String(mode)}'`);
  }
  const e = x.engine;
  if (mode === 'bicubic' && e.needsTape([x])) {
    throw new Error(
      'interpolate: bicubic has no backward; run it under noGrad or on a tensor without grad',
    );
  }
  const [b, h, w, c] = x.shape;
  const d: ResizeDims = { b, h, w, c, ho, wo };
  const out = e.emptyLike(x, [b, ho, wo, c]);
  resizeForward(e.gpu, mode, x.buffer, out.buffer, d);
  if (mode === 'bicubic') return out;
  return e.record(
    {
      name: `interpolate.${mode}`,
      inputs: [x],
      saved: [],
      backward: (g) => {
        const dx = e.emptyLike(x);
        resizeBackward(e.gpu, mode, g.buffer, dx.buffer, d);
        return [dx];
      },
    },
    out,
  );
}
