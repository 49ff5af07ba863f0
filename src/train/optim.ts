/**
 * AdamW (torch.optim.AdamW semantics) and global gradient-norm clipping
 * (torch.nn.utils.clip_grad_norm_). Both record their kernels into the current command encoder
 * and never read back to the CPU during a step; state moves to the CPU only in stateDict().
 */
import type { Tensor } from '../autograd/tensor.js';
import type { Gpu } from '../gpu/runtime.js';
import { fill } from '../kernels/elementwise.js';
import {
  type AdamWItem,
  STATE_ALIGN,
  adamwSlotsFor,
  adamwUpdateMany,
  globalNormAndCoef,
  scaleInPlace,
} from '../kernels/optim.js';

export interface ParamGroup {
  params: Tensor[];
  lr: number;
  weightDecay: number;
  /** Default [0.9, 0.999] (PyTorch's). */
  betas?: [number, number];
  /** Default 1e-8 (PyTorch's). */
  eps?: number;
}

/** A group's hyperparameters; `lr` (and the others) may be changed between steps. */
export interface ResolvedGroup {
  readonly params: readonly Tensor[];
  lr: number;
  weightDecay: number;
  betas: [number, number];
  eps: number;
}

export interface AdamWGroupState {
  lr: number;
  weightDecay: number;
  betas: [number, number];
  eps: number;
}

/** Everything needed to resume exactly; arrays follow the groups' parameter order. */
export interface AdamWStateDict {
  /** Number of step() calls. */
  step: number;
  /** Updates applied to each parameter (torch's state['step']: skipped steps do not count). */
  paramSteps: number[];
  /** exp_avg per parameter. */
  m: Float32Array[];
  /** exp_avg_sq per parameter. */
  v: Float32Array[];
  groups: AdamWGroupState[];
}

interface Slot {
  param: Tensor;
  group: ResolvedGroup;
  /** Where this parameter's exp_avg / exp_avg_sq start in the packed m / v buffers (floats). */
  offset: number;
  steps: number;
}

export interface AdamWOptions {
  /**
   * Parameter tensors per update dispatch (tests): default ADAMW_SLOTS where the device has 16
   * storage bindings per stage, else 1.
   */
  slotsPerDispatch?: number;
}

function checkHyper(where: string, g: AdamWGroupState): void {
  const [b1, b2] = g.betas;
  const bad = (what: string, v: unknown) => {
    throw new Error(`AdamW: ${where}: invalid ${what} ${String(v)}`);
  };
  if (!(Number.isFinite(g.lr) && g.lr >= 0)) bad('lr', g.lr);
  if (!(Number.isFinite(g.weightDecay) && g.weightDecay >= 0)) bad('weightDecay', g.weightDecay);
  if (!(b1 >= 0 && b1 < 1) || !(b2 >= 0 && b2 < 1)) bad('betas', `[${b1}, ${b2}]`);
  if (!(Number.isFinite(g.eps) && g.eps >= 0)) bad('eps', g.eps);
}

/**
 * torch.optim.AdamW (amsgrad=false, maximize=false): per step and parameter with a gradient,
 * p *= 1 - lr·wd (decoupled decay); m = β1·m + (1-β1)·g; v = β2·v + (1-β2)·g²;
 * p -= lr / (1-β1^t) · m / (sqrt(v) / sqrt(1-β2^t) + eps), t the parameter's own step count.
 * Plain Adam without weight decay is weightDecay = 0 (torch Adam with weight_decay=0 is the same
 * update). Parameters whose .grad is null are skipped and their step count does not advance.
 */
export class AdamW {
  readonly paramGroups: ResolvedGroup[];
  private slots: Slot[] = [];
  private steps = 0;
  private gpu: Gpu;
  private disposed = false;
  /** Every parameter's moments, packed (so one dispatch updates several tensors). */
  private m: GPUBuffer;
  private v: GPUBuffer;
  private total = 0;
  private slotsPerDispatch: number;

  constructor(groups: ParamGroup[], opts: AdamWOptions = {}) {
    const first = groups.find((g) => g.params.length > 0)?.params[0];
    if (!first) throw new Error('AdamW: no parameters');
    this.gpu = first.gpu;
    const seen = new Set<Tensor>();
    this.paramGroups = groups.map((g, gi) => {
      const group: ResolvedGroup = {
        params: [...g.params],
        lr: g.lr,
        weightDecay: g.weightDecay,
        betas: [...(g.betas ?? [0.9, 0.999])],
        eps: g.eps ?? 1e-8,
      };
      checkHyper(`group ${gi}`, group);
      for (const p of group.params) {
        if (seen.has(p)) {
          throw new Error(`AdamW: parameter ${p.name ?? ''} appears in more than one group`);
        }
        seen.add(p);
        this.slots.push({ param: p, group, offset: this.total, steps: 0 });
        this.total += Math.ceil(p.size / STATE_ALIGN) * STATE_ALIGN;
      }
      return group;
    });
    this.slotsPerDispatch = opts.slotsPerDispatch ?? adamwSlotsFor(this.gpu);
    this.m = this.gpu.alloc(this.total * 4, 'adamw.exp_avg');
    this.v = this.gpu.alloc(this.total * 4, 'adamw.exp_avg_sq');
    fill(this.gpu, this.m, this.total, 0);
    fill(this.gpu, this.v, this.total, 0);
  }

  /** step() calls so far. */
  get stepCount(): number {
    return this.steps;
  }

  /**
   * Records the fused updates of every parameter that has a gradient, several tensors of a group
   * per dispatch (no CPU readback).
   */
  step(): void {
    this.checkAlive();
    for (const g of this.paramGroups) checkHyper('step', g);
    for (const s of this.slots) {
      const grad = s.param.grad;
      if (grad && grad.size !== s.param.size) {
        throw new Error(
          `AdamW: gradient of ${s.param.name ?? 'a parameter'} has ${grad.size} elements, ` +
            `expected ${s.param.size}`,
        );
      }
    }
    this.steps++;
    for (const group of this.paramGroups) {
      const items: AdamWItem[] = [];
      for (const s of this.slots) {
        if (s.group !== group || !s.param.grad) continue;
        s.steps++;
        items.push({ grad: s.param.grad.buffer, param: s.param.buffer, n: s.param.size,
          offset: s.offset, step: s.steps });
      }
      const { lr, weightDecay, betas, eps } = group;
      adamwUpdateMany(this.gpu, items, this.m, this.v,
        { lr, weightDecay, beta1: betas[0], beta2: betas[1], eps }, this.slotsPerDispatch);
    }
  }

  /**
   * Zeroes every gradient, keeping the buffers (the default: no reallocation per step). With
   * setToNone the gradients are dropped instead (torch's default), so a parameter that gets no
   * gradient before the next step() is skipped rather than updated with a zero gradient.
   */
  zeroGrad(setToNone = false): void {
    for (const { param } of this.slots) {
      if (!param.grad) continue;
      if (setToNone) {
        param.grad.dispose();
        param.grad = null;
      } else {
        param.grad.zero(); // deferred: the next backward's first gradient overwrites it
      }
    }
  }

  /** Copies the state to the CPU (a sync point). */
  async stateDict(): Promise<AdamWStateDict> {
    this.checkAlive();
    const mAll = await this.gpu.readF32(this.m, this.total);
    const vAll = await this.gpu.readF32(this.v, this.total);
    const part = (all: Float32Array, s: Slot) => all.slice(s.offset, s.offset + s.param.size);
    const m = this.slots.map((s) => part(mAll, s));
    const v = this.slots.map((s) => part(vAll, s));
    return {
      step: this.steps,
      paramSteps: this.slots.map((s) => s.steps),
      m,
      v,
      groups: this.paramGroups.map((g) => ({
        lr: g.lr,
        weightDecay: g.weightDecay,
        betas: [...g.betas],
        eps: g.eps,
      })),
    };
  }

  /** Restores a state saved by stateDict() for the same group and parameter layout. */
  loadStateDict(state: AdamWStateDict): void {
    this.checkAlive();
    const n = this.slots.length;
    if (state.groups.length !== this.paramGroups.length) {
      throw new Error(
        `AdamW.loadStateDict: expected ${this.paramGroups.length} groups, ` +
          `got ${state.groups.length}`,
      );
    }
    if (state.m.length !== n || state.v.length !== n || state.paramSteps.length !== n) {
      throw new Error(
        `AdamW.loadStateDict: expected state for ${n} parameters, got m ${state.m.length}, ` +
          `v ${state.v.length}, paramSteps ${state.paramSteps.length}`,
      );
    }
    this.slots.forEach((s, i) => {
      const size = s.param.size;
      if (state.m[i].length !== size || state.v[i].length !== size) {
        throw new Error(
          `AdamW.loadStateDict: parameter ${i} (${s.param.name ?? 'unnamed'}) expected ${size} ` +
            `values, got m ${state.m[i].length}, v ${state.v[i].length}`,
        );
      }
    });
    state.groups.forEach((g, i) => checkHyper(`loadStateDict group ${i}`, g));
    const mAll = new Float32Array(this.total);
    const vAll = new Float32Array(this.total);
    this.slots.forEach((s, i) => {
      mAll.set(state.m[i], s.offset);
      vAll.set(state.v[i], s.offset);
      s.steps = state.paramSteps[i];
    });
    this.gpu.write(this.m, mAll);
    this.gpu.write(this.v, vAll);
    state.groups.forEach((g, i) => {
      const dst = this.paramGroups[i];
      dst.lr = g.lr;
      dst.weightDecay = g.weightDecay;
      dst.betas = [g.betas[0], g.betas[1]];
      dst.eps = g.eps;
    });
    this.steps = state.step;
  }

  /** Frees the moment buffers. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.gpu.free(this.m);
    this.gpu.free(this.v);
    this.slots = [];
  }

  private checkAlive(): void {
    if (this.disposed) throw new Error('AdamW: used after dispose()');
  }
}

/**
 * torch.nn.utils.clip_grad_norm_ (L2): total = ||all grads||, every grad is scaled in place by
 * min(1, maxNorm / (total + 1e-6)); the factor is read from a GPU buffer, so nothing syncs.
 * Parameters without a gradient are ignored. Returns the pre-clipping norm, to read later.
 * Shapes: params any -> out [1].
 */
export function clipGradNorm(params: Tensor[], maxNorm: number): Tensor {
  if (params.length === 0) throw new Error('clipGradNorm: no parameters');
  if (!(Number.isFinite(maxNorm) && maxNorm >= 0)) {
    throw new Error(`clipGradNorm: maxNorm must be finite and >= 0, got ${maxNorm}`);
  }
  const e = params[0].engine;
  const grads = params.map((p) => p.grad).filter((g): g is Tensor => g !== null);
  const norm = e.empty([1]);
  const coef = e.gpu.alloc(4, 'clip.coef');
  globalNormAndCoef(
    e.gpu,
    grads.map((g) => ({ buffer: g.buffer, n: g.size })),
    norm.buffer,
    coef,
    maxNorm,
  );
  for (const g of grads) scaleInPlace(e.gpu, coef, g.buffer, g.size);
  // Reused only after the recorded work is submitted (see BufferPool.release).
  e.gpu.free(coef);
  return norm;
}
