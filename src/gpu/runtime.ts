/**
 * The GPU runtime in Node: device.ts's engine on an adapter Dawn opens (dawn.ts), and the
 * process-wide instance. Browsers build the same engine from `navigator.gpu` (src/web/gpu.ts).
 */
import { openAdapter, type AdapterChoice } from './dawn.js';
import { Gpu as DeviceGpu } from './device.js';

export type {
  AdapterFacts, BufferRef, DeviceInfo, KernelTiming, RecordStats, RunArgs,
} from './device.js';
export { UNIFORM_CHUNK } from './device.js';

export class Gpu extends DeviceGpu {
  /** Opens Dawn, picks an adapter (see openAdapter) and requests a device on it. */
  static async open(choice: AdapterChoice = {}): Promise<Gpu> {
    const opened = await openAdapter(choice);
    let gpuRef: GPU | null = opened.gpu;
    return Gpu.fromAdapter(opened.adapter, {
      backend: process.env.SAM2_LORA_BACKEND ?? guessBackend(),
      cpuFallback: opened.cpuFallback,
      fallbackReason: opened.fallbackReason,
      release: () => {
        // Dropping the last reference to the Dawn instance lets Node exit.
        gpuRef = null;
        void gpuRef;
      },
    });
  }
}

function guessBackend(): string {
  if (process.platform === 'darwin') return 'metal';
  if (process.platform === 'win32') return 'd3d12';
  return 'vulkan';
}

let shared: Promise<Gpu> | null = null;

/** The process-wide runtime (opened on first use). */
export function getGpu(choice: AdapterChoice = {}): Promise<Gpu> {
  shared ??= Gpu.open(choice).catch((e) => {
    shared = null;
    throw e;
  });
  return shared;
}

/** Closes the process-wide runtime, if open. */
export async function closeGpu(): Promise<void> {
  if (!shared) return;
  const g = await shared.catch(() => null);
  shared = null;
  if (!g) return;
  await g.shutdown();
}
