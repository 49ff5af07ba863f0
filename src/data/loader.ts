/**
 * Batches of decoded (and optionally augmented) pairs, shuffled per epoch from a seeded RNG, with
 * several batches prefetched. sharp decodes on libuv's threadpool, so plain async concurrency keeps
 * the CPU cores busy without worker_threads; the resize to model size (pixels.ts, the code the
 * browser page shares) runs on the main thread. The prefetch queue only bounds memory.
 *
 * Determinism: the order of epoch e comes from shuffling with the RNG state reached at the start
 * of e, and each sample's augmentation from a hash of (seed, epoch, position, id), never from
 * load order, so `restore(state())` replays exactly the same batches whatever was prefetched.
 */
import type { AugmentOptions } from './augment.js';
import { augmentPair } from './augment.js';
import type { Sample } from './dataset.js';
import { type BadSample, type LoadedPair, SampleError, loadPair } from './decode.js';
import { Rng, hash32, withDefaults } from '../util/random.js';

export interface BatchLoaderOptions {
  batchSize: number;
  /** Model input side: batches hold size x size images. */
  size: number;
  seed?: number;
  /** Reshuffle every epoch (default true); false keeps the samples' order. */
  shuffle?: boolean;
  /** Drop the last incomplete batch of an epoch (default true). */
  dropLast?: boolean;
  /** Batches decoded ahead of the consumer (default 3). */
  prefetch?: number;
  /** Augmentation options, or false for none (default false). */
  augment?: AugmentOptions | false;
  /**
   * Record unreadable/mismatched samples in `bad` instead of throwing; a bad sample's slot in its
   * batch is filled with a copy of a good sample of the same batch (batch shapes stay fixed).
   * Run `checkSamples` first to drop the ones a header check catches.
   */
  skipBad?: boolean;
  /** Fixed mask threshold, overriding the samples' detected encoding (see `checkSamples`). */
  maskThreshold?: number;
}

/** Position of the next batch `next()` returns; `rngState` is the RNG state at that epoch's start. */
export interface LoaderState {
  epoch: number;
  cursor: number;
  rngState: number;
}

export interface Batch {
  /** NHWC [count, size, size, 3]. */
  images: Float32Array;
  /** [count, size, size], 0/1. */
  masks: Float32Array;
  ids: string[];
  count: number;
  size: number;
  epoch: number;
  /** Index of the batch within its epoch. */
  index: number;
}

interface EpochOrder {
  perm: number[];
  startState: number;
  endState: number;
}

interface Pending {
  epoch: number;
  cursor: number;
  promise: Promise<Batch>;
}

export class BatchLoader {
  /** Samples that failed to load under `skipBad` (each recorded once). */
  readonly bad: BadSample[] = [];
  private readonly badIds = new Set<string>();
  private readonly opts: Required<Omit<BatchLoaderOptions, 'augment' | 'maskThreshold'>> & {
    augment: AugmentOptions | false;
    maskThreshold?: number;
  };
  private orders = new Map<number, EpochOrder>();
  private epoch = 0;
  private cursor = 0;
  private prodEpoch = 0;
  private prodCursor = 0;
  private queue: Pending[] = [];

  constructor(
    private readonly samples: Sample[],
    options: BatchLoaderOptions,
  ) {
    this.opts = withDefaults<BatchLoader['opts']>(
      {
        batchSize: 0,
        size: 0,
        seed: 0,
        shuffle: true,
        dropLast: true,
        prefetch: 3,
        augment: false as AugmentOptions | false,
        skipBad: false,
      },
      options,
    );
    const { batchSize, size } = this.opts;
    if (!(batchSize >= 1) || !(size >= 1)) {
      throw new Error(`BatchLoader: batchSize and size must be >= 1, got ${batchSize}, ${size}`);
    }
    if (samples.length === 0) throw new Error('BatchLoader: no samples');
    if (this.opts.dropLast && samples.length < batchSize) {
      throw new Error(
        `BatchLoader: ${samples.length} samples cannot fill one batch of ${batchSize} ` +
          'with dropLast; lower the batch size',
      );
    }
    this.orders.set(0, this.order(new Rng(this.opts.seed).state()));
  }

  get batchesPerEpoch(): number {
    const n = this.samples.length;
    const b = this.opts.batchSize;
    return this.opts.dropLast ? Math.floor(n / b) : Math.ceil(n / b);
  }

  get badCount(): number {
    return this.bad.length;
  }

  state(): LoaderState {
    return { epoch: this.epoch, cursor: this.cursor, rngState: this.epochOrder(this.epoch).startState };
  }

  /** Continue from a saved state: the next batches equal those that followed `state()`. */
  restore(s: LoaderState): void {
    if (!(s.cursor >= 0 && s.cursor < this.samples.length) || !(s.epoch >= 0)) {
      throw new Error(
        `BatchLoader.restore: cursor ${s.cursor} / epoch ${s.epoch} out of range ` +
          `for ${this.samples.length} samples`,
      );
    }
    this.dropQueue();
    this.orders = new Map([[s.epoch, this.order(s.rngState >>> 0)]]);
    this.epoch = this.prodEpoch = s.epoch;
    this.cursor = this.prodCursor = s.cursor;
  }

  /** The next batch (epochs follow each other endlessly). */
  async next(): Promise<Batch> {
    this.fill();
    const head = this.queue.shift()!;
    [this.epoch, this.cursor] = this.advance(head.epoch, head.cursor);
    this.forget();
    this.fill();
    return head.promise;
  }

  /** The remaining batches of the current epoch. */
  async *epochBatches(): AsyncGenerator<Batch> {
    const e = this.epoch;
    while (this.epoch === e) yield await this.next();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Batch> {
    for (;;) yield await this.next();
  }

  /** Stops prefetching (in-flight decodes finish and are discarded). */
  close(): void {
    this.dropQueue();
  }

  private dropQueue(): void {
    this.queue = [];
    this.prodEpoch = this.epoch;
    this.prodCursor = this.cursor;
  }

  private order(startState: number): EpochOrder {
    const perm = Array.from(this.samples, (_, i) => i);
    const rng = Rng.fromState(startState);
    if (this.opts.shuffle) rng.shuffle(perm);
    return { perm, startState, endState: rng.state() };
  }

  private epochOrder(e: number): EpochOrder {
    let o = this.orders.get(e);
    if (!o) {
      if (e <= 0) throw new Error(`BatchLoader: no order for epoch ${e}`);
      const prev = this.epochOrder(e - 1);
      o = this.order(prev.endState);
      this.orders.set(e, o);
    }
    return o;
  }

  /** Drop orders of finished epochs (keeping the previous one: the next is derived from it). */
  private forget(): void {
    for (const e of this.orders.keys()) if (e < this.epoch - 1) this.orders.delete(e);
  }

  private advance(epoch: number, cursor: number): [number, number] {
    const n = this.samples.length;
    const b = this.opts.batchSize;
    const c = cursor + b;
    const done = this.opts.dropLast ? c + b > n : c >= n;
    return done ? [epoch + 1, 0] : [epoch, c];
  }

  private fill(): void {
    while (this.queue.length < Math.max(1, this.opts.prefetch)) {
      const epoch = this.prodEpoch;
      const cursor = this.prodCursor;
      const promise = this.load(epoch, cursor);
      promise.catch(() => {}); // surfaced by next(); avoid unhandled rejections of dropped loads
      this.queue.push({ epoch, cursor, promise });
      [this.prodEpoch, this.prodCursor] = this.advance(epoch, cursor);
    }
  }

  private async load(epoch: number, cursor: number): Promise<Batch> {
    const { batchSize, size, seed, augment } = this.opts;
    const perm = this.epochOrder(epoch).perm;
    const idx = perm.slice(cursor, Math.min(cursor + batchSize, perm.length));
    const picked = idx.map((i) => this.samples[i]);
    const settled = await Promise.allSettled(
      picked.map((s) => loadPair(s, size, { maskThreshold: this.opts.maskThreshold })),
    );
    const pairs: (LoadedPair | null)[] = settled.map((r) => {
      if (r.status === 'fulfilled') return r.value;
      if (!this.opts.skipBad || !(r.reason instanceof SampleError)) throw r.reason;
      if (!this.badIds.has(r.reason.id)) {
        this.badIds.add(r.reason.id);
        this.bad.push(r.reason.toBad());
      }
      return null;
    });
    const fallback = pairs.find((p) => p !== null);
    if (!fallback) {
      throw new Error(
        `BatchLoader: every sample of batch ${cursor / batchSize} in epoch ${epoch} is bad ` +
          `(${picked.map((s) => s.id).join(', ')})`,
      );
    }
    const count = pairs.length;
    const px = size * size;
    const images = new Float32Array(count * px * 3);
    const masks = new Float32Array(count * px);
    const ids: string[] = [];
    pairs.forEach((p0, j) => {
      const p = p0 ?? fallback;
      let { image, mask } = p;
      if (augment) {
        const rng = new Rng(hash32(p.id, seed, epoch, cursor + j));
        ({ image, mask } = augmentPair(image, mask, size, rng, augment));
      }
      images.set(image, j * px * 3);
      masks.set(mask, j * px);
      ids.push(p.id);
    });
    return { images, masks, ids, count, size, epoch, index: Math.floor(cursor / batchSize) };
  }
}
