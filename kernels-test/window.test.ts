import { afterAll, describe, expect, it } from 'vitest';
import { closeGpu } from '../src/gpu/runtime.js';
import { windowPartition, windowUnpartition } from '../src/ops/window.js';
import { checkOp, expectClose, f32, randn, testEngine, type Tol } from './helpers.js';
import { type WinShape, windowPartitionRef, windowUnpartitionRef } from './ref/attention.js';

afterAll(() => closeGpu());

// Pure data movement (copies and zeros): the result must be bit-exact.
const EXACT: Tol = { rtol: 0, atol: 0 };

// [B, H, W, C, ws]: padding on both sides with odd window counts, exact fit, one-pixel windows,
// a window larger than the map, SAM2's ws 14 on a 16x16 map, and more tokens (one workgroup
// each) than a grid dimension holds (257x260 in ws 8: 69696 window tokens, 66820 pixels).
const CASES: [number, number, number, number, number][] = [
  [1, 257, 260, 2, 8],
  [2, 13, 10, 5, 4],
  [3, 7, 7, 3, 7],
  [2, 5, 9, 2, 2],
  [2, 3, 5, 4, 1],
  [1, 3, 2, 3, 4],
  [2, 16, 16, 3, 14],
];

function windows(s: WinShape): number {
  return s.B * Math.ceil(s.H / s.ws) * Math.ceil(s.W / s.ws);
}

describe('windowPartition', () => {
  it.each(CASES)('B %i, %ix%i, C %i, ws %i', async (B, H, W, C, ws) => {
    const s: WinShape = { B, H, W, C, ws };
    await checkOp({
      label: `windowPartition ${B}x${H}x${W}x${C} ws${ws}`,
      inputs: [randn(B * H * W * C)],
      shapes: [[B, H, W, C]],
      gpu: (x) => windowPartition(x, ws),
      ref: ([x]) => windowPartitionRef(s, x),
      refBackward: (_x, g) => [windowUnpartitionRef(s, g)],
      outShape: [windows(s), ws * ws, C],
      tol: EXACT,
    });
  });
});

describe('windowUnpartition', () => {
  it.each(CASES)('B %i, %ix%i, C %i, ws %i', async (B, H, W, C, ws) => {
    const s: WinShape = { B, H, W, C, ws };
    await checkOp({
      label: `windowUnpartition ${B}x${H}x${W}x${C} ws${ws}`,
      inputs: [randn(windows(s) * ws * ws * C)],
      shapes: [[windows(s), ws * ws, C]],
      gpu: (y) => windowUnpartition(y, ws, [H, W]),
      ref: ([y]) => windowUnpartitionRef(s, y),
      refBackward: (_y, g) => [windowPartitionRef(s, g)],
      outShape: [B, H, W, C],
      tol: EXACT,
    });
  });
});

describe('window round trips', () => {
  it('unpartition(partition(x)) = x and partition(unpartition(y)) zeroes the padding', async () => {
    const e = await testEngine();
    const s: WinShape = { B: 2, H: 13, W: 10, C: 5, ws: 4 };
    const x = f32(randn(s.B * s.H * s.W * s.C));
    const y = f32(randn(windows(s) * s.ws * s.ws * s.C));
    const [back, again, padded] = await e.scopeAsync(async () => {
      const tx = e.fromArray(x, [s.B, s.H, s.W, s.C]);
      const ty = e.fromArray(y, [windows(s), s.ws * s.ws, s.C]);
      const win = windowPartition(tx, s.ws);
      return Promise.all([
        windowUnpartition(win, s.ws, [s.H, s.W]).toArray(),
        windowPartition(windowUnpartition(ty, s.ws, [s.H, s.W]), s.ws).toArray(),
        win.toArray(),
      ]);
    });
    expectClose(back, x, EXACT, 'unpartition(partition(x))');
    const keep = windowPartitionRef(s, windowUnpartitionRef(s, y));
    expectClose(again, keep, EXACT, 'partition(unpartition(y))');
    // 13x10 pads to 16x12: 16*12 - 130 = 62 zero tokens per image.
    let zeroTokens = 0;
    for (let t = 0; t < padded.length / s.C; t++) {
      if (padded.subarray(t * s.C, (t + 1) * s.C).every((v) => v === 0)) zeroTokens++;
    }
    expect(zeroTokens).toBe(2 * 62);
  });

  it('rejects bad shapes', async () => {
    const e = await testEngine();
    e.scope(() => {
      expect(() => windowPartition(e.zeros([2, 4, 4]), 2)).toThrow(/windowPartition: expected/);
      expect(() => windowPartition(e.zeros([1, 4, 4, 2]), 0)).toThrow(/window size/);
      expect(() => windowUnpartition(e.zeros([5, 16, 2]), 4, [8, 8])).toThrow(
        /windowUnpartition: expected windows \[B\*4, 16, C\]/,
      );
    });
  });
});
