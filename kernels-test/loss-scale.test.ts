/**
 * Dynamic loss scaling (src/train/loss-scale.ts): GradScaler's bookkeeping as pure logic, then in
 * training on `nano` (f32, so it runs without the f16 engine): an exact no-op when nothing
 * overflows, injected Inf gradients back off and skip without counting as bad steps until the
 * floor, the scale in the log and in trainer.json, and resume restoring it.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { LOSS_SCALE_DEFAULTS, LossScaler } from '../src/train/loss-scale.js';
import { type TrainOptions, train } from '../src/train/trainer.js';
import { loadAdapter } from '../src/adapter/adapter.js';
import { nanoTrainOptions, syntheticRunDir } from './nano-run.js';

describe('LossScaler (GradScaler semantics)', () => {
  it('starts at 2^16, grows x2 after 2000 clean steps by default', () => {
    expect(LOSS_SCALE_DEFAULTS).toEqual({ initScale: 65536, growthFactor: 2, backoffFactor: 0.5,
      growthInterval: 2000, minScale: 1 });
    const s = new LossScaler();
    expect(s.scale).toBe(65536);
    for (let i = 0; i < 1999; i++) expect(s.update(true)).toBe('kept');
    expect(s.scale).toBe(65536);
    expect(s.update(true)).toBe('grew');
    expect(s.scale).toBe(131072);
    expect(s.state()).toEqual({ scale: 131072, growthTracker: 0 });
  });

  it('an overflow halves the scale and restarts the count of clean steps', () => {
    const s = new LossScaler({ growthInterval: 3 });
    s.update(true);
    s.update(true);
    expect(s.update(false)).toBe('backed-off');
    expect(s.state()).toEqual({ scale: 32768, growthTracker: 0 });
    // Two clean steps after the overflow are not three in a row.
    s.update(true);
    s.update(true);
    expect(s.scale).toBe(32768);
    expect(s.update(true)).toBe('grew');
    expect(s.scale).toBe(65536);
  });

  it('never backs off below its floor, and says when it is there', () => {
    const s = new LossScaler({ initScale: 8, minScale: 2 });
    expect(s.atFloor).toBe(false);
    expect(s.update(false)).toBe('backed-off');
    expect(s.update(false)).toBe('backed-off');
    expect(s.scale).toBe(2);
    expect(s.atFloor).toBe(true);
    expect(s.update(false)).toBe('kept');
    expect(s.scale).toBe(2);
  });

  it('stays a finite f32 when growing', () => {
    const s = new LossScaler({ initScale: 2 ** 127, growthInterval: 1 });
    expect(s.update(true)).toBe('kept');
    expect(s.scale).toBe(2 ** 127);
  });

  it('state round-trips; invalid options and states are refused', () => {
    const a = new LossScaler({ growthInterval: 5 });
    a.update(false);
    a.update(true);
    const b = new LossScaler({ growthInterval: 5 });
    b.setState(a.state());
    expect(b.state()).toEqual({ scale: 32768, growthTracker: 1 });
    expect(() => b.setState({ scale: NaN, growthTracker: 0 }, 'x/trainer.json'))
      .toThrow(/x\/trainer.json: lossScale .* is not a valid loss-scale state/);
    expect(() => b.setState({ scale: 4, growthTracker: 0.5 })).toThrow(/not a valid loss-scale state/);
    expect(() => new LossScaler({ growthInterval: 0 })).toThrow(/growthInterval must be/);
    expect(() => new LossScaler({ backoffFactor: 1 })).toThrow(/backoffFactor must be/);
    expect(() => new LossScaler({ initScale: 4, minScale: 8 })).toThrow(/minScale must be/);
  });
});

const { dir, data } = syntheticRunDir('lossscale', { train: 8, val: 4, test: 4, size: 64, seed: 3 });

/** 8 train images at batch 2: 4 steps per epoch. No dropout: two runs can match bit for bit. */
function options(out: string, over: Partial<TrainOptions> = {}): TrainOptions {
  return nanoTrainOptions(data, out, { size: 32, maxSteps: 6, warmup: 1, ...over }, { dropout: 0 });
}

type LogRecord = Record<string, unknown> & { type: string; step: number };
const readLog = (out: string): LogRecord[] =>
  readFileSync(join(out, 'log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));

describe('loss scaling in training (nano, f32)', () => {
  it('without overflow it changes nothing: the same losses, norms and adapter bit for bit', async () => {
    const off = await train(options(join(dir, 'off'), { lossScale: false }));
    const on = await train(options(join(dir, 'on'), { lossScale: { growthInterval: 2 } }));
    expect(on.history).toEqual(off.history);
    const norms = (out: string) => readLog(out).filter((r) => r.type === 'step').map((r) => r.gradNorm);
    expect(norms(on.out)).toEqual(norms(off.out));
    // Powers of two scale f32 exactly, so the unscaled gradients are the same bits.
    const a = await loadAdapter(off.lastDir);
    const b = await loadAdapter(on.lastDir);
    for (const [k, t] of a.tensors) expect(b.tensors.get(k)!.data, k).toEqual(t.data);
    // The log records the scale each step used: it doubles every 2 clean steps.
    const scales = readLog(on.out).filter((r) => r.type === 'step').map((r) => r.lossScale);
    expect(scales).toEqual([65536, 65536, 131072, 131072, 262144, 262144]);
    expect(readLog(off.out).some((r) => 'lossScale' in r)).toBe(false);
  });

  it('injected Inf gradients: skipped, scale halved, not bad steps; the run goes on', async () => {
    const out = join(dir, 'overflow');
    let attempt = 0;
    // Attempts 1-4 overflow (4 in a row: more than --max-bad-steps 3, still no divergence).
    const r = await train(options(out, {
      maxSteps: 4,
      lossScale: { growthInterval: 100 },
      afterBackward: (_step, params) => {
        const a = attempt++;
        if (a < 1 || a > 4) return;
        const [, p] = params[params.length - 1];
        p.gpu.write(p.grad!.buffer, Float32Array.of(Infinity));
      },
    }));
    expect(r.steps).toBe(4);
    expect(r.skippedSteps).toBe(4);
    const log = readLog(out);
    const skips = log.filter((x) => x.type === 'skip');
    expect(skips.map((x) => [x.step, x.overflow, x.lossScale, x.nextLossScale])).toEqual([
      [2, true, 65536, 32768], [2, true, 32768, 16384], [2, true, 16384, 8192], [2, true, 8192, 4096],
    ]);
    expect(skips[0].reason).toBe('gradient overflow (norm Infinity) at loss scale 65536');
    expect(log.filter((x) => x.type === 'step').map((x) => [x.step, x.lossScale]))
      .toEqual([[1, 65536], [2, 4096], [3, 4096], [4, 4096]]);
    const state = JSON.parse(readFileSync(join(r.lastDir, 'trainer.json'), 'utf8'));
    expect(state.lossScale).toEqual({ scale: 4096, growthTracker: 3 });
    for (const [k, t] of (await loadAdapter(r.lastDir)).tensors) {
      expect(t.data.every(Number.isFinite), k).toBe(true);
    }
  });

  it('at the floor an overflow is a bad step: several in a row stop the run', async () => {
    const out = join(dir, 'floor');
    const err = await train(options(out, {
      maxSteps: 8,
      lossScale: { initScale: 4, minScale: 2 },
      afterBackward: (step, params) => {
        if (step < 4) return;
        const [, p] = params[0];
        p.gpu.write(p.grad!.buffer, Float32Array.of(Infinity));
      },
    })).catch((e: Error) => e.message);
    expect(err).toMatch(/training diverged at step 5: 3 steps in a row had a non-finite loss or gradient \(the last: gradient norm Infinity at the loss scale's floor 2\)/);
    const skips = readLog(out).filter((x) => x.type === 'skip');
    // 4 -> 2 is an overflow the scale can fix; at 2 (the floor) three bad steps stop the run.
    expect(skips.map((x) => [x.overflow ?? false, x.lossScale])).toEqual([[true, 4], [false, 2], [false, 2], [false, 2]]);
  });

  it('resume restores the scale and its growth count from trainer.json', async () => {
    const out = join(dir, 'resumed');
    const whole = await train(options(join(dir, 'whole'), { lossScale: { growthInterval: 3 } }));
    // Stop after step 4 (the epoch's checkpoint: scale grown once, one clean step counted).
    await train(options(out, { lossScale: { growthInterval: 3 }, stopAfter: 4 }));
    const state = JSON.parse(readFileSync(join(out, 'last', 'trainer.json'), 'utf8'));
    expect(state.lossScale).toEqual({ scale: 131072, growthTracker: 1 });
    const r = await train(options(out, { resume: out, lossScale: { growthInterval: 3 } }));
    expect(r.history).toEqual(whole.history);
    const scales = (o: string) => readLog(o).filter((x) => x.type === 'step').map((x) => x.lossScale);
    expect(scales(out)).toEqual(scales(whole.out));
    expect(scales(out)).toEqual([65536, 65536, 65536, 131072, 131072, 131072]);
  });
});
