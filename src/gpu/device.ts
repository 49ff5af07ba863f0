/**
 * The GPU runtime on any WebGPU adapter (Dawn in Node: runtime.ts; `navigator.gpu` in a browser):
 * one device, a pipeline cache, a buffer pool, and a command recorder that batches every dispatch
 * of a step into one command encoder. Errors the device reports for a dispatch are rethrown at
 * the next sync point as KernelError naming the kernel. Nothing here imports Node or Dawn.
 */
import { GpuError, GpuLostError, GpuOutOfMemoryError, KernelError } from './errors.js';
import {
  type AliasTypes, type DType, type Kernel, packParamsInto, paramBytes, pipelineKey, typesKey,
} from './kernel.js';
import { BufferPool, STORAGE_USAGE } from './pool.js';

export interface BufferRef {
  buffer: GPUBuffer;
  offset?: number;
  size?: number;
}

export interface RunArgs {
  /** Storage buffers in the kernel's binding order. */
  buffers: (GPUBuffer | BufferRef)[];
  params: Record<string, number>;
  /** Workgroup counts. */
  grid: [number, number?, number?];
  overrides?: Record<string, number>;
}

export interface DeviceInfo {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  backend: string;
  cpuFallback: boolean;
  fallbackReason?: string;
  features: string[];
  limits: Record<string, number>;
  subgroupMatrixConfigs: unknown[];
  subgroupMinSize?: number;
  subgroupMaxSize?: number;
}

/** The features we use when the adapter has them. */
const WANTED_FEATURES = [
  'shader-f16',
  'subgroups',
  'timestamp-query',
  'chromium-experimental-subgroup-matrix',
] as const;

/** Limits whose adapter maximum we request (Dawn's defaults are far below a real GPU's). */
const WANTED_LIMITS = [
  'maxBufferSize',
  'maxStorageBufferBindingSize',
  'maxUniformBufferBindingSize',
  'maxComputeWorkgroupStorageSize',
  'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupSizeX',
  'maxComputeWorkgroupSizeY',
  'maxComputeWorkgroupSizeZ',
  'maxComputeWorkgroupsPerDimension',
  'maxStorageBuffersPerShaderStage',
  'maxBindGroups',
] as const;

/** Bytes of one uniform staging chunk (exported for the tests that make it wrap). */
export const UNIFORM_CHUNK = 64 * 1024;
const MAX_QUERIES = 4096;
/**
 * Bind groups kept for reuse. Past this many the cache starts over: entries for buffers made
 * outside the pool (and since dropped) would otherwise pile up.
 */
const BIND_GROUP_CACHE = 16384;

interface UniformChunk {
  gpu: GPUBuffer;
  cpu: Uint8Array<ArrayBuffer>;
  view: DataView;
  used: number;
}

/** Counters of the per-dispatch caches (tests and the bench read them). */
export interface RecordStats {
  dispatches: number;
  bindGroupHits: number;
  bindGroupMisses: number;
  uniformChunks: number;
}

interface PendingError {
  kernel: string;
  promise: Promise<GPUError | null>;
}

/** What the opener knows about an adapter that the adapter itself does not say. */
export interface AdapterFacts {
  /** Backend name when the adapter info has none (Node: from the platform). */
  backend?: string;
  cpuFallback?: boolean;
  fallbackReason?: string;
  /** Called once on close, after the device is destroyed. */
  release?: () => void;
}

export interface KernelTiming {
  count: number;
  totalNs: number;
}

export class Gpu {
  readonly pool: BufferPool;
  readonly features: ReadonlySet<string>;
  /** Per-kernel GPU time from timestamp queries, when `profile` is on and the adapter has them. */
  readonly timings = new Map<string, KernelTiming>();
  profile = false;

  readonly recordStats: RecordStats = {
    dispatches: 0, bindGroupHits: 0, bindGroupMisses: 0, uniformChunks: 0,
  };

  private pipelines = new Map<string, GPUComputePipeline>();
  /** Per kernel: pipelines of dispatches without per-call overrides, by typesKey. */
  private kernelPipelines = new WeakMap<Kernel, Map<string, GPUComputePipeline>>();
  private pipelineIds = new WeakMap<GPUComputePipeline, number>();
  private modules = new Map<string, GPUShaderModule>();
  private encoder: GPUCommandEncoder | null = null;
  private dispatches = 0;
  /**
   * Uniform staging, used in order from chunk 0 after every submit: the k-th dispatch after a
   * submit gets the same (chunk, offset) each step, so its bind group can be reused.
   * queue.writeBuffer runs in submission order, so rewriting a chunk after a submit never
   * changes what that submit's dispatches read.
   */
  private chunks: UniformChunk[] = [];
  private chunkIndex = -1;
  /**
   * Bind groups by (pipeline, every binding's buffer id/offset/size, uniform slot). A bind group
   * names buffers, not contents, so a pooled buffer refilled with other data keeps its bind
   * groups valid; its bound size (the holder's requested bytes) is part of the key. Ids are
   * never reused, so a new buffer never matches an old entry.
   */
  private bindGroups = new Map<string, GPUBindGroup>();
  private bufferIds = new WeakMap<GPUBuffer, number>();
  private nextId = 1;
  private maxGroups: number;
  private errors: PendingError[] = [];
  private uncaptured: GpuError[] = [];
  private lostReason: string | null = null;
  private closed = false;
  private querySet: GPUQuerySet | null = null;
  private queryNames: string[] = [];
  private timingReads: Promise<void>[] = [];
  private uniformAlign: number;

  protected constructor(
    readonly device: GPUDevice,
    readonly adapter: GPUAdapter,
    readonly info: DeviceInfo,
    private release: () => void,
  ) {
    this.features = new Set(device.features as unknown as Iterable<string>);
    this.pool = new BufferPool(device, device.limits.maxBufferSize);
    this.uniformAlign = Math.max(16, device.limits.minUniformBufferOffsetAlignment);
    this.maxGroups = device.limits.maxComputeWorkgroupsPerDimension;
    device.onuncapturederror = (ev: GPUUncapturedErrorEvent) => {
      this.uncaptured.push(new GpuError(`uncaptured GPU error: ${ev.error.message}`));
    };
    void device.lost.then((lost) => {
      if (!this.closed) this.lostReason = `${lost.reason}: ${lost.message}`;
    });
  }

  /**
   * A runtime on `adapter`: requests a device with the features we use and the adapter's full
   * limits. `release` runs on close (Node drops its Dawn instance there).
   */
  static async fromAdapter(adapter: GPUAdapter, opts: AdapterFacts = {}): Promise<Gpu> {
    const adapterFeatures = adapter.features as unknown as Set<string>;
    const requiredFeatures = WANTED_FEATURES.filter((f) => adapterFeatures.has(f));
    const requiredLimits: Record<string, number> = {};
    for (const k of WANTED_LIMITS) {
      const v = (adapter.limits as unknown as Record<string, number>)[k];
      if (typeof v === 'number') requiredLimits[k] = v;
    }
    const device = await adapter.requestDevice({
      requiredFeatures: requiredFeatures as GPUFeatureName[],
      requiredLimits,
      label: 'sam2-lora',
    });
    return this.fromDevice(device, adapter, opts);
  }

  /**
   * A runtime on a device the caller already has (its features and limits as requested there;
   * kernels that need more fail with the device's own validation error).
   */
  static fromDevice(device: GPUDevice, adapter: GPUAdapter, opts: AdapterFacts = {}): Gpu {
    const ai = adapter.info as GPUAdapterInfo & {
      subgroupMatrixConfigs?: unknown[];
      subgroupMinSize?: number;
      subgroupMaxSize?: number;
      backendType?: string;
    };
    const limits: Record<string, number> = {};
    for (const k in device.limits) {
      const v = (device.limits as unknown as Record<string, unknown>)[k];
      if (typeof v === 'number') limits[k] = v;
    }
    const info: DeviceInfo = {
      vendor: ai.vendor,
      architecture: ai.architecture,
      device: ai.device,
      description: ai.description,
      backend: ai.backendType ?? opts.backend ?? 'webgpu',
      cpuFallback: opts.cpuFallback ?? false,
      fallbackReason: opts.fallbackReason,
      features: [...(device.features as unknown as Set<string>)].sort(),
      limits,
      subgroupMatrixConfigs: [...(ai.subgroupMatrixConfigs ?? [])],
      subgroupMinSize: ai.subgroupMinSize,
      subgroupMaxSize: ai.subgroupMaxSize,
    };
    return new this(device, adapter, info, opts.release ?? (() => undefined));
  }

  get limits(): GPUSupportedLimits {
    return this.device.limits;
  }

  /** Workgroup grid for `threads` threads in groups of `wg`, folded into y past the x limit. */
  grid(threads: number, wg: number): [number, number, number] {
    const groups = Math.max(1, Math.ceil(threads / wg));
    const maxX = this.device.limits.maxComputeWorkgroupsPerDimension;
    if (groups <= maxX) return [groups, 1, 1];
    const y = Math.ceil(groups / maxX);
    if (y > maxX) throw new GpuError(`dispatch of ${threads} threads exceeds the workgroup grid`);
    return [Math.ceil(groups / y), y, 1];
  }

  // ---- buffers -----------------------------------------------------------------------------

  /** A pooled storage buffer whose elements are `dtype` (kernels pick their variant from it). */
  alloc(bytes: number, label?: string, dtype: DType = 'f32'): GPUBuffer {
    this.checkAlive();
    const buf = this.pool.acquire(bytes, STORAGE_USAGE, label);
    this.pool.setDtype(buf, dtype);
    return buf;
  }

  free(buf: GPUBuffer): void {
    this.pool.release(buf);
  }

  /** Uploads data into a fresh pooled buffer. */
  upload(data: ArrayBufferView, label?: string): GPUBuffer {
    const buf = this.alloc(data.byteLength, label);
    this.write(buf, data);
    return buf;
  }

  /**
   * Writes into a buffer. queue.writeBuffer runs before the open encoder's commands, so that
   * encoder is submitted first: earlier recorded reads of `buf` must see the old contents.
   */
  write(buf: GPUBuffer, data: ArrayBufferView, offset = 0): void {
    this.checkAlive();
    if (this.dispatches > 0) this.flush();
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    const padded = bytes.byteLength % 4 === 0 ? bytes : padTo4(bytes);
    // Typed for DOM's lib too (the browser page), which refuses views of a SharedArrayBuffer.
    this.device.queue.writeBuffer(buf, offset, padded as Uint8Array<ArrayBuffer>);
  }

  /** Records a buffer-to-buffer copy in the current encoder. */
  copy(src: GPUBuffer, srcOffset: number, dst: GPUBuffer, dstOffset: number, bytes: number): void {
    this.checkAlive();
    this.getEncoder().copyBufferToBuffer(src, srcOffset, dst, dstOffset, bytes);
    this.dispatches++;
  }

  /** Reads a buffer back to the CPU (flushes; a sync point). */
  async read(src: GPUBuffer, byteLength = src.size, offset = 0): Promise<ArrayBuffer> {
    this.checkAlive();
    const size = Math.ceil(byteLength / 4) * 4;
    const usage = GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST;
    const staging = this.pool.acquire(size, usage, 'readback');
    this.getEncoder().copyBufferToBuffer(src, offset, staging, 0, size);
    this.dispatches++;
    this.flush();
    try {
      await staging.mapAsync(GPUMapMode.READ, 0, size);
    } catch (e) {
      await this.throwPending();
      throw new GpuError(`readback failed: ${(e as Error).message}`);
    }
    const out = staging.getMappedRange(0, size).slice(0, byteLength);
    staging.unmap();
    this.pool.release(staging);
    await this.throwPending();
    return out;
  }

  async readF32(src: GPUBuffer, count: number, offset = 0): Promise<Float32Array> {
    return new Float32Array(await this.read(src, count * 4, offset));
  }

  // ---- kernels -----------------------------------------------------------------------------

  private module(kernel: Kernel, types: AliasTypes): GPUShaderModule {
    const t = typesKey(types);
    const key = t ? `${kernel.family.file}<${t}>` : kernel.family.file;
    let m = this.modules.get(key);
    if (!m) {
      m = this.device.createShaderModule({
        code: kernel.family.source(types),
        label: `${kernel.family.file}.wgsl${t ? ` <${t}>` : ''}`,
      });
      this.modules.set(key, m);
    }
    return m;
  }

  /** The pipeline of a dispatch: kernel + per-call overrides + element types. */
  private pipeline(
    kernel: Kernel,
    callOverrides: Record<string, number> | undefined,
    types: AliasTypes,
  ): GPUComputePipeline {
    // Most dispatches pass no overrides: look those up per kernel, without building the full key.
    let perKernel: Map<string, GPUComputePipeline> | undefined;
    const tkey = callOverrides ? '' : typesKey(types);
    if (!callOverrides) {
      perKernel = this.kernelPipelines.get(kernel);
      const hit = perKernel?.get(tkey);
      if (hit) return hit;
    }
    const overrides = { ...(kernel.overrides ?? {}), ...(callOverrides ?? {}) };
    const key = pipelineKey(kernel, overrides, types);
    let p = this.pipelines.get(key);
    if (!p) {
      this.device.pushErrorScope('validation');
      try {
        p = this.device.createComputePipeline({
          label: kernel.name,
          layout: 'auto',
          compute: {
            module: this.module(kernel, types),
            entryPoint: kernel.entry,
            constants: overrides,
          },
        });
      } finally {
        this.errors.push({ kernel: kernel.name, promise: this.device.popErrorScope() });
      }
      this.pipelines.set(key, p);
    }
    if (!callOverrides) {
      if (!perKernel) this.kernelPipelines.set(kernel, (perKernel = new Map()));
      perKernel.set(tkey, p);
    }
    return p;
  }

  private idOf(buf: GPUBuffer): number {
    let id = this.bufferIds.get(buf);
    if (id === undefined) this.bufferIds.set(buf, (id = this.nextId++));
    return id;
  }

  /** The bind group of a dispatch, from the cache when the same bindings were bound before. */
  private bindGroup(
    kernel: Kernel,
    pipeline: GPUComputePipeline,
    buffers: (GPUBuffer | BufferRef)[],
    uniform: GPUBufferBinding,
  ): GPUBindGroup {
    let pid = this.pipelineIds.get(pipeline);
    if (pid === undefined) this.pipelineIds.set(pipeline, (pid = this.nextId++));
    let key = `${pid}|${this.idOf(uniform.buffer)}@${uniform.offset}`;
    for (let i = 0; i < buffers.length; i++) {
      const b = buffers[i];
      key += 'buffer' in b
        ? `|${this.idOf(b.buffer)}@${b.offset ?? 0}:${b.size ?? '-'}`
        : `|${this.idOf(b)}:${this.pool.requestedBytes(b)}`;
    }
    const hit = this.bindGroups.get(key);
    if (hit) {
      this.recordStats.bindGroupHits++;
      return hit;
    }
    this.recordStats.bindGroupMisses++;
    const entries: GPUBindGroupEntry[] = buffers.map((b, i) => ({
      binding: i,
      // Bind what was asked for, not the rounded-up size class: a tensor just under
      // maxStorageBufferBindingSize must stay bindable.
      resource: 'buffer' in b ? toBinding(b) : { buffer: b, size: this.pool.requestedBytes(b) },
    }));
    entries.push({ binding: buffers.length, resource: uniform });
    this.device.pushErrorScope('validation');
    let group: GPUBindGroup;
    try {
      group = this.device.createBindGroup({
        label: kernel.name,
        layout: pipeline.getBindGroupLayout(0),
        entries,
      });
    } finally {
      this.errors.push({ kernel: kernel.name, promise: this.device.popErrorScope() });
    }
    if (this.bindGroups.size >= BIND_GROUP_CACHE) this.bindGroups.clear();
    this.bindGroups.set(key, group);
    return group;
  }

  /** Records one kernel dispatch into the current command encoder. */
  run(kernel: Kernel, args: RunArgs): void {
    this.checkAlive();
    if (args.buffers.length !== kernel.bindings.length) {
      throw new KernelError(
        kernel.name,
        `expects ${kernel.bindings.length} buffers (${kernel.bindings.join(', ')}), ` +
          `got ${args.buffers.length}`,
      );
    }
    const [gx, gy = 1, gz = 1] = args.grid;
    const maxG = this.maxGroups;
    if (gx > maxG || gy > maxG || gz > maxG) {
      throw new KernelError(kernel.name, `grid [${gx},${gy},${gz}] exceeds ${maxG} per dimension`);
    }
    if (gx === 0 || gy === 0 || gz === 0) return;
    const uniform = this.uniformSlot(kernel, args.params);
    const types = this.aliasTypes(kernel, args.buffers);

    // Device-level errors of a dispatch come only from creating its pipeline or bind group: each
    // creation has its own error scope naming the kernel. Errors in the pass's commands surface
    // at the encoder's finish (the submit's scope), named by the pass label (throwPending).
    const pipeline = this.pipeline(kernel, args.overrides, types);
    const bindGroup = this.bindGroup(kernel, pipeline, args.buffers, uniform);
    const encoder = this.getEncoder();
    const timestampWrites = this.timestampWrites(kernel.name);
    const pass = encoder.beginComputePass({ label: kernel.name, timestampWrites });
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bindGroup);
    pass.dispatchWorkgroups(gx, gy, gz);
    pass.end();
    this.dispatches++;
    this.recordStats.dispatches++;
    if (this.queryNames.length >= MAX_QUERIES / 2) this.flush();
  }

  /**
   * The variant a dispatch needs: each typed binding's alias takes its buffer's dtype. An f16
   * buffer on a binding without an alias is an error (that kernel has no f16 variant).
   */
  private aliasTypes(kernel: Kernel, buffers: (GPUBuffer | BufferRef)[]): AliasTypes {
    const types: Record<string, DType> = {};
    buffers.forEach((b, i) => {
      const dt = this.pool.dtypeOf('buffer' in b ? b.buffer : b);
      const name = kernel.bindings[i];
      const alias = kernel.types?.[name];
      if (!alias) {
        if (dt !== 'f32') {
          throw new KernelError(kernel.name, `binding '${name}' takes f32 only, got an ${dt} buffer`);
        }
        return;
      }
      if (types[alias] && types[alias] !== dt) {
        throw new KernelError(kernel.name, `bindings sharing ${alias} got both f32 and f16`);
      }
      types[alias] = dt;
      if (dt === 'f16' && !this.features.has('shader-f16')) {
        throw new KernelError(kernel.name, "f16 buffer but this adapter lacks 'shader-f16'");
      }
    });
    return types;
  }

  /** Packs a dispatch's uniforms into the next slot of the staging chunks (see `chunks`). */
  private uniformSlot(kernel: Kernel, params: Record<string, number>): GPUBufferBinding {
    const size = paramBytes(kernel);
    let chunk = this.chunks[this.chunkIndex];
    if (!chunk || chunk.used + size > UNIFORM_CHUNK) {
      chunk = this.chunks[++this.chunkIndex];
      if (!chunk) {
        const cpu = new Uint8Array(UNIFORM_CHUNK);
        chunk = {
          gpu: this.device.createBuffer({
            size: UNIFORM_CHUNK,
            usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
            label: 'uniforms',
          }),
          cpu,
          view: new DataView(cpu.buffer),
          used: 0,
        };
        this.chunks.push(chunk);
        this.recordStats.uniformChunks++;
      }
      chunk.used = 0;
    }
    const offset = chunk.used;
    packParamsInto(kernel, params, chunk.view, offset);
    chunk.used = Math.ceil((offset + size) / this.uniformAlign) * this.uniformAlign;
    return { buffer: chunk.gpu, offset, size };
  }

  private timestampWrites(name: string): GPUComputePassTimestampWrites | undefined {
    if (!this.profile || !this.features.has('timestamp-query')) return undefined;
    if (!this.querySet) {
      this.device.pushErrorScope('validation');
      this.querySet = this.device.createQuerySet({ type: 'timestamp', count: MAX_QUERIES });
      this.errors.push({ kernel: name, promise: this.device.popErrorScope() });
    }
    const i = this.queryNames.length * 2;
    this.queryNames.push(name);
    return { querySet: this.querySet, beginningOfPassWriteIndex: i, endOfPassWriteIndex: i + 1 };
  }

  private getEncoder(): GPUCommandEncoder {
    this.encoder ??= this.device.createCommandEncoder({ label: 'step' });
    return this.encoder;
  }

  // ---- submission --------------------------------------------------------------------------

  /** Submits everything recorded so far (no wait). */
  flush(): void {
    if (!this.encoder) {
      // Nothing recorded can still use released buffers: they are reusable now.
      this.pool.afterSubmit();
      this.chunkIndex = -1;
      return;
    }
    const encoder = this.encoder;
    this.encoder = null;
    let timing: { names: string[]; resolve: GPUBuffer; readback: GPUBuffer } | null = null;
    if (this.queryNames.length > 0 && this.querySet) {
      const n = this.queryNames.length * 2;
      const resolve = this.device.createBuffer({
        size: n * 8,
        usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
      });
      const readback = this.device.createBuffer({
        size: n * 8,
        usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
      });
      encoder.resolveQuerySet(this.querySet, 0, n, resolve, 0);
      encoder.copyBufferToBuffer(resolve, 0, readback, 0, n * 8);
      timing = { names: this.queryNames, resolve, readback };
      this.queryNames = [];
    }
    for (let i = 0; i <= this.chunkIndex; i++) {
      const c = this.chunks[i];
      this.device.queue.writeBuffer(c.gpu, 0, c.cpu, 0, c.used);
    }
    this.device.pushErrorScope('out-of-memory');
    this.device.pushErrorScope('validation');
    const cmd = encoder.finish();
    this.device.queue.submit([cmd]);
    this.errors.push({ kernel: 'submit', promise: this.device.popErrorScope() });
    this.errors.push({ kernel: 'submit', promise: this.device.popErrorScope() });
    this.chunkIndex = -1;
    this.pool.afterSubmit();
    this.dispatches = 0;
    if (timing) this.timingReads.push(this.collectTimings(timing));
  }

  private async collectTimings(t: { names: string[]; resolve: GPUBuffer; readback: GPUBuffer }) {
    await t.readback.mapAsync(GPUMapMode.READ);
    const ts = new BigUint64Array(t.readback.getMappedRange().slice(0));
    t.readback.unmap();
    t.readback.destroy();
    t.resolve.destroy();
    t.names.forEach((name, i) => {
      const ns = Number(ts[2 * i + 1] - ts[2 * i]);
      const e = this.timings.get(name) ?? { count: 0, totalNs: 0 };
      e.count++;
      e.totalNs += ns > 0 ? ns : 0;
      this.timings.set(name, e);
    });
  }

  /** Submits and waits for the GPU; throws the first error Dawn reported since the last sync. */
  async sync(): Promise<void> {
    this.checkAlive();
    this.flush();
    await this.device.queue.onSubmittedWorkDone();
    await Promise.all(this.timingReads);
    this.timingReads = [];
    await this.throwPending();
  }

  private async throwPending(): Promise<void> {
    const pending = this.errors;
    this.errors = [];
    const results = await Promise.all(pending.map((p) => p.promise));
    if (this.lostReason) throw new GpuLostError(this.lostReason);
    // A bind group made in a failed scope may be an error object: never hand it out again.
    if (results.some((r) => r)) this.bindGroups.clear();
    for (let i = 0; i < results.length; i++) {
      const err = results[i];
      if (!err) continue;
      const msg = err.message;
      if (err.constructor.name === 'GPUOutOfMemoryError' || /out of memory/i.test(msg)) {
        this.pool.trim();
        throw new GpuOutOfMemoryError(`${pending[i].kernel}: ${msg}`);
      }
      const named = /\[ComputePassEncoder "([^"]+)"\]/.exec(msg)?.[1];
      throw new KernelError(named ?? pending[i].kernel, msg.trim());
    }
    const u = this.uncaptured.shift();
    if (u) throw u;
  }

  private checkAlive(): void {
    if (this.closed) throw new GpuError('the GPU runtime was closed');
    if (this.lostReason) throw new GpuLostError(this.lostReason);
  }

  /** Releases the device so Node can exit (see shutdown() for the orderly way). */
  close(): void {
    if (this.destroyDevice()) this.release();
  }

  /** Marks the runtime closed and destroys the device; false when it was closed already. */
  private destroyDevice(): boolean {
    if (this.closed) return false;
    this.closed = true;
    this.bindGroups.clear();
    this.pool.trim();
    this.device.destroy();
    return true;
  }

  /**
   * Closes the device once Dawn has settled: its queue idle before the destroy, and the destroy
   * reported back (device.lost) before the instance is let go. Destroying a device that was just
   * opened, or exiting while Dawn still tears one down, can kill the process at exit on lavapipe
   * (std::system_error from a worker thread, or SIGSEGV) after all output was written.
   */
  async shutdown(): Promise<void> {
    if (this.closed) return;
    await this.device.queue.onSubmittedWorkDone().catch(() => undefined);
    if (!this.destroyDevice()) return;
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      this.device.lost.then(() => undefined, () => undefined),
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, 2000);
      }),
    ]);
    clearTimeout(timer);
    this.release();
  }
}

function toBinding(b: BufferRef): GPUBufferBinding {
  return { buffer: b.buffer, offset: b.offset ?? 0, size: b.size };
}

function padTo4(bytes: Uint8Array): Uint8Array {
  const out = new Uint8Array(Math.ceil(bytes.byteLength / 4) * 4);
  out.set(bytes);
  return out;
}
