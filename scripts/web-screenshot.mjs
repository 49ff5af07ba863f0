// Developer script: the screenshot of the web page in the README (docs/web-page.png) and the
// browser vs Node time per photo. Exports a site for an adapter (default runs/demo/best, which
// `npm run train` writes), serves it, opens it in Chromium (WebGPU on SwiftShader, as the tests),
// segments data/sample/images/*.jpg, and prints: ms per photo (warm) in the browser and in Node
// (`predict`'s code), the largest probability difference and the JPEG decode difference.
// Needs dist/ (npm run build) and /usr/bin/chromium (or SAM2_LORA_CHROMIUM).
//   node scripts/web-screenshot.mjs [ADAPTER]
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = join(fileURLToPath(import.meta.url), '..', '..');
const dist = (p) => import(pathToFileURL(join(root, 'dist', p)).href);
const adapter = process.argv[2] ?? join(root, 'runs', 'demo', 'best');
const photos = ['crack_a.jpg', 'crack_b.jpg'].map((f) => join(root, 'data', 'sample', 'images', f));
const CHROMIUM = process.env.SAM2_LORA_CHROMIUM ?? '/usr/bin/chromium';

const tmp = mkdtempSync(join(tmpdir(), 'sam2-lora-shot-'));
const site = join(tmp, 'site');
execFileSync(process.execPath, [join(root, 'bin', 'sam2-lora.js'), 'web', '--adapter', adapter, '--out', site],
  { stdio: 'inherit' });

// Node: predict's code, warm (the first photo compiles the pipelines).
const { modelFromAdapter } = await dist('adapter/adapter.js');
const { predictProb } = await dist('predict/predict.js');
const { decodeRaw } = await dist('data/decode.js');
const { closeGpu } = await dist('gpu/runtime.js');
const { model, config } = await modelFromAdapter(adapter, {});
const REPEAT = 3;
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const nodeProb = [];
const nodeMs = [];
await predictProb(model, photos[0], { size: config.size });
for (const p of photos) {
  const ms = [];
  for (let k = 0; k < REPEAT; k++) {
    const t0 = performance.now();
    nodeProb[photos.indexOf(p)] = (await predictProb(model, p, { size: config.size })).prob;
    ms.push(performance.now() - t0);
  }
  nodeMs.push(median(ms));
}
await closeGpu();

const { serveSite } = await dist('web/serve.js');
const server = await serveSite(site, 0);
const { chromium } = await import('playwright-core');
const ctx = await chromium.launchPersistentContext(join(tmp, 'profile'), {
  executablePath: CHROMIUM, headless: true, viewport: { width: 1100, height: 900 },
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--enable-unsafe-webgpu',
    '--enable-features=Vulkan', '--use-vulkan=swiftshader', '--use-webgpu-adapter=swiftshader'] });
try {
  const page = await ctx.newPage();
  page.on('console', (m) => { if (m.type() === 'error') console.error(`page console: ${m.text()}`); });
  await page.goto(server.url);
  await page.waitForFunction(() => globalThis.sam2lora?.status === 'ready' || globalThis.sam2lora?.status === 'error' ||
    globalThis.sam2lora?.status === 'no-webgpu', undefined, { timeout: 300_000 });
  const seg = async (file) => {
    const n = await page.evaluate(() => globalThis.sam2lora.done);
    await page.setInputFiles('#files', file);
    await page.waitForFunction((k) => globalThis.sam2lora.done > k, n, { timeout: 600_000 });
    return page.evaluate(() => ({ ms: globalThis.sam2lora.last.ms, prob: Array.from(globalThis.sam2lora.last.prob) }));
  };
  await seg(photos[0]); // warm-up
  const browser = [];
  for (const p of photos) {
    const runs = [];
    for (let k = 0; k < REPEAT; k++) runs.push(await seg(p));
    browser.push({ prob: runs[0].prob, ms: median(runs.map((r) => r.ms)) });
  }
  // The browser's JPEG decode against sharp's, on the same bytes.
  const decodeDiff = [];
  for (const p of photos) {
    const b64 = readFileSync(p).toString('base64');
    const px = await page.evaluate(async (data) => {
      const blob = await (await fetch(`data:image/jpeg;base64,${data}`)).blob();
      const bmp = await createImageBitmap(blob, { colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
      const c = new OffscreenCanvas(bmp.width, bmp.height);
      const ctx2 = c.getContext('2d');
      ctx2.drawImage(bmp, 0, 0);
      return Array.from(ctx2.getImageData(0, 0, bmp.width, bmp.height).data);
    }, b64);
    const raw = await decodeRaw(p);
    let worst = 0;
    let sum = 0;
    let n = 0;
    for (let i = 0; i < raw.width * raw.height; i++) {
      for (let k = 0; k < 3; k++) {
        const d = Math.abs(px[i * 4 + k] - raw.data[i * raw.channels + k]);
        worst = Math.max(worst, d);
        sum += d;
        n++;
      }
    }
    decodeDiff.push({ worst, mean: sum / n });
  }
  await page.screenshot({ path: join(root, 'docs', 'web-page.png') });
  const gpu = await page.evaluate(() => globalThis.sam2lora.gpu);
  photos.forEach((p, i) => {
    let worst = 0;
    for (let j = 0; j < nodeProb[i].length; j++) worst = Math.max(worst, Math.abs(nodeProb[i][j] - browser[i].prob[j]));
    console.log(`${p}: median of ${REPEAT}, warm: browser ${browser[i].ms.toFixed(0)} ms, node ${nodeMs[i].toFixed(0)} ms; ` +
      `max |prob diff| ${worst.toExponential(2)}; JPEG decode vs sharp: max ${decodeDiff[i].worst}, ` +
      `mean ${decodeDiff[i].mean.toFixed(3)} levels`);
  });
  console.log(`browser GPU: ${gpu}; load average ${loadavg().map((l) => l.toFixed(2)).join(' ')}`);
  console.log(`wrote ${join(root, 'docs', 'web-page.png')}`);
} finally {
  await ctx.close();
  await server.close();
  rmSync(tmp, { recursive: true, force: true });
}
