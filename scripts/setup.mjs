// One-time set-up that `npm test`, `npm run train` and `npm run bench` run first, so a fresh
// machine needs nothing beyond `npm ci`:
//  1. on Linux without a Vulkan loader / driver, installs Mesa lavapipe through apt when root
//     (otherwise prints the exact command);
//  2. builds the lavapipe compatibility layer;
//  3. compiles the TypeScript to dist/ when it is missing or older than src/;
//  4. bundles the web page (dist/web/app.js, for `sam2-lora web`) likewise, when esbuild is there.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildLayer } from './build-layer.mjs';
import { BUNDLE, buildWeb } from './build-web.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const APT = ['mesa-vulkan-drivers', 'libvulkan1', 'libvulkan-dev'];

function hasVulkanLoader() {
  const r = spawnSync('ldconfig', ['-p'], { encoding: 'utf8' });
  return r.status === 0 && r.stdout.includes('libvulkan.so.1');
}

function hasIcd() {
  const dirs = ['/usr/share/vulkan/icd.d', '/etc/vulkan/icd.d', '/usr/local/share/vulkan/icd.d'];
  return dirs.some((d) => existsSync(d) && readdirSync(d).some((f) => f.endsWith('.json')));
}

function ensureVulkan() {
  if (process.platform !== 'linux') return;
  const headers = existsSync('/usr/include/vulkan/vk_layer.h');
  if (hasVulkanLoader() && hasIcd() && headers) return;
  const isRoot = process.getuid?.() === 0;
  const hasApt = existsSync('/usr/bin/apt-get');
  if (isRoot && hasApt) {
    console.log(`setup: installing ${APT.join(' ')} (Vulkan loader, Mesa lavapipe, headers)`);
    execFileSync('apt-get', ['update', '-qq'], { stdio: 'inherit' });
    execFileSync('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...APT], {
      stdio: 'inherit',
      env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
    });
  } else {
    console.warn(
      `setup: Vulkan loader/driver/headers missing; a GPU-less machine needs:\n` +
        `  sudo apt-get install ${APT.join(' ')}`,
    );
  }
}

function newestMtime(dir) {
  let t = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    t = Math.max(t, e.isDirectory() ? newestMtime(p) : statSync(p).mtimeMs);
  }
  return t;
}

function ensureBuilt() {
  const marker = join(root, 'dist', 'gpu', 'runtime.js');
  if (existsSync(marker) && statSync(marker).mtimeMs >= newestMtime(join(root, 'src'))) return;
  console.log('setup: compiling TypeScript (tsc -p tsconfig.build.json)');
  execFileSync(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p',
    join(root, 'tsconfig.build.json')], { stdio: 'inherit' });
}

async function ensureBundle() {
  const newest = Math.max(newestMtime(join(root, 'src')), newestMtime(join(root, 'shaders')));
  if (existsSync(BUNDLE) && statSync(BUNDLE).mtimeMs >= newest) return;
  try {
    await buildWeb({ quiet: true });
  } catch (e) {
    console.warn(`setup: the web page bundle was not built (${e.message.split('\n')[0]})`);
  }
}

ensureVulkan();
buildLayer({ quiet: true });
ensureBuilt();
await ensureBundle();
