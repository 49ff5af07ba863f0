/** The engine on the browser's WebGPU (`navigator.gpu`), with the reason when there is none. */
import { Gpu } from '../../gpu/device.js';

export class NoWebGpuError extends Error {}

/** A readable name of the adapter: "vendor architecture (description)", what the browser says. */
export function adapterName(info: GPUAdapterInfo): string {
  const parts = [info.vendor, info.architecture, info.device].filter(Boolean).join(' ');
  return [parts, info.description].filter(Boolean).join(parts ? ' — ' : '') || 'an unnamed adapter';
}

export async function openBrowserGpu(): Promise<{ gpu: Gpu; name: string }> {
  if (!('gpu' in navigator) || !navigator.gpu) {
    throw new NoWebGpuError('This browser has no WebGPU (navigator.gpu is missing), so it cannot ' +
      'run the model. Use a recent Chrome, Edge or Safari 26 (Firefox 141+ on Windows), and open ' +
      'the page over https:// or http://localhost: WebGPU needs a secure origin.');
  }
  let adapter: GPUAdapter | null;
  try {
    adapter = await navigator.gpu.requestAdapter({ powerPreference: 'high-performance' });
  } catch (e) {
    adapter = null;
    console.warn(`requestAdapter failed: ${(e as Error).message}`);
  }
  if (!adapter) {
    throw new NoWebGpuError('WebGPU is present but the browser offers no GPU adapter (GPU blocked ' +
      'or unsupported, or hardware acceleration off). Check chrome://gpu, enable hardware ' +
      'acceleration, or try another browser.');
  }
  const info = adapter.info;
  const fallback = (info as { isFallbackAdapter?: boolean }).isFallbackAdapter === true ||
    /swiftshader|llvmpipe|lavapipe|software|warp/i.test(`${info.vendor} ${info.architecture} ${info.description}`);
  const gpu = await Gpu.fromAdapter(adapter, {
    cpuFallback: fallback,
    fallbackReason: fallback ? 'the browser offers a CPU rasterizer only' : undefined,
  });
  return { gpu, name: adapterName(info) + (fallback ? ' (runs on the CPU)' : '') };
}
