/** Layer norm over the last dimension (PyTorch nn.LayerNorm with elementwise affine). */
import { type Tensor, shapeStr } from '../autograd/tensor.js';
import {
  type LnPath,
  layerNormBackwardInput,
  layerNormBackwardParams,
  layerNormForward,
} from '../kernels/norm.js';

/**
 * y = (x - mean) / sqrt(var + eps) * weight + bias, with mean and biased variance over the last
 * dim. SAM2's Hiera blocks use eps = 1e-6.
 * Shapes: x [..., C], weight [C], bias [C] -> out [..., C]. `path` forces a kernel path (tests,
 * bench); by default it follows the adapter kind.
 */
export function layerNorm(x: Tensor, weight: Tensor, bias: Tensor, eps = 1e-6,
  path?: LnPath): Tensor {
  const C = x.shape[x.shape.length - 1];
  if (x.shape.length === 0 || !C) throw new Error(`layerNorm: x has shape ${shapeStr(x.shape)}`);
  if (weight.shape.length !== 1 || weight.shape[0] !== C) {
    throw new Error(`layerNorm: weight expected [${C}], got ${shapeStr(weight.shape)}`);
  }
  if (bias.shape.length !== 1 || bias.shape[0] !== C) {
    throw new Error(`layerNorm: bias expected [${C}], got ${shapeStr(bias.shape)}`);
  }
  if (!(eps >= 0)) throw new Error(`layerNorm: eps must be >= 0, got ${eps}`);
  const e = x.engine;
  const rows = x.size / C;
  const out = e.emptyLike(x);
  // (mean, rstd) per row: the backward reuses them instead of recomputing the row statistics.
  const stats = e.empty([rows, 2]);
  layerNormForward(
    e.gpu, x.buffer, weight.buffer, bias.buffer, out.buffer, stats.buffer, rows, C, eps, path,
  );
  return e.record(
    {
      name: 'layer_norm',
      inputs: [x, weight, bias],
      saved: [x, weight, stats],
      backward: (g, needs) => {
        let dx: Tensor | null = null;
        if (needs[0]) {
          dx = e.emptyLike(x);
          layerNormBackwardInput(e.gpu, g.buffer, x.buffer, weight.buffer, stats.buffer,
            dx.buffer, rows, C, path);
        }
        const dw = needs[1] ? e.empty([C]) : null;
        const db = needs[2] ? e.empty([C]) : null;
        layerNormBackwardParams(e.gpu, g.buffer, x.buffer, stats.buffer, dw?.buffer ?? null,
          db?.buffer ?? null, rows, C, path);
        return [dx, dw, db];
      },
    },
    out,
  );
}
