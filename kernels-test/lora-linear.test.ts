import { afterAll, describe, expect, it } from 'vitest';
import { closeGpu } from '../src/gpu/runtime.js';
import { loraLinear } from '../src/ops/lora-linear.js';
import {
  checkOp,
  expectClose,
  f32,
  randn,
  reportError,
  spyRuns,
  sumTol,
  testEngine,
} from './helpers.js';
import { type LoraDims, refDropoutMask, refLora, refLoraBackward } from './ref/matmul.js';

afterAll(() => closeGpu());

// The LoRA branch adds a second, rank-r sum: L is the longest sum of an output.
const tolFor = sumTol;

interface Case {
  x: number[];
  outF: number;
  rank: number;
  bias: boolean;
  p: number;
  training: boolean;
}

describe('loraLinear', () => {
  // That the GPU masks equal these is checked by the dropout cases below (forward and backward).
  it('the dropout hash keeps ~1-p of the elements, independently per seed', () => {
    const n = 200_000;
    const m = refDropoutMask(n, 0.1, 1234);
    const kept = m.reduce((s, v) => s + (v > 0 ? 1 : 0), 0) / n;
    expect(Math.abs(kept - 0.9)).toBeLessThan(0.005);
    const m2 = refDropoutMask(n, 0.1, 1235);
    let same = 0;
    for (let i = 0; i < n; i++) same += (m[i] > 0) === (m2[i] > 0) ? 1 : 0;
    // Independent masks agree on 0.9^2 + 0.1^2 = 82% of elements.
    expect(Math.abs(same / n - 0.82)).toBeLessThan(0.01);
  });

  const cases: Case[] = [
    // A Hiera stage-1 qkv-sized layer: in 96, out 288, r 4, 49*3 tokens.
    { x: [3, 49, 96], outF: 288, rank: 4, bias: true, p: 0.1, training: true },
    { x: [3, 49, 96], outF: 288, rank: 4, bias: true, p: 0.1, training: false },
    { x: [37, 29], outF: 53, rank: 7, bias: false, p: 0, training: true },
    { x: [2, 37, 20], outF: 70, rank: 16, bias: true, p: 0.3, training: true },
    // in = 30 is not a multiple of 4: the scalar-load kernel applies the mask.
    { x: [2, 25, 30], outF: 45, rank: 3, bias: true, p: 0.2, training: true },
  ];
  it.each(cases)('matches float64 at %j', async (c) => {
    const inF = c.x[c.x.length - 1];
    const rows = c.x.reduce((a, b) => a * b, 1) / inF;
    const d: LoraDims = { rows, inF, outF: c.outF, rank: c.rank, scale: 2 };
    const seed = 0x9e37 + rows;
    const mask = refDropoutMask(rows * inF, c.training ? c.p : 0, seed);
    const inputs = [
      randn(rows * inF),
      randn(c.outF * inF, undefined, 0.2),
      randn(c.outF),
      randn(c.rank * inF, undefined, 0.2),
      randn(c.outF * c.rank, undefined, 0.5),
    ];
    const shapes = [c.x, [c.outF, inF], [c.outF], [c.rank, inF], [c.outF, c.rank]];
    await checkOp({
      label:
        `loraLinear ${c.x.join('x')} -> ${c.outF} r${c.rank} p${c.p}` +
        (c.training ? ' train' : ' eval'),
      inputs,
      shapes,
      gpu: (x, w, b, a, bl) =>
        loraLinear(x, w, c.bias ? b : null, a, bl, {
          scale: d.scale, dropout: c.p, seed, training: c.training,
        }),
      ref: ([x, w, b, a, bl]) => refLora(x, w, c.bias ? b : null, a, bl, mask, d),
      refBackward: ([x, w, , a, bl], g) => {
        const r = refLoraBackward(x, w, a, bl, mask, g, d);
        return [r.dx, r.dw, c.bias ? r.db : null, r.da, r.dB];
      },
      grads: [true, true, c.bias, true, true],
      outShape: [...c.x.slice(0, -1), c.outF],
      tol: tolFor(inF),
      gradTol: tolFor(Math.max(rows, c.outF, inF)),
      fd: { samples: 10 },
    });
  });

  it('frozen base: no dW/db work, weight.grad stays null, dx/dA/dB right', async () => {
    const e = await testEngine();
    const [rows, inF, outF, rank, p, seed] = [49 * 3, 96, 288, 4, 0.1, 77];
    const d: LoraDims = { rows, inF, outF, rank, scale: 0.5 };
    const x = f32(randn(rows * inF));
    const w = f32(randn(outF * inF, undefined, 0.2));
    const b = f32(randn(outF));
    const a = f32(randn(rank * inF, undefined, 0.2));
    const bl = f32(randn(outF * rank, undefined, 0.5));
    const g = f32(randn(rows * outF));
    const mask = refDropoutMask(rows * inF, p, seed);
    const want = refLoraBackward(x, w, a, bl, mask, g, d);
    await e.scopeAsync(async () => {
      const tx = e.fromArray(x, [3, 49, inF], true);
      const tw = e.fromArray(w, [outF, inF], false);
      const tb = e.fromArray(b, [outF], false);
      const ta = e.fromArray(a, [rank, inF], true);
      const tbl = e.fromArray(bl, [outF, rank], true);
      const opts = { scale: d.scale, dropout: p, seed, training: true };
      const y = loraLinear(tx, tw, tb, ta, tbl, opts);
      const calls = spyRuns(e.gpu, () => e.backward(y, e.fromArray(g, y.shape)));
      const dwLike = calls.filter(
        (c) => c.kernel.startsWith('matmul.tiled') && c.params.M === outF && c.params.N === inF,
      );
      expect(dwLike).toEqual([]);
      // Every operand here is 4-aligned: all products take the vec4-load kernel.
      expect(calls.filter((c) => c.kernel === 'matmul.tiled').length).toBe(0);
      const dbLike = calls.filter((c) => c.kernel === 'matmul.colsum' && c.params.N === outF);
      expect(dbLike).toEqual([]);
      expect(tw.grad).toBeNull();
      expect(tb.grad).toBeNull();
      const checks: [string, Float64Array, number][] = [
        ['dx', want.dx, Math.max(outF, inF)],
        ['dA', want.da, rows],
        ['dB', want.dB, rows],
      ];
      const got = [tx, ta, tbl];
      for (let i = 0; i < checks.length; i++) {
        const [what, ref, L] = checks[i];
        const r = expectClose(await got[i].grad!.toArray(), ref, tolFor(L), `lora frozen ${what}`);
        reportError('loraLinear', `frozen ${what}`, `${rows}x${inF}->${outF} r${rank}`, r);
        got[i].grad!.dispose();
      }
    });
  });

  it('rejects bad adapter shapes', async () => {
    const e = await testEngine();
    const opts = { scale: 1, dropout: 0, seed: 0, training: false };
    e.scope(() => {
      const x = e.zeros([5, 8]);
      const w = e.zeros([6, 8]);
      expect(() => loraLinear(x, w, null, e.zeros([2, 7]), e.zeros([6, 2]), opts)).toThrow(
        /loraLinear: loraA must be \[r, 8\], got \[2,7\]/,
      );
      expect(() => loraLinear(x, w, null, e.zeros([2, 8]), e.zeros([6, 3]), opts)).toThrow(
        /loraLinear: loraB must be \[6, 2\], got \[6,3\]/,
      );
    });
  });
});
