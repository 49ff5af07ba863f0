/** Inline SVG line charts for the report (fixed [0, 1] axes for rates; markers for thresholds). */
import { niceTicks } from '../train/plot.js';

/** One colour per adapter, the same in every chart and table of a report. */
export const SERIES_COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2'];

export function esc(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

export interface ChartSeries {
  name: string;
  /** [x, y]; non-finite points are left out (a gap, not a zero). */
  points: [number, number][];
  /** Line colour (default: by the series' index). */
  color?: string;
  /** Line opacity (e.g. raw values under their moving average); default 1. */
  opacity?: number;
  /** Labelled points drawn as dots (e.g. the decision thresholds). */
  markers?: { x: number; y: number; label: string }[];
}

export interface ChartOptions {
  title: string;
  xLabel: string;
  yLabel: string;
  xDomain?: [number, number];
  yDomain?: [number, number];
  width?: number;
  height?: number;
}

const num = (v: number) => (Number.isInteger(v) ? String(v) : String(Number(v.toPrecision(3))));

/** An SVG line chart; each series keeps its points' order (a PR curve runs along thresholds). */
export function lineChart(series: ChartSeries[], o: ChartOptions): string {
  const W = o.width ?? 440;
  // The legend sits under the plot, one line per series, so it never hides a curve.
  const m = { l: 52, r: 14, t: 30, b: 44 + 15 * series.length };
  const H = (o.height ?? 330) + 15 * series.length;
  const pw = W - m.l - m.r;
  const ph = H - m.t - m.b;
  const finite = series.flatMap((s) => s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y)));
  const span = (k: 0 | 1, d?: [number, number]): [number, number] => {
    if (d) return d;
    const v = finite.map((p) => p[k]);
    const lo = v.length ? Math.min(...v) : 0;
    const hi = v.length ? Math.max(...v) : 1;
    return hi > lo ? [lo, hi] : [lo - 0.5, hi + 0.5];
  };
  const [x0, x1] = span(0, o.xDomain);
  const [y0, y1] = span(1, o.yDomain);
  const sx = (x: number) => (m.l + ((x - x0) / (x1 - x0)) * pw).toFixed(1);
  const sy = (y: number) => (m.t + ph - ((y - y0) / (y1 - y0)) * ph).toFixed(1);
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="${W}" height="${H}" ` +
      `viewBox="0 0 ${W} ${H}" font-size="11" role="img" aria-label="${esc(o.title)}">`,
    `<rect width="${W}" height="${H}" fill="#fff"/>`,
    `<text x="${W / 2}" y="18" text-anchor="middle" font-size="13" font-weight="bold">${esc(o.title)}</text>`,
  ];
  for (const v of niceTicks(x0, x1, 5)) {
    out.push(`<line x1="${sx(v)}" y1="${m.t}" x2="${sx(v)}" y2="${m.t + ph}" stroke="#e6e6e6"/>`,
      `<text x="${sx(v)}" y="${m.t + ph + 14}" text-anchor="middle">${num(v)}</text>`);
  }
  for (const v of niceTicks(y0, y1, 5)) {
    out.push(`<line x1="${m.l}" y1="${sy(v)}" x2="${m.l + pw}" y2="${sy(v)}" stroke="#e6e6e6"/>`,
      `<text x="${m.l - 5}" y="${sy(v)}" dy="4" text-anchor="end">${num(v)}</text>`);
  }
  out.push(
    `<rect x="${m.l}" y="${m.t}" width="${pw}" height="${ph}" fill="none" stroke="#444"/>`,
    `<text x="${m.l + pw / 2}" y="${m.t + ph + 32}" text-anchor="middle">${esc(o.xLabel)}</text>`,
    `<text transform="translate(13 ${m.t + ph / 2}) rotate(-90)" text-anchor="middle">${esc(o.yLabel)}</text>`,
  );
  const colorOf = (s: ChartSeries, i: number) => s.color ?? SERIES_COLORS[i % SERIES_COLORS.length];
  series.forEach((s, i) => {
    const c = colorOf(s, i);
    // Split at non-finite points so an undefined value is a gap.
    let run: string[] = [];
    const flush = () => {
      if (run.length > 1) {
        out.push(`<polyline points="${run.join(' ')}" fill="none" stroke="${c}" stroke-width="2"` +
          `${s.opacity !== undefined ? ` stroke-opacity="${s.opacity}"` : ''}/>`);
      }
      else if (run.length === 1) {
        const [x, y] = run[0].split(',');
        out.push(`<circle cx="${x}" cy="${y}" r="2.5" fill="${c}"/>`);
      }
      run = [];
    };
    for (const [x, y] of s.points) {
      if (Number.isFinite(x) && Number.isFinite(y)) run.push(`${sx(x)},${sy(y)}`);
      else flush();
    }
    flush();
    for (const mk of s.markers ?? []) {
      if (!Number.isFinite(mk.x) || !Number.isFinite(mk.y)) continue;
      out.push(`<circle cx="${sx(mk.x)}" cy="${sy(mk.y)}" r="4" fill="#fff" stroke="${c}" stroke-width="2">` +
        `<title>${esc(`${s.name}: ${mk.label}`)}</title></circle>`,
        // Each series' labels on their own line, so equal thresholds of two series stay legible.
        `<text x="${sx(mk.x)}" y="${sy(mk.y)}" dx="6" dy="${-6 - 12 * i}" fill="${c}">${esc(mk.label)}</text>`);
    }
  });
  const lx = m.l;
  series.forEach((s, i) => {
    const y = m.t + ph + 52 + i * 15;
    const c = colorOf(s, i);
    out.push(`<line x1="${lx}" y1="${y - 4}" x2="${lx + 16}" y2="${y - 4}" stroke="${c}" stroke-width="2"/>`,
      `<text x="${lx + 21}" y="${y}">${esc(s.name)}</text>`);
  });
  out.push('</svg>');
  return out.join('\n');
}
