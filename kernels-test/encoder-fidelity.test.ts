/**
 * The GPU image encoder against the float64 reference (kernels-test/ref/hiera.ts) on random
 * official-shaped weights, at input sizes whose token grids need window padding (64 px: the
 * 16×16 grid's stage-3 4×4 grid inside 14-windows; 96 px: 24×24 → 8-windows pad nothing, stage 2
 * 12×12 in 4-windows, stage 3 6×6 in 14-windows, stage 4 3×3 in 7-windows).
 *
 * Tolerance: each of the 12 blocks adds f32 rounding from K-length dot products (K ≤ 1536) and
 * a softmax; errors grow roughly linearly through the residual stream. 1e-4 of each output's
 * magnitude (the target the issue sets for f32) leaves > 10× margin over the ~5e-6 seen.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { Engine } from '../src/autograd/tensor.js';
import { closeGpu, getGpu } from '../src/gpu/runtime.js';
import { MODEL_CONFIGS } from '../src/model/config.js';
import { ImageEncoder } from '../src/model/encoder.js';
import type { HostStateDict } from '../src/nn/module.js';
import { Rng } from '../src/util/random.js';
import { expectClose, randn, reportError, SEED } from './helpers.js';
import { hieraReference, randomEncoderWeights } from './ref/hiera.js';
import { chwToHwc64, hwcToChw64 } from './ref/tensor64.js';

afterAll(() => closeGpu());

// 12 blocks and the neck in f32 against float64: measured ≤ 1.2e-6 of max|want| (64-256 px);
// 1e-5 (was 1e-4) leaves ~8x for other seeds and devices.
const FIDELITY = { rtol: 1e-5, atol: 1e-5 };

describe('image encoder fidelity (tiny, random weights)', () => {
  it.each([64, 96, 128, 256])('matches the float64 reference at %i px', async (size) => {
    const cfg = MODEL_CONFIGS.tiny;
    const weights = randomEncoderWeights(cfg, SEED);
    const sd: HostStateDict = new Map();
    for (const [k, v] of weights) sd.set(k, { shape: v.shape, data: Float32Array.from(v.data) });
    const input = Float32Array.from(randn(3 * size * size));
    const ref = hieraReference(cfg, weights, input, size);

    const engine = new Engine(await getGpu());
    engine.poisonOutputs = true;
    const enc = new ImageEncoder(engine, cfg, new Rng(1));
    enc.loadStateDict(sd, { source: 'random weights' });
    enc.requiresGrad(false);
    // The GPU takes NHWC images.
    const nhwc = Float32Array.from(chwToHwc64(input, 3, size, size));
    await engine.scopeAsync(async () => {
      const x = engine.fromArray(nhwc, [1, size, size, 3]);
      const out = engine.noGrad(() => enc.forward(x));
      for (let i = 0; i < 4; i++) {
        const t = out.trunk[i];
        const [, h, w, c] = t.shape;
        expect([1, c, h, w]).toEqual(ref.shapes.trunk[i]);
        const got = hwcToChw64(await t.toArray(), h, w, c);
        const r = expectClose(got, ref.trunk[i], FIDELITY, `trunk.${i} @${size}`);
        reportError('encoder', `trunk.${i}`, `${size}px`, r);
      }
      for (let i = 0; i < 3; i++) {
        const t = out.fpn[i];
        if (!t) throw new Error(`fpn.${i} not computed`);
        const [, h, w, c] = t.shape;
        expect([1, c, h, w]).toEqual(ref.shapes.fpn[i]);
        const got = hwcToChw64(await t.toArray(), h, w, c);
        const r = expectClose(got, ref.fpn[i], FIDELITY, `fpn.${i} @${size}`);
        reportError('encoder', `fpn.${i}`, `${size}px`, r);
      }
    });
  });
});
