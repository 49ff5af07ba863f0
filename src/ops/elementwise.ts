/** Elementwise arithmetic: sub and mul (suffix broadcasting as in add), scale, addScalar. */
import { type Tensor } from '../autograd/tensor.js';
import { add as addKernel, affine, mul as mulKernel } from '../kernels/elementwise.js';
import { reduceToSuffix, suffixBroadcast } from './add.js';

/**
 * out = a - b, b broadcast over a's leading dims.
 * Shapes: a [...lead, ...s], b [...s] -> out = a's shape.
 */
export function sub(a: Tensor, b: Tensor): Tensor {
  suffixBroadcast('sub', a, b);
  const e = a.engine;
  const out = e.emptyLike(a);
  addKernel(e.gpu, a.buffer, b.buffer, out.buffer, a.size, b.size, -1);
  return e.record(
    {
      name: 'sub',
      inputs: [a, b],
      saved: [],
      backward: (g, needs) => [g, needs[1] ? reduceToSuffix(g, b, -1) : null],
    },
    out,
  );
}

/**
 * out = a * b, b broadcast over a's leading dims.
 * Shapes: a [...lead, ...s], b [...s] -> out = a's shape.
 */
export function mul(a: Tensor, b: Tensor): Tensor {
  suffixBroadcast('mul', a, b);
  const e = a.engine;
  const out = e.emptyLike(a);
  mulKernel(e.gpu, a.buffer, b.buffer, out.buffer, a.size, b.size);
  return e.record(
    {
      name: 'mul',
      inputs: [a, b],
      saved: [a, b],
      // da = g * b (broadcast); db = sum over the broadcast dims of g * a.
      backward: (g, needs) => {
        let ga: Tensor | null = null;
        let gb: Tensor | null = null;
        if (needs[0]) {
          ga = e.emptyLike(a);
          mulKernel(e.gpu, g.buffer, b.buffer, ga.buffer, a.size, b.size);
        }
        if (needs[1]) {
          const ag = e.emptyLike(a);
          mulKernel(e.gpu, g.buffer, a.buffer, ag.buffer, a.size);
          gb = reduceToSuffix(ag, b);
        }
        return [ga, gb];
      },
    },
    out,
  );
}

/**
 * out = s * a.
 * Shapes: a [...] -> same.
 */
export function scale(a: Tensor, s: number): Tensor {
  const e = a.engine;
  const out = e.emptyLike(a);
  affine(e.gpu, a.buffer, out.buffer, a.size, s, 0);
  return e.record(
    {
      name: 'scale',
      inputs: [a],
      saved: [],
      backward: (g) => {
        const ga = e.emptyLike(a);
        affine(e.gpu, g.buffer, ga.buffer, a.size, s, 0);
        return [ga];
      },
    },
    out,
  );
}

/**
 * out = a + c for a number c.
 * Shapes: a [...] -> same.
 */
export function addScalar(a: Tensor, c: number): Tensor {
  const e = a.engine;
  const out = e.emptyLike(a);
  affine(e.gpu, a.buffer, out.buffer, a.size, 1, c);
  return e.record({ name: 'addScalar', inputs: [a], saved: [], backward: (g) => [g] }, out);
}
