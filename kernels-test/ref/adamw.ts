/** Float64 reference of one torch.optim.AdamW step (amsgrad off). */

export interface AdamWHyper {
  lr: number;
  wd: number;
  b1: number;
  b2: number;
  eps: number;
}

/** Step t >= 1 of torch.optim.AdamW, in place on p, m, v. */
export function adamwRef(p: Float64Array, m: Float64Array, v: Float64Array, g: Float64Array,
  t: number, h: AdamWHyper): void {
  const bc1 = 1 - h.b1 ** t;
  const bc2 = 1 - h.b2 ** t;
  for (let i = 0; i < p.length; i++) {
    p[i] *= 1 - h.lr * h.wd;
    m[i] = h.b1 * m[i] + (1 - h.b1) * g[i];
    v[i] = h.b2 * v[i] + (1 - h.b2) * g[i] * g[i];
    p[i] -= ((h.lr / bc1) * m[i]) / (Math.sqrt(v[i]) / Math.sqrt(bc2) + h.eps);
  }
}
