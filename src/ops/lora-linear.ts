/** Linear layer with a LoRA adapter (PEFT semantics), fused into two forward passes. */
import type { Tensor } from '../autograd/tensor.js';
import { mixedDtype, shapeStr } from '../autograd/tensor.js';
import {
  type LoraDims, loraDown, loraGradA, loraGradB, loraInputGrad, loraProject, loraUp,
} from '../kernels/lora.js';
import { colsum, type DropoutSpec, matmul as mm } from '../kernels/matmul.js';
import { linearDims } from './linear.js';

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
 * y = x · Wᵀ + b + scale · (drop(x) · Aᵀ) · Bᵀ. Dropout (inverted, 1/(1-p)) touches only the
 * LoRA branch and only when training with p > 0; its mask is a hash of (seed, element index).
 * Shapes: x [..., in], weight [out, in], bias [out] or null, loraA [r, in], loraB [out, r]
 * -> y [..., out].
 */
export function loraLinear(
  x: Tensor,
  weight: Tensor,
  bias: Tensor | null,
  loraA: Tensor,
  loraB: Tensor,
  opts: LoraOpts,
): Tensor {
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
  const y = e.empty([...x.shape.slice(0, -1), outF], undefined, mixedDtype(x, weight));
  loraUp(gpu, x.buffer, weight.buffer, bias?.buffer ?? null, t.buffer, loraB.buffer, y.buffer, d,
    opts.scale);
  const inputs = bias ? [x, weight, bias, loraA, loraB] : [x, weight, loraA, loraB];
  if (!e.needsTape(inputs)) {
    t.release();
    return y;
  }
  const iA = bias ? 3 : 2;
  return e.record(
    {
      name: 'loraLinear',
      inputs,
      saved: [t],
      backward: (g, needs) => {
        const s = opts.scale;
        const grads: (Tensor | null)[] = inputs.map(() => null);
        let u: Tensor | null = null;
        if (needs[0] || needs[iA]) {
          u = e.empty([rows, rank]);
          loraProject(gpu, g.buffer, loraB.buffer, u.buffer, d);
        }
        if (needs[0] && u) {
          const dx = e.emptyLike(x);
          loraInputGrad(
            gpu, g.buffer, weight.buffer, u.buffer, loraA.buffer, dx.buffer, d, s, drop,
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
        return grads;
      },
    },
    y,
  );
}
