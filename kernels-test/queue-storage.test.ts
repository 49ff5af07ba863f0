/**
 * The queue's pieces that need no Redis: the filesystem storage (atomic commit, abort, sweep of
 * an interrupted attempt's temporary files and only those), job ids and job-data checks.
 */
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { connectionFromUrl, jobId, parseJobData, safeUrl } from '../src/queue/schema.js';
import { FileStorage, isTempName } from '../src/queue/storage.js';

const dir = mkdtempSync(join(tmpdir(), 'sam2-lora-queue-storage-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('FileStorage', () => {
  const st = new FileStorage();

  it('writes to a hidden temporary file beside the target, then renames it over', async () => {
    const key = join(dir, 'out', 'a.mask.png');
    const p = await st.create(key);
    expect(p.path.startsWith(join(dir, 'out', '.a.mask.png.'))).toBe(true);
    expect(isTempName(p.path.split('/').pop()!)).toBe(true);
    writeFileSync(p.path, 'first');
    expect(existsSync(key)).toBe(false); // nothing visible before commit
    await p.commit();
    expect(readFileSync(key, 'utf8')).toBe('first');
    // A second attempt replaces it whole.
    const q = await st.create(key);
    writeFileSync(q.path, 'second');
    await q.commit();
    expect(readFileSync(key, 'utf8')).toBe('second');
    expect(readdirSync(join(dir, 'out'))).toEqual(['a.mask.png']);
    expect(await st.exists(key)).toBe(true);
    expect(await st.exists(join(dir, 'out', 'b.mask.png'))).toBe(false);
  });

  it('abort leaves no file; sweep removes an interrupted write of that key only', async () => {
    const key = join(dir, 'sweep', 'a.mask.png');
    const gone = await st.create(key);
    writeFileSync(gone.path, 'x');
    await gone.abort();
    expect(existsSync(gone.path)).toBe(false);
    // Two killed attempts at a.mask.png, one at a.mask.png.mask.png (another output).
    const left = [await st.create(key), await st.create(key)];
    const other = await st.create(join(dir, 'sweep', 'a.mask.png.mask.png'));
    for (const p of [...left, other]) writeFileSync(p.path, 'partial');
    await st.sweep(key);
    for (const p of left) expect(existsSync(p.path)).toBe(false);
    expect(existsSync(other.path)).toBe(true);
    await st.sweep(join(dir, 'no-such-folder', 'x.png')); // nothing to do, no error
  });
});

describe('job schema', () => {
  it('job ids: the same adapter + photo + output folder give the same id, anything else another', () => {
    const id = jobId('0123456789abcdef', '/data/p1.jpg', '/out');
    expect(id).toMatch(/^p-0123456789abcdef-[0-9a-f]{24}$/);
    expect(jobId('0123456789abcdef', '/data/p1.jpg', '/out')).toBe(id);
    expect(jobId('0123456789abcdef', '/data/p2.jpg', '/out')).not.toBe(id);
    expect(jobId('0123456789abcdef', '/data/p1.jpg', '/out2')).not.toBe(id);
    expect(jobId('fedcba9876543210', '/data/p1.jpg', '/out')).not.toBe(id);
  });

  it('parseJobData accepts a version-1 job and names what it refuses', () => {
    const ok = { v: 1, input: '/p.jpg', out: '/o/p', adapter: '/a', adapterId: 'ab', threshold: 0.4 };
    expect(parseJobData(ok)).toEqual(ok);
    for (const bad of [null, { ...ok, v: 2 }, { ...ok, input: '' }, { ...ok, threshold: 'x' }, { ...ok, tile: NaN }]) {
      expect(() => parseJobData(bad)).toThrow(/not a sam2-lora predict job/);
    }
  });

  it('queue URLs: redis:// with a database number; passwords hidden in messages', () => {
    expect(connectionFromUrl('redis://h:6379/2')).toEqual({ url: 'redis://h:6379/2' });
    expect(() => connectionFromUrl('http://h:6379')).toThrow(/expected a redis:\/\/ or rediss:\/\/ URL/);
    expect(() => connectionFromUrl('redis://h:6379/jobs')).toThrow(/database number/);
    expect(() => connectionFromUrl('h:6379')).toThrow();
    expect(safeUrl('redis://u:secret@h:6379/0')).toBe('redis://u:***@h:6379/0');
  });
});
