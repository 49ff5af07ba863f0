/**
 * Smoke test of `npm run bench --quick`: with a tiny filter it must produce a JSON and a
 * Markdown report whose every row has a positive, finite median. Never asserts a time.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { bench } from '../src/cli/bench.js';
import { BIN, REPO, ensureBuilt } from './dist.js';

const out = mkdtempSync(join(tmpdir(), 'sam2-lora-bench-'));
afterAll(() => rmSync(out, { recursive: true, force: true }));

const positive = (v: unknown) => typeof v === 'number' && Number.isFinite(v) && v > 0;

describe('bench --quick', () => {
  it('writes sane JSON and Markdown reports', async () => {
    const { json, md } = await bench({
      quick: true,
      out,
      // One compute-bound row with both peers, one memory-bound backward row, and the cheapest
      // end-to-end row (head-mode forward at 32 px, the smallest the model accepts); the
      // PyTorch peer has its own report test (bench-report.test.ts).
      e2eSizes: [32],
      noPeer: true,
      filter: '^(matmul/256px-b1/s0\\.qkv/fwd|layer_norm/256px-b1/s0\\.norm/bwd|' +
        'e2e/.*/head/forward)',
    });
    expect(existsSync(json)).toBe(true);
    expect(existsSync(md)).toBe(true);
    const rep = JSON.parse(readFileSync(json, 'utf8'));
    expect(rep.format).toBe('sam2-lora-bench');
    expect(rep).toHaveProperty('commit');
    expect(rep.peer).toBeNull();
    expect(positive(rep.ceilings.gflops)).toBe(true);
    expect(positive(rep.ceilings.gbps)).toBe(true);
    expect(rep.kernels.length).toBe(2);
    for (const r of rep.kernels) {
      expect(positive(r.ours.medianMs), r.id).toBe(true);
      expect(positive(r.gflops) && positive(r.pctOfPeak), r.id).toBe(true);
      if (r.naive?.timing) expect(positive(r.naive.timing.medianMs), `${r.id} naive`).toBe(true);
      if (r.tfjs?.timing) expect(positive(r.tfjs.timing.medianMs), `${r.id} tfjs`).toBe(true);
    }
    const mm = rep.kernels.find((r: { group: string }) => r.group === 'matmul');
    expect(mm.naive.timing, mm.naive.skipped).toBeDefined();
    expect(rep.e2e.length).toBe(1);
    for (const r of rep.e2e) {
      expect(positive(r.wallMedianMs) && positive(r.imagesPerSec) && positive(r.peakBytes), r.id)
        .toBe(true);
    }
    const text = readFileSync(md, 'utf8');
    expect(text).toContain('## Kernels');
    expect(text).toContain('## End to end');
    for (const r of rep.kernels) expect(text).toContain(r.label);
  });
});

describe('sam2-lora bench (the compiled CLI)', () => {
  it('runs the bench built by tsc into dist/bench, its #src imports resolved to dist', () => {
    ensureBuilt('bench-smoke', join(REPO, 'dist', 'cli', 'bench.js'));
    const dir = join(out, 'cli');
    const r = spawnSync(process.execPath, [BIN, 'bench', '--quick', '--no-peer', '--no-tfjs',
      '--e2e-sizes', '32', '--filter', '^e2e/.*/head/forward', '--out', dir],
    { cwd: REPO, encoding: 'utf8', timeout: 280_000 });
    expect(r.status, `${r.stdout}\n${r.stderr}`).toBe(0);
    // Built (or rebuilt when stale) by the project's tsc, not transpiled at run time.
    expect(existsSync(join(REPO, 'dist', 'bench', 'run.js'))).toBe(true);
    const json = readdirSync(dir).find((f) => f.endsWith('.json'));
    expect(json, readdirSync(dir).join(', ')).toBeDefined();
    const rep = JSON.parse(readFileSync(join(dir, json!), 'utf8'));
    expect(rep.e2e.map((e: { id: string }) => e.id)).toEqual(['e2e/32px-b1/head/forward']);
    expect(positive(rep.e2e[0].wallMedianMs)).toBe(true);
    expect(rep.commit === null || typeof rep.commit === 'string').toBe(true);
  });
});
