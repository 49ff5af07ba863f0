/** `sam2-lora info`: which adapter Dawn gives us and what it can do. */
import { Gpu } from '../gpu/runtime.js';
import { defaultPrecision } from '../model/precision.js';
import { type GpuCliOptions, gpuChoice } from './common.js';
import { jsonToStdout, writeJsonTarget, wroteLine } from './output.js';

const KEY_LIMITS = [
  'maxBufferSize',
  'maxStorageBufferBindingSize',
  'maxComputeWorkgroupStorageSize',
  'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupSizeX',
  'maxComputeWorkgroupsPerDimension',
  'maxStorageBuffersPerShaderStage',
];

/** `json`: also write the adapter's description as JSON to this file (`-`: stdout, alone). */
export async function info(opts: GpuCliOptions & { json?: string }): Promise<void> {
  const gpu = await Gpu.open(gpuChoice(opts));
  try {
    const i = gpu.info;
    // What train / eval / predict / encode run at without --precision, and why.
    const precision = defaultPrecision([gpu]);
    const written = opts.json
      ? await writeJsonTarget(opts.json, JSON.stringify({ ...i, precision }, null, 2))
      : null;
    if (jsonToStdout(opts.json)) return;
    const log = console.log;
    const mib = (v: number) => `${(v / 2 ** 20).toFixed(0)} MiB`;
    log(`adapter       ${i.description || i.device} (${i.vendor}, ${i.architecture})`);
    log(`backend       ${i.backend}`);
    log(`cpu fallback  ${i.cpuFallback ? `yes: ${i.fallbackReason}` : 'no'}`);
    if (i.cpuFallback) {
      log(
        '              lavapipe runs every kernel on the CPU: fine for tests at small shapes, ' +
          'orders of magnitude slower than a GPU for training',
      );
    }
    log(`features      ${i.features.join(', ')}`);
    log(`precision     ${precision.precision} by default: ${precision.reason}`);
    if (i.subgroupMinSize) log(`subgroups     ${i.subgroupMinSize}..${i.subgroupMaxSize}`);
    log('limits');
    for (const k of KEY_LIMITS) {
      const v = i.limits[k];
      const shown = k.endsWith('Size') && v >= 2 ** 20 ? `${v} (${mib(v)})` : `${v}`;
      log(`  ${k.padEnd(36)} ${shown}`);
    }
    if (i.subgroupMatrixConfigs.length > 0) {
      log('subgroup matrices (tensor cores)');
      for (const c of i.subgroupMatrixConfigs) log(`  ${JSON.stringify(c)}`);
    } else {
      log('subgroup matrices  none offered');
    }
    if (written) log(wroteLine([written]));
  } finally {
    await gpu.shutdown();
  }
}
