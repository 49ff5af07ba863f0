/** `sam2-lora eval`: the reference-style metrics table for one or more adapters, side by side. */
import { writeFile } from 'node:fs/promises';
import { openDataset } from '../data/dataset.js';
import { closeGpu } from '../gpu/runtime.js';
import { formatTable, metricsJson, type SegMetrics } from '../train/metrics.js';
import { evaluateAt } from '../train/trainer.js';
import { UsageError, int, modelFromAdapter } from './common.js';

export interface EvalCliOptions {
  adapter: string[];
  data?: string;
  split: string;
  images?: string;
  masks?: string;
  checkpoint?: string;
  batch: string;
  json?: string;
  skipBad?: boolean;
  gpuAdapter?: string;
  backend?: string;
}

export async function evalCommand(o: EvalCliOptions): Promise<void> {
  if (!o.adapter?.length) throw new UsageError('give at least one --adapter DIR');
  const samples = o.images || o.masks
    ? await openDataset({ images: o.images, masks: o.masks })
    : await openDataset({ root: o.data, split: o.split });
  const rows: { name: string; metrics: SegMetrics }[] = [];
  for (const path of o.adapter) {
    const { model, config } = await modelFromAdapter(path, {
      checkpoint: o.checkpoint,
      adapter: { adapter: o.gpuAdapter, backend: o.backend as never },
    });
    // At 0.5 (the reference recipe) and at the threshold chosen on the validation split.
    const thresholds = [...new Set([0.5, config.threshold])];
    const results = await evaluateAt(model, samples, thresholds, {
      size: config.size,
      batch: int('batch', o.batch),
      skipBad: o.skipBad,
      label: `eval ${config.segmenter.mode}`,
    });
    results.forEach((metrics, i) => {
      const at = i === 0 ? '@0.5' : `@${thresholds[i]} (val-best)`;
      rows.push({ name: `${config.segmenter.mode} ${at}: ${path}`, metrics });
    });
  }
  console.log(formatTable(rows));
  if (o.json) {
    await writeFile(o.json, metricsJson(rows));
    console.log(`metrics written to ${o.json}`);
  }
  await closeGpu();
}
