// Builds the lavapipe compatibility Vulkan layer (native/vk-layer) into build/vk-layer.
// Only Linux needs it; it is skipped with a note elsewhere or when gcc / Vulkan headers are absent
// (then a machine with a real GPU still works; a GPU-less one reports how to fix it).
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const src = join(root, 'native', 'vk-layer', 'lavapipe_compat.c');
const manifest = join(root, 'native', 'vk-layer', 'VkLayer_sam2lora_lavapipe_compat.json');
const outDir = join(root, 'build', 'vk-layer');
const lib = join(outDir, 'libVkLayer_sam2lora_lavapipe_compat.so');

export function buildLayer({ quiet = false } = {}) {
  if (process.platform !== 'linux') {
    if (!quiet) console.log('vk-layer: not needed on this platform');
    return false;
  }
  if (existsSync(lib) && statSync(lib).mtimeMs >= statSync(src).mtimeMs &&
      existsSync(join(outDir, 'VkLayer_sam2lora_lavapipe_compat.json'))) {
    return true;
  }
  if (!existsSync('/usr/include/vulkan/vk_layer.h')) {
    console.warn('vk-layer: skipped, Vulkan headers missing (apt-get install libvulkan-dev)');
    return false;
  }
  mkdirSync(outDir, { recursive: true });
  try {
    execFileSync('gcc', ['-O2', '-Wall', '-Wextra', '-shared', '-fPIC', '-fvisibility=hidden',
      '-o', lib, src], { stdio: 'inherit' });
  } catch {
    console.warn('vk-layer: gcc failed; a GPU-less machine will find no adapter');
    return false;
  }
  copyFileSync(manifest, join(outDir, 'VkLayer_sam2lora_lavapipe_compat.json'));
  if (!quiet) console.log(`vk-layer: built ${lib}`);
  return true;
}

if (import.meta.url === `file://${process.argv[1]}`) buildLayer();
