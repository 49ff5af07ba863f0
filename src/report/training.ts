/** Training curves of a run folder, from its `log.jsonl` (preferred) or `history.json`. */
import { existsSync, readFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';

export interface TrainingCurves {
  /** The file the curves were read from. */
  source: string;
  /** [step, training loss], one per optimizer step. */
  loss: [number, number][];
  /** [step, validation Dice at 0.5], one per epoch with a validation. */
  valDice: [number, number][];
  /** The precision the run trained at (its log's start record; f32 for runs before --precision). */
  precision?: string;
}

/** Last value per step wins (a resumed run logs again the steps after its last checkpoint). */
function byStep(pairs: [number, number][]): [number, number][] {
  const m = new Map<number, number>();
  for (const [s, v] of pairs) if (Number.isFinite(s) && Number.isFinite(v)) m.set(s, v);
  return [...m].sort((a, b) => a[0] - b[0]);
}

/** The curves of `runDir`, or null when it holds neither file. Malformed files throw naming them. */
export function readTrainingCurves(runDir: string): TrainingCurves | null {
  const log = join(runDir, 'log.jsonl');
  const hist = join(runDir, 'history.json');
  if (existsSync(log)) {
    const loss: [number, number][] = [];
    const dice: [number, number][] = [];
    let precision: string | undefined;
    readFileSync(log, 'utf8').split('\n').forEach((line, i) => {
      if (!line.trim()) return;
      let r;
      try {
        r = JSON.parse(line);
      } catch {
        // A kill mid-append leaves at most a partial last line: skip it, not the run.
        if (i === 0) throw new Error(`${log}: line 1 is not JSON`);
        return;
      }
      if (r.type === 'start' || r.type === 'resume') precision = r.run?.options?.precision ?? 'f32';
      if (r.type === 'step') loss.push([r.step, r.loss]);
      else if (r.type === 'epoch' && r.val && typeof r.val.dice === 'number') dice.push([r.step, r.val.dice]);
    });
    return { source: log, loss: byStep(loss), valDice: byStep(dice), ...(precision ? { precision } : {}) };
  }
  if (existsSync(hist)) {
    let h;
    try {
      h = JSON.parse(readFileSync(hist, 'utf8'));
    } catch (e) {
      throw new Error(`${hist}: not JSON (${e instanceof Error ? e.message : e})`);
    }
    if (!Array.isArray(h.history)) throw new Error(`${hist}: no "history" list`);
    return {
      source: hist,
      loss: byStep(h.history.map((p: { step: number; loss: number }) => [p.step, p.loss])),
      valDice: byStep((h.epochs ?? []).map((e: { step: number; valDice: number }) => [e.step, e.valDice])),
    };
  }
  return null;
}

/**
 * The run folder an adapter directory belongs to: `<run>/best` or `<run>/last` (or a run folder
 * itself) whose run holds a log; null otherwise.
 */
export function runDirOf(adapterPath: string): string | null {
  const p = resolve(adapterPath);
  const has = (d: string) => existsSync(join(d, 'log.jsonl')) || existsSync(join(d, 'history.json'));
  if (has(p)) return p;
  if (['best', 'last'].includes(basename(p)) && has(dirname(p))) return dirname(p);
  return null;
}
