/**
 * `sam2-lora web` end to end in a real browser: a nano adapter trained here is exported with the
 * CLI, served by `--serve`'s server, and opened in Debian's Chromium (playwright-core) on WebGPU
 * through SwiftShader. A PNG photo fed to the page must give Node's `predict` probabilities
 * (within PROB_TOL), overlay and downloaded mask included; the threshold slider re-draws without
 * recomputing; the weights come from the Cache API on reload; a browser without WebGPU gets the
 * message. Skips, saying why, where /usr/bin/chromium (or $SAM2_LORA_CHROMIUM) is absent.
 */
import { execFileSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BrowserContext, Page } from 'playwright-core';
import { modelFromAdapter } from '../src/adapter/adapter.js';
import { decodeRaw } from '../src/data/decode.js';
import { writeSyntheticDataset } from '../src/data/synthetic.js';
import { closeGpu } from '../src/gpu/runtime.js';
import { writeMaskPng } from '../src/predict/images.js';
import { overlayPixels } from '../src/predict/render.js';
import { predictProb } from '../src/predict/predict.js';
import { train } from '../src/train/trainer.js';
import { parseManifest } from '../src/web/manifest.js';
import { type SiteServer, serveSite } from '../src/web/serve.js';
import { BIN, REPO, ensureBuilt } from './dist.js';
import { BASE_ARGS, CHROMIUM, HAVE_CHROMIUM, WEBGPU_ARGS, skipReason } from './chromium.js';
import { nanoTrainOptions } from './nano-run.js';

const SKIP = skipReason('web-browser');

/**
 * Largest |browser - Node| probability allowed (the target: 1e-4). Both run the same
 * kernels in f32 on different Vulkan drivers (SwiftShader vs lavapipe), the browser on LoRA folded
 * into the weights and Node on W·x + s·B·A·x; measured 2.4e-7 here (logged below), so 1e-5 leaves
 * room for another CPU's code generation only.
 */
const PROB_TOL = 1e-5;
/**
 * The same with f16 weights, against Node on the f32 ones: each weight rounded by up to 2^-11
 * relative; measured 1.9e-4 on this test's adapter (seeded, so the same every run).
 */
const F16_TOL = 5e-4;

let dir: string;
let adapter: string;
let site: string;
let photo: string;
let server: SiteServer;
let context: BrowserContext | undefined;
let node: { prob: Float32Array; width: number; height: number; threshold: number; mask: Uint8Array; ms: number };

/** What the page keeps on `globalThis.sam2lora` (src/web/page/main.ts), as the tests read it. */
interface PageState {
  status: string;
  message: string;
  gpu?: string;
  done: number;
  weightsFromCache?: boolean[];
  last?: { prob: Float32Array; ms: number; width: number; height: number };
}
// Inside page.evaluate: the page's global, typed for this (DOM-less) test file.
declare const globalThis: { sam2lora: PageState; document: { querySelector(s: string): any } };

beforeAll(async () => {
  if (!HAVE_CHROMIUM) return;
  dir = mkdtempSync(join(tmpdir(), 'sam2-lora-web-'));
  const data = join(dir, 'data');
  await writeSyntheticDataset(data, { train: 4, val: 2, test: 1, size: 80, seed: 17 });
  const run = join(dir, 'run');
  const r = await train(nanoTrainOptions(data, run, { epochs: 2, maxSteps: 4 }));
  // A real photo, small enough for 6 tiles of the 64 px model: PNG, so both sides decode alike.
  photo = join(dir, 'crack.png');
  await sharp(join(REPO, 'data', 'sample', 'images', 'crack_a.jpg')).resize(150, 100).png().toFile(photo);

  ensureBuilt('web-browser', join(REPO, 'dist', 'cli', 'web.js'));
  site = join(dir, 'site');
  adapter = r.bestDir;
  execFileSync(process.execPath, [BIN, 'web', '--adapter', adapter, '--out', site], { cwd: REPO, stdio: 'pipe' });

  const { model, config } = await modelFromAdapter(r.bestDir, {});
  await predictProb(model, photo, { size: config.size }); // warm-up: pipelines compiled
  const t0 = performance.now();
  const p = await predictProb(model, photo, { size: config.size });
  const ms = performance.now() - t0;
  const maskFile = join(dir, 'node.mask.png');
  await writeMaskPng(maskFile, p.prob, p.width, p.height, config.threshold);
  const m = await decodeRaw(maskFile);
  const mask = Uint8Array.from({ length: m.width * m.height }, (_, i) => m.data[i * m.channels]);
  node = { ...p, threshold: config.threshold, mask, ms };
  server = await serveSite(site, 0);
  const { chromium } = await import('playwright-core');
  context = await chromium.launchPersistentContext(mkdtempSync(join(dir, 'profile-')), {
    executablePath: CHROMIUM, headless: true, args: [...BASE_ARGS, ...WEBGPU_ARGS],
    viewport: { width: 1100, height: 900 }, acceptDownloads: true });
}, 600_000);

afterAll(async () => {
  await context?.close();
  await server?.close();
  await closeGpu();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** A page of the site with its console errors and failed requests collected. */
async function open(ctx: BrowserContext, url = server.url): Promise<{ page: Page; problems: string[] }> {
  const page = await ctx.newPage();
  const problems: string[] = [];
  page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('requestfailed', (q) => problems.push(`failed: ${q.url()} ${q.failure()?.errorText}`));
  await page.goto(url, { waitUntil: 'load' });
  await page.waitForFunction(() => globalThis.sam2lora && globalThis.sam2lora.status !== 'loading', undefined,
    { timeout: 300_000 });
  return { page, problems };
}

async function segment(page: Page, file: string): Promise<{ prob: Float32Array; ms: number }> {
  const before = await page.evaluate(() => globalThis.sam2lora.done);
  await page.setInputFiles('#files', file);
  await page.waitForFunction((n) => globalThis.sam2lora.done > n, before, { timeout: 300_000 });
  const r = await page.evaluate(() => {
    const last = globalThis.sam2lora.last;
    return last ? { prob: Array.from(last.prob), ms: last.ms, w: last.width, h: last.height } : null;
  });
  expect(r, 'a result on globalThis.sam2lora.last').not.toBeNull();
  expect([r!.w, r!.h]).toEqual([node.width, node.height]);
  return { prob: Float32Array.from(r!.prob), ms: r!.ms };
}

const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
};

/** Pixels whose mask may legitimately differ: Node's probability within PROB_TOL of the threshold. */
const ambiguous = (i: number, t: number) => Math.abs(node.prob[i] - t) <= PROB_TOL;

describe('sam2-lora web in Chromium (WebGPU on SwiftShader)', () => {
  it.skipIf(!HAVE_CHROMIUM)(`segments a PNG photo as predict does: probabilities, overlay, mask PNG, threshold${SKIP}`, async () => {
    const { page, problems } = await open(context!);
    const state = await page.evaluate(() => ({ status: globalThis.sam2lora.status, gpu: globalThis.sam2lora.gpu,
      message: globalThis.sam2lora.message }));
    expect(state.status, state.message).toBe('ready');
    expect(await page.textContent('#meta')).toContain(state.gpu!);
    const manifest = parseManifest(readFileSync(join(site, 'site.json'), 'utf8'), 'site.json');
    expect(await page.inputValue('#threshold')).toBe(String(manifest.threshold));

    const first = await segment(page, photo);
    const diff = maxDiff(first.prob, node.prob);
    expect(diff).toBeLessThanOrEqual(PROB_TOL);
    const warm = await segment(page, photo); // pipelines compiled: the time per photo
    expect(maxDiff(warm.prob, first.prob), 'the same photo twice gives the same map').toBe(0);
    console.log(`web-browser: max |browser - node| probability ${diff.toExponential(2)} over ` +
      `${node.prob.length} pixels; ${node.width}x${node.height} photo, 64 px nano: browser ` +
      `${warm.ms.toFixed(0)} ms/photo (SwiftShader), node ${node.ms.toFixed(0)} ms/photo (lavapipe)`);

    // Overlay: the photo, with exactly the pixels above the threshold tinted (see render.ts).
    const ov = await page.evaluate(() => {
      const cv = globalThis.document.querySelector('.result canvas.overlay');
      return { w: cv.width as number, h: cv.height as number,
        data: Array.from(cv.getContext('2d').getImageData(0, 0, cv.width, cv.height).data as Uint8ClampedArray) };
    });
    expect([ov.w, ov.h]).toEqual([node.width, node.height]);
    const px = (await decodeRaw(photo)).data;
    let overlayWrong = 0;
    for (let i = 0; i < node.prob.length; i++) {
      if (ambiguous(i, manifest.threshold)) continue;
      const want = overlayPixels(px.subarray(i * 3, i * 3 + 3), 3, [node.prob[i]], manifest.threshold, 4);
      if (want.some((v, k) => v !== ov.data[i * 4 + k])) overlayWrong++;
    }
    expect(overlayWrong, 'overlay pixels differing from the photo tinted where Node says crack').toBe(0);

    // The downloaded mask decodes to Node's mask.
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('.result button.download')]);
    expect(download.suggestedFilename()).toBe('crack.mask.png');
    const got = join(dir, 'browser.mask.png');
    await download.saveAs(got);
    const raw = await sharp(got).raw().toBuffer({ resolveWithObject: true });
    expect([raw.info.width, raw.info.height]).toEqual([node.width, node.height]);
    let maskWrong = 0;
    let on = 0;
    for (let i = 0; i < node.prob.length; i++) {
      const v = raw.data[i * raw.info.channels];
      if (v === 255) on++;
      if (!ambiguous(i, manifest.threshold) && v !== node.mask[i]) maskWrong++;
    }
    expect(maskWrong, 'mask pixels differing from Node (away from the threshold)').toBe(0);
    expect(on, 'the mask marks some crack (else the comparison proves little)').toBeGreaterThan(0);

    // The slider re-draws at another threshold without recomputing.
    const done = await page.evaluate(() => globalThis.sam2lora.done);
    const t2 = 0.3;
    await page.$eval('#threshold', (el: any, t) => {
      el.value = String(t);
      el.dispatchEvent(new Event('input'));
    }, t2);
    const [dl2] = await Promise.all([page.waitForEvent('download'), page.click('.result button.download')]);
    const got2 = join(dir, 'browser2.mask.png');
    await dl2.saveAs(got2);
    const raw2 = await sharp(got2).raw().toBuffer({ resolveWithObject: true });
    let wrong2 = 0;
    for (let i = 0; i < node.prob.length; i++) {
      if (!ambiguous(i, t2) && raw2.data[i * raw2.info.channels] !== (node.prob[i] > t2 ? 255 : 0)) wrong2++;
    }
    expect(wrong2).toBe(0);
    expect(await page.evaluate(() => globalThis.sam2lora.done), 'no recompute').toBe(done);
    expect(problems).toEqual([]);
    mkdirSync(join(REPO, 'test-results'), { recursive: true });
    await page.screenshot({ path: join(REPO, 'test-results', 'web-browser.png'), fullPage: true });
    await page.close();
  }, 600_000);

  it.skipIf(!HAVE_CHROMIUM)(`loads the weights from the Cache API on reload${SKIP}`, async () => {
    const { page, problems } = await open(context!);
    const s = await page.evaluate(() => ({ status: globalThis.sam2lora.status, cached: globalThis.sam2lora.weightsFromCache }));
    expect(s.status).toBe('ready');
    expect(s.cached).toEqual([true, true]);
    expect(problems).toEqual([]);
    await page.close();
  }, 300_000);

  it.skipIf(!HAVE_CHROMIUM)(`runs f16 weights (widened to f32 on load) close to predict${SKIP}`, async () => {
    const site16 = join(dir, 'site16');
    execFileSync(process.execPath, [BIN, 'web', '--adapter', adapter, '--out', site16, '--weights-dtype', 'f16'],
      { cwd: REPO, stdio: 'pipe' });
    const m = parseManifest(readFileSync(join(site16, 'site.json'), 'utf8'), 'site.json');
    expect(m.weights.encoder.dtype).toBe('f16');
    const server16 = await serveSite(site16, 0);
    try {
      const { page, problems } = await open(context!, server16.url);
      expect(await page.evaluate(() => globalThis.sam2lora.status)).toBe('ready');
      const { prob } = await segment(page, photo);
      const diff = maxDiff(prob, node.prob);
      console.log(`web-browser: f16 weights: max |browser - node (f32)| probability ${diff.toExponential(2)}`);
      expect(diff).toBeLessThanOrEqual(F16_TOL);
      expect(problems).toEqual([]);
      await page.close();
    } finally {
      await server16.close();
    }
  }, 300_000);

  it.skipIf(!HAVE_CHROMIUM)(`refuses weights whose sha256 differs from site.json${SKIP}`, async () => {
    const bad = join(dir, 'site-bad');
    cpSync(site, bad, { recursive: true });
    const head = readFileSync(join(bad, 'head.bin'));
    head[head.length - 1] ^= 0x40;
    writeFileSync(join(bad, 'head.bin'), head);
    const s2 = await serveSite(bad, 0);
    try {
      const page = await context!.newPage();
      // Another origin has its own cache, so the corrupt file is downloaded, not taken from it.
      await page.goto(s2.url, { waitUntil: 'load' });
      await page.waitForFunction(() => globalThis.sam2lora && globalThis.sam2lora.status !== 'loading', undefined,
        { timeout: 120_000 });
      expect(await page.evaluate(() => globalThis.sam2lora.status)).toBe('error');
      expect(await page.textContent('#status')).toMatch(/head\.bin: sha256 [0-9a-f]{64} differs from site\.json's/);
      await page.close();
    } finally {
      await s2.close();
    }
  }, 120_000);

  it.skipIf(!HAVE_CHROMIUM)(`says so clearly when the browser has no WebGPU${SKIP}`, async () => {
    const page = await context!.newPage();
    const problems: string[] = [];
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    // As a browser without WebGPU: no navigator.gpu at all.
    await page.addInitScript('delete Navigator.prototype.gpu');
    await page.goto(server.url, { waitUntil: 'load' });
    await page.waitForFunction(() => globalThis.sam2lora && globalThis.sam2lora.status !== 'loading');
    expect(await page.evaluate(() => globalThis.sam2lora.status)).toBe('no-webgpu');
    expect(await page.textContent('#status')).toMatch(/no WebGPU \(navigator\.gpu is missing\)/);
    expect(await page.getAttribute('#status', 'class')).toContain('error');
    expect(await page.getAttribute('#drop', 'class')).toContain('disabled');
    expect(problems).toEqual([]);
    await page.close();

    // WebGPU present, but no adapter (blocked GPU, hardware acceleration off).
    const p2 = await context!.newPage();
    await p2.addInitScript('GPU.prototype.requestAdapter = async () => null');
    await p2.goto(server.url, { waitUntil: 'load' });
    await p2.waitForFunction(() => globalThis.sam2lora && globalThis.sam2lora.status !== 'loading');
    expect(await p2.evaluate(() => globalThis.sam2lora.status)).toBe('no-webgpu');
    expect(await p2.textContent('#status')).toMatch(/WebGPU is present but the browser offers no GPU adapter/);
    await p2.close();
  }, 120_000);
});
