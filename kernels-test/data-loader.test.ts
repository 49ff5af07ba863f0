import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Sample, openDataset } from '../src/data/dataset.js';
import { type Batch, BatchLoader } from '../src/data/loader.js';
import { writeSyntheticDataset } from '../src/data/synthetic.js';

const tmp = mkdtempSync(join(tmpdir(), 'sam2-loader-'));
let samples: Sample[] = [];
beforeAll(async () => {
  await writeSyntheticDataset(tmp, { train: 7, val: 0, test: 0, size: 24, seed: 3 });
  samples = await openDataset({ root: tmp, split: 'train' });
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

async function take(l: BatchLoader, n: number): Promise<Batch[]> {
  const out: Batch[] = [];
  for (let i = 0; i < n; i++) out.push(await l.next());
  return out;
}

function same(a: Batch[], b: Batch[]): void {
  expect(b.map((x) => x.ids)).toEqual(a.map((x) => x.ids));
  for (let i = 0; i < a.length; i++) {
    expect(b[i].images).toEqual(a[i].images);
    expect(b[i].masks).toEqual(a[i].masks);
  }
}

describe('BatchLoader', () => {
  it('covers each sample once per epoch, reshuffling, with shapes [B,S,S,3] / [B,S,S]', async () => {
    const l = new BatchLoader(samples, { batchSize: 3, size: 16, seed: 1, dropLast: false });
    expect(l.batchesPerEpoch).toBe(3);
    const e0 = await take(l, 3);
    expect(e0.map((b) => b.count)).toEqual([3, 3, 1]);
    expect(e0[0].images.length).toBe(3 * 16 * 16 * 3);
    expect(e0[0].masks.length).toBe(3 * 16 * 16);
    expect(e0[2].images.length).toBe(16 * 16 * 3);
    const ids0 = e0.flatMap((b) => b.ids);
    expect([...ids0].sort()).toEqual(samples.map((s) => s.id));
    const e1 = await take(l, 3);
    expect(e1[0].epoch).toBe(1);
    const ids1 = e1.flatMap((b) => b.ids);
    expect([...ids1].sort()).toEqual(samples.map((s) => s.id));
    expect(ids1).not.toEqual(ids0);
    l.close();
  });

  it('drops the last incomplete batch with dropLast', async () => {
    const l = new BatchLoader(samples, { batchSize: 3, size: 8, seed: 2, prefetch: 1 });
    expect(l.batchesPerEpoch).toBe(2);
    const got = await take(l, 4);
    expect(got.map((b) => [b.epoch, b.index, b.count])).toEqual([
      [0, 0, 3],
      [0, 1, 3],
      [1, 0, 3],
      [1, 1, 3],
    ]);
    l.close();
  });

  it('resumes exactly from state() (augmented, prefetching, across epochs)', async () => {
    const opts = { batchSize: 2, size: 16, seed: 11, augment: {}, prefetch: 3 };
    const a = new BatchLoader(samples, opts);
    await take(a, 5); // 3 batches per epoch: now inside epoch 1
    const st = a.state();
    expect(st.epoch).toBe(1);
    const json = JSON.parse(JSON.stringify(st));
    const after = await take(a, 6);
    const b = new BatchLoader(samples, opts);
    await take(b, 1); // some prefetched, unrelated state to be discarded
    b.restore(json);
    same(after, await take(b, 6));
    // Restoring the same loader replays too, whatever it had prefetched.
    a.restore(st);
    same(after, await take(a, 6));
    a.close();
    b.close();
  });

  it('records bad samples with skipBad, fills the batch, and throws without it', async () => {
    const bad = join(tmp, 'corrupt.jpg');
    writeFileSync(bad, 'definitely not a jpeg');
    const withBad = [...samples.slice(0, 3), { id: 'corrupt', image: bad, mask: samples[0].mask }];
    const l = new BatchLoader(withBad, { batchSize: 4, size: 8, shuffle: false, skipBad: true });
    const [b] = await take(l, 1);
    expect(b.count).toBe(4);
    // The bad slot holds a copy of the batch's first good sample, pixel for pixel.
    expect(b.ids).toEqual([samples[0].id, samples[1].id, samples[2].id, samples[0].id]);
    const px = 8 * 8;
    expect(b.images.subarray(3 * px * 3)).toEqual(b.images.subarray(0, px * 3));
    expect(b.masks.subarray(3 * px)).toEqual(b.masks.subarray(0, px));
    expect(l.badCount).toBe(1);
    expect(l.bad.map((x) => [x.id, x.file])).toEqual([['corrupt', bad]]);
    expect(l.bad[0].reason).toMatch(/unreadable image/);
    await take(l, 1);
    expect(l.badCount).toBe(1); // recorded once
    l.close();
    const strict = new BatchLoader(withBad, { batchSize: 4, size: 8, shuffle: false });
    await expect(strict.next()).rejects.toThrow(/corrupt\.jpg: unreadable image/);
    strict.close();
  });

  it('treats options given as undefined as unset', async () => {
    const l = new BatchLoader(samples, {
      batchSize: 2,
      size: 8,
      prefetch: undefined,
      seed: undefined,
      skipBad: undefined,
    });
    expect((await l.next()).count).toBe(2);
    l.close();
  });

  it('rejects a batch larger than the set under dropLast', () => {
    expect(() => new BatchLoader(samples, { batchSize: 8, size: 8 })).toThrow(/cannot fill/);
  });
});
