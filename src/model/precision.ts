/**
 * The model's numeric precision. `f32`: everything in float32. `f16` (mixed precision, as SAM2's
 * own bf16 autocast training): the frozen encoder weights are stored as f16 and the encoder's
 * activations run in f16, cast back to f32 at the neck's outputs; the head, the loss, LoRA A/B,
 * trainable (master) weights and the optimizer stay f32. f16 needs the adapter's `shader-f16`.
 */
import type { Gpu } from '../gpu/runtime.js';

export type Precision = 'f32' | 'f16';
export const PRECISIONS: readonly Precision[] = ['f16', 'f32'];

/** A precision the adapter cannot run (forced f16 without shader-f16). */
export class PrecisionError extends Error {}

interface Device {
  readonly features: ReadonlySet<string>;
  readonly info: { description: string; device?: string };
}

const name = (g: Device) => g.info.description || g.info.device || 'the adapter';

/** The default precision on these devices, and why (what `info` prints). */
export function defaultPrecision(gpus: readonly Device[]): { precision: Precision; reason: string } {
  const without = gpus.filter((g) => !g.features.has('shader-f16'));
  if (without.length) {
    return { precision: 'f32', reason: `${without.map(name).join(', ')} does not offer shader-f16` };
  }
  return { precision: 'f16', reason: 'the adapter offers shader-f16 (mixed precision: f16 encoder, f32 head, LoRA and optimizer)' };
}

/**
 * The precision a command runs at: `auto` is the default above; `f16` on a device without
 * shader-f16 is an error naming the device; absent is f32 (library callers that say nothing keep
 * the f32 path unchanged).
 */
export function resolvePrecision(
  requested: Precision | 'auto' | undefined,
  gpus: readonly (Device | Gpu)[],
): { precision: Precision; reason: string } {
  if (requested === undefined || requested === 'f32') {
    return { precision: 'f32', reason: requested ? 'asked for (--precision f32)' : 'the default of library callers' };
  }
  if (requested === 'auto') return defaultPrecision(gpus);
  if (requested !== 'f16') {
    throw new PrecisionError(`--precision must be one of ${PRECISIONS.join(', ')}, got ${String(requested)}`);
  }
  const without = gpus.filter((g) => !g.features.has('shader-f16'));
  if (without.length) {
    throw new PrecisionError(`--precision f16: ${without.map(name).join(', ')} does not offer the ` +
      'WebGPU feature shader-f16 (see `sam2-lora info`); use --precision f32');
  }
  return { precision: 'f16', reason: 'asked for (--precision f16)' };
}
