/**
 * Fault injection: a process killed (SIGKILL, via SAM2_LORA_FAILPOINT) right after each write /
 * rename of a checkpoint save, in turn, must leave a run that `--resume` finishes, with a
 * readable best/ that never goes backwards. Two levels:
 *  - every position of every save of a short sequence of saves (the run folder alone, no GPU:
 *    one child process per position, then a resuming child);
 *  - real training runs of the CLI (`nano` at 32 px, synthetic cracks) killed at the positions
 *    that matter most, resumed in this process and compared with an uninterrupted run;
 * plus Ctrl-C (exit 130, resumable) and a divergent run (non-zero exit, clear message).
 * Children run the compiled CLI (dist/), rebuilt here when a source file is newer.
 */
import { type SpawnSyncReturns, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeSyntheticDataset } from '../src/data/synthetic.js';
import { closeGpu } from '../src/gpu/runtime.js';
import { loadResumeState } from '../src/train/checkpoint.js';
import { LOCK_FILE, RunDir } from '../src/train/run-dir.js';
import { type TrainOptions, train } from '../src/train/trainer.js';
import { loadAdapter } from '../src/adapter/adapter.js';
import { findCheckpoint } from '../src/adapter/manifest.js';
import { ensureBuilt } from './dist.js';
import { nanoTrainOptions } from './nano-run.js';

const REPO = resolve(import.meta.dirname, '..');
const DIST = join(REPO, 'dist');
const BIN = join(REPO, 'bin', 'sam2-lora.js');

let dir: string;
let data: string;

beforeAll(async () => {
  ensureBuilt('fault-injection', join(DIST, 'cli', 'train.js'));
  dir = mkdtempSync(join(tmpdir(), 'sam2-lora-fault-'));
  data = join(dir, 'data');
  await writeSyntheticDataset(data, { train: 4, val: 2, test: 0, size: 48, seed: 3 });
}, 240_000);

afterAll(async () => {
  await closeGpu();
  rmSync(dir, { recursive: true, force: true });
});

/** Runs node with a script, env extra; returns the finished process. */
function node(args: string[], env: Record<string, string> = {}): SpawnSyncReturns<string> {
  return spawnSync(process.execPath, args, {
    cwd: REPO,
    encoding: 'utf8',
    env: { ...process.env, ...env },
    timeout: 240_000,
  });
}

describe('every kill position of a sequence of saves (run folder, no GPU)', () => {
  // Epoch scores: the best is epoch 2's, later epochs are worse and must never replace it.
  const SCORES = [0.3, 0.6, 0.5];
  // The trainer's order per epoch: offer best/, then save last/; resumed, it continues after
  // the step last/ holds, as the trainer does. Run as a child (to be killed) and, resumed, here.
  const drive = `async (RunDir, loadResumeState, out, resume, say) => {
    const scores = ${JSON.stringify(SCORES)};
    const config = { format: 'sam2-lora-adapter', version: 1, size: 32, threshold: 0.5, baseCheckpoint: null,
      segmenter: { model: 'nano', head: 'fpn', mode: 'lora', seed: 0, lora: { r: 4, alpha: 32, dropout: 0, targets: ['qkv'] } } };
    const groups = [{ lr: 1e-3, weightDecay: 0, betas: [0.9, 0.999], eps: 1e-8 }];
    const ckpt = (step, withState) => ({
      adapter: new Map([['head.w', { shape: [2], data: Float32Array.of(step, -step) }]]), config,
      ...(withState ? {
        optimizer: { state: { step, paramSteps: [step], m: [Float32Array.of(step, 1)], v: [Float32Array.of(1, step)], groups }, names: ['head.w'] },
        trainer: { step, epoch: step, loader: { epoch: 0, cursor: 0, rngState: 1 }, rngState: 1, bestDice: -1,
          history: [], epochs: [], optimizer: { step, paramSteps: [step], groups } },
      } : {}),
    });
    const run = RunDir.open(out, { resume, force: false, say });
    let start = 0;
    if (resume) {
      const { last } = await run.recover();
      if (last) start = (await loadResumeState(last.path)).trainer.step;
      say('recovered last at ' + start + ', best score ' + (await run.bestScore()));
    }
    for (let step = start + 1; step <= scores.length; step++) {
      await run.offerBest(scores[step - 1], step, async () => ckpt(step, false));
      await run.saveLast(ckpt(step, true), step);
    }
    run.release();
  }`;
  const DRIVER = `
    const { RunDir } = await import(${JSON.stringify(join(DIST, 'train', 'run-dir.js'))});
    const { loadResumeState } = await import(${JSON.stringify(join(DIST, 'train', 'checkpoint.js'))});
    await (${drive})(RunDir, loadResumeState, process.argv[1], false, (s) => console.log(s));
  `;
  // eslint-disable-next-line no-new-func
  const resumeHere = (out: string, say: (s: string) => void): Promise<void> =>
    new Function(`return ${drive}`)()(RunDir, loadResumeState, out, true, say);

  it('resumes to the end with best/ = the best epoch, whatever the kill position', async () => {
    // The positions a full sequence passes through, from a traced run.
    const traced = join(dir, 'traced');
    const t = node(['--input-type=module', '-e', DRIVER, traced], { SAM2_LORA_FAILPOINT: 'trace' });
    expect(t.status, t.stderr).toBe(0);
    const positions = t.stderr.split('\n').filter((l) => l.startsWith('failpoint ')).map((l) => l.slice(10));
    // Per save: each file, manifest, rename-new, remove-old, and rename-old when one existed.
    // last/: 3 saves of 4 files; best/: 2 saves (epochs 1 and 2) of 2 files.
    expect(positions.filter((p) => p.startsWith('ckpt:last/')).length).toBe(3 * (4 + 3) + 2);
    expect(positions.filter((p) => p.startsWith('ckpt:best/')).length).toBe(2 * (2 + 3) + 1);
    const table: string[] = [];
    for (const fp of positions) {
      const out = join(dir, `seq-${fp.replace(/[:/]/g, '_')}`);
      const killed = node(['--input-type=module', '-e', DRIVER, out], { SAM2_LORA_FAILPOINT: fp });
      expect(killed.signal, `${fp}: the failpoint did not kill the driver`).toBe('SIGKILL');
      const left = readdirSync(out).filter((n) => n !== 'log.jsonl').sort().join(' ');
      const said: string[] = [];
      await resumeHere(out, (s) => said.push(s));
      const text = said.join('\n');
      // Recovery never goes back: at most the epoch in progress is redone.
      const at = Number(/recovered last at (\d+)/.exec(text)?.[1]);
      const bestThen = /best score (\S+)/.exec(text)?.[1];
      const bestKnown = Math.max(0, ...SCORES.slice(0, Math.max(0, at)));
      expect(bestThen === 'null' ? 0 : Number(bestThen), `${fp}: best/ regressed`).toBeGreaterThanOrEqual(bestKnown);
      const last = await findCheckpoint(join(out, 'last'));
      const best = await findCheckpoint(join(out, 'best'));
      expect(last?.found.path).toBe(join(out, 'last'));
      expect(last?.found.manifest?.step).toBe(SCORES.length);
      expect(best?.found.manifest?.score, `${fp}: best/ is not the best epoch`).toBe(0.6);
      expect((await loadAdapter(join(out, 'best'))).tensors.get('head.w')!.data[0]).toBe(2);
      expect(readdirSync(out).sort(), `${fp}: leftovers`).toEqual(['best', 'last', 'log.jsonl'].filter((n) => existsSync(join(out, n))));
      table.push(`${fp.padEnd(26)} left: ${left.padEnd(40)} resume: ${said.filter((s) => /recovered|removed|taking/.test(s)).length} notes, last step ${at} → ${SCORES.length}, best ${bestThen} → 0.6`);
    }
    console.log(`fault-injection (run folder, ${positions.length} positions):\n${table.join('\n')}`);
  }, 600_000);
});

const ARGS = ['--model', 'nano', '--head', 'fpn', '--size', '32', '--batch', '2', '--epochs', '2',
  '--lr', '2e-3', '--head-lr', '1e-2', '--no-eval'];

/** The CLI's run as library options: `auto` precision, as the CLI without --precision (f16 here). */
function options(out: string, over: Partial<TrainOptions> = {}): TrainOptions {
  return nanoTrainOptions(data, out, { size: 32, epochs: 2, augment: true, precision: 'auto', ...over }, { seed: 0 });
}

describe('training runs of the CLI killed inside a save', () => {
  let reference: { bestScore: number | null; adapter: Map<string, { data: Float32Array }> };

  beforeAll(async () => {
    // The uninterrupted run the resumed ones must match (resume is exact).
    const r = await train(options(join(dir, 'reference')));
    expect(r.steps).toBe(4);
    const best = await findCheckpoint(r.bestDir);
    reference = { bestScore: best!.found.manifest!.score, adapter: (await loadAdapter(r.lastDir)).tensors };
  }, 600_000);

  // Every position is covered above without a GPU; here the three that lose work today: a kill in
  // the first save (no last/ yet), between the renames of last/, and between those of best/.
  const PROBES = ['ckpt:last/write:2', 'ckpt:last/rename-old:1', 'ckpt:best/rename-old:1'];
  for (const fp of PROBES) {
    it(`killed at ${fp}: --resume finishes the run; best/ readable, equal to the uninterrupted run's`, async () => {
      const out = join(dir, `cli-${fp.replace(/[:/]/g, '_')}`);
      const killed = node([BIN, 'train', '--data', data, '--out', out, ...ARGS], { SAM2_LORA_FAILPOINT: fp });
      expect(killed.signal, `not killed:\n${killed.stderr.slice(-2000)}`).toBe('SIGKILL');
      const left = readdirSync(out).sort().join(' ');
      const r = await train({ ...options(out, { data: {} }), resume: out });
      expect(r.steps).toBe(4);
      const best = await findCheckpoint(r.bestDir);
      expect(best?.found.path).toBe(r.bestDir);
      expect(best?.found.manifest?.score).toBe(reference.bestScore);
      const last = await loadAdapter(r.lastDir);
      for (const [k, t] of reference.adapter) expect(last.tensors.get(k)?.data, k).toEqual(t.data);
      expect(readdirSync(out).filter((n) => /\.(tmp|old|stale)-/.test(n) || n === LOCK_FILE)).toEqual([]);
      console.log(`fault-injection ${fp}: left after kill: ${left}; resumed to step ${r.steps}, best ${best?.found.manifest?.score}`);
    }, 600_000);
  }

  it('Ctrl-C saves, exits 130 and releases the lock; --resume continues to the end', async () => {
    const out = join(dir, 'sigint');
    const child = spawn(process.execPath, [BIN, 'train', '--data', data, '--out', out, ...ARGS], { cwd: REPO });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const code = await new Promise<number | null>((done) => {
      const poll = setInterval(() => {
        // After the first step is logged: the next step finishes, is saved, and the process exits.
        const log = join(out, 'log.jsonl');
        if (existsSync(log) && readFileSync(log, 'utf8').includes('"type":"step"')) {
          clearInterval(poll);
          child.kill('SIGINT');
        }
      }, 200);
      child.on('exit', (c) => {
        clearInterval(poll);
        done(c);
      });
    });
    expect(code, stderr.slice(-2000)).toBe(130);
    expect(stderr).toMatch(/SIGINT: finishing this step and saving a checkpoint/);
    expect(existsSync(join(out, LOCK_FILE))).toBe(false);
    const saved = await findCheckpoint(join(out, 'last'));
    expect(saved?.found.manifest?.step).toBeGreaterThanOrEqual(1);
    // From the command line: flags typed that contradict the run are listed, defaults are not.
    const clash = node([BIN, 'train', '--resume', out, '--lr', '5', '--batch', '1', '--size', '32']);
    expect(clash.status).toBe(1);
    expect(clash.stderr).toContain("--lr 5 (the run's: 0.002)");
    expect(clash.stderr).toContain("--batch 1 (the run's: 2)");
    expect(clash.stderr).not.toContain('--size');
    // --resume R writes into R; a larger --epochs extends the run (2 steps an epoch).
    const more = node([BIN, 'train', '--resume', out, '--epochs', '3']);
    expect(more.status, more.stderr.slice(-2000)).toBe(0);
    expect((await findCheckpoint(join(out, 'last')))?.found.manifest?.step).toBe(6);
  }, 600_000);

  it('a diverging run (huge learning rate) stops with a non-zero exit, step, rates and checkpoint', () => {
    const out = join(dir, 'diverge');
    const r = node([BIN, 'train', '--data', data, '--out', out, ...ARGS.filter((a, i, all) =>
      !['--lr', '--head-lr'].includes(a) && !['--lr', '--head-lr'].includes(all[i - 1])), '--lr', '1e30', '--head-lr', '1e30']);
    expect(r.status, r.stderr.slice(-2000)).toBe(1);
    expect(r.stderr).toMatch(/training diverged at step \d+: .*learning rates 1\.00e\+30, 1\.00e\+30 .*last good checkpoint is none/);
    // It failed before its first checkpoint: the folder it created is gone.
    expect(existsSync(out)).toBe(false);
  }, 600_000);
});
