/** Shape ops: reshape (a view), permute, slice and concat along the last dim. */
import { type Shape, type Tensor, numel, shapeStr } from '../autograd/tensor.js';
import { copyCols, permute as permuteKernel } from '../kernels/copy.js';
import { fill } from '../kernels/elementwise.js';

/**
 * A view of x with another shape (no copy); one dim may be -1 (inferred).
 * Shapes: x [...] -> shape, with the same element count.
 */
export function reshape(x: Tensor, shape: Shape): Tensor {
  const known = shape.filter((d) => d !== -1);
  const free = shape.length - known.length;
  const rest = numel(known);
  const full = free === 1 && rest > 0 && x.size % rest === 0
    ? shape.map((d) => (d === -1 ? x.size / rest : d))
    : [...shape];
  if (free > 1 || numel(full) !== x.size || full.some((d) => !Number.isInteger(d) || d <= 0)) {
    throw new Error(`reshape: cannot view ${shapeStr(x.shape)} as ${shapeStr(shape)}`);
  }
  const e = x.engine;
  const out = x.view(full);
  return e.record(
    { name: 'reshape', inputs: [x], saved: [], backward: (g) => [g.view(x.shape)] },
    out,
  );
}

/**
 * Permutes dims: out dim k is x's dim perm[k] (a copy; rank <= 6 after merging dims that stay
 * adjacent). Backward permutes the gradient by the inverse permutation.
 * Shapes: x [d0..dn-1] -> [d_perm[0] .. d_perm[n-1]].
 */
export function permute(x: Tensor, perm: readonly number[]): Tensor {
  const r = x.shape.length;
  const seen = new Set(perm);
  if (perm.length !== r || seen.size !== r || perm.some((p) => !(p >= 0 && p < r))) {
    throw new Error(
      `permute: perm [${perm.join(',')}] is not a permutation for ${shapeStr(x.shape)}`,
    );
  }
  const e = x.engine;
  const outShape = perm.map((p) => x.shape[p]);
  const out = e.emptyLike(x, outShape);
  permuteKernel(e.gpu, x.buffer, out.buffer, x.shape, perm);
  const inverse = new Array<number>(r);
  perm.forEach((p, k) => (inverse[p] = k));
  return e.record(
    {
      name: 'permute',
      inputs: [x],
      saved: [],
      backward: (g) => {
        const gx = e.emptyLike(x);
        permuteKernel(e.gpu, g.buffer, gx.buffer, outShape, inverse);
        return [gx];
      },
    },
    out,
  );
}

/**
 * Columns [start, start+len) of the last dim.
 * Shapes: x [..., C] -> [..., len].
 */
export function sliceLast(x: Tensor, start: number, len: number): Tensor {
  const C = x.shape[x.shape.length - 1];
  const ok = Number.isInteger(start) && Number.isInteger(len) && start >= 0 && len > 0;
  if (!ok || start + len > C) {
    throw new Error(
      `sliceLast: [${start}, ${start + len}) out of the last dim of ${shapeStr(x.shape)}`,
    );
  }
  const e = x.engine;
  const rows = x.size / C;
  const out = e.emptyLike(x, [...x.shape.slice(0, -1), len]);
  copyCols(e.gpu, x.buffer, out.buffer, rows, len, C, start, len, 0);
  return e.record(
    {
      name: 'sliceLast',
      inputs: [x],
      saved: [],
      // The gradient is g in the sliced columns and zero elsewhere.
      backward: (g) => {
        const gx = e.emptyLike(x);
        if (len < C) fill(e.gpu, gx.buffer, x.size, 0);
        copyCols(e.gpu, g.buffer, gx.buffer, rows, len, len, 0, C, start);
        return [gx];
      },
    },
    out,
  );
}

/**
 * Concatenation along the last dim.
 * Shapes: xs[i] [..., Ci] (same leading dims) -> [..., sum Ci].
 */
export function concatLast(xs: readonly Tensor[]): Tensor {
  if (xs.length === 0) throw new Error('concatLast: no tensors');
  const lead = xs[0].shape.slice(0, -1);
  for (const t of xs) {
    const tl = t.shape.slice(0, -1);
    if (t.shape.length !== xs[0].shape.length || tl.some((d, i) => d !== lead[i])) {
      throw new Error(
        `concatLast: leading dims ${shapeStr(lead)} expected, got ${shapeStr(t.shape)}`,
      );
    }
  }
  const e = xs[0].engine;
  const widths = xs.map((t) => t.shape[t.shape.length - 1]);
  const C = widths.reduce((a, b) => a + b, 0);
  const rows = numel(lead);
  const out = e.emptyLike(xs[0], [...lead, C]);
  const offsets: number[] = [];
  let off = 0;
  xs.forEach((t, i) => {
    offsets.push(off);
    copyCols(e.gpu, t.buffer, out.buffer, rows, widths[i], widths[i], 0, C, off);
    off += widths[i];
  });
  return e.record(
    {
      name: 'concatLast',
      inputs: [...xs],
      saved: [],
      backward: (g, needs) =>
        xs.map((t, i) => {
          if (!needs[i]) return null;
          const gi = e.emptyLike(t);
          copyCols(e.gpu, g.buffer, gi.buffer, rows, widths[i], C, offsets[i], widths[i], 0);
          return gi;
        }),
    },
    out,
  );
}
