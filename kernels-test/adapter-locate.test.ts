/**
 * Reading an adapter for eval/predict/merge/export when its folder is not as a finished save left
 * it: a swap interrupted between its renames (the adapter is read from the complete sibling the
 * save left, with a note), a corrupt or truncated file (refused by the manifest's checksums,
 * naming the file), and only an unfinished first save (the plain "not found" error).
 */
import { mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type AdapterConfig, loadAdapter } from '../src/adapter/adapter.js';
import { saveCheckpoint } from '../src/train/checkpoint.js';

let root: string;
beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), 'sam2-lora-locate-'));
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

const config: AdapterConfig = {
  format: 'sam2-lora-adapter',
  version: 1,
  segmenter: { model: 'nano', head: 'fpn', mode: 'lora', seed: 0, lora: { r: 4, alpha: 32, dropout: 0, targets: ['qkv'] } },
  size: 32,
  threshold: 0.5,
  baseCheckpoint: null,
};

async function save(dir: string, step: number, value: number): Promise<void> {
  await saveCheckpoint(dir, { adapter: new Map([['head.w', { shape: [2], data: Float32Array.of(value, -value) }]]), config },
    { step, score: value });
}

describe('locating an adapter', () => {
  it('reads the complete sibling when a swap was interrupted between its two renames', async () => {
    const best = join(root, 'a', 'best');
    await save(best, 2, 0.25);
    // A kill right after `best -> best.old-<pid>`, before `best.tmp-<pid> -> best`.
    await save(`${best}.tmp-99`, 4, 0.5);
    renameSync(best, `${best}.old-99`);
    const notes: string[] = [];
    const a = await loadAdapter(best, (s) => notes.push(s));
    expect(Array.from(a.tensors.get('head.w')!.data)).toEqual([0.5, -0.5]);
    expect(a.file).toBe(join(`${best}.tmp-99`, 'adapter.safetensors'));
    expect(notes.join('\n')).toMatch(/a save into it was interrupted.*best\.tmp-99 \(step 4\)/);
  });

  it('refuses a corrupt adapter file, naming it and the checksum problem', async () => {
    const best = join(root, 'b', 'best');
    await save(best, 1, 0.75);
    const file = join(best, 'adapter.safetensors');
    const bytes = readFileSync(file);
    bytes[bytes.length - 1] ^= 0x40; // a flipped bit in the tensor data: still parses
    writeFileSync(file, bytes);
    await expect(loadAdapter(best)).rejects.toThrow(/adapter\.safetensors: sha256 differs from the manifest/);
    writeFileSync(file, bytes.subarray(0, bytes.length - 3));
    await expect(loadAdapter(best)).rejects.toThrow(/adapter\.safetensors: \d+ bytes, the manifest says \d+/);
  });

  it('an unfinished first save is no adapter at all: the plain not-found error', async () => {
    const dir = join(root, 'c');
    mkdirSync(join(dir, 'best.tmp-7'), { recursive: true });
    writeFileSync(join(dir, 'best.tmp-7', 'adapter.safetensors'), 'partial');
    await expect(loadAdapter(join(dir, 'best'))).rejects.toThrow(/best: cannot open it as an adapter.*does not exist \(ENOENT\)/);
  });
});
