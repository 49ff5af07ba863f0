/**
 * predict's outputs never overwrite or mix with its inputs: an output folder equal to the input
 * folder (or to an input photo, or holding the adapter) is refused, `a.jpg` and `a.png` get
 * distinct output names, its own outputs are never listed as inputs, and `--skip-bad` skips and
 * counts unreadable photos (without it, the error names the file).
 */
import { mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, describe, expect, it } from 'vitest';
import { Engine } from '../src/autograd/tensor.js';
import type { BadSample } from '../src/data/decode.js';
import { closeGpu, getGpu } from '../src/gpu/runtime.js';
import { DEFAULT_LORA, Segmenter } from '../src/model/segmenter.js';
import { checkOutputFolder, listInputs, outputNames, predictFiles } from '../src/predict/predict.js';

const tmp = mkdtempSync(join(tmpdir(), 'sam2-predict-out-'));
afterAll(async () => {
  await closeGpu();
  rmSync(tmp, { recursive: true, force: true });
});

async function photo(path: string, w = 40, h = 30): Promise<void> {
  const px = Buffer.alloc(w * h * 3);
  for (let i = 0; i < px.length; i++) px[i] = (i * 37) % 251;
  const img = sharp(px, { raw: { width: w, height: h, channels: 3 } });
  await (path.endsWith('.jpg') ? img.jpeg() : img.png()).toFile(path);
}

describe('predict outputs', () => {
  it('gives a.jpg and a.png distinct output names; others keep their stem', () => {
    expect(outputNames(['/p/a.jpg', '/p/a.png', '/p/b.jpg', '/p/A.tif'])).toEqual(['a.jpg', 'a.png', 'b', 'A.tif']);
    expect(outputNames(['/x/a.jpg', '/y/a.jpg'])).toEqual(['a.jpg', 'a.jpg-2']);
  });

  it('never lists its own outputs (or subfolders) as inputs', async () => {
    const dir = join(tmp, 'photos1');
    mkdirSync(join(dir, 'predictions'), { recursive: true });
    await photo(join(dir, 'a.jpg'));
    await photo(join(dir, 'b.mask.png'));
    await photo(join(dir, 'b.prob.png'));
    await photo(join(dir, 'b.overlay.png'));
    await photo(join(dir, 'predictions', 'c.png'));
    expect(listInputs(dir)).toEqual([join(dir, 'a.jpg')]);
  });

  it('refuses an output folder that is the input folder, an input photo, or holds the adapter', async () => {
    const dir = join(tmp, 'photos2');
    mkdirSync(dir, { recursive: true });
    await photo(join(dir, 'a.jpg'));
    const inputs = listInputs(dir);
    expect(() => checkOutputFolder(dir, dir, inputs)).toThrow(/--out .*photos2 is the input folder .*read back as photos/);
    expect(() => checkOutputFolder(`${dir}/./`, dir, inputs)).toThrow(/is the input folder/);
    // Through a symlink to the same folder.
    symlinkSync(dir, join(tmp, 'link2'));
    expect(() => checkOutputFolder(join(tmp, 'link2'), dir, inputs)).toThrow(/is the input folder/);
    // A single photo: its own folder is refused (outputs would sit next to it), the file itself too.
    const one = join(dir, 'a.jpg');
    expect(() => checkOutputFolder(dir, one, [one])).toThrow(/is the folder of the input photo .*a\.jpg/);
    expect(() => checkOutputFolder(one, one, [one])).toThrow(/is an input photo/);
    // The adapter inside the output folder.
    const run = join(tmp, 'run');
    mkdirSync(join(run, 'best'), { recursive: true });
    writeFileSync(join(run, 'best', 'adapter.safetensors'), 'x');
    expect(() => checkOutputFolder(run, dir, inputs, [{ what: 'adapter', path: join(run, 'best', 'adapter.safetensors') }]))
      .toThrow(/the adapter .*adapter\.safetensors lies inside the output folder/);
    // Fine: a subfolder of the input folder (listing does not descend), or a separate folder.
    expect(() => checkOutputFolder(join(dir, 'predictions'), dir, inputs)).not.toThrow();
    expect(() => checkOutputFolder(join(tmp, 'elsewhere'), dir, inputs)).not.toThrow();
  });

  it('writes distinct outputs for a.jpg and a.png, skips and counts bad photos with skipBad', async () => {
    const dir = join(tmp, 'photos3');
    mkdirSync(dir, { recursive: true });
    await photo(join(dir, 'a.jpg'));
    await photo(join(dir, 'a.png'), 30, 40);
    await photo(join(dir, 'c.png'));
    writeFileSync(join(dir, 'broken.jpg'), 'not a jpeg');
    writeFileSync(join(dir, 'empty.png'), '');
    const engine = new Engine(await getGpu());
    const model = new Segmenter(engine, { model: 'nano', head: 'fpn', mode: 'lora', lora: DEFAULT_LORA, seed: 3 });
    try {
      const inputs = listInputs(dir);
      const out = join(tmp, 'out3');
      const opts = { size: 32, threshold: 0.5, out };
      // Without skipBad: the first bad photo stops it, named.
      await expect(predictFiles(model, inputs, opts)).rejects.toThrow(/broken\.jpg: unreadable image/);
      const skipped: BadSample[] = [];
      const files = await predictFiles(model, inputs, { ...opts, skipBad: true, onSkip: (b) => skipped.push(b) });
      expect(skipped.map((b) => b.file)).toEqual([join(dir, 'broken.jpg'), join(dir, 'empty.png')]);
      expect(skipped.every((b) => /unreadable image/.test(b.reason))).toBe(true);
      expect(files.map((f) => f.input)).toEqual([join(dir, 'a.jpg'), join(dir, 'a.png'), join(dir, 'c.png')]);
      expect(files.length + skipped.length).toBe(inputs.length);
      const written = readdirSync(out).sort();
      expect(written).toEqual([
        'a.jpg.mask.png', 'a.jpg.overlay.png', 'a.jpg.prob.png',
        'a.png.mask.png', 'a.png.overlay.png', 'a.png.prob.png',
        'c.mask.png', 'c.overlay.png', 'c.prob.png',
      ]);
      // Each mask has its own photo's size (a.jpg 40x30, a.png 30x40): nothing overwritten.
      const ma = await sharp(join(out, 'a.jpg.mask.png')).metadata();
      const mb = await sharp(join(out, 'a.png.mask.png')).metadata();
      expect([ma.width, ma.height, mb.width, mb.height]).toEqual([40, 30, 30, 40]);
    } finally {
      model.parameters().forEach((p) => p.dispose());
    }
  });
});
