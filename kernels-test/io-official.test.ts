import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { checkStateDict, listCheckpoint, listPickle, readCheckpoint } from '../src/io/pt.js';
import { ZipReader } from '../src/io/zip.js';
import { MODEL_CONFIGS, type Sam2Size } from '../src/model/config.js';
import { encoderKeys } from '../src/model/keys.js';
import { HAVE_SHARED, SHARED_CKPT, readKeysFile, tempDir } from './io-fixtures.js';

/**
 * Gives a truncated PyTorch zip back a central directory for its complete entries: walks the
 * local headers, takes each entry's size from the data descriptor (`PK\x07\x08`, crc, sizes)
 * that precedes the next header, and appends a central directory and end record.
 */
function rebuildCentralDirectory(file: Buffer): Buffer {
  const central: Buffer[] = [];
  let off = 0;
  let end = 0;
  while (file.readUInt32LE(off) === 0x04034b50) {
    const nameLen = file.readUInt16LE(off + 26);
    const start = off + 30 + nameLen + file.readUInt16LE(off + 28);
    const next = file.indexOf(Buffer.from([0x50, 0x4b, 0x03, 0x04]), start);
    if (next < 0) break;
    const desc = next - 16;
    expect(file.readUInt32LE(desc)).toBe(0x08074b50);
    const size = file.readUInt32LE(desc + 8);
    expect(start + size).toBe(desc);
    const c = Buffer.alloc(46 + nameLen);
    c.writeUInt32LE(0x02014b50, 0);
    c.writeUInt16LE(20, 4);
    c.writeUInt16LE(20, 6);
    c.writeUInt16LE(file.readUInt16LE(off + 6), 8);
    c.writeUInt32LE(file.readUInt32LE(desc + 4), 16);
    c.writeUInt32LE(size, 20);
    c.writeUInt32LE(size, 24);
    c.writeUInt16LE(nameLen, 28);
    c.writeUInt32LE(off, 42);
    file.copy(c, 46, off + 30, off + 30 + nameLen);
    central.push(c);
    end = next;
    off = next;
  }
  const cd = Buffer.concat(central);
  const eocd = Buffer.alloc(22);
  eocd.writeUInt32LE(0x06054b50, 0);
  eocd.writeUInt16LE(central.length, 8);
  eocd.writeUInt16LE(central.length, 10);
  eocd.writeUInt32LE(cd.length, 12);
  eocd.writeUInt32LE(end, 16);
  return Buffer.concat([file.subarray(0, end), cd, eocd]);
}


const NEEDS = '(needs ../shared/sam2-checkpoints)';

const OFFICIAL: { stem: string; truncated: string; count: number; size: Sam2Size }[] = [
  { stem: 'sam2.1_hiera_tiny', truncated: 'sam2.1_hiera_tiny.truncated.pt', count: 162, size: 'tiny' },
  { stem: 'sam2.1_hiera_small', truncated: 'sam2.1_hiera_small.truncated.pt', count: 210, size: 'small' },
  {
    stem: 'sam2.1_hiera_base_plus',
    truncated: 'sam2.1_hiera_base_plus.truncated.pt',
    count: 306,
    size: 'base_plus',
  },
  { stem: 'MedSAM2_pretrain', truncated: 'MedSAM2_pretrain.bf16.truncated.pth', count: 162, size: 'tiny' },
];

const DTYPE_NAMES: Record<string, string> = { float32: 'float32', bfloat16: 'bfloat16' };

describe('official SAM2.1 / MedSAM2 checkpoints', () => {
  it.skipIf(!HAVE_SHARED).each(OFFICIAL)(
    `$stem: the complete pickle gives exactly the keys, dtypes and shapes of its keys file ${NEEDS}`,
    ({ stem, count, size }) => {
      const pkl = join(SHARED_CKPT, `${stem}.data.pkl`);
      const keys = readKeysFile(join(SHARED_CKPT, `${stem}.image_encoder_keys.txt`));
      expect(keys.length).toBe(count);
      const listed = listPickle(readFileSync(pkl), pkl, { prefix: 'image_encoder.' });
      expect(listed).toEqual(keys.map((k) => ({
        name: k.name.replace(/^model\.image_encoder\./, ''),
        dtype: DTYPE_NAMES[k.dtype],
        shape: k.shape,
      })));
      // The loader's check, against the model's own key set (not the listing itself): passes for
      // this file's size and names the differences for another size.
      const got = new Map(listed.map((e) => [e.name, e]));
      checkStateDict(encoderKeys(MODEL_CONFIGS[size]), got, pkl);
      const other = size === 'small' ? 'tiny' : 'small';
      expect(() => checkStateDict(encoderKeys(MODEL_CONFIGS[other]), got, pkl)).toThrow(
        {
          tiny: /does not match the model\n {2}missing \(50\): trunk\.blocks\.12\.norm1\.weight,/,
          small: /does not match the model\n {2}missing \(2\): trunk\.blocks\.10\.proj\.weight/,
          base_plus: /trunk\.pos_embed: expected \[1, 96, 7, 7\], got \[1, 112, 14, 14\]/,
          large: /never/,
        }[size],
      );
      // The whole model (not only the encoder) parses too: the tensor and parameter totals the
      // keys file's header states (counted by PyTorch when the file was made).
      const header = readFileSync(join(SHARED_CKPT, `${stem}.image_encoder_keys.txt`), 'utf8');
      const [, tensors, params] = /# total tensors (\d+), total params (\d+)/.exec(header)!.map(Number);
      const all = listPickle(readFileSync(pkl), pkl);
      expect(all.length).toBe(tensors);
      expect(all.reduce((n, e) => n + e.shape.reduce((a, b) => a * b, 1), 0)).toBe(params);
    },
  );

  it.skipIf(!HAVE_SHARED).each(OFFICIAL)(
    `$truncated: PyTorch's own layout (data descriptors, FB padding) reads with CRCs checked ${NEEDS}`,
    async ({ stem, truncated }) => {
      const tmp = tempDir();
      try {
        const path = `${tmp.dir}/${stem}.pt`;
        writeFileSync(path, rebuildCentralDirectory(readFileSync(join(SHARED_CKPT, truncated))));
        const zip = await ZipReader.open(path);
        const names = [...zip.entries.keys()];
        const prefix = names[0].slice(0, -'data.pkl'.length);
        expect(names[0]).toMatch(/^[^/]+\/data\.pkl$/);
        const pkl = readFileSync(join(SHARED_CKPT, `${stem}.data.pkl`));
        expect(Buffer.from(await zip.read(names[0])).equals(pkl)).toBe(true);
        expect(new TextDecoder().decode(await zip.read(`${prefix}byteorder`))).toBe('little');
        const storages = names.filter((n) => n.startsWith(`${prefix}data/`));
        expect(storages.length).toBeGreaterThan(3);
        for (const n of storages) {
          expect((await zip.dataOffset(zip.entries.get(n)!)) % 64).toBe(0);
          await zip.read(n); // CRC-checked
        }
        await zip.close();
        // The storages past the cut are missing: the loader says which.
        await expect(readCheckpoint(path)).rejects.toThrow(/storage \d+ missing: no entry .*data\/\d+/);
      } finally {
        tmp.cleanup();
      }
    },
  );

  it.skipIf(!HAVE_SHARED).each(OFFICIAL)(
    `$truncated: refused with a clear error, no crash or hang ${NEEDS}`,
    async ({ truncated }) => {
      const path = join(SHARED_CKPT, truncated);
      const want = `${path}: no central directory: the file is truncated or not a zip`;
      await expect(readCheckpoint(path)).rejects.toThrow(want);
      await expect(listCheckpoint(path)).rejects.toThrow(want);
    },
  );
});
