/**
 * TensorFlow.js's WebGPU backend as a peer, on OUR Dawn device: the backend is constructed from
 * gpu.device and gpu.adapter.info (registered under the name 'webgpu', whose kernels tfjs
 * registers), so both sides run on the same adapter, queue and limits. tfjs checks for
 * navigator.gpu before it registers anything, so a navigator.gpu that hands out our adapter is
 * installed first when the process has none.
 */
import type { Gpu } from '#src/gpu/runtime.js';

type Tf = typeof import('@tensorflow/tfjs-core');
export type TfTensor = import('@tensorflow/tfjs-core').Tensor;

export interface TfPeer {
  tf: Tf;
  version: string;
  /** GPU ms of fn's kernels (timestamp queries) or null when tfjs could not measure them. */
  time(fn: () => TfTensor): Promise<number | null>;
  /**
   * A fresh backend on the same device: disposing the old one destroys every buffer its pool
   * kept, so cases of different sizes do not pile up tfjs's cached buffers in GPU memory.
   */
  reset(): Promise<void>;
  close(): void;
}

export async function openTfjs(gpu: Gpu): Promise<TfPeer> {
  const g = globalThis as { navigator?: { gpu?: unknown } };
  if (!g.navigator) {
    Object.defineProperty(globalThis, 'navigator', {
      value: {}, configurable: true, writable: true,
    });
  }
  const nav = (globalThis as unknown as { navigator: { gpu?: unknown } }).navigator;
  if (!nav.gpu) {
    nav.gpu = {
      requestAdapter: async () => gpu.adapter,
      getPreferredCanvasFormat: () => 'rgba8unorm',
      wgslLanguageFeatures: new Set(),
    };
  }
  const tf: Tf = await import('@tensorflow/tfjs-core');
  const wg = await import('@tensorflow/tfjs-backend-webgpu');
  // Small tensors would otherwise run on tfjs's CPU backend: keep every op on the GPU.
  tf.env().set('WEBGPU_CPU_FORWARD', false);
  const install = async () => {
    // Replace the auto-registered factory (which would open a second device) with ours.
    if (tf.findBackendFactory('webgpu')) tf.removeBackend('webgpu');
    tf.registerBackend('webgpu', () => new wg.WebGPUBackend(gpu.device, gpu.adapter.info), 100);
    if (!(await tf.setBackend('webgpu'))) throw new Error('tfjs: the webgpu backend did not start');
    await tf.ready();
  };
  await install();
  return {
    tf,
    version: tf.version_core,
    async time(fn) {
      const info = await tf.time(() => {
        tf.tidy(fn).dispose();
      });
      return typeof info.kernelMs === 'number' && info.kernelMs > 0 ? info.kernelMs : null;
    },
    reset: install,
    close() {
      // Frees tfjs's buffers; the device is ours and stays open (WebGPUBackend.dispose does not
      // destroy it).
      tf.disposeVariables();
      tf.removeBackend('webgpu');
    },
  };
}
