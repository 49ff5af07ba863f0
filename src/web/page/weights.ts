/**
 * Downloading the weight files once: with progress, checked against the manifest's sha256, and
 * kept in the Cache API under that checksum (a new export gets new keys; old ones are dropped).
 */
import type { WeightsFile } from '../manifest.js';

const CACHE = 'sam2-lora-weights';

const hex = (b: ArrayBuffer) => [...new Uint8Array(b)].map((x) => x.toString(16).padStart(2, '0')).join('');

async function sha256(buf: ArrayBuffer): Promise<string> {
  return hex(await crypto.subtle.digest('SHA-256', buf));
}

const cacheKey = (w: WeightsFile) => new URL(`weights-cache/${w.sha256}`, location.href).href;

async function openCache(): Promise<Cache | null> {
  try {
    return typeof caches === 'undefined' ? null : await caches.open(CACHE);
  } catch {
    return null; // e.g. storage disabled: download every time
  }
}

async function download(w: WeightsFile, onBytes: (n: number) => void): Promise<ArrayBuffer> {
  const res = await fetch(w.file, { cache: 'no-cache' });
  if (!res.ok || !res.body) throw new Error(`${w.file}: HTTP ${res.status} ${res.statusText}`);
  const out = new Uint8Array(w.bytes);
  const reader = res.body.getReader();
  let at = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    if (at + value.byteLength > out.byteLength) throw new Error(`${w.file}: larger than the ${w.bytes} bytes site.json says`);
    out.set(value, at);
    at += value.byteLength;
    onBytes(value.byteLength);
  }
  if (at !== w.bytes) throw new Error(`${w.file}: got ${at} bytes, site.json says ${w.bytes} (interrupted download?)`);
  return out.buffer;
}

/**
 * The files' bytes, from the cache when there, else downloaded (then cached); `onProgress` gets
 * the bytes so far and in all. A file whose sha256 differs from the manifest's is an error.
 */
export async function loadWeightFiles(
  files: WeightsFile[],
  onProgress: (done: number, total: number, fromCache: boolean) => void,
): Promise<{ buffers: ArrayBuffer[]; fromCache: boolean[] }> {
  const cache = await openCache();
  const total = files.reduce((a, w) => a + w.bytes, 0);
  let done = 0;
  const buffers: ArrayBuffer[] = [];
  const fromCache: boolean[] = [];
  for (const w of files) {
    const hit = await cache?.match(cacheKey(w));
    let buf = hit ? await hit.arrayBuffer() : null;
    if (buf && (buf.byteLength !== w.bytes || (await sha256(buf)) !== w.sha256)) buf = null;
    fromCache.push(buf !== null);
    if (buf) {
      done += w.bytes;
      onProgress(done, total, true);
    } else {
      buf = await download(w, (n) => onProgress((done += n), total, false));
      const got = await sha256(buf);
      if (got !== w.sha256) throw new Error(`${w.file}: sha256 ${got} differs from site.json's ${w.sha256} (corrupt or partial copy)`);
      await cache?.put(cacheKey(w), new Response(buf.slice(0), { headers: { 'Content-Type': 'application/octet-stream' } }))
        .catch(() => undefined); // quota: keep working without the cache
    }
    buffers.push(buf);
  }
  if (cache) {
    const keep = new Set(files.map(cacheKey));
    for (const req of await cache.keys()) if (!keep.has(req.url)) await cache.delete(req);
  }
  return { buffers, fromCache };
}
