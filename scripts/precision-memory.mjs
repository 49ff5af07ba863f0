#!/usr/bin/env node
// Peak GPU pool memory of one training step, f32 vs f16 mixed precision (issue 12): SAM2 tiny
// from random weights (memory does not depend on the values), batch 1, head and LoRA modes, at
// each size. Measured as the bench's end-to-end rows measure it: the model, its optimizer and the
// batch are allocated, the pool's peak is reset, then one step (forward, Dice loss, backward,
// AdamW) runs; the peak of live pool bytes during it is the figure (weights + optimizer state +
// batch + activations and saved tensors + gradients). Needs the built library (`npm run build`).
//
//   node scripts/precision-memory.mjs [--sizes 256,512,1024] [--modes head,lora]
//     [--precisions f32,f16] [--model tiny] [--json FILE]
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const lib = (p) => import(pathToFileURL(join(root, 'dist', p)).href);
const { Engine } = await lib('autograd/tensor.js');
const { closeGpu, getGpu } = await lib('gpu/runtime.js');
const { Segmenter, DEFAULT_LORA } = await lib('model/segmenter.js');
const { resolvePrecision } = await lib('model/precision.js');
const { diceLoss } = await lib('ops/loss.js');
const { AdamW } = await lib('train/optim.js');
const { Rng } = await lib('util/random.js');

const args = process.argv.slice(2);
const arg = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
};
const sizes = arg('sizes', '256,512,1024').split(',').map(Number);
const modes = arg('modes', 'head,lora').split(',');
const precisions = arg('precisions', 'f32,f16').split(',');
const modelSize = arg('model', 'tiny');
const jsonOut = arg('json');

const gpu = await getGpu();
const engine = new Engine(gpu);
const MiB = (b) => b / 2 ** 20;
const rows = [];
console.error(`adapter: ${gpu.info.description}; model ${modelSize}, batch 1, one step each`);

for (const size of sizes) {
  for (const mode of modes) {
    for (const p of precisions) {
      const precision = resolvePrecision(p, [gpu]).precision;
      const model = new Segmenter(engine, { model: modelSize, head: 'stride16', mode, lora: DEFAULT_LORA, seed: 1 });
      if (precision === 'f16') model.setPrecision('f16', true);
      model.train(true);
      const trainable = model.trainable().map(([, t]) => t);
      const rng = new Rng(size);
      const x = engine.fromArray(Float32Array.from({ length: size * size * 3 }, () => rng.normal()), [1, size, size, 3]);
      const y = engine.fromArray(Float32Array.from({ length: size * size }, () => (rng.next() < 0.1 ? 1 : 0)), [1, size, size, 1]);
      const optim = new AdamW([{ params: trainable, lr: 1e-4, weightDecay: 0.01 }]);
      await gpu.sync();
      const weights = gpu.pool.stats.liveBytes;
      gpu.pool.resetPeak();
      const t0 = performance.now();
      try {
        model.reseedDropout(rng);
        const loss = engine.scope(() => diceLoss(model.forward(x), y));
        engine.backward(loss);
        const value = (await loss.toArray())[0];
        loss.release();
        optim.step();
        optim.zeroGrad();
        await gpu.sync();
        const ms = performance.now() - t0;
        const peak = gpu.pool.stats.peakLiveBytes;
        const row = { mode, size, precision, peakMiB: MiB(peak), residentMiB: MiB(weights), stepMs: ms, loss: value };
        rows.push(row);
        console.error(`${mode.padEnd(4)} ${String(size).padStart(4)} px ${precision}: peak ${row.peakMiB.toFixed(1)} MiB ` +
          `(resident before the step ${row.residentMiB.toFixed(1)} MiB), step ${(ms / 1000).toFixed(1)} s, loss ${value.toFixed(4)}`);
      } catch (e) {
        // A shape this adapter cannot run (a binding over its limit): say so, keep going.
        const error = e instanceof Error ? e.message.split('\n')[0] : String(e);
        rows.push({ mode, size, precision, error });
        console.error(`${mode.padEnd(4)} ${String(size).padStart(4)} px ${precision}: does not run here: ${error}`);
        engine.clearTape?.();
      }
      optim.dispose();
      x.dispose();
      y.dispose();
      for (const t of model.parameters()) t.dispose();
      await gpu.sync();
      gpu.pool.trim();
    }
  }
}

const lines = ['| mode | px | ' + precisions.map((p) => `${p} peak MiB`).join(' | ') +
  (precisions.length === 2 ? ` | ${precisions[1]} / ${precisions[0]}` : '') + ' |',
`|${' --- |'.repeat(2 + precisions.length + (precisions.length === 2 ? 1 : 0))}`];
for (const size of sizes) {
  for (const mode of modes) {
    const at = precisions.map((p) => rows.find((r) => r.size === size && r.mode === mode && r.precision === p));
    const cells = at.map((r) => (!r ? 'n/a' : r.error ? 'does not run' : r.peakMiB.toFixed(1)));
    const ok = at.length === 2 && at.every((r) => r && !r.error);
    const ratio = at.length === 2 ? ` | ${ok ? `${(at[1].peakMiB / at[0].peakMiB).toFixed(2)}x` : ''}` : '';
    lines.push(`| ${mode} | ${size} | ${cells.join(' | ')}${ratio} |`);
  }
}
console.log(lines.join('\n'));
if (jsonOut) writeFileSync(jsonOut, `${JSON.stringify({ adapter: gpu.info.description, model: modelSize, batch: 1, rows }, null, 2)}\n`);
await closeGpu();
