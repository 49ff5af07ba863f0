/**
 * Messages name the thing and the cause: raw errno errors at our file-opening points become one
 * line with the path and what was expected; --images = --masks is refused; a forced GPU adapter or
 * backend that does not exist lists what exists; --lora-dropout and --size are checked at the
 * command line; an adapter holding NaN/Inf is refused naming the file and the tensor.
 */
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, describe, expect, it } from 'vitest';
import { checkInputSize, fraction } from '../src/cli/common.js';
import { widestActivationBytes } from '../src/model/config.js';
import { DatasetError, openDataset } from '../src/data/dataset.js';
import { openAdapter } from '../src/gpu/dawn.js';
import { closeGpu } from '../src/gpu/runtime.js';
import { readCheckpoint } from '../src/io/pt.js';
import { readSafetensors, writeSafetensors } from '../src/io/safetensors.js';
import { MODEL_CONFIGS } from '../src/model/config.js';
import { readEncoderWeights } from '../src/model/load.js';
import { listInputs, predictFiles } from '../src/predict/predict.js';
import { adapterFile, checkFinite, modelFromAdapter } from '../src/adapter/adapter.js';

const tmp = mkdtempSync(join(tmpdir(), 'sam2-messages-'));
afterAll(async () => {
  await closeGpu();
  rmSync(tmp, { recursive: true, force: true });
});

describe('file errors name the path, what was expected and the cause', () => {
  const folder = join(tmp, 'a-folder');
  mkdirSync(folder, { recursive: true });
  const loop = join(tmp, 'loop');
  symlinkSync(loop, loop);
  const missing = join(tmp, 'missing.pt');

  it.each([
    ['readCheckpoint(folder)', () => readCheckpoint(folder), /a-folder: cannot open it as a checkpoint \(zip\) file: it is a folder$/],
    ['readCheckpoint(missing)', () => readCheckpoint(missing), /missing\.pt: cannot open it as a checkpoint \(zip\) file: it does not exist \(ENOENT\)$/],
    ['readCheckpoint(link loop)', () => readCheckpoint(loop), /loop: cannot open it as a checkpoint \(zip\) file: too many levels of symbolic links .*\(ELOOP\)$/],
    ['readSafetensors(folder)', () => readSafetensors(folder), /a-folder: cannot open it as a safetensors file: it is a folder$/],
    ['readSafetensors(missing)', () => readSafetensors(missing), /missing\.pt: cannot open it as a safetensors file: it does not exist \(ENOENT\)$/],
    ['readEncoderWeights(folder)', () => readEncoderWeights(folder), /a-folder: expected a SAM2 checkpoint \(\.pt or \.safetensors\), but it is a folder$/],
    ['readEncoderWeights(loop)', () => readEncoderWeights(loop), /loop: cannot open it as a SAM2 checkpoint .*\(ELOOP\)$/],
  ] as const)('%s', async (_, f, pattern) => {
    const err = await (f as () => Promise<unknown>)().catch((e: Error) => e);
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toMatch(pattern);
  });

  it('predict inputs and output folder', async () => {
    expect(() => listInputs(join(tmp, 'nope'))).toThrow(/nope: cannot open it as a photo or a folder of photos: it does not exist \(ENOENT\)/);
    expect(() => listInputs(loop)).toThrow(/\(ELOOP\)/);
    const file = join(tmp, 'a-file');
    writeFileSync(file, 'x');
    const model = { engine: null, train() { return this; } } as never; // no model runs: the folder fails first
    await expect(predictFiles(model, [], { size: 32, threshold: 0.5, out: file }))
      .rejects.toThrow(/a-file: cannot create it as an output folder: it already exists \(EEXIST\)/);
    await expect(predictFiles(model, [], { size: 32, threshold: 0.5, out: join(file, 'sub') }))
      .rejects.toThrow(/a-file\/sub: cannot create it as an output folder: a part of the path is not a folder \(ENOTDIR\)/);
  });

  it('adapter paths: missing, a run folder instead of its best/', () => {
    expect(() => adapterFile(join(tmp, 'no-run'))).toThrow(/no-run: cannot open it as an adapter .*it does not exist \(ENOENT\)/);
    const run = join(tmp, 'run');
    mkdirSync(join(run, 'best'), { recursive: true });
    expect(() => adapterFile(run)).toThrow(/run: a run folder, not an adapter: give .*run\/best/);
  });
});

describe('datasets', () => {
  it('--images and --masks naming the same folder (also through a symlink) are refused', async () => {
    const d = join(tmp, 'same');
    mkdirSync(d, { recursive: true });
    await sharp(Buffer.alloc(12, 9), { raw: { width: 2, height: 2, channels: 3 } }).png().toFile(join(d, 'a.png'));
    await expect(openDataset({ images: d, masks: d })).rejects.toThrow(DatasetError);
    await expect(openDataset({ images: d, masks: `${d}/.` })).rejects.toThrow(/the images folder and the masks folder are the same folder/);
    symlinkSync(d, join(tmp, 'same-link'));
    await expect(openDataset({ images: d, masks: join(tmp, 'same-link') })).rejects.toThrow(/same folder \(.*same\)/);
  });

  it('a masks "folder" that is a file or a link loop says so', async () => {
    const d = join(tmp, 'same');
    writeFileSync(join(tmp, 'masks-file'), 'x');
    await expect(openDataset({ images: d, masks: join(tmp, 'masks-file') }))
      .rejects.toThrow(/masks folder is a file, not a folder: .*masks-file$/);
    symlinkSync(join(tmp, 'mloop'), join(tmp, 'mloop'));
    await expect(openDataset({ images: d, masks: join(tmp, 'mloop') }))
      .rejects.toThrow(/masks folder cannot be opened: too many levels of symbolic links .*\(ELOOP\): .*mloop$/);
    await expect(openDataset({ root: join(tmp, 'masks-file') })).rejects.toThrow(/dataset root is a file, not a folder/);
  });
});

describe('command-line values', () => {
  it('--lora-dropout must be in [0, 1)', () => {
    expect(fraction('lora-dropout', '0')).toBe(0);
    expect(fraction('lora-dropout', '0.05')).toBe(0.05);
    for (const v of ['1', '1.5', '-0.1', 'abc', 'NaN']) {
      expect(() => fraction('lora-dropout', v)).toThrow(`--lora-dropout must be a number in [0, 1), got ${v}`);
    }
  });

  it('--size: a multiple of 32, at least 32, and within the adapter binding limit', async () => {
    const limit = async () => 128 * 2 ** 20;
    for (const s of [0, 16, 100, 33]) {
      await expect(checkInputSize(s, 'tiny', limit)).rejects.toThrow(`--size must be a multiple of 32 and at least 32, got ${s}`);
    }
    await expect(checkInputSize(512, 'tiny', limit)).resolves.toBeUndefined();
    const err = await checkInputSize(4096, 'tiny', limit).catch((e: Error) => e);
    console.log(`  ${(err as Error).message}`);
    expect((err as Error).message).toMatch(/--size 4096 is too large for this GPU adapter: one image's widest activation \(SAM2 tiny\) takes \d+ MiB, above its maxStorageBufferBindingSize of 128 MiB; the largest size that fits is (\d+)/);
    const fits = Number(/fits is (\d+)/.exec((err as Error).message)![1]);
    expect(widestActivationBytes(MODEL_CONFIGS.tiny, fits)).toBeLessThanOrEqual(128 * 2 ** 20);
    expect(widestActivationBytes(MODEL_CONFIGS.tiny, fits + 32)).toBeGreaterThan(128 * 2 ** 20);
  });
});

describe('GPU adapter choice', () => {
  it('a forced adapter name or backend that does not exist says so and lists what exists', async () => {
    for (const choice of [{ adapter: 'NoSuchGPU-xyz' }, { backend: 'metal' as const }]) {
      const err = await openAdapter(choice).catch((e: Error) => e);
      expect(err).toBeInstanceOf(Error);
      const msg = (err as Error).message;
      console.log(`  ${JSON.stringify(choice)}: ${msg}`);
      expect(msg).toMatch(choice.adapter
        ? /no GPU adapter matches the forced GPU 'NoSuchGPU-xyz' \(--gpu or SAM2_LORA_GPU\)/
        : /no GPU adapter matches the forced backend 'metal'/);
      expect(msg).toMatch(/Adapters here: \w+: .+|Dawn finds no adapter here at all/);
    }
  });
});

describe('adapters holding non-finite values', () => {
  it('are refused by eval/predict, naming the file and the tensor', async () => {
    const good = { shape: [2, 2], data: new Float32Array([1, 2, 3, 4]) };
    const bad = { shape: [3], data: new Float32Array([0, Infinity, NaN]) };
    expect(() => checkFinite(new Map([['head.w', good]]), 'x.safetensors')).not.toThrow();
    expect(() => checkFinite(new Map([['head.w', good], ['image_encoder.trunk.blocks.0.attn.qkv.lora_B', bad]]), 'x.safetensors'))
      .toThrow(/x\.safetensors: tensor image_encoder\.trunk\.blocks\.0\.attn\.qkv\.lora_B holds 2 non-finite value\(s\) \(first Infinity at index 1\)/);
    // Through modelFromAdapter (what eval and predict call), before the GPU is touched.
    const dir = join(tmp, 'nan-adapter');
    mkdirSync(dir, { recursive: true });
    const config = { format: 'sam2-lora-adapter', version: 1, size: 64, threshold: 0.5, baseCheckpoint: null,
      segmenter: { model: 'nano', head: 'fpn', mode: 'lora', lora: { r: 4, alpha: 32, dropout: 0, targets: ['qkv'] }, seed: 0 } };
    await writeSafetensors(join(dir, 'adapter.safetensors'), new Map([['head.w', bad]]),
      { format: 'sam2-lora-adapter', config: JSON.stringify(config) });
    await expect(modelFromAdapter(dir, {})).rejects.toThrow(/nan-adapter\/adapter\.safetensors: tensor head\.w holds 2 non-finite value/);
  });
});
