/**
 * Probability maps as pixels: the mask, the greyscale map and the overlay. Pure TypeScript:
 * `predict` encodes them as PNG with sharp, the browser page draws them on canvases.
 */

/** Crack colour (bright red-magenta) and its opacity over the photo. */
export const OVERLAY_COLOR: [number, number, number] = [255, 0, 96];
export const OVERLAY_ALPHA = 0.75;

/** Mask pixels: 255 where prob > threshold, else 0 (one channel). */
export function maskPixels(prob: ArrayLike<number>, threshold: number, out = new Uint8Array(prob.length)): Uint8Array {
  for (let i = 0; i < prob.length; i++) out[i] = prob[i] > threshold ? 255 : 0;
  return out;
}

/** Greyscale pixels of a probability map (0 → black, 1 → white; one channel). */
export function probPixels(prob: ArrayLike<number>, out = new Uint8Array(prob.length)): Uint8Array {
  for (let i = 0; i < prob.length; i++) out[i] = Math.round(255 * Math.min(1, Math.max(0, prob[i])));
  return out;
}

/**
 * The photo's pixels (`ch` channels, grey or RGB first) with prob > threshold painted in `color`
 * at opacity `alpha`, written as `outCh` (3: RGB, 4: RGBA opaque) channels.
 */
export function overlayPixels(
  photo: ArrayLike<number>,
  ch: number,
  prob: ArrayLike<number>,
  threshold: number,
  outCh: 3 | 4 = 3,
  color: [number, number, number] = OVERLAY_COLOR,
  alpha = OVERLAY_ALPHA,
  out = new Uint8Array(prob.length * outCh),
): Uint8Array {
  for (let i = 0; i < prob.length; i++) {
    const on = prob[i] > threshold;
    for (let k = 0; k < 3; k++) {
      const src = photo[i * ch + (ch >= 3 ? k : 0)];
      out[i * outCh + k] = on ? Math.round((1 - alpha) * src + alpha * color[k]) : src;
    }
    if (outCh === 4) out[i * 4 + 3] = 255;
  }
  return out;
}
