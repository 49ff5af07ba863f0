/**
 * One CLI: `bin/sam2-lora.js <cmd> --help`, spawned as a user runs it, has no flag with two
 * meanings (`--adapter` is always a trained adapter folder; the GPU is `--gpu`), the same
 * `--gpu` / `--backend` on every command that opens the GPU, `--json` taking a file or `-`, the
 * same split flags in train and eval, and shows exactly the defaults the code uses.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as D from '../src/cli/defaults.js';
import { evalSplit } from '../src/cli/evaluate.js';
import { gpuFromEnv } from '../src/gpu/dawn.js';
import { DEFAULT_LORA } from '../src/model/segmenter.js';
import { DEFAULT_GALLERY } from '../src/report/index.js';
import { BIN, REPO as ROOT, ensureBuilt } from './dist.js';
const dir = mkdtempSync(join(tmpdir(), 'sam2-lora-cli-options-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Every command (as argv words) and whether it opens the GPU. */
const COMMANDS: { cmd: string[]; gpu: boolean }[] = [
  { cmd: ['info'], gpu: true },
  { cmd: ['train'], gpu: true },
  { cmd: ['eval'], gpu: true },
  { cmd: ['predict'], gpu: true },
  { cmd: ['worker'], gpu: true },
  { cmd: ['merge'], gpu: true },
  { cmd: ['encode'], gpu: true },
  { cmd: ['bench'], gpu: true },
  { cmd: ['export'], gpu: false },
  { cmd: ['weights', 'download'], gpu: false },
  { cmd: ['queue', 'status'], gpu: false },
];

function run(args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}) {
  const env = { ...process.env, ...opts.env };
  for (const [k, v] of Object.entries(env)) if (v === undefined) delete env[k];
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', env, cwd: opts.cwd ?? ROOT, timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** `--help` parsed into flag → description (commander wraps descriptions over lines). */
function options(cmd: string[], cwd?: string): Map<string, string> {
  const r = run([...cmd, '--help'], { cwd });
  expect(r.status, `${cmd.join(' ')} --help: ${r.stderr}`).toBe(0);
  const out = new Map<string, string>();
  let flag: string | null = null;
  let inOptions = false;
  for (const line of r.stdout.split('\n')) {
    if (/^Options:/.test(line)) inOptions = true;
    else if (/^\S/.test(line)) inOptions = false;
    if (!inOptions) continue;
    const m = /^ {2}(-\w, )?(--[a-z0-9-]+)( <[^>]+>| \[[^\]]+\])?\s+(.*)$/.exec(line);
    if (m) {
      flag = m[2];
      out.set(flag, `${m[3] ? `${m[3].trim()} ` : ''}${m[4]}`);
    } else if (flag && /^\s{3,}\S/.test(line)) {
      out.set(flag, `${out.get(flag)} ${line.trim()}`);
    }
  }
  expect(out.size, `${cmd.join(' ')}: no options parsed`).toBeGreaterThan(0);
  return out;
}

let HELP = new Map<string, Map<string, string>>();
beforeAll(() => {
  // The CLI reads its defaults from dist/cli/defaults.js: built from today's sources.
  ensureBuilt('cli-options', join(ROOT, 'dist', 'cli', 'defaults.js'));
  HELP = new Map(COMMANDS.map(({ cmd }) => [cmd.join(' '), options(cmd)]));
}, 300_000);
const opt = (cmd: string, flag: string) => {
  const d = HELP.get(cmd)!.get(flag);
  expect(d, `${cmd} has no ${flag}`).toBeDefined();
  return d!;
};

describe('one CLI: every flag has one meaning', () => {
  it('--adapter is always a trained adapter directory; the GPU is never an adapter flag', () => {
    let seen = 0;
    for (const [cmd, opts] of HELP) {
      for (const [flag, desc] of opts) {
        if (flag === '--adapter') {
          seen++;
          expect(desc, `${cmd} --adapter`).toMatch(/^<dir(\.\.\.)?> trained adapter directory/);
        }
        expect(flag, `${cmd}`).not.toBe('--gpu-adapter');
        if (flag !== '--gpu') expect(desc, `${cmd} ${flag}`).not.toMatch(/Dawn adapter/i);
      }
    }
    expect(seen).toBe(4); // eval, predict, merge, export
  });

  it('--gpu and --backend: on every GPU command, one definition, backends validated', () => {
    const gpu = new Set<string>();
    const backend = new Set<string>();
    for (const { cmd, gpu: usesGpu } of COMMANDS) {
      const name = cmd.join(' ');
      const opts = HELP.get(name)!;
      expect(opts.has('--gpu'), `${name} --gpu`).toBe(usesGpu);
      expect(opts.has('--backend'), `${name} --backend`).toBe(usesGpu);
      if (!usesGpu) continue;
      gpu.add(opts.get('--gpu')!);
      backend.add(opts.get('--backend')!);
    }
    expect(gpu.size).toBe(1);
    expect(backend.size).toBe(1);
    const [g] = gpu;
    expect(g).toMatch(/^<name> .*SAM2_LORA_GPU/);
    const [b] = backend;
    expect(b).toContain(`(choices: ${D.GPU_BACKENDS.map((x) => `"${x}"`).join(', ')})`);
  });

  it('commander refuses bad --backend, an empty --gpu and a bad --filter regex before any work', () => {
    const bad = run(['info', '--backend', 'vulcan']);
    expect(bad.status).not.toBe(0);
    expect(bad.stderr).toMatch(/argument 'vulcan' is invalid\. Allowed choices are vulkan/);
    const empty = run(['info', '--gpu', ' ']);
    expect(empty.status).not.toBe(0);
    expect(empty.stderr).toMatch(/'--gpu <name>' argument ' ' is invalid/);
    const re = run(['bench', '--filter', '(']);
    expect(re.status).not.toBe(0);
    expect(re.stderr).toMatch(/not a regular expression/);
  });

  it('--json takes a file or `-` (stdout) wherever it appears', () => {
    let seen = 0;
    for (const [cmd, opts] of HELP) {
      const d = opts.get('--json');
      if (!d) continue;
      seen++;
      expect(d, `${cmd} --json`).toMatch(/^<file> write .* as JSON to FILE \(`-`: stdout/);
    }
    expect(seen).toBeGreaterThanOrEqual(3); // info, eval, queue status
  });

  it('train and eval name the split the same way; eval --split is an alias', () => {
    expect(opt('train', '--test-split')).toContain(`(default: "${D.SPLITS.test}")`);
    expect(opt('eval', '--test-split')).toContain(`(default ${D.SPLITS.test})`);
    expect(opt('eval', '--split')).toMatch(/alias of --test-split/);
    expect(opt('train', '--train-split')).toContain(`"${D.SPLITS.train}"`);
    expect(opt('train', '--val-split')).toContain(`"${D.SPLITS.val}"`);
    expect(evalSplit({})).toBe(D.SPLITS.test);
    expect(evalSplit({ split: 'val' })).toBe('val');
    expect(evalSplit({ testSplit: 'val' })).toBe('val');
    expect(evalSplit({ split: 'val', testSplit: 'val' })).toBe('val');
    expect(() => evalSplit({ split: 'val', testSplit: 'test' })).toThrow(/disagree/);
  });

  it('bench --filter is a regex; bench --out is the package folder from any directory', () => {
    expect(opt('bench', '--filter')).toMatch(/^<regex> .*regular expression/);
    const results = join(ROOT, 'bench', 'results');
    expect(opt('bench', '--out')).toContain(`(default ${results},`);
    expect(options(['bench'], tmpdir()).get('--out')).toContain(`(default ${results},`);
  });
});

describe('one CLI: the defaults shown are the code\'s', () => {
  const T = D.TRAIN_DEFAULTS;
  const DEMO = D.DEMO_DEFAULTS;
  const DEMO2 = D.DEMO_SAM2_DEFAULTS;

  it('train: recipe and demo values from the constants the command uses', () => {
    const both = (k: 'size' | 'batch' | 'lr' | 'headLr' | 'head' | 'loss') =>
      `default ${T[k]}; demo ${DEMO[k]}`;
    expect(opt('train', '--size')).toContain(`${both('size')}, with SAM2 weights ${DEMO2.size}`);
    expect(opt('train', '--batch')).toContain(both('batch'));
    expect(opt('train', '--lr')).toContain(`${both('lr')}, with SAM2 weights ${DEMO2.lr}`);
    expect(opt('train', '--head-lr')).toContain(`${both('headLr')}, with SAM2 weights ${DEMO2.headLr}`);
    expect(opt('train', '--head')).toContain(both('head'));
    expect(opt('train', '--loss')).toContain(both('loss'));
    expect(opt('train', '--epochs')).toContain(`default ${T.epochs}; the demo stops at --max-steps ${DEMO.maxSteps}`);
    expect(opt('train', '--max-steps')).toContain(`demo ${DEMO.maxSteps}, with SAM2 weights ${DEMO2.maxSteps}`);
    expect(opt('train', '--mode')).toContain(`default: "${T.mode}"`);
    expect(opt('train', '--model')).toContain(`default ${T.model}`);
    const shown: [string, string | number][] = [
      ['--weight-decay', T.weightDecay], ['--warmup', T.warmup], ['--clip', T.clip], ['--accum', T.accum],
      ['--lora-r', T.loraR], ['--lora-alpha', T.loraAlpha], ['--lora-dropout', T.loraDropout],
      ['--lora-targets', T.loraTargets], ['--seed', T.seed], ['--max-bad-steps', T.maxBadSteps],
    ];
    for (const [flag, v] of shown) expect(opt('train', flag), flag).toContain(`(default: "${v}")`);
    expect(opt('train', '--no-augment')).toContain(DEMO.augment ? 'trains with them' : 'trains without them');
    // The recipe's LoRA defaults are the model's.
    expect([T.loraR, T.loraAlpha, T.loraDropout, T.loraTargets])
      .toEqual([DEFAULT_LORA.r, DEFAULT_LORA.alpha, DEFAULT_LORA.dropout, DEFAULT_LORA.targets.join(',')]);
  });

  it('eval, predict, encode: defaults from the constants; the gallery cap is the report\'s', () => {
    expect(opt('eval', '--batch')).toContain(`(default ${D.EVAL_DEFAULTS.batch})`);
    expect(opt('eval', '--gallery')).toContain(`(default ${D.EVAL_DEFAULTS.gallery};`);
    expect(D.EVAL_DEFAULTS.gallery).toBe(DEFAULT_GALLERY);
    expect(opt('predict', '--out')).toContain(`(default: "${D.PREDICT_DEFAULTS.out}")`);
    expect(opt('encode', '--size')).toContain(`(default: "${D.ENCODE_DEFAULTS.size}")`);
    expect(opt('encode', '--model')).toContain(`default: "${D.ENCODE_DEFAULTS.model}"`);
  });
});

describe('one CLI: the GPU from the environment', () => {
  it('SAM2_LORA_GPU names the GPU; SAM2_LORA_ADAPTER still does, with a deprecation warning once', () => {
    const warned: string[] = [];
    const warn = (m: string) => warned.push(m);
    expect(gpuFromEnv({ SAM2_LORA_GPU: 'A' }, warn)).toBe('A');
    expect(gpuFromEnv({ SAM2_LORA_GPU: 'A', SAM2_LORA_ADAPTER: 'B' }, warn)).toBe('A');
    expect(gpuFromEnv({}, warn)).toBeUndefined();
    expect(warned).toEqual([]);
    expect(gpuFromEnv({ SAM2_LORA_ADAPTER: 'B' }, warn)).toBe('B');
    expect(gpuFromEnv({ SAM2_LORA_ADAPTER: 'B' }, warn)).toBe('B');
    expect(warned).toHaveLength(1);
    expect(warned[0]).toMatch(/SAM2_LORA_ADAPTER is deprecated: set SAM2_LORA_GPU/);
  });

  it('`info` with the deprecated variable warns and uses it; with SAM2_LORA_GPU it does not warn', () => {
    const name = 'no-such-gpu-sam2-lora-test';
    const old = run(['info'], { env: { SAM2_LORA_ADAPTER: name, SAM2_LORA_GPU: undefined } });
    expect(old.status).toBe(1);
    expect(old.stderr).toMatch(/SAM2_LORA_ADAPTER is deprecated: set SAM2_LORA_GPU \(or pass --gpu\)/);
    expect(old.stderr).toContain(`GPU '${name}'`);
    const now = run(['info'], { env: { SAM2_LORA_GPU: name, SAM2_LORA_ADAPTER: undefined } });
    expect(now.status).toBe(1);
    expect(now.stderr).not.toMatch(/deprecated/);
    expect(now.stderr).toContain(`GPU '${name}'`);
  });

  it('`info --json -` prints only JSON on stdout; `--json FILE` writes it and says so last', () => {
    const stdout = run(['info', '--json', '-']);
    expect(stdout.status, stdout.stderr).toBe(0);
    const parsed = JSON.parse(stdout.stdout);
    expect(parsed.limits.maxStorageBufferBindingSize).toBeGreaterThan(0);
    const file = join(dir, 'sub', 'info.json');
    const toFile = run(['info', '--json', file]);
    expect(toFile.status, toFile.stderr).toBe(0);
    expect(existsSync(file)).toBe(true);
    expect(JSON.parse(readFileSync(file, 'utf8'))).toEqual(parsed);
    const lines = toFile.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^adapter /);
    expect(lines.at(-1)).toBe(`wrote ${file}`);
  });

  // `info` opens the device and closes it at once. Destroying it before Dawn settled (or letting
  // Node exit while Dawn still tore it down) killed the process after its output was written:
  // SIGABRT (std::system_error), SIGSEGV or a hang, every time with six at once on a busy machine.
  it('six `info` processes at once all exit 0 (the GPU shuts down cleanly)', { timeout: 180_000 }, async () => {
    const one = () =>
      new Promise<{ code: number | null; signal: NodeJS.Signals | null; out: string; err: string }>((resolve) => {
        const p = spawn(process.execPath, [BIN, 'info', '--json', '-'], { cwd: ROOT });
        let out = '';
        let err = '';
        p.stdout.on('data', (d) => (out += d));
        p.stderr.on('data', (d) => (err += d));
        const timer = setTimeout(() => p.kill('SIGKILL'), 120_000);
        p.on('close', (code, signal) => {
          clearTimeout(timer);
          resolve({ code, signal, out, err });
        });
      });
    const runs = await Promise.all(Array.from({ length: 6 }, one));
    for (const r of runs) {
      expect({ code: r.code, signal: r.signal }, r.err).toEqual({ code: 0, signal: null });
      expect(JSON.parse(r.out).limits.maxStorageBufferBindingSize).toBeGreaterThan(0);
    }
  });
});
