/** Fully connected layer with PyTorch nn.Linear layouts, with GELU and residual epilogues. */
import { type Tensor, mixedDtype, shapeStr } from '../autograd/tensor.js';
import { colsum, matmul as mm } from '../kernels/matmul.js';

/**
 * GELU's output, written by the epilogue of the product that made its input (linearGelu,
 * loraLinearGelu). A linear layer given it reads `act` and sends its input gradient to `pre`
 * through gelu' in its own epilogue, so neither pass needs a GELU dispatch. `act` is not on the
 * tape; `pre` is null when no gradient can reach it (grad mode off, or nothing trainable there).
 */
export interface GeluOut {
  pre: Tensor | null;
  act: Tensor;
}

/** What a linear layer reads: a tensor, or GELU's output fused into the previous layer. */
export type LinearInput = Tensor | GeluOut;

export function isGeluOut(x: LinearInput): x is GeluOut {
  return 'act' in x;
}

/**
 * The tensor whose values the layer reads (`src`), the tape input its input gradient belongs to
 * (`pre` behind a fused GELU: `src` itself, which needs no gradient, when pre is null), and the
 * GELU input buffer the input gradient goes through (null: no GELU).
 */
export function linearSource(
  x: LinearInput,
): { src: Tensor; tapeIn: Tensor; pre: Tensor | null } {
  if (!isGeluOut(x)) return { src: x, tapeIn: x, pre: null };
  if (x.pre && (x.pre.size !== x.act.size || x.pre.dtype !== x.act.dtype)) {
    throw new Error(
      `linear: GELU input ${x.pre.dtype} ${shapeStr(x.pre.shape)} does not match its output ` +
        `${x.act.dtype} ${shapeStr(x.act.shape)}`,
    );
  }
  return { src: x.act, tapeIn: x.pre ?? x.act, pre: x.pre };
}

/** Checks a residual against the output it is added to (its gradient is the output's). */
export function checkResidual(
  op: string, r: Tensor | null, shape: readonly number[], dtype: string,
): void {
  if (!r) return;
  if (shapeStr(r.shape) !== shapeStr(shape) || r.dtype !== dtype) {
    throw new Error(
      `${op}: residual must be ${dtype} ${shapeStr(shape)} like the output, ` +
        `got ${r.dtype} ${shapeStr(r.shape)}`,
    );
  }
}

/**
 * y = x · weightᵀ + bias (+ residual), over the last dim of x; x may be a GELU output fused into
 * the previous layer (GeluOut), whose input gradient then goes through gelu' in this layer's
 * backward product.
 * Shapes: x [..., in], weight [out, in], bias [out] or null, residual [..., out] (y's dtype) or
 * null -> y [..., out].
 */
export function linear(
  x: LinearInput, weight: Tensor, bias: Tensor | null, residual: Tensor | null = null,
): Tensor {
  return linearImpl(x, weight, bias, residual, false).y;
}

/**
 * gelu(x · weightᵀ + bias) with GELU in the product's epilogue (one dispatch); the result feeds
 * linear/loraLinear, which fuse GELU's backward.
 * Shapes: x [..., in], weight [out, in], bias [out] or null -> act [..., out].
 */
export function linearGelu(x: LinearInput, weight: Tensor, bias: Tensor | null): GeluOut {
  const { y, act } = linearImpl(x, weight, bias, null, true);
  return act ? { pre: y, act } : { pre: null, act: y };
}

function linearImpl(
  x: LinearInput, weight: Tensor, bias: Tensor | null, residual: Tensor | null, gelu: boolean,
): { y: Tensor; act: Tensor | null } {
  const { src, tapeIn, pre } = linearSource(x);
  const { rows, inF, outF } = linearDims('linear', src, weight, bias);
  const e = src.engine;
  const dtype = mixedDtype(src, weight);
  const shape = [...src.shape.slice(0, -1), outF];
  checkResidual('linear', residual, shape, dtype);
  const inputs = [tapeIn, weight, ...(bias ? [bias] : []), ...(residual ? [residual] : [])];
  // With GELU fused, y is GELU's input, kept (beside GELU's output) only for a backward.
  const keepPre = gelu && e.needsTape(inputs);
  const y = e.empty(shape, undefined, dtype);
  const act = keepPre ? e.empty(shape, undefined, dtype) : null;
  mm(e.gpu, {
    a: src.buffer, b: weight.buffer, c: y.buffer, M: rows, N: outF, K: inF,
    transB: true, strideB: 0, bias: bias?.buffer ?? null, residual: residual?.buffer ?? null,
    activation: act ? { kind: 'gelu-pair', out: act.buffer } : gelu ? { kind: 'gelu' } : null,
  });
  if (gelu && !keepPre) return { y, act: null };
  const iR = bias ? 3 : 2;
  const out = e.record(
    {
      name: gelu ? 'linearGelu' : 'linear',
      inputs,
      saved: pre ? [src] : [],
      backward: (g, needs) => {
        // dx = g · W, through gelu'(pre) when x is a fused GELU's output.
        const dx = needs[0] ? e.emptyLike(tapeIn) : null;
        if (dx) {
          mm(e.gpu, {
            a: g.buffer, b: weight.buffer, c: dx.buffer, M: rows, N: inF, K: outF,
            activation: pre ? { kind: 'gelu-grad', pre: pre.buffer } : null,
          });
        }
        // Frozen base layers (needs false) cost no weight-gradient work at all.
        const dw = needs[1] ? e.emptyLike(weight) : null;
        if (dw) {
          mm(e.gpu, {
            a: g.buffer, b: src.buffer, c: dw.buffer, M: outF, N: inF, K: rows, transA: true,
          });
        }
        const db = bias && needs[2] ? e.emptyLike(bias) : null;
        if (db) colsum(e.gpu, g.buffer, db.buffer, rows, outF);
        const grads: (Tensor | null)[] = bias ? [dx, dw, db] : [dx, dw];
        // d(y + r)/dr = 1: the residual's gradient is the output's.
        if (residual) grads[iR] = needs[iR] ? g : null;
        return grads;
      },
    },
    y,
  );
  return { y: out, act };
}

/** Checks linear-layer shapes; `rows` is the product of x's leading dims. */
export function linearDims(
  op: string,
  x: Tensor,
  weight: Tensor,
  bias: Tensor | null,
): { rows: number; inF: number; outF: number } {
  if (weight.shape.length !== 2) {
    throw new Error(`${op}: weight must be [out, in], got ${shapeStr(weight.shape)}`);
  }
  const [outF, inF] = weight.shape;
  if (x.shape.length < 1 || x.shape[x.shape.length - 1] !== inF) {
    throw new Error(
      `${op}: x must be [..., ${inF}] for weight ${shapeStr(weight.shape)}, ` +
        `got ${shapeStr(x.shape)}`,
    );
  }
  if (bias && (bias.shape.length !== 1 || bias.shape[0] !== outF)) {
    throw new Error(`${op}: bias must be [${outF}], got ${shapeStr(bias.shape)}`);
  }
  return { rows: x.size / inF, inF, outF };
}
