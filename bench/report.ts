/**
 * The bench's reports: one JSON (everything measured, for tooling) and one Markdown table (for
 * people), both under bench/results/ named after the adapter, so runs on different GPUs sit side
 * by side. A CPU-fallback run (lavapipe) is labelled as such in the name and in the text: its
 * numbers say nothing about a GPU.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Ceilings } from './ceilings.js';
import type { Timing } from './measure.js';
import type { PeerOutcome, PeerRun } from './peer.js';
import type { E2eRow } from './suites/e2e.js';
import type { KernelRow, PeerResult } from './suites/kernels.js';
import { OVERHEAD_FLAG_MS, type OverheadRow } from './suites/overhead.js';

export interface BenchReport {
  format: 'sam2-lora-bench';
  version: 1;
  date: string;
  /** git commit of the checkout (`-dirty` with local changes), null outside git. */
  commit: string | null;
  quick: boolean;
  /** Encoder precision of the end-to-end rows (optional: older reports are f32). */
  precision?: 'f32' | 'f16';
  filter: string | null;
  sizes: number[];
  batches: number[];
  device: {
    description: string;
    vendor: string;
    architecture: string;
    backend: string;
    cpuFallback: boolean;
    timestampQuery: boolean;
    features: string[];
  };
  software: { node: string; tfjs: string | null; tfjsError?: string };
  ceilings: Ceilings;
  kernels: (KernelRow & Derived)[];
  e2e: E2eRow[];
  /** GPU ms per dispatch of each kernel at tiny shapes (optional: older reports, --filter). */
  overhead?: OverheadRow[];
  /** The PyTorch peer of the end-to-end rows (null when not run). */
  peer: PeerOutcome | null;
  /** 1-minute load average before/after our end-to-end rows and the peer (optional: older). */
  load?: LoadRecord;
  notes: string[];
}

export interface LoadRecord {
  cores: number;
  ours: [number, number];
  peer: [number, number] | null;
}

export interface Derived {
  /** Achieved GFLOP/s (flop-bound rows) or GB/s (memory-bound rows), from the median. */
  gflops: number;
  gbps: number;
  /** % of this device's measured ceiling for the row's bound. */
  pctOfPeak: number;
  /** peer median / our median: > 1 means ours is faster. */
  speedupVsNaive: number | null;
  speedupVsTfjs: number | null;
}

export function derive(r: KernelRow, c: Ceilings): KernelRow & Derived {
  const s = r.ours.medianMs / 1000;
  const gflops = r.flops / s / 1e9;
  const gbps = r.bytes / s / 1e9;
  const pctOfPeak = r.bound === 'flop' ? (100 * gflops) / c.gflops : (100 * gbps) / c.gbps;
  const ratio = (p?: PeerResult) => (p?.timing ? p.timing.medianMs / r.ours.medianMs : null);
  return { ...r, gflops, gbps, pctOfPeak, speedupVsNaive: ratio(r.naive),
    speedupVsTfjs: ratio(r.tfjs) };
}

/** File-name stem for an adapter: lower-case words joined by '-'. */
export function adapterSlug(info: { description?: string; device?: string; vendor?: string },
): string {
  const text = info.description || info.device || info.vendor || 'unknown-adapter';
  return text.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '').slice(0, 60) ||
    'unknown-adapter';
}

const f = (v: number, d = 3) => (Number.isFinite(v) ? v.toFixed(d) : '-');
const ms = (t?: Timing) => (t ? f(t.medianMs) : '-');
const x = (v: number | null) => (v === null ? '-' : `${v.toFixed(2)}×`);
const peerCell = (p?: PeerResult) => (!p ? '' : p.timing ? ms(p.timing) : `skip¹`);

export function toMarkdown(rep: BenchReport): string {
  const d = rep.device;
  const L: string[] = [];
  L.push(`# sam2-lora bench: ${d.description}`);
  L.push('');
  if (d.cpuFallback) {
    L.push('> **CPU fallback (lavapipe / software rasterizer).** These numbers measure a CPU ' +
      'emulating a GPU: they say nothing about GPU speed. The PyTorch rows compare the two ' +
      'engines on the same CPU cores.');
    L.push('');
  }
  L.push(`- date: ${rep.date}${rep.quick ? ' (quick run)' : ''}` +
    `${rep.filter ? `, filter \`${rep.filter}\`` : ''}`);
  L.push(`- commit: ${rep.commit ?? 'unknown (not a git checkout)'}`);
  L.push(`- precision of the end-to-end rows: ${rep.precision ?? 'f32'}` +
    (rep.precision === 'f16' ? ' (frozen encoder weights and activations f16; head, LoRA, optimizer f32)' : ''));
  L.push(`- adapter: ${d.description} (${d.vendor}, ${d.architecture}), backend ${d.backend}`);
  L.push(`- times: ${d.timestampQuery ? 'GPU time from timestamp queries' : 'wall time (no ' +
    'timestamp-query)'}, median of tinybench samples; peers run on the same Dawn device`);
  L.push(`- node ${rep.software.node}; TensorFlow.js WebGPU ${rep.software.tfjs ?? 'not run'}` +
    `${rep.software.tfjsError ? ` (${rep.software.tfjsError})` : ''}`);
  L.push('');
  const c = rep.ceilings;
  L.push('## Device ceilings (measured)');
  L.push('');
  L.push('| ceiling | value | how |');
  L.push('| --- | ---: | --- |');
  L.push(`| f32 FMA | ${f(c.gflops, 1)} GFLOP/s | ${c.fma.threads} threads × ${c.fma.iters} ` +
    `rounds × ${c.fma.chains} vec4 FMA chains (the faster of 8 and 2 chains), ` +
    `${f(c.fma.medianMs)} ms |`);
  L.push(`| copy bandwidth | ${f(c.gbps, 1)} GB/s | ${(c.copy.bytes / 2 ** 20).toFixed(0)} MiB ` +
    `vec4 copy (read + write), ${f(c.copy.medianMs)} ms |`);
  L.push('');
  if (rep.kernels.length) {
    L.push('## Kernels');
    L.push('');
    L.push('Ours vs peers: ratio = peer median / our median (> 1: ours is faster). ' +
      '% peak is of the FLOP ceiling for compute-bound rows and of the copy bandwidth for ' +
      'memory-bound rows.');
    L.push('');
    L.push('| kernel | px | B | dir | shape | ours ms | GFLOP/s | GB/s | % peak | naive ms | ' +
      'vs naive | tfjs ms | vs tfjs | time |');
    L.push('| --- | ---: | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ' +
      '---: | --- |');
    for (const r of rep.kernels) {
      L.push(`| ${r.group} ${r.label}${r.note ? ` (${r.note})` : ''} | ${r.size} | ${r.batch} | ` +
        `${r.dir} | ${r.shape} | ${ms(r.ours)} | ${f(r.gflops, 1)} | ${f(r.gbps, 1)} | ` +
        `${f(r.pctOfPeak, 1)} | ${peerCell(r.naive)} | ${x(r.speedupVsNaive)} | ` +
        `${peerCell(r.tfjs)} | ${x(r.speedupVsTfjs)} | ` +
        `${r.ours.source === 'wall' ? 'wall' : 'gpu'} |`);
    }
    const skipped = rep.kernels.flatMap((r) =>
      [['naive', r.naive], ['tfjs', r.tfjs]].filter(([, p]) => p && !(p as PeerResult).timing)
        .map(([n, p]) => `${r.id} ${n}: ${(p as PeerResult).skipped}`));
    if (skipped.length) {
      L.push('');
      L.push('¹ skipped peers:');
      for (const s of skipped) L.push(`- ${s}`);
    }
    L.push('');
  }
  if (rep.e2e.length) {
    L.push('## End to end (Segmenter tiny, stride16 head)');
    L.push('');
    L.push('| mode | phase | px | B | wall ms | min wall ms | images/s | GPU-busy ms | ' +
      'peak GPU MiB | trainable params |');
    L.push('| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
    for (const r of rep.e2e) {
      L.push(`| ${r.mode} | ${r.phase} | ${r.size} | ${r.batch} | ${f(r.wallMedianMs, 1)} | ` +
        `${f(r.wallMinMs, 1)} | ` +
        `${f(r.imagesPerSec, 2)} | ${r.gpuMedianMs === null ? '-' : f(r.gpuMedianMs, 1)} | ` +
        `${(r.peakBytes / 2 ** 20).toFixed(0)} | ${r.trainableParams} |`);
    }
    L.push('');
    for (const r of rep.e2e.filter((e) => e.topKernels.length)) {
      L.push(`Top kernels, ${r.mode} ${r.phase} (GPU ms, last iteration): ` +
        r.topKernels.map((k) => `${k.name} ${f(k.ms, 2)} (${k.calls}×)`).join(', '));
      L.push('');
    }
  }
  if (rep.peer) L.push(...peerMarkdown(rep.e2e, rep.peer));
  if (rep.overhead?.length) L.push(...overheadMarkdown(rep.overhead));
  if (rep.notes.length) {
    L.push('## Notes');
    L.push('');
    for (const n of rep.notes) L.push(`- ${n}`);
    L.push('');
  }
  return `${L.join('\n')}\n`;
}

/** Writes <out>/<adapter>[.quick][.f16][.cpu-fallback].{json,md}; returns both paths. */
export function writeReports(rep: BenchReport, outDir: string): { json: string; md: string } {
  mkdirSync(outDir, { recursive: true });
  const stem = adapterSlug(rep.device) + (rep.quick ? '.quick' : '') +
    (rep.precision === 'f16' ? '.f16' : '') +
    (rep.device.cpuFallback ? '.cpu-fallback' : '');
  const json = join(outDir, `${stem}.json`);
  const md = join(outDir, `${stem}.md`);
  writeFileSync(json, `${JSON.stringify(rep, null, 2)}\n`);
  writeFileSync(md, toMarkdown(rep));
  return { json, md };
}

const PHASES = [['forward', 'forward'], ['train-step', 'train_step']] as const;

/** Ours beside PyTorch per end-to-end row, then the LoRA step's breakdown beside its profile. */
function peerMarkdown(e2e: E2eRow[], peer: PeerOutcome): string[] {
  const L: string[] = [];
  L.push('## Ours vs PyTorch (same machine, same run)');
  L.push('');
  if (!peer.runs.length) {
    L.push(peer.errors.length ? peer.errors.join('; ') : 'PyTorch peer not run.');
    L.push('');
    return L;
  }
  const r0 = peer.runs[0];
  L.push(`PyTorch ${r0.torch} eager fp32 on ${r0.device} (${r0.threads} thread(s)), ` +
    `bench/peer/pytorch_step.py, run after ours. Ratio = PyTorch ms / ours ms (> 1: ours is ` +
    'faster), of medians and of minimums (the least disturbed samples on a shared machine).');
  L.push('');
  L.push('| mode | phase | px | B | ours ms | ours min | PyTorch ms | PyTorch min | ' +
    'ratio (median) | ratio (min) |');
  L.push('| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
  const find = (size: number, batch: number): PeerRun | undefined =>
    peer.runs.find((r) => r.size === size && r.batch === batch);
  for (const r of e2e) {
    const run = find(r.size, r.batch);
    const m = run?.results.find((x) => x.mode === r.mode);
    const ph = m ? m[PHASES.find(([ours]) => ours === r.phase)![1]] : undefined;
    if (!ph) continue;
    L.push(`| ${r.mode} | ${r.phase} | ${r.size} | ${r.batch} | ${f(r.wallMedianMs, 1)} | ` +
      `${f(r.wallMinMs, 1)} | ${f(ph.median_ms, 1)} | ${f(ph.min_ms, 1)} | ` +
      `${x(ph.median_ms / r.wallMedianMs)} | ${x(ph.min_ms / r.wallMinMs)} |`);
  }
  L.push('');
  for (const r of e2e.filter((e) => e.mode === 'lora' && e.phase === 'train-step')) {
    const prof = find(r.size, r.batch)?.results.find((x) => x.mode === 'lora')?.profile ?? [];
    if (!r.breakdown.length && !prof.length) continue;
    L.push(`### Per-step breakdown: LoRA train step, ${r.size} px batch ${r.batch}`);
    L.push('');
    const oursMs = r.breakdown.reduce((a, b) => a + b.ms, 0);
    const oursCalls = r.breakdown.reduce((a, b) => a + b.calls, 0);
    const torchMs = prof.reduce((a, b) => a + b.ms, 0);
    L.push(`Ours: GPU ms per kernel family (timestamp queries, last iteration), ` +
      `${f(oursMs, 1)} ms in ${oursCalls} dispatches. PyTorch: torch.profiler self CPU ms per ` +
      `aten op over one step, ${f(torchMs, 1)} ms.`);
    L.push('');
    L.push('| # | ours: family | ms | dispatches | PyTorch: op | ms | calls |');
    L.push('| ---: | --- | ---: | ---: | --- | ---: | ---: |');
    const n = Math.min(14, Math.max(r.breakdown.length, prof.length));
    for (let i = 0; i < n; i++) {
      const o = r.breakdown[i];
      const p = prof[i];
      L.push(`| ${i + 1} | ${o ? o.family : ''} | ${o ? f(o.ms, 1) : ''} | ${o ? o.calls : ''} | ` +
        `${p ? p.name : ''} | ${p ? f(p.ms, 1) : ''} | ${p ? p.calls : ''} |`);
    }
    L.push('');
  }
  return L;
}

function overheadMarkdown(rows: OverheadRow[]): string[] {
  const L: string[] = [];
  const flagged = rows.filter((r) => r.msPerDispatch > OVERHEAD_FLAG_MS);
  L.push('## Per-dispatch floor (tiny shapes)');
  L.push('');
  L.push(`GPU ms per dispatch of each kernel of a training step at shapes whose work costs ~0.1 ms ` +
    `(fastest of 3 rounds). Above ${OVERHEAD_FLAG_MS} ms a kernel pays a fixed cost per dispatch: ` +
    'on lavapipe, a recompilation because a loop bound or branch condition comes straight from ' +
    `the uniforms (bench/README.md). ${flagged.length ? `Flagged: ${flagged.map((r) =>
      r.name).join(', ')}.` : 'None flagged.'}`);
  L.push('');
  L.push('| kernel | ms per dispatch | dispatches per round |');
  L.push('| --- | ---: | ---: |');
  for (const r of rows) {
    L.push(`| ${r.name}${r.msPerDispatch > OVERHEAD_FLAG_MS ? ' ⚠' : ''} | ` +
      `${f(r.msPerDispatch)} | ${r.dispatches} |`);
  }
  L.push('');
  return L;
}
