/**
 * f16 storage: the CPU conversion (against an independent reference), the GPU cast kernel (bit for
 * bit against the CPU), upload/download, NaN poisoning of f16 outputs, and variant selection.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { closeGpu } from '../src/gpu/runtime.js';
import { cast } from '../src/ops/cast.js';
import { F16_EPS, f16Bits, f16Value, roundArrayF16, toF16Bits } from '../src/util/f16.js';
import { add } from '../src/ops/add.js';
import { SEED, nextRng, randn, testEngine } from './helpers.js';
import { f16Supported } from './f16-helpers.js';

afterAll(() => closeGpu());

/** Decodes binary16 by rebuilding the f32 bit pattern (a second, independent decoder). */
function refDecode(h: number): number {
  const s = (h & 0x8000) << 16;
  const e = (h >> 10) & 0x1f;
  let m = h & 0x3ff;
  const u = new Uint32Array(1);
  const f = new Float32Array(u.buffer);
  if (e === 0) {
    if (m === 0) u[0] = s;
    else {
      // Normalise the subnormal: shift until the implicit bit appears.
      let ex = -14;
      while (!(m & 0x400)) {
        m <<= 1;
        ex--;
      }
      u[0] = s | ((ex + 127) << 23) | ((m & 0x3ff) << 13);
    }
  } else if (e === 31) u[0] = s | 0x7f800000 | (m << 13);
  else u[0] = s | ((e - 15 + 127) << 23) | (m << 13);
  return f[0];
}

// The positive finite halves in increasing order, with 2^16 standing for +inf (the value RNE
// rounds to past 65520; its "mantissa" 0 is even, so ties at 65520 go up, as IEEE says).
const POS: number[] = [];
for (let h = 0; h < 0x7c00; h++) POS.push(f16Value(h));
POS.push(65536);

/** Nearest half by binary search over every positive half, ties to the even bit pattern. */
function refRound(x: number): number {
  if (Number.isNaN(x)) return 0x7e00;
  const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
  const a = Math.abs(x);
  if (a >= 65536) return sign | 0x7c00;
  let lo = 0;
  let hi = POS.length - 1;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (POS[mid] <= a) lo = mid;
    else hi = mid;
  }
  const dl = a - POS[lo];
  const dh = POS[hi] - a;
  const pick = dl < dh ? lo : dh < dl ? hi : lo % 2 === 0 ? lo : hi;
  return sign | pick; // index = bit pattern (index 0x7c00 is 65536 = inf)
}

describe('f16 CPU conversion', () => {
  it('decodes all 65536 bit patterns as the independent decoder does', () => {
    for (let h = 0; h < 0x10000; h++) {
      const a = f16Value(h);
      const b = refDecode(h);
      if (!(Object.is(a, b) || (Number.isNaN(a) && Number.isNaN(b)))) {
        throw new Error(`bits 0x${h.toString(16)}: ${a} vs ${b}`);
      }
    }
  });

  it('rounds every half, every midpoint (ties to even) and its neighbours as the reference', () => {
    let checked = 0;
    const check = (x: number) => {
      const got = f16Bits(x);
      const want = refRound(x);
      if (got !== want) {
        throw new Error(`f16Bits(${x}) = 0x${got.toString(16)}, want 0x${want.toString(16)}`);
      }
      checked++;
    };
    for (let h = 0; h < 0x7c00; h++) {
      const v = f16Value(h);
      const next = h + 1 < 0x7c00 ? f16Value(h + 1) : 65536;
      const mid = (v + next) / 2;
      // Neighbours of the midpoint one f32 ulp away, as an f32 input would carry them.
      const f = Math.fround;
      for (const x of [v, mid, f(mid * (1 + 2 ** -23)), f(mid * (1 - 2 ** -23))]) {
        check(x);
        check(-x);
      }
    }
    for (const x of [0, -0, 65504, 65519.99, 65520, 1e6, Infinity, -Infinity, 2 ** -24, 2 ** -25,
      2 ** -25 * 1.0001, 2 ** -26, 1e-10]) check(x);
    // Random f32 bit patterns (every exponent, NaNs included).
    const r = nextRng();
    const u = new Uint32Array(1);
    const fl = new Float32Array(u.buffer);
    for (let i = 0; i < 200000; i++) {
      u[0] = Math.floor(r() * 2 ** 32);
      check(fl[0]);
    }
    console.log(`f16 rounding: ${checked} values match the reference (seed ${SEED})`);
  });

  it('is exact to F16_EPS relative on normal values', () => {
    const xs = randn(10000, nextRng(), 100);
    let worst = 0;
    for (const x of xs) {
      if (Math.abs(x) < 2 ** -14) continue;
      worst = Math.max(worst, Math.abs(f16Value(f16Bits(x)) - x) / Math.abs(x));
    }
    console.log(
      `f16 round-trip: max relative error ${worst.toExponential(3)} ` +
        `(bound 2^-11 = ${F16_EPS.toExponential(3)})`,
    );
    expect(worst).toBeLessThanOrEqual(F16_EPS);
  });
});

describe.skipIf(!(await f16Supported()))('f16 tensors on the GPU', () => {
  it('upload rounds on the CPU and download widens exactly (odd length)', async () => {
    const e = await testEngine();
    const x = randn(1031, nextRng(), 30);
    x[0] = 1e6;
    x[1] = -70000;
    x[2] = 3e-8;
    const t = e.fromArray(x, [1031], false, 'f16');
    expect(t.dtype).toBe('f16');
    const got = await t.toArray();
    const want = roundArrayF16(x);
    for (let i = 0; i < x.length; i++) {
      expect(Object.is(got[i], want[i]), `element ${i}`).toBe(true);
    }
    t.dispose();
  });

  it('GPU cast f32 -> f16 matches the CPU rounding bit for bit; f16 -> f32 is exact', async () => {
    const e = await testEngine();
    // Halves, midpoints (ties), overflow, subnormals and NaN, as f32 values.
    const vals: number[] = [];
    for (let h = 0; h < 0x7c00; h += 7) {
      const v = f16Value(h);
      vals.push(v, -v, Math.fround((v + f16Value(h + 1)) / 2));
    }
    vals.push(65504, 65519, 65520, 1e30, -1e30, NaN, Infinity, -Infinity, 2 ** -25, 2 ** -26);
    for (const v of randn(5001, nextRng(), 1000)) vals.push(v);
    const x32 = Float32Array.from(vals);
    const t = e.fromArray(x32, [x32.length]);
    const h = cast(t, 'f16');
    expect(h.dtype).toBe('f16');
    const bytes = await e.gpu.read(h.buffer, Math.ceil(x32.length / 2) * 4);
    const raw = new Uint16Array(bytes, 0, x32.length);
    const want = toF16Bits(x32);
    let mismatches = 0;
    for (let i = 0; i < x32.length; i++) {
      const nan = Number.isNaN(x32[i]);
      // NaN: any NaN pattern (the payload is the adapter's); everything else bit-exact.
      const ok = nan ? (raw[i] & 0x7c00) === 0x7c00 && (raw[i] & 0x3ff) !== 0 : raw[i] === want[i];
      if (!ok) {
        mismatches++;
        const hex = (v: number) => `0x${v.toString(16)}`;
        if (mismatches < 5) {
          console.error(`cast ${x32[i]}: GPU ${hex(raw[i])}, CPU ${hex(want[i])}`);
        }
      }
    }
    expect(mismatches).toBe(0);
    const back = cast(h, 'f32');
    const got = await back.toArray();
    const widened = roundArrayF16(x32);
    for (let i = 0; i < x32.length; i++) {
      if (Number.isNaN(x32[i])) expect(got[i]).toBeNaN();
      else expect(got[i]).toBe(widened[i]);
    }
    console.log(`cast: ${x32.length} values, GPU f32->f16 bits equal the CPU's RNE rounding`);
    for (const z of [t, h, back]) z.dispose();
  });

  it('cast backward casts the gradient back', async () => {
    const e = await testEngine();
    const x = randn(777, nextRng());
    const t = e.fromArray(x, [777], true);
    const h = cast(t, 'f16');
    const g = roundArrayF16(randn(777, nextRng()));
    e.backward(h, e.fromArray(g, [777], false, 'f16'));
    expect(t.grad?.dtype).toBe('f32');
    const got = await t.grad!.toArray();
    for (let i = 0; i < 777; i++) expect(got[i]).toBe(g[i]);
    t.dispose();
    h.dispose();
  });

  it('loading a state dict into an f16 parameter rounds the values', async () => {
    const e = await testEngine();
    const { Linear } = await import('../src/nn/layers.js');
    const { Rng } = await import('../src/util/random.js');
    const lin = new Linear(e, 7, 5, new Rng(3));
    lin.weight.convert('f16');
    const w = Float32Array.from(randn(35, nextRng(), 3));
    const b = Float32Array.from(randn(5));
    lin.loadStateDict(new Map([
      ['weight', { shape: [5, 7], data: w }],
      ['bias', { shape: [5], data: b }],
    ]));
    expect(lin.weight.dtype).toBe('f16');
    expect([...(await lin.weight.toArray())]).toEqual([...roundArrayF16(w)]);
    expect([...(await lin.bias!.toArray())]).toEqual([...b]);
    lin.weight.dispose();
    lin.bias!.dispose();
  });

  it('poisons new f16 outputs with NaN', async () => {
    const e = await testEngine();
    const t = e.empty([333], undefined, 'f16');
    const got = await t.toArray();
    expect(got.every((v) => Number.isNaN(v))).toBe(true);
    t.dispose();
  });

  it('picks the variant from the buffers and refuses f16 where a kernel has none', async () => {
    const e = await testEngine();
    const a = e.fromArray([1, 2, 3], [3], false, 'f16');
    const b = e.fromArray([0.5, 0.25, 0.125], [3]);
    const y = add(a, b);
    expect(y.dtype).toBe('f16');
    expect([...(await y.toArray())]).toEqual([1.5, 2.25, 3.125]);
    // The loss family has no f16 variant: binding an f16 buffer names the binding.
    const { lossKernelsRefuseF16 } = await import('./f16-helpers.js');
    expect(() => lossKernelsRefuseF16(e, a)).toThrow(/takes f32 only/);
    for (const t of [a, b, y]) t.dispose();
  });

  it('bumps the pipeline key only for f16 variants', async () => {
    const { pipelineKey } = await import('../src/gpu/kernel.js');
    const { addKernel } = await import('../src/kernels/elementwise.js');
    expect(pipelineKey(addKernel, { WG: 256 })).toBe('elementwise#add{WG=256}');
    expect(pipelineKey(addKernel, { WG: 256 }, { dt_a: 'f32' })).toBe('elementwise#add{WG=256}');
    expect(pipelineKey(addKernel, { WG: 256 }, { dt_a: 'f16', dt_out: 'f16' })).toBe(
      'elementwise#add{WG=256}<dt_a=f16,dt_out=f16>',
    );
    const src = addKernel.family.source({ dt_a: 'f16' });
    expect(src.startsWith('enable f16;')).toBe(true);
    expect(src).toContain('alias dt_a = f16;');
    expect(addKernel.family.source()).not.toContain('enable f16');
    // An alias the file does not use, or a type for a binding the kernel does not have: errors.
    expect(() => addKernel.family.source({ dt_nope: 'f16' })).toThrow(/no element-type alias 'dt_nope'/);
    expect(() =>
      addKernel.family.kernel({ ...addKernel, name: 'bad', types: { nope: 'dt_a' } }),
    ).toThrow(/unknown binding 'nope'/);
  });
});
