/**
 * Buffer pool with size classes, so a training step reuses the previous step's buffers instead of
 * allocating. Released buffers wait until the command encoder that may still use them is
 * submitted; after that, reuse is safe because queue operations run in submission order.
 */
import { GpuOutOfMemoryError } from './errors.js';
import type { DType } from './kernel.js';

export const STORAGE_USAGE = 0x80 | 0x4 | 0x8; // STORAGE | COPY_SRC | COPY_DST

/** Size classes: 4 steps per power of two (x1, x1.25, x1.5, x1.75), at least 256 bytes. */
export function sizeClass(bytes: number): number {
  const n = Math.max(256, Math.ceil(bytes / 4) * 4);
  const p = 2 ** Math.floor(Math.log2(n));
  const step = p / 4;
  return Math.ceil(n / step) * step;
}

export interface PoolStats {
  /** Bytes held by live (in-use) buffers. */
  liveBytes: number;
  /** High-water mark of liveBytes since the last resetPeak(). */
  peakLiveBytes: number;
  /** Bytes of every buffer the pool owns, in use or cached. */
  allocatedBytes: number;
  allocations: number;
  reuses: number;
}

export class BufferPool {
  private free = new Map<string, GPUBuffer[]>();
  private pending: GPUBuffer[] = [];
  private sizes = new WeakMap<GPUBuffer, number>();
  /** Bytes the current holder asked for (≤ the size class): what a binding should cover. */
  private requested = new WeakMap<GPUBuffer, number>();
  /** Element type of what the current holder stores (f32 unless set): picks kernel variants. */
  private dtypes = new WeakMap<GPUBuffer, DType>();
  /** Creation order: free lists hand out their oldest buffer first (see afterSubmit). */
  private order = new WeakMap<GPUBuffer, number>();
  private created = 0;
  readonly stats: PoolStats = {
    liveBytes: 0,
    peakLiveBytes: 0,
    allocatedBytes: 0,
    allocations: 0,
    reuses: 0,
  };

  constructor(
    private device: GPUDevice,
    private maxBufferSize: number,
  ) {}

  acquire(bytes: number, usage = STORAGE_USAGE, label?: string): GPUBuffer {
    const size = sizeClass(bytes);
    if (size > this.maxBufferSize) {
      throw new GpuOutOfMemoryError(
        `${label ?? 'buffer'} needs ${bytes} bytes, above this adapter's maxBufferSize ` +
          `${this.maxBufferSize}; use a smaller batch or input size`,
      );
    }
    const key = `${size}:${usage}`;
    const list = this.free.get(key);
    let buf = list?.pop();
    if (buf) {
      this.stats.reuses++;
    } else {
      buf = this.device.createBuffer({ size, usage, label });
      this.sizes.set(buf, size);
      this.order.set(buf, this.created++);
      this.stats.allocatedBytes += size;
      this.stats.allocations++;
    }
    this.requested.set(buf, Math.ceil(bytes / 4) * 4);
    this.dtypes.delete(buf);
    this.stats.liveBytes += size;
    this.stats.peakLiveBytes = Math.max(this.stats.peakLiveBytes, this.stats.liveBytes);
    return buf;
  }

  /** Returns a buffer; it becomes reusable after the next submit (see afterSubmit). */
  release(buf: GPUBuffer): void {
    this.stats.liveBytes -= this.sizes.get(buf) ?? buf.size;
    this.pending.push(buf);
  }

  setDtype(buf: GPUBuffer, dtype: DType): void {
    if (dtype === 'f32') this.dtypes.delete(buf);
    else this.dtypes.set(buf, dtype);
  }

  /** The element type of a buffer's contents: f32 for any buffer not marked otherwise. */
  dtypeOf(buf: GPUBuffer): DType {
    return this.dtypes.get(buf) ?? 'f32';
  }

  /** The bytes requested for a pooled buffer (its whole size for a buffer the pool did not make). */
  requestedBytes(buf: GPUBuffer): number {
    return this.requested.get(buf) ?? buf.size;
  }

  /**
   * Makes the buffers released since the last submit reusable. Each free list is kept sorted so
   * that acquire hands out the oldest buffer first: a step that allocates like the one before it
   * then gets the very same buffers, which lets the runtime reuse its bind groups.
   */
  afterSubmit(): void {
    if (this.pending.length === 0) return;
    const touched = new Set<GPUBuffer[]>();
    for (const buf of this.pending) {
      const key = `${buf.size}:${buf.usage}`;
      let list = this.free.get(key);
      if (!list) this.free.set(key, (list = []));
      list.push(buf);
      touched.add(list);
    }
    this.pending = [];
    const rank = (b: GPUBuffer): number => this.order.get(b) ?? -1;
    for (const list of touched) list.sort((a, b) => rank(b) - rank(a));
  }

  /** Destroys every cached buffer (used on out-of-memory and at shutdown). */
  trim(): void {
    for (const list of this.free.values()) {
      for (const b of list) {
        this.stats.allocatedBytes -= b.size;
        b.destroy();
      }
    }
    this.free.clear();
  }

  resetPeak(): void {
    this.stats.peakLiveBytes = this.stats.liveBytes;
  }
}
