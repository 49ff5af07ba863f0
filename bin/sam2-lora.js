#!/usr/bin/env node
// The sam2-lora CLI. Thin on purpose: it parses flags and imports the compiled library (dist/)
// only for the command that runs (eagerly only its constants, dist/cli/defaults.js), so `--help`
// starts instantly.
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Command, InvalidArgumentError, Option } from 'commander';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

// The defaults the commands use, so that the help text shows exactly them (a constants-only
// module: importing it costs nothing).
const defaultsFile = join(root, 'dist', 'cli', 'defaults.js');
if (!existsSync(defaultsFile)) {
  console.error(`sam2-lora: the library is not built (${defaultsFile} missing): run \`npm run build\``);
  process.exit(1);
}
const D = await import(pathToFileURL(defaultsFile).href);

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

/** `--gpus`: all, a count, or a comma list of adapter indices (resolved when training starts). */
function gpusSpec(v) {
  const spec = v.trim();
  if (!/^(all|[1-9]\d*|\d+(,\d+)*,?)$/.test(spec)) {
    throw new InvalidArgumentError('give all, a device count (2) or adapter indices (0,1)');
  }
  return spec;
}

/** A non-empty GPU name (Dawn matches it against the adapters `sam2-lora info` lists). */
function gpuName(v) {
  const name = v.trim();
  if (!name) throw new InvalidArgumentError('give the adapter name `sam2-lora info` prints');
  return name;
}

/**
 * `--gpu` and `--backend`, defined once for every command that opens the GPU. (`--adapter`
 * always means a trained adapter folder.)
 */
const gpuOptions = (cmd) =>
  cmd
    .addOption(new Option('--gpu <name>', 'GPU to use: a Dawn adapter name as `sam2-lora info` ' +
      'prints it; env SAM2_LORA_GPU (SAM2_LORA_ADAPTER: deprecated alias)').argParser(gpuName))
    .addOption(new Option('--backend <backend>', 'force a WebGPU backend; env SAM2_LORA_BACKEND')
      .choices(D.GPU_BACKENDS));

/** `--precision`, for every command that runs the model. */
const precisionOption = (dflt = 'f16 where the adapter offers shader-f16, see `sam2-lora info`') =>
  new Option('--precision <p>', 'f16: mixed precision (f16 encoder weights and activations, f32 ' +
    `head, LoRA, loss and optimizer); f32: all f32 (default: ${dflt})`).choices(D.PRECISIONS);

/** A --json target: a file path, or `-` for stdout (human-readable text then goes to stderr). */
const jsonHelp = (what) => `write ${what} as JSON to FILE (\`-\`: stdout, the text then on stderr)`;

/** A regular expression given on the command line, checked now (not after minutes of work). */
function regex(v) {
  try {
    new RegExp(v, 'i');
  } catch (e) {
    throw new InvalidArgumentError(`not a regular expression: ${e.message}`);
  }
  return v;
}

const program = new Command()
  .name('sam2-lora')
  .description('Fine-tune SAM2\'s Hiera encoder with LoRA for crack segmentation, on WebGPU')
  .version('0.1.0');

gpuOptions(program.command('info'))
  .description('show the WebGPU adapter, its features and limits')
  .option('--json <file>', jsonHelp("the adapter's description"))
  .action(action(async (opts) => (await lib('cli/info.js')).info(opts)));

const T = D.TRAIN_DEFAULTS;
const DEMO = D.DEMO_DEFAULTS;
const DEMO2 = D.DEMO_SAM2_DEFAULTS;
/** `default X; demo Y` for a train option (demo: nano without SAM2 weights, then with them). */
const demoText = (k) => `default ${T[k]}; demo ${DEMO[k]}` +
  (DEMO2[k] !== undefined && DEMO2[k] !== DEMO[k] ? `, with SAM2 weights ${DEMO2[k]}` : '');

gpuOptions(
  program
    .command('train')
    .description('fine-tune SAM2 (LoRA + head by default); without --data runs the embedded demo')
    .option('--data <dir>', 'dataset root in the Kaggle layout (<dir>/<split>/images|masks)')
    .option('--images <dir>', 'image folder (with --masks) instead of --data')
    .option('--masks <dir>', 'mask folder paired with --images by file stem')
    .option('--train-split <name>', 'training split', D.SPLITS.train)
    .option('--val-split <name>', 'validation split (10% of train, by hash, when absent)', D.SPLITS.val)
    .option('--test-split <name>', 'split evaluated (and reported) after training; `eval --test-split` names it alike', D.SPLITS.test)
    .option('--out <dir>', 'run directory (default runs/<timestamp>, runs/demo for the demo)')
    .addOption(new Option('--model <size>', `encoder (default ${T.model}; nano: tiny's structure in miniature, the demo's without SAM2 weights)`).choices(D.MODEL_SIZES))
    .addOption(new Option('--mode <mode>', 'head (frozen encoder) | lora | full').choices(D.TRAIN_MODES).default(T.mode))
    .addOption(new Option('--head <kind>', `stride16 (reference head) | fpn (all FPN levels) (${demoText('head')})`).choices(D.HEAD_KINDS))
    .option('--checkpoint <file>', 'official SAM2/SAM2.1 .pt or safetensors (default: download cache)')
    .option('--size <px>', `model input side, a multiple of 32 (${demoText('size')})`)
    .option('--batch <n>', `batch size (${demoText('batch')})`)
    .option('--epochs <n>', `epochs (default ${T.epochs}; the demo stops at --max-steps ${DEMO.maxSteps})`)
    .option('--max-steps <n>', `stop after this many optimizer steps (default: none; demo ${DEMO.maxSteps}, with SAM2 weights ${DEMO2.maxSteps})`)
    .option('--lr <lr>', `LoRA / encoder learning rate (AdamW) (${demoText('lr')})`)
    .option('--head-lr <lr>', `head learning rate (Adam) (${demoText('headLr')})`)
    .option('--weight-decay <wd>', 'AdamW weight decay of the LoRA / encoder group', String(T.weightDecay))
    .option('--warmup <steps>', 'linear warmup steps before cosine decay', String(T.warmup))
    .option('--clip <norm>', 'gradient-norm clipping (0: off)', String(T.clip))
    .option('--accum <n>', 'gradient accumulation steps', String(T.accum))
    .option('--micro-batch <n>', 'images per forward pass at most (automatic when a batch is too large for the adapter)')
    .addOption(new Option('--gpus <devices>', 'data parallel: one model replica per device, each ' +
      'taking a shard of every batch: all (every adapter), a count (2: devices beyond the adapters ' +
      'share one, for testing), or adapter indices (0,1)').argParser(gpusSpec))
    .addOption(new Option('--loss <loss>', `training loss (${demoText('loss')})`).choices(D.LOSSES))
    .option('--lora-r <r>', 'LoRA rank', String(T.loraR))
    .option('--lora-alpha <a>', 'LoRA alpha (scale alpha/r)', String(T.loraAlpha))
    .option('--lora-dropout <p>', 'LoRA dropout', String(T.loraDropout))
    .option('--lora-targets <list>', 'layers LoRA adapts, comma-separated from qkv,proj,mlp,block_proj', T.loraTargets)
    .option('--seed <n>', 'seed for weights, data order, augmentation and dropout', String(T.seed))
    .option('--no-augment', `disable flips / rotations / jitter / crops (the demo trains ${DEMO.augment ? 'with' : 'without'} them)`)
    .option('--skip-bad', 'skip unreadable or mismatched samples (and count them)')
    .option('--resume <dir>', 'continue a run exactly from its last/ checkpoint (writes into it unless --out; a larger --epochs / --max-steps extends it)')
    .option('--force', 'replace the run an existing --out folder holds')
    .option('--max-bad-steps <n>', 'stop after this many non-finite steps in a row (each is skipped)', String(T.maxBadSteps))
    .option('--val-batches <n>', 'validation batches per epoch (default all)')
    .option('--no-eval', 'skip the test-split evaluation and report after training')
    .addOption(precisionOption()),
).action(action(async (opts, cmd) => {
  // The flags typed (not defaults): a resume refuses those that contradict the run.
  const given = cmd.options.map((o) => o.attributeName()).filter((k) => cmd.getOptionValueSource(k) === 'cli');
  await (await lib('cli/train.js')).trainCommand(opts, given);
}));

gpuOptions(program.command('eval'))
  .description('metrics (global Dice / IoU / recall / precision) of adapters, side by side')
  .requiredOption('--adapter <dir...>', 'trained adapter directory (repeat to compare, e.g. head vs LoRA)')
  .option('--data <dir>', 'dataset root (Kaggle layout)')
  .option('--test-split <name>', `split evaluated, as \`train --test-split\` names it (default ${D.SPLITS.test})`)
  .option('--split <name>', 'alias of --test-split')
  .option('--images <dir>', 'image folder (with --masks)')
  .option('--masks <dir>', 'mask folder')
  .option('--checkpoint <file>', 'base SAM2 checkpoint (default: the one the adapter records)')
  .option('--batch <n>', `batch size (default ${D.EVAL_DEFAULTS.batch})`)
  .option('--json <file>', jsonHelp('the metrics'))
  .option('--skip-bad', 'skip unreadable samples')
  .option('--report <dir>', 'also write an HTML report there (index.html, metrics.json, img/): tables, threshold curves, training curves, gallery worst-first')
  .option('--native-res', "also score at each photo's own resolution (probabilities upsampled bilinearly)")
  .option('--gallery <n>', `report gallery: the N worst images (default ${D.EVAL_DEFAULTS.gallery}; 0: none)`)
  .addOption(precisionOption())
  .action(action(async (opts) => (await lib('cli/evaluate.js')).evalCommand(opts)));

gpuOptions(program.command('predict <input>'))
  .description('segment a photo or a folder of photos: mask, probability and overlay PNGs')
  .requiredOption('--adapter <dir>', 'trained adapter directory')
  .option('--out <dir>', 'output folder', D.PREDICT_DEFAULTS.out)
  .option('--checkpoint <file>', 'base SAM2 checkpoint (default: the one the adapter records)')
  .option('--threshold <p>', 'probability threshold (default: the adapter\'s best on validation)')
  .option('--tile <px>', 'tile side in photo pixels (default: the model size)')
  .option('--overlap <px>', 'tile overlap in photo pixels (default tile/8)')
  .option('--skip-bad', 'skip unreadable photos (and count them) instead of stopping')
  .option('--queue <url>', 'enqueue one job per photo on Redis (redis://host:port/db) for `sam2-lora worker`s instead of predicting here; paths must be the same on every worker')
  .option('--wait', 'with --queue: wait for the jobs with a progress bar; exit non-zero listing the photos that failed')
  .option('--attempts <n>', 'with --queue: attempts per photo before it lands in the failed set (default 3; env SAM2_LORA_QUEUE_ATTEMPTS)')
  .addOption(precisionOption())
  .action(action(async (input, opts) => (await lib('cli/predict.js')).predictCommand(input, opts)));

gpuOptions(program.command('worker'))
  .description('serve `predict --queue` jobs: load each adapter once, predict photos, write outputs atomically; stop with Ctrl-C / SIGTERM (the active job finishes)')
  .requiredOption('--queue <url>', 'Redis URL (redis://host:port/db)')
  .option('--concurrency <n>', 'jobs in flight (file work overlaps; forward passes run one at a time)', '1')
  .option('--lock-ms <ms>', 'job lock lifetime: a dead worker\'s job goes back to the queue after it (env SAM2_LORA_QUEUE_LOCK_MS, default 30000)')
  .option('--stalled-ms <ms>', 'how often to look for jobs of dead workers (env SAM2_LORA_QUEUE_STALLED_MS, default 30000)')
  .action(action(async (opts) => (await lib('cli/worker.js')).workerCommand(opts)));

program
  .command('queue')
  .description('the prediction queue')
  .command('status <url>')
  .description('job counts (waiting, active, completed, failed, delayed), connected workers, and the failed photos with their errors')
  .option('--limit <n>', 'failed photos listed at most (latest first)', '50')
  .option('--json <file>', jsonHelp('the status'))
  .action(action(async (url, opts) => (await lib('cli/queue.js')).queueStatusCommand(url, opts)));

gpuOptions(program.command('merge'))
  .description('fold LoRA into the encoder and write a drop-in SAM2 checkpoint (.pt or .safetensors: every base key kept, the encoder replaced; the head in <out>.head.safetensors)')
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

gpuOptions(program.command('web'))
  .description('write a static web site that segments photos in the browser on WebGPU (same kernels; LoRA folded in), or serve one on localhost')
  .option('--adapter <dir>', 'trained adapter directory (export)')
  .option('--out <dir>', 'site folder to write (export)')
  .option('--checkpoint <file>', 'base SAM2 checkpoint (default: the one the adapter records)')
  .addOption(new Option('--weights-dtype <dtype>', 'weights as f32 (the page equals `predict`) or f16 (half the download; widened to f32 in the page)').choices(['f32', 'f16']).default('f32'))
  .option('--tile <px>', 'tile side in photo pixels (default: the model size, as predict)')
  .option('--overlap <px>', 'tile overlap in photo pixels (default: tile / 8, as predict)')
  .option('--force', 'write into a non-empty folder that is not a previous web export')
  .option('--serve <dir>', 'serve an exported site on http://localhost instead')
  .option('--port <n>', 'port for --serve (0: any free port)', '8080')
  .action(action(async (opts) => (await lib('cli/web.js')).webCommand(opts)));

gpuOptions(program.command('encode'))
  .description('run the image encoder and write its features (fidelity checks against SAM2)')
  .option('--checkpoint <file>', 'SAM2 checkpoint (.pt or .safetensors)')
  .addOption(new Option('--model <size>', 'encoder size').choices(D.MODEL_SIZES).default(D.ENCODE_DEFAULTS.model))
  .option('--size <px>', 'input side, a multiple of 32', String(D.ENCODE_DEFAULTS.size))
  .option('--image <file>', 'image to encode (resized, ImageNet-normalised)')
  .option('--input-tensor <file>', 'safetensors with an exact [1,3,S,S] tensor named input')
  .requiredOption('--out <file>', 'output safetensors')
  .addOption(precisionOption('f32, the precision of fidelity checks'))
  .action(action(async (opts) => (await lib('cli/encode.js')).encodeCommand(opts)));

const weights = program.command('weights').description('official SAM2.1 checkpoints');
weights
  .command('download <size>')
  .description('download tiny | small | base_plus | large into the cache and verify it')
  .option('--cache-dir <dir>', 'cache directory (default $SAM2_LORA_CACHE or ~/.cache/sam2-lora)')
  .option('--force', 'download again even if cached')
  .action(action(async (size, opts) => {
    const { weightsDownloadCommand } = await lib('cli/weights.js');
    await weightsDownloadCommand(size, { cacheDir: opts.cacheDir, force: opts.force });
  }));

gpuOptions(
  program
    .command('bench')
    .description('benchmark the kernels and the training step (writes bench/results/)')
    .option('--quick', 'short run (small shapes, few repetitions)')
    .option('--out <dir>', `report folder (default ${join(root, 'bench', 'results')}, from any working directory)`)
    .option('--sizes <list>', 'input sizes, e.g. 256,512,1024')
    .option('--filter <regex>', 'only rows whose id matches this regular expression (case-insensitive), e.g. \'^matmul/\' or \'^e2e/\'', regex)
    .option('--e2e-sizes <list>', 'end-to-end input sizes, e.g. 128,256 (default by adapter)')
    .option('--e2e-batch <list>', 'end-to-end batches, e.g. 1,4 (default by adapter)')
    .option('--no-peer', 'skip the PyTorch peer (bench/peer/pytorch_step.py)')
    .addOption(new Option('--precision <p>', 'encoder precision of the end-to-end rows (the PyTorch peer is fp32)').choices(['f32', 'f16']).default('f32'))
    .option('--no-tfjs', 'skip the TensorFlow.js peer'),
).action(action(async (opts) => {
  const { bench } = await lib('cli/bench.js');
  const list = (v) => (v ? v.split(',').map(Number) : undefined);
  const { peer, tfjs, e2eBatch, gpu, ...rest } = opts;
  await bench({
    ...rest,
    adapter: gpu,
    sizes: list(opts.sizes),
    e2eSizes: list(opts.e2eSizes),
    e2eBatches: list(e2eBatch),
    noPeer: peer === false,
    noTfjs: tfjs === false,
  });
}));

await program.parseAsync(process.argv);
