/**
 * Creates Dawn through the `webgpu` package and picks an adapter. This is the only module that
 * imports `webgpu`. On a machine without a GPU it falls back to Mesa's lavapipe through our
 * compatibility Vulkan layer (native/vk-layer), which Dawn would otherwise refuse.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { create, globals } from 'webgpu';
import { NoAdapterError } from './errors.js';
import { PACKAGE_ROOT } from './package-root.js';

export { PACKAGE_ROOT };
export const LAYER_DIR = join(PACKAGE_ROOT, 'build', 'vk-layer');
export const LAYER_NAME = 'VK_LAYER_SAM2LORA_lavapipe_compat';
const LAYER_MANIFEST = join(LAYER_DIR, 'VkLayer_sam2lora_lavapipe_compat.json');

export type Backend = 'vulkan' | 'metal' | 'd3d12' | 'd3d11' | 'opengl' | 'opengles' | 'null';

export interface AdapterChoice {
  /**
   * Dawn's adapter name (as `sam2-lora info` prints it; the CLI's `--gpu`); `SAM2_LORA_GPU` when
   * absent (`SAM2_LORA_ADAPTER`: its deprecated alias).
   */
  adapter?: string;
  /** Force a backend; `SAM2_LORA_BACKEND` when absent. */
  backend?: Backend;
  /** Never fall back to the CPU rasterizer (lavapipe). */
  noCpuFallback?: boolean;
}

export interface OpenedAdapter {
  gpu: GPU;
  adapter: GPUAdapter;
  /** True when the adapter is a CPU rasterizer (lavapipe, SwiftShader, WARP). */
  cpuFallback: boolean;
  /** Why we ended up on the CPU, when we did. */
  fallbackReason?: string;
  usedLayer: boolean;
}

let globalsInstalled = false;

function installGlobals(): void {
  if (globalsInstalled) return;
  // GPUBufferUsage, GPUMapMode, ... are referenced by name in WebGPU code.
  for (const [k, v] of Object.entries(globals)) {
    if (!(k in globalThis)) (globalThis as Record<string, unknown>)[k] = v;
  }
  globalsInstalled = true;
}

function dawnFlags(choice: AdapterChoice): string[] {
  const flags = [
    // allow_unsafe_apis exposes chromium-experimental-subgroup-matrix (tensor cores);
    // Dawn hides shader-f16 on NVIDIA Vulkan without vulkan_enable_f16_on_nvidia.
    'enable-dawn-features=allow_unsafe_apis,vulkan_enable_f16_on_nvidia',
  ];
  if (choice.backend) flags.push(`backend=${choice.backend}`);
  if (choice.adapter) flags.push(`adapter=${choice.adapter}`);
  return flags;
}

export function isCpuAdapter(info: GPUAdapterInfo): boolean {
  const text = `${info.vendor} ${info.architecture} ${info.device} ${info.description}`;
  return (
    (info as { isFallbackAdapter?: boolean }).isFallbackAdapter === true ||
    /llvmpipe|lavapipe|swiftshader|software|warp/i.test(text)
  );
}

/** Where a forced choice came from, for messages. */
function forcedText(choice: AdapterChoice): string {
  const parts: string[] = [];
  if (choice.backend) parts.push(`backend '${choice.backend}' (--backend or SAM2_LORA_BACKEND)`);
  if (choice.adapter) parts.push(`GPU '${choice.adapter}' (--gpu or SAM2_LORA_GPU)`);
  return parts.join(' and ');
}

/**
 * The adapters Dawn can open here ("vulkan: NVIDIA ..."), from the list dawn.node prints when a
 * named adapter is absent (it has no other way to enumerate them).
 */
export async function availableAdapters(): Promise<string[]> {
  // Keep Mesa quiet about a missing XDG_RUNTIME_DIR on headless machines (as openAdapter).
  process.env.XDG_RUNTIME_DIR ??= '/tmp';
  try {
    const gpu = create([...dawnFlags({}), 'adapter=\u0001sam2-lora: list adapters']) as GPU;
    const a = await gpu.requestAdapter({ powerPreference: 'high-performance' });
    return a ? [`${a.info.description || a.info.device || 'an adapter'}`] : [];
  } catch (e) {
    return String((e as Error).message).split('\n')
      .map((l) => /backend: '([^']*)', name: '([^']*)'/.exec(l))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => `${m[1]}: ${m[2]}`);
  }
}

async function notFound(choice: AdapterChoice, detail?: string): Promise<NoAdapterError> {
  const list = await availableAdapters();
  return new NoAdapterError(
    `no GPU adapter matches the forced ${forcedText(choice)}` +
      (detail ? ` (${detail.split('\n')[0]})` : '') + '. ' +
      (list.length ? `Adapters here: ${list.join('; ')}` : 'Dawn finds no adapter here at all') +
      '. Backends: vulkan, metal, d3d12, d3d11, opengl, opengles, null.',
  );
}

async function tryCreate(choice: AdapterChoice): Promise<{ gpu: GPU; adapter: GPUAdapter } | null> {
  const forced = !!(choice.adapter || choice.backend);
  let gpu: GPU;
  try {
    gpu = create(dawnFlags(choice)) as GPU;
  } catch (e) {
    // dawn.node throws (and lists backends) when a named backend does not exist.
    if (forced) throw await notFound(choice, (e as Error).message);
    throw new NoAdapterError((e as Error).message);
  }
  let adapter: GPUAdapter | null;
  try {
    adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
  } catch (e) {
    // ... and rejects requestAdapter when a named adapter does not exist.
    if (forced) throw await notFound(choice, (e as Error).message);
    throw new NoAdapterError((e as Error).message);
  }
  return adapter ? { gpu, adapter } : null;
}

function enableCompatLayer(): void {
  const sep = process.platform === 'win32' ? ';' : ':';
  const paths = process.env.VK_LAYER_PATH ? process.env.VK_LAYER_PATH.split(sep) : [];
  if (!paths.includes(LAYER_DIR)) process.env.VK_LAYER_PATH = [LAYER_DIR, ...paths].join(sep);
  const layers = process.env.VK_INSTANCE_LAYERS ? process.env.VK_INSTANCE_LAYERS.split(sep) : [];
  if (!layers.includes(LAYER_NAME)) {
    process.env.VK_INSTANCE_LAYERS = [...layers, LAYER_NAME].join(sep);
  }
}

let warnedDeprecatedEnv = false;

/**
 * The GPU named by the environment: `SAM2_LORA_GPU`, else the deprecated `SAM2_LORA_ADAPTER`
 * (with a warning, once per process: `--adapter` now always means a trained adapter folder).
 */
export function gpuFromEnv(
  env: NodeJS.ProcessEnv = process.env,
  warn: (msg: string) => void = console.warn,
): string | undefined {
  if (env.SAM2_LORA_GPU) return env.SAM2_LORA_GPU;
  const old = env.SAM2_LORA_ADAPTER;
  if (!old) return undefined;
  if (!warnedDeprecatedEnv) {
    warnedDeprecatedEnv = true;
    warn('sam2-lora: SAM2_LORA_ADAPTER is deprecated: set SAM2_LORA_GPU (or pass --gpu) instead');
  }
  return old;
}

/**
 * Finds an adapter: the user's choice or the high-performance one; if Dawn finds none on Linux,
 * retries with the lavapipe compatibility layer enabled (only then, so a real GPU is never
 * touched by it).
 */
export async function openAdapter(choice: AdapterChoice = {}): Promise<OpenedAdapter> {
  installGlobals();
  const full: AdapterChoice = {
    adapter: choice.adapter ?? gpuFromEnv(),
    backend: choice.backend ?? ((process.env.SAM2_LORA_BACKEND || undefined) as Backend | undefined),
    noCpuFallback: choice.noCpuFallback,
  };
  // Keep Mesa quiet about a missing XDG_RUNTIME_DIR on headless machines.
  process.env.XDG_RUNTIME_DIR ??= '/tmp';
  const layerAlready = (process.env.VK_INSTANCE_LAYERS ?? '').includes(LAYER_NAME);
  const first = await tryCreate(full);
  if (first) {
    const cpu = isCpuAdapter(first.adapter.info);
    return {
      ...first,
      cpuFallback: cpu,
      usedLayer: layerAlready,
      fallbackReason: cpu ? 'the only adapter Dawn offers is a CPU rasterizer' : undefined,
    };
  }
  const canLayer = process.platform === 'linux' && full.backend !== 'metal' && full.backend !== 'd3d12';
  if (full.adapter || full.backend) {
    if (!canLayer || layerAlready || full.noCpuFallback) throw await notFound(full);
  }
  if (full.noCpuFallback || !canLayer || layerAlready) {
    throw new NoAdapterError(
      'Dawn offered no adapter. Install a Vulkan, Metal or D3D12 driver for your GPU, or on a ' +
        'GPU-less Linux machine Mesa lavapipe (apt-get install mesa-vulkan-drivers libvulkan1).',
    );
  }
  if (!existsSync(LAYER_MANIFEST)) {
    throw new NoAdapterError(
      `no GPU adapter, and the lavapipe compatibility layer is not built (${LAYER_MANIFEST} ` +
        'missing). Run `npm run build:layer` (needs gcc and libvulkan-dev).',
    );
  }
  enableCompatLayer();
  const second = await tryCreate(full);
  if (!second && (full.adapter || full.backend)) throw await notFound(full);
  if (!second) {
    throw new NoAdapterError(
      'no GPU adapter, and none with the lavapipe compatibility layer either. Install ' +
        'mesa-vulkan-drivers and libvulkan1 (CPU) or your GPU vendor driver.',
    );
  }
  return {
    ...second,
    cpuFallback: true,
    usedLayer: true,
    fallbackReason:
      'no GPU adapter was found, so Dawn runs on Mesa lavapipe (Vulkan on the CPU) through the ' +
      'compatibility layer',
  };
}
