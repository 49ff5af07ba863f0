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
      // A Dawn instance still alive would keep Node running after an error.
      try {
        const { closeGpu } = await import(join(root, 'dist', 'gpu', 'runtime.js'));
        await closeGpu();
      } catch {
        // not built or never opened
      }
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

adapterOpts(
  program
    .command('train')
    .description('fine-tune SAM2 (LoRA + head by default); without --data runs the embedded demo')
    .option('--data <dir>', 'dataset root in the Kaggle layout (<dir>/<split>/images|masks)')
    .option('--images <dir>', 'image folder (with --masks) instead of --data')
    .option('--masks <dir>', 'mask folder paired with --images by file stem')
    .option('--train-split <name>', 'training split', 'train')
    .option('--val-split <name>', 'validation split (10% of train, by hash, when absent)', 'val')
    .option('--test-split <name>', 'split evaluated after training', 'test')
    .option('--out <dir>', 'run directory (default runs/<timestamp>, runs/demo for the demo)')
    .option('--model <size>', 'tiny | small | base_plus | large (nano: a miniature for tests; the demo uses it without SAM2 weights)')
    .option('--mode <mode>', 'head (frozen encoder) | lora | full', 'lora')
    .option('--head <kind>', 'stride16 (reference head) | fpn (all FPN levels) (default stride16; nano demo fpn)')
    .option('--checkpoint <file>', 'official SAM2/SAM2.1 .pt or safetensors (default: download cache)')
    .option('--size <px>', 'model input side, a multiple of 32 (default 512; demo 64)')
    .option('--batch <n>', 'batch size (default 4; demo 2)')
    .option('--epochs <n>', 'epochs (default 10; demo 1)')
    .option('--max-steps <n>', 'stop after this many optimizer steps (demo 40)')
    .option('--lr <lr>', 'LoRA / encoder learning rate (AdamW) (default 1e-4; nano demo 2e-3)')
    .option('--head-lr <lr>', 'head learning rate (Adam) (default 1e-3; nano demo 1e-2)')
    .option('--weight-decay <wd>', 'AdamW weight decay of the LoRA / encoder group', '0.01')
    .option('--warmup <steps>', 'linear warmup steps before cosine decay', '0')
    .option('--clip <norm>', 'gradient-norm clipping (0: off)', '1.0')
    .option('--accum <n>', 'gradient accumulation steps', '1')
    .option('--micro-batch <n>', 'images per forward pass at most (automatic when a batch is too large for the adapter)')
    .option('--loss <loss>', 'dice | bce | bce+dice', 'dice')
    .option('--lora-r <r>', 'LoRA rank', '4')
    .option('--lora-alpha <a>', 'LoRA alpha (scale alpha/r)', '32')
    .option('--lora-dropout <p>', 'LoRA dropout', '0.05')
    .option('--lora-targets <list>', 'qkv,proj,mlp,block_proj', 'qkv,proj,mlp,block_proj')
    .option('--seed <n>', 'seed for weights, data order, augmentation and dropout', '0')
    .option('--no-augment', 'disable flips / rotations / jitter / crops')
    .option('--skip-bad', 'skip unreadable or mismatched samples (and count them)')
    .option('--resume <dir>', 'continue a run exactly from its last/ checkpoint')
    .option('--val-batches <n>', 'validation batches per epoch (default all)')
    .option('--no-eval', 'skip the test-split evaluation after training'),
).action(action(async (opts) => (await lib('cli/train.js')).trainCommand(opts)));

program
  .command('eval')
  .description('metrics (global Dice / IoU / recall / precision) of adapters, side by side')
  .requiredOption('--adapter <dir...>', 'adapter directory (repeat to compare, e.g. head vs LoRA)')
  .option('--data <dir>', 'dataset root (Kaggle layout)')
  .option('--split <name>', 'split to evaluate', 'test')
  .option('--images <dir>', 'image folder (with --masks)')
  .option('--masks <dir>', 'mask folder')
  .option('--checkpoint <file>', 'base SAM2 checkpoint (default: the one the adapter records)')
  .option('--batch <n>', 'batch size', '4')
  .option('--json <file>', 'also write the metrics as JSON')
  .option('--skip-bad', 'skip unreadable samples')
  .option('--gpu-adapter <name>', 'Dawn adapter name')
  .option('--backend <backend>', 'force a WebGPU backend')
  .action(action(async (opts) => (await lib('cli/evaluate.js')).evalCommand(opts)));

program
  .command('predict <input>')
  .description('segment a photo or a folder of photos: mask, probability and overlay PNGs')
  .requiredOption('--adapter <dir>', 'trained adapter directory')
  .option('--out <dir>', 'output folder', 'predictions')
  .option('--checkpoint <file>', 'base SAM2 checkpoint (default: the one the adapter records)')
  .option('--threshold <p>', 'probability threshold (default: the adapter\'s best on validation)')
  .option('--tile <px>', 'tile side in photo pixels (default: the model size)')
  .option('--overlap <px>', 'tile overlap in photo pixels (default tile/8)')
  .option('--gpu-adapter <name>', 'Dawn adapter name')
  .option('--backend <backend>', 'force a WebGPU backend')
  .action(action(async (input, opts) => (await lib('cli/predict.js')).predictCommand(input, opts)));

program
  .command('merge')
  .description('fold LoRA into the encoder and write a full checkpoint (.safetensors or .pt)')
  .requiredOption('--adapter <dir>', 'trained adapter directory')
  .requiredOption('--out <file>', 'output .safetensors or .pt')
  .option('--checkpoint <file>', 'base SAM2 checkpoint (default: the one the adapter records)')
  .action(action(async (opts) => (await lib('cli/merge.js')).mergeCommand(opts)));

program
  .command('export')
  .description('write the adapter in PEFT layout (adapter_model.safetensors + adapter_config.json)')
  .requiredOption('--adapter <dir>', 'trained adapter directory')
  .requiredOption('--out <dir>', 'output folder')
  .action(action(async (opts) => (await lib('cli/merge.js')).exportCommand(opts)));

program
  .command('encode')
  .description('run the image encoder and write its features (fidelity checks against SAM2)')
  .option('--checkpoint <file>', 'SAM2 checkpoint (.pt or .safetensors)')
  .option('--model <size>', 'tiny | small | base_plus | large', 'tiny')
  .option('--size <px>', 'input side, a multiple of 32', '1024')
  .option('--image <file>', 'image to encode (resized, ImageNet-normalised)')
  .option('--input-tensor <file>', 'safetensors with an exact [1,3,S,S] tensor named input')
  .requiredOption('--out <file>', 'output safetensors')
  .action(action(async (opts) => (await lib('cli/encode.js')).encodeCommand(opts)));

const weights = program.command('weights').description('official SAM2.1 checkpoints');
weights
  .command('download <size>')
  .description('download tiny | small | base_plus | large into the cache and verify it')
  .option('--cache-dir <dir>', 'cache directory (default $SAM2_LORA_CACHE or ~/.cache/sam2-lora)')
  .option('--force', 'download again even if cached')
  .action(action(async (size, opts) => {
    const { weightsDownload } = await lib('cli/weights.js');
    const path = await weightsDownload(size, { cacheDir: opts.cacheDir, force: opts.force });
    console.log(path);
  }));

adapterOpts(
  program
    .command('bench')
    .description('benchmark the kernels and the training step (writes bench/results/)')
    .option('--quick', 'short run (small shapes, few repetitions)')
    .option('--out <dir>', 'report folder', 'bench/results')
    .option('--sizes <list>', 'input sizes, e.g. 256,512,1024')
    .option('--filter <text>', 'only kernels whose name contains this'),
).action(action(async (opts) => {
  const { bench } = await lib('cli/bench.js');
  await bench({
    ...opts,
    sizes: opts.sizes ? opts.sizes.split(',').map(Number) : undefined,
  });
}));

await program.parseAsync(process.argv);
