import { afterAll, describe, expect, it } from 'vitest';
import { closeGpu } from '../src/gpu/runtime.js';
import { linear } from '../src/ops/linear.js';
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
import { refLinear, refLinearBackward } from './ref/matmul.js';

afterAll(() => closeGpu());

const tolFor = sumTol;

describe('linear', () => {
  it.each([
    // [x shape, out, bias]
    [[37, 29], 53, true],
    [[3, 11, 40], 70, false],
    // 1100 rows: the weight gradient takes the split-K path, the bias gradient two colsum passes.
    [[2, 550, 24], 10, true],
  ] as [number[], number, boolean][])('x %j, out %i, bias %s', async (xs, outF, bias) => {
    const inF = xs[xs.length - 1];
    const rows = xs.reduce((a, b) => a * b, 1) / inF;
    const inputs = [randn(rows * inF), randn(outF * inF, undefined, 0.2)];
    const shapes = [xs, [outF, inF]];
    if (bias) {
      inputs.push(randn(outF));
      shapes.push([outF]);
    }
    await checkOp({
      label: `linear ${xs.join('x')} -> ${outF}${bias ? ' +b' : ''}`,
      inputs,
      shapes,
      gpu: (x, w, b) => linear(x, w, bias ? b : null),
      ref: ([x, w, b]) => refLinear(x, w, bias ? b : null, rows, inF, outF),
      refBackward: ([x, w], g) => {
        const r = refLinearBackward(x, w, g, rows, inF, outF);
        return bias ? [r.dx, r.dw, r.db] : [r.dx, r.dw];
      },
      outShape: [...xs.slice(0, -1), outF],
      tol: tolFor(inF),
      // dW and db sum over all rows, dx over out.
      gradTol: tolFor(Math.max(rows, outF)),
      fd: { samples: 12 },
    });
  });

  it('frozen weight and bias: no weight-gradient work, dx still flows', async () => {
    const e = await testEngine();
    const [rows, inF, outF] = [45, 33, 27];
    const x = f32(randn(rows * inF));
    const w = f32(randn(outF * inF));
    const b = f32(randn(outF));
    const g = f32(randn(rows * outF));
    await e.scopeAsync(async () => {
      const tx = e.fromArray(x, [5, 9, inF], true);
      const tw = e.fromArray(w, [outF, inF], false);
      const tb = e.fromArray(b, [outF], false);
      const y = linear(tx, tw, tb);
      const calls = spyRuns(e.gpu, () => e.backward(y, e.fromArray(g, y.shape)));
      // Only dx = g·W (a product of K = out) and the leaf accumulation may run.
      const products = calls.filter((c) => c.kernel.startsWith('matmul.'));
      expect(products.map((c) => [c.kernel, c.params.M, c.params.N, c.params.K])).toEqual([
        ['matmul.tiled', rows, inF, outF], // inF = 33: scalar loads
      ]);
      expect(tw.grad).toBeNull();
      expect(tb.grad).toBeNull();
      const want = refLinearBackward(x, w, g, rows, inF, outF).dx;
      const r = expectClose(await tx.grad!.toArray(), want, tolFor(outF), 'linear frozen dx');
      reportError('linear', 'frozen dx', `${rows}x${inF}->${outF}`, r);
      tx.grad!.dispose();
    });
  });

  it('rejects bad shapes', async () => {
    const e = await testEngine();
    e.scope(() => {
      expect(() => linear(e.zeros([4, 5]), e.zeros([3, 6]), null)).toThrow(
        /linear: x must be \[\.\.\., 6\]/,
      );
      expect(() => linear(e.zeros([4, 6]), e.zeros([3, 6]), e.zeros([4]))).toThrow(
        /linear: bias must be \[3\], got \[4\]/,
      );
    });
  });
});
