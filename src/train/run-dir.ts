/**
 * A run folder: owned by one process at a time (a lock file created exclusively, holding the PID
 * and host), never silently reused (an existing run needs --resume or --force), holding the
 * crash-safe `last/` (resume) and `best/` (best validation Dice) checkpoints and the JSONL log.
 * The best score is read from best/'s own manifest, so best/ never goes backwards.
 */
import { appendFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, unlinkSync,
  writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { type CheckpointData, recoverCheckpoint, saveCheckpoint } from './checkpoint.js';
import { findCheckpoint, type FoundCheckpoint } from '../adapter/manifest.js';

export const LOCK_FILE = 'run.lock';

/** Entries that mean a folder holds a run (besides the last.* / best.* checkpoint siblings). */
const RUN_FILES = ['log.jsonl', 'history.json', 'loss.png', 'dice.png', 'test-metrics.json', 'predict',
  'report'];
const isRunEntry = (n: string) =>
  RUN_FILES.includes(n) || /^(last|best)(\.(old|tmp|stale)-\d+)?$/.test(n);

export class RunDirError extends Error {}

interface LockInfo {
  pid: number;
  host: string;
  started: string;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    // EPERM: it exists but belongs to someone else.
    return (e as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}

export interface RunDirOptions {
  /** The folder continues the run it holds (--resume into it). */
  resume: boolean;
  /** Replace a run the folder holds (--force): its files are removed first. */
  force: boolean;
  say: (s: string) => void;
}

export class RunDir {
  readonly lastDir: string;
  readonly bestDir: string;
  private readonly lockPath: string;
  private locked = false;
  private readonly onExit = () => this.release();

  private constructor(
    readonly path: string,
    /** This process created the folder (so it may remove it if the run fails early). */
    readonly created: boolean,
    private readonly say: (s: string) => void,
  ) {
    this.lastDir = join(path, 'last');
    this.bestDir = join(path, 'best');
    this.lockPath = join(path, LOCK_FILE);
  }

  /** Takes the folder: creates it, locks it, refuses an existing run unless resuming or forced. */
  static open(path: string, opts: RunDirOptions): RunDir {
    const created = !existsSync(path);
    try {
      mkdirSync(path, { recursive: true });
    } catch (e) {
      throw new RunDirError(`${path}: cannot create the run folder (${(e as Error).message})`);
    }
    const run = new RunDir(path, created, opts.say);
    run.lock();
    try {
      const entries = run.runEntries();
      if (!opts.resume && entries.length > 0) {
        if (!opts.force) {
          throw new RunDirError(
            `${path} already holds a run (${entries.join(', ')}): continue it with --resume ` +
              `${path}, choose a new --out folder, or replace it with --force`,
          );
        }
        for (const e of entries) rmSync(join(path, e), { recursive: true, force: true });
        opts.say(`replacing the run in ${path}: removed ${entries.join(', ')}`);
      }
    } catch (e) {
      run.release();
      throw e;
    }
    return run;
  }

  /** The folder's entries that belong to a run. */
  runEntries(): string[] {
    return readdirSync(this.path).filter(isRunEntry).sort();
  }

  private lock(): void {
    const info: LockInfo = { pid: process.pid, host: hostname(), started: new Date().toISOString() };
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        writeFileSync(this.lockPath, `${JSON.stringify(info)}\n`, { flag: 'wx' });
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') {
          throw new RunDirError(`${this.lockPath}: cannot create the lock (${(e as Error).message})`);
        }
        const held = this.readLock();
        if (held && held.host === info.host && !pidAlive(held.pid)) {
          // Same host and the PID is gone: a killed run. Take its lock over.
          rmSync(this.lockPath, { force: true });
          this.say(`${this.path}: taking over the lock of process ${held.pid} (started ` +
            `${held.started}), which no longer exists`);
          continue;
        }
        const who = held
          ? `process ${held.pid} on ${held.host} (since ${held.started})`
          : 'another process (unreadable lock)';
        throw new RunDirError(
          `${this.path} is in use by ${who}: two runs must not write one folder. Wait for it, ` +
            `or, if that process is gone, delete ${this.lockPath}`,
        );
      }
      // Two takers of one stale lock: only the one whose PID is in the file goes on.
      if (this.readLock()?.pid !== process.pid) break;
      this.locked = true;
      process.on('exit', this.onExit);
      return;
    }
    throw new RunDirError(`${this.path}: another process took the lock at the same moment`);
  }

  private readLock(): LockInfo | null {
    try {
      const v = JSON.parse(readFileSync(this.lockPath, 'utf8')) as LockInfo;
      return typeof v.pid === 'number' && typeof v.host === 'string' ? v : null;
    } catch {
      return null;
    }
  }

  /** Drops the lock (idempotent; also runs on process exit). */
  release(): void {
    if (!this.locked) return;
    this.locked = false;
    process.off('exit', this.onExit);
    try {
      if (this.readLock()?.pid === process.pid) unlinkSync(this.lockPath);
    } catch {
      // already gone
    }
  }

  /**
   * Removes the folder if this process created it and it holds nothing but this run's log and
   * lock (a run that failed before its first checkpoint). Returns whether it did.
   */
  discardIfEmpty(): boolean {
    if (!this.created || !existsSync(this.path)) return false;
    const left = readdirSync(this.path).filter((n) => n !== LOCK_FILE && n !== 'log.jsonl');
    if (left.length > 0) return false;
    this.release();
    rmSync(this.path, { recursive: true, force: true });
    return true;
  }

  log(record: Record<string, unknown>): void {
    appendFileSync(join(this.path, 'log.jsonl'), `${JSON.stringify({ time: Date.now(), ...record })}\n`);
  }

  /** Puts the newest complete last/ and best/ in place after a crash (cleaning leftovers). */
  async recover(): Promise<{ last: FoundCheckpoint | null; best: FoundCheckpoint | null }> {
    return {
      last: await recoverCheckpoint(this.lastDir, this.say),
      best: await recoverCheckpoint(this.bestDir, this.say),
    };
  }

  /** The newest complete last/ (or its surviving copy), for messages; null when none. */
  async lastGood(): Promise<string | null> {
    try {
      return (await findCheckpoint(this.lastDir))?.found.path ?? null;
    } catch {
      return null;
    }
  }

  async saveLast(data: CheckpointData, step: number): Promise<void> {
    await saveCheckpoint(this.lastDir, data, { step });
  }

  /**
   * best/'s score: from its manifest (the truth, whatever trainer.json says), else from a
   * pre-manifest adapter.json's metrics; null when there is no best/ or it has no score.
   */
  async bestScore(): Promise<number | null> {
    const r = await findCheckpoint(this.bestDir);
    if (!r) return null;
    if (r.found.manifest) return finite(r.found.manifest.score);
    try {
      const cfg = JSON.parse(readFileSync(join(r.found.path, 'adapter.json'), 'utf8'));
      return finite(cfg?.metrics?.dice);
    } catch {
      return null;
    }
  }

  /**
   * Saves best/ when `score` (validation Dice) beats best/'s own recorded score; a missing or
   * non-finite score (no validation, or a split without positives) never counts. Returns
   * whether it saved.
   */
  async offerBest(
    score: number | null | undefined,
    step: number,
    data: () => Promise<CheckpointData>,
  ): Promise<boolean> {
    const s = finite(score);
    if (s === null) return false;
    const current = await this.bestScore();
    if (current !== null && !(s > current)) return false;
    await saveCheckpoint(this.bestDir, await data(), { step, score: s });
    return true;
  }

  /** Saves best/ without a score when the run ends with none (no validation ever ran). */
  async ensureBest(step: number, data: () => Promise<CheckpointData>): Promise<void> {
    if (await findCheckpoint(this.bestDir)) return;
    await saveCheckpoint(this.bestDir, await data(), { step, score: null });
  }
}

function finite(v: unknown): number | null {
  return typeof v === 'number' && Number.isFinite(v) ? v : null;
}
