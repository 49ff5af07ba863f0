/**
 * Finding a complete checkpoint folder. A save (train/checkpoint.ts) writes `X.tmp-<pid>`, then
 * `manifest.json` last (every file's size and sha256, the step, the score), then swaps it in
 * for X; a kill at any instant leaves some complete folder among X, `X.old-*`, `X.tmp-*`.
 * Reading is here, below the trainer, so `eval`/`predict` find and verify adapters the same way.
 */
import { createHash } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

export const MANIFEST = 'manifest.json';

/** What makes a checkpoint directory complete: written last, checked on every open. */
export interface CheckpointManifest {
  format: 'sam2-lora-checkpoint';
  version: 1;
  /** Optimizer steps the checkpoint holds. */
  step: number;
  /** Validation Dice this checkpoint was saved for (best/); null when it has none. */
  score: number | null;
  /** Milliseconds since the epoch: orders two checkpoints of the same step. */
  savedAt: number;
  files: { name: string; size: number; sha256: string }[];
}

export async function sha256(path: string): Promise<string> {
  return createHash('sha256').update(await readFile(path)).digest('hex');
}

/** A checkpoint directory that verified (or a pre-manifest one: `manifest` null). */
export interface FoundCheckpoint {
  path: string;
  manifest: CheckpointManifest | null;
}

/** Why `dir` is not a complete checkpoint, or its manifest when it is. */
export async function verifyCheckpoint(
  dir: string,
): Promise<{ manifest: CheckpointManifest } | { problem: string }> {
  const mf = join(dir, MANIFEST);
  if (!existsSync(mf)) return { problem: `${mf} missing (the save did not finish)` };
  let manifest: CheckpointManifest;
  try {
    manifest = JSON.parse(await readFile(mf, 'utf8')) as CheckpointManifest;
  } catch (e) {
    return { problem: `${mf}: not valid JSON (${(e as Error).message})` };
  }
  if (manifest.format !== 'sam2-lora-checkpoint' || !Array.isArray(manifest.files) ||
    !Number.isInteger(manifest.step)) {
    return { problem: `${mf}: not a sam2-lora checkpoint manifest` };
  }
  for (const f of manifest.files) {
    const path = join(dir, f.name);
    if (!existsSync(path)) return { problem: `${path} missing` };
    const size = (await stat(path)).size;
    if (size !== f.size) return { problem: `${path}: ${size} bytes, the manifest says ${f.size}` };
    if ((await sha256(path)) !== f.sha256) {
      return { problem: `${path}: sha256 differs from the manifest (corrupt or edited)` };
    }
  }
  return { manifest };
}

/** `dir` and its siblings a save leaves behind (`dir.old-*`, `dir.tmp-*`), those that exist. */
export function candidates(dir: string): string[] {
  const parent = dirname(dir);
  const base = basename(dir);
  if (!existsSync(parent)) return [];
  const side = readdirSync(parent)
    .filter((n) => n.startsWith(`${base}.old-`) || n.startsWith(`${base}.tmp-`))
    .map((n) => join(parent, n));
  return [...(existsSync(dir) ? [dir] : []), ...side];
}

/**
 * The newest complete checkpoint among `dir`, `dir.old-*`, `dir.tmp-*`, without changing
 * anything; null when none of them exists, or only unfinished tmp folders of a first save.
 * Throws, naming each folder and its problem, when some exist but none is complete. A `dir`
 * without a manifest but with an adapter (written before manifests existed) counts, below any
 * verified one.
 */
export async function findCheckpoint(
  dir: string,
): Promise<{ found: FoundCheckpoint; others: string[] } | null> {
  const all = candidates(dir);
  if (all.length === 0) return null;
  const good: { path: string; manifest: CheckpointManifest }[] = [];
  const problems: string[] = [];
  for (const path of all) {
    const v = await verifyCheckpoint(path);
    if ('manifest' in v) good.push({ path, manifest: v.manifest });
    else problems.push(v.problem);
  }
  good.sort((a, b) => b.manifest.step - a.manifest.step || b.manifest.savedAt - a.manifest.savedAt);
  let found: FoundCheckpoint | undefined = good[0];
  if (!found && existsSync(join(dir, 'adapter.safetensors')) && !existsSync(join(dir, MANIFEST))) {
    found = { path: dir, manifest: null };
  }
  if (!found) {
    // Only unfinished tmp folders of a first save: nothing complete ever existed, nothing is lost.
    if (all.every((p) => basename(p).startsWith(`${basename(dir)}.tmp-`))) return null;
    throw new Error(`no complete checkpoint for ${dir}:\n  ${problems.join('\n  ')}`);
  }
  return { found, others: all.filter((p) => p !== found.path) };
}
