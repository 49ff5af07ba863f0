/**
 * The HTML report of a real (tiny) training run, opened from disk in a real browser: Debian's
 * Chromium driven by playwright-core (no browser download). Checks no console error, every image
 * loaded, every number on the page equal to metrics.json, one gallery entry per test image, and
 * keeps a screenshot in test-results/. Skips, saying why, where /usr/bin/chromium (or
 * $SAM2_LORA_CHROMIUM) is absent.
 */
import { mkdirSync, mkdtempSync, readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDataset } from '../src/data/dataset.js';
import { writeSyntheticDataset } from '../src/data/synthetic.js';
import { closeGpu } from '../src/gpu/runtime.js';
import { type NumberFormat, formatValue, valueAt } from '../src/report/html.js';
import { writeRunReport } from '../src/report/index.js';
import { train } from '../src/train/trainer.js';
import { modelFromAdapter } from '../src/adapter/adapter.js';
import { BASE_ARGS, CHROMIUM, HAVE_CHROMIUM, skipReason } from './chromium.js';
import { nanoTrainOptions } from './nano-run.js';

const SKIP = skipReason('report-browser');

const TEST_IMAGES = 5;
let dir: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'sam2-lora-report-'));
});

afterAll(async () => {
  await closeGpu();
  await rm(dir, { recursive: true, force: true });
});

describe('HTML report in Chromium', () => {
  it.skipIf(!HAVE_CHROMIUM)(`renders the report of a tiny run: images, numbers = metrics.json, gallery${SKIP}`, async () => {
    const { chromium } = await import('playwright-core');
    const t0 = performance.now();
    const data = join(dir, 'data');
    // 80 px photos for a 64 px model: the own-resolution scores are not the model-resolution ones.
    await writeSyntheticDataset(data, { train: 4, val: 2, test: TEST_IMAGES, size: 80, seed: 11 });
    const run = join(dir, 'run');
    const r = await train(nanoTrainOptions(data, run, { epochs: 2, maxSteps: 4 }));
    const { model, config } = await modelFromAdapter(r.bestDir, {});
    const test = await openDataset({ root: data, split: 'test' });
    const t1 = performance.now();
    const rep = await writeRunReport(run, { model, config, samples: test, dataset: `${data}, split test`, nativeRes: true });
    const t2 = performance.now();
    expect(rep.index).toBe(resolve(run, 'report', 'index.html'));
    const doc = JSON.parse(readFileSync(rep.json, 'utf8'));
    expect(doc.training.length, 'training curves from the run log').toBe(1);
    expect(doc.training[0].loss.length).toBe(4);
    expect(doc.training[0].valDice.length).toBe(2);
    expect(doc.tables.map((t: { resolution: string }) => t.resolution)).toEqual(['model', 'native']);

    // A new empty profile (playwright passes it as --user-data-dir).
    const browser = await chromium.launchPersistentContext(mkdtempSync(join(dir, 'profile-')), {
      executablePath: CHROMIUM, headless: true, args: BASE_ARGS, viewport: { width: 1200, height: 900 } });
    try {
      const page = await browser.newPage();
      const problems: string[] = [];
      page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
      page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
      page.on('requestfailed', (q) => problems.push(`failed: ${q.url()} ${q.failure()?.errorText}`));
      await page.goto(pathToFileURL(rep.index).href, { waitUntil: 'load' });

      const imgs = await page.$$eval('img', (els) =>
        els.map((e) => ({ src: e.getAttribute('src'), complete: e.complete, w: e.naturalWidth, h: e.naturalHeight })));
      // Photo, ground truth and one overlay per adapter for each gallery entry.
      expect(imgs.length).toBe(TEST_IMAGES * 3);
      for (const im of imgs) expect(im.complete && im.w > 0 && im.h > 0, `image ${im.src} loaded`).toBe(true);

      const nums = await page.$$eval('[data-k]', (els) =>
        els.map((e) => ({ k: e.getAttribute('data-k')!, f: e.getAttribute('data-f')!, text: e.textContent })));
      // 2 tables x 2 thresholds (unless the validation threshold is 0.5) x 10 numbers, plus the gallery.
      expect(nums.length).toBeGreaterThan(40 + TEST_IMAGES * 14);
      for (const n of nums) {
        const v = valueAt(doc, n.k);
        expect(v, `${n.k} is in metrics.json`).not.toBeUndefined();
        expect(n.text, n.k).toBe(formatValue(v, n.f as NumberFormat));
      }
      // The numbers are the evaluation's own: Dice at 0.5 on the page is the accumulator's.
      const dice = await page.$eval('[data-k="tables.0.rows.0.metrics.dice"]', (e) => e.textContent);
      expect(dice).toBe(formatValue(Number(rep.results[0].collected.metrics[0].dice.toFixed(6)), 'r4'));

      const entries = await page.$$eval('.entry', (els) => els.map((e) => e.getAttribute('data-id')));
      expect(entries.length).toBe(TEST_IMAGES);
      expect([...entries].sort()).toEqual(test.map((s) => s.id).sort());
      // PR + Dice at two resolutions, training loss + validation Dice.
      expect(await page.$$eval('svg.chart', (els) => els.length)).toBe(6);
      expect(problems).toEqual([]);

      mkdirSync('test-results', { recursive: true });
      await page.screenshot({ path: join('test-results', 'report-browser.png'), fullPage: true });
      console.log(`report-browser: run + load ${((t1 - t0) / 1000).toFixed(1)} s, report ` +
        `${((t2 - t1) / 1000).toFixed(1)} s, browser ${((performance.now() - t2) / 1000).toFixed(1)} s`);
    } finally {
      await browser.close();
    }
  });
});
