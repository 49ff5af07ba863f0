/**
 * Pixels to model inputs, in plain TypeScript (no sharp, no fs): Node (decode.ts) and the browser
 * page (src/web) decode photos their own way, then share this code, so a photo decoded to the same
 * pixels gives the same model input to the last bit.
 *
 * SAM2's `SAM2Transforms`: to [0, 1], resize to `size`x`size` ignoring the aspect ratio
 * (torchvision `Resize` on the float tensor: antialiased bilinear, pixel centres aligned), then the
 * ImageNet mean/std. Resize and normalisation are both linear per channel, so they are applied in
 * that order on the u8 values here without rounding in between. (sharp's 'linear' resize, used
 * before, is not torch's: 2 → 4 px of [0, 255] gives [0, 0, 128, 255] against torch's
 * [0, 63.75, 191.25, 255], up to 50 levels apart on crack edges of the sample photos.)
 */
import { type Window, resampleAntialiased } from './resample.js';

export const IMAGENET_MEAN = [0.485, 0.456, 0.406] as const;
export const IMAGENET_STD = [0.229, 0.224, 0.225] as const;

/** A decoded photo: u8 pixels, alpha removed, 1 (grey) or 3 channels (2 and 4: alpha ignored). */
export interface RawImage {
  data: Uint8Array;
  width: number;
  height: number;
  channels: 1 | 2 | 3 | 4;
}

/** u8 (or resized float) RGB, grey or with alpha → ImageNet-normalised float NHWC. */
export function normalizeRgb(
  px: ArrayLike<number>,
  channels: number,
  n: number,
  out = new Float32Array(n * 3),
): Float32Array {
  const scale = IMAGENET_STD.map((s) => 1 / (255 * s));
  const shift = IMAGENET_MEAN.map((m, c) => m / IMAGENET_STD[c]);
  for (let i = 0; i < n; i++) {
    for (let c = 0; c < 3; c++) {
      const v = px[i * channels + (channels >= 3 ? c : 0)];
      out[i * 3 + c] = v * scale[c] - shift[c];
    }
  }
  return out;
}

/**
 * A window of a decoded photo (default: all of it) resized to `size`x`size` and normalised:
 * the model input, NHWC [size, size, 3].
 */
export function resizeNormalize(raw: RawImage, size: number, win?: Window): Float32Array {
  const { data, width, height, channels } = raw;
  if (data.length !== width * height * channels) {
    throw new Error(`resizeNormalize: expected ${width}x${height}x${channels} = ` +
      `${width * height * channels} pixels values, got ${data.length}`);
  }
  const w = win ?? { x: 0, y: 0, w: width, h: height };
  const resized = resampleAntialiased(data, width, height, channels, w, size, size);
  return normalizeRgb(resized, channels, size * size);
}
