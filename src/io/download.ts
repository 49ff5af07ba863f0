/**
 * Official SAM2.1 checkpoints: where they live, the local cache, and a download that streams to
 * a temporary file, checks that the result is a checkpoint with the expected encoder before
 * renaming it into place, and tells an offline user where to put a file fetched elsewhere.
 */
import { existsSync } from 'node:fs';
import { mkdir, open, rename, unlink } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { tempPathFor } from './atomic.js';
import { listCheckpoint } from './pt.js';
import { ZipReader } from './zip.js';

export const SAM2_SIZES = ['tiny', 'small', 'base_plus', 'large'] as const;
export type Sam2Size = (typeof SAM2_SIZES)[number];

const BASE_URL = 'https://dl.fbaipublicfiles.com/segment_anything_2/092824';

/** Hiera width and depth per size (SAM2.1 configs), to recognise a checkpoint. */
const LAYOUT: Record<Sam2Size, { dim: number; blocks: number }> = {
  tiny: { dim: 96, blocks: 12 },
  small: { dim: 96, blocks: 16 },
  base_plus: { dim: 112, blocks: 24 },
  large: { dim: 144, blocks: 48 },
};

export class DownloadError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DownloadError';
  }
}

export function checkpointFileName(size: Sam2Size): string {
  return `sam2.1_hiera_${size}.pt`;
}

export function checkpointUrl(size: Sam2Size): string {
  return `${BASE_URL}/${checkpointFileName(size)}`;
}

/** `$SAM2_LORA_CACHE`, else `~/.cache/sam2-lora`. */
export function defaultCacheDir(): string {
  return process.env.SAM2_LORA_CACHE || join(homedir(), '.cache', 'sam2-lora');
}

/** The cached checkpoint's path, or null when it has not been downloaded. */
export function resolveCheckpoint(size: Sam2Size, opts: { cacheDir?: string } = {}): string | null {
  const path = join(opts.cacheDir ?? defaultCacheDir(), checkpointFileName(size));
  return existsSync(path) ? path : null;
}

/**
 * Checks that `path` is intact (every entry's CRC) and parses as a checkpoint (every storage
 * present, sizes consistent) whose image encoder has the shape of SAM2.1 `size`.
 */
export async function verifySam2Checkpoint(path: string, size: Sam2Size): Promise<void> {
  const { dim, blocks } = LAYOUT[size];
  const zip = await ZipReader.open(path);
  try {
    for (const name of zip.entries.keys()) await zip.checkCrc(name);
  } finally {
    await zip.close();
  }
  const got = new Map(
    (await listCheckpoint(path, { prefix: 'image_encoder.' })).map((e) => [e.name, e.shape]),
  );
  const depth = [...got.keys()].reduce((d, k) => {
    const m = /^trunk\.blocks\.(\d+)\./.exec(k);
    return m ? Math.max(d, Number(m[1]) + 1) : d;
  }, 0);
  if (depth !== blocks) {
    throw new DownloadError(`${path}: not a SAM2.1 ${size} checkpoint: its encoder has ${depth} ` +
      `blocks, ${size} has ${blocks}`);
  }
  const want: [string, number[]][] = [
    ['trunk.patch_embed.proj.weight', [dim, 3, 7, 7]],
    [`trunk.blocks.${blocks - 1}.norm1.weight`, [dim * 8]],
    ['neck.convs.0.conv.weight', [256, dim * 8, 1, 1]],
    ['neck.convs.3.conv.weight', [256, dim, 1, 1]],
  ];
  for (const [key, shape] of want) {
    const g = got.get(key);
    if (!g || g.join(',') !== shape.join(',')) {
      throw new DownloadError(`${path}: not a SAM2.1 ${size} checkpoint: image_encoder.${key} ` +
        `should be [${shape.join(', ')}], got ${g ? `[${g.join(', ')}]` : 'nothing'}`);
    }
  }
}

export function formatProgress(bytes: number, total: number | null, seconds: number): string {
  const mb = (b: number) => `${(b / 1e6).toFixed(1)} MB`;
  const rate = `${(bytes / 1e6 / Math.max(seconds, 1e-3)).toFixed(1)} MB/s`;
  if (!total) return `${mb(bytes)}  ${rate}`;
  return `${mb(bytes)} / ${mb(total)}  ${Math.floor((100 * bytes) / total)}%  ${rate}`;
}

export interface DownloadOptions {
  /** Injected for tests; defaults to the global fetch. */
  fetch?: typeof fetch;
  /** Called as bytes arrive; the default prints a progress line to stderr. */
  onProgress?: (line: string, done: boolean) => void;
  /** Runs on the complete temporary file; throwing keeps it from being renamed into place. */
  verify?: (tmpPath: string) => Promise<void>;
  /** Added to the offline error: how else to get the file. */
  manualHint?: string;
}

function stderrProgress(label: string): (line: string, done: boolean) => void {
  let last = 0;
  return (line, done) => {
    const now = Date.now();
    if (!done && now - last < 250) return;
    last = now;
    if (process.stderr.isTTY) process.stderr.write(`\r${label}  ${line}\x1b[K${done ? '\n' : ''}`);
    else if (done) process.stderr.write(`${label}  ${line}\n`);
  };
}

/** Streams `url` to `dest` through a temporary file beside it; `dest` appears only when valid. */
export async function downloadFile(url: string, dest: string, opts: DownloadOptions = {}) {
  const fetchFn = opts.fetch ?? globalThis.fetch;
  const offline = (why: string) =>
    new DownloadError(`cannot download ${url} (${why}). ` +
      `If this machine is offline, download that file elsewhere and put it at ${dest}` +
      `${opts.manualHint ? ` ${opts.manualHint}` : ''}`);
  let res: Response;
  try {
    res = await fetchFn(url);
  } catch (e) {
    const cause = (e as { cause?: { code?: string } }).cause?.code;
    throw offline(cause ?? (e as Error).message);
  }
  if (!res.ok || !res.body) throw offline(`HTTP ${res.status} ${res.statusText}`.trim());
  const header = res.headers.get('content-length');
  const total = header && /^\d+$/.test(header) ? Number(header) : null;
  await mkdir(dirname(dest), { recursive: true });
  const tmp = tempPathFor(dest);
  const progress = opts.onProgress ?? stderrProgress(url.split('/').pop() ?? url);
  const start = Date.now();
  let bytes = 0;
  let ok = false;
  try {
    const fh = await open(tmp, 'wx');
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        let done = 0;
        while (done < chunk.byteLength) {
          done += (await fh.write(chunk, done, chunk.byteLength - done)).bytesWritten;
        }
        bytes += chunk.byteLength;
        progress(formatProgress(bytes, total, (Date.now() - start) / 1000), false);
      }
      await fh.sync();
    } catch (e) {
      if (e instanceof DownloadError) throw e;
      throw offline(`interrupted after ${bytes} bytes: ${(e as Error).message}`);
    } finally {
      await fh.close();
    }
    progress(formatProgress(bytes, total, (Date.now() - start) / 1000), true);
    if (total !== null && bytes !== total) {
      throw new DownloadError(`${url}: got ${bytes} of ${total} bytes; the download was cut short`);
    }
    if (opts.verify) {
      // Name the download, not the temporary file, in the verifier's message.
      await opts.verify(tmp).catch((e: Error) => {
        throw new DownloadError(`downloaded ${e.message.split(tmp).join(url)}`);
      });
    }
    await rename(tmp, dest);
    ok = true;
  } finally {
    if (!ok) await unlink(tmp).catch(() => undefined);
  }
}
