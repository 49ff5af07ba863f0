/**
 * Distributed prediction for real: Debian's redis-server started here on a free loopback port,
 * the compiled CLI (dist/, rebuilt when a source file is newer) as two `sam2-lora worker`
 * processes and a `predict --queue --wait`, over 20 small photos (a.jpg / a.png name clash
 * included) and one corrupt photo, with the `nano` model at 32 px. One worker is kill -9'd
 * mid-job (its outputs written to temporary files, not yet renamed); BullMQ's stalled-job check
 * hands the job to the other worker. Every output must exist exactly once, with no temporary
 * file left, byte-identical to a single-process `predict` of the same photos; the corrupt photo
 * must sit in the failed set with its error after 3 attempts.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { hostname, tmpdir } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { Queue } from 'bullmq';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Engine } from '../src/autograd/tensor.js';
import { generateCrackSample, writeCrackSample } from '../src/data/synthetic.js';
import { closeGpu, getGpu } from '../src/gpu/runtime.js';
import { DEFAULT_LORA, Segmenter } from '../src/model/segmenter.js';
import { checkReachable } from '../src/queue/redis.js';
import { type PredictJobData, QUEUE_NAME } from '../src/queue/schema.js';
import { isTempName } from '../src/queue/storage.js';
import { saveCheckpoint } from '../src/train/checkpoint.js';
import { ensureBuilt } from './dist.js';
import { SEED, rng } from './helpers.js';

const REDIS = '/usr/bin/redis-server';
const REPO = resolve(import.meta.dirname, '..');
const BIN = join(REPO, 'bin', 'sam2-lora.js');
const BUILT = join(REPO, 'dist', 'cli', 'worker.js');
if (!existsSync(REDIS)) {
  console.warn(`queue-redis: SKIPPED: ${REDIS} is absent (apt-get install redis-server; .ci/run does)`);
}

let dir: string;
let redis: ChildProcess | undefined;
let url: string;
const children: ChildProcess[] = [];

function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => res(port));
    });
  });
}

/** A child running the CLI, its output collected; `saw(re)` resolves once a line matches. */
function cli(args: string[], env: Record<string, string> = {}) {
  const child = spawn(process.execPath, [BIN, ...args], { cwd: REPO, env: { ...process.env, ...env } });
  children.push(child);
  let out = '';
  const waiters: { re: RegExp; res: (m: RegExpExecArray) => void }[] = [];
  const feed = (b: Buffer) => {
    out += b.toString();
    for (const w of waiters.splice(0)) {
      const m = w.re.exec(out);
      if (m) w.res(m);
      else waiters.push(w);
    }
  };
  child.stdout!.on('data', feed);
  child.stderr!.on('data', feed);
  const exited = new Promise<{ code: number | null; signal: string | null }>((res) =>
    child.once('exit', (code, signal) => res({ code, signal })));
  return {
    child,
    exited,
    output: () => out,
    saw: (re: RegExp, ms: number) => new Promise<RegExpExecArray>((res, rej) => {
      const m = re.exec(out);
      if (m) return res(m);
      waiters.push({ re, res });
      setTimeout(() => rej(new Error(`no ${re} within ${ms} ms; output:\n${out}`)), ms).unref();
    }),
  };
}

async function waitFor<T>(what: string, ms: number, f: () => Promise<T | undefined>): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

beforeAll(async () => {
  if (!existsSync(REDIS)) return;
  ensureBuilt('queue-redis', BUILT);
  dir = mkdtempSync(join(tmpdir(), 'sam2-lora-queue-'));

  const port = await freePort();
  url = `redis://127.0.0.1:${port}/0`;
  redis = spawn(REDIS, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    { stdio: 'ignore' });
  await waitFor('redis-server to answer', 15_000, () => checkReachable(url).then(() => true, () => undefined));

  // A nano adapter at 32 px with non-zero LoRA B (seeded), so LoRA changes every output.
  console.log(`queue-redis: seed ${SEED}`);
  const r = rng(SEED);
  const engine = new Engine(await getGpu());
  const seg = { model: 'nano' as const, head: 'fpn' as const, mode: 'lora' as const, lora: DEFAULT_LORA, seed: SEED % 1000 };
  const model = new Segmenter(engine, seg);
  const names = model.trainable().map(([n]) => n);
  const adapter = await model.stateDict((n) => names.includes(n));
  for (const [k, t] of adapter) if (k.includes('lora_B')) for (let i = 0; i < t.data.length; i++) t.data[i] = (r() - 0.5) * 0.2;
  await saveCheckpoint(join(dir, 'adapter'), {
    adapter,
    config: { format: 'sam2-lora-adapter', version: 1, segmenter: seg, size: 32, threshold: 0.5, baseCheckpoint: null },
  });
  await closeGpu();

  // 18 photos p00..p17, dup.jpg + dup.png (distinct output names), and a corrupt bad.jpg.
  const photos = join(dir, 'photos');
  mkdirSync(photos);
  for (let i = 0; i < 19; i++) {
    const s = generateCrackSample(SEED + i, 32);
    const name = i < 18 ? `p${String(i).padStart(2, '0')}` : 'dup';
    await writeCrackSample(s, join(photos, `${name}.jpg`), join(dir, `${name}.mask-truth.png`));
  }
  const s = generateCrackSample(SEED + 99, 32);
  await sharp(Buffer.from(s.image), { raw: { width: 32, height: 32, channels: 3 } }).png().toFile(join(photos, 'dup.png'));
  writeFileSync(join(photos, 'bad.jpg'), 'this is not a JPEG');
}, 240_000);

afterAll(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  redis?.kill('SIGKILL');
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe.skipIf(!existsSync(REDIS))('distributed prediction on BullMQ + redis-server', () => {
  it('two workers, one kill -9ed mid-job: each output once, byte-identical to a local predict; the corrupt photo fails after 3 attempts', async () => {
    const photos = join(dir, 'photos');
    const adapter = join(dir, 'adapter');
    const out = join(dir, 'queued');
    const ref = join(dir, 'local');
    // Short locks so a dead worker's job comes back within seconds.
    const env = { SAM2_LORA_QUEUE_LOCK_MS: '3000', SAM2_LORA_QUEUE_STALLED_MS: '1000' };
    const a = cli(['worker', '--queue', url], { ...env, SAM2_LORA_QUEUE_FAILPOINT: 'hang:3' });
    const local = cli(['predict', photos, '--adapter', adapter, '--out', ref, '--skip-bad']);
    const wait = cli(['predict', photos, '--adapter', adapter, '--out', out, '--queue', url, '--wait']);
    // B starts once A has finished a job, so A surely reaches its 3rd job before B takes them all.
    await a.saw(/: done in /, 120_000);
    const b = cli(['worker', '--queue', url], env);

    // Worker A stops between writing its 3rd job's temporary outputs and renaming them: kill it.
    const [, killedId] = await a.saw(/failpoint hang:3 job (\S+)/, 120_000);
    const probe = new Queue(QUEUE_NAME, { connection: { url } });
    const killedOut = basename(((await probe.getJob(killedId))!.data as PredictJobData).out);
    await probe.close();
    const temps = readdirSync(out).filter((f) => isTempName(f) && f.startsWith(`.${killedOut}.`));
    expect(temps.length, `temporary outputs of the job being killed: ${temps}`).toBe(3);
    a.child.kill('SIGKILL');
    expect((await a.exited).signal).toBe('SIGKILL');

    const done = await Promise.race([
      wait.exited,
      new Promise<never>((_, rej) => setTimeout(() => rej(new Error(`predict --wait still running:\n${wait.output()}\nworker b:\n${b.output()}`)), 150_000).unref()),
    ]);
    const w = wait.output();
    expect(done.code, w).toBe(1); // one photo failed
    expect(w).toContain('20 of 21 photo(s) predicted');
    expect(w).toMatch(/1 photo\(s\) failed:\n\s+\S+bad\.jpg: \S+bad\.jpg: unreadable image \(.*\) \(3 attempt\(s\)\)/);
    expect((await local.exited).code, local.output()).toBe(0);

    // Each output once, no temporary file, byte-identical to the single-process predict.
    const expected = readdirSync(ref).sort();
    expect(expected.length).toBe(60);
    expect(expected).toContain('dup.jpg.mask.png');
    expect(expected).toContain('dup.png.overlay.png');
    expect(readdirSync(out).sort()).toEqual(expected);
    for (const f of expected) expect(readFileSync(join(out, f)).equals(readFileSync(join(ref, f))), f).toBe(true);

    // The killed job was recovered from the stall and finished by worker B.
    const queue = new Queue(QUEUE_NAME, { connection: { url } });
    try {
      const job = (await queue.getJob(killedId))!;
      expect(await job.getState()).toBe('completed');
      expect(job.processedBy).toBe(`${hostname()}:${b.child.pid}`);
      expect(job.stalledCounter).toBeGreaterThanOrEqual(1);
      expect(b.output()).toContain(`job ${killedId} `);

      // `queue status` shows the counts and the failure with its error.
      const st = spawnSync(process.execPath, [BIN, 'queue', 'status', url], { encoding: 'utf8' });
      expect(st.status, st.stderr).toBe(0);
      expect(st.stdout).toContain('0 waiting, 0 active, 20 completed, 1 failed, 0 delayed');
      expect(st.stdout).toMatch(/bad\.jpg: \S+bad\.jpg: unreadable image .*\(3 attempt\(s\)/);

      // Enqueueing again adds nothing: finished photos are done, the failed one is retried.
      const mtimes = expected.map((f) => statSync(join(out, f)).mtimeMs);
      const again = spawnSync(process.execPath, [BIN, 'predict', photos, '--adapter', adapter, '--out', out,
        '--queue', url], { encoding: 'utf8' });
      expect(again.status, again.stderr).toBe(0);
      expect(again.stdout).toContain('queued 21 photo(s)');
      expect(again.stdout).toContain('(0 new, 20 already done, 1 failed before: retried)');
      await waitFor('the retried photo to fail again', 60_000, async () => {
        const c = await queue.getJobCounts('waiting', 'active', 'failed', 'completed');
        return c.failed === 1 && !c.waiting && !c.active ? c : undefined;
      });
      expect(await queue.getJobCounts('completed')).toEqual({ completed: 20 });
      expect(expected.map((f) => statSync(join(out, f)).mtimeMs)).toEqual(mtimes);

      // Other options into the same outputs are refused (they would race).
      const clash = spawnSync(process.execPath, [BIN, 'predict', photos, '--adapter', adapter, '--out', out,
        '--queue', url, '--threshold', '0.3'], { encoding: 'utf8' });
      expect(clash.status).toBe(1);
      expect(clash.stderr).toContain('already queued into');
    } finally {
      await queue.close();
    }

    // SIGTERM: the worker closes (no job active), exit 0.
    b.child.kill('SIGTERM');
    expect((await b.exited).code, b.output()).toBe(0);
    expect(b.output()).toMatch(/SIGTERM: finishing the active job\(s\), then closing[\s\S]*closed: \d+ completed, \d+ failed/);
  }, 300_000);

  it('an unreachable Redis is one clear error, not endless retries', async () => {
    const port = await freePort();
    const r = spawnSync(process.execPath, [BIN, 'queue', 'status', `redis://127.0.0.1:${port}/0`], { encoding: 'utf8' });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`cannot reach Redis at redis://127\\.0\\.0\\.1:${port}/0: .*ECONNREFUSED`));
  });
});
