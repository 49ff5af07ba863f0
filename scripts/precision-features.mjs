#!/usr/bin/env node
// How far the f16 encoder's features are from the f32 encoder's on real photos (issue 12): the
// same SAM2 encoder weights (a checkpoint, or the seeded random initialisation), each photo
// encoded in f32, then again with the weights stored as f16 and f16 activations; per output
// (trunk stages, FPN levels after scalp) the max and mean absolute error, max |err| / max |f32|,
// and the relative L2 error ||f16 - f32|| / ||f32||. Needs the built library (`npm run build`).
//
//   node scripts/precision-features.mjs PHOTO... [--size 512] [--model tiny] [--checkpoint F] [--json FILE]
import { writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const lib = (p) => import(pathToFileURL(join(root, 'dist', p)).href);
const { Engine } = await lib('autograd/tensor.js');
const { closeGpu, getGpu } = await lib('gpu/runtime.js');
const { encoderConfig } = await lib('model/config.js');
const { ImageEncoder } = await lib('model/encoder.js');
const { readEncoderWeights } = await lib('model/load.js');
const { resolvePrecision } = await lib('model/precision.js');
const { loadImage } = await lib('data/decode.js');
const { Rng } = await lib('util/random.js');

const args = process.argv.slice(2);
const flags = new Map();
const photos = [];
for (let i = 0; i < args.length; i++) {
  if (args[i].startsWith('--')) flags.set(args[i].slice(2), args[++i]);
  else photos.push(args[i]);
}
if (!photos.length) throw new Error('give one or more photos');
const size = Number(flags.get('size') ?? 512);
const modelName = flags.get('model') ?? 'tiny';
const checkpoint = flags.get('checkpoint');

const gpu = await getGpu();
resolvePrecision('f16', [gpu]);
const engine = new Engine(gpu);
const enc = new ImageEncoder(engine, encoderConfig(modelName), new Rng(0));
if (checkpoint) enc.loadStateDict(await readEncoderWeights(checkpoint), { source: checkpoint });
enc.requiresGrad(false);
enc.train?.(false);

async function features(image) {
  return engine.scopeAsync(async () => {
    const x = engine.fromArray(image, [1, size, size, 3]);
    const r = engine.noGrad(() => enc.forward(x));
    const out = new Map();
    for (let i = 0; i < r.trunk.length; i++) out.set(`trunk.${i}`, await r.trunk[i].toArray());
    for (let i = 0; i < r.fpn.length; i++) if (r.fpn[i]) out.set(`fpn.${i}`, await r.fpn[i].toArray());
    return out;
  });
}

const images = [];
for (const p of photos) images.push((await loadImage(p, size)).image);
const ref = [];
for (const im of images) ref.push(await features(im));
enc.setPrecision('f16', 'all-but-lora');
const rows = [];
for (let k = 0; k < images.length; k++) {
  const got = await features(images[k]);
  for (const [name, want] of ref[k]) {
    const have = got.get(name);
    let maxAbs = 0;
    let sumAbs = 0;
    let maxRef = 0;
    let d2 = 0;
    let r2 = 0;
    let bad = 0;
    for (let i = 0; i < want.length; i++) {
      if (!Number.isFinite(have[i])) bad++;
      const d = Math.abs(have[i] - want[i]);
      maxAbs = Math.max(maxAbs, d);
      sumAbs += d;
      maxRef = Math.max(maxRef, Math.abs(want[i]));
      d2 += d * d;
      r2 += want[i] * want[i];
    }
    rows.push({ photo: basename(photos[k]), output: name, n: want.length, nonFinite: bad, maxAbs,
      meanAbs: sumAbs / want.length, maxRef, maxRel: maxAbs / maxRef, relL2: Math.sqrt(d2 / r2) });
  }
}
const fmt = (v) => v.toExponential(2);
console.log(`SAM2 ${modelName} encoder, ${checkpoint ?? 'seeded random weights'}, ${size} px, ` +
  `${gpu.info.description}: f16 vs f32 features`);
console.log('| output | max abs err | mean abs err | max abs err / max abs f32 | rel. L2 err | non-finite |');
console.log('| --- | --- | --- | --- | --- | --- |');
for (const name of [...ref[0].keys()]) {
  const rs = rows.filter((r) => r.output === name);
  const max = (k) => Math.max(...rs.map((r) => r[k]));
  const mean = (k) => rs.reduce((a, r) => a + r[k], 0) / rs.length;
  console.log(`| ${name} | ${fmt(max('maxAbs'))} | ${fmt(mean('meanAbs'))} | ${fmt(max('maxRel'))} | ` +
    `${fmt(max('relL2'))} | ${rs.reduce((a, r) => a + r.nonFinite, 0)} |`);
}
console.log(`(${photos.length} photos: max over photos, mean abs err averaged over them)`);
if (flags.get('json')) writeFileSync(flags.get('json'), `${JSON.stringify({ size, model: modelName, checkpoint: checkpoint ?? null, rows }, null, 2)}\n`);
await closeGpu();
