/**
 * Dynamic loss scaling, as torch.amp.GradScaler: the loss is multiplied by `scale` before
 * backward so small f16 gradients do not flush to zero; the gradients are divided by it again
 * (unscaled) before the norm, clipping and the optimizer. A step whose gradients are not finite
 * overflowed: it is skipped and the scale halves. After `growthInterval` clean steps in a row
 * the scale doubles. Pure bookkeeping: the trainer does the GPU work (see trainer.ts).
 */
import type { Tensor } from '../autograd/tensor.js';
import { scaleInPlace } from '../kernels/optim.js';

export interface LossScaleOptions {
  /** First scale (GradScaler: 2^16). */
  initScale?: number;
  /** Factor applied after `growthInterval` clean steps (2). */
  growthFactor?: number;
  /** Factor applied on overflow (0.5). */
  backoffFactor?: number;
  /** Clean steps in a row before the scale grows (2000). */
  growthInterval?: number;
  /**
   * The floor: the scale never backs off below it, and an overflow at the floor is no longer
   * an overflow the scale can fix (the trainer then counts it as a bad step). Default 1.
   */
  minScale?: number;
}

/** What a checkpoint keeps (trainer.json) so a resumed run continues with the same scale. */
export interface LossScaleState {
  scale: number;
  /** Clean steps since the last growth or overflow. */
  growthTracker: number;
}

export const LOSS_SCALE_DEFAULTS: Required<LossScaleOptions> = {
  initScale: 2 ** 16,
  growthFactor: 2,
  backoffFactor: 0.5,
  growthInterval: 2000,
  minScale: 1,
};

/** Largest finite f32: a scale beyond it would turn every loss into Inf. */
const F32_MAX = 3.4028234663852886e38;

export class LossScaler {
  readonly opts: Required<LossScaleOptions>;
  private s: number;
  private tracker = 0;

  constructor(opts: LossScaleOptions = {}) {
    this.opts = { ...LOSS_SCALE_DEFAULTS, ...opts };
    const o = this.opts;
    const bad = (what: string, v: number) => {
      throw new Error(`loss scaling: ${what} must be ${v}`);
    };
    if (!(o.initScale > 0 && o.initScale <= F32_MAX)) bad('initScale', o.initScale);
    if (!(o.growthFactor > 1)) bad('growthFactor', o.growthFactor);
    if (!(o.backoffFactor > 0 && o.backoffFactor < 1)) bad('backoffFactor', o.backoffFactor);
    if (!(Number.isInteger(o.growthInterval) && o.growthInterval >= 1)) bad('growthInterval', o.growthInterval);
    if (!(o.minScale > 0 && o.minScale <= o.initScale)) bad('minScale', o.minScale);
    this.s = o.initScale;
  }

  /** The factor the loss is multiplied by now. */
  get scale(): number {
    return this.s;
  }

  /** Whether the scale is at its floor (an overflow there is a real non-finite gradient). */
  get atFloor(): boolean {
    return this.s <= this.opts.minScale;
  }

  /**
   * After a step's gradients were checked: `finite` false backs off (the caller skips the step),
   * true counts a clean step and grows the scale every growthInterval of them. Returns what
   * happened to the scale.
   */
  update(finite: boolean): 'grew' | 'backed-off' | 'kept' {
    if (!finite) {
      this.tracker = 0;
      const next = Math.max(this.s * this.opts.backoffFactor, this.opts.minScale);
      const changed = next !== this.s;
      this.s = next;
      return changed ? 'backed-off' : 'kept';
    }
    this.tracker++;
    if (this.tracker < this.opts.growthInterval) return 'kept';
    this.tracker = 0;
    const next = this.s * this.opts.growthFactor;
    // GradScaler grows without bound; an f32 scale must stay finite.
    if (next > F32_MAX) return 'kept';
    this.s = next;
    return 'grew';
  }

  state(): LossScaleState {
    return { scale: this.s, growthTracker: this.tracker };
  }

  /** Restores a checkpoint's state (checked: a corrupt trainer.json must not poison a run). */
  setState(st: LossScaleState, source = 'trainer.json'): void {
    if (!(typeof st?.scale === 'number' && st.scale > 0 && st.scale <= F32_MAX) ||
      !(Number.isInteger(st.growthTracker) && st.growthTracker >= 0)) {
      throw new Error(`${source}: lossScale ${JSON.stringify(st)} is not a valid loss-scale state ` +
        '(a positive finite scale and a whole growthTracker)');
    }
    this.s = st.scale;
    this.tracker = st.growthTracker;
  }
}

/**
 * Divides every gradient by `scale` in place (GradScaler.unscale_), on the GPU with no readback:
 * an Inf or NaN gradient stays non-finite, so the global norm computed next still shows it.
 */
export function unscaleGrads(params: readonly Tensor[], scale: number): void {
  const grads = params.map((p) => p.grad).filter((g): g is Tensor => g !== null);
  if (!grads.length || scale === 1) return;
  const gpu = grads[0].gpu;
  const coef = gpu.alloc(4, 'lossscale.inv');
  gpu.write(coef, Float32Array.of(1 / scale));
  for (const g of grads) scaleInPlace(gpu, coef, g.buffer, g.size);
  // Reused only after the recorded work is submitted (see BufferPool.release).
  gpu.free(coef);
}
