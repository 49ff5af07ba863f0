/** Window partitioning of channels-last maps (SAM2 Hiera's windowed attention blocks). */
import { type Tensor, shapeStr } from '../autograd/tensor.js';
import {
  type WinDims,
  windowCounts,
  windowFillGrad,
  windowPartition as partitionKernel,
  windowPartitionFill,
  windowUnpartition as unpartitionKernel,
} from '../kernels/window.js';

function checkWs(op: string, ws: number): void {
  if (!Number.isInteger(ws) || ws <= 0) {
    throw new Error(`${op}: window size ${ws} is not a positive integer`);
  }
}

/**
 * Cuts x into ws x ws windows after padding the bottom and right to multiples of ws (SAM2's
 * window_partition), with zeros or, given `fill` [C], with that vector: a Linear's bias is what
 * the Linear makes of a zero token, so `windowPartition(linear(x), ws, bias)` equals
 * `linear(windowPartition(x, ws))` without computing the padding rows. The fill's gradient is the
 * sum of the padding tokens' gradients. Windows are ordered (b, wy, wx), tokens row-major inside
 * a window.
 * Shapes: x [B, H, W, C], fill [C] or null -> [B * ceil(H / ws) * ceil(W / ws), ws * ws, C]
 * (x's dtype; fill's may differ).
 */
export function windowPartition(x: Tensor, ws: number, fill: Tensor | null = null): Tensor {
  checkWs('windowPartition', ws);
  if (x.shape.length !== 4) {
    throw new Error(`windowPartition: expected x [B, H, W, C], got ${shapeStr(x.shape)}`);
  }
  const [B, H, W, C] = x.shape;
  if (fill && (fill.shape.length !== 1 || fill.shape[0] !== C)) {
    throw new Error(`windowPartition: fill must be [${C}] like x's channels, got ` +
      `${shapeStr(fill.shape)}`);
  }
  const d: WinDims = { B, H, W, C, ws };
  const [nh, nw] = windowCounts(H, W, ws);
  const e = x.engine;
  const out = e.emptyLike(x, [B * nh * nw, ws * ws, C]);
  if (fill) windowPartitionFill(e.gpu, x.buffer, fill.buffer, out.buffer, d);
  else partitionKernel(e.gpu, x.buffer, out.buffer, d);
  return e.record(
    {
      name: 'windowPartition',
      inputs: fill ? [x, fill] : [x],
      saved: [],
      // Each pixel appears in exactly one window; padding positions belong to the fill.
      backward: (g, needs) => {
        const gx = needs[0] ? e.emptyLike(x) : null;
        if (gx) unpartitionKernel(e.gpu, g.buffer, gx.buffer, d);
        if (!fill) return [gx];
        const gf = needs[1] ? e.emptyLike(fill) : null;
        if (gf) windowFillGrad(e.gpu, g.buffer, gf.buffer, d);
        return [gx, gf];
      },
    },
    out,
  );
}

/**
 * Inverse of windowPartition: stitches windows back and drops the padding (SAM2's
 * window_unpartition). B is inferred from the window count.
 * Shapes: y [B * ceil(H / ws) * ceil(W / ws), ws * ws, C], hw = [H, W] -> [B, H, W, C].
 */
export function windowUnpartition(y: Tensor, ws: number, hw: [number, number]): Tensor {
  checkWs('windowUnpartition', ws);
  const [H, W] = hw;
  if (!(Number.isInteger(H) && Number.isInteger(W) && H > 0 && W > 0)) {
    throw new Error(`windowUnpartition: bad size [${H}, ${W}]`);
  }
  const [nh, nw] = windowCounts(H, W, ws);
  if (y.shape.length !== 3 || y.shape[1] !== ws * ws || y.shape[0] % (nh * nw) !== 0) {
    throw new Error(
      `windowUnpartition: expected windows [B*${nh * nw}, ${ws * ws}, C] for ${H}x${W} with ` +
        `ws ${ws}, got ${shapeStr(y.shape)}`,
    );
  }
  const B = y.shape[0] / (nh * nw);
  const C = y.shape[2];
  const d: WinDims = { B, H, W, C, ws };
  const e = y.engine;
  const out = e.emptyLike(y, [B, H, W, C]);
  unpartitionKernel(e.gpu, y.buffer, out.buffer, d);
  return e.record(
    {
      name: 'windowUnpartition',
      inputs: [y],
      saved: [],
      // Padding tokens were dropped, so their gradient is zero: exactly what partition writes.
      backward: (g) => {
        const gy = e.emptyLike(y);
        partitionKernel(e.gpu, g.buffer, gy.buffer, d);
        return [gy];
      },
    },
    out,
  );
}
