/** `sam2-lora eval`: the reference-style metrics table for one or more adapters, side by side. */
import { join } from 'node:path';
import { type Sample, openDataset } from '../data/dataset.js';
import { checkSamples } from '../data/decode.js';
import { closeGpu } from '../gpu/runtime.js';
import { formatTable, metricsJson, type SegMetrics } from '../train/metrics.js';
import { evaluateAt } from '../train/evaluate.js';
import * as report from '../report/index.js';
import { type GpuCliOptions, UsageError, gpuChoice, int, precisionChoice } from './common.js';
import { EVAL_DEFAULTS, SPLITS } from './defaults.js';
import { humanLog, writeJsonTarget, wroteLine } from './output.js';
import { modelFromAdapter } from '../adapter/adapter.js';

export interface EvalCliOptions extends GpuCliOptions {
  adapter: string[];
  data?: string;
  /** The split evaluated, as `train` names it (default test); `split` is its alias. */
  testSplit?: string;
  split?: string;
  images?: string;
  masks?: string;
  checkpoint?: string;
  batch?: string;
  /** Metrics as JSON: a file, or `-` for stdout (the table then goes to stderr). */
  json?: string;
  skipBad?: boolean;
  /** HTML report folder (index.html, metrics.json, img/). */
  report?: string;
  /** Also score at each photo's own resolution. */
  nativeRes?: boolean;
  /** Gallery cap of the report (worst images first). */
  gallery?: string;
  /** f16 | f32 (absent: f16 where the adapter offers shader-f16). */
  precision?: string;
}

/** `--split` is an alias of `--test-split` (train's name for it): one split, given once. */
export function evalSplit(o: Pick<EvalCliOptions, 'testSplit' | 'split'>): string {
  if (o.split !== undefined && o.testSplit !== undefined && o.split !== o.testSplit) {
    throw new UsageError(`--split ${o.split} and --test-split ${o.testSplit} disagree: --split ` +
      'is an alias of --test-split; give one');
  }
  return o.testSplit ?? o.split ?? SPLITS.test;
}

export async function evalCommand(o: EvalCliOptions): Promise<void> {
  if (!o.adapter?.length) throw new UsageError('give at least one --adapter DIR');
  precisionChoice(o);
  o = { ...o, testSplit: evalSplit(o) };
  const log = humanLog(o.json);
  const all = o.images || o.masks
    ? await openDataset({ images: o.images, masks: o.masks })
    : await openDataset({ root: o.data, split: o.testSplit });
  // Header checks and the masks' encoding (0/255, 0/1, palette, 16-bit...), detected once.
  const checked = await checkSamples(all, { skipBad: o.skipBad });
  for (const b of checked.bad) console.warn(`skipping ${b.file}: ${b.reason}`);
  if (checked.bad.length) console.warn(`skipped ${checked.bad.length} bad samples`);
  if (checked.maskEncoding) log(`masks: ${checked.maskEncoding.description}`);
  if (checked.maskEncoding?.warning) console.warn(`WARNING: ${checked.maskEncoding.warning}`);
  const samples = checked.good;
  if (!samples.length) throw new UsageError('no usable samples to evaluate');
  if (o.report || o.nativeRes) {
    await reportEval(o, samples);
    await closeGpu();
    return;
  }
  const rows: { name: string; metrics: SegMetrics }[] = [];
  for (const path of o.adapter) {
    const { model, config } = await modelFromAdapter(path, {
      checkpoint: o.checkpoint,
      adapter: gpuChoice(o),
      precision: precisionChoice(o),
    });
    // At 0.5 (the reference recipe) and at the threshold chosen on the validation split.
    const thresholds = [...new Set([0.5, config.threshold])];
    const results = await evaluateAt(model, samples, thresholds, {
      size: config.size,
      batch: int('batch', o.batch ?? EVAL_DEFAULTS.batch),
      skipBad: o.skipBad,
      label: `eval ${config.segmenter.mode}`,
    });
    results.forEach((metrics, i) => {
      const at = i === 0 ? '@0.5' : `@${thresholds[i]} (val-best)`;
      rows.push({ name: `${config.segmenter.mode} ${at}: ${path}`, metrics });
    });
  }
  log(formatTable(rows));
  const written = o.json ? await writeJsonTarget(o.json, metricsJson(rows)) : null;
  log(wroteLine(written ? [written] : []));
  await closeGpu();
}

/**
 * `--report` / `--native-res`: one pass per adapter collects the global metrics (the same table),
 * each image's scores and the gallery's maps; the report folder gets the page and metrics.json.
 */
async function reportEval(o: EvalCliOptions, samples: Sample[]): Promise<void> {
  const log = humanLog(o.json);
  const gallery = o.gallery === undefined ? EVAL_DEFAULTS.gallery : int('gallery', o.gallery, 0);
  const results = await report.evaluateForReport(
    o.adapter.map((path) => ({
      name: path,
      path,
      open: () => modelFromAdapter(path, {
        checkpoint: o.checkpoint,
        adapter: gpuChoice(o),
        precision: precisionChoice(o),
      }),
    })),
    samples,
    { batch: int('batch', o.batch ?? EVAL_DEFAULTS.batch), nativeRes: o.nativeRes, gallery, skipBad: o.skipBad },
  );
  const rows = report.tableRows(results, 'model');
  log(`at model resolution (${[...new Set(results.map((r) => r.info.size))].join(', ')} px):`);
  log(formatTable(rows));
  const native = o.nativeRes ? report.tableRows(results, 'native') : [];
  if (native.length) {
    log("\nat each photo's own resolution (probabilities upsampled bilinearly):");
    log(formatTable(native));
  }
  const written: string[] = [];
  if (o.json) {
    const all = [...rows, ...native.map((r) => ({ ...r, name: `${r.name} (native)` }))];
    const file = await writeJsonTarget(o.json, metricsJson(all));
    if (file) written.push(file);
  }
  if (o.report) {
    const data = o.images ? `${o.images} + ${o.masks}` : `${o.data}, split ${o.testSplit}`;
    const r = await report.writeReport(o.report, {
      dataset: data,
      adapters: results,
      gallery,
      command: `sam2-lora ${process.argv.slice(2).join(' ')}`,
    });
    const shown = r.doc.gallery.shown;
    log(`report: ${r.index} (gallery: ${shown} of ${r.doc.gallery.total} images, worst first)`);
    written.push(r.index, r.json, `${shown * (2 + results.length)} images in ${join(r.dir, 'img')}`);
  }
  log(wroteLine(written));
}
