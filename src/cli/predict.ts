/** `sam2-lora predict IMG|DIR --adapter A --out DIR`. */
import { closeGpu } from '../gpu/runtime.js';
import { checkOutputFolder, listInputs, outputPaths, predictFiles } from '../predict/predict.js';
import type { BadSample } from '../data/decode.js';
import { type GpuCliOptions, UsageError, gpuChoice, int, num, precisionChoice } from './common.js';
import { wroteLine } from './output.js';
import { adapterFile, modelFromAdapter } from '../adapter/adapter.js';

export interface PredictCliOptions extends GpuCliOptions {
  adapter: string;
  out: string;
  checkpoint?: string;
  threshold?: string;
  tile?: string;
  overlap?: string;
  skipBad?: boolean;
  /** Redis URL: enqueue one job per photo for `sam2-lora worker`s instead of predicting here. */
  queue?: string;
  /** With --queue: wait for the jobs, with progress; non-zero exit if any failed. */
  wait?: boolean;
  /** With --queue: attempts per photo. */
  attempts?: string;
  /** f16 | f32 (absent: f16 where the adapter offers shader-f16). */
  precision?: string;
}

export async function predictCommand(input: string, o: PredictCliOptions): Promise<void> {
  if (o.queue) {
    // Workers pick their own precision (the default of their adapter).
    if (o.precision) throw new UsageError('--precision does not apply with --queue: each worker runs at its adapter\'s default');
    return (await import('./queue.js')).queuedPredictCommand(input, o);
  }
  const inputs = listInputs(input);
  // Before any work: outputs must never overwrite or mix with what we read.
  checkOutputFolder(o.out, input, inputs, [
    { what: 'adapter', path: adapterFile(o.adapter) },
    ...(o.checkpoint ? [{ what: 'checkpoint', path: o.checkpoint }] : []),
  ]);
  const { model, config } = await modelFromAdapter(o.adapter, {
    checkpoint: o.checkpoint,
    adapter: gpuChoice(o),
    precision: precisionChoice(o),
  });
  if (!o.checkpoint && config.baseCheckpoint) {
    checkOutputFolder(o.out, input, inputs, [{ what: 'checkpoint', path: config.baseCheckpoint }]);
  }
  const skipped: BadSample[] = [];
  const files = await predictFiles(model, inputs, {
    size: config.size,
    threshold: o.threshold !== undefined ? num('threshold', o.threshold) : config.threshold,
    tile: o.tile ? int('tile', o.tile) : undefined,
    overlap: o.overlap ? int('overlap', o.overlap, 0) : undefined,
    out: o.out,
    skipBad: !!o.skipBad,
    onSkip: (b) => {
      skipped.push(b);
      console.warn(`skipping ${b.file}: ${b.reason}`);
    },
  });
  for (const f of files) {
    console.log(`${f.input}: ${f.tiles} tile(s), ${(f.crackFraction * 100).toFixed(2)}% crack`);
  }
  // Each photo's three files (mask, probability, overlay), named from its mask's path.
  const written = files.flatMap((f) => Object.values(outputPaths(f.mask.slice(0, -'.mask.png'.length))));
  console.log(`predicted ${files.length} of ${inputs.length} photo(s)` +
    (skipped.length ? `, skipped ${skipped.length} unreadable` : '') + `; ${wroteLine(written)}`);
  await closeGpu();
}
