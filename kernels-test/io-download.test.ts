import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { weightsDownload } from '../src/cli/weights.js';
import { checkpointUrl, formatProgress, resolveCheckpoint } from '../src/io/download.js';
import { writeCheckpoint } from '../src/io/pt.js';
import { HAVE_SHARED, SHARED_CKPT, randomState, tempDir } from './io-fixtures.js';

const tmp = tempDir();
afterAll(() => tmp.cleanup());

/** The keys the download check looks at, with a given Hiera width/depth. */
async function fakeSam2(path: string, dim: number, blocks: number) {
  await writeCheckpoint(path, randomState(new Map([
    ['image_encoder.trunk.patch_embed.proj.weight', [dim, 3, 7, 7]],
    ...Array.from({ length: blocks }, (_, i): [string, number[]] =>
      [`image_encoder.trunk.blocks.${i}.norm1.weight`, [i === blocks - 1 ? dim * 8 : dim]]),
    ['image_encoder.neck.convs.0.conv.weight', [256, dim * 8, 1, 1]],
    ['image_encoder.neck.convs.3.conv.weight', [256, dim, 1, 1]],
    ['sam_mask_decoder.iou_token.weight', [1, 256]],
  ])), { wrapModel: true });
}

/** A fetch that serves one local file (no network in tests). */
const serve = (path: string): typeof fetch => async (url) => {
  expect(String(url)).toBe(checkpointUrl('tiny'));
  const body = readFileSync(path);
  return new Response(body, { headers: { 'content-length': String(body.length) } });
};

const offlineFetch: typeof fetch = async () => {
  throw new TypeError('fetch failed', { cause: { code: 'ENOTFOUND' } });
};

describe('weights download', () => {
  it('official URLs', () => {
    expect(checkpointUrl('base_plus')).toBe(
      'https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_base_plus.pt');
    expect(formatProgress(5e6, 2e7, 2)).toBe('5.0 MB / 20.0 MB  25%  2.5 MB/s');
  });

  it('offline: a clear error saying where to put a manually downloaded file', async () => {
    const cacheDir = join(tmp.dir, 'offline');
    const dest = join(cacheDir, 'sam2.1_hiera_tiny.pt');
    await expect(weightsDownload('tiny', { cacheDir, fetch: offlineFetch }))
      .rejects.toThrow(`cannot download ${checkpointUrl('tiny')} (ENOTFOUND). If this machine is ` +
        `offline, download that file elsewhere and put it at ${dest}`);
    expect(resolveCheckpoint('tiny', { cacheDir })).toBeNull();
  });

  it('verifies the file before renaming it into the cache', async () => {
    const cacheDir = join(tmp.dir, 'cache');
    const good = join(tmp.dir, 'served-tiny.pt');
    await fakeSam2(good, 96, 12);
    const lines: string[] = [];
    const path = await weightsDownload('tiny', {
      cacheDir, fetch: serve(good), onProgress: (l, done) => done && lines.push(l),
    });
    expect(path).toBe(join(cacheDir, 'sam2.1_hiera_tiny.pt'));
    expect(readFileSync(path).equals(readFileSync(good))).toBe(true);
    expect(resolveCheckpoint('tiny', { cacheDir })).toBe(path);
    expect(lines.at(-1)).toMatch(/ 100% /);
    // Cached: no fetch at all.
    expect(await weightsDownload('tiny', { cacheDir, fetch: offlineFetch })).toBe(path);
  });

  it('a checkpoint of the wrong size is refused and never reaches the cache', async () => {
    const cacheDir = join(tmp.dir, 'wrong');
    const small = join(tmp.dir, 'served-small.pt');
    await fakeSam2(small, 96, 16);
    await expect(weightsDownload('tiny', { cacheDir, fetch: serve(small), onProgress: () => {} }))
      .rejects.toThrow(`downloaded ${checkpointUrl('tiny')}: not a SAM2.1 tiny checkpoint: ` +
        'its encoder has 16 blocks, tiny has 12');
    expect(readdirSync(cacheDir)).toEqual([]);
  });

  it('a download corrupted in transit fails its CRC check and never reaches the cache', async () => {
    const cacheDir = join(tmp.dir, 'corrupt');
    const good = join(tmp.dir, 'served-tiny2.pt');
    await fakeSam2(good, 96, 12);
    const bytes = readFileSync(good);
    bytes[bytes.indexOf('archive/data/0') + 200] ^= 0x40;
    const corrupt: typeof fetch = async () => new Response(bytes);
    await expect(weightsDownload('tiny', { cacheDir, fetch: corrupt, onProgress: () => {} }))
      .rejects.toThrow(`downloaded ${checkpointUrl('tiny')}: corrupt zip: CRC mismatch in archive/data/0`);
    expect(readdirSync(cacheDir)).toEqual([]);
  });

  it.skipIf(!HAVE_SHARED)(
    'a truncated official download is refused (needs ../shared/sam2-checkpoints)',
    async () => {
      const cacheDir = join(tmp.dir, 'trunc');
      const served = join(SHARED_CKPT, 'sam2.1_hiera_tiny.truncated.pt');
      await expect(weightsDownload('tiny', { cacheDir, fetch: serve(served), onProgress: () => {} }))
        .rejects.toThrow('no central directory: the file is truncated or not a zip');
      expect(existsSync(join(cacheDir, 'sam2.1_hiera_tiny.pt'))).toBe(false);
      expect(readdirSync(cacheDir)).toEqual([]);
    },
  );
});
