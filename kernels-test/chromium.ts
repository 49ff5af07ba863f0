/**
 * Debian's Chromium for the browser tests (or another system browser through SAM2_LORA_CHROMIUM),
 * with the flags that work here: root in a container, offline, a fresh profile each launch.
 */
import { existsSync } from 'node:fs';

export const CHROMIUM = process.env.SAM2_LORA_CHROMIUM ?? '/usr/bin/chromium';
export const HAVE_CHROMIUM = existsSync(CHROMIUM);

/** Appended to each test's title where the browser is missing, so the skip says why. */
export function skipReason(test: string): string {
  if (HAVE_CHROMIUM) return '';
  const why = ` [skipped: ${CHROMIUM} not found; apt-get install chromium or set SAM2_LORA_CHROMIUM]`;
  console.warn(`${test}:${why}`);
  return why;
}

export const BASE_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

/** WebGPU on SwiftShader (Vulkan on the CPU); WebGPU also needs a secure origin (localhost, file://). */
export const WEBGPU_ARGS = ['--enable-unsafe-webgpu', '--enable-features=Vulkan', '--use-vulkan=swiftshader',
  '--use-webgpu-adapter=swiftshader'];
