/** Training curves as PNG: an SVG string (axes, ticks, grid, legend) rendered by sharp (librsvg). */
import sharp from 'sharp';

export interface Series {
  name: string;
  /** [x, y] pairs; non-finite points are skipped. */
  points: [number, number][];
}

export interface PlotOptions {
  title: string;
  xLabel: string;
  yLabel: string;
  width?: number;
  height?: number;
  /** Logarithmic y axis (for losses); non-positive values are skipped. */
  logY?: boolean;
}

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2'];

function esc(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** About `n` round tick values (1/2/5 x 10^k steps) spanning [lo, hi]. */
export function niceTicks(lo: number, hi: number, n = 6): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / n;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
    out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
  }
  return out;
}

/** Ticks of a log10 axis (values in log10 units): decades, or 1/2/5 (1..9 when narrow) per decade. */
function logTicks(lo: number, hi: number): number[] {
  const span = hi - lo;
  if (span >= 3) return niceTicks(Math.ceil(lo), Math.floor(hi), 6).filter(Number.isInteger);
  const mult = span >= 1 ? [1, 2, 5] : [1, 2, 3, 4, 5, 6, 7, 8, 9];
  const out: number[] = [];
  for (let d = Math.floor(lo); d <= Math.ceil(hi); d++) {
    for (const k of mult) {
      const v = d + Math.log10(k);
      if (v >= lo && v <= hi) out.push(v);
    }
  }
  return out;
}

function fmt(v: number): string {
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 1e4 || a < 1e-3) return v.toExponential(0);
  return String(Number(v.toPrecision(4)));
}

/** The SVG text of the plot (exported for tests and for embedding in HTML reports). */
export function curvesSvg(series: Series[], opts: PlotOptions): string {
  const W = opts.width ?? 800;
  const H = opts.height ?? 500;
  const m = { l: 70, r: 20, t: 40, b: 55 };
  const pw = W - m.l - m.r;
  const ph = H - m.t - m.b;
  const ty = (y: number) => (opts.logY ? Math.log10(y) : y);
  const clean = series.map((s) => ({
    name: s.name,
    pts: s.points.filter(
      ([x, y]) => Number.isFinite(x) && Number.isFinite(y) && (!opts.logY || y > 0),
    ),
  }));
  const all = clean.flatMap((s) => s.pts);
  const xsAll = all.map((p) => p[0]);
  let [x0, x1] = all.length ? [Math.min(...xsAll), Math.max(...xsAll)] : [0, 1];
  let [y0, y1] = all.length
    ? [Math.min(...all.map((p) => ty(p[1]))), Math.max(...all.map((p) => ty(p[1])))]
    : [0, 1];
  if (x1 === x0) [x0, x1] = [x0 - 0.5, x1 + 0.5];
  if (y1 === y0) [y0, y1] = [y0 - 0.5, y1 + 0.5];
  const pad = (y1 - y0) * 0.05;
  [y0, y1] = [y0 - pad, y1 + pad];
  const sx = (x: number) => m.l + ((x - x0) / (x1 - x0)) * pw;
  const sy = (y: number) => m.t + ph - ((ty(y) - y0) / (y1 - y0)) * ph;
  const syRaw = (v: number) => m.t + ph - ((v - y0) / (y1 - y0)) * ph;
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" ` +
      `font-family="DejaVu Sans, Arial, sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="24" text-anchor="middle" font-size="16">${esc(opts.title)}</text>`,
  ];
  for (const v of niceTicks(x0, x1)) {
    const x = sx(v).toFixed(1);
    parts.push(`<line x1="${x}" y1="${m.t}" x2="${x}" y2="${m.t + ph}" stroke="#e5e5e5"/>`);
    parts.push(
      `<text x="${x}" y="${m.t + ph + 16}" text-anchor="middle">${esc(fmt(v))}</text>`,
    );
  }
  for (const v of opts.logY ? logTicks(y0, y1) : niceTicks(y0, y1)) {
    const y = syRaw(v).toFixed(1);
    const label = opts.logY ? fmt(Number((10 ** v).toPrecision(3))) : fmt(v);
    parts.push(`<line x1="${m.l}" y1="${y}" x2="${m.l + pw}" y2="${y}" stroke="#e5e5e5"/>`);
    parts.push(`<text x="${m.l - 6}" y="${y}" text-anchor="end" dy="4">${esc(label)}</text>`);
  }
  parts.push(
    `<rect x="${m.l}" y="${m.t}" width="${pw}" height="${ph}" fill="none" stroke="#333"/>`,
    `<text x="${m.l + pw / 2}" y="${H - 14}" text-anchor="middle">${esc(opts.xLabel)}</text>`,
    `<text transform="translate(18 ${m.t + ph / 2}) rotate(-90)" text-anchor="middle">` +
      `${esc(opts.yLabel)}</text>`,
  );
  clean.forEach((s, i) => {
    const c = COLORS[i % COLORS.length];
    if (s.pts.length === 1) {
      const [x, y] = s.pts[0];
      parts.push(`<circle cx="${sx(x).toFixed(1)}" cy="${sy(y).toFixed(1)}" r="3" fill="${c}"/>`);
    } else if (s.pts.length > 1) {
      const d = s.pts.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(' ');
      parts.push(`<polyline points="${d}" fill="none" stroke="${c}" stroke-width="2"/>`);
    }
  });
  const lw = Math.max(60, ...series.map((s) => s.name.length * 7.5)) + 34;
  const lx = m.l + pw - lw - 8;
  parts.push(
    `<rect x="${lx}" y="${m.t + 8}" width="${lw}" height="${series.length * 18 + 8}" ` +
      `fill="white" fill-opacity="0.85" stroke="#999"/>`,
  );
  series.forEach((s, i) => {
    const y = m.t + 8 + 14 + i * 18;
    const c = COLORS[i % COLORS.length];
    parts.push(
      `<line x1="${lx + 8}" y1="${y - 4}" x2="${lx + 26}" y2="${y - 4}" stroke="${c}" ` +
        `stroke-width="2"/>`,
      `<text x="${lx + 32}" y="${y}">${esc(s.name)}</text>`,
    );
  });
  parts.push('</svg>');
  return parts.join('\n');
}

/** Renders `series` as a line plot PNG at `path`. */
export async function renderCurves(path: string, series: Series[], opts: PlotOptions): Promise<void> {
  await sharp(Buffer.from(curvesSvg(series, opts))).png().toFile(path);
}
