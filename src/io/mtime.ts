/** Newest modification time under a folder: how the CLI and tests decide a build is stale. */
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

/** Newest mtime (ms) of the files under `dir` that `keep` accepts (all by default), 0 if none. */
export function newestMtime(dir: string, keep: (name: string, isDir: boolean) => boolean = () => true): number {
  let t = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (!keep(e.name, e.isDirectory())) continue;
    const p = join(dir, e.name);
    t = Math.max(t, e.isDirectory() ? newestMtime(p, keep) : statSync(p).mtimeMs);
  }
  return t;
}
