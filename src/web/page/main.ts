/**
 * The page: loads site.json and the weights, builds the model on the browser's WebGPU with the
 * same engine and WGSL kernels as Node, and segments dropped or picked photos exactly as
 * `predict` does (tiles, model, stitching). The threshold slider only re-draws. For tests and
 * scripts the state is on `window.sam2lora` (status, GPU name, each photo's probability map).
 */
import { Engine } from '../../autograd/tensor.js';
import type { RawImage } from '../../data/pixels.js';
import { Segmenter } from '../../model/segmenter.js';
import { maskPixels, overlayPixels, probPixels } from '../../predict/render.js';
import { segmenterTile, tiledProb } from '../../predict/segment.js';
import { MANIFEST_FILE, type SiteManifest, parseManifest, unpackTensors } from '../manifest.js';
import { decodePhoto } from './decode.js';
import { NoWebGpuError, openBrowserGpu } from './gpu.js';
import { loadWeightFiles } from './weights.js';

export interface PageResult {
  name: string;
  width: number;
  height: number;
  tiles: number;
  /** Probability map [height, width]. */
  prob: Float32Array;
  /** Decode + model + stitching, milliseconds. */
  ms: number;
}

export interface PageState {
  status: 'loading' | 'ready' | 'busy' | 'no-webgpu' | 'error';
  message: string;
  gpu?: string;
  manifest?: SiteManifest;
  weightsFromCache?: boolean[];
  threshold?: number;
  results: PageResult[];
  last?: PageResult;
  /** Photos finished so far (tests wait on it). */
  done: number;
}

declare global {
  interface Window {
    sam2lora: PageState;
  }
}

const state: PageState = { status: 'loading', message: '', results: [], done: 0 };
window.sam2lora = state;

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const statusEl = $('status');
const progress = $<HTMLProgressElement>('progress');
const meta = $('meta');
const drop = $('drop');
const input = $<HTMLInputElement>('files');
const slider = $<HTMLInputElement>('threshold');
const sliderOut = $<HTMLOutputElement>('threshold-value');
const resultsEl = $('results');

function say(text: string, error = false): void {
  state.message = text;
  statusEl.textContent = text;
  statusEl.classList.toggle('error', error);
}

function showProgress(value: number | null): void {
  progress.hidden = value === null;
  if (value !== null) progress.value = value;
}

const mb = (b: number) => `${(b / 1e6).toFixed(1)} MB`;

interface Shown {
  result: PageResult;
  raw: RawImage;
  overlay: HTMLCanvasElement;
}
const shown: Shown[] = [];

function drawRgba(canvas: HTMLCanvasElement, rgba: Uint8Array, w: number, h: number): void {
  canvas.width = w;
  canvas.height = h;
  const ctx = canvas.getContext('2d')!;
  const img = ctx.createImageData(w, h);
  img.data.set(rgba);
  ctx.putImageData(img, 0, 0);
}

function greyToRgba(grey: Uint8Array): Uint8Array {
  const out = new Uint8Array(grey.length * 4);
  for (let i = 0; i < grey.length; i++) {
    out[i * 4] = out[i * 4 + 1] = out[i * 4 + 2] = grey[i];
    out[i * 4 + 3] = 255;
  }
  return out;
}

function drawOverlay(s: Shown, threshold: number): void {
  const { raw, result } = s;
  drawRgba(s.overlay, overlayPixels(raw.data, raw.channels, result.prob, threshold, 4), result.width, result.height);
}

/** The mask at the current threshold as a PNG file (255 crack, 0 background), as `predict` writes. */
async function maskPng(r: PageResult, threshold: number): Promise<Blob> {
  const canvas = document.createElement('canvas');
  drawRgba(canvas, greyToRgba(maskPixels(r.prob, threshold)), r.width, r.height);
  return new Promise((ok, fail) => canvas.toBlob((b) => (b ? ok(b) : fail(new Error('PNG encoding failed'))), 'image/png'));
}

const stem = (name: string) => name.replace(/\.[^.]*$/, '') || name;

function show(result: PageResult, raw: RawImage): void {
  const box = document.createElement('section');
  box.className = 'result';
  const h = document.createElement('h2');
  h.textContent = `${result.name}: ${result.width}x${result.height}, ${result.tiles} tile(s), ` +
    `${result.ms.toFixed(0)} ms`;
  const maps = document.createElement('div');
  maps.className = 'maps';
  const fig = (caption: string, canvas: HTMLCanvasElement) => {
    const f = document.createElement('figure');
    const c = document.createElement('figcaption');
    c.textContent = caption;
    f.append(canvas, c);
    return f;
  };
  const overlay = document.createElement('canvas');
  overlay.className = 'overlay';
  const probCanvas = document.createElement('canvas');
  probCanvas.className = 'prob';
  drawRgba(probCanvas, greyToRgba(probPixels(result.prob)), result.width, result.height);
  maps.append(fig('overlay (cracks above the threshold)', overlay), fig('crack probability', probCanvas));
  const button = document.createElement('button');
  button.className = 'download';
  button.textContent = 'Download mask PNG';
  button.addEventListener('click', async () => {
    const blob = await maskPng(result, state.threshold ?? 0.5);
    const a = document.createElement('a');
    a.href = URL.createObjectURL(blob);
    a.download = `${stem(result.name)}.mask.png`;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
  });
  box.append(h, maps, button);
  resultsEl.prepend(box);
  const s = { result, raw, overlay };
  shown.push(s);
  drawOverlay(s, state.threshold ?? 0.5);
}

let queue: Promise<void> = Promise.resolve();

function segmentFiles(model: Segmenter, m: SiteManifest, files: File[]): void {
  for (const file of files) {
    queue = queue.then(async () => {
      state.status = 'busy';
      try {
        const t0 = performance.now();
        say(`${file.name}: decoding…`);
        const raw = await decodePhoto(file);
        showProgress(0);
        const photo = await tiledProb(raw, { size: m.size, ...m.tiling }, segmenterTile(model, m.size),
          (done, total) => {
            say(`${file.name}: tile ${done} of ${total}`);
            showProgress(done / total);
          });
        const result: PageResult = { name: file.name, ...photo, ms: performance.now() - t0 };
        state.results.push(result);
        state.last = result;
        show(result, raw);
        say(`${file.name}: done in ${result.ms.toFixed(0)} ms`);
      } catch (e) {
        say(`${file.name}: ${(e as Error).message}`, true);
        console.error(e);
      } finally {
        showProgress(null);
        state.status = 'ready';
        state.done++;
      }
    });
  }
}

async function main(): Promise<void> {
  say('reading site.json…');
  const res = await fetch(MANIFEST_FILE, { cache: 'no-cache' });
  if (!res.ok) throw new Error(`${MANIFEST_FILE}: HTTP ${res.status} (is this a sam2-lora web export?)`);
  const m = parseManifest(await res.text(), MANIFEST_FILE);
  state.manifest = m;
  state.threshold = m.threshold;
  slider.value = String(m.threshold);
  sliderOut.value = m.threshold.toFixed(2);
  const what = `SAM2 ${m.segmenter.model} + ${m.segmenter.head} head, input ${m.size}px, ` +
    `tiles ${m.tiling.tile}px (overlap ${m.tiling.overlap}), weights ${m.weights.encoder.dtype}`;
  meta.textContent = `${what}; adapter sha256 ${m.adapter.sha256.slice(0, 12)}…`;

  say('opening WebGPU…');
  const { gpu, name } = await openBrowserGpu();
  state.gpu = name;
  meta.textContent = `GPU: ${name}. ${what}`;

  const files = [m.weights.encoder, m.weights.head];
  const total = files.reduce((a, w) => a + w.bytes, 0);
  showProgress(0);
  const { buffers, fromCache } = await loadWeightFiles(files, (done, all, cached) => {
    say(`${cached ? 'weights from the browser cache' : 'downloading weights'}: ${mb(done)} of ${mb(all)}`);
    showProgress(done / all);
  });
  state.weightsFromCache = fromCache;
  showProgress(null);
  say(`building the model (${mb(total)} of weights)…`);
  const engine = new Engine(gpu);
  const model = new Segmenter(engine, m.segmenter);
  const sd = new Map([...unpackTensors(buffers[0], files[0]), ...unpackTensors(buffers[1], files[1])]);
  model.loadStateDict(sd, { source: 'the site weights' });
  model.train(false);

  state.status = 'ready';
  drop.classList.remove('disabled');
  say(`ready: drop or pick photos (weights ${fromCache.every(Boolean) ? 'from the browser cache' : 'downloaded and cached'})`);

  slider.addEventListener('input', () => {
    const t = Number(slider.value);
    state.threshold = t;
    sliderOut.value = t.toFixed(2);
    for (const s of shown) drawOverlay(s, t);
  });
  input.addEventListener('change', () => {
    if (input.files?.length) segmentFiles(model, m, [...input.files]);
    input.value = '';
  });
  drop.addEventListener('dragover', (e) => {
    e.preventDefault();
    drop.classList.add('over');
  });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    const list = [...(e.dataTransfer?.files ?? [])].filter((f) => f.type.startsWith('image/'));
    if (list.length) segmentFiles(model, m, list);
  });
}

main().catch((e) => {
  const noGpu = e instanceof NoWebGpuError;
  state.status = noGpu ? 'no-webgpu' : 'error';
  say(noGpu ? e.message : `cannot start: ${(e as Error).message}`, true);
  meta.textContent = noGpu ? 'no WebGPU in this browser' : 'failed to start';
  showProgress(null);
  if (!noGpu) console.error(e);
});
