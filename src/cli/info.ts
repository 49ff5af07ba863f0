/** `sam2-lora info`: which adapter Dawn gives us and what it can do. */
import type { AdapterChoice } from '../gpu/dawn.js';
import { Gpu } from '../gpu/runtime.js';

const KEY_LIMITS = [
  'maxBufferSize',
  'maxStorageBufferBindingSize',
  'maxComputeWorkgroupStorageSize',
  'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupSizeX',
  'maxComputeWorkgroupsPerDimension',
  'maxStorageBuffersPerShaderStage',
];

export async function info(opts: AdapterChoice & { json?: boolean }): Promise<void> {
  const gpu = await Gpu.open(opts);
  try {
    const i = gpu.info;
    if (opts.json) {
      console.log(JSON.stringify(i, null, 2));
      return;
    }
    const mib = (v: number) => `${(v / 2 ** 20).toFixed(0)} MiB`;
    console.log(`adapter       ${i.description || i.device} (${i.vendor}, ${i.architecture})`);
    console.log(`backend       ${i.backend}`);
    console.log(`cpu fallback  ${i.cpuFallback ? `yes: ${i.fallbackReason}` : 'no'}`);
    if (i.cpuFallback) {
      console.log(
        '              lavapipe runs every kernel on the CPU: fine for tests at small shapes, ' +
          'orders of magnitude slower than a GPU for training',
      );
    }
    console.log(`features      ${i.features.join(', ')}`);
    if (i.subgroupMinSize) console.log(`subgroups     ${i.subgroupMinSize}..${i.subgroupMaxSize}`);
    console.log('limits');
    for (const k of KEY_LIMITS) {
      const v = i.limits[k];
      const shown = k.endsWith('Size') && v >= 2 ** 20 ? `${v} (${mib(v)})` : `${v}`;
      console.log(`  ${k.padEnd(36)} ${shown}`);
    }
    if (i.subgroupMatrixConfigs.length > 0) {
      console.log('subgroup matrices (tensor cores)');
      for (const c of i.subgroupMatrixConfigs) console.log(`  ${JSON.stringify(c)}`);
    } else {
      console.log('subgroup matrices  none offered');
    }
  } finally {
    gpu.close();
  }
}
