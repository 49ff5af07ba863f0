/** Segmentation losses on logits: fused sigmoid + Dice, and BCE with logits. */
import { type Tensor, shapeStr } from '../autograd/tensor.js';
import { bceBackward, bceForward, diceBackward, diceForward } from '../kernels/loss.js';

function checkPair(op: string, logits: Tensor, target: Tensor): void {
  if (logits.shape.length === 0) throw new Error(`${op}: logits have no batch dimension`);
  if (
    logits.shape.length !== target.shape.length ||
    logits.shape.some((d, i) => d !== target.shape[i])
  ) {
    throw new Error(
      `${op}: target expected ${shapeStr(logits.shape)} (the logits' shape), ` +
        `got ${shapeStr(target.shape)}`,
    );
  }
}

/**
 * Soft Dice loss on sigmoid(logits), MONAI `DiceLoss(sigmoid=True)` with its defaults:
 * squared_pred=false, jaccard=false, smooth_nr = smooth_dr = `smooth`, include_background,
 * reduction "mean". Per sample b (sums over every non-batch element, p = sigmoid(logit), g the
 * 0/1 target): loss_b = 1 - (2·Σ p·g + smooth) / (Σ p + Σ g + smooth); the result is the mean
 * over the batch. Why this variant: it is what `DiceLoss(sigmoid=True)` computes when nothing
 * else is set, so a recipe written against MONAI trains on the same objective; for the
 * single-channel [B, 1, H, W] crack masks, summing over all non-batch dims is exactly MONAI's
 * per-(sample, channel) spatial sum (with C > 1 MONAI would average per-channel Dice instead).
 * The smooth terms keep all-background
 * samples finite (loss → 1 - smooth / (Σp + smooth)). The target is a constant: no gradient flows
 * to it. Backward: one elementwise pass scaled by the upstream gradient read on the GPU.
 * Shapes: logits [B, ...], target [B, ...] (same shape, 0/1 values) -> out [1].
 */
export function diceLoss(logits: Tensor, target: Tensor, smooth = 1e-5): Tensor {
  checkPair('diceLoss', logits, target);
  if (!(smooth >= 0)) throw new Error(`diceLoss: smooth must be >= 0, got ${smooth}`);
  const e = logits.engine;
  const B = logits.shape[0];
  const N = logits.size / B;
  const out = e.empty([1]);
  // Per sample (num, den): all the backward needs besides the inputs.
  const stats = e.empty([B, 2]);
  diceForward(e.gpu, logits.buffer, target.buffer, stats.buffer, out.buffer, B, N, smooth);
  return e.record(
    {
      name: 'dice_loss',
      inputs: [logits, target],
      saved: [logits, target, stats],
      backward: (g, needs) => {
        if (!needs[0]) return [null, null];
        const dx = e.empty(logits.shape);
        diceBackward(e.gpu, logits.buffer, target.buffer, stats.buffer, g.buffer, dx.buffer, B, N);
        return [dx, null];
      },
    },
    out,
  );
}

/**
 * Mean binary cross-entropy on logits (torch `binary_cross_entropy_with_logits`, reduction
 * "mean"), computed as max(x, 0) - x·y + log(1 + exp(-|x|)) so no exp overflows. The target is a
 * constant: no gradient flows to it. Backward: (sigmoid(x) - y) / N times the upstream gradient.
 * Shapes: logits [...], target same shape -> out [1].
 */
export function bceWithLogits(logits: Tensor, target: Tensor): Tensor {
  checkPair('bceWithLogits', logits, target);
  const e = logits.engine;
  const n = logits.size;
  const out = e.empty([1]);
  bceForward(e.gpu, logits.buffer, target.buffer, out.buffer, n);
  return e.record(
    {
      name: 'bce_with_logits',
      inputs: [logits, target],
      saved: [logits, target],
      backward: (g, needs) => {
        if (!needs[0]) return [null, null];
        const dx = e.empty(logits.shape);
        bceBackward(e.gpu, logits.buffer, target.buffer, g.buffer, dx.buffer, n);
        return [dx, null];
      },
    },
    out,
  );
}
