/**
 * A prediction worker: takes photo jobs from the BullMQ queue, predicts each with its adapter and
 * writes the outputs through the storage interface, each one atomically (temporary file, then
 * rename). Processing is at-least-once: a worker that dies mid-job loses its lock, BullMQ's
 * stalled-job check (run by every live worker) puts the job back, another worker redoes it and
 * rewrites the same bytes. A job that throws is retried up to its attempts, then kept in the
 * failed set with its error.
 */
import { hostname } from 'node:os';
import { type Job, UnrecoverableError, Worker } from 'bullmq';
import type { AdapterChoice } from '../gpu/dawn.js';
import { closeGpu } from '../gpu/runtime.js';
import { outputPaths, predictProb, writePhotoOutputs } from '../predict/predict.js';
import { ModelCache } from './models.js';
import {
  JOB_NAME, QUEUE_NAME, type PredictJobData, QueueError, connectionFromUrl, envInt, parseJobData, safeUrl,
} from './schema.js';
import { FileStorage, type PendingFile, type Storage } from './storage.js';

export interface WorkerOptions {
  url: string;
  gpu?: AdapterChoice;
  /** Jobs in flight per worker (file work overlaps; forward passes run one at a time). */
  concurrency?: number;
  /** A job's lock lifetime: a dead worker's job is recovered this long after its death at most
   *  (plus stalledMs). Env SAM2_LORA_QUEUE_LOCK_MS; default 30 s. */
  lockMs?: number;
  /** How often the stalled-job check runs. Env SAM2_LORA_QUEUE_STALLED_MS; default 30 s. */
  stalledMs?: number;
  /** The lock of a job that loads an adapter and compiles its kernels (the event loop is blocked
   *  meanwhile, so the lock cannot be renewed). Env SAM2_LORA_QUEUE_WARMUP_LOCK_MS; default 5 min. */
  warmupLockMs?: number;
  /** Times a job may be recovered from a dead worker before it fails. Default 2. */
  maxStalled?: number;
  storage?: Storage;
  log?: (line: string) => void;
  /** Resolves when the worker should stop (default: SIGTERM or SIGINT). */
  stop?: Promise<string>;
}

export interface JobResult {
  outputs: { mask: string; prob: string; overlay: string };
  tiles: number;
  crackFraction: number;
}

/**
 * Test hook, as SAM2_LORA_FAILPOINT is for checkpoints: `SAM2_LORA_QUEUE_FAILPOINT=hang:<n>`
 * makes the n-th job this process starts stop after writing its temporary outputs and before
 * renaming them (it says so on stderr and keeps its lock), so a test can kill -9 it mid-job.
 */
function failpointAfterWrite(count: number, jobId: string): Promise<void> | null {
  const spec = process.env.SAM2_LORA_QUEUE_FAILPOINT;
  if (!spec) return null;
  const m = /^hang:(\d+)$/.exec(spec);
  if (!m) throw new QueueError(`SAM2_LORA_QUEUE_FAILPOINT=${spec}: expected hang:<n>`);
  if (Number(m[1]) !== count) return null;
  process.stderr.write(`failpoint hang:${count} job ${jobId} (outputs written, not renamed)\n`);
  return new Promise(() => {});
}

function signalled(): Promise<string> {
  return new Promise((resolve) => {
    const on = (sig: string) => () => resolve(sig);
    process.once('SIGTERM', on('SIGTERM'));
    process.once('SIGINT', on('SIGINT'));
  });
}

/** Runs a worker until `stop`; the active jobs finish first. Returns the jobs it completed / failed. */
export async function runWorker(o: WorkerOptions): Promise<{ completed: number; failed: number }> {
  const log = o.log ?? ((l: string) => console.log(l));
  const storage = o.storage ?? new FileStorage();
  const models = new ModelCache(o.gpu ?? {}, log);
  const name = `${hostname()}:${process.pid}`;
  const warmupLockMs = o.warmupLockMs ?? envInt('SAM2_LORA_QUEUE_WARMUP_LOCK_MS', 300_000);
  let started = 0;
  let completed = 0;
  let failed = 0;

  const processJob = async (job: Job, token?: string): Promise<JobResult> => {
    let d: PredictJobData;
    try {
      if (job.name !== JOB_NAME) throw new QueueError(`unknown job kind ${job.name}`);
      d = parseJobData(job.data);
    } catch (e) {
      throw new UnrecoverableError((e as Error).message); // retrying cannot fix it
    }
    const n = ++started;
    const attempt = `attempt ${job.attemptsStarted}/${job.opts.attempts ?? 1}` +
      (job.stalledCounter ? `, recovered from a dead worker ${job.stalledCounter}x` : '');
    log(`job ${job.id} ${d.input}: started (${attempt})`);
    const t0 = Date.now();
    const photo = await storage.open(d.input);
    try {
      const warm = models.isWarm(d.adapterId, d.checkpoint);
      if (!warm && token) {
        // Loading and the first forward block the event loop (pipelines compile synchronously):
        // no lock renewal can run meanwhile (for this job or those waiting for the GPU), so
        // lengthen the lock first, or a live worker's job would be taken for a dead one's.
        await job.extendLock(token, warmupLockMs);
      }
      const { prob, config } = await models.exclusive(async () => {
        const m = await models.get(d.adapter, d.adapterId, d.checkpoint);
        const opts = { size: m.config.size, tile: d.tile, overlap: d.overlap };
        const p = await predictProb(m.model, photo.path, opts);
        if (!warm) models.markWarm(d.adapterId, d.checkpoint);
        return { config: m.config, prob: p };
      });
      const keys = outputPaths(d.out);
      // An earlier attempt killed mid-write left temporary files: this attempt owns the outputs.
      if (job.attemptsStarted > 1 || job.stalledCounter > 0) {
        await Promise.all(Object.values(keys).map((k) => storage.sweep(k)));
      }
      const pending: PendingFile[] = [];
      try {
        const tmp = { mask: '', prob: '', overlay: '' };
        for (const k of ['mask', 'prob', 'overlay'] as const) {
          const p = await storage.create(keys[k]);
          pending.push(p);
          tmp[k] = p.path;
        }
        const threshold = d.threshold ?? config.threshold;
        const crackFraction = await writePhotoOutputs(tmp, photo.path, prob, threshold);
        await failpointAfterWrite(n, String(job.id));
        for (const p of pending) await p.commit();
        log(`job ${job.id} ${d.input}: done in ${((Date.now() - t0) / 1000).toFixed(2)} s → ${d.out}.*.png`);
        return { outputs: keys, tiles: prob.tiles, crackFraction };
      } catch (e) {
        await Promise.all(pending.map((p) => p.abort().catch(() => {})));
        throw e;
      }
    } finally {
      await photo.release();
    }
  };

  const worker = new Worker(QUEUE_NAME, processJob, {
    connection: connectionFromUrl(o.url),
    name,
    concurrency: o.concurrency ?? 1,
    lockDuration: o.lockMs ?? envInt('SAM2_LORA_QUEUE_LOCK_MS', 30_000),
    stalledInterval: o.stalledMs ?? envInt('SAM2_LORA_QUEUE_STALLED_MS', 30_000),
    maxStalledCount: o.maxStalled ?? 2,
    autorun: false,
  });
  worker.on('completed', () => completed++);
  worker.on('failed', (job, err) => {
    if (!job) return;
    const final = job.attemptsMade >= (job.opts.attempts ?? 1) || err instanceof UnrecoverableError;
    if (final) failed++;
    log(`job ${job.id} ${(job.data as PredictJobData)?.input}: failed (attempt ${job.attemptsMade}/` +
      `${job.opts.attempts ?? 1}${final ? ', giving up: in the failed set' : ', will retry'}): ${err.message}`);
  });
  worker.on('stalled', (jobId) => log(`job ${jobId}: its worker stopped renewing the lock (died?); back in the queue`));
  let lastError = '';
  worker.on('error', (e) => {
    // Redis unreachable: BullMQ reconnects on its own; say it once per distinct message.
    if (e.message !== lastError) log(`queue ${safeUrl(o.url)}: ${e.message}`);
    lastError = e.message;
  });

  const stop = o.stop ?? signalled();
  log(`worker ${name} on ${safeUrl(o.url)} (queue ${QUEUE_NAME}, concurrency ${o.concurrency ?? 1}, ` +
    `storage ${storage.kind}); stop with Ctrl-C or SIGTERM`);
  const running = worker.run();
  const why = await Promise.race([stop, running.then(() => 'closed')]);
  log(`${why}: finishing the active job(s), then closing`);
  await worker.close();
  await running;
  await closeGpu();
  log(`worker ${name} closed: ${completed} completed, ${failed} failed`);
  return { completed, failed };
}
