/** A one-line progress bar on a TTY (plain periodic lines otherwise, e.g. in CI logs). */
export class Progress {
  private start = Date.now();
  private lastPrint = 0;
  private readonly tty = process.stderr.isTTY === true;

  constructor(
    private label: string,
    private total: number,
  ) {}

  update(done: number, fields: Record<string, string | number>): void {
    const now = Date.now();
    const finished = done >= this.total;
    if (!finished && now - this.lastPrint < (this.tty ? 200 : 10_000)) return;
    this.lastPrint = now;
    const elapsed = (now - this.start) / 1000;
    const eta = done > 0 ? (elapsed / done) * (this.total - done) : 0;
    const pct = this.total > 0 ? done / this.total : 1;
    const width = 24;
    const bar = '#'.repeat(Math.round(pct * width)).padEnd(width, '.');
    const extra = Object.entries(fields)
      .map(([k, v]) => `${k} ${typeof v === 'number' ? fmt(v) : v}`)
      .join('  ');
    const line = `${this.label} [${bar}] ${done}/${this.total}  ${extra}  ETA ${time(eta)}`;
    if (this.tty) process.stderr.write(`\r${line}\x1b[K${finished ? '\n' : ''}`);
    else process.stderr.write(`${line}\n`);
  }
}

function fmt(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  if (Math.abs(v) >= 100) return v.toFixed(0);
  if (Math.abs(v) >= 1) return v.toFixed(2);
  return v.toFixed(4);
}

export function time(s: number): string {
  if (!Number.isFinite(s)) return '?';
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = Math.floor(s % 60);
  return h > 0 ? `${h}h${String(m).padStart(2, '0')}m` : `${m}m${String(sec).padStart(2, '0')}s`;
}
