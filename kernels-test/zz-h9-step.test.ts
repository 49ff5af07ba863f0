import { it } from 'vitest';
import { Engine } from '../src/autograd/tensor.js';
import { closeGpu, getGpu } from '../src/gpu/runtime.js';
import { DEFAULT_LORA, Segmenter } from '../src/model/segmenter.js';
import { diceLoss } from '../src/ops/loss.js';
import { writeFileSync } from 'node:fs';

it('step bench', async () => {
  const gpu = await getGpu();
  const engine = new Engine(gpu);
  const m = new Segmenter(engine, { model: 'tiny', head: 'stride16', mode: 'lora', lora: DEFAULT_LORA, seed: 1 });
  const S = Number(process.env.H9_SIZE ?? 64);
  const B = 2;
  const x = engine.fromArray(Float32Array.from({ length: B * S * S * 3 }, (_, i) => Math.sin(i)), [B, S, S, 3]);
  const y = engine.fromArray(Float32Array.from({ length: B * S * S }, (_, i) => (i % 7 < 3 ? 1 : 0)), [B, S, S, 1]);
  const step = async () => {
    await engine.scopeAsync(async () => {
      const loss = engine.scope(() => diceLoss(m.forward(x), y));
      engine.backward(loss);
      await gpu.sync();
    });
  };
  const configs = (process.env.H9_CONFIGS ?? '').split(';').map((c) =>
    Object.fromEntries(c.split(',').filter(Boolean).map((kv) => kv.split('='))) as Record<string, string>);
  const allKeys = [...new Set(configs.flatMap((c) => Object.keys(c)))];
  const lines: string[] = [];
  const cpu: number[] = [];
  const rounds = Number(process.env.H9_ROUNDS ?? 1);
  const best = configs.map(() => ({ wall: Infinity, total: Infinity, rows: [] as [string, { count: number; totalNs: number }][], trace: [] as string[] }));
  for (let r = 0; r <= rounds; r++) {
    for (let ci = 0; ci < configs.length; ci++) {
      for (const k of allKeys) delete process.env[k];
      for (const [k, v] of Object.entries(configs[ci])) process.env[k] = v;
      if (r === 0) { await step(); continue; } // warm pipelines
      const trace: string[] = [];
      (globalThis as { __mmTrace?: string[] }).__mmTrace = trace;
      gpu.profile = true;
      gpu.timings.clear();
      const t0 = performance.now();
      const c0 = process.cpuUsage();
      await step();
      const cu = process.cpuUsage(c0);
      const wall = performance.now() - t0;
      cpu[ci] = Math.min(cpu[ci] ?? Infinity, (cu.user + cu.system) / 1000);
      gpu.profile = false;
      const rows = [...gpu.timings].sort((a, b) => b[1].totalNs - a[1].totalNs);
      let total = 0;
      for (const [, v] of rows) total += v.totalNs;
      if (total < best[ci].total) best[ci] = { wall, total, rows, trace };
    }
  }
  configs.forEach((cfg, ci) => {
    const { wall, total, rows, trace } = best[ci];
    lines.push(`=== ${JSON.stringify(cfg)}: wall ${wall.toFixed(0)} ms, gpu total ${(total / 1e6).toFixed(0)} ms, process cpu ${cpu[ci].toFixed(0)} ms`);
    const mm = rows.filter(([k]) => k.startsWith('matmul')).reduce((s, [, v]) => s + v.totalNs, 0);
    const att = rows.filter(([k]) => k.startsWith('attention')).reduce((s, [, v]) => s + v.totalNs, 0);
    lines.push(`matmul.* ${(mm / 1e6).toFixed(0)} ms, attention.* ${(att / 1e6).toFixed(0)} ms`);
    for (const [k, v] of rows.slice(0, 14)) lines.push(`${k.padEnd(28)} ${v.count}\t${(v.totalNs / 1e6).toFixed(1)} ms`);
    if (process.env.H9_SHAPES) {
      const counts = new Map<string, number>();
      for (const t of trace) counts.set(t, (counts.get(t) ?? 0) + 1);
      lines.push('--- shapes');
      for (const [k, v] of [...counts].sort()) lines.push(`${v}\t${k}`);
    }
  });
  console.log(lines.join('\n'));
  writeFileSync(`/tmp/h9/step-${process.env.H9_TAG ?? 'x'}.txt`, lines.join('\n'));
  await closeGpu();
}, 3_600_000);