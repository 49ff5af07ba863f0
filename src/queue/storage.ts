/**
 * Where queued predictions read photos and write outputs. Workers only touch storage through
 * this interface, so an object store (S3, GCS, Azure) needs one more implementation, not changes
 * to the worker: `open` downloads to a local temp file, `create` hands out a local temp file and
 * `commit` uploads it (a PUT is atomic there), `exists` is a HEAD, `sweep` has nothing to do.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { fileError } from '../io/fs-errors.js';
import { fsyncPath } from '../io/atomic.js';

/** An object readable as a local file until `release`. */
export interface LocalFile {
  path: string;
  release(): Promise<void>;
}

/** An object being written: fill the local `path`, then `commit` publishes it under its key. */
export interface PendingFile {
  path: string;
  /** Atomic: readers see the previous object or the whole new one, never a part. */
  commit(): Promise<void>;
  /** Drops the local file (nothing published). */
  abort(): Promise<void>;
}

export interface Storage {
  readonly kind: string;
  open(key: string): Promise<LocalFile>;
  create(key: string): Promise<PendingFile>;
  exists(key: string): Promise<boolean>;
  /** Removes what an earlier, killed attempt at writing `key` left (its temporary files). */
  sweep(key: string): Promise<void>;
}

/** Temporary name of `key` while written: a dot file beside it, never listed as a photo. */
const tmpPrefix = (key: string) => `.${basename(key)}.`;
const TMP_SUFFIX = '.tmp';

/**
 * A shared or mounted folder (NFS, SMB, a cloud bucket mounted with a FUSE driver): keys are
 * absolute paths that name the same file on every worker. Writes go to `.<name>.<random>.tmp`
 * beside the target, fsynced, then renamed over it (atomic on one filesystem).
 */
export class FileStorage implements Storage {
  readonly kind = 'filesystem';

  async open(key: string): Promise<LocalFile> {
    return { path: key, release: async () => {} };
  }

  async create(key: string): Promise<PendingFile> {
    const dir = dirname(key);
    try {
      mkdirSync(dir, { recursive: true });
    } catch (e) {
      throw fileError(dir, e, 'an output folder', 'create');
    }
    const path = join(dir, `${tmpPrefix(key)}${randomBytes(6).toString('hex')}${TMP_SUFFIX}`);
    return {
      path,
      commit: async () => {
        await fsyncPath(path);
        await rename(path, key);
        await fsyncPath(dir);
      },
      abort: () => rm(path, { force: true }),
    };
  }

  async exists(key: string): Promise<boolean> {
    return existsSync(key);
  }

  async sweep(key: string): Promise<void> {
    const dir = dirname(key);
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch {
      return; // no folder yet: nothing left behind
    }
    const prefix = tmpPrefix(key);
    // Exactly `.<name>.<12 hex>.tmp`: not the temporary files of `<name>.x` beside it.
    const ours = (n: string) => n.startsWith(prefix) &&
      /^[0-9a-f]{12}\.tmp$/.test(n.slice(prefix.length));
    await Promise.all(names.filter(ours).map((n) => rm(join(dir, n), { force: true })));
  }
}

/** True for a storage temporary file name (tests check none is left). */
export function isTempName(name: string): boolean {
  return name.startsWith('.') && name.endsWith(TMP_SUFFIX);
}
