/**
 * The PyTorch peer of the end-to-end rows: bench/peer/pytorch_step.py (the same Segmenter,
 * LoRA, Dice and AdamW in eager fp32 PyTorch) run in the same bench, on the CPU when our
 * adapter is a CPU fallback and on CUDA otherwise, with torch.profiler's op totals of one LoRA
 * step beside our per-kernel breakdown. Missing python/torch is a note, not a failure.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { PACKAGE_ROOT } from '#src/gpu/dawn.js';

export interface PeerPhase {
  median_ms: number;
  min_ms: number;
  images_per_sec: number;
  samples: number;
}

export interface PeerMode {
  mode: 'head' | 'lora';
  trainable_params: number;
  forward: PeerPhase;
  train_step: PeerPhase;
  /** torch.profiler self time per aten op over one LoRA step, largest first. */
  profile?: { name: string; ms: number; calls: number }[];
}

export interface PeerRun {
  size: number;
  batch: number;
  device: string;
  torch: string;
  threads: number;
  results: PeerMode[];
}

export interface PeerOutcome {
  python: string | null;
  runs: PeerRun[];
  /** Why the peer (or one of its runs) did not run. */
  errors: string[];
}

export const TORCH_INSTALL_HINT =
  'PyTorch peer skipped: no python3 with torch found (Debian/Ubuntu: ' +
  '`apt-get install python3-torch`; or `pip install torch`; or set SAM2_LORA_PYTHON)';

/** The first interpreter that imports torch: $SAM2_LORA_PYTHON, python3, /usr/bin/python3. */
export function findTorchPython(): string | null {
  const seen = new Set<string>();
  for (const py of [process.env.SAM2_LORA_PYTHON, 'python3', '/usr/bin/python3']) {
    if (!py || seen.has(py)) continue;
    seen.add(py);
    const r = spawnSync(py, ['-c', 'import torch'], { stdio: 'ignore', timeout: 60_000 });
    if (r.status === 0) return py;
  }
  return null;
}

export function runPytorchPeer(opts: {
  sizes: number[];
  batches: number[];
  /** 'cpu' on a CPU fallback; undefined lets the script pick CUDA when present. */
  device?: 'cpu' | 'cuda';
  steps: number;
  warmup: number;
  log: (s: string) => void;
}): PeerOutcome {
  const python = findTorchPython();
  if (!python) {
    opts.log(TORCH_INSTALL_HINT);
    return { python: null, runs: [], errors: [TORCH_INSTALL_HINT] };
  }
  const script = join(PACKAGE_ROOT, 'bench', 'peer', 'pytorch_step.py');
  const out: PeerOutcome = { python, runs: [], errors: [] };
  for (const size of opts.sizes) {
    for (const batch of opts.batches) {
      const args = [script, '--size', String(size), '--batch', String(batch), '--steps',
        String(opts.steps), '--warmup', String(opts.warmup), '--profile'];
      if (opts.device) args.push('--device', opts.device);
      opts.log(`pytorch peer: ${size} px batch ${batch} (${python})`);
      const r = spawnSync(python, args, { encoding: 'utf8', timeout: 30 * 60_000,
        maxBuffer: 64 * 2 ** 20 });
      if (r.status !== 0) {
        const why = (r.error?.message ?? r.stderr ?? '').trim().split('\n').slice(-1)[0];
        const msg = `PyTorch peer at ${size} px batch ${batch} failed: ${why || `exit ${r.status}`}`;
        out.errors.push(msg);
        opts.log(msg);
        continue;
      }
      try {
        out.runs.push(JSON.parse(r.stdout) as PeerRun);
      } catch (err) {
        out.errors.push(`PyTorch peer at ${size} px batch ${batch}: unreadable output ` +
          `(${(err as Error).message})`);
      }
    }
  }
  return out;
}
