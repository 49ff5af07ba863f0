/**
 * This device's own ceilings, measured at the start of every run so every row's "% of peak" is
 * against what this adapter really does through Dawn, not a datasheet: an FMA-bound kernel
 * (FLOP/s) and a large vec4 buffer copy (bytes read + written per second).
 */
import type { Gpu } from '#src/gpu/runtime.js';
import { type Budget, measure, ours } from './measure.js';
import { ceilingCopy, ceilingFma, fmaFlops } from './naive/kernels.js';

export interface Ceilings {
  /** Peak f32 FMA throughput, GFLOP/s (1 FMA = 2 FLOPs). */
  gflops: number;
  /** Copy bandwidth, GB/s (10^9 bytes; read + write counted). */
  gbps: number;
  /** The faster of the FMA kernels (8 vec4 chains per thread, or 2 with 4× the rounds). */
  fma: { threads: number; iters: number; chains: number; medianMs: number };
  copy: { bytes: number; medianMs: number };
  source: string;
}

export async function measureCeilings(gpu: Gpu, quick: boolean, budget: Budget): Promise<Ceilings> {
  // Enough threads to fill any GPU (many waves per SM/CU) and enough rounds that launch
  // overhead is noise; quick mode keeps lavapipe (CPU) runs to well under a second each.
  const threads = quick ? 16 * 1024 : 4 * 1024 * 1024;
  const iters = quick ? 256 : 4096;
  const out = gpu.alloc(threads * 4, 'ceiling.fma');
  let fma = { iters: 0, chains: 0, medianMs: Infinity, source: '', gflops: 0 };
  for (const chains of [8, 2] as const) {
    // The same FLOPs either way: 2 chains run 4x the rounds.
    const n = (iters * 8) / chains;
    const m = await measure(
      ours(gpu, { name: 'ceiling.fma', run: () => ceilingFma(gpu, out, threads, n, chains) }),
      budget,
    );
    const gflops = fmaFlops(threads, n, chains) / (m.medianMs * 1e6);
    if (gflops > fma.gflops) fma = { iters: n, chains, medianMs: m.medianMs, source: m.source, gflops };
  }
  gpu.free(out);

  // Far larger than any last-level cache; capped by the binding limit.
  const want = quick ? 16 * 2 ** 20 : 512 * 2 ** 20;
  const bytes = Math.min(want, gpu.limits.maxStorageBufferBindingSize) & ~15;
  const src = gpu.alloc(bytes, 'ceiling.src');
  const dst = gpu.alloc(bytes, 'ceiling.dst');
  const copy = await measure(
    ours(gpu, { name: 'ceiling.copy', run: () => ceilingCopy(gpu, src, dst, bytes / 16) }),
    budget,
  );
  gpu.free(src);
  gpu.free(dst);
  await gpu.sync();
  return {
    gflops: fma.gflops,
    gbps: (2 * bytes) / (copy.medianMs * 1e6),
    fma: { threads, iters: fma.iters, chains: fma.chains, medianMs: fma.medianMs },
    copy: { bytes, medianMs: copy.medianMs },
    source: fma.source,
  };
}
