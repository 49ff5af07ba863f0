import { afterAll, describe, it } from 'vitest';
import { closeGpu } from '../src/gpu/runtime.js';
import { addScalar, mul, scale, sub } from '../src/ops/elementwise.js';
import { checkOp, randn } from './helpers.js';
import { broadcast2, sumLeading } from './ref/elementwise.js';

afterAll(() => closeGpu());

const numelOf = (s: number[]) => s.reduce((a, b) => a * b, 1);

// One f32 rounding per element: rtol 1e-6 (≈ 8 ulp) is tight.
const ONE_ROUNDING = { rtol: 1e-6, atol: 1e-7 };
// A broadcast operand's gradient is a tree sum of up to 10001 f32 terms: ≲ 1e-7·Σ|terms| per
// element, well under 1e-6 of the largest (≈ sqrt(R)-sized) sum.
const SUMMED = { rtol: 1e-6, atol: 1e-6 };

const CASES: [number[], number[]][] = [
  [[1], [1]],
  [[7], [7]],
  [[1031], [1031]],
  [[70007], [70007]],
  [[2, 3, 5, 7], [5, 7]],
  [[2, 3, 5, 7], [7]],
  [[10001, 7], [7]],
];

describe('sub', () => {
  it.each(CASES)('a %j - b %j', async (sa, sb) => {
    await checkOp({
      label: `sub ${sa.join('x')} - ${sb.join('x')}`,
      inputs: [randn(numelOf(sa)), randn(numelOf(sb))],
      shapes: [sa, sb],
      gpu: (a, b) => sub(a, b),
      ref: ([a, b]) => broadcast2(a, b, (x, y) => x - y),
      refBackward: ([, b], g) => [g.slice(), sumLeading(g, b.length).map((v) => -v)],
      outShape: sa,
      tol: ONE_ROUNDING,
      gradTol: SUMMED,
    });
  });
});

describe('mul', () => {
  it.each(CASES)('a %j * b %j', async (sa, sb) => {
    await checkOp({
      label: `mul ${sa.join('x')} * ${sb.join('x')}`,
      inputs: [randn(numelOf(sa)), randn(numelOf(sb))],
      shapes: [sa, sb],
      gpu: (a, b) => mul(a, b),
      ref: ([a, b]) => broadcast2(a, b, (x, y) => x * y),
      refBackward: ([a, b], g) => [
        broadcast2(g, b, (x, y) => x * y),
        sumLeading(g.map((v, i) => v * a[i]), b.length),
      ],
      outShape: sa,
      tol: ONE_ROUNDING,
      gradTol: SUMMED,
    });
  });

  it('gives only the needed gradient (frozen b)', async () => {
    await checkOp({
      label: 'mul frozen b',
      inputs: [randn(3 * 13), randn(13)],
      shapes: [[3, 13], [13]],
      grads: [true, false],
      gpu: (a, b) => mul(a, b),
      ref: ([a, b]) => broadcast2(a, b, (x, y) => x * y),
      refBackward: ([, b], g) => [broadcast2(g, b, (x, y) => x * y), null],
      outShape: [3, 13],
      tol: ONE_ROUNDING,
    });
  });
});

describe('scale and addScalar', () => {
  it.each([[1], [7], [1031], [70007]])('scale at n = %i', async (n) => {
    const s = -0.37;
    await checkOp({
      label: `scale ${n}`,
      inputs: [randn(n)],
      shapes: [[n]],
      gpu: (a) => scale(a, s),
      // The GPU multiplies by s rounded to f32.
      ref: ([a]) => a.map((v) => v * Math.fround(s)),
      refBackward: (_x, g) => [g.map((v) => v * Math.fround(s))],
      outShape: [n],
      tol: ONE_ROUNDING,
    });
  });

  it.each([[1], [7], [1031], [70007]])('addScalar at n = %i', async (n) => {
    const c = 2.5;
    await checkOp({
      label: `addScalar ${n}`,
      inputs: [randn(n)],
      shapes: [[n]],
      gpu: (a) => addScalar(a, c),
      ref: ([a]) => a.map((v) => v + c),
      refBackward: (_x, g) => [g.slice()],
      outShape: [n],
      tol: ONE_ROUNDING,
    });
  });
});
