import { it } from 'vitest';
import { readFileSync, writeFileSync } from 'node:fs';
import { closeGpu, getGpu } from '../src/gpu/runtime.js';
import { matmul } from '../src/kernels/matmul.js';

// Replays the step's matmul shapes (from /tmp/h9/step-before.txt) and times each shape group.
it('mm bench', async () => {
  const gpu = await getGpu();
  const lines = readFileSync('/tmp/h9/step-before.txt', 'utf8').split('--- shapes\n')[1].trim().split('\n');
  const filt = process.env.H9_FILTER ? new RegExp(process.env.H9_FILTER) : null;
  const reps = Number(process.env.H9_REPS ?? 1);
  const big = gpu.alloc(64 << 20);
  const data = new Float32Array(16 << 20).map((_, i) => Math.sin(i));
  gpu.write(big, data);
  const bufs = [0, 1, 2, 3, 4, 5].map(() => gpu.alloc(16 << 20));
  for (const b of bufs) gpu.write(b, data.subarray(0, 4 << 20));
  const out: string[] = [];
  const configs = (process.env.H9_CONFIGS ?? 'H9_MM=tiled;H9_MM=regs').split(';').map((c) =>
    Object.fromEntries(c.split(',').filter(Boolean).map((kv) => kv.split('='))) as Record<string, string>);
  const allKeys = [...new Set(configs.flatMap((c) => Object.keys(c)))];
  const totals = configs.map(() => 0);
  out.push(process.env.H9_CONFIGS ?? 'H9_MM=tiled;H9_MM=regs');
  let flopsTot = 0;
  const timeOf = () => [...gpu.timings].filter(([k]) => k.startsWith('matmul')).reduce((s, [, v]) => s + v.totalNs, 0);
  for (const line of lines) {
    const [cnt, spec] = line.split('\t');
    if (filt && !filt.test(spec)) continue;
    const m = /(\d+)x(\d+)x(\d+)x(\d+) tA(\d) tB(\d) s(\d+) lr(\d)/.exec(spec)!;
    const [, , M, N, K, tA, tB, , lr] = m.map(Number);
    const n = Number(cnt) * reps;
    // warm
    const call = () => matmul(gpu, {
      a: bufs[0], b: bufs[1], c: bufs[2], M, N, K, transA: !!tA, transB: !!tB,
      lowRank: lr ? { t: bufs[3], l: bufs[4], rank: 4, scale: 8, lTransposed: !!tB } : null,
      bias: lr && tB ? bufs[5] : null,
    });
    const fl = 2 * M * N * K * Number(cnt);
    flopsTot += fl;
    const cols: string[] = [];
    configs.forEach((cfg, ci) => {
      for (const [k, v] of Object.entries(cfg)) process.env[k] = v;
    });
    const best = configs.map(() => Infinity);
    const rounds = Number(process.env.H9_ROUNDS ?? 3);
    for (let r = 0; r < rounds; r++) {
      for (let ci = 0; ci < configs.length; ci++) {
        for (const k of allKeys) delete process.env[k];
        for (const [k, v] of Object.entries(configs[ci])) process.env[k] = v;
        if (r === 0) { call(); await gpu.sync(); }
        gpu.profile = true;
        gpu.timings.clear();
        for (let i = 0; i < n; i++) call();
        await gpu.sync();
        gpu.profile = false;
        best[ci] = Math.min(best[ci], timeOf() / reps);
      }
    }
    best.forEach((ns, ci) => {
      totals[ci] += ns;
      cols.push(`${(ns / 1e6).toFixed(1).padStart(8)} ms ${(fl / ns).toFixed(2).padStart(5)} GF/s`);
    });
    out.push(`${spec.replace(/ matmul.*/, '').padEnd(32)} x${cnt}\t${cols.join(' |')}`);
    writeFileSync(`/tmp/h9/mm-${process.env.H9_TAG ?? 'x'}.partial`, out.join('\n'));
  }
  out.push(`TOTAL ` + totals.map((t) => `${(t / 1e6).toFixed(0)} ms ${(flopsTot / t).toFixed(2)} GF/s`).join(' | '));
  console.log(out.join('\n'));
  writeFileSync(`/tmp/h9/mm-${process.env.H9_TAG ?? 'x'}.txt`, out.join('\n'));
  await closeGpu();
}, 3_600_000);