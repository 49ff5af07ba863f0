/**
 * Checkpoints cannot make us allocate what the file does not hold: stride-0, overlapping and
 * mutually overlapping views are refused with the key named before anything is materialised, and
 * a base checkpoint is checked against the model's shapes (and its size recognised) from its
 * header alone.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Engine } from '../src/autograd/tensor.js';
import { closeGpu, getGpu } from '../src/gpu/runtime.js';
import { listCheckpoint, listPickle, readCheckpoint, writeCheckpoint } from '../src/io/pt.js';
import { writeSafetensors } from '../src/io/safetensors.js';
import { zipChunks, type ZipInput } from '../src/io/zip.js';
import { MODEL_CONFIGS, NANO_CONFIG } from '../src/model/config.js';
import { encoderKeys } from '../src/model/keys.js';
import { checkEncoderShapes, guessModelSize, loadBaseWeights } from '../src/model/load.js';
import { DEFAULT_LORA, Segmenter } from '../src/model/segmenter.js';
import { Pk, tempDir } from './io-fixtures.js';

const tmp = tempDir();
afterAll(async () => {
  await closeGpu();
  tmp.cleanup();
});
const at = (name: string) => join(tmp.dir, name);

/** A `.pt` whose pickle is `pkl`, with the given storages. */
function ptWith(name: string, pkl: Uint8Array, storages: Uint8Array[] = []): string {
  const inputs: ZipInput[] = [['archive/data.pkl', pkl] as const,
    ...storages.map((s, i) => [`archive/data/${i}`, s] as const)]
    .map(([n, b]) => ({ name: n, chunks: [b] }));
  writeFileSync(at(name), Buffer.concat([...zipChunks(inputs)]));
  return at(name);
}

/** Refused with `pattern`; reports the elapsed time and the growth of ArrayBuffer memory. */
async function refused(path: string, pattern: RegExp, what: string) {
  const before = process.memoryUsage().arrayBuffers;
  const t0 = performance.now();
  const err = await readCheckpoint(path).catch((e: Error) => e);
  const ms = performance.now() - t0;
  const grew = process.memoryUsage().arrayBuffers - before;
  console.log(`  ${what}: refused in ${ms.toFixed(1)} ms, ArrayBuffer memory +${(grew / 2 ** 20).toFixed(2)} MiB ` +
    `(${readFileSync(path).length} byte file): ${(err as Error).message}`);
  expect(err).toBeInstanceOf(Error);
  expect((err as Error).message).toMatch(pattern);
  // A [100000, 100000] float32 view is 40 GB: nothing close to it may have been allocated.
  expect(grew).toBeLessThan(64 * 2 ** 20);
}

describe('tensor views are checked against their storage before materialising', () => {
  it('a stride-0 view claiming [100000, 100000] from one stored float is refused, naming the key', async () => {
    const p = new Pk().proto().orderedDict().str('trunk.big')
      .tensor('FloatStorage', '0', 1, 0, [100000, 100000], [0, 0]).setitem().stop().bytes();
    const path = ptWith('stride0.pt', p, [new Uint8Array(4)]);
    await refused(path, /stride0\.pt: tensor trunk\.big: stride-0 view \[100000, 100000\] with strides \[0, 0\]/, 'stride-0');
    // Listing (no tensor data) refuses it too: every reader goes through the same check.
    await expect(listCheckpoint(path)).rejects.toThrow(/tensor trunk\.big: stride-0 view/);
  });

  it('an overlapping view [100000, 100000] over a 200000-float storage (800 KB) is refused', async () => {
    const p = new Pk().proto().orderedDict().str('w')
      .tensor('FloatStorage', '0', 200000, 0, [100000, 100000], [1, 1]).setitem().stop().bytes();
    const path = ptWith('overlap.pt', p, [new Uint8Array(800000)]);
    await refused(path, /tensor w: overlapping view \[100000, 100000\] with strides \[1, 1\] reuses storage elements/, 'overlap');
  });

  it('many different views of one storage that together claim over 4x what it holds are refused', async () => {
    // w, its transpose and three row slices over one 16-float storage are fine (16+16+12 = 44 <=
    // 64); 8 more distinct column views (4 + 4 + 4 + 4 + 3 + 3 + 3 + 3 floats) make it 72 > 64.
    const pickle = (cols: number) => {
      const p = new Pk().proto().orderedDict()
        .str('w').tensor('FloatStorage', '0', 16, 0, [4, 4], [4, 1]).setitem()
        .str('wT').tensor('FloatStorage', '0', 16, 0, [4, 4], [1, 4]).setitem();
      for (let r = 0; r < 3; r++) p.str(`row${r}`).tensor('FloatStorage', '0', 16, 4 * r, [4], [1]).setitem();
      for (let c = 0; c < cols; c++) {
        p.str(`col${c}`).tensor('FloatStorage', '0', 16, c % 4, [c < 4 ? 4 : 3], [c < 4 ? 4 : 5]).setitem();
      }
      return p.stop().bytes();
    };
    const ok = ptWith('fiveviews.pt', pickle(0), [new Uint8Array(64)]);
    expect((await readCheckpoint(ok)).size).toBe(5);
    const path = ptWith('manyviews.pt', pickle(8), [new Uint8Array(64)]);
    await refused(path, /tensors w, wT, row0, row1 and 9 more claim 72 elements from storage 0 of 16 \(at most 4x\)/, 'many views');
  });

  it('legitimate views still load: slices, a transpose alone, tied (identical) views shared', async () => {
    const data = Float32Array.from({ length: 24 }, (_, i) => i);
    const p = new Pk().proto().orderedDict()
      .str('a').tensor('FloatStorage', '0', 24, 0, [2, 3], [3, 1]).setitem() // first 6
      .str('b').tensor('FloatStorage', '0', 24, 6, [3, 2], [1, 3]).setitem() // next 6, transposed
      .str('c').tensor('FloatStorage', '0', 24, 12, [12], [1]).setitem() // the rest
      .str('tied').tensor('FloatStorage', '0', 24, 12, [12], [1]).setitem() // same view as c
      .str('scalar').tensor('FloatStorage', '1', 1, 0, [], []).setitem()
      .stop().bytes();
    const path = ptWith('views.pt', p, [new Uint8Array(data.buffer), new Uint8Array(new Float32Array([7]).buffer)]);
    const sd = await readCheckpoint(path);
    expect([...sd.get('a')!.data]).toEqual([0, 1, 2, 3, 4, 5]);
    expect([...sd.get('b')!.data]).toEqual([6, 9, 7, 10, 8, 11]);
    expect([...sd.get('c')!.data]).toEqual(Array.from({ length: 12 }, (_, i) => 12 + i));
    expect(sd.get('tied')!.data).toBe(sd.get('c')!.data);
    expect([...sd.get('scalar')!.data]).toEqual([7]);
  });
});

describe('base checkpoints are checked against the model from their header', () => {
  it('recognises the SAM2 size of a key/shape set', () => {
    for (const cfg of [...Object.values(MODEL_CONFIGS), NANO_CONFIG]) {
      expect(guessModelSize(encoderKeys(cfg))).toBe(cfg.name);
    }
    // One key short: still recognised by its patch-embed width and block count.
    const small = encoderKeys(MODEL_CONFIGS.small);
    small.delete('trunk.blocks.3.attn.qkv.weight');
    expect(guessModelSize(small)).toBe('small');
    expect(guessModelSize(new Map([['foo', [1]]]))).toBeNull();
  });

  it('a checkpoint of another size says "looks like SAM2 <size>" instead of listing keys', async () => {
    const engine = new Engine(await getGpu());
    const model = new Segmenter(engine, { model: 'nano', head: 'fpn', mode: 'lora', lora: DEFAULT_LORA, seed: 1 });
    try {
      let msg = '';
      try {
        checkEncoderShapes(model, encoderKeys(MODEL_CONFIGS.small), 'small.pt');
      } catch (e) {
        msg = (e as Error).message;
      }
      console.log(`  ${msg}`);
      expect(msg).toMatch(/^small\.pt: looks like SAM2 small \(\d+ encoder tensors, patch-embed width 96, 16 blocks\), but the model is SAM2 nano: pass --model small/);
      expect(msg.length).toBeLessThan(300);

      // Shapes are checked before any tensor is read: this file's data is corrupt (CRC), yet the
      // error is the shape mismatch, found from the pickle alone.
      const sd = new Map([...encoderKeys(NANO_CONFIG)].map(([k, shape]) =>
        [`image_encoder.${k}`, { shape, data: new Float32Array(shape.reduce((a, b) => a * b, 1)) }]));
      const pw = sd.get('image_encoder.trunk.patch_embed.proj.weight')!;
      sd.set('image_encoder.trunk.patch_embed.proj.weight', { shape: [pw.shape[0] + 1, ...pw.shape.slice(1)],
        data: new Float32Array((pw.shape[0] + 1) * pw.shape.slice(1).reduce((a, b) => a * b, 1)) });
      await writeCheckpoint(at('nano-bad.pt'), sd, { wrapModel: true });
      const bytes = readFileSync(at('nano-bad.pt'));
      bytes[bytes.length >> 1] ^= 0xff; // in the middle: tensor data (the pickle comes first)
      writeFileSync(at('nano-bad.pt'), bytes);
      await expect(readCheckpoint(at('nano-bad.pt'))).rejects.toThrow(/CRC mismatch/);
      await expect(loadBaseWeights(model, at('nano-bad.pt'))).rejects.toThrow(
        /nano-bad\.pt: does not match the SAM2 nano image encoder .*\n.*1 shape mismatches: trunk\.patch_embed\.proj\.weight: expected \[16, 3, 7, 7\], got \[17, 3, 7, 7\]/);

      // The same through safetensors (header only).
      const st = at('nano-bad.safetensors');
      await writeSafetensors(st, sd);
      await expect(loadBaseWeights(model, st)).rejects.toThrow(/1 shape mismatches: trunk\.patch_embed\.proj\.weight/);
    } finally {
      model.parameters().forEach((p) => p.dispose());
    }
  });

  const SHARED = process.env.SAM2_SHARED ?? join(import.meta.dirname, '..', '..', 'shared');
  const SMALL = join(SHARED, 'sam2-checkpoints', 'sam2.1_hiera_small.data.pkl');
  if (!existsSync(SMALL)) console.warn(`skipping official-pickle size test: ${SMALL} not found (needs ../shared)`);
  it.skipIf(!existsSync(SMALL))('the official SAM2.1 small pickle is recognised as small (skipped without ../shared)', () => {
    const entries = listPickle(readFileSync(SMALL), SMALL, { prefix: 'image_encoder.' });
    const shapes = new Map(entries.map((e) => [e.name, e.shape]));
    expect(guessModelSize(shapes)).toBe('small');
  });
});
