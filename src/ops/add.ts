/** Addition with suffix broadcasting (bias, position embeddings). */
import { type Tensor, shapeStr } from '../autograd/tensor.js';
import { add as addKernel } from '../kernels/elementwise.js';
import { colsum } from '../kernels/reduce.js';

/**
 * How many leading dims of `a` `b` is broadcast over: b's shape must equal a's or a trailing
 * suffix of it (b [C] or [H,W,C] against a [B,H,W,C]). Throws naming `op` otherwise.
 */
export function suffixBroadcast(op: string, a: Tensor, b: Tensor): number {
  const lead = a.shape.length - b.shape.length;
  const ok = lead >= 0 && b.shape.every((d, i) => d === a.shape[lead + i]);
  if (!ok) {
    throw new Error(
      `${op}: b must have a's shape ${shapeStr(a.shape)} or a trailing suffix of it, ` +
        `got ${shapeStr(b.shape)}`,
    );
  }
  return lead;
}

/**
 * The gradient of a broadcast operand: alpha * g summed over the leading dims b was repeated
 * over (g itself when nothing was broadcast and alpha is 1). For use inside backward rules.
 */
export function reduceToSuffix(g: Tensor, b: Tensor, alpha = 1): Tensor {
  if (g.size === b.size && alpha === 1) return g;
  const e = g.engine;
  const gb = e.emptyLike(b);
  colsum(e.gpu, g.buffer, gb.buffer, g.size / b.size, b.size, alpha);
  return gb;
}

/**
 * out = a + b, b broadcast over a's leading dims.
 * Shapes: a [...lead, ...s], b [...s] (s may be all of a's shape) -> out = a's shape.
 */
export function add(a: Tensor, b: Tensor): Tensor {
  suffixBroadcast('add', a, b);
  const e = a.engine;
  const out = e.emptyLike(a);
  addKernel(e.gpu, a.buffer, b.buffer, out.buffer, a.size, b.size);
  return e.record(
    {
      name: 'add',
      inputs: [a, b],
      saved: [],
      // d(a+b)/da = d(a+b)/db = 1: g passes to a, and to b summed over the broadcast dims.
      backward: (g, needs) => [g, needs[1] ? reduceToSuffix(g, b) : null],
    },
    out,
  );
}
