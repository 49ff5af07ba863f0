#!/usr/bin/env node
// The sam2-lora CLI. Thin on purpose: it parses flags and imports the compiled library (dist/)
// only for the command that runs, so `--help` starts instantly.
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, Option } from 'commander';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

async function lib(path) {
  const file = join(root, 'dist', path);
  if (!existsSync(file)) {
    throw new UserError(`the library is not built (${file} missing): run \`npm run build\``);
  }
  return import(file);
}

class UserError extends Error {}

/** Runs a command; user-facing errors print one line, never a stack trace. */
function action(fn) {
  return async (...args) => {
    try {
      await fn(...args);
    } catch (e) {
      const debug = process.env.SAM2_LORA_DEBUG;
      console.error(`sam2-lora: ${debug ? e.stack : e.message}`);
      process.exitCode = 1;
    }
  };
}

const adapterOpts = (cmd) =>
  cmd
    .option('--adapter <name>', 'Dawn adapter name (see `sam2-lora info`); env SAM2_LORA_ADAPTER')
    .addOption(
      new Option('--backend <backend>', 'force a WebGPU backend; env SAM2_LORA_BACKEND').choices([
        'vulkan', 'metal', 'd3d12', 'd3d11', 'opengl', 'opengles',
      ]),
    );

const program = new Command()
  .name('sam2-lora')
  .description('Fine-tune SAM2\'s Hiera encoder with LoRA for crack segmentation, on WebGPU')
  .version('0.1.0');

adapterOpts(program.command('info'))
  .description('show the WebGPU adapter, its features and limits')
  .option('--json', 'machine-readable output')
  .action(action(async (opts) => (await lib('cli/info.js')).info(opts)));

await program.parseAsync(process.argv);
