import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { atomicWrite } from '../src/io/atomic.js';
import { PEFT_PREFIX, writePeftAdapter } from '../src/io/peft.js';
import { readSafetensors, writeSafetensors } from '../src/io/safetensors.js';
import { SEED, bytesOf, randomState, rng, tempDir } from './io-fixtures.js';

const tmp = tempDir();
afterAll(() => tmp.cleanup());
const at = (name: string) => join(tmp.dir, name);

/** A safetensors file from a raw header object and data bytes. */
function rawSafetensors(path: string, header: unknown, data: Uint8Array, pad = 0) {
  const json = Buffer.from(JSON.stringify(header) + ' '.repeat(pad));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  writeFileSync(path, Buffer.concat([len, json, data]));
}

const SHAPES = new Map<string, number[]>([
  ['trunk.blocks.0.attn.qkv.weight', [9, 3]],
  ['odd', [7]],
  ['scalar', []],
  ['empty', [0]],
  ['x.y', [2, 3, 5]],
]);

describe(`safetensors (seed ${SEED})`, () => {
  it('round trips bytes, order and metadata; the header keeps data 8-aligned', async () => {
    const state = randomState(SHAPES);
    await writeSafetensors(at('a.safetensors'), state, { format: 'pt', note: 'ünïcode' });
    const { tensors, metadata } = await readSafetensors(at('a.safetensors'));
    expect(metadata).toEqual({ format: 'pt', note: 'ünïcode' });
    expect([...tensors.keys()]).toEqual([...state.keys()]);
    for (const [k, t] of state) {
      expect(tensors.get(k)!.shape).toEqual(t.shape);
      expect(Buffer.from(bytesOf(tensors.get(k)!.data)).equals(Buffer.from(bytesOf(t.data))), k).toBe(true);
    }
    const file = readFileSync(at('a.safetensors'));
    expect(Number(file.readBigUInt64LE(0)) % 8).toBe(0);
    await writeSafetensors(at('b.safetensors'), tensors, metadata);
    expect(readFileSync(at('b.safetensors')).equals(file)).toBe(true);
  });

  it('reads F16 and BF16 (converted to float32)', async () => {
    const r = rng(SEED + 7);
    const f = Float32Array.from({ length: 5 }, () => (r() - 0.5) * 100);
    const bf = Uint16Array.from(new Uint32Array(f.buffer), (b) => b >>> 16);
    const h = Uint16Array.of(0x3c00, 0xc000, 0x0001, 0x7c00, 0x7bff); // 1, -2, 2^-24, inf, 65504
    const data = Buffer.concat([Buffer.from(h.buffer), Buffer.from(bf.buffer)]);
    rawSafetensors(at('half.safetensors'), {
      h: { dtype: 'F16', shape: [5], data_offsets: [0, 10] },
      bf: { dtype: 'BF16', shape: [5], data_offsets: [10, 20] },
    }, data, 3);
    const { tensors } = await readSafetensors(at('half.safetensors'));
    expect([...tensors.get('h')!.data]).toEqual([1, -2, 2 ** -24, Infinity, 65504]);
    const want = new Float32Array(Uint32Array.from(bf, (b) => b << 16).buffer);
    expect([...tensors.get('bf')!.data]).toEqual([...want]);
  });

  const t = (dtype: string, shape: number[], off: [number, number]) =>
    ({ dtype, shape, data_offsets: off });
  it.each([
    ['gap', { a: t('F32', [1], [0, 4]), b: t('F32', [1], [8, 12]) }, 12, 'gap or overlap'],
    ['overlap', { a: t('F32', [2], [0, 8]), b: t('F32', [1], [4, 8]) }, 8, 'gap or overlap'],
    ['past the end', { a: t('F32', [4], [0, 16]) }, 8, 'outside the 8 data bytes'],
    ['dtype × shape ≠ bytes', { a: t('F32', [3], [0, 8]) }, 8, 'needs 12 bytes'],
    ['left-over bytes', { a: t('F32', [1], [0, 4]) }, 8, 'cover 4 of the 8'],
    ['unknown dtype', { a: t('I64', [1], [0, 8]) }, 8, 'unsupported dtype I64'],
    ['extra fields', { a: { ...t('F32', [1], [0, 4]), x: 1 } }, 4, 'unexpected fields'],
    ['negative dim', { a: t('F32', [-1], [0, 4]) }, 4, 'bad shape'],
    ['non-string metadata', { __metadata__: { a: 1 } }, 0, '__metadata__.a is not a string'],
    ['not an object', [1, 2], 0, 'does not start with'],
  ])('refuses a header with %s', async (_name, header, dataLen, msg) => {
    rawSafetensors(at('bad.safetensors'), header, new Uint8Array(dataLen as number));
    await expect(readSafetensors(at('bad.safetensors'))).rejects.toThrow(msg as string);
  });

  it('atomicWrite leaves the old file and no temporary behind when writing fails', async () => {
    await atomicWrite(at('keep.bin'), 'old');
    function* failing() {
      yield new Uint8Array(10);
      throw new Error('disk on fire');
    }
    await expect(atomicWrite(at('keep.bin'), failing())).rejects.toThrow('disk on fire');
    expect(readFileSync(at('keep.bin'), 'utf8')).toBe('old');
    expect(readdirSync(tmp.dir).filter((f) => f.includes('keep.bin'))).toEqual(['keep.bin']);
  });
});

describe('PEFT adapter export', () => {
  it('writes adapter_model.safetensors with PEFT keys and a LoRA adapter_config.json', async () => {
    const state = randomState(new Map([
      ['trunk.blocks.0.attn.qkv.lora_A.weight', [4, 6]],
      ['trunk.blocks.0.attn.qkv.lora_B.weight', [18, 4]],
      ['trunk.blocks.1.attn.proj.lora_A.weight', [4, 6]],
      ['trunk.blocks.1.attn.proj.lora_B.weight', [6, 4]],
    ]));
    const dir = at('adapter');
    await writePeftAdapter(dir, {
      tensors: state,
      config: { r: 4, alpha: 8, dropout: 0.05, targetModules: ['qkv', 'proj'] },
    });
    const { tensors, metadata } = await readSafetensors(join(dir, 'adapter_model.safetensors'));
    expect(metadata).toEqual({ format: 'pt' });
    expect([...tensors.keys()]).toEqual([...state.keys()].map((k) => PEFT_PREFIX + k));
    expect(PEFT_PREFIX).toBe('base_model.model.image_encoder.');
    for (const [k, v] of state) expect(tensors.get(PEFT_PREFIX + k)!.data).toEqual(v.data);
    const config = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8'));
    expect(config).toMatchObject({
      peft_type: 'LORA', r: 4, lora_alpha: 8, lora_dropout: 0.05,
      target_modules: ['qkv', 'proj'], bias: 'none', fan_in_fan_out: false,
      inference_mode: true, use_rslora: false, use_dora: false,
    });
  });

  it('refuses non-LoRA keys and wrong ranks by key', async () => {
    const config = { r: 4, alpha: 8, dropout: 0, targetModules: ['qkv'] };
    const wrongRank = randomState(new Map([['a.qkv.lora_A.weight', [3, 6]]]));
    await expect(writePeftAdapter(at('bad1'), { tensors: wrongRank, config }))
      .rejects.toThrow('a.qkv.lora_A.weight: expected rank 4 in [r, in], got [3, 6]');
    const base = randomState(new Map([['a.qkv.weight', [6, 6]]]));
    await expect(writePeftAdapter(at('bad2'), { tensors: base, config }))
      .rejects.toThrow('a.qkv.weight is not a lora_A/lora_B weight');
    expect(existsSync(at('bad1'))).toBe(false);
  });
});
