/**
 * `sam2-lora encode`: the fidelity entry point. Runs the image encoder on an image (or an exact
 * `input` tensor) and writes float32 NCHW tensors: input, trunk.0-3, fpn.0-2, vision_features.
 */
import { readSafetensors, writeSafetensors } from '../io/safetensors.js';
import type { StateDict } from '../io/pt.js';
import { Engine } from '../autograd/tensor.js';
import { loadImage } from '../data/decode.js';
import { closeGpu, getGpu } from '../gpu/runtime.js';
import { encoderConfig } from '../model/config.js';
import { ImageEncoder } from '../model/encoder.js';
import { readEncoderWeights } from '../model/load.js';
import { resolvePrecision } from '../model/precision.js';
import { Rng } from '../util/random.js';
import { type GpuCliOptions, UsageError, gpuChoice, int, precisionChoice } from './common.js';
import { ENCODE_DEFAULTS } from './defaults.js';
import { wroteLine } from './output.js';

/** [h, w, c] ↔ [c, h, w] for one image (SAM2 writes NCHW; our activations are NHWC). */
function nhwcToNchw(x: Float32Array, h: number, w: number, c: number): Float32Array {
  const out = new Float32Array(x.length);
  for (let i = 0; i < h * w; i++) for (let k = 0; k < c; k++) out[k * h * w + i] = x[i * c + k];
  return out;
}

function nchwToNhwc(x: Float32Array, c: number, h: number, w: number): Float32Array {
  const out = new Float32Array(x.length);
  for (let i = 0; i < h * w; i++) for (let k = 0; k < c; k++) out[i * c + k] = x[k * h * w + i];
  return out;
}

export async function encodeCommand(o: GpuCliOptions & {
  checkpoint?: string;
  model?: string;
  size?: string;
  image?: string;
  inputTensor?: string;
  out: string;
  /** f16 | f32 (absent: f32). */
  precision?: string;
}): Promise<void> {
  const size = int('size', o.size ?? ENCODE_DEFAULTS.size);
  if (size % 32 !== 0) throw new UsageError(`--size must be a multiple of 32, got ${size}`);
  const cfg = encoderConfig(o.model ?? ENCODE_DEFAULTS.model);
  let nchw: Float32Array;
  if (o.inputTensor) {
    const { tensors } = await readSafetensors(o.inputTensor);
    const t = tensors.get('input');
    if (!t) throw new UsageError(`${o.inputTensor}: no tensor named 'input'`);
    if (t.shape.join() !== [1, 3, size, size].join()) {
      throw new UsageError(`${o.inputTensor}: input is [${t.shape}], expected [1,3,${size},${size}]`);
    }
    nchw = t.data;
  } else if (o.image) {
    nchw = nhwcToNchw((await loadImage(o.image, size)).image, size, size, 3);
  } else {
    throw new UsageError('give --image IMG or --input-tensor FILE');
  }
  const gpu = await getGpu(gpuChoice(o));
  // f32 unless asked: encode is the fidelity check against SAM2's own features.
  const { precision, reason } = resolvePrecision(o.precision ? precisionChoice(o) : 'f32', [gpu]);
  const engine = new Engine(gpu);
  const enc = new ImageEncoder(engine, cfg, new Rng(0));
  if (o.checkpoint) enc.loadStateDict(await readEncoderWeights(o.checkpoint), { source: o.checkpoint });
  else console.warn('no --checkpoint: random weights');
  enc.requiresGrad(false);
  // f16: every weight stored as f16, activations f16; the tensors written are f32 either way.
  if (precision === 'f16') enc.setPrecision('f16', 'all-but-lora');
  console.log(`precision: ${precision} (${reason})`);
  const nhwc = nchwToNhwc(nchw, 3, size, size);
  const outTensors: StateDict = new Map([['input', { shape: [1, 3, size, size], data: nchw }]]);
  await engine.scopeAsync(async () => {
    const x = engine.fromArray(nhwc, [1, size, size, 3]);
    const res = engine.noGrad(() => enc.forward(x));
    const put = async (name: string, t: (typeof res.trunk)[number]) => {
      const [, h, w, c] = t.shape;
      outTensors.set(name, { shape: [1, c, h, w], data: nhwcToNchw(await t.toArray(), h, w, c) });
    };
    for (let i = 0; i < res.trunk.length; i++) await put(`trunk.${i}`, res.trunk[i]);
    for (let i = 0; i < res.fpn.length; i++) {
      const t = res.fpn[i];
      if (t) await put(`fpn.${i}`, t);
    }
    const last = res.fpn[res.fpn.length - 1];
    if (last) await put('vision_features', last);
  });
  await writeSafetensors(o.out, outTensors);
  console.log(`tensors: ${[...outTensors.keys()].join(', ')}`);
  console.log(wroteLine([o.out]));
  await closeGpu();
}
