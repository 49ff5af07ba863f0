import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { deflateRawSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { pickleStateDict, type DType } from '../src/io/pickle.js';
import {
  checkStateDict, halfToFloat, listCheckpoint, readCheckpoint, writeCheckpoint, type StateDict,
} from '../src/io/pt.js';
import { readSafetensors, writeSafetensors } from '../src/io/safetensors.js';
import { ZipReader, crc32, zipChunks, type ZipInput } from '../src/io/zip.js';
import {
  HAVE_SHARED, Pk, SEED, SHARED_CKPT, bytesOf, randomState, readKeysFile, rng, tempDir,
} from './io-fixtures.js';

const tmp = tempDir();
afterAll(() => tmp.cleanup());
const at = (name: string) => join(tmp.dir, name);

/** Writes a PyTorch-style zip from a pickle and raw storages (for dtypes our writer lacks). */
function writeRawPt(path: string, pickle: Uint8Array, storages: Uint8Array[], prefix = 'archive') {
  const inputs: ZipInput[] = [
    { name: `${prefix}/data.pkl`, chunks: [pickle] },
    { name: `${prefix}/byteorder`, chunks: [new TextEncoder().encode('little')] },
    ...storages.map((s, i) => ({ name: `${prefix}/data/${i}`, chunks: [s] })),
    { name: `${prefix}/version`, chunks: [new TextEncoder().encode('3\n')] },
  ];
  writeFileSync(path, Buffer.concat([...zipChunks(inputs)]));
}

/** A zip whose entries are all deflated (method 8), as a generic zip tool would write it. */
function writeDeflatedZip(path: string, entries: [string, Uint8Array][]) {
  const parts: Buffer[] = [];
  const central: Buffer[] = [];
  let off = 0;
  for (const [name, data] of entries) {
    const packed = deflateRawSync(data);
    const n = Buffer.from(name);
    const h = Buffer.alloc(30);
    h.writeUInt32LE(0x04034b50, 0);
    h.writeUInt16LE(20, 4);
    h.writeUInt16LE(8, 8);
    h.writeUInt32LE(crc32(data), 14);
    h.writeUInt32LE(packed.length, 18);
    h.writeUInt32LE(data.length, 22);
    h.writeUInt16LE(n.length, 26);
    const c = Buffer.alloc(46);
    c.writeUInt32LE(0x02014b50, 0);
    c.writeUInt16LE(20, 6);
    c.writeUInt16LE(8, 10);
    h.copy(c, 16, 14, 26); // crc, compressed and uncompressed sizes
    c.writeUInt16LE(n.length, 28);
    c.writeUInt32LE(off, 42);
    central.push(c, n);
    parts.push(h, n, packed);
    off += 30 + n.length + packed.length;
  }
  const cd = Buffer.concat(central);
  const e = Buffer.alloc(22);
  e.writeUInt32LE(0x06054b50, 0);
  e.writeUInt16LE(entries.length, 8);
  e.writeUInt16LE(entries.length, 10);
  e.writeUInt32LE(cd.length, 12);
  e.writeUInt32LE(off, 16);
  writeFileSync(path, Buffer.concat([...parts, cd, e]));
}

function expectSameTensors(a: StateDict, b: StateDict) {
  expect([...b.keys()]).toEqual([...a.keys()]);
  for (const [k, t] of a) {
    const u = b.get(k)!;
    expect(u.shape, k).toEqual(t.shape);
    expect(Buffer.from(bytesOf(u.data)).equals(Buffer.from(bytesOf(t.data))), `bytes of ${k}`).toBe(true);
  }
}

const SMALL_KEYS = new Map<string, number[]>([
  ['trunk.patch_embed.proj.weight', [5, 3, 7, 7]],
  ['trunk.blocks.0.attn.qkv.weight', [15, 5]],
  ['trunk.blocks.0.attn.qkv.bias', [15]],
  ['trunk.pos_embed', [1, 5, 3, 3]],
  ['scalar', []],
  ['empty', [0, 4]],
]);

describe(`pt round trips (seed ${SEED})`, () => {
  it('.pt → StateDict → .pt keeps every tensor byte for byte, wrapped and not', async () => {
    const state = randomState(SMALL_KEYS);
    for (const wrapModel of [false, true]) {
      await writeCheckpoint(at('a.pt'), state, { wrapModel });
      const back = await readCheckpoint(at('a.pt'));
      expectSameTensors(state, back);
      await writeCheckpoint(at('b.pt'), back, { wrapModel });
      expect(readFileSync(at('b.pt')).equals(readFileSync(at('a.pt')))).toBe(true);
    }
  });

  it('stores entries uncompressed with data 64-byte aligned, like torch.save', async () => {
    await writeCheckpoint(at('align.pt'), randomState(SMALL_KEYS));
    const zip = await ZipReader.open(at('align.pt'));
    try {
      expect([...zip.entries.keys()]).toEqual([
        'archive/data.pkl', 'archive/byteorder',
        ...[...SMALL_KEYS.keys()].map((_, i) => `archive/data/${i}`), 'archive/version',
      ]);
      for (const e of zip.entries.values()) {
        expect(e.method, e.name).toBe(0);
        expect((await zip.dataOffset(e)) % 64, e.name).toBe(0);
      }
      expect(new TextDecoder().decode(await zip.read('archive/version'))).toBe('3\n');
    } finally {
      await zip.close();
    }
  });

  it('zip64 records read back the same', async () => {
    const state = randomState(SMALL_KEYS);
    await writeCheckpoint(at('z64.pt'), state, { zip64: true });
    expectSameTensors(state, await readCheckpoint(at('z64.pt')));
  });

  it('prefix keeps only the sub-module, unwrapping {"model": …}', async () => {
    const state = randomState(new Map([
      ['image_encoder.trunk.pos_embed', [1, 2, 3, 3]],
      ['image_encoder.neck.convs.0.conv.bias', [4]],
      ['sam_mask_decoder.x', [3]],
    ]));
    await writeCheckpoint(at('pre.pt'), state, { wrapModel: true });
    const got = await readCheckpoint(at('pre.pt'), { prefix: 'image_encoder.' });
    expect([...got.keys()]).toEqual(['trunk.pos_embed', 'neck.convs.0.conv.bias']);
    expect(got.get('trunk.pos_embed')!.data).toEqual(state.get('image_encoder.trunk.pos_embed')!.data);
    const listed = await listCheckpoint(at('pre.pt'), { prefix: 'image_encoder.' });
    expect(listed).toEqual([
      { name: 'trunk.pos_embed', dtype: 'float32', shape: [1, 2, 3, 3] },
      { name: 'neck.convs.0.conv.bias', dtype: 'float32', shape: [4] },
    ]);
  });

  it('.pt → safetensors → .pt keeps every tensor byte for byte', async () => {
    const state = randomState(SMALL_KEYS);
    await writeCheckpoint(at('c.pt'), state);
    await writeSafetensors(at('c.safetensors'), await readCheckpoint(at('c.pt')));
    const { tensors } = await readSafetensors(at('c.safetensors'));
    expectSameTensors(state, tensors);
    await writeCheckpoint(at('d.pt'), tensors);
    expect(readFileSync(at('d.pt')).equals(readFileSync(at('c.pt')))).toBe(true);
  });

  it('deflated entries (a checkpoint re-zipped by another tool) read the same', async () => {
    const state = randomState(SMALL_KEYS);
    await writeCheckpoint(at('e.pt'), state);
    const zip = await ZipReader.open(at('e.pt'));
    const entries: [string, Uint8Array][] = [];
    for (const name of zip.entries.keys()) entries.push([name, await zip.read(name)]);
    await zip.close();
    writeDeflatedZip(at('deflated.pt'), entries);
    expectSameTensors(state, await readCheckpoint(at('deflated.pt')));
  });

  it('views: shared storages, offsets and transposed strides are gathered', async () => {
    // One storage of 12 floats: `a` is all of it as [3, 4], `b` its transpose [4, 3] (strides
    // [1, 4]), `c` the row slice a[1] ([4] at offset 4).
    const storage = Float32Array.from({ length: 12 }, (_, i) => i + 0.25);
    const p = new Pk().proto().orderedDict().mark();
    p.str('a').tensor('FloatStorage', '0', 12, 0, [3, 4], [4, 1]);
    p.str('b').tensor('FloatStorage', '0', 12, 0, [4, 3], [1, 4]);
    p.str('c').tensor('FloatStorage', '0', 12, 4, [4], [1]);
    writeRawPt(at('views.pt'), p.op(0x75).stop().bytes(), [bytesOf(storage)]);
    const got = await readCheckpoint(at('views.pt'));
    expect([...got.get('a')!.data]).toEqual([...storage]);
    const bT = [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11].map((i) => storage[i]);
    expect([...got.get('b')!.data]).toEqual(bT);
    expect([...got.get('c')!.data]).toEqual([...storage.slice(4, 8)]);
  });

  it('bfloat16 and float16 storages convert exactly to float32', async () => {
    const r = rng(SEED + 1);
    const f = Float32Array.from({ length: 37 }, () => (r() - 0.5) * 1e3);
    const bits = new Uint32Array(f.buffer);
    const bf16 = Uint16Array.from(bits, (b) => b >>> 16);
    const bfWant = Float32Array.from(new Float32Array(Uint32Array.from(bf16, (h) => h << 16).buffer));
    // Every float16 bit pattern, checked against an independent bit-level decoding.
    const f16 = Uint16Array.from({ length: 65536 }, (_, i) => i);
    const tensors = [
      { name: 'bf', dtype: 'bfloat16' as DType, shape: [37], storageKey: '0' },
      { name: 'h', dtype: 'float16' as DType, shape: [256, 256], storageKey: '1' },
    ];
    writeRawPt(at('half.pt'), pickleStateDict(tensors, true),
      [new Uint8Array(bf16.buffer), new Uint8Array(f16.buffer)]);
    expect(await listCheckpoint(at('half.pt'))).toEqual([
      { name: 'bf', dtype: 'bfloat16', shape: [37] },
      { name: 'h', dtype: 'float16', shape: [256, 256] },
    ]);
    const got = await readCheckpoint(at('half.pt'));
    expect(bytesOf(got.get('bf')!.data)).toEqual(bytesOf(bfWant));
    const h = got.get('h')!.data;
    const wrong: string[] = [];
    for (let i = 0; i < 65536; i++) {
      const want = refHalf(i);
      const same = Number.isNaN(want) ? Number.isNaN(h[i]) : Object.is(h[i], want);
      if (!same) wrong.push(`0x${i.toString(16)}: ${h[i]} vs ${want}`);
    }
    expect(wrong.slice(0, 5)).toEqual([]);
    expect(halfToFloat(0x7bff)).toBe(65504);
  });

  it('checkStateDict lists missing, unexpected and mis-shaped keys by full name', () => {
    const got = randomState(new Map([['a.weight', [2, 3]], ['b.bias', [4]], ['extra.x', [1]]]));
    const expected = new Map([['a.weight', [3, 2]], ['b.bias', [4]], ['c.weight', [5]]]);
    let msg = '';
    try {
      checkStateDict(expected, got, 'model.pt');
    } catch (e) {
      msg = (e as Error).message;
    }
    expect(msg).toMatch(/^model\.pt: /);
    expect(msg).toContain('missing (1): c.weight');
    expect(msg).toContain('unexpected (1): extra.x');
    expect(msg).toContain('a.weight: expected [3, 2], got [2, 3]');
    expect(() => checkStateDict(new Map([['b.bias', [4]]]),
      new Map([['b.bias', got.get('b.bias')!]]), 'x')).not.toThrow();
  });

  it.skipIf(!HAVE_SHARED)(
    'full tiny image-encoder key set (needs ../shared/sam2-checkpoints) round trips',
    async () => {
      const keys = readKeysFile(join(SHARED_CKPT, 'sam2.1_hiera_tiny.image_encoder_keys.txt'));
      const shapes = new Map(keys.map((k) => [k.name.replace(/^model\./, ''), k.shape]));
      const state = randomState(shapes);
      await writeCheckpoint(at('tiny.pt'), state, { wrapModel: true });
      const got = await readCheckpoint(at('tiny.pt'), { prefix: 'image_encoder.' });
      const expected = new Map(keys.map((k) => [k.name.replace(/^model\.image_encoder\./, ''), k.shape]));
      checkStateDict(expected, got, 'tiny.pt');
      for (const [k, t] of got) {
        const want = state.get(`image_encoder.${k}`)!.data;
        expect(Buffer.from(bytesOf(t.data)).equals(Buffer.from(bytesOf(want))), k).toBe(true);
      }
    },
  );
});

/** float16 bits → float32 by building the float32 bit pattern (independent of halfToFloat). */
function refHalf(h: number): number {
  const sign = (h >>> 15) << 31;
  let exp = (h >>> 10) & 0x1f;
  let frac = h & 0x3ff;
  const out = new Uint32Array(1);
  if (exp === 31) out[0] = sign | 0x7f800000 | (frac << 13);
  else if (exp === 0 && frac === 0) out[0] = sign;
  else {
    if (exp === 0) {
      // Subnormal: normalise the fraction into the implicit-one form.
      exp = 1;
      while (!(frac & 0x400)) {
        frac <<= 1;
        exp--;
      }
      frac &= 0x3ff;
    }
    out[0] = sign | ((exp - 15 + 127) << 23) | (frac << 13);
  }
  return new Float32Array(out.buffer)[0];
}
