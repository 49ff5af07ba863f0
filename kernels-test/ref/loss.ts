/** Float64 references of the Dice (MONAI DiceLoss(sigmoid=True)) and BCE-with-logits losses. */

export function sigmoid64(x: number): number {
  if (x >= 0) return 1 / (1 + Math.exp(-x));
  const e = Math.exp(x);
  return e / (1 + e);
}

function diceStats(x: Float64Array, y: Float64Array, B: number, smooth: number) {
  const N = x.length / B;
  const num = new Float64Array(B);
  const den = new Float64Array(B);
  for (let b = 0; b < B; b++) {
    let spy = 0;
    let sp = 0;
    let sy = 0;
    for (let i = b * N; i < (b + 1) * N; i++) {
      const p = sigmoid64(x[i]);
      spy += p * y[i];
      sp += p;
      sy += y[i];
    }
    num[b] = 2 * spy + smooth;
    den[b] = sp + sy + smooth;
  }
  return { N, num, den };
}

/** mean_b 1 - (2 Σ p·y + smooth) / (Σ p + Σ y + smooth), as a [1] array. */
export function diceRef(x: Float64Array, y: Float64Array, B: number, smooth: number): Float64Array {
  const { num, den } = diceStats(x, y, B, smooth);
  let s = 0;
  for (let b = 0; b < B; b++) s += 1 - num[b] / den[b];
  return Float64Array.of(s / B);
}

/** d(dice)/dx scaled by the upstream scalar g. */
export function diceRefBackward(
  x: Float64Array,
  y: Float64Array,
  B: number,
  smooth: number,
  g: number,
): Float64Array {
  const { N, num, den } = diceStats(x, y, B, smooth);
  const dx = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const b = Math.floor(i / N);
    const dldp = -(2 * y[i] * den[b] - num[b]) / (den[b] * den[b]) / B;
    dx[i] = g * dldp * sigmoid64(x[i]) * sigmoid64(-x[i]);
  }
  return dx;
}

/** mean of max(x,0) - x·y + log1p(exp(-|x|)), as a [1] array. */
export function bceRef(x: Float64Array, y: Float64Array): Float64Array {
  let s = 0;
  for (let i = 0; i < x.length; i++) {
    s += Math.max(x[i], 0) - x[i] * y[i] + Math.log1p(Math.exp(-Math.abs(x[i])));
  }
  return Float64Array.of(s / x.length);
}

export function bceRefBackward(x: Float64Array, y: Float64Array, g: number): Float64Array {
  return x.map((v, i) => (g * (sigmoid64(v) - y[i])) / x.length);
}
