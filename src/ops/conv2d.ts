/** 2-D convolution on NHWC activations with PyTorch-layout weights. */
import { type Tensor, mixedDtype, shapeStr } from '../autograd/tensor.js';
import {
  type ConvDims,
  conv2dBackwardBias,
  conv2dBackwardInput,
  conv2dBackwardWeight,
  conv2dForward,
  convOutSize,
} from '../kernels/conv.js';

export interface Conv2dOptions {
  stride?: number;
  padding?: number;
}

/**
 * PyTorch Conv2d (zero padding, groups 1, dilation 1) on channels-last activations.
 * Shapes: x [B, H, W, Cin], weight [Cout, Cin, kh, kw], bias [Cout] or null
 * -> [B, Ho, Wo, Cout], Ho = floor((H + 2*padding - kh) / stride) + 1 (likewise Wo).
 */
export function conv2d(
  x: Tensor,
  weight: Tensor,
  bias: Tensor | null,
  opts: Conv2dOptions = {},
): Tensor {
  const stride = opts.stride ?? 1;
  const pad = opts.padding ?? 0;
  if (!Number.isInteger(stride) || stride < 1 || !Number.isInteger(pad) || pad < 0) {
    throw new Error(`conv2d: stride ${stride} and padding ${pad} must be integers >= 1 and >= 0`);
  }
  if (x.shape.length !== 4) {
    throw new Error(`conv2d: x must be [B, H, W, Cin], got ${shapeStr(x.shape)}`);
  }
  if (weight.shape.length !== 4) {
    throw new Error(`conv2d: weight must be [Cout, Cin, kh, kw], got ${shapeStr(weight.shape)}`);
  }
  const [b, h, w, cin] = x.shape;
  const [cout, wcin, kh, kw] = weight.shape;
  if (wcin !== cin) {
    throw new Error(
      `conv2d: weight ${shapeStr(weight.shape)} expects Cin ${wcin}, ` +
        `x ${shapeStr(x.shape)} has ${cin}`,
    );
  }
  if (bias && (bias.shape.length !== 1 || bias.shape[0] !== cout)) {
    throw new Error(`conv2d: bias must be [${cout}], got ${shapeStr(bias.shape)}`);
  }
  const d: ConvDims = { b, h, w, cin, cout, kh, kw, stride, pad };
  const [ho, wo] = convOutSize(d);
  if (ho < 1 || wo < 1) {
    throw new Error(`conv2d: kernel ${kh}x${kw} (padding ${pad}) larger than input ${h}x${w}`);
  }
  const e = x.engine;
  // f16 when x or the weight is: an f16 layer maps an f32 image to f16 features.
  const out = e.empty([b, ho, wo, cout], undefined, mixedDtype(x, weight));
  conv2dForward(e.gpu, x.buffer, weight.buffer, bias?.buffer ?? null, out.buffer, d);
  const inputs = bias ? [x, weight, bias] : [x, weight];
  return e.record(
    {
      name: 'conv2d',
      inputs,
      saved: [],
      backward: (g, needs) => {
        let dx: Tensor | null = null;
        let dw: Tensor | null = null;
        let db: Tensor | null = null;
        if (needs[0]) {
          dx = e.emptyLike(x);
          conv2dBackwardInput(e.gpu, g.buffer, weight.buffer, dx.buffer, d);
        }
        if (needs[1]) {
          dw = e.emptyLike(weight);
          conv2dBackwardWeight(e.gpu, g.buffer, x.buffer, dw.buffer, d);
        }
        if (bias && needs[2]) {
          db = e.emptyLike(bias);
          conv2dBackwardBias(e.gpu, g.buffer, db.buffer, b * ho * wo, cout);
        }
        return bias ? [dx, dw, db] : [dx, dw];
      },
    },
    out,
  );
}
