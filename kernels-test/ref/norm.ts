/** Float64 reference of layer norm over the last dim (PyTorch nn.LayerNorm, biased variance). */

function rowStats(x: Float64Array, base: number, C: number, eps: number): [number, number] {
  let s = 0;
  for (let c = 0; c < C; c++) s += x[base + c];
  const mean = s / C;
  let q = 0;
  for (let c = 0; c < C; c++) q += (x[base + c] - mean) ** 2;
  return [mean, 1 / Math.sqrt(q / C + eps)];
}

export function layerNormRef(
  x: Float64Array,
  w: Float64Array,
  b: Float64Array,
  C: number,
  eps: number,
): Float64Array {
  const y = new Float64Array(x.length);
  for (let base = 0; base < x.length; base += C) {
    const [mean, rstd] = rowStats(x, base, C, eps);
    for (let c = 0; c < C; c++) y[base + c] = (x[base + c] - mean) * rstd * w[c] + b[c];
  }
  return y;
}

/** [dx, dweight, dbias] for the upstream gradient g. */
export function layerNormRefBackward(
  x: Float64Array,
  w: Float64Array,
  g: Float64Array,
  C: number,
  eps: number,
): [Float64Array, Float64Array, Float64Array] {
  const dx = new Float64Array(x.length);
  const dw = new Float64Array(C);
  const db = new Float64Array(C);
  for (let base = 0; base < x.length; base += C) {
    const [mean, rstd] = rowStats(x, base, C, eps);
    let m1 = 0;
    let m2 = 0;
    for (let c = 0; c < C; c++) {
      const xh = (x[base + c] - mean) * rstd;
      const gh = g[base + c] * w[c];
      m1 += gh;
      m2 += gh * xh;
      dw[c] += g[base + c] * xh;
      db[c] += g[base + c];
    }
    m1 /= C;
    m2 /= C;
    for (let c = 0; c < C; c++) {
      const xh = (x[base + c] - mean) * rstd;
      dx[base + c] = rstd * (g[base + c] * w[c] - m1 - xh * m2);
    }
  }
  return [dx, dw, db];
}
