/**
 * The HTML report of one or more adapters on a labelled split: evaluation (one pass per adapter)
 * and the report folder. `eval --report DIR` and the end of training call these.
 */
import { join, relative } from 'node:path';
import type { Sample } from '../data/dataset.js';
import type { Segmenter } from '../model/segmenter.js';
import type { SegMetrics } from '../train/metrics.js';
import { collect, segmenterLogits, worstFirst } from './collect.js';
import type { AdapterResult } from './data.js';
import { readTrainingCurves, runDirOf } from './training.js';
import { type WrittenReport, writeReport } from './write.js';
import { type AdapterConfig } from '../adapter/adapter.js';

export { writeReport, type WrittenReport } from './write.js';
export type { AdapterResult, ReportInput, ReportJson } from './data.js';

/** Default gallery cap: the N worst images. */
export const DEFAULT_GALLERY = 200;

/** An adapter to evaluate: loaded when its turn comes. */
export interface ReportSource {
  name: string;
  /** The adapter folder (its run folder's log gives the training curves). */
  path?: string;
  open: () => Promise<{ model: Segmenter; config: AdapterConfig }>;
}

export interface ReportEvalOptions {
  batch: number;
  nativeRes?: boolean;
  /** Gallery cap (default DEFAULT_GALLERY). */
  gallery?: number;
  skipBad?: boolean;
}

/** The thresholds an adapter is scored at: 0.5 (the reference recipe), then its validation one. */
export const thresholdsOf = (config: AdapterConfig) => [...new Set([0.5, config.threshold])];

/**
 * Evaluates each source in turn over `samples` (one pass each), keeping the maps of the gallery's
 * images: the first adapter's worst, then the same images for the others.
 */
export async function evaluateForReport(
  sources: ReportSource[],
  samples: Sample[],
  opts: ReportEvalOptions,
): Promise<AdapterResult[]> {
  const cap = opts.gallery ?? DEFAULT_GALLERY;
  const out: AdapterResult[] = [];
  let galleryIds: Set<string> | undefined;
  for (const src of sources) {
    const { model, config } = await src.open();
    const thresholds = thresholdsOf(config);
    const at = thresholds.indexOf(config.threshold);
    const collected = await collect(samples, segmenterLogits(model, config.size, opts.batch), {
      size: config.size,
      batch: opts.batch,
      thresholds,
      nativeRes: opts.nativeRes,
      keep: galleryIds ? { at, ids: galleryIds } : { at, worst: cap },
      skipBad: opts.skipBad,
      label: `eval ${config.segmenter.mode}`,
    });
    galleryIds ??= new Set([...collected.images].sort(worstFirst(at)).slice(0, cap).map((r) => r.id));
    const run = src.path ? runDirOf(src.path) : null;
    const curves = run ? readTrainingCurves(run) : null;
    out.push({
      info: {
        name: src.name,
        path: src.path,
        mode: config.segmenter.mode,
        model: config.segmenter.model,
        precision: model.precision,
        ...(curves?.precision ? { trainedPrecision: curves.precision } : {}),
        size: config.size,
        valThreshold: config.threshold,
      },
      thresholds,
      collected,
      training: curves,
    });
  }
  return out;
}

/** Rows for `formatTable` / `metricsJson`, as `eval` names them. */
export function tableRows(results: AdapterResult[], resolution: 'model' | 'native' = 'model') {
  const rows: { name: string; metrics: SegMetrics }[] = [];
  for (const r of results) {
    const ms = resolution === 'model' ? r.collected.metrics : r.collected.native;
    ms?.forEach((metrics, k) => {
      const at = k === 0 ? '@0.5' : `@${r.thresholds[k]} (val-best)`;
      rows.push({ name: `${r.info.mode} ${at}: ${r.info.name}`, metrics });
    });
  }
  return rows;
}

export interface RunReportOptions {
  /** The trained model and its adapter config (e.g. from `modelFromAdapter(<run>/best)`). */
  model: Segmenter;
  config: AdapterConfig;
  /** The labelled split to report on (the test split). */
  samples: Sample[];
  /** How the page names the data (e.g. "data/deepcrack, split test"). */
  dataset: string;
  /** The adapter folder (default `<runDir>/best`). */
  adapterPath?: string;
  /** Report folder (default `<runDir>/report`). */
  out?: string;
  batch?: number;
  nativeRes?: boolean;
  gallery?: number;
  skipBad?: boolean;
  command?: string;
}

/**
 * The report of a finished run: its adapter evaluated on `samples`, with the run's training
 * curves, written to `<runDir>/report/index.html` (+ metrics.json, img/).
 */
export async function writeRunReport(
  runDir: string,
  o: RunReportOptions,
): Promise<WrittenReport & { results: AdapterResult[] }> {
  const path = o.adapterPath ?? join(runDir, 'best');
  const rel = relative(process.cwd(), path);
  const name = rel && !rel.startsWith('..') ? rel : path;
  const results = await evaluateForReport(
    [{ name, path, open: async () => ({ model: o.model, config: o.config }) }],
    o.samples,
    { batch: o.batch ?? 2, nativeRes: o.nativeRes, gallery: o.gallery, skipBad: o.skipBad },
  );
  // The run's own log, even when the adapter folder sits elsewhere.
  results[0].training ??= readTrainingCurves(runDir);
  const written = await writeReport(o.out ?? join(runDir, 'report'), {
    title: `Crack segmentation report: ${runDir}`,
    dataset: o.dataset,
    adapters: results,
    gallery: o.gallery ?? DEFAULT_GALLERY,
    command: o.command,
  });
  return { ...written, results };
}
