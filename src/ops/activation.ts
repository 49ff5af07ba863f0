/** Pointwise activations: relu, exact (erf) gelu, sigmoid. */
import { type Tensor } from '../autograd/tensor.js';
import { type UnaryOp, unary, unaryGrad } from '../kernels/elementwise.js';

/** op(x) recorded with backward g * op'(x), recomputed from the saved input. */
function pointwise(op: UnaryOp, x: Tensor): Tensor {
  const e = x.engine;
  const out = e.emptyLike(x);
  unary(e.gpu, op, x.buffer, out.buffer, x.size);
  return e.record(
    {
      name: op,
      inputs: [x],
      saved: [x],
      backward: (g) => {
        const gx = e.emptyLike(x);
        unaryGrad(e.gpu, op, x.buffer, g.buffer, gx.buffer, x.size);
        return [gx];
      },
    },
    out,
  );
}

/**
 * max(x, 0); the gradient at x == 0 is 0, as in PyTorch.
 * Shapes: x [...] -> same.
 */
export function relu(x: Tensor): Tensor {
  return pointwise('relu', x);
}

/**
 * Exact GELU, x * Phi(x) = x/2 * (1 + erf(x / sqrt 2)), as torch.nn.GELU() (approximate='none').
 * Shapes: x [...] -> same.
 */
export function gelu(x: Tensor): Tensor {
  return pointwise('gelu', x);
}

/**
 * 1 / (1 + exp(-x)), evaluated without overflow for large |x|.
 * Shapes: x [...] -> same.
 */
export function sigmoid(x: Tensor): Tensor {
  return pointwise('sigmoid', x);
}

/**
 * The error function (f32, about 1e-7 absolute). Used to test the erf that gelu is built on.
 * Shapes: x [...] -> same.
 */
export function erf(x: Tensor): Tensor {
  return pointwise('erf', x);
}
