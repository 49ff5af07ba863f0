/**
 * The prediction queue's contract between `predict --queue` (producer) and `worker` (consumer):
 * the queue name, the Redis URL, a job's data and its id. A job is one photo.
 */
import { createHash } from 'node:crypto';

/** BullMQ queue name (BullMQ forbids ':' in it). */
export const QUEUE_NAME = 'sam2-lora-predict';

/** Job name inside the queue: the kind of work, checked by the worker. */
export const JOB_NAME = 'predict-photo';

/** Attempts per photo before it lands in the failed set (env SAM2_LORA_QUEUE_ATTEMPTS). */
export const DEFAULT_ATTEMPTS = 3;

/** Completed jobs are kept a week, so re-enqueueing a finished photo is a no-op meanwhile. */
export const KEEP_COMPLETED_S = 7 * 24 * 3600;

export class QueueError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'QueueError';
  }
}

/** What a worker needs to predict one photo; every path is a storage key all workers can read. */
export interface PredictJobData {
  v: 1;
  /** The photo. */
  input: string;
  /** Output base (folder + name): outputs are `<out>.mask.png`, `.prob.png`, `.overlay.png`. */
  out: string;
  /** The adapter (a checkpoint folder or its adapter.safetensors). */
  adapter: string;
  /** sha256 of the adapter's tensors file (16 hex): the worker's cache key, checked on load. */
  adapterId: string;
  /** Base SAM2 checkpoint overriding the one the adapter records. */
  checkpoint?: string;
  threshold?: number;
  tile?: number;
  overlap?: number;
}

/** The options that change a photo's outputs (two jobs for one output must agree on them). */
export function jobOptions(d: PredictJobData): string {
  return JSON.stringify([d.checkpoint ?? null, d.threshold ?? null, d.tile ?? null, d.overlap ?? null]);
}

/**
 * A job's id: adapter id + photo + output folder, so enqueueing the same photo again finds the
 * existing job instead of adding a second one (BullMQ ignores an add with a known id).
 */
export function jobId(adapterId: string, input: string, outDir: string): string {
  const h = createHash('sha256').update(`${input}\0${outDir}`).digest('hex').slice(0, 24);
  return `p-${adapterId}-${h}`;
}

/** Checks a job's data (a queue may hold jobs of another version or another producer). */
export function parseJobData(d: unknown): PredictJobData {
  const o = d as Record<string, unknown>;
  const str = (k: string) => typeof o?.[k] === 'string' && (o[k] as string).length > 0;
  const optNum = (k: string) => o?.[k] === undefined || (typeof o[k] === 'number' && Number.isFinite(o[k]));
  if (!o || o.v !== 1 || !str('input') || !str('out') || !str('adapter') || !str('adapterId') ||
    !(o.checkpoint === undefined || str('checkpoint')) ||
    !optNum('threshold') || !optNum('tile') || !optNum('overlap')) {
    throw new QueueError(`not a sam2-lora predict job (version 1): ${JSON.stringify(d).slice(0, 200)}`);
  }
  return o as unknown as PredictJobData;
}

/** BullMQ connection options from `redis://[user:pass@]host:port[/db]` (or rediss://). */
export function connectionFromUrl(url: string): { url: string } {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new QueueError(`--queue ${url}: not a URL; expected redis://host:port/db`);
  }
  if (u.protocol !== 'redis:' && u.protocol !== 'rediss:') {
    throw new QueueError(`--queue ${url}: expected a redis:// or rediss:// URL, got ${u.protocol}`);
  }
  const db = u.pathname.replace(/^\//, '');
  if (db !== '' && !/^\d+$/.test(db)) {
    throw new QueueError(`--queue ${url}: the path must be a database number (e.g. /0), got /${db}`);
  }
  return { url };
}

/** A URL without its password, for messages. */
export function safeUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return url;
  }
}

/** A positive integer from the environment, or `fallback`. */
export function envInt(name: string, fallback: number): number {
  const v = process.env[name];
  if (v === undefined || v === '') return fallback;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new QueueError(`${name}=${v}: expected an integer >= 1`);
  return n;
}
