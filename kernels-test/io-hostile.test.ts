import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { unpickle } from '../src/io/pickle.js';
import { readCheckpoint, writeCheckpoint } from '../src/io/pt.js';
import { readSafetensors } from '../src/io/safetensors.js';
import { zipChunks, type ZipInput } from '../src/io/zip.js';
import { Pk, randomState, tempDir } from './io-fixtures.js';

const tmp = tempDir();
afterAll(() => tmp.cleanup());
const at = (name: string) => join(tmp.dir, name);

function writeZip(path: string, entries: [string, Uint8Array][], forceZip64 = false) {
  const inputs: ZipInput[] = entries.map(([name, b]) => ({ name, chunks: [b] }));
  writeFileSync(path, Buffer.concat([...zipChunks(inputs, { forceZip64 })]));
}

/** A `.pt` whose pickle is `pkl`, with the given storages. */
function ptWith(name: string, pkl: Uint8Array, storages: Uint8Array[] = []): string {
  writeZip(at(name), [['archive/data.pkl', pkl],
    ...storages.map((s, i): [string, Uint8Array] => [`archive/data/${i}`, s])]);
  return at(name);
}

/** `mod.name(arg)` via GLOBAL + REDUCE, the classic code-execution pickle. */
const callPickle = (mod: string, name: string) =>
  new Pk().proto().global(mod, name).mark().str('echo pwned').op(0x74).reduce().stop().bytes();

describe('hostile and broken inputs are refused, naming the problem', () => {
  it.each([
    ['os', 'system'],
    ['posix', 'system'],
    ['builtins', 'eval'],
    ['subprocess', 'Popen'],
    ['torch', 'load'],
  ])('GLOBAL %s.%s + REDUCE is refused at the global', (mod, name) => {
    expect(() => unpickle(callPickle(mod, name), 'evil.pkl'))
      .toThrow(`evil.pkl: pickle: refusing global ${mod}.${name}`);
  });

  it('STACK_GLOBAL (protocol 4) builtins.eval is refused too', () => {
    const p = new Pk().proto(4).op(0x8c, 8, ...new TextEncoder().encode('builtins'))
      .op(0x8c, 4, ...new TextEncoder().encode('eval')).op(0x93).stop().bytes();
    expect(() => unpickle(p, 'evil.pkl')).toThrow('refusing global builtins.eval');
  });

  it('a checkpoint carrying os.system names the file and the global', async () => {
    const path = ptWith('evil.pt', callPickle('os', 'system'));
    await expect(readCheckpoint(path)).rejects.toThrow(`${path}: pickle: refusing global os.system`);
  });

  it('allowed globals cannot be abused: storage classes are not callable, opcodes are limited', () => {
    const callStorage = new Pk().proto().global('torch', 'FloatStorage').mark().int(5).op(0x74)
      .reduce().stop().bytes();
    expect(() => unpickle(callStorage, 'x')).toThrow('refusing to call torch.FloatStorage');
    for (const op of [0x69 /* INST */, 0x6f /* OBJ */, 0x81 /* NEWOBJ */, 0x50 /* PERSID */]) {
      expect(() => unpickle(new Pk().proto().op(op).stop().bytes(), 'x')).toThrow('unsupported opcode');
    }
    expect(() => unpickle(new Pk().proto().emptyDict().bytes(), 'x')).toThrow('no STOP opcode');
    expect(() => unpickle(new Pk().proto().op(0x68, 7).stop().bytes(), 'x')).toThrow('memo key 7');
  });

  it('huge declared lengths are refused before any allocation', () => {
    const longStr = new Pk().proto().op(0x58, 0xf0, 0xff, 0xff, 0xff).stop().bytes();
    expect(() => unpickle(longStr, 'x')).toThrow('runs past the end of the pickle');
    const str8 = new Pk().proto().op(0x8d, 0, 0, 0, 0, 0, 0, 0, 0x40).stop().bytes();
    expect(() => unpickle(str8, 'x')).toThrow('larger than the pickle');
    const long4 = new Pk().proto().op(0x8b, 0, 0xca, 0x9a, 0x3b).stop().bytes();
    expect(() => unpickle(long4, 'x')).toThrow('too large');
  });

  it('tensor shape × dtype must match the storage bytes', async () => {
    // Storage declares 100 floats but the entry holds 15.
    const p1 = new Pk().proto().orderedDict().str('w')
      .tensor('FloatStorage', '0', 100, 0, [10, 10], [10, 1]).setitem().stop().bytes();
    const path1 = ptWith('short.pt', p1, [new Uint8Array(60)]);
    await expect(readCheckpoint(path1)).rejects.toThrow(
      `${path1}: storage 0 declares 100 float32 (400 bytes) but archive/data/0 holds 60 bytes`);
    // The view [4, 4] does not fit a 15-element storage.
    const p2 = new Pk().proto().orderedDict().str('w')
      .tensor('FloatStorage', '0', 15, 0, [4, 4], [4, 1]).setitem().stop().bytes();
    expect(() => unpickle(p2, 'x')).toThrow('does not fit its storage 0 of 15 elements');
    // 2^25 × 2^25 elements declared against a tiny entry: refused without allocating.
    const p3 = new Pk().proto().orderedDict().str('w')
      .tensor('FloatStorage', '0', 2 ** 50, 0, [2 ** 25, 2 ** 25], [2 ** 25, 1]).setitem().stop().bytes();
    const path3 = ptWith('huge.pt', p3, [new Uint8Array(16)]);
    await expect(readCheckpoint(path3)).rejects.toThrow('declares 1125899906842624 float32');
  });

  it('non-tensor values and unknown storage types are refused by key', async () => {
    const p = new Pk().proto().orderedDict().str('epoch').int(3).setitem().stop().bytes();
    await expect(readCheckpoint(ptWith('epoch.pt', p))).rejects.toThrow('entry epoch is a number');
    expect(() => unpickle(new Pk().proto().global('torch', 'ComplexFloatStorage').stop().bytes(), 'x'))
      .toThrow('unsupported dtype: torch.ComplexFloatStorage');
  });

  it('bad zips: not a zip, corrupt central directory, offsets past the end, CRC mismatch', async () => {
    writeFileSync(at('junk.pt'), Buffer.from('this is not a zip at all, just some text'.repeat(4)));
    await expect(readCheckpoint(at('junk.pt'))).rejects.toThrow('no central directory');
    writeFileSync(at('empty.pt'), Buffer.alloc(0));
    await expect(readCheckpoint(at('empty.pt'))).rejects.toThrow('no central directory');

    await writeCheckpoint(at('good.pt'), randomState(new Map([['w', [4, 4]]])));
    const good = readFileSync(at('good.pt'));
    const eocd = good.length - 22;
    const cdOffset = good.readUInt32LE(eocd + 16);

    const badSig = Buffer.from(good);
    badSig.writeUInt32LE(0x12345678, cdOffset);
    writeFileSync(at('badsig.pt'), badSig);
    await expect(readCheckpoint(at('badsig.pt'))).rejects.toThrow('corrupt zip: bad central directory');

    const pastEnd = Buffer.from(good);
    pastEnd.writeUInt32LE(good.length * 4, eocd + 16);
    writeFileSync(at('pastend.pt'), pastEnd);
    await expect(readCheckpoint(at('pastend.pt'))).rejects.toThrow('past the end of the file');

    const localPast = Buffer.from(good);
    localPast.writeUInt32LE(0x7ffffff0, cdOffset + 42);
    writeFileSync(at('localpast.pt'), localPast);
    await expect(readCheckpoint(at('localpast.pt'))).rejects.toThrow('lies past the end of the data');

    const bitFlip = Buffer.from(good);
    bitFlip[good.indexOf('archive/data/0') + 'archive/data/0'.length + 60] ^= 1;
    writeFileSync(at('flip.pt'), bitFlip);
    await expect(readCheckpoint(at('flip.pt'))).rejects.toThrow('CRC mismatch');
  });

  it('a zip64 entry declaring 2^50 bytes is refused without allocating', async () => {
    writeZip(at('z64.pt'), [['archive/data.pkl', new Uint8Array(8)]], true);
    const b = readFileSync(at('z64.pt'));
    const cd = b.indexOf(Buffer.from([0x50, 0x4b, 0x01, 0x02]));
    const extra = cd + 46 + 'archive/data.pkl'.length;
    b.writeBigUInt64LE(2n ** 50n, extra + 4);
    b.writeBigUInt64LE(2n ** 50n, extra + 12);
    writeFileSync(at('z64.pt'), b);
    await expect(readCheckpoint(at('z64.pt'))).rejects.toThrow('lies past the end of the data');
  });

  it('safetensors: huge header length and huge shapes are refused before allocating', async () => {
    const f = Buffer.alloc(16);
    f.writeBigUInt64LE(2n ** 60n, 0);
    writeFileSync(at('huge.safetensors'), f);
    await expect(readSafetensors(at('huge.safetensors'))).rejects.toThrow('exceeds the file');
    const header = JSON.stringify({ w: { dtype: 'F32', shape: [1e9, 1e9], data_offsets: [0, 8] } });
    const g = Buffer.concat([Buffer.alloc(8), Buffer.from(header), Buffer.alloc(8)]);
    g.writeBigUInt64LE(BigInt(header.length), 0);
    writeFileSync(at('shape.safetensors'), g);
    await expect(readSafetensors(at('shape.safetensors'))).rejects.toThrow('needs 4000000000000000000 bytes');
  });
});
