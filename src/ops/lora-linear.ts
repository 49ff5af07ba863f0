/** Linear layer with a LoRA adapter (PEFT semantics), fused into two forward passes. */
import type { Tensor } from '../autograd/tensor.js';
import { mixedDtype, shapeStr } from '../autograd/tensor.js';
import {
  type LoraDims, loraDown, loraGradA, loraGradB, loraInputGrad, loraProject, loraUp,
} from '../kernels/lora.js';
import { colsum, type DropoutSpec, matmul as mm } from '../kernels/matmul.js';
import {
  type GeluOut, type LinearInput, checkResidual, linearDims, linearSource,
} from './linear.js';

export interface LoraOpts {
  /** alpha / r in PEFT terms. */
  scale: number;
  /** Dropout probability on the LoRA branch input. */
  dropout: number;
  /** Mask seed: use a fresh one per layer and step. */
  seed: number;
  training: boolean;
}

/**
 * y = x · Wᵀ + b + scale · (drop(x) · Aᵀ) · Bᵀ (+ residual). Dropout (inverted, 1/(1-p)) touches
 * only the LoRA branch and only when training with p > 0; its mask is a hash of (seed, element
 * index). x may be a GELU output fused into the previous layer (GeluOut, see linear).
 * Shapes: x [..., in], weight [out, in], bias [out] or null, loraA [r, in], loraB [out, r],
 * residual [..., out] (y's dtype) or null -> y [..., out].
 */
export function loraLinear(
  x: LinearInput,
  weight: Tensor,
  bias: Tensor | null,
  loraA: Tensor,
  loraB: Tensor,
  opts: LoraOpts,
  residual: Tensor | null = null,
): Tensor {
  return loraLinearImpl(x, weight, bias, loraA, loraB, opts, residual, false).y;
}

/**
 * gelu(loraLinear(x, ...)) with GELU in the up-projection's epilogue; the result feeds
 * linear/loraLinear, which fuse GELU's backward.
 * Shapes: as loraLinear -> act [..., out].
 */
export function loraLinearGelu(
  x: LinearInput,
  weight: Tensor,
  bias: Tensor | null,
  loraA: Tensor,
  loraB: Tensor,
  opts: LoraOpts,
): GeluOut {
  const { y, act } = loraLinearImpl(x, weight, bias, loraA, loraB, opts, null, true);
  return act ? { pre: y, act } : { pre: null, act: y };
}

function loraLinearImpl(
  xIn: LinearInput,
  weight: Tensor,
  bias: Tensor | null,
  loraA: Tensor,
  loraB: Tensor,
  opts: LoraOpts,
  residual: Tensor | null,
  gelu: boolean,
): { y: Tensor; act: Tensor | null } {
  const { src: x, tapeIn, pre } = linearSource(xIn);
  const { rows, inF, outF } = linearDims('loraLinear', x, weight, bias);
  const rank = loraA.shape[0];
  if (loraA.shape.length !== 2 || loraA.shape[1] !== inF) {
    throw new Error(`loraLinear: loraA must be [r, ${inF}], got ${shapeStr(loraA.shape)}`);
  }
  if (loraB.shape.length !== 2 || loraB.shape[0] !== outF || loraB.shape[1] !== rank) {
    throw new Error(`loraLinear: loraB must be [${outF}, ${rank}], got ${shapeStr(loraB.shape)}`);
  }
  if (!(opts.dropout >= 0 && opts.dropout < 1)) {
    throw new Error(`loraLinear: dropout must be in [0, 1), got ${opts.dropout}`);
  }
  const drop: DropoutSpec | null =
    opts.training && opts.dropout > 0 ? { p: opts.dropout, seed: opts.seed >>> 0 } : null;
  const d: LoraDims = { rows, inF, outF, rank };
  const e = x.engine;
  const gpu = e.gpu;
  const t = e.empty([rows, rank]);
  loraDown(gpu, x.buffer, loraA.buffer, t.buffer, d, drop);
  const dtype = mixedDtype(x, weight);
  const shape = [...x.shape.slice(0, -1), outF];
  checkResidual('loraLinear', residual, shape, dtype);
  const inputs = [
    tapeIn, weight, ...(bias ? [bias] : []), loraA, loraB, ...(residual ? [residual] : []),
  ];
  const taped = e.needsTape(inputs);
  const y = e.empty(shape, undefined, dtype);
  // With GELU fused, y is GELU's input, kept (beside GELU's output) only for a backward.
  const act = gelu && taped ? e.empty(shape, undefined, dtype) : null;
  loraUp(gpu, x.buffer, weight.buffer, bias?.buffer ?? null, t.buffer, loraB.buffer, y.buffer, d,
    opts.scale, {
      residual: residual?.buffer ?? null,
      activation: act ? { kind: 'gelu-pair', out: act.buffer } : gelu ? { kind: 'gelu' } : null,
    });
  if (!taped) {
    t.release();
    return { y, act: null };
  }
  const iA = bias ? 3 : 2;
  const iR = iA + 2;
  const out = e.record(
    {
      name: gelu ? 'loraLinearGelu' : 'loraLinear',
      inputs,
      saved: pre ? [t, x] : [t],
      backward: (g, needs) => {
        const s = opts.scale;
        const grads: (Tensor | null)[] = inputs.map(() => null);
        let u: Tensor | null = null;
        if (needs[0] || needs[iA]) {
          u = e.empty([rows, rank]);
          loraProject(gpu, g.buffer, loraB.buffer, u.buffer, d);
        }
        if (needs[0] && u) {
          // Through gelu'(pre) when x is a fused GELU's output.
          const dx = e.emptyLike(tapeIn);
          loraInputGrad(
            gpu, g.buffer, weight.buffer, u.buffer, loraA.buffer, dx.buffer, d, s, drop,
            pre?.buffer ?? null,
          );
          grads[0] = dx;
        }
        if (needs[1]) {
          const dw = e.emptyLike(weight);
          mm(gpu, {
            a: g.buffer, b: x.buffer, c: dw.buffer, M: outF, N: inF, K: rows, transA: true,
          });
          grads[1] = dw;
        }
        if (bias && needs[2]) {
          const db = e.emptyLike(bias);
          colsum(gpu, g.buffer, db.buffer, rows, outF);
          grads[2] = db;
        }
        if (needs[iA] && u) {
          const da = e.emptyLike(loraA);
          loraGradA(gpu, u.buffer, x.buffer, da.buffer, d, s, drop);
          grads[iA] = da;
        }
        if (needs[iA + 1]) {
          const dB = e.emptyLike(loraB);
          loraGradB(gpu, g.buffer, t.buffer, dB.buffer, d, s);
          grads[iA + 1] = dB;
        }
        // d(y + r)/dr = 1: the residual's gradient is the output's.
        if (residual && needs[iR]) grads[iR] = g;
        return grads;
      },
    },
    y,
  );
  return { y: out, act };
}
