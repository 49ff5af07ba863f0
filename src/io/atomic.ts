/**
 * Atomic file writes: the bytes go to a temporary file in the destination's folder (same
 * filesystem, so the rename is atomic), are flushed to disk, then renamed over the destination.
 * A crash or error leaves either the old file or the new one, never half of one.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

export type WriteData =
  | string
  | Uint8Array
  | Iterable<Uint8Array>
  | AsyncIterable<Uint8Array>;

/** A temporary path beside `path` (hidden, unique per call). */
export function tempPathFor(path: string): string {
  const tag = `${process.pid}-${randomBytes(4).toString('hex')}`;
  return join(dirname(path), `.${basename(path)}.${tag}.tmp`);
}

/** Writes `data` (bytes, text, or chunks written one by one without concatenation) to `path`. */
export async function atomicWrite(path: string, data: WriteData): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  const tmp = tempPathFor(path);
  const fh = await open(tmp, 'wx');
  let ok = false;
  try {
    if (typeof data === 'string') {
      await fh.writeFile(data, 'utf8');
    } else if (data instanceof Uint8Array) {
      await writeAll(fh, data);
    } else if (Symbol.asyncIterator in data) {
      for await (const c of data) await writeAll(fh, c);
    } else {
      for (const c of data) await writeAll(fh, c);
    }
    await fh.sync();
    ok = true;
  } finally {
    await fh.close();
    if (!ok) await unlink(tmp).catch(() => undefined);
  }
  try {
    await rename(tmp, path);
  } catch (e) {
    await unlink(tmp).catch(() => undefined);
    throw e;
  }
}

async function writeAll(fh: import('node:fs/promises').FileHandle, c: Uint8Array) {
  let done = 0;
  while (done < c.byteLength) {
    const { bytesWritten } = await fh.write(c, done, c.byteLength - done);
    done += bytesWritten;
  }
}

/**
 * Flushes a file or folder to disk (a folder: so a rename in it survives a power cut). Folders
 * cannot be fsynced on some platforms; the files' own fsyncs still order the data there.
 */
export async function fsyncPath(path: string): Promise<void> {
  const fh = await open(path, 'r');
  try {
    await fh.sync();
  } catch {
    // not supported for this kind of file here
  } finally {
    await fh.close();
  }
}
