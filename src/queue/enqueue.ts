/**
 * `predict --queue`: one BullMQ job per photo, with the same output names a local predict gives
 * (outputNames over the whole input list), then optionally waiting for them.
 */
import { resolve } from 'node:path';
import { Queue } from 'bullmq';
import { checkOutputFolder, listInputs, outputNames, outputPaths } from '../predict/predict.js';
import { adapterId } from './models.js';
import { checkReachable } from './redis.js';
import {
  DEFAULT_ATTEMPTS, JOB_NAME, KEEP_COMPLETED_S, QUEUE_NAME, type PredictJobData, QueueError,
  connectionFromUrl, envInt, jobId, jobOptions,
} from './schema.js';
import { FileStorage, type Storage } from './storage.js';
import { adapterFile, loadAdapter } from '../adapter/adapter.js';

export interface EnqueueOptions {
  url: string;
  /** A photo or a folder of photos, on storage every worker reads (e.g. a shared mount). */
  input: string;
  adapter: string;
  out: string;
  checkpoint?: string;
  threshold?: number;
  tile?: number;
  overlap?: number;
  /** Attempts per photo (default 3; env SAM2_LORA_QUEUE_ATTEMPTS). */
  attempts?: number;
  storage?: Storage;
}

export interface QueuedPhoto {
  id: string;
  input: string;
}

export interface EnqueueResult {
  jobs: QueuedPhoto[];
  added: number;
  /** Failed earlier: put back for new attempts. */
  retried: number;
  /** Waiting or running already. */
  queued: number;
  /** Completed earlier, outputs present: nothing to do. */
  done: number;
  /** Completed earlier but an output is gone: predicted again. */
  redone: number;
}

const CHUNK = 500;

async function inChunks<T, R>(items: T[], fn: (t: T) => Promise<R>): Promise<R[]> {
  const out: R[] = [];
  for (let i = 0; i < items.length; i += CHUNK) out.push(...await Promise.all(items.slice(i, i + CHUNK).map(fn)));
  return out;
}

export async function enqueuePredictions(o: EnqueueOptions): Promise<EnqueueResult> {
  const storage = o.storage ?? new FileStorage();
  const inputs = listInputs(o.input).map((f) => resolve(f));
  const { config } = await loadAdapter(o.adapter);
  const base = o.checkpoint ?? config.baseCheckpoint;
  checkOutputFolder(o.out, o.input, inputs, [
    { what: 'adapter', path: adapterFile(o.adapter) },
    ...(base ? [{ what: 'checkpoint', path: base }] : []),
  ]);
  const out = resolve(o.out);
  const id = await adapterId(o.adapter);
  const names = outputNames(inputs);
  const jobs = inputs.map((input, i) => {
    const data: PredictJobData = {
      v: 1,
      input,
      out: resolve(out, names[i]),
      adapter: resolve(o.adapter),
      adapterId: id,
      ...(o.checkpoint ? { checkpoint: resolve(o.checkpoint) } : {}),
      ...(o.threshold !== undefined ? { threshold: o.threshold } : {}),
      ...(o.tile !== undefined ? { tile: o.tile } : {}),
      ...(o.overlap !== undefined ? { overlap: o.overlap } : {}),
    };
    return { id: jobId(id, input, out), data };
  });

  await checkReachable(o.url);
  const queue = new Queue(QUEUE_NAME, { connection: connectionFromUrl(o.url) });
  try {
    const attempts = o.attempts ?? envInt('SAM2_LORA_QUEUE_ATTEMPTS', DEFAULT_ATTEMPTS);
    const r: EnqueueResult = { jobs: jobs.map((j) => ({ id: j.id, input: j.data.input })), added: 0, retried: 0, queued: 0, done: 0, redone: 0 };
    const states = await inChunks(jobs, (j) => queue.getJobState(j.id));
    const toAdd: typeof jobs = [];
    const conflicts: string[] = [];
    await inChunks(jobs.map((j, i) => ({ j, state: states[i] })), async ({ j, state }) => {
      if (state === 'unknown') {
        toAdd.push(j);
        return;
      }
      const job = await queue.getJob(j.id);
      if (!job) {
        toAdd.push(j); // removed meanwhile
        return;
      }
      if (jobOptions(job.data as PredictJobData) !== jobOptions(j.data)) {
        conflicts.push(j.data.input);
        return;
      }
      if (state === 'failed') {
        await job.retry('failed');
        r.retried++;
      } else if (state === 'completed') {
        const present = await Promise.all(Object.values(outputPaths(j.data.out)).map((k) => storage.exists(k)));
        if (present.every(Boolean)) {
          r.done++;
        } else {
          await job.remove();
          toAdd.push(j);
          r.redone++;
        }
      } else {
        r.queued++;
      }
    });
    if (conflicts.length) {
      throw new QueueError(`${conflicts.length} photo(s) were already queued into ${out} with other ` +
        `options (--threshold, --tile, --overlap or --checkpoint), e.g. ${conflicts.slice(0, 3).join(', ')}: ` +
        'their outputs would depend on which job ran last; use another --out');
    }
    for (let i = 0; i < toAdd.length; i += CHUNK) {
      await queue.addBulk(toAdd.slice(i, i + CHUNK).map((j) => ({
        name: JOB_NAME,
        data: j.data,
        opts: { jobId: j.id, attempts, removeOnComplete: { age: KEEP_COMPLETED_S }, removeOnFail: false },
      })));
    }
    r.added = toAdd.length - r.redone;
    return r;
  } finally {
    await queue.close();
  }
}

export interface FailedPhoto {
  id: string;
  input: string;
  error: string;
  attempts: number;
}

export interface WaitProgress {
  total: number;
  completed: number;
  failed: number;
  workers: number;
}

/**
 * Waits until every job is completed or failed (after its attempts), polling their states (no
 * event can be missed, e.g. across a Redis reconnect); reports progress after each poll.
 */
export async function waitForJobs(
  url: string,
  jobs: QueuedPhoto[],
  onProgress: (p: WaitProgress) => void = () => {},
): Promise<{ completed: number; failed: FailedPhoto[] }> {
  const queue = new Queue(QUEUE_NAME, { connection: connectionFromUrl(url) });
  try {
    const pending = new Map(jobs.map((j) => [j.id, j.input]));
    const failed: FailedPhoto[] = [];
    let completed = 0;
    for (;;) {
      const ids = [...pending.keys()];
      const states = await inChunks(ids, (id) => queue.getJobState(id));
      await inChunks(ids.map((id, i) => ({ id, state: states[i] })), async ({ id, state }) => {
        if (state === 'completed') {
          completed++;
          pending.delete(id);
        } else if (state === 'failed' || state === 'unknown') {
          const job = state === 'failed' ? await queue.getJob(id) : undefined;
          failed.push({
            id,
            input: pending.get(id)!,
            error: job?.failedReason ?? 'the job was removed from the queue before it finished',
            attempts: job?.attemptsMade ?? 0,
          });
          pending.delete(id);
        }
      });
      onProgress({ total: jobs.length, completed, failed: failed.length, workers: await queue.getWorkersCount() });
      if (pending.size === 0) return { completed, failed };
      await new Promise((r) => setTimeout(r, Math.min(10_000, Math.max(500, pending.size / 2))));
    }
  } finally {
    await queue.close();
  }
}
