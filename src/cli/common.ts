/** Helpers shared by CLI commands: option parsing and checks of option values. */
import type { AdapterChoice } from '../gpu/dawn.js';
import { encoderConfig, widestActivationBytes } from '../model/config.js';
import { PRECISIONS, type Precision } from '../model/precision.js';

export class UsageError extends Error {}

/** The GPU flags every GPU command takes (`--gpu NAME`, `--backend B`). */
export interface GpuCliOptions {
  /** Dawn adapter name (`sam2-lora info` prints it); env SAM2_LORA_GPU. */
  gpu?: string;
  /** Forced WebGPU backend; env SAM2_LORA_BACKEND. */
  backend?: string;
}

/** `--precision` as given (f16 | f32; commander checks the choice), else `auto`. */
export const precisionChoice = (o: { precision?: string }): Precision | 'auto' => {
  if (o.precision === undefined) return 'auto';
  if (!(PRECISIONS as readonly string[]).includes(o.precision)) {
    throw new UsageError(`--precision must be one of ${PRECISIONS.join(', ')}, got ${o.precision}`);
  }
  return o.precision as Precision;
};

/** `--gpu` / `--backend` as the runtime's adapter choice (the env fills what is absent). */
export const gpuChoice = (o: GpuCliOptions): AdapterChoice =>
  ({ adapter: o.gpu, backend: o.backend as AdapterChoice['backend'] });

export function int(name: string, v: string | number | undefined, min = 1): number {
  const n = typeof v === 'number' ? v : Number(v);
  if (!Number.isInteger(n) || n < min) throw new UsageError(`--${name} must be an integer >= ${min}, got ${v}`);
  return n;
}

export function num(name: string, v: string | number | undefined, min = 0): number {
  const n = typeof v === 'number' ? v : Number(v);
  if (!Number.isFinite(n) || n < min) throw new UsageError(`--${name} must be a number >= ${min}, got ${v}`);
  return n;
}

/** A probability in [0, 1) (dropout: 1 would drop everything). */
export function fraction(name: string, v: string | number | undefined): number {
  const n = typeof v === 'number' ? v : Number(v);
  if (!Number.isFinite(n) || n < 0 || n >= 1) {
    throw new UsageError(`--${name} must be a number in [0, 1), got ${v}`);
  }
  return n;
}

/**
 * Checks `--size` at the command line: a multiple of 32, at least 32, and small enough that one
 * image's widest activation fits the adapter's storage binding limit (else it names the largest
 * size that does).
 */
export async function checkInputSize(
  size: number,
  model: string,
  bindingLimit: () => Promise<number>,
): Promise<void> {
  if (!(Number.isInteger(size) && size >= 32 && size % 32 === 0)) {
    throw new UsageError(`--size must be a multiple of 32 and at least 32, got ${size}`);
  }
  const enc = encoderConfig(model);
  const need = widestActivationBytes(enc, size);
  const limit = await bindingLimit();
  if (need <= limit) return;
  let fits = size;
  while (fits > 32 && widestActivationBytes(enc, fits) > limit) fits -= 32;
  const mb = (b: number) => `${(b / 2 ** 20).toFixed(0)} MiB`;
  throw new UsageError(`--size ${size} is too large for this GPU adapter: one image's widest ` +
    `activation (SAM2 ${model}) takes ${mb(need)}, above its maxStorageBufferBindingSize of ` +
    `${mb(limit)}; the largest size that fits is ${fits}`);
}
