/**
 * The report's numbers as one JSON document (`metrics.json`). The page is rendered from this very
 * object after it went through JSON, so every number on the page is the one in the file.
 * Undefined metrics (NaN: e.g. Dice of a split without any crack pixel) are null, shown "n/a".
 */
import type { SegMetrics } from '../train/metrics.js';
import type { Collected, ImageScore } from './collect.js';
import { worstFirst } from './collect.js';
import type { TrainingCurves } from './training.js';

export type Resolution = 'model' | 'native';

/** What the report says about one compared adapter. */
export interface AdapterInfo {
  name: string;
  path?: string;
  /** Training mode (head / lora / full) and model size, when known. */
  mode?: string;
  model?: string;
  /** Precision the adapter was evaluated at (f16 / f32), and the one its run trained at. */
  precision?: string;
  trainedPrecision?: string;
  /** Model input side: model-resolution metrics are at size x size. */
  size: number;
  /** Threshold chosen on the validation split (0.5 when none). */
  valThreshold: number;
}

export interface AdapterResult {
  info: AdapterInfo;
  /** The thresholds of `collected` (0.5, then the validation threshold when it differs). */
  thresholds: number[];
  collected: Collected;
  training?: TrainingCurves | null;
}

export interface ReportInput {
  title?: string;
  /** Where the images came from (dataset root and split, or folders). */
  dataset: string;
  adapters: AdapterResult[];
  /** Gallery cap (worst images first); the rest is counted in a note. */
  gallery: number;
  /** The command line that made the report, if any. */
  command?: string;
}

// ---- the JSON shape (numbers: finite, rounded to 6 decimals, or null) ----

type N = number | null;

export interface JsonMetrics {
  dice: N; iou: N; recall: N; precision: N; accuracy: N; meanDice: N; meanIoU: N;
  images: number; pixels: number; counts: { tp: number; fp: number; fn: number; tn: number };
  best: { threshold: N; dice: N; iou: N } | null;
}

export interface JsonScore {
  threshold: number; dice: N; iou: N; precision: N; recall: N; tp: number; fp: number; fn: number;
}

export interface ReportJson {
  format: 'sam2-lora-report';
  version: 1;
  title: string;
  created: string;
  command: string | null;
  dataset: { source: string; images: number };
  adapters: (AdapterInfo & { run: string | null })[];
  tables: {
    resolution: Resolution;
    label: string;
    rows: { adapter: number; threshold: number; valBest: boolean; metrics: JsonMetrics }[];
  }[];
  sweeps: {
    resolution: Resolution;
    adapter: number;
    points: { threshold: number; dice: N; iou: N; precision: N; recall: N }[];
  }[];
  training: { adapter: number; source: string; loss: [number, number][]; valDice: [number, number][] }[];
  gallery: {
    sortedBy: string;
    overlays: string;
    total: number;
    shown: number;
    entries: {
      rank: number;
      id: string;
      width: number | null;
      height: number | null;
      files: { photo: string; truth: string; overlays: string[] };
      /** Per adapter: its scores at each of its thresholds, model resolution (and native). */
      scores: { adapter: number; model: JsonScore[]; native: JsonScore[] | null }[];
    }[];
  };
}

/** JSON round trip: NaN/Infinity → null, non-integers to 6 decimals (as `metricsJson`). */
export function canonical<T>(x: unknown): T {
  return JSON.parse(
    JSON.stringify(x, (_, v) => {
      if (typeof v !== 'number') return v;
      if (!Number.isFinite(v)) return null;
      return Number.isInteger(v) ? v : Number(v.toFixed(6));
    }),
  ) as T;
}

function jsonMetrics(m: SegMetrics): JsonMetrics {
  const { dice, iou, recall, precision, accuracy, meanDice, meanIoU, images, pixels, counts } = m;
  return { dice, iou, recall, precision, accuracy, meanDice, meanIoU, images, pixels, counts,
    best: m.best ?? null } as JsonMetrics;
}

function jsonScore(s: ImageScore): JsonScore {
  const { threshold, dice, iou, precision, recall } = s;
  return { threshold, dice, iou, precision, recall, tp: s.counts.tp, fp: s.counts.fp, fn: s.counts.fn };
}

/** Index of the threshold a result's gallery overlay and ranking use: its validation threshold. */
export const overlayIndex = (a: AdapterResult) => a.thresholds.indexOf(a.info.valThreshold);

/** The gallery's images, worst first by the first adapter's per-image Dice, capped. */
export function galleryOrder(input: ReportInput): string[] {
  const first = input.adapters[0];
  return [...first.collected.images].sort(worstFirst(overlayIndex(first))).slice(0, input.gallery).map((r) => r.id);
}

/** File names of gallery entry `rank` (1-based), relative to the report folder. */
export function galleryFiles(rank: number, adapters: number) {
  const p = `img/${String(rank).padStart(4, '0')}`;
  return {
    photo: `${p}-photo.jpg`,
    truth: `${p}-truth.png`,
    overlays: Array.from({ length: adapters }, (_, i) => `${p}-pred${i + 1}.png`),
  };
}

/** The report's JSON document (photo sizes by id, as the writer found them). */
export function reportJson(input: ReportInput, sizes: Map<string, { width: number; height: number }>): ReportJson {
  const ads = input.adapters;
  if (ads.length === 0) throw new Error('report: no adapter results');
  const first = ads[0];
  const native = ads.every((a) => a.collected.native);
  const resolutions: Resolution[] = native ? ['model', 'native'] : ['model'];
  const sizesText = [...new Set(ads.map((a) => `${a.info.size}x${a.info.size}`))].join(' / ');
  const label = (r: Resolution) =>
    r === 'model'
      ? `model resolution: photos and masks resized to the model input (${sizesText}; masks nearest)`
      : "each photo's own resolution: probabilities upsampled bilinearly to the photo's size, masks as they are";
  const order = galleryOrder(input);
  const byId = ads.map((a) => new Map(a.collected.images.map((r) => [r.id, r])));
  const doc = {
    format: 'sam2-lora-report',
    version: 1,
    title: input.title ?? 'Crack segmentation report',
    created: new Date().toISOString(),
    command: input.command ?? null,
    dataset: { source: input.dataset, images: first.collected.images.length },
    adapters: ads.map((a) => ({ ...a.info, run: a.training?.source ?? null })),
    tables: resolutions.map((r) => ({
      resolution: r,
      label: label(r),
      rows: ads.flatMap((a, i) =>
        a.thresholds.map((t, k) => ({
          adapter: i,
          threshold: t,
          valBest: t === a.info.valThreshold && k > 0,
          metrics: jsonMetrics((r === 'model' ? a.collected.metrics : a.collected.native!)[k]),
        })),
      ),
    })),
    sweeps: resolutions.flatMap((r) =>
      ads.map((a, i) => ({
        resolution: r,
        adapter: i,
        points: ((r === 'model' ? a.collected.metrics : a.collected.native!)[0].sweep ?? []).map(
          ({ threshold, dice, iou, precision, recall }) => ({ threshold, dice, iou, precision, recall }),
        ),
      })),
    ),
    training: ads.flatMap((a, i) =>
      a.training ? [{ adapter: i, source: a.training.source, loss: a.training.loss, valDice: a.training.valDice }] : []),
    gallery: {
      sortedBy: `per-image Dice of ${first.info.name} at its validation threshold ${first.info.valThreshold}, ` +
        'model resolution, worst first',
      overlays: 'model resolution, each adapter at its validation threshold: ' +
        'green = true positive, red = false positive, blue = false negative (missed crack)',
      total: first.collected.images.length,
      shown: order.length,
      entries: order.map((id, e) => {
        const size = sizes.get(id);
        return {
          rank: e + 1,
          id,
          width: size?.width ?? null,
          height: size?.height ?? null,
          files: galleryFiles(e + 1, ads.length),
          scores: ads.map((a, i) => {
            const r = byId[i].get(id);
            return {
              adapter: i,
              model: r ? r.model.map(jsonScore) : [],
              native: r?.native ? r.native.map(jsonScore) : null,
            };
          }),
        };
      }),
    },
  };
  return canonical<ReportJson>(doc);
}
