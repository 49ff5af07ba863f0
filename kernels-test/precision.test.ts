/**
 * `--precision f16|f32`: which precision a command runs at and why (model/precision.ts), the
 * flag on every command that runs the model, its errors, and a resumed run keeping its own.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { getGpu } from '../src/gpu/runtime.js';
import { defaultPrecision, resolvePrecision } from '../src/model/precision.js';
import { type TrainOptions, train } from '../src/train/trainer.js';
import { BIN, REPO, ensureBuilt } from './dist.js';
import { nanoTrainOptions, syntheticRunDir } from './nano-run.js';

// Whether f16 runs on this machine's adapter (the tests of each case skip the other, saying so).
const gpuNow = await getGpu();
const f16Why = !gpuNow.features.has('shader-f16') ? `${gpuNow.info.description} lacks shader-f16` : null;
if (f16Why) console.warn(`precision.test: f16 end-to-end tests skipped: ${f16Why}`);
else console.warn('precision.test: f16 runs here: the refusal of a forced f16 is tested on fake devices only');

const device = (description: string, features: string[]) =>
  ({ features: new Set(features), info: { description } });
const withF16 = device('GPU A', ['shader-f16', 'timestamp-query']);
const without = device('GPU B', ['timestamp-query']);

describe('which precision, and why', () => {
  it('absent is f32 (library callers keep the f32 path); f32 is always possible', () => {
    expect(resolvePrecision(undefined, [without]).precision).toBe('f32');
    expect(resolvePrecision('f32', [withF16, without])).toEqual({ precision: 'f32', reason: 'asked for (--precision f32)' });
  });

  it('auto: f32 where a device lacks shader-f16, naming it', () => {
    expect(defaultPrecision([withF16, without])).toEqual({ precision: 'f32', reason: 'GPU B does not offer shader-f16' });
    expect(resolvePrecision('auto', [without]).precision).toBe('f32');
  });

  it('auto on shader-f16 devices: f16', () => {
    expect(defaultPrecision([withF16])).toEqual({ precision: 'f16',
      reason: 'the adapter offers shader-f16 (mixed precision: f16 encoder, f32 head, LoRA and optimizer)' });
    expect(resolvePrecision('auto', [withF16, withF16]).precision).toBe('f16');
    expect(resolvePrecision('f16', [withF16])).toEqual({ precision: 'f16', reason: 'asked for (--precision f16)' });
  });

  it('forcing f16 on a device without shader-f16 is a clear error', () => {
    expect(() => resolvePrecision('f16', [withF16, without]))
      .toThrow('--precision f16: GPU B does not offer the WebGPU feature shader-f16 (see `sam2-lora info`); use --precision f32');
    expect(() => resolvePrecision('f8' as 'f16', [withF16])).toThrow('--precision must be one of f16, f32, got f8');
  });
});

beforeAll(() => ensureBuilt('precision', join(REPO, 'dist', 'cli', 'train.js')));
const { dir, data } = syntheticRunDir('precision', { train: 4, val: 2, test: 2, size: 64, seed: 3 });

/** The CLI as a user runs it (lavapipe on 2 shared cores: a few nano steps can take a minute). */
function cli(args: string[]) {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', cwd: REPO, timeout: 280_000 });
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

describe('--precision on the command line', () => {
  it('train, eval, predict and encode take it; only f16 and f32', () => {
    for (const cmd of [['train'], ['eval'], ['predict'], ['encode']]) {
      const help = cli([...cmd, '--help']);
      expect(help.stdout, cmd.join(' ')).toMatch(/--precision <p>\s+f16: mixed precision/);
    }
    const bad = cli(['train', '--precision', 'bf16', '--data', data, '--out', join(dir, 'bad')]);
    expect(bad.status).not.toBe(0);
    expect(bad.stderr).toMatch(/option '--precision <p>' argument 'bf16' is invalid. Allowed choices are f16, f32/);
  });

  it('info says the default precision and why (also in --json)', async () => {
    const gpu = await getGpu();
    const expected = defaultPrecision([gpu]);
    const r = cli(['info']);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain(`precision     ${expected.precision} by default: ${expected.reason}`);
    const j = cli(['info', '--json', '-']);
    expect(JSON.parse(j.stdout).precision).toEqual(expected);
  });

  it.skipIf(f16Why === null)('--precision f16 where it cannot run says why and writes nothing', async () => {
    const out = join(dir, 'forced');
    const r = cli(['train', '--precision', 'f16', '--model', 'nano', '--data', data, '--out', out,
      '--size', '32', '--max-steps', '1', '--no-eval']);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/sam2-lora: --precision f16: .* does not offer the WebGPU feature shader-f16 \(see `sam2-lora info`\); use --precision f32/);
    expect(existsSync(out), 'the folder the run made is removed').toBe(false);
  });
});

describe('a run records its precision and a resumed run keeps it', () => {
  const options = (out: string, over: Partial<TrainOptions> = {}) =>
    nanoTrainOptions(data, out, { size: 32, maxSteps: 2, ...over });

  it('recorded in the log, trainer.json and the result', async () => {
    const out = join(dir, 'f32');
    const r = await train(options(out, { precision: 'f32' }));
    expect(r.precision).toBe('f32');
    const start = JSON.parse(readFileSync(join(out, 'log.jsonl'), 'utf8').split('\n')[0]);
    expect(start.run.options.precision).toBe('f32');
    expect(JSON.parse(readFileSync(join(r.lastDir, 'trainer.json'), 'utf8')).options.precision).toBe('f32');
  });

  it('an explicit other precision on resume is a conflict; none given keeps the run\'s', async () => {
    const out = join(dir, 'f32');
    const err = await train(options(out, { resume: out, maxSteps: 3, precision: 'f16',
      explicit: new Map([['precision', '--precision'], ['maxSteps', '--max-steps']]) }))
      .catch((e: Error) => e.message);
    expect(err).toMatch(/this option differs from the run's own.*\n {2}--precision f16 \(the run's: f32\)/);
    // `auto` (the CLI without --precision) takes the run's own.
    const r = await train(options(out, { resume: out, maxSteps: 3, precision: 'auto',
      explicit: new Map([['maxSteps', '--max-steps']]) }));
    expect(r.steps).toBe(3);
    expect(r.precision).toBe('f32');
  });

  it('a run recorded before --precision existed resumes in f32', async () => {
    const out = join(dir, 'legacy');
    await train(options(out));
    // As written before: no precision among the saved options.
    for (const f of [join(out, 'log.jsonl')]) {
      writeFileSync(f, readFileSync(f, 'utf8').replace(/,"precision":"f32"/g, ''));
    }
    const tj = join(out, 'last', 'trainer.json');
    const state = JSON.parse(readFileSync(tj, 'utf8'));
    delete state.options.precision;
    writeFileSync(tj, JSON.stringify(state));
    // The manifest's hash of trainer.json no longer matches: rewrite it as a save would have.
    const { sha256 } = await import('../src/adapter/manifest.js');
    const mf = join(out, 'last', 'manifest.json');
    const manifest = JSON.parse(readFileSync(mf, 'utf8'));
    for (const f of manifest.files) {
      if (f.name === 'trainer.json') Object.assign(f, { size: readFileSync(tj).length, sha256: await sha256(tj) });
    }
    writeFileSync(mf, JSON.stringify(manifest));
    const err = await train(options(out, { resume: out, maxSteps: 3, precision: 'f16',
      explicit: new Map([['precision', '--precision']]) })).catch((e: Error) => e.message);
    expect(err).toContain("--precision f16 (the run's: f32)");
    const r = await train(options(out, { resume: out, maxSteps: 3, precision: 'auto' }));
    expect(r.precision).toBe('f32');
  });
});

// The f16 path end to end through the CLI, as a user runs it: train, resume, eval, predict,
// merge (always f32 out). Needs an adapter with shader-f16.

describe.skipIf(f16Why !== null)('train --precision f16 end to end (nano, CLI)', () => {
  it('trains, resumes, evaluates, predicts and merges to an f32 checkpoint', { timeout: 1_200_000 }, async () => {
    const out = join(dir, 'f16-run');
    const common = ['--model', 'nano', '--data', data, '--size', '64', '--batch', '2', '--lr', '2e-3',
      '--head-lr', '1e-2', '--no-eval', '--no-augment'];
    const first = cli(['train', ...common, '--precision', 'f16', '--max-steps', '2', '--out', out]);
    expect([first.status, first.signal], first.stderr).toEqual([0, null]);
    expect(first.stdout).toMatch(/precision: f16 \(asked for \(--precision f16\)\)/);
    expect(first.stdout).toMatch(/dynamic loss scaling: initial scale 65536/);
    // Resume without --precision keeps f16; an explicit f32 is refused.
    const conflict = cli(['train', '--resume', out, '--max-steps', '4', '--precision', 'f32']);
    expect(conflict.status).toBe(1);
    expect(conflict.stderr).toContain("--precision f32 (the run's: f16)");
    const resumed = cli(['train', '--resume', out, '--max-steps', '4', '--no-eval']);
    expect([resumed.status, resumed.signal], resumed.stderr).toEqual([0, null]);
    expect(resumed.stdout).toMatch(/precision: f16/);
    const log = readFileSync(join(out, 'log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    const steps = log.filter((r) => r.type === 'step');
    expect(steps.map((r) => r.step)).toEqual([1, 2, 3, 4]);
    for (const r of steps) {
      expect(Number.isFinite(r.loss) && Number.isFinite(r.gradNorm), JSON.stringify(r)).toBe(true);
      expect(r.lossScale).toBeGreaterThan(0);
    }
    const state = JSON.parse(readFileSync(join(out, 'last', 'trainer.json'), 'utf8'));
    expect(state.options.precision).toBe('f16');
    expect(state.lossScale.scale).toBe(steps.at(-1).lossScale);
    // The adapter (LoRA + head) is f32 on disk.
    const { listSafetensors } = await import('../src/io/safetensors.js');
    const adapterDtypes = (await listSafetensors(join(out, 'best', 'adapter.safetensors'))).entries.map((e) => e.dtype);
    expect(new Set(adapterDtypes)).toEqual(new Set(['F32']));

    const evalJson = join(dir, 'f16-eval.json');
    const ev = cli(['eval', '--adapter', join(out, 'best'), '--data', data, '--precision', 'f16', '--json', evalJson]);
    expect(ev.status, ev.stderr).toBe(0);
    const ev32 = cli(['eval', '--adapter', join(out, 'best'), '--data', data, '--precision', 'f32', '--json', `${evalJson}.f32`]);
    expect(ev32.status, ev32.stderr).toBe(0);
    const dice = (f: string) => (Object.values(JSON.parse(readFileSync(f, 'utf8')))[0] as { dice: number }).dice;
    // The same adapter scored with an f16 and an f32 encoder: a few boundary pixels may flip.
    expect(Math.abs(dice(evalJson) - dice(`${evalJson}.f32`))).toBeLessThan(0.01);

    const pred = cli(['predict', join(data, 'test', 'images'), '--adapter', join(out, 'best'),
      '--precision', 'f16', '--out', join(dir, 'f16-pred')]);
    expect(pred.status, pred.stderr).toBe(0);
    expect(pred.stdout).toMatch(/predicted 2 of 2 photo\(s\)/);

    const merged = join(dir, 'f16-merged.safetensors');
    const m = cli(['merge', '--adapter', join(out, 'best'), '--out', merged]);
    expect(m.status, m.stderr).toBe(0);
    const entries = (await listSafetensors(merged)).entries;
    expect(entries.length).toBeGreaterThan(0);
    expect(entries.filter((e) => e.dtype !== 'F32').map((e) => e.name)).toEqual([]);
  });

  it('a resumed f16 run on an adapter without shader-f16 is refused, saying why', async () => {
    const out = join(dir, 'f16-lib');
    const opts = nanoTrainOptions(data, out, { size: 32, maxSteps: 2, precision: 'f16' });
    expect((await train(opts)).precision).toBe('f16');
    // The same device, as one without the feature would present itself.
    const features = gpuNow.features as Set<string>;
    features.delete('shader-f16');
    try {
      const err = await train({ ...opts, maxSteps: 3, precision: 'auto', resume: out }).catch((e: Error) => e.message);
      expect(err).toBe(`--resume ${out}: the run trains in f16, which a resumed run keeps, but ` +
        `${gpuNow.info.description} does not offer shader-f16: resume it on an adapter that does (see \`sam2-lora info\`)`);
    } finally {
      features.add('shader-f16');
    }
  });

  it('--mode full in f16 trains f32 master weights (saved as f32) on f16 activations', async () => {
    const out = join(dir, 'f16-full');
    const r = await train(nanoTrainOptions(data, out, { size: 32, maxSteps: 2, precision: 'f16' }, { mode: 'full' }));
    expect(r.steps).toBe(2);
    expect(r.history.every((h) => Number.isFinite(h.loss))).toBe(true);
    const { listSafetensors } = await import('../src/io/safetensors.js');
    const entries = (await listSafetensors(join(r.lastDir, 'adapter.safetensors'))).entries;
    // The whole encoder (but the frozen pos_embed) and the head: every tensor f32 on disk.
    expect(entries.some((e) => e.name === 'image_encoder.trunk.blocks.0.attn.qkv.weight')).toBe(true);
    expect(entries.filter((e) => e.dtype !== 'F32').map((e) => e.name)).toEqual([]);
  });
});
