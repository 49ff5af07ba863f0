/**
 * Float64 references for multi-head attention and window partitioning. Tensors are flat
 * row-major arrays: q [B, Nq, C], k and v [B, Nk, C], C = heads * hd, head h owning channels
 * [h * hd, (h + 1) * hd).
 */

export interface AttnShape {
  B: number;
  heads: number;
  hd: number;
  Nq: number;
  Nk: number;
}

/** Softmax probabilities P[b, h, i, j] (flat), scale 1 / sqrt(hd), no mask. */
function probs(s: AttnShape, q: Float64Array, k: Float64Array): Float64Array {
  const { B, heads, hd, Nq, Nk } = s;
  const C = heads * hd;
  const scale = 1 / Math.sqrt(hd);
  const P = new Float64Array(B * heads * Nq * Nk);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < heads; h++) {
      for (let i = 0; i < Nq; i++) {
        const row = ((b * heads + h) * Nq + i) * Nk;
        const qo = (b * Nq + i) * C + h * hd;
        let m = -Infinity;
        for (let j = 0; j < Nk; j++) {
          const ko = (b * Nk + j) * C + h * hd;
          let dot = 0;
          for (let d = 0; d < hd; d++) dot += q[qo + d] * k[ko + d];
          P[row + j] = dot * scale;
          m = Math.max(m, P[row + j]);
        }
        let sum = 0;
        for (let j = 0; j < Nk; j++) sum += P[row + j] = Math.exp(P[row + j] - m);
        for (let j = 0; j < Nk; j++) P[row + j] /= sum;
      }
    }
  }
  return P;
}

export function attentionRef(s: AttnShape, q: Float64Array, k: Float64Array, v: Float64Array) {
  const { B, heads, hd, Nq, Nk } = s;
  const C = heads * hd;
  const P = probs(s, q, k);
  const out = new Float64Array(B * Nq * C);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < heads; h++) {
      for (let i = 0; i < Nq; i++) {
        const row = ((b * heads + h) * Nq + i) * Nk;
        const oo = (b * Nq + i) * C + h * hd;
        for (let j = 0; j < Nk; j++) {
          const vo = (b * Nk + j) * C + h * hd;
          for (let d = 0; d < hd; d++) out[oo + d] += P[row + j] * v[vo + d];
        }
      }
    }
  }
  return out;
}

/**
 * dv = P^T g, dP = g v^T, dS = P * (dP - rowsum(P * dP)), dq = scale * dS k, dk = scale * dS^T q.
 */
export function attentionRefBackward(
  s: AttnShape,
  q: Float64Array,
  k: Float64Array,
  v: Float64Array,
  g: Float64Array,
): [Float64Array, Float64Array, Float64Array] {
  const { B, heads, hd, Nq, Nk } = s;
  const C = heads * hd;
  const scale = 1 / Math.sqrt(hd);
  const P = probs(s, q, k);
  const dq = new Float64Array(q.length);
  const dk = new Float64Array(k.length);
  const dv = new Float64Array(v.length);
  const dP = new Float64Array(Nk);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < heads; h++) {
      for (let i = 0; i < Nq; i++) {
        const row = ((b * heads + h) * Nq + i) * Nk;
        const qo = (b * Nq + i) * C + h * hd;
        let D = 0;
        for (let j = 0; j < Nk; j++) {
          const vo = (b * Nk + j) * C + h * hd;
          let dot = 0;
          for (let d = 0; d < hd; d++) {
            dot += g[qo + d] * v[vo + d];
            dv[vo + d] += P[row + j] * g[qo + d];
          }
          dP[j] = dot;
          D += P[row + j] * dot;
        }
        for (let j = 0; j < Nk; j++) {
          const ko = (b * Nk + j) * C + h * hd;
          const ds = P[row + j] * (dP[j] - D) * scale;
          for (let d = 0; d < hd; d++) {
            dq[qo + d] += ds * k[ko + d];
            dk[ko + d] += ds * q[qo + d];
          }
        }
      }
    }
  }
  return [dq, dk, dv];
}

/** lse [B * heads, Nq]: logsumexp of each scaled score row (what the forward saves). */
export function attentionLseRef(s: AttnShape, q: Float64Array, k: Float64Array): Float64Array {
  const { B, heads, hd, Nq, Nk } = s;
  const C = heads * hd;
  const scale = 1 / Math.sqrt(hd);
  const out = new Float64Array(B * heads * Nq);
  const row = new Float64Array(Nk);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < heads; h++) {
      for (let i = 0; i < Nq; i++) {
        const qo = (b * Nq + i) * C + h * hd;
        let m = -Infinity;
        for (let j = 0; j < Nk; j++) {
          const ko = (b * Nk + j) * C + h * hd;
          let dot = 0;
          for (let d = 0; d < hd; d++) dot += q[qo + d] * k[ko + d];
          row[j] = dot * scale;
          m = Math.max(m, row[j]);
        }
        let sum = 0;
        for (let j = 0; j < Nk; j++) sum += Math.exp(row[j] - m);
        out[(b * heads + h) * Nq + i] = m + Math.log(sum);
      }
    }
  }
  return out;
}

/** D [B * heads, Nq] = rowsum over each head of g * out (the backward's first pass). */
export function attentionDsumRef(s: AttnShape, g: Float64Array, out: Float64Array): Float64Array {
  const { B, heads, hd, Nq } = s;
  const C = heads * hd;
  const D = new Float64Array(B * heads * Nq);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < heads; h++) {
      for (let i = 0; i < Nq; i++) {
        const o = (b * Nq + i) * C + h * hd;
        let sum = 0;
        for (let d = 0; d < hd; d++) sum += g[o + d] * out[o + d];
        D[(b * heads + h) * Nq + i] = sum;
      }
    }
  }
  return D;
}

/**
 * What an f16-stored forward output adds to the backward, per element of [dq, dk, dv]: D_i =
 * rowsum(dO_i · O16_i) reads the stored output, each O_id off by <= u·|O_id|, so D_i by <= u·A_i
 * with A_i = sum_d |dO_id|·|O_id| (not u·|D_i|: D can cancel), and dS_ij = P_ij (dP_ij - D_i) by
 * P_ij·u·A_i. Through dq = scale·dS·k and dk = scale·dS^T·q: dq_id gets scale·u·A_i·sum_j
 * P_ij|k_jd|, dk_jd gets scale·u·sum_i P_ij·A_i·|q_id|; dv = P^T dO does not read D (zeros).
 */
export function attentionStoredOutTerms(
  s: AttnShape,
  q: Float64Array,
  k: Float64Array,
  v: Float64Array,
  g: Float64Array,
  u: number,
): [Float64Array, Float64Array, Float64Array] {
  const { B, heads, hd, Nq, Nk } = s;
  const C = heads * hd;
  const scale = 1 / Math.sqrt(hd);
  const out = attentionRef(s, q, k, v);
  const lse = attentionLseRef(s, q, k);
  const dq = new Float64Array(q.length);
  const dk = new Float64Array(k.length);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < heads; h++) {
      for (let i = 0; i < Nq; i++) {
        const qo = (b * Nq + i) * C + h * hd;
        let a = 0;
        for (let d = 0; d < hd; d++) a += Math.abs(g[qo + d] * out[qo + d]);
        const w = scale * u * a;
        const l = lse[(b * heads + h) * Nq + i];
        for (let j = 0; j < Nk; j++) {
          const ko = (b * Nk + j) * C + h * hd;
          let dot = 0;
          for (let d = 0; d < hd; d++) dot += q[qo + d] * k[ko + d];
          const p = Math.exp(dot * scale - l);
          for (let d = 0; d < hd; d++) {
            dq[qo + d] += w * p * Math.abs(k[ko + d]);
            dk[ko + d] += w * p * Math.abs(q[qo + d]);
          }
        }
      }
    }
  }
  return [dq, dk, new Float64Array(v.length)];
}

/** Splits rows of `parts` packed C-wide groups ([rows, parts * C]) into [rows, C] arrays. */
export function splitColumns(
  x: Float64Array,
  rows: number,
  C: number,
  parts: number,
): Float64Array[] {
  const out = Array.from({ length: parts }, () => new Float64Array(rows * C));
  for (let r = 0; r < rows; r++) {
    for (let p = 0; p < parts; p++) {
      for (let c = 0; c < C; c++) out[p][r * C + c] = x[(r * parts + p) * C + c];
    }
  }
  return out;
}

/** Splits a packed qkv [B, N, 3C] into q, k, v [B, N, C]. */
export function splitQkv(qkv: Float64Array, BN: number, C: number): Float64Array[] {
  return splitColumns(qkv, BN, C, 3);
}

/** Packs q, k, v [B, N, C] into [B, N, 3C]. */
export function packQkv(parts: Float64Array[], BN: number, C: number): Float64Array {
  const out = new Float64Array(BN * 3 * C);
  for (let r = 0; r < BN; r++) {
    for (let p = 0; p < 3; p++) {
      for (let c = 0; c < C; c++) out[r * 3 * C + p * C + c] = parts[p][r * C + c];
    }
  }
  return out;
}

export interface WinShape {
  B: number;
  H: number;
  W: number;
  C: number;
  ws: number;
}

/** Maps each window token to its source pixel index (or -1 for padding). */
function windowMap(s: WinShape): Int32Array {
  const { B, H, W, ws } = s;
  const nh = Math.ceil(H / ws);
  const nw = Math.ceil(W / ws);
  const map = new Int32Array(B * nh * nw * ws * ws).fill(-1);
  let t = 0;
  for (let b = 0; b < B; b++) {
    for (let wy = 0; wy < nh; wy++) {
      for (let wx = 0; wx < nw; wx++) {
        for (let py = 0; py < ws; py++) {
          for (let px = 0; px < ws; px++, t++) {
            const y = wy * ws + py;
            const x = wx * ws + px;
            if (y < H && x < W) map[t] = (b * H + y) * W + x;
          }
        }
      }
    }
  }
  return map;
}

/** x [B, H, W, C] -> zero-padded windows [B * nh * nw, ws * ws, C]. */
export function windowPartitionRef(s: WinShape, x: Float64Array): Float64Array {
  const map = windowMap(s);
  const out = new Float64Array(map.length * s.C);
  map.forEach((src, t) => {
    if (src >= 0) for (let c = 0; c < s.C; c++) out[t * s.C + c] = x[src * s.C + c];
  });
  return out;
}

/** windows [B * nh * nw, ws * ws, C] -> [B, H, W, C], padding dropped. */
export function windowUnpartitionRef(s: WinShape, y: Float64Array): Float64Array {
  const map = windowMap(s);
  const out = new Float64Array(s.B * s.H * s.W * s.C);
  map.forEach((dst, t) => {
    if (dst >= 0) for (let c = 0; c < s.C; c++) out[dst * s.C + c] = y[t * s.C + c];
  });
  return out;
}

/** x [B, H, W, C] -> windows [B * nh * nw, ws * ws, C] whose padding tokens hold fill [C]. */
export function windowPartitionFillRef(
  s: WinShape, x: Float64Array, fill: Float64Array,
): Float64Array {
  const map = windowMap(s);
  const out = new Float64Array(map.length * s.C);
  map.forEach((src, t) => {
    for (let c = 0; c < s.C; c++) out[t * s.C + c] = src >= 0 ? x[src * s.C + c] : fill[c];
  });
  return out;
}

/** The fill's gradient: sum over the padding tokens of g [B * nh * nw, ws * ws, C]'s rows. */
export function windowFillGradRef(s: WinShape, g: Float64Array): Float64Array {
  const map = windowMap(s);
  const out = new Float64Array(s.C);
  map.forEach((src, t) => {
    if (src < 0) for (let c = 0; c < s.C; c++) out[c] += g[t * s.C + c];
  });
  return out;
}
