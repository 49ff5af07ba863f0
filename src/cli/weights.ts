/** `sam2-lora weights download <size>`: fetch an official SAM2.1 checkpoint into the cache. */
import { join } from 'node:path';
import { wroteLine } from './output.js';
import {
  SAM2_SIZES, checkpointFileName, checkpointUrl, defaultCacheDir, downloadFile,
  resolveCheckpoint, verifySam2Checkpoint, type DownloadOptions, type Sam2Size,
} from '../io/download.js';

export { resolveCheckpoint };

export interface WeightsDownloadOptions {
  /** Defaults to `$SAM2_LORA_CACHE` or `~/.cache/sam2-lora`. */
  cacheDir?: string;
  /** Download again even when the file is cached. */
  force?: boolean;
  fetch?: DownloadOptions['fetch'];
  onProgress?: DownloadOptions['onProgress'];
}

/** Downloads (or finds in the cache) SAM2.1 `size` and returns the checkpoint's path. */
export async function weightsDownload(
  size: Sam2Size,
  opts: WeightsDownloadOptions = {},
): Promise<string> {
  if (!SAM2_SIZES.includes(size)) {
    throw new Error(`unknown SAM2.1 size ${JSON.stringify(size)}: one of ${SAM2_SIZES.join(', ')}`);
  }
  const cacheDir = opts.cacheDir ?? defaultCacheDir();
  const cached = resolveCheckpoint(size, { cacheDir });
  if (cached && !opts.force) return cached;
  const dest = join(cacheDir, checkpointFileName(size));
  await downloadFile(checkpointUrl(size), dest, {
    fetch: opts.fetch,
    onProgress: opts.onProgress,
    verify: (tmp) => verifySam2Checkpoint(tmp, size),
    manualHint: '(or set SAM2_LORA_CACHE to the folder holding it)',
  });
  return dest;
}

/** The CLI command: downloads unless cached, then closes with the file it wrote (or none). */
export async function weightsDownloadCommand(
  size: Sam2Size,
  opts: Pick<WeightsDownloadOptions, 'cacheDir' | 'force'>,
): Promise<void> {
  const cacheDir = opts.cacheDir ?? defaultCacheDir();
  const cached = !opts.force && SAM2_SIZES.includes(size) ? resolveCheckpoint(size, { cacheDir }) : null;
  const path = await weightsDownload(size, { ...opts, cacheDir });
  console.log(cached ? `already in the cache: ${path}; ${wroteLine([])}` : wroteLine([path]));
}
