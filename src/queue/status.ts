/** `queue status`: job counts by state, live workers and the failed photos with their errors. */
import { Queue } from 'bullmq';
import { checkReachable } from './redis.js';
import { QUEUE_NAME, type PredictJobData, connectionFromUrl } from './schema.js';

export interface QueueStatus {
  counts: { waiting: number; active: number; completed: number; failed: number; delayed: number };
  workers: number;
  /** The most recent failures first, at most `limit`. */
  failed: { id: string; input: string; out: string; error: string; attempts: number; at: string | null }[];
}

export async function queueStatus(url: string, limit = 50): Promise<QueueStatus> {
  await checkReachable(url);
  const queue = new Queue(QUEUE_NAME, { connection: connectionFromUrl(url) });
  try {
    const c = await queue.getJobCounts('waiting', 'prioritized', 'active', 'completed', 'failed', 'delayed');
    const jobs = limit > 0 ? await queue.getFailed(0, limit - 1) : [];
    return {
      counts: {
        waiting: (c.waiting ?? 0) + (c.prioritized ?? 0),
        active: c.active ?? 0,
        completed: c.completed ?? 0,
        failed: c.failed ?? 0,
        delayed: c.delayed ?? 0,
      },
      workers: await queue.getWorkersCount(),
      failed: jobs.map((j) => {
        const d = j.data as Partial<PredictJobData>;
        return {
          id: String(j.id),
          input: d?.input ?? '?',
          out: d?.out ?? '?',
          error: j.failedReason ?? '',
          attempts: j.attemptsMade,
          at: j.finishedOn ? new Date(j.finishedOn).toISOString() : null,
        };
      }),
    };
  } finally {
    await queue.close();
  }
}

export function formatStatus(s: QueueStatus): string {
  const c = s.counts;
  const lines = [
    `queue ${QUEUE_NAME}: ${c.waiting} waiting, ${c.active} active, ${c.completed} completed, ` +
      `${c.failed} failed, ${c.delayed} delayed; ${s.workers} worker(s) connected`,
  ];
  if (c.failed) {
    lines.push(`failed photos${s.failed.length < c.failed ? ` (latest ${s.failed.length} of ${c.failed})` : ''}:`);
    for (const f of s.failed) lines.push(`  ${f.input}: ${f.error} (${f.attempts} attempt(s)${f.at ? `, ${f.at}` : ''})`);
  }
  return lines.join('\n');
}
