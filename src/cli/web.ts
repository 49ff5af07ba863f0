/**
 * `sam2-lora web --adapter A --out DIR`: export a static site that segments photos in the browser
 * (src/web/export.ts). `sam2-lora web --serve DIR [--port N]`: serve one on localhost.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { closeGpu } from '../gpu/runtime.js';
import { exportSite } from '../web/export.js';
import { MANIFEST_FILE, type WeightsDtype } from '../web/manifest.js';
import { serveSite } from '../web/serve.js';
import { type GpuCliOptions, UsageError, gpuChoice, int } from './common.js';
import { wroteLine } from './output.js';

export interface WebCliOptions extends GpuCliOptions {
  adapter?: string;
  out?: string;
  checkpoint?: string;
  weightsDtype?: string;
  tile?: string;
  overlap?: string;
  force?: boolean;
  serve?: string;
  port?: string;
}

const mb = (b: number) => `${(b / 1e6).toFixed(1)} MB`;

export async function webCommand(o: WebCliOptions): Promise<void> {
  if (o.serve !== undefined) {
    if (o.adapter || o.out) throw new UsageError('web: --serve DIR serves an exported site; export with --adapter/--out separately');
    if (!existsSync(join(o.serve, MANIFEST_FILE))) {
      throw new UsageError(`web: ${o.serve} is not a web export (no ${MANIFEST_FILE}): run ` +
        `\`sam2-lora web --adapter A --out ${o.serve}\` first`);
    }
    const s = await serveSite(o.serve, int('port', o.port ?? '8080', 0));
    console.log(`serving ${o.serve} at ${s.url} (Ctrl-C stops)`);
    await new Promise<void>((ok) => process.once('SIGINT', () => void s.close().then(ok)));
    return;
  }
  if (!o.adapter || !o.out) throw new UsageError('web: give --adapter A and --out DIR (or --serve DIR)');
  const dtype = (o.weightsDtype ?? 'f32') as WeightsDtype;
  if (dtype !== 'f16' && dtype !== 'f32') throw new UsageError(`--weights-dtype must be f16 or f32, got ${dtype}`);
  try {
    const r = await exportSite({
      adapter: o.adapter,
      out: o.out,
      checkpoint: o.checkpoint,
      weightsDtype: dtype,
      tile: o.tile !== undefined ? int('tile', o.tile) : undefined,
      overlap: o.overlap !== undefined ? int('overlap', o.overlap, 0) : undefined,
      force: o.force,
      gpu: gpuChoice(o),
    });
    const m = r.manifest;
    console.log(`web site for ${m.adapter.file} in ${o.out}: SAM2 ${m.segmenter.model}, input ${m.size}px, ` +
      `tiles ${m.tiling.tile}px (overlap ${m.tiling.overlap}), threshold ${m.threshold}; weights ` +
      `${dtype} ${mb(m.weights.encoder.bytes + m.weights.head.bytes)}` +
      (r.f16MaxError !== undefined ? ` (largest f16 rounding ${r.f16MaxError.toExponential(2)})` : ''));
    console.log(`serve it: sam2-lora web --serve ${o.out}   (or any static host)`);
    console.log(wroteLine(r.files));
  } finally {
    await closeGpu();
  }
}
