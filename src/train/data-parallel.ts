/**
 * Data-parallel training inside one process: one model replica per Dawn device, each device
 * takes a contiguous shard of every batch, and the trainable tensors' gradients (LoRA + head,
 * well under 1 M floats) are summed on the CPU before the optimizer step.
 *
 * Each shard's micro-batch losses are already weighted by their share of the whole batch (as
 * micro-batching does), so the sum of the replicas' gradients is the whole-batch gradient. The
 * sum is taken in float64 in replica order and written to replica 0 only: replica 0 owns the
 * optimizer (clipping, the non-finite guard, AdamW, checkpoints) and its updated parameters are
 * copied to the other replicas. Copying, rather than running the same AdamW on every replica,
 * keeps the replicas bit-identical even on adapters whose sqrt / division round differently, and
 * keeps a single optimizer state to save and resume.
 */
import type { Tensor } from '../autograd/tensor.js';
import { availableAdapters, type AdapterChoice, type Backend } from '../gpu/dawn.js';
import type { Gpu } from '../gpu/runtime.js';

/** A model replica's trainable tensors, in the optimizer's order (the same on every replica). */
export interface ReplicaParams {
  gpu: Gpu;
  params: readonly [string, Tensor][];
}

/** Contiguous shards of `count` samples over `n` devices, as even as possible (first ones larger). */
export function shardRanges(count: number, n: number): { start: number; count: number }[] {
  const base = Math.floor(count / n);
  const extra = count % n;
  const out: { start: number; count: number }[] = [];
  let start = 0;
  for (let r = 0; r < n; r++) {
    const c = base + (r < extra ? 1 : 0);
    out.push({ start, count: c });
    start += c;
  }
  return out;
}

/** Reads tensors (or their gradients) of one replica back in one transfer; null: no gradient. */
async function readPacked(gpu: Gpu, tensors: (Tensor | null)[]): Promise<Float32Array> {
  const total = tensors.reduce((a, t) => a + (t?.size ?? 0), 0);
  if (total === 0) return new Float32Array(0);
  const packed = gpu.alloc(total * 4, 'dp.packed');
  let at = 0;
  for (const t of tensors) {
    if (!t) continue;
    gpu.copy(t.buffer, 0, packed, at * 4, t.size * 4);
    at += t.size;
  }
  const out = await gpu.readF32(packed, total);
  gpu.free(packed);
  return out;
}

/** Writes a packed array back into tensors (the layout readPacked produced). */
function writePacked(gpu: Gpu, tensors: (Tensor | null)[], data: Float32Array): void {
  let at = 0;
  for (const t of tensors) {
    if (!t) continue;
    gpu.write(t.buffer, data.subarray(at, at + t.size));
    at += t.size;
  }
}

/**
 * Sums every replica's gradients into replica 0's (float64, replica order) and zeroes the
 * others, ready for the next step. A replica that got no samples has no gradients: it adds 0.
 */
export async function allReduceGradients(replicas: readonly ReplicaParams[]): Promise<void> {
  if (replicas.length < 2) return;
  const [first, ...rest] = replicas;
  const grads0 = first.params.map(([, p]) => p.grad);
  for (const r of rest) {
    r.params.forEach(([n, p], i) => {
      if (p.grad && !grads0[i]) {
        throw new Error(`data parallel: ${n} has a gradient on ${r.gpu.info.description} but not on replica 0`);
      }
    });
  }
  const sizes = grads0.map((g) => g?.size ?? 0);
  const reads = await Promise.all(replicas.map((r) =>
    readPacked(r.gpu, r.params.map(([, p], i) => (grads0[i] ? p.grad : null)))));
  const total = sizes.reduce((a, b) => a + b, 0);
  const sum = new Float64Array(total);
  for (let r = 0; r < replicas.length; r++) {
    const g = reads[r];
    if (g.length === 0) continue; // no samples on this replica this step
    // A replica with gradients on some tensors only (not expected) would shift the layout.
    const full = replicas[r].params.every(([, p], i) => !grads0[i] || p.grad);
    if (!full) throw new Error(`data parallel: replica ${r} lacks gradients replica 0 has`);
    for (let j = 0; j < total; j++) sum[j] += g[j];
  }
  writePacked(first.gpu, grads0, Float32Array.from(sum));
  for (const r of rest) {
    for (const [, p] of r.params) p.grad?.zero(); // deferred: costs nothing until read
  }
}

/** Copies replica 0's trainable parameters to every other replica. */
export async function broadcastParameters(replicas: readonly ReplicaParams[]): Promise<void> {
  if (replicas.length < 2) return;
  const [first, ...rest] = replicas;
  const values = await readPacked(first.gpu, first.params.map(([, p]) => p));
  for (const r of rest) {
    r.params.forEach(([n, p], i) => {
      if (n !== first.params[i][0] || p.size !== first.params[i][1].size) {
        throw new Error(`data parallel: replica tensors differ (${n} vs ${first.params[i][0]})`);
      }
    });
    writePacked(r.gpu, r.params.map(([, p]) => p), values);
  }
}

// ---------------------------------------------------------------------------------------------
// `--gpus`: which devices.

const CPU_ADAPTER = /llvmpipe|lavapipe|swiftshader|warp|basic render/i;

export class DeviceSpecError extends Error {}

/**
 * The adapters `--gpus` chooses from: Dawn's list (from the error-message trick in dawn.ts, the
 * only enumeration dawn.node offers), CPU rasterizers dropped when a real GPU exists, one entry
 * per adapter name (the first backend Dawn lists). When Dawn lists nothing (lavapipe through our
 * layer), the one default adapter.
 */
async function adapterList(base: AdapterChoice): Promise<AdapterChoice[]> {
  if (base.adapter) return [base];
  const seen = new Set<string>();
  const all: AdapterChoice[] = [];
  for (const line of await availableAdapters()) {
    const m = /^([^:]+): (.*)$/.exec(line);
    if (!m) continue;
    const [, backend, name] = m;
    if (base.backend && backend !== base.backend) continue;
    if (backend === 'null' || seen.has(name)) continue;
    seen.add(name);
    all.push({ ...base, adapter: name, backend: backend as Backend });
  }
  const real = all.filter((a) => !CPU_ADAPTER.test(a.adapter ?? ''));
  const list = real.length ? real : all;
  return list.length ? list : [base];
}

/**
 * The devices `--gpus` names: `all` (one per adapter), `N` (N devices; more than there are
 * adapters shares adapters, for testing only: no speed-up), or a list of adapter indices
 * (`0,1`; an index may repeat). Returns the choices and a line describing them.
 */
export async function resolveDevices(
  spec: string,
  base: AdapterChoice = {},
): Promise<{ devices: AdapterChoice[]; note: string }> {
  const list = await adapterList(base);
  const names = list.map((a, i) => `${i}: ${a.adapter ?? 'the default adapter'}`).join('; ');
  const s = spec.trim();
  let devices: AdapterChoice[];
  if (s === 'all') {
    devices = list;
  } else if (/^\d+$/.test(s)) {
    const n = Number(s);
    if (n < 1) throw new DeviceSpecError(`--gpus ${spec}: give at least 1 device`);
    devices = Array.from({ length: n }, (_, i) => list[i % list.length]);
  } else if (/^\d+(,\d+)+$/.test(s) || /^\d+,?$/.test(s)) {
    devices = s.split(',').filter(Boolean).map((x) => {
      const i = Number(x);
      if (i >= list.length) {
        throw new DeviceSpecError(`--gpus ${spec}: no adapter ${i} (adapters here: ${names})`);
      }
      return list[i];
    });
  } else {
    throw new DeviceSpecError(`--gpus ${spec}: expected all, a count (2) or adapter indices (0,1)`);
  }
  const shared = new Set(devices.map((d) => d.adapter ?? '')).size < devices.length;
  const note = `${devices.length} device${devices.length === 1 ? '' : 's'} on ` +
    `${[...new Set(devices.map((d) => d.adapter ?? 'the default adapter'))].join(', ')}` +
    (shared ? ' (several devices share an adapter: same result, no speed-up)' : '');
  return { devices, note };
}
