/** Learning-rate multiplier: linear warmup, then cosine decay to `minRatio` of the base rate. */
export function lrFactor(step: number, total: number, warmup: number, minRatio = 0): number {
  if (warmup > 0 && step < warmup) return (step + 1) / warmup;
  const span = Math.max(1, total - warmup);
  const t = Math.min(1, Math.max(0, (step - warmup) / span));
  return minRatio + (1 - minRatio) * 0.5 * (1 + Math.cos(Math.PI * t));
}
