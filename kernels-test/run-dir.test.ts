/**
 * The run folder without a GPU: ownership (refuse an existing run, --force), the lock (a live
 * holder refused, a dead one taken over, released), crash states of a checkpoint swap recovered
 * to the newest complete checkpoint, best/ never going backwards, and corrupt resume files named.
 */
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync,
  writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type CheckpointData, loadResumeState, recoverCheckpoint, saveCheckpoint } from '../src/train/checkpoint.js';
import { LOCK_FILE, RunDir } from '../src/train/run-dir.js';
import { type AdapterConfig, loadAdapter } from '../src/adapter/adapter.js';
import { findCheckpoint } from '../src/adapter/manifest.js';

let root: string;
let n = 0;
const fresh = (name: string) => join(root, `${name}-${n++}`);

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), 'sam2-lora-rundir-'));
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

const config: AdapterConfig = {
  format: 'sam2-lora-adapter',
  version: 1,
  segmenter: {
    model: 'nano', head: 'fpn', mode: 'lora', seed: 0,
    lora: { r: 4, alpha: 32, dropout: 0, targets: ['qkv'] },
  },
  size: 32,
  threshold: 0.5,
  baseCheckpoint: null,
};

/** A checkpoint whose single tensor holds `value` (so which one survived is visible). */
function ckpt(step: number, value: number, withState = true): CheckpointData {
  const w = Float32Array.of(value, value + 1, value + 2);
  return {
    adapter: new Map([['head.w', { shape: [3], data: w }]]),
    config,
    ...(withState ? {
      optimizer: {
        state: { step, paramSteps: [step], m: [Float32Array.of(1, 2, 3)], v: [Float32Array.of(4, 5, 6)],
          groups: [{ lr: 1e-3, weightDecay: 0, betas: [0.9, 0.999], eps: 1e-8 }] },
        names: ['head.w'],
      },
      trainer: {
        step, epoch: step, loader: { epoch: 0, cursor: step, rngState: 1 }, rngState: 2, bestDice: -1,
        history: [], epochs: [], optimizer: { step, paramSteps: [step],
          groups: [{ lr: 1e-3, weightDecay: 0, betas: [0.9, 0.999], eps: 1e-8 }] },
      },
    } : {}),
  };
}

async function valueAt(dir: string): Promise<number> {
  return (await loadAdapter(dir)).tensors.get('head.w')!.data[0];
}

const quietSay = () => {};

describe('run folder ownership and lock', () => {
  it('refuses a folder that holds a run, naming it and suggesting --resume or a new folder', () => {
    const r = fresh('owned');
    mkdirSync(join(r, 'last'), { recursive: true });
    writeFileSync(join(r, 'log.jsonl'), '{}\n');
    expect(() => RunDir.open(r, { resume: false, force: false, say: quietSay }))
      .toThrow(new RegExp(`${r} already holds a run \\(last, log\\.jsonl\\).*--resume ${r}.*new --out folder.*--force`));
    // The refusal leaves no lock behind.
    expect(existsSync(join(r, LOCK_FILE))).toBe(false);
    // Resuming into it is allowed.
    RunDir.open(r, { resume: true, force: false, say: quietSay }).release();
  });

  it('--force removes the previous run (only its files) and says so', () => {
    const r = fresh('force');
    mkdirSync(join(r, 'best.tmp-77'), { recursive: true });
    mkdirSync(join(r, 'data'), { recursive: true });
    writeFileSync(join(r, 'log.jsonl'), '{}\n');
    const said: string[] = [];
    const run = RunDir.open(r, { resume: false, force: true, say: (s) => said.push(s) });
    expect(said.join('\n')).toMatch(/replacing the run in .*: removed best\.tmp-77, log\.jsonl/);
    expect(readdirSync(r).sort()).toEqual(['data', LOCK_FILE]);
    run.release();
    expect(readdirSync(r)).toEqual(['data']);
  });

  it('a folder without run files (e.g. only a data/ folder) is taken as is', () => {
    const r = fresh('data-only');
    mkdirSync(join(r, 'data'), { recursive: true });
    const run = RunDir.open(r, { resume: false, force: false, say: quietSay });
    expect(run.created).toBe(false);
    run.release();
  });

  it('a second owner is refused with who holds the lock; released, the folder is free again', () => {
    const r = fresh('locked');
    const a = RunDir.open(r, { resume: false, force: false, say: quietSay });
    const lock = JSON.parse(readFileSync(join(r, LOCK_FILE), 'utf8'));
    expect(lock).toMatchObject({ pid: process.pid, host: hostname() });
    expect(() => RunDir.open(r, { resume: true, force: false, say: quietSay }))
      .toThrow(new RegExp(`${r} is in use by process ${process.pid} on ${hostname()}.*delete ${join(r, LOCK_FILE)}`));
    a.release();
    expect(existsSync(join(r, LOCK_FILE))).toBe(false);
    RunDir.open(r, { resume: true, force: false, say: quietSay }).release();
  });

  it('a lock held by another live process is refused; one from a dead PID is taken over with a note', () => {
    const r = fresh('stale');
    mkdirSync(r, { recursive: true });
    // A live process that is not us: our parent (the vitest runner).
    writeFileSync(join(r, LOCK_FILE), JSON.stringify({ pid: process.ppid, host: hostname(), started: 'x' }));
    expect(() => RunDir.open(r, { resume: true, force: false, say: quietSay }))
      .toThrow(new RegExp(`in use by process ${process.ppid}`));
    // Another host: liveness cannot be checked, so it is refused too.
    writeFileSync(join(r, LOCK_FILE), JSON.stringify({ pid: 1, host: 'elsewhere', started: 'x' }));
    expect(() => RunDir.open(r, { resume: true, force: false, say: quietSay })).toThrow(/on elsewhere/);
    // A finished child's PID no longer exists (ESRCH).
    const dead = spawnSync(process.execPath, ['-e', '0']).pid!;
    writeFileSync(join(r, LOCK_FILE), JSON.stringify({ pid: dead, host: hostname(), started: 'then' }));
    const said: string[] = [];
    const run = RunDir.open(r, { resume: true, force: false, say: (s) => said.push(s) });
    expect(said.join('\n')).toMatch(new RegExp(`taking over the lock of process ${dead} .*no longer exists`));
    expect(JSON.parse(readFileSync(join(r, LOCK_FILE), 'utf8')).pid).toBe(process.pid);
    run.release();
  });

  it('discards a folder it created holding only its log and lock, nothing else', () => {
    const r = fresh('discard');
    const run = RunDir.open(r, { resume: false, force: false, say: quietSay });
    run.log({ type: 'start' });
    expect(run.discardIfEmpty()).toBe(true);
    expect(existsSync(r)).toBe(false);
    const r2 = fresh('keep');
    mkdirSync(r2);
    const old = RunDir.open(r2, { resume: false, force: false, say: quietSay });
    expect(old.discardIfEmpty()).toBe(false); // not created by it
    old.release();
    const r3 = fresh('keep3');
    const other = RunDir.open(r3, { resume: false, force: false, say: quietSay });
    writeFileSync(join(r3, 'notes.txt'), 'mine');
    expect(other.discardIfEmpty()).toBe(false); // holds something else
    other.release();
  });
});

describe('crash-safe checkpoint swap', () => {
  it('a save ends with a manifest listing each file with its size and sha256', async () => {
    const dir = join(fresh('manifest'), 'last');
    await saveCheckpoint(dir, ckpt(7, 1), { step: 7 });
    const m = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8'));
    expect(m.step).toBe(7);
    expect(m.files.map((f: { name: string }) => f.name).sort())
      .toEqual(['adapter.json', 'adapter.safetensors', 'optimizer.safetensors', 'trainer.json']);
    for (const f of m.files) expect(f.size).toBe(readFileSync(join(dir, f.name)).length);
    expect(readdirSync(join(dir, '..'))).toEqual(['last']);
  });

  /** Saves step 1 (value 1) and step 2 (value 2) into separate folders to assemble crash states. */
  async function twoSaves(r: string) {
    await saveCheckpoint(join(r, 'a', 'last'), ckpt(1, 1), { step: 1 });
    await saveCheckpoint(join(r, 'b', 'last'), ckpt(2, 2), { step: 2 });
    return { s1: join(r, 'a', 'last'), s2: join(r, 'b', 'last'), last: join(r, 'last') };
  }

  it('killed after moving last/ aside: the newer complete tmp is put in place, the old one removed', async () => {
    const r = fresh('after-rename-old');
    const { s1, s2, last } = await twoSaves(r);
    renameSync(s1, `${last}.old-41`);
    renameSync(s2, `${last}.tmp-41`);
    const said: string[] = [];
    const got = await recoverCheckpoint(last, (s) => said.push(s));
    expect(got?.manifest?.step).toBe(2);
    expect(await valueAt(last)).toBe(2);
    expect(existsSync(`${last}.old-41`) || existsSync(`${last}.tmp-41`)).toBe(false);
    expect(said.join('\n')).toMatch(/recovered .*last from last\.tmp-41 \(step 2\)/);
    expect(said.join('\n')).toMatch(/removed .*last\.old-41/);
    expect((await loadResumeState(last)).trainer.step).toBe(2);
  });

  it('killed while writing tmp: last/ stays, the incomplete tmp is removed with a note', async () => {
    const r = fresh('mid-write');
    const { s1, s2, last } = await twoSaves(r);
    renameSync(s1, last);
    renameSync(s2, `${last}.tmp-42`);
    rmSync(join(`${last}.tmp-42`, 'manifest.json'));
    rmSync(join(`${last}.tmp-42`, 'trainer.json'));
    const said: string[] = [];
    expect((await recoverCheckpoint(last, (s) => said.push(s)))?.manifest?.step).toBe(1);
    expect(await valueAt(last)).toBe(1);
    expect(existsSync(`${last}.tmp-42`)).toBe(false);
    expect(said.join('\n')).toMatch(/removed .*last\.tmp-42: left over/);
  });

  it('a corrupt last/ (checksum) falls back to a complete older copy', async () => {
    const r = fresh('corrupt');
    const { s1, s2, last } = await twoSaves(r);
    renameSync(s2, last);
    renameSync(s1, `${last}.old-43`);
    const f = join(last, 'adapter.safetensors');
    const bytes = readFileSync(f);
    bytes[bytes.length - 1] ^= 0xff;
    writeFileSync(f, bytes);
    const said: string[] = [];
    expect((await recoverCheckpoint(last, (s) => said.push(s)))?.manifest?.step).toBe(1);
    expect(said.join('\n')).toMatch(/removed .*last\.stale-\d+/);
    expect(await valueAt(last)).toBe(1);
  });

  it('no complete checkpoint at all: an error naming each folder and its problem, nothing removed', async () => {
    const r = fresh('none');
    const { s1, s2, last } = await twoSaves(r);
    renameSync(s1, last);
    renameSync(s2, `${last}.tmp-44`);
    rmSync(join(`${last}.tmp-44`, 'manifest.json'));
    writeFileSync(join(last, 'trainer.json'), '{"step": 999}\n');
    await expect(recoverCheckpoint(last, quietSay)).rejects.toThrow(
      /no complete checkpoint for .*last:\n.*last\/trainer\.json: 14 bytes, the manifest says \d+\n.*last\.tmp-44\/manifest\.json missing/,
    );
    expect(existsSync(`${last}.tmp-44`)).toBe(true);
  });

  it('a pre-manifest checkpoint (older runs) still opens', async () => {
    const r = fresh('legacy');
    const { s1, last } = await twoSaves(r);
    renameSync(s1, last);
    rmSync(join(last, 'manifest.json'));
    const f = await findCheckpoint(last);
    expect(f?.found).toEqual({ path: last, manifest: null });
  });
});

describe('best/ never goes backwards', () => {
  it('its own manifest decides, not trainer.json; NaN / null scores never count', async () => {
    const r = fresh('best');
    const run = RunDir.open(r, { resume: false, force: false, say: quietSay });
    const data = (v: number) => async () => ckpt(0, v, false);
    expect(await run.offerBest(0.5, 2, data(5))).toBe(true);
    // last/ claims no best yet (as after a crash between last/ and best/): irrelevant.
    await run.saveLast({ ...ckpt(4, 4), trainer: { ...ckpt(4, 4).trainer!, bestDice: -1 } }, 4);
    expect(await run.offerBest(0.4, 4, data(4))).toBe(false);
    expect(await run.offerBest(0.5, 4, data(4))).toBe(false);
    expect(await run.offerBest(NaN, 4, data(4))).toBe(false);
    expect(await run.offerBest(null, 4, data(4))).toBe(false);
    expect(await run.offerBest(undefined, 4, data(4))).toBe(false);
    expect(await run.bestScore()).toBe(0.5);
    expect(await valueAt(run.bestDir)).toBe(5);
    expect(await run.offerBest(0.6, 6, data(6))).toBe(true);
    expect(await valueAt(run.bestDir)).toBe(6);
    run.release();
  });

  it('a run that never validated keeps an unscored best/, which any real score then beats', async () => {
    const r = fresh('unscored');
    const run = RunDir.open(r, { resume: false, force: false, say: quietSay });
    await run.ensureBest(3, async () => ckpt(3, 3, false));
    expect(await run.bestScore()).toBe(null);
    await run.ensureBest(4, async () => ckpt(4, 4, false));
    expect(await valueAt(run.bestDir)).toBe(3);
    expect(await run.offerBest(0, 5, async () => ckpt(5, 5, false))).toBe(true);
    expect(await run.bestScore()).toBe(0);
    run.release();
  });

  it('recovery of an interrupted best/ swap keeps the better score', async () => {
    const r = fresh('best-crash');
    await saveCheckpoint(join(r, 'x', 'best'), ckpt(0, 5, false), { step: 2, score: 0.5 });
    await saveCheckpoint(join(r, 'y', 'best'), ckpt(0, 6, false), { step: 4, score: 0.6 });
    mkdirSync(r, { recursive: true });
    cpSync(join(r, 'x', 'best'), join(r, 'best.old-9'), { recursive: true });
    cpSync(join(r, 'y', 'best'), join(r, 'best.tmp-9'), { recursive: true });
    const run = RunDir.open(r, { resume: true, force: false, say: quietSay });
    await run.recover();
    expect(await run.bestScore()).toBe(0.6);
    expect(await run.offerBest(0.55, 6, async () => ckpt(0, 7, false))).toBe(false);
    run.release();
  });
});

describe('corrupt resume files are named with the problem', () => {
  it('trainer.json: invalid JSON, or a field of the wrong kind', async () => {
    const dir = join(fresh('corrupt-trainer'), 'last');
    await saveCheckpoint(dir, ckpt(3, 3), { step: 3 });
    const tj = join(dir, 'trainer.json');
    writeFileSync(tj, '{"step": 3, "hist');
    await expect(loadResumeState(dir)).rejects.toThrow(new RegExp(`${tj}: not valid JSON`));
    writeFileSync(tj, '{"step": "three", "history": []}');
    await expect(loadResumeState(dir)).rejects.toThrow(new RegExp(`${tj}: step is "three", not a count`));
    writeFileSync(tj, '[1, 2]');
    await expect(loadResumeState(dir)).rejects.toThrow(new RegExp(`${tj}: step is undefined`));
  });

  it('optimizer.safetensors: truncated or missing', async () => {
    const dir = join(fresh('corrupt-optim'), 'last');
    await saveCheckpoint(dir, ckpt(3, 3), { step: 3 });
    const of = join(dir, 'optimizer.safetensors');
    writeFileSync(of, readFileSync(of).subarray(0, 20));
    await expect(loadResumeState(dir)).rejects.toThrow(new RegExp(of));
    rmSync(of);
    await expect(loadResumeState(dir)).rejects.toThrow(new RegExp(`${of}: missing`));
  });
});
