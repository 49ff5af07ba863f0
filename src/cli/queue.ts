/**
 * The queue side of the CLI: `predict --queue URL [--wait]` (enqueue, optionally wait with a
 * progress bar) and `queue status URL` (counts by state, the failed photos with their errors).
 */
import { type WaitProgress, enqueuePredictions, waitForJobs } from '../queue/enqueue.js';
import { formatStatus, queueStatus } from '../queue/status.js';
import { safeUrl } from '../queue/schema.js';
import { UsageError, int, num } from './common.js';
import type { PredictCliOptions } from './predict.js';
import { jsonToStdout, writeJsonTarget, wroteLine } from './output.js';

function progressLine(p: WaitProgress): string {
  const done = p.completed + p.failed;
  const width = 30;
  const fill = p.total ? Math.round((width * done) / p.total) : width;
  return `[${'#'.repeat(fill)}${'.'.repeat(width - fill)}] ${done}/${p.total} photo(s)` +
    `${p.failed ? `, ${p.failed} failed` : ''} · ${p.workers} worker(s) connected`;
}

export async function queuedPredictCommand(input: string, o: PredictCliOptions): Promise<void> {
  if (o.skipBad) {
    throw new UsageError('--skip-bad does not apply with --queue: an unreadable photo lands in the ' +
      'failed set with its error (see `sam2-lora queue status`) and the others go on');
  }
  const url = o.queue!;
  const r = await enqueuePredictions({
    url,
    input,
    adapter: o.adapter,
    out: o.out,
    checkpoint: o.checkpoint,
    threshold: o.threshold !== undefined ? num('threshold', o.threshold) : undefined,
    tile: o.tile ? int('tile', o.tile) : undefined,
    overlap: o.overlap ? int('overlap', o.overlap, 0) : undefined,
    attempts: o.attempts !== undefined ? int('attempts', o.attempts) : undefined,
  });
  const parts = [`${r.added} new`];
  if (r.queued) parts.push(`${r.queued} already queued`);
  if (r.done) parts.push(`${r.done} already done`);
  if (r.redone) parts.push(`${r.redone} done before but an output is missing: queued again`);
  if (r.retried) parts.push(`${r.retried} failed before: retried`);
  console.log(`queued ${r.jobs.length} photo(s) on ${safeUrl(url)} → ${o.out} (${parts.join(', ')})`);
  if (!o.wait) {
    console.log(`run \`sam2-lora worker --queue ${safeUrl(url)}\` on each GPU machine; ` +
      `\`sam2-lora queue status ${safeUrl(url)}\` shows progress`);
    return;
  }
  const tty = process.stderr.isTTY;
  let lastPrint = 0;
  let lastDone = -1;
  const w = await waitForJobs(url, r.jobs, (p) => {
    const done = p.completed + p.failed;
    if (tty) process.stderr.write(`\r${progressLine(p)}`);
    else if (done !== lastDone && (Date.now() - lastPrint > 10_000 || done === p.total)) {
      console.error(progressLine(p));
      lastPrint = Date.now();
    }
    lastDone = done;
  });
  if (tty) process.stderr.write('\n');
  console.log(`${w.completed} of ${r.jobs.length} photo(s) predicted → ${o.out}`);
  if (w.failed.length) {
    console.error(`${w.failed.length} photo(s) failed:`);
    for (const f of w.failed) console.error(`  ${f.input}: ${f.error} (${f.attempts} attempt(s))`);
    process.exitCode = 1;
  }
}

/** `json`: also write the status as JSON to this file (`-`: stdout, alone), as `--json` everywhere. */
export async function queueStatusCommand(url: string, o: { limit?: string; json?: string }): Promise<void> {
  const s = await queueStatus(url, o.limit !== undefined ? int('limit', o.limit, 0) : 50);
  const written = o.json ? await writeJsonTarget(o.json, JSON.stringify(s, null, 2)) : null;
  if (jsonToStdout(o.json)) return;
  console.log(formatStatus(s));
  if (written) console.log(wroteLine([written]));
}
