/** `sam2-lora predict IMG|DIR --adapter A --out DIR`. */
import { closeGpu } from '../gpu/runtime.js';
import { listInputs, predictFiles } from '../predict/predict.js';
import { int, modelFromAdapter, num } from './common.js';

export interface PredictCliOptions {
  adapter: string;
  out: string;
  checkpoint?: string;
  threshold?: string;
  tile?: string;
  overlap?: string;
  gpuAdapter?: string;
  backend?: string;
}

export async function predictCommand(input: string, o: PredictCliOptions): Promise<void> {
  const inputs = listInputs(input);
  const { model, config } = await modelFromAdapter(o.adapter, {
    checkpoint: o.checkpoint,
    adapter: { adapter: o.gpuAdapter, backend: o.backend as never },
  });
  const files = await predictFiles(model, inputs, {
    size: config.size,
    threshold: o.threshold !== undefined ? num('threshold', o.threshold) : config.threshold,
    tile: o.tile ? int('tile', o.tile) : undefined,
    overlap: o.overlap ? int('overlap', o.overlap, 0) : undefined,
    out: o.out,
  });
  for (const f of files) {
    console.log(`${f.input}: ${f.tiles} tile(s), ${(f.crackFraction * 100).toFixed(2)}% crack → ` +
      `${f.mask}, ${f.overlay}`);
  }
  await closeGpu();
}
