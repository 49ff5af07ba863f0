import { afterAll, describe, expect, it } from 'vitest';
import { closeGpu } from '../src/gpu/runtime.js';
import { bceWithLogits, diceLoss } from '../src/ops/loss.js';
import { checkOp, expectClose, nextRng, randn, testEngine, type Tol } from './helpers.js';
import { bceRef, bceRefBackward, diceRef, diceRefBackward } from './ref/loss.js';

afterAll(() => closeGpu());

// The loss is a ratio (Dice) or mean (BCE) of f32 tree sums over <= 67k terms of one sign:
// ~1e-6 relative, so 1e-5 leaves a ~10x margin.
const FWD: Tol = { rtol: 1e-5, atol: 1e-5 };
// Each gradient element is a few f32 products of per-sample sums known to ~1e-6 relative.
const BWD: Tol = { rtol: 1e-5, atol: 1e-5 };

// Finite differences of the float64 reference: a scalar loss of size ~1 with per-element gradients
// down to ~1e-7 (67k elements) needs h = 1e-3 so float64 rounding (~1e-16 / h) stays ~1e-13;
// sigmoid's smooth third derivative keeps the O(h^2) truncation below ~1e-6 relative.
const FD = { h: 1e-3, tol: 1e-5 };

type Targets = 'random' | 'background' | 'foreground';

function data(shape: number[], logits: 'normal' | 'extreme', targets: Targets) {
  const n = shape.reduce((a, b) => a * b, 1);
  const r = nextRng();
  const x =
    logits === 'normal'
      ? randn(n, r, 2)
      : // ±30 with a few moderate values, so p saturates in f32 but the sums stay well defined.
        Float64Array.from({ length: n }, () => (r() < 0.1 ? 4 * r() - 2 : r() < 0.5 ? -30 : 30));
  const y = Float64Array.from({ length: n }, () =>
    targets === 'background' ? 0 : targets === 'foreground' ? 1 : r() < 0.3 ? 1 : 0,
  );
  return { n, x, y };
}

const CASES: [number[], 'normal' | 'extreme', Targets][] = [
  [[1, 1, 37, 41], 'normal', 'random'],
  [[3, 1, 37, 41], 'normal', 'random'],
  [[3, 3, 37, 41], 'normal', 'random'],
  [[2, 1, 131, 257], 'normal', 'random'], // several chunks per sample
  [[3, 1, 37, 41], 'extreme', 'random'],
  [[3, 1, 37, 41], 'normal', 'background'],
  [[1, 1, 37, 41], 'extreme', 'background'],
  [[2, 5, 7], 'normal', 'foreground'],
];

describe('diceLoss', () => {
  const DICE_CASES: [number[], 'normal' | 'extreme', Targets, number][] = [
    ...CASES.map(([s, l, t]): [number[], 'normal' | 'extreme', Targets, number] => [s, l, t, 1e-5]),
    [[2, 1, 37, 41], 'normal', 'background', 1],
  ];
  it.each(DICE_CASES)(
    'matches float64 at %j, %s logits, %s targets, smooth %s',
    async (shape, lg, tg, smooth) => {
      const { x, y } = data(shape, lg, tg);
      const B = shape[0];
      // All background with smooth 1e-5: num = 1e-5, so every gradient is ~1e-13, below what
      // finite differences of a loss of size ~1 resolve in float64; the same formula is
      // FD-checked in the other cases (all background with smooth = 1 included).
      const skipFd = tg === 'background' && smooth < 1e-3;
      await checkOp({
        label: `dice ${shape.join('x')} ${lg} ${tg} smooth ${smooth}`,
        inputs: [x, y],
        shapes: [shape, shape],
        grads: [true, false],
        gpu: (l, t) => diceLoss(l, t, smooth),
        ref: ([a, b]) => diceRef(a, b, B, smooth),
        refBackward: ([a, b], g) => [diceRefBackward(a, b, B, smooth, g[0]), null],
        outShape: [1],
        tol: FWD,
        gradTol: BWD,
        fd: skipFd ? { skip: [0] } : FD,
      });
    },
  );

  it('rejects a target of another shape', async () => {
    const e = await testEngine();
    e.scope(() => {
      expect(() => diceLoss(e.zeros([2, 4, 4]), e.zeros([2, 4, 5]))).toThrow(
        /diceLoss: target expected \[2,4,4\]/,
      );
    });
  });
});

describe('bceWithLogits', () => {
  it.each(CASES)('matches float64 at %j, %s logits, %s targets', async (shape, lg, tg) => {
    const { x, y } = data(shape, lg, tg);
    await checkOp({
      label: `bce ${shape.join('x')} ${lg} ${tg}`,
      inputs: [x, y],
      shapes: [shape, shape],
      grads: [true, false],
      gpu: (l, t) => bceWithLogits(l, t),
      ref: ([a, b]) => bceRef(a, b),
      refBackward: ([a, b], g) => [bceRefBackward(a, b, g[0]), null],
      outShape: [1],
      tol: FWD,
      gradTol: BWD,
      fd: FD,
    });
  });

  it('is exact for confident correct logits (log1p branch)', async () => {
    const e = await testEngine();
    const got = await e.scopeAsync(async () => {
      const l = e.fromArray([30, -30, 20, -25], [4]);
      const t = e.fromArray([1, 0, 1, 0], [4]);
      return bceWithLogits(l, t).toArray();
    });
    const want = bceRef(Float64Array.of(30, -30, 20, -25), Float64Array.of(1, 0, 1, 0))[0];
    // A loss of ~5e-10 kept to a few ulp (measured 2.9e-8 relative; 1e-6, was 1e-5).
    expectClose(got, [want], { rtol: 1e-6, atol: 0 }, 'bce confident logits');
  });
});
