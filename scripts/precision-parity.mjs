#!/usr/bin/env node
// Training parity of two runs (issue 12: the same run in f32 and in f16): their loss curves on
// one SVG chart (per-step loss, and its running mean over 20 steps), and each validation's Dice
// side by side with the difference. Reads each run folder's log.jsonl. Needs `npm run build`.
//
//   node scripts/precision-parity.mjs RUN_A RUN_B --svg FILE [--json FILE]
import { readFileSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const { curvesSvg } = await import(pathToFileURL(join(root, 'dist', 'train', 'plot.js')).href);

const args = process.argv.slice(2);
const flag = (n) => {
  const i = args.indexOf(`--${n}`);
  return i >= 0 ? args.splice(i, 2)[1] : undefined;
};
const svg = flag('svg');
const json = flag('json');
if (args.length !== 2 || !svg) throw new Error('usage: precision-parity.mjs RUN_A RUN_B --svg FILE [--json FILE]');

function readRun(dir) {
  const recs = readFileSync(join(dir, 'log.jsonl'), 'utf8').split('\n').filter((l) => l.trim())
    .map((l) => JSON.parse(l));
  const start = recs.find((r) => r.type === 'start');
  // A resumed run logs the steps after its checkpoint again: the last record per step wins.
  const loss = new Map();
  for (const r of recs) if (r.type === 'step') loss.set(r.step, r.loss);
  const val = new Map();
  for (const r of recs) if (r.type === 'epoch' && r.val) val.set(r.step, r.val.dice);
  const skips = recs.filter((r) => r.type === 'skip').length;
  const scales = recs.filter((r) => r.type === 'step' && r.lossScale).map((r) => r.lossScale);
  return {
    dir,
    name: `${start?.run?.options?.precision ?? 'f32'} (${basename(dir)})`,
    loss: [...loss].sort((a, b) => a[0] - b[0]),
    val: [...val].sort((a, b) => a[0] - b[0]),
    skips,
    lossScale: scales.length ? { first: scales[0], last: scales.at(-1), min: Math.min(...scales) } : null,
  };
}

const runs = args.map(readRun);
const mean = (pts, w) => pts.map(([s], i) => {
  const win = pts.slice(Math.max(0, i - w + 1), i + 1);
  return [s, win.reduce((a, [, v]) => a + v, 0) / win.length];
});
const series = runs.flatMap((r) => [
  { name: `${r.name} loss`, points: r.loss },
  { name: `${r.name} mean of 20`, points: mean(r.loss, 20) },
]);
writeFileSync(svg, curvesSvg(series, { title: 'Training loss: f32 vs f16', xLabel: 'step', yLabel: 'loss', width: 900, height: 480 }));

const [a, b] = runs;
const steps = a.loss.filter(([s]) => b.loss.some(([t]) => t === s));
const diffs = steps.map(([s, v]) => Math.abs(v - b.loss.find(([t]) => t === s)[1]));
console.log(`| | ${a.name} | ${b.name} | difference |`);
console.log('| --- | --- | --- | --- |');
for (const [s, d] of a.val) {
  const other = b.val.find(([t]) => t === s)?.[1];
  console.log(`| val Dice at step ${s} | ${d.toFixed(4)} | ${other?.toFixed(4) ?? 'n/a'} | ` +
    `${other === undefined ? 'n/a' : (other - d).toFixed(4)} |`);
}
const last = (r) => r.loss.at(-1);
console.log(`| final loss (step ${last(a)[0]}) | ${last(a)[1].toFixed(4)} | ${last(b)[1].toFixed(4)} | ${(last(b)[1] - last(a)[1]).toFixed(4)} |`);
console.log(`| mean of the last 20 losses | ${mean(a.loss, 20).at(-1)[1].toFixed(4)} | ${mean(b.loss, 20).at(-1)[1].toFixed(4)} | ` +
  `${(mean(b.loss, 20).at(-1)[1] - mean(a.loss, 20).at(-1)[1]).toFixed(4)} |`);
console.log(`| skipped steps | ${a.skips} | ${b.skips} | |`);
console.log(`per-step loss |difference| over ${steps.length} common steps: max ${Math.max(...diffs).toFixed(4)}, ` +
  `mean ${(diffs.reduce((x, y) => x + y, 0) / diffs.length).toFixed(4)}`);
for (const r of runs) if (r.lossScale) console.log(`${r.name}: loss scale ${JSON.stringify(r.lossScale)}`);
console.log(`wrote ${svg}`);
if (json) writeFileSync(json, `${JSON.stringify(runs, null, 2)}\n`);
