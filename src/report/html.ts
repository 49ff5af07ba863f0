/**
 * The report page: one static HTML file, no script, no external resource (styles inline, charts
 * inline SVG, gallery images as files in `img/` beside it). Every number is printed from the
 * report JSON and carries `data-k` (its path in metrics.json) and `data-f` (its format), so a
 * test can read the page back and compare it with the file.
 */
import { SERIES_COLORS, esc, lineChart } from './charts.js';
import type { JsonScore, ReportJson, Resolution } from './data.js';

export type NumberFormat = 'r4' | 'int' | 'thr';

/** The text of a number on the page: `r4` 4 decimals, `int` as is, `thr` a threshold; null → "n/a". */
export function formatValue(v: unknown, f: NumberFormat): string {
  if (v === null || v === undefined) return 'n/a';
  if (typeof v !== 'number') throw new Error(`report: ${String(v)} is not a number`);
  if (f === 'r4') return v.toFixed(4);
  if (f === 'int') return String(v);
  return String(Number(v.toFixed(3)));
}

/** The value at a dotted path ("tables.0.rows.1.metrics.dice"). */
export function valueAt(doc: unknown, path: string): unknown {
  return path.split('.').reduce<unknown>((o, k) => (o as Record<string, unknown>)?.[k], doc);
}

function num(doc: ReportJson, path: string, f: NumberFormat, tag = 'span'): string {
  return `<${tag} class="num" data-k="${path}" data-f="${f}">${formatValue(valueAt(doc, path), f)}</${tag}>`;
}

const METRIC_COLS: [string, string, string][] = [
  ['dice', 'Dice', 'global, all pixels pooled (= F1)'],
  ['iou', 'IoU', 'global'],
  ['recall', 'Recall', 'global'],
  ['precision', 'Precision', 'global'],
  ['accuracy', 'Accuracy', 'global pixel accuracy'],
  ['meanDice', 'Dice / image', 'mean of per-image Dice'],
  ['meanIoU', 'IoU / image', 'mean of per-image IoU'],
];

const swatch = (i: number) => `<span class="sw" style="background:${SERIES_COLORS[i % SERIES_COLORS.length]}"></span>`;

function tables(doc: ReportJson): string {
  return doc.tables.map((t, ti) => {
    const head = ['adapter', 'threshold', ...METRIC_COLS.map(([, h, title]) => `<abbr title="${title}">${h}</abbr>`),
      'best thr. (Dice)', 'images'].map((h) => `<th>${h}</th>`).join('');
    const rows = t.rows.map((r, ri) => {
      const p = `tables.${ti}.rows.${ri}`;
      const a = doc.adapters[r.adapter];
      return `<tr><td>${swatch(r.adapter)}${esc(a.name)}</td>` +
        `<td>${num(doc, `${p}.threshold`, 'thr')}${r.valBest ? ' <small>(validation)</small>' : ''}</td>` +
        METRIC_COLS.map(([k]) => num(doc, `${p}.metrics.${k}`, 'r4', 'td')).join('') +
        `<td>${r.metrics.best ? `${num(doc, `${p}.metrics.best.threshold`, 'thr')} (${num(doc, `${p}.metrics.best.dice`, 'r4')})` : '-'}</td>` +
        num(doc, `${p}.metrics.images`, 'int', 'td') + '</tr>';
    }).join('\n');
    const undefinedNote = t.rows.some((r) => r.metrics.dice === null)
      ? '<p class="note">n/a: no crack pixel in any mask of this split, so Dice, IoU and recall are undefined (never 1.0).</p>'
      : '';
    return `<h3>At ${t.resolution === 'model' ? 'model resolution' : "the photos' own resolution"}</h3>` +
      `<p class="res" data-resolution="${t.resolution}">${esc(t.label)}</p>` +
      `<div class="scroll"><table class="metrics" data-table="${ti}"><thead><tr>${head}</tr></thead><tbody>${rows}</tbody></table></div>${undefinedNote}`;
  }).join('\n');
}

function sweepCharts(doc: ReportJson, r: Resolution): string {
  const sw = doc.sweeps.filter((s) => s.resolution === r);
  if (!sw.some((s) => s.points.length)) return '';
  const at = (s: (typeof sw)[number], t: number) => s.points.find((p) => p.threshold === t);
  const markers = (s: (typeof sw)[number], xy: (p: NonNullable<ReturnType<typeof at>>) => [number | null, number | null]) => {
    const ts = [...new Set([0.5, doc.adapters[s.adapter].valThreshold])];
    return ts.flatMap((t) => {
      const p = at(s, t);
      if (!p) return [];
      const [x, y] = xy(p);
      return x === null || y === null ? [] : [{ x, y, label: `t=${t}` }];
    });
  };
  const name = (s: (typeof sw)[number]) => doc.adapters[s.adapter].name;
  const nz = (v: number | null) => (v === null ? NaN : v);
  const pr = lineChart(sw.map((s) => ({
    name: name(s),
    points: s.points.map((p) => [nz(p.recall), nz(p.precision)] as [number, number]),
    markers: markers(s, (p) => [p.recall, p.precision]),
  })), { title: 'Precision–recall (threshold sweep)', xLabel: 'recall', yLabel: 'precision', xDomain: [0, 1], yDomain: [0, 1] });
  const dice = lineChart(sw.map((s) => ({
    name: name(s),
    points: s.points.map((p) => [p.threshold, nz(p.dice)] as [number, number]),
    markers: markers(s, (p) => [p.threshold, p.dice]),
  })), { title: 'Global Dice vs threshold', xLabel: 'threshold', yLabel: 'Dice', xDomain: [0, 1], yDomain: [0, 1] });
  return `<div class="charts" data-charts="${r}">${pr}${dice}</div>`;
}

/** Exponential moving average of [x, y] points (weight 0.9 on the past), as the trainer's progress line. */
function ema(points: [number, number][]): [number, number][] {
  let m = NaN;
  return points.map(([x, y]) => [x, (m = Number.isNaN(m) ? y : 0.9 * m + 0.1 * y)]);
}

function training(doc: ReportJson): string {
  if (!doc.training.length) {
    return '<p class="note">No training log: pass adapters that sit in a run folder (<code>RUN/best</code>) to see the curves.</p>';
  }
  const color = (i: number) => SERIES_COLORS[i % SERIES_COLORS.length];
  // Per-step losses are noisy: each run's raw curve faint, its moving average (EMA 0.9) on top.
  const loss = lineChart(doc.training.flatMap((t) => [
    { name: `${doc.adapters[t.adapter].name} (per step)`, color: color(t.adapter), opacity: 0.3, points: t.loss },
    { name: `${doc.adapters[t.adapter].name} (EMA 0.9)`, color: color(t.adapter), points: ema(t.loss) },
  ]), { title: 'Training loss', xLabel: 'step', yLabel: 'loss' });
  const withVal = doc.training.filter((t) => t.valDice.length);
  const dice = withVal.length
    ? lineChart(withVal.map((t) => ({ name: doc.adapters[t.adapter].name, color: color(t.adapter), points: t.valDice })),
      { title: 'Validation Dice @0.5 (per epoch)', xLabel: 'step', yLabel: 'Dice', yDomain: [0, 1] })
    : '<p class="note">no validation in these runs</p>';
  const from = doc.training.map((t) => `${swatch(t.adapter)}<code>${esc(t.source)}</code>`).join(', ');
  return `<p class="res">from ${from}</p><div class="charts" data-charts="training">${loss}${dice}</div>`;
}

function scoreLine(doc: ReportJson, path: string, s: JsonScore, valBest: boolean): string {
  return `<tr><td>@${formatValue(s.threshold, 'thr')}${valBest ? ' (val)' : ''}</td>` +
    ['dice', 'iou', 'precision', 'recall'].map((k) => num(doc, `${path}.${k}`, 'r4', 'td')).join('') +
    ['tp', 'fp', 'fn'].map((k) => num(doc, `${path}.${k}`, 'int', 'td')).join('') + '</tr>';
}

function gallery(doc: ReportJson): string {
  const g = doc.gallery;
  const left = g.total - g.shown;
  const note = g.shown === 0 && g.total > 0
    ? `<p class="note" data-left-out="${left}">No gallery (<code>--gallery 0</code>): ${g.total} images left out.</p>`
    : left > 0
    ? `<p class="note" data-left-out="${left}">Showing the ${g.shown} worst of ${g.total} images; ` +
      `${left} better-scoring images are left out (raise <code>--gallery</code> to see more).</p>`
    : `<p class="note">All ${g.total} images, worst first.</p>`;
  const entries = g.entries.map((e, ei) => {
    const p = `gallery.entries.${ei}`;
    const aspect = e.width && e.height ? ` style="aspect-ratio:${e.width}/${e.height}"` : '';
    const img = (src: string, alt: string, cap: string) =>
      `<figure><img src="${esc(src)}" alt="${esc(alt)}" loading="eager"${aspect}><figcaption>${cap}</figcaption></figure>`;
    const pics = [
      img(e.files.photo, `photo ${e.id}`, 'photo'),
      img(e.files.truth, `ground truth ${e.id}`, 'ground truth'),
      ...e.files.overlays.map((f, i) => img(f, `prediction ${e.id} by ${doc.adapters[i].name}`,
        `${swatch(i)}${esc(doc.adapters[i].name)}`)),
    ].join('');
    const nums = e.scores.map((s, si) => {
      const head = `<tr><th colspan="8">${swatch(s.adapter)}${esc(doc.adapters[s.adapter].name)}</th></tr>`;
      const val = (k: number) => k > 0 && s.model[k].threshold === doc.adapters[s.adapter].valThreshold;
      const model = s.model.map((sc, k) => scoreLine(doc, `${p}.scores.${si}.model.${k}`, sc, val(k))).join('');
      const native = s.native
        ? `<tr><th colspan="8">own resolution</th></tr>` +
          s.native.map((sc, k) => scoreLine(doc, `${p}.scores.${si}.native.${k}`, sc, val(k))).join('')
        : '';
      return head + model + native;
    }).join('');
    const size = e.width && e.height ? ` · ${num(doc, `${p}.width`, 'int')}×${num(doc, `${p}.height`, 'int')} px` : '';
    return `<article class="entry" data-id="${esc(e.id)}" data-rank="${e.rank}">` +
      `<h4>#${num(doc, `${p}.rank`, 'int')} <code>${esc(e.id)}</code>${size}</h4>` +
      `<div class="body"><div class="pics">${pics}</div>` +
      `<table class="scores"><thead><tr><th></th><th>Dice</th><th>IoU</th><th>Precision</th><th>Recall</th>` +
      `<th>TP</th><th>FP</th><th>FN</th></tr></thead><tbody>${nums}</tbody></table></div></article>`;
  }).join('\n');
  return `<p class="res">Sorted by ${esc(g.sortedBy)}. Overlays at ${esc(g.overlays)}. ` +
    `Numbers: model resolution (TP/FP/FN in pixels)${doc.tables.length > 1 ? ", then at the photo's own resolution" : ''}.</p>` +
    `<p class="legend"><span class="sw" style="background:#00d000"></span>true positive ` +
    `<span class="sw" style="background:#ff2828"></span>false positive ` +
    `<span class="sw" style="background:#286eff"></span>false negative</p>${note}` +
    `<div class="gallery" data-total="${g.total}" data-shown="${g.shown}">${entries}</div>`;
}

const CSS = `
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0 auto;max-width:1200px;padding:16px 24px;color:#222}
h1{font-size:22px;margin:8px 0}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:15px;margin:16px 0 4px}h4{margin:0 0 6px;font-size:14px}
table{border-collapse:collapse}th,td{padding:3px 7px;border-bottom:1px solid #eee;text-align:right}td{white-space:nowrap}
th:first-child,td:first-child{text-align:left}table.metrics th{background:#f5f5f5}
.note,.res{color:#555;font-size:13px;margin:4px 0}.sw{display:inline-block;width:10px;height:10px;margin-right:5px;border-radius:2px}
.charts{display:flex;flex-wrap:wrap;gap:12px}.chart{max-width:100%;height:auto}
.entry{border:1px solid #ddd;border-radius:6px;padding:10px;margin:10px 0}
.body{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}.pics{display:flex;flex-wrap:wrap;gap:8px}.scroll{overflow-x:auto}figure{margin:0}figure img{width:256px;height:auto;image-rendering:pixelated;display:block;background:#000}
figcaption{font-size:12px;color:#555}table.scores{font-size:12px}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 12px;margin:0}dt{color:#555}dd{margin:0}
`;

/** The whole page. */
export function renderHtml(doc: ReportJson): string {
  const adapters = doc.adapters.map((a, i) =>
    `<li>${swatch(i)}<b>${esc(a.name)}</b>${a.path && a.path !== a.name ? ` <code>${esc(a.path)}</code>` : ''}` +
    `${a.mode ? `, ${esc(a.mode)}` : ''}${a.model ? `, ${esc(a.model)}` : ''}, input ${a.size} px, ` +
    `${a.trainedPrecision ? `trained in ${esc(a.trainedPrecision)}, ` : ''}` +
    `${a.precision ? `evaluated in ${esc(a.precision)}, ` : ''}` +
    `validation threshold ${num(doc, `adapters.${i}.valThreshold`, 'thr')}</li>`).join('');
  const hasNative = doc.tables.some((t) => t.resolution === 'native');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>${esc(doc.title)}</title><style>${CSS}</style></head>
<body>
<h1>${esc(doc.title)}</h1>
<dl><dt>data</dt><dd><code>${esc(doc.dataset.source)}</code>, ${num(doc, 'dataset.images', 'int')} images</dd>
<dt>written</dt><dd>${esc(doc.created)}</dd>${doc.command ? `<dt>command</dt><dd><code>${esc(doc.command)}</code></dd>` : ''}
<dt>numbers</dt><dd><a href="metrics.json">metrics.json</a> (the same values)</dd></dl>
<ul>${adapters}</ul>
<h2 id="metrics">Metrics</h2>
<p class="note">Global metrics pool every pixel of the split; "per image" columns average each image's own score
(an image without crack scores 1 when nothing is predicted, else 0). A pixel is crack when its probability &gt; the threshold.</p>
${tables(doc)}
<h2 id="sweep">Threshold sweep</h2>
${hasNative ? '<h3>At model resolution</h3>' : ''}${sweepCharts(doc, 'model')}${hasNative ? `<h3>At the photos' own resolution</h3>${sweepCharts(doc, 'native')}` : ''}
<h2 id="training">Training</h2>
${training(doc)}
<h2 id="gallery">Gallery, worst first</h2>
${gallery(doc)}
</body></html>
`;
}
