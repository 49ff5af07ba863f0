/**
 * The training tool end to end on the `nano` model (SAM2-tiny's structure, miniature widths, so
 * it runs in seconds per step on lavapipe): train a few steps on a synthetic crack set, check the
 * loss falls and Dice rises clearly above an all-background prediction (Dice 0), evaluate the
 * saved adapter, predict a photo, resume exactly, and refuse bad data with errors naming files.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { copyFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { openDataset } from '../src/data/dataset.js';
import { predictFiles } from '../src/predict/predict.js';
import { LOCK_FILE } from '../src/train/run-dir.js';
import { evaluate } from '../src/train/evaluate.js';
import { type TrainOptions, train } from '../src/train/trainer.js';
import { expectClose } from './helpers.js';
import { nanoTrainOptions, syntheticRunDir } from './nano-run.js';
import { loadAdapter, modelFromAdapter } from '../src/adapter/adapter.js';
import { findCheckpoint } from '../src/adapter/manifest.js';

const { dir, data } = syntheticRunDir('pipeline', { train: 8, val: 4, test: 4, size: 64, seed: 3 });

function options(out: string, over: Partial<TrainOptions> = {}): TrainOptions {
  return nanoTrainOptions(data, out, { maxSteps: 24, warmup: 2, ...over });
}

describe('training pipeline (nano model, synthetic cracks)', () => {
  it('trains: loss falls, Dice rises above all-background; eval and predict work', async () => {
    const out = join(dir, 'run');
    const r = await train(options(out));
    expect(r.steps).toBe(24);
    const losses = r.history.map((h) => h.loss);
    const first = losses.slice(0, 4).reduce((a, b) => a + b) / 4;
    const last = losses.slice(-4).reduce((a, b) => a + b) / 4;
    expect(last, `loss ${first} -> ${last}`).toBeLessThan(first - 0.05);
    // All-background predicts no crack pixel: Dice 0 on any set with cracks.
    expect(r.bestDice).toBeGreaterThan(0.15);
    for (const f of ['log.jsonl', 'loss.png', 'last/adapter.safetensors', 'last/trainer.json',
      'last/optimizer.safetensors', 'best/adapter.safetensors', 'best/adapter.json']) {
      expect(existsSync(join(out, f)), f).toBe(true);
    }
    const { tensors, config } = await loadAdapter(r.bestDir);
    expect(config.segmenter.model).toBe('nano');
    expect([...tensors.keys()].every((k) => k.includes('.lora_') || k.startsWith('head.'))).toBe(true);

    const { model } = await modelFromAdapter(r.bestDir, {});
    const test = await openDataset({ root: data, split: 'test' });
    const m = await evaluate(model, test, { size: 64, batch: 2 });
    expect(m.images).toBe(4);
    expect(m.dice).toBeGreaterThan(0.1);

    const photo = join(data, 'test', 'images', `${test[0].id}.jpg`);
    const files = await predictFiles(model, [photo], { size: 64, threshold: 0.5, tile: 48, out: join(dir, 'pred') });
    const meta = await sharp(files[0].mask).metadata();
    const src = await sharp(photo).metadata();
    expect([meta.width, meta.height]).toEqual([src.width, src.height]);
    expect(files[0].tiles).toBeGreaterThan(1);
    expect(existsSync(files[0].overlay)).toBe(true);
  });

  it('resume continues exactly like an uninterrupted run', async () => {
    const straight = await train(options(join(dir, 'straight'), { maxSteps: 6, epochs: 100 }));
    const part = join(dir, 'parted');
    const first = await train(options(part, { maxSteps: 6, epochs: 100, stopAfter: 3 }));
    expect(first.interrupted).toBe(true);
    expect(first.steps).toBe(3);
    // As from the command line: its defaults differ, the run's own saved options must win.
    const second = await train(
      options(part, { maxSteps: 1000, lr: 5, headLr: 5, batch: 1, data: {}, resume: part }),
    );
    expect(second.steps).toBe(6);
    expect(second.history.map((h) => h.loss)).toEqual(straight.history.map((h) => h.loss));
    const a = await loadAdapter(straight.lastDir);
    const b = await loadAdapter(second.lastDir);
    expect([...b.tensors.keys()]).toEqual([...a.tensors.keys()]);
    for (const [k, t] of a.tensors) expect(b.tensors.get(k)?.data, k).toEqual(t.data);
  });

  it('refuses to train into a folder that holds a run, naming it and --resume', async () => {
    const out = join(dir, 'run');
    await expect(train(options(out))).rejects.toThrow(
      new RegExp(`${out} already holds a run .*--resume ${out}.*--force`),
    );
  });

  it('resume: conflicting explicit options are listed; a larger --max-steps extends the run', async () => {
    const part = join(dir, 'parted');
    const resume = (over: Partial<TrainOptions>, explicit: [string, string][]) =>
      train(options(part, { data: {}, resume: part, explicit: new Map(explicit), ...over }));
    const err = await resume({ lr: 5, batch: 1, maxSteps: 3, segmenter: { ...options(part).segmenter, seed: 9 } },
      [['lr', '--lr'], ['batch', '--batch'], ['maxSteps', '--max-steps'], ['segmenter.seed', '--seed'],
        ['valBatches', '--val-batches']]).catch((e: Error) => e.message);
    expect(err).toMatch(/these options differ from the run's own/);
    expect(err).toContain("--lr 5 (the run's: 0.002)");
    expect(err).toContain("--batch 1 (the run's: 2)");
    expect(err).toContain("--max-steps 3 (the run's: 6; a resumed run can only grow)");
    expect(err).toContain("--seed 9 (the run's: 5)");
    expect(err).not.toContain('--val-batches');
    // The same values given explicitly are no conflict; a larger --max-steps continues the run.
    const r = await resume({ maxSteps: 8, lr: 2e-3 }, [['maxSteps', '--max-steps'], ['lr', '--lr']]);
    expect(r.steps).toBe(8);
    expect(r.history.map((h) => h.step)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
  });

  it('non-finite gradients (NaN, Inf) are skipped and logged, never applied; a run goes on', async () => {
    const out = join(dir, 'poisoned');
    const poison = new Map([[1, NaN], [2, Infinity]]);
    let attempt = 0;
    const r = await train(options(out, {
      size: 32,
      maxSteps: 3,
      afterBackward: (_step, params) => {
        const v = poison.get(attempt++);
        if (v === undefined) return;
        const [, p] = params[params.length - 1];
        p.gpu.write(p.grad!.buffer, Float32Array.of(v));
      },
    }));
    expect(r.steps).toBe(3);
    expect(r.skippedSteps).toBe(2);
    const log = readFileSync(join(out, 'log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    const skips = log.filter((x) => x.type === 'skip');
    expect(skips.map((x) => [x.step, x.reason])).toEqual([[2, 'gradient norm NaN'], [2, 'gradient norm Infinity']]);
    expect(log.filter((x) => x.type === 'step').map((x) => x.step)).toEqual([1, 2, 3]);
    for (const d of [r.lastDir, r.bestDir]) {
      for (const [k, t] of (await loadAdapter(d)).tensors) expect(t.data.every(Number.isFinite), `${d} ${k}`).toBe(true);
    }
  });

  it('several non-finite steps in a row stop the run: step, learning rates, last good checkpoint', async () => {
    const out = join(dir, 'diverged');
    // 8 train images at batch 2: epoch 1 ends (and last/ is saved) at step 4; poisoned after.
    const err = await train(options(out, {
      size: 32,
      maxSteps: 8,
      afterBackward: (step, params) => {
        if (step < 4) return;
        const [, p] = params[0];
        p.gpu.write(p.grad!.buffer, Float32Array.of(Infinity));
      },
    })).catch((e: Error) => e.message);
    expect(err).toMatch(new RegExp('training diverged at step 5: 3 steps in a row had a non-finite loss or ' +
      'gradient .*learning rates [0-9.e+-]+, [0-9.e+-]+ \\(head, encoder\\).* last good checkpoint is ' +
      `${join(out, 'last')} \\(step 4\\)`));
    expect((await findCheckpoint(join(out, 'last')))?.found.manifest?.step).toBe(4);
    // The lock is released on the error path too.
    expect(existsSync(join(out, LOCK_FILE))).toBe(false);
  });

  it('a parameter turned non-finite stops the run before anything saves it', async () => {
    const out = join(dir, 'bad-param');
    const err = await train(options(out, {
      size: 32,
      maxSteps: 3,
      afterBackward: (step, params) => {
        if (step !== 1) return;
        const [, p] = params[0];
        // The gradient stays finite (the step is applied); the parameter is not.
        p.gpu.write(p.buffer, Float32Array.of(NaN));
      },
    })).catch((e: Error) => e.message);
    expect(err).toMatch(/training diverged at step 2: the parameters' L2 norm became NaN after step 2 .*last good checkpoint is none/);
    // Nothing was saved: the folder this run created is gone.
    expect(existsSync(out)).toBe(false);
  });

  it('micro-batches give the same step as one batch (no dropout)', async () => {
    const lora = { r: 4, alpha: 32, dropout: 0, targets: ['qkv', 'proj', 'mlp', 'block_proj'] as const };
    const base = options(join(dir, 'whole'), { maxSteps: 2 });
    const seg = { ...base.segmenter, lora: { ...lora, targets: [...lora.targets] } };
    const whole = await train({ ...base, segmenter: seg });
    const split = await train({ ...base, out: join(dir, 'micro'), segmenter: seg, microBatch: 1 });
    const a = await loadAdapter(whole.lastDir);
    const b = await loadAdapter(split.lastDir);
    // Only the summation order differs (per micro-batch, then accumulated): f32 rounding, after
    // two AdamW steps whose update size is ~lr regardless of the gradient's scale.
    for (const [k, t] of a.tensors) {
      expectClose(b.tensors.get(k)!.data, t.data, { rtol: 1e-4, atol: 1e-4 }, `micro-batched ${k}`);
    }
    expectClose(split.history.map((h) => h.loss), whole.history.map((h) => h.loss), { rtol: 1e-5, atol: 1e-6 }, 'losses');
    // AdamW hides a uniformly mis-scaled gradient, so compare the logged gradient norms too.
    const norms = (run: string) =>
      readFileSync(join(run, 'log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l))
        .filter((r) => r.type === 'step').map((r) => r.gradNorm as number);
    expectClose(norms(join(dir, 'micro')), norms(join(dir, 'whole')), { rtol: 1e-4, atol: 1e-5 }, 'grad norms');
  });

  it('names the file for a corrupt image and a mismatched mask; --skip-bad counts them', async () => {
    const bad = join(dir, 'bad');
    for (const s of ['train', 'val']) {
      mkdirSync(join(bad, s, 'images'), { recursive: true });
      mkdirSync(join(bad, s, 'masks'), { recursive: true });
      const samples = await openDataset({ root: data, split: s });
      for (const x of samples) {
        await copyFile(x.image, join(bad, s, 'images', `${x.id}.jpg`));
        await copyFile(x.mask, join(bad, s, 'masks', `${x.id}.png`));
      }
    }
    const corrupt = join(bad, 'train', 'images', 'zz_corrupt.jpg');
    writeFileSync(corrupt, Buffer.from('definitely not a jpeg'));
    await sharp({ create: { width: 64, height: 64, channels: 3, background: '#000' } })
      .png().toFile(join(bad, 'train', 'masks', 'zz_corrupt.png'));
    await sharp({ create: { width: 50, height: 40, channels: 3, background: '#777' } })
      .jpeg().toFile(join(bad, 'train', 'images', 'zz_small.jpg'));
    await sharp({ create: { width: 64, height: 64, channels: 3, background: '#000' } })
      .png().toFile(join(bad, 'train', 'masks', 'zz_small.png'));

    // Each bad pair alone: the error names the file(s) and the problem.
    const only = async (keep: string, name: string) => {
      const root = join(dir, `bad-${name}`);
      await rm(root, { recursive: true, force: true });
      for (const s of ['train', 'val']) {
        for (const kind of ['images', 'masks']) {
          mkdirSync(join(root, s, kind), { recursive: true });
          for (const x of await openDataset({ root: bad, split: s })) {
            if (x.id.startsWith('zz_') && x.id !== keep) continue;
            const src = kind === 'images' ? x.image : x.mask;
            await copyFile(src, join(root, s, kind, src.split('/').pop()!));
          }
        }
      }
      return train(options(join(dir, `badrun-${name}`), { data: { root }, maxSteps: 2 }));
    };
    await expect(only('zz_corrupt', 'corrupt')).rejects.toThrow(/zz_corrupt\.jpg/);
    // It failed before its first checkpoint: the folder it created is removed.
    expect(existsSync(join(dir, 'badrun-corrupt'))).toBe(false);
    const mismatch = await only('zz_small', 'small').catch((e: Error) => e);
    expect(String(mismatch)).toMatch(/zz_small\.(jpg|png)/);
    expect(String(mismatch)).toMatch(/50x40/);
    expect(String(mismatch)).toMatch(/64x64/);

    const o = options(join(dir, 'badrun'), { data: { root: bad }, maxSteps: 2 });
    await expect(train(o)).rejects.toThrow(/zz_corrupt\.jpg|zz_small/);
    const r = await train({ ...o, skipBad: true });
    expect(r.steps).toBe(2);
    // Exactly the two bad pairs are dropped, each with its file and reason.
    expect(r.badSamples.map((b) => b.id).sort()).toEqual(['zz_corrupt', 'zz_small']);
    expect(r.badSamples.find((b) => b.id === 'zz_corrupt')?.file).toMatch(/zz_corrupt\.jpg$/);
    expect(r.badSamples.find((b) => b.id === 'zz_small')?.reason).toMatch(/50x40/);
  });
});
