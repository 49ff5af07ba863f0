/** `sam2-lora worker --queue URL`: serves queued predictions until SIGTERM / Ctrl-C. */
import { runWorker } from '../queue/worker.js';
import { checkReachable } from '../queue/redis.js';
import { int } from './common.js';

export interface WorkerCliOptions {
  queue: string;
  gpu?: string;
  backend?: string;
  concurrency?: string;
  lockMs?: string;
  stalledMs?: string;
}

export async function workerCommand(o: WorkerCliOptions): Promise<void> {
  await checkReachable(o.queue); // a wrong URL fails now, not in endless reconnects
  await runWorker({
    url: o.queue,
    gpu: { adapter: o.gpu, backend: o.backend as never },
    concurrency: o.concurrency !== undefined ? int('concurrency', o.concurrency) : 1,
    lockMs: o.lockMs !== undefined ? int('lock-ms', o.lockMs, 1000) : undefined,
    stalledMs: o.stalledMs !== undefined ? int('stalled-ms', o.stalledMs, 100) : undefined,
  });
}
