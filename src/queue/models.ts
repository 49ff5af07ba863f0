/** Adapters on a worker: identified by their content, loaded once per id, used one job at a time. */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { AdapterChoice } from '../gpu/dawn.js';
import { fileError } from '../io/fs-errors.js';
import { QueueError } from './schema.js';
import { adapterFile, type LoadedModel, modelFromAdapter } from '../adapter/adapter.js';

/** sha256 (16 hex) of an adapter's tensors file: a retrained adapter at the same path is another id. */
export async function adapterId(adapter: string): Promise<string> {
  const file = adapterFile(adapter);
  let bytes: Buffer;
  try {
    bytes = await readFile(file);
  } catch (e) {
    throw fileError(file, e, 'an adapter.safetensors');
  }
  return createHash('sha256').update(bytes).digest('hex').slice(0, 16);
}

/**
 * Models by adapter id (+ base checkpoint override): the first job of an adapter loads it, later
 * jobs reuse it. The file is hashed on load: a job whose adapter changed since it was enqueued
 * fails with a clear error rather than predicting with other weights. Models are kept for the
 * worker's life (a worker serves few adapters; there is no GPU-memory eviction).
 */
export class ModelCache {
  private models = new Map<string, Promise<LoadedModel>>();
  private warm = new Set<string>();
  private gpuTail: Promise<unknown> = Promise.resolve();

  constructor(private gpu: AdapterChoice, private log: (line: string) => void) {}

  get size(): number {
    return this.models.size;
  }

  /**
   * False until a forward pass of this model succeeded: the first one compiles every kernel
   * pipeline synchronously (seconds on a CPU rasterizer), blocking the event loop and with it
   * BullMQ's lock renewal.
   */
  isWarm(id: string, checkpoint?: string): boolean {
    return this.warm.has(`${id}\0${checkpoint ?? ''}`);
  }

  markWarm(id: string, checkpoint?: string): void {
    this.warm.add(`${id}\0${checkpoint ?? ''}`);
  }

  get(adapter: string, id: string, checkpoint?: string): Promise<LoadedModel> {
    const key = `${id}\0${checkpoint ?? ''}`;
    let m = this.models.get(key);
    if (!m) {
      m = this.load(adapter, id, checkpoint);
      this.models.set(key, m);
      // A failed load is not cached: the next job retries it (a mount may come back).
      m.catch(() => this.models.delete(key));
    }
    return m;
  }

  private async load(adapter: string, id: string, checkpoint?: string): Promise<LoadedModel> {
    const actual = await adapterId(adapter);
    if (actual !== id) {
      throw new QueueError(`${adapter}: the adapter changed since the job was enqueued (id ${id}, ` +
        `now ${actual}); enqueue the photos again`);
    }
    const t0 = Date.now();
    // The adapter's default precision, as a local `predict` without --precision runs.
    const m = await modelFromAdapter(adapter, { checkpoint, adapter: this.gpu, precision: 'auto' });
    this.log(`adapter ${id} (${adapter}) loaded in ${((Date.now() - t0) / 1000).toFixed(1)} s, ` +
      `${m.precision.precision} (${m.precision.reason})`);
    return m;
  }

  /** Runs `fn` alone on the GPU: jobs overlap their file work, never their forward passes. */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.gpuTail.then(fn, fn);
    this.gpuTail = run.catch(() => {});
    return run;
  }
}
