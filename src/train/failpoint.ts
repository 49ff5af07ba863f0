/**
 * Fault injection for the crash-safety tests: `SAM2_LORA_FAILPOINT=ckpt:<target>/<action>:<n>`
 * kills this process with SIGKILL (no cleanup, as a power cut or the OOM killer would) right
 * after the n-th time the checkpoint `target` (last, best) reaches `action` in a save (write,
 * manifest, rename-old, rename-new, remove-old). `SAM2_LORA_FAILPOINT=trace` prints each
 * point reached (`failpoint ckpt:last/write:1`) to stderr instead, to enumerate them. Unset, it
 * costs one comparison.
 */
const SPEC = /^ckpt:(\w+)\/([\w-]+):(\d+)$/;

let parsed: { target: string; action: string; n: number } | 'trace' | null | undefined;
const counts = new Map<string, number>();

function spec(): typeof parsed {
  if (parsed !== undefined) return parsed;
  const env = process.env.SAM2_LORA_FAILPOINT;
  if (!env) return (parsed = null);
  if (env === 'trace') return (parsed = 'trace');
  const m = SPEC.exec(env);
  if (!m) throw new Error(`SAM2_LORA_FAILPOINT=${env}: expected ckpt:<target>/<action>:<n>`);
  return (parsed = { target: m[1], action: m[2], n: Number(m[3]) });
}

/** Marks that checkpoint `target` just did `action`; dies here when the failpoint says so. */
export function failpoint(target: string, action: string): void {
  const s = spec();
  if (!s || (s !== 'trace' && (s.target !== target || s.action !== action))) return;
  const key = `${target}/${action}`;
  const n = (counts.get(key) ?? 0) + 1;
  counts.set(key, n);
  if (s === 'trace') process.stderr.write(`failpoint ckpt:${key}:${n}\n`);
  else if (n === s.n) process.kill(process.pid, 'SIGKILL');
}
