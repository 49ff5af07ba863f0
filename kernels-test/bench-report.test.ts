/**
 * The bench report's PyTorch section and its end-to-end defaults, from a synthetic report (no
 * GPU, no torch): every ratio printed is PyTorch ms / ours ms of the same row, and the per-step
 * breakdown lists our kernel families beside the profiler's ops. Never asserts a timing.
 */
import { describe, expect, it } from 'vitest';
import type { PeerOutcome } from '../bench/peer.js';
import { type BenchReport, toMarkdown } from '../bench/report.js';
import { e2eShapes } from '../bench/run.js';
import { type E2eRow, byFamily } from '../bench/suites/e2e.js';

function row(mode: 'head' | 'lora', phase: 'forward' | 'train-step', wall: number): E2eRow {
  const kernels = [
    { name: 'matmul.regs', ms: 70, calls: 30 },
    { name: 'attention.fwd_regs', ms: 20, calls: 12 },
    { name: 'matmul.colsum', ms: 5, calls: 10 },
  ];
  return {
    id: `e2e/128px-b1/${mode}/${phase}`, mode, phase, size: 128, batch: 1, wallMedianMs: wall,
    wallMinMs: wall * 0.9, imagesPerSec: 1000 / wall, gpuMedianMs: wall - 1, peakBytes: 1,
    trainableParams: 10, samples: 2, topKernels: kernels, breakdown: byFamily(kernels),
  };
}

const peer: PeerOutcome = {
  python: 'python3',
  errors: [],
  runs: [{
    size: 128, batch: 1, device: 'cpu', torch: '1.13', threads: 2,
    results: (['head', 'lora'] as const).map((mode) => ({
      mode, trainable_params: 10,
      forward: { median_ms: 50, min_ms: 40, images_per_sec: 20, samples: 3 },
      train_step: { median_ms: mode === 'lora' ? 300 : 100, min_ms: 250, images_per_sec: 3,
        samples: 3 },
      profile: mode === 'lora' ? [{ name: 'aten::mm', ms: 120, calls: 400 }] : undefined,
    })),
  }],
};

function report(p: PeerOutcome | null): BenchReport {
  return {
    format: 'sam2-lora-bench', version: 1, date: '2026-01-01T00:00:00.000Z', commit: 'abc',
    quick: true, filter: null, sizes: [256], batches: [1],
    device: { description: 'test', vendor: 'v', architecture: 'a', backend: 'vulkan',
      cpuFallback: true, timestampQuery: true, features: [] },
    software: { node: 'v20', tfjs: null },
    ceilings: { gflops: 1, gbps: 1, fma: { threads: 1, iters: 1, chains: 8, medianMs: 1 },
      copy: { bytes: 1, medianMs: 1 }, source: 'test' },
    kernels: [],
    e2e: [row('lora', 'forward', 100), row('lora', 'train-step', 600)],
    peer: p,
    notes: [],
  };
}

describe('bench report: PyTorch peer', () => {
  it('prints PyTorch/ours ratios of medians and minimums, and the per-step breakdown', () => {
    const md = toMarkdown(report(peer));
    expect(md).toContain('- commit: abc');
    // lora train-step: 300 / 600 = 0.50x (median), 250 / 540 = 0.46x (min).
    expect(md).toContain('| lora | train-step | 128 | 1 | 600.0 | 540.0 | 300.0 | 250.0 | 0.50× | 0.46× |');
    // lora forward: 50 / 100, 40 / 90.
    expect(md).toContain('| lora | forward | 128 | 1 | 100.0 | 90.0 | 50.0 | 40.0 | 0.50× | 0.44× |');
    expect(md).toContain('Per-step breakdown: LoRA train step, 128 px batch 1');
    // matmul.regs + matmul.colsum are one family: 75 ms in 40 dispatches.
    expect(md).toContain('| 1 | matmul | 75.0 | 40 | aten::mm | 120.0 | 400 |');
    expect(md).toContain('| 2 | attention | 20.0 | 12 |  |  |  |');
  });

  it('lists the per-dispatch floor and flags the kernels above it', () => {
    const md = toMarkdown({ ...report(null), overhead: [
      { name: 'attention.fwd_regs', msPerDispatch: 4.2, dispatches: 2 },
      { name: 'matmul.regs', msPerDispatch: 0.15, dispatches: 10 },
    ] });
    expect(md).toContain('## Per-dispatch floor (tiny shapes)');
    expect(md).toContain('Flagged: attention.fwd_regs.');
    expect(md).toContain('| attention.fwd_regs ⚠ | 4.200 | 2 |');
    expect(md).toContain('| matmul.regs | 0.150 | 10 |');
    expect(toMarkdown(report(null))).not.toContain('Per-dispatch floor');
  });

  it('says why the peer did not run', () => {
    const md = toMarkdown(report({ python: null, runs: [], errors: ['no torch here'] }));
    expect(md).toContain('no torch here');
    expect(toMarkdown(report(null))).not.toContain('Ours vs PyTorch');
  });
});

describe('bench end-to-end shapes', () => {
  it('defaults by adapter kind, options override, bad values are refused', () => {
    expect(e2eShapes({ quick: true }, true)).toEqual({ e2eSizes: [128], e2eBatches: [1] });
    expect(e2eShapes({}, true)).toEqual({ e2eSizes: [128, 256], e2eBatches: [1] });
    expect(e2eShapes({}, false)).toEqual({ e2eSizes: [512], e2eBatches: [4] });
    expect(e2eShapes({ quick: true }, false)).toEqual({ e2eSizes: [256], e2eBatches: [1] });
    expect(e2eShapes({ e2eSizes: [128, 256], e2eBatches: [1, 4] }, true))
      .toEqual({ e2eSizes: [128, 256], e2eBatches: [1, 4] });
    expect(() => e2eShapes({ e2eSizes: [100] }, true)).toThrow(/size 100/);
    expect(() => e2eShapes({ e2eBatches: [0] }, true)).toThrow(/batch 0/);
  });
});
