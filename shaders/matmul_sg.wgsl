// matmul_sg: matmul_regs (same bindings, uniforms, operand loads rg_a / rg_b with their dropout,
// all in matmul.wgsl) with operands shared across a subgroup, for CPU adapters that have
// subgroups. This file is appended to matmul.wgsl behind `enable subgroups;` (the family
// `matmulSgFamily` in src/kernels/matmul.ts), so adapters without the feature never compile it.
//
// Why (measured on lavapipe, Mesa 22.3, 8-wide AVX2): every storage load is a loop over the SIMD
// lanes, the same cost whether the lanes' addresses are equal, consecutive or scattered, while a
// subgroupShuffle costs a fraction of a load and arithmetic runs 8 lanes at once. So a workgroup is
// one 8-lane subgroup computing a 32x32 block of C: lane l loads the 4x4 blocks of A at rows
// 32y + 4l.. and of B at columns 32x + 4l.. (k in steps of 4), and takes the other lanes' A rows by
// shuffles. Per 4 steps of k a lane does 8 vec4 loads for 512 FMAs, where matmul_regs does 16
// for 256. Needs subgroups of at least 8 invocations (the launcher checks the adapter's minimum).
//
// The epilogue (sg_put) is mm_put's arithmetic in mm_put's order on a lane's 4 columns at once,
// its optional parts pipeline constants set by the launcher. (lavapipe runs both sides of a
// branch under lane masks: with uniform flags every product paid for every part; at 64x1536x384
// a bias alone took ~2x the plain product's time, the masked low-rank addend ~6x.) Per 4 rows
// the bias costs no load (one per block), nor does a low-rank addend of rank <= 4 (SG_LR 2: T and
// L loaded once per block, T's rows passed by shuffles like A's); a larger rank (SG_LR 1) costs
// 8 loads per rank index.
override SG_BIAS: bool = false;
override SG_LR: u32 = 0u;
override SG_MASK: bool = false;
override SG_BETA: bool = false;

// Lane q's 4x4 block of A (columns: rows 32y + 4q + i over k..k+3), in every lane.
fn sg_from_lane(a: mat4x4f, q: u32) -> mat4x4f {
  return mat4x4f(
    subgroupShuffle(a[0], q),
    subgroupShuffle(a[1], q),
    subgroupShuffle(a[2], q),
    subgroupShuffle(a[3], q),
  );
}

@compute @workgroup_size(8)
fn matmul_sg(@builtin(local_invocation_index) l: u32, @builtin(workgroup_id) wid: vec3u) {
  let t = mm_tile(wid);
  let m0 = wid.y * 32u;
  let n = wid.x * 32u + 4u * l;
  // accQ[i] = C[m0 + 4Q + i][n..n+3].
  var acc0 = mat4x4f();
  var acc1 = mat4x4f();
  var acc2 = mat4x4f();
  var acc3 = mat4x4f();
  var acc4 = mat4x4f();
  var acc5 = mat4x4f();
  var acc6 = mat4x4f();
  var acc7 = mat4x4f();
  for (var k = t.kStart; k < t.kEnd; k += 4u) {
    // a[i] = A[m0 + 4l + i][k..k+3]; b[kk] = B[k + kk][n..n+3].
    let a = transpose(rg_a(t, m0 + 4u * l, k));
    let b = transpose(rg_b(t, n, k));
    // (b * aQ)[i] = sum over kk of A[m0 + 4Q + i][k + kk] * B[k + kk][n..n+3]: row 4Q + i of C.
    acc0 += b * sg_from_lane(a, 0u);
    acc1 += b * sg_from_lane(a, 1u);
    acc2 += b * sg_from_lane(a, 2u);
    acc3 += b * sg_from_lane(a, 3u);
    acc4 += b * sg_from_lane(a, 4u);
    acc5 += b * sg_from_lane(a, 5u);
    acc6 += b * sg_from_lane(a, 6u);
    acc7 += b * sg_from_lane(a, 7u);
  }
  // The bias at this lane's columns, loaded once per block; with SG_LR 2, T at this lane's rows
  // (lrT[i][r] = T[m0 + 4l + i][r]) and L at its columns (lrL[r][j]: column n + j), zero past the
  // rank.
  var bias = vec4f(0.0);
  if (SG_BIAS) {
    bias = vec4f(sg_bias(n), sg_bias(n + 1u), sg_bias(n + 2u), sg_bias(n + 3u));
  }
  var lrT = mat4x4f();
  var lrL = mat4x4f();
  if (SG_LR == 2u) {
    let rank = sl_bound(mm_p.rank, n);
    let ml = m0 + 4u * l;
    lrT = mat4x4f(sg_t4(ml, rank), sg_t4(ml + 1u, rank), sg_t4(ml + 2u, rank),
      sg_t4(ml + 3u, rank));
    lrL = mat4x4f(sg_l4(n, 0u, rank), sg_l4(n, 1u, rank), sg_l4(n, 2u, rank), sg_l4(n, 3u, rank));
  }
  // One copy of the epilogue in a loop, not eight: mm_put inlined 128 times (with GELU) took
  // lavapipe minutes to compile.
  for (var q = 0u; q < 8u; q++) {
    var acc = acc0;
    if (q == 1u) { acc = acc1; }
    if (q == 2u) { acc = acc2; }
    if (q == 3u) { acc = acc3; }
    if (q == 4u) { acc = acc4; }
    if (q == 5u) { acc = acc5; }
    if (q == 6u) { acc = acc6; }
    if (q == 7u) { acc = acc7; }
    let m = m0 + 4u * q;
    if (m >= mm_p.M) { break; }
    var lr = mat4x4f();
    if (SG_LR == 1u) { lr = sg_low_rank(m, n); }
    if (SG_LR == 2u) { lr = sg_low_rank4(sg_from_lane(lrT, q), lrL); }
    if (SG_MASK) { lr = sg_mask(t.z, m, n, lr); }
    sg_put(t.z, m, n, acc[0], lr[0], bias);
    sg_put(t.z, m + 1u, n, acc[1], lr[1], bias);
    sg_put(t.z, m + 2u, n, acc[2], lr[2], bias);
    sg_put(t.z, m + 3u, n, acc[3], lr[3], bias);
  }
}

// Column n of C clamped into range (for loads: the stores check it).
fn sg_col(n: u32) -> u32 {
  return min(n, mm_p.N - 1u);
}

fn sg_bias(n: u32) -> f32 {
  return f32(mm_bias[sg_col(n)]);
}

// L at column n, rank index r (L stored [N, rank], or [rank, N] with lrTrans).
fn sg_l(n: u32, r: u32, rank: u32) -> f32 {
  let c = sg_col(n);
  return f32(mm_lr[select(c * rank + r, r * mm_p.N + c, mm_p.lrTrans != 0u)]);
}

// T at row m (clamped), rank index r.
fn sg_t(m: u32, r: u32, rank: u32) -> f32 {
  return f32(mm_lt[min(m, mm_p.M - 1u) * rank + r]);
}

// mm_drop at C's indices ci..ci+3 (mm_hash on 4 lanes of a vector).
fn sg_drop(ci: u32) -> vec4f {
  var x = (vec4u(ci) + vec4u(0u, 1u, 2u, 3u)) ^ vec4u(mm_p.dropKey);
  x ^= x >> vec4u(16u);
  x *= vec4u(0x7feb352du);
  x ^= x >> vec4u(15u);
  x *= vec4u(0x846ca68bu);
  x ^= x >> vec4u(16u);
  return select(vec4f(0.0), vec4f(mm_p.dropScale), (x >> vec4u(8u)) >= vec4u(mm_p.dropThr));
}

// T's row m (clamped) over r = 0..3, zero past the rank.
fn sg_t4(m: u32, rank: u32) -> vec4f {
  let r = min(vec4u(0u, 1u, 2u, 3u), vec4u(rank - 1u));
  let v = vec4f(sg_t(m, r.x, rank), sg_t(m, r.y, rank), sg_t(m, r.z, rank), sg_t(m, r.w, rank));
  return select(vec4f(0.0), v, vec4u(0u, 1u, 2u, 3u) < vec4u(rank));
}

// L at columns n..n+3, rank index r (clamped; zero past the rank).
fn sg_l4(n: u32, r: u32, rank: u32) -> vec4f {
  let rc = min(r, rank - 1u);
  let v = vec4f(sg_l(n, rc, rank), sg_l(n + 1u, rc, rank), sg_l(n + 2u, rc, rank),
    sg_l(n + 3u, rc, rank));
  return select(vec4f(0.0), v, r < rank);
}

// mm_put's low-rank addend for rows m..m+3 at columns n..n+3 (lr[i]: row m + i), rank <= 4, from
// tq[i][r] = T[m + i][r] and lrL[r][j] = L at column n + j: mm_put's fma chain over r < rank.
fn sg_low_rank4(tq: mat4x4f, lrL: mat4x4f) -> mat4x4f {
  return mat4x4f(sg_lr_row(tq[0], lrL), sg_lr_row(tq[1], lrL), sg_lr_row(tq[2], lrL),
    sg_lr_row(tq[3], lrL));
}

fn sg_lr_row(t: vec4f, lrL: mat4x4f) -> vec4f {
  let rank = mm_p.rank;
  var lr = fma(vec4f(t.x), lrL[0], vec4f(0.0));
  lr = select(lr, fma(vec4f(t.y), lrL[1], lr), 1u < rank);
  lr = select(lr, fma(vec4f(t.z), lrL[2], lr), 2u < rank);
  return select(lr, fma(vec4f(t.w), lrL[3], lr), 3u < rank);
}

// The dropout mask on the low-rank addend of rows m..m+3 at columns n..n+3.
fn sg_mask(z: u32, m: u32, n: u32, lr: mat4x4f) -> mat4x4f {
  let ci = z * mm_p.sC + m * mm_p.N + n;
  return mat4x4f(lr[0] * sg_drop(ci), lr[1] * sg_drop(ci + mm_p.N),
    lr[2] * sg_drop(ci + 2u * mm_p.N), lr[3] * sg_drop(ci + 3u * mm_p.N));
}

// mm_put's low-rank addend for rows m..m+3 at columns n..n+3 (lr[i]: row m + i), any rank: the
// same fma chain over r, 4 columns at a time, each L value loaded once for the 4 rows.
fn sg_low_rank(m: u32, n: u32) -> mat4x4f {
  let rank = sl_bound(mm_p.rank, n);
  var lr = mat4x4f();
  for (var r = 0u; r < rank; r++) {
    let l = vec4f(sg_l(n, r, rank), sg_l(n + 1u, r, rank), sg_l(n + 2u, r, rank),
      sg_l(n + 3u, r, rank));
    lr[0] = fma(vec4f(sg_t(m, r, rank)), l, lr[0]);
    lr[1] = fma(vec4f(sg_t(m + 1u, r, rank)), l, lr[1]);
    lr[2] = fma(vec4f(sg_t(m + 2u, r, rank)), l, lr[2]);
    lr[3] = fma(vec4f(sg_t(m + 3u, r, rank)), l, lr[3]);
  }
  return lr;
}

// Row gm, columns n..n+3 (clamped) of a [batch, M, N] operand like C.
fn sg_aux4(z: u32, gm: u32, n: u32) -> vec4f {
  let r = z * mm_p.sC + gm * mm_p.N;
  return vec4f(f32(mm_aux[r + sg_col(n)]), f32(mm_aux[r + sg_col(n + 1u)]),
    f32(mm_aux[r + sg_col(n + 2u)]), f32(mm_aux[r + sg_col(n + 3u)]));
}

fn sg_c4(z: u32, gm: u32, n: u32) -> vec4f {
  let r = z * mm_p.sC + gm * mm_p.N;
  return vec4f(f32(mm_c[r + sg_col(n)]), f32(mm_c[r + sg_col(n + 1u)]),
    f32(mm_c[r + sg_col(n + 2u)]), f32(mm_c[r + sg_col(n + 3u)]));
}

// mm_put for row gm at columns n..n+3 (acc: the product; lr: the masked low-rank addend), its
// operations in mm_put's order; a row past M is skipped, columns past N are not stored.
fn sg_put(z: u32, gm: u32, n: u32, acc: vec4f, lr: vec4f, bias: vec4f) {
  if (gm >= mm_p.M) { return; }
  var v = mm_p.alpha * acc;
  if (SG_LR != 0u) { v += mm_p.lrScale * lr; }
  if (SG_BIAS) { v += bias; }
  if (SG_BETA) { v += mm_p.beta * sg_c4(z, gm, n); }
  if (MM_RES) { v = vec4f(vec4<dt_c>(v)) + sg_aux4(z, gm, n); }
  if (MM_ACT == 1u) {
    let h = vec4f(vec4<dt_c>(v));
    v = vec4f(sl_gelu(h.x), sl_gelu(h.y), sl_gelu(h.z), sl_gelu(h.w));
  } else if (MM_ACT == 2u) {
    let h = vec4f(vec4<dt_c>(v));
    sg_store2(z, gm, n, vec4f(sl_gelu(h.x), sl_gelu(h.y), sl_gelu(h.z), sl_gelu(h.w)));
  } else if (MM_ACT == 3u) {
    let p = sg_aux4(z, gm, n);
    v = vec4f(vec4<dt_c>(v)) * vec4f(sl_gelu_deriv(p.x), sl_gelu_deriv(p.y),
      sl_gelu_deriv(p.z), sl_gelu_deriv(p.w));
  }
  let ci = z * mm_p.sC + gm * mm_p.N + n;
  if (n < mm_p.N) { mm_c[ci] = dt_c(v.x); }
  if (n + 1u < mm_p.N) { mm_c[ci + 1u] = dt_c(v.y); }
  if (n + 2u < mm_p.N) { mm_c[ci + 2u] = dt_c(v.z); }
  if (n + 3u < mm_p.N) { mm_c[ci + 3u] = dt_c(v.w); }
}

// GELU's output beside its input (MM_ACT 2).
fn sg_store2(z: u32, gm: u32, n: u32, v: vec4f) {
  let ci = z * mm_p.sC + gm * mm_p.N + n;
  if (n < mm_p.N) { mm_c2[ci] = dt_c2(v.x); }
  if (n + 1u < mm_p.N) { mm_c2[ci + 1u] = dt_c2(v.y); }
  if (n + 2u < mm_p.N) { mm_c2[ci + 2u] = dt_c2(v.z); }
  if (n + 3u < mm_p.N) { mm_c2[ci + 3u] = dt_c2(v.w); }
}

// matmul_sg_thin: products with a side of at most 4 (LoRA's rank side: x · Aᵀ, g · B, gᵀ · t,
// uᵀ · x), which matmul_sg's 32x32 blocks would mostly waste. One 8-lane subgroup computes 32
// lines of the long side (lane l: lines p0 + 4l..+3, in THIN_BLOCKS groups of 32) against the
// thin side's 4, as matmul_regs' 4x4 block products (rg_a / rg_b: any layout, dropout, clamped
// edges, k past kEnd zero where K need not be a multiple of 4); the thin operand's 4x4 blocks
// are loaded once per 32 k (lane l: k0 + 4l..) and passed around by shuffles, so each lane's
// loads are almost all of the long operand. With SG_SWAP the thin side is M: the kernel computes
// Cᵀ = op(B)ᵀ · op(A)ᵀ and stores it transposed. The epilogue is mm_put (few outputs).
override SG_SWAP: bool = false;
override THIN_BLOCKS: u32 = 1u; // 1-4

// The long operand's block at lines p..p+3, k..k+3 (column kk = its values at k + kk).
fn thin_long(t: MmTile, p: u32, k: u32) -> mat4x4f {
  if (SG_SWAP) { return transpose(rg_b(t, p, k)); }
  return rg_a(t, p, k);
}

// The thin operand's block at k..k+3 (column j = thin index j over kk).
fn thin_short(t: MmTile, k: u32) -> mat4x4f {
  if (SG_SWAP) { return transpose(rg_a(t, 0u, k)); }
  return rg_b(t, 0u, k);
}

// The lane's 4 lines at p: acc[j] = C[p + i][j] over i (SG_SWAP: C[j][p + i]).
fn thin_store(z: u32, p: u32, acc: mat4x4f) {
  if (SG_SWAP) {
    rg_store(z, 0u, p, transpose(acc));
  } else {
    rg_store(z, p, 0u, acc);
  }
}

@compute @workgroup_size(8)
fn matmul_sg_thin(@builtin(local_invocation_index) l: u32, @builtin(workgroup_id) wid: vec3u) {
  let t = mm_tile(wid);
  let p = select(wid.y, wid.x, SG_SWAP) * 32u * THIN_BLOCKS + 4u * l;
  var acc0 = mat4x4f();
  var acc1 = mat4x4f();
  var acc2 = mat4x4f();
  var acc3 = mat4x4f();
  for (var k0 = t.kStart; k0 < t.kEnd; k0 += 32u) {
    // This lane's share of the thin operand (a valid k when past the slice: never used).
    let ks = k0 + 4u * l;
    let mine = thin_short(t, select(ks, t.kStart, ks >= t.kEnd));
    for (var q = 0u; q < 8u; q++) {
      let k = k0 + 4u * q;
      if (k >= t.kEnd) { break; }
      let s = sg_from_lane(mine, q);
      acc0 += thin_long(t, p, k) * s;
      if (THIN_BLOCKS >= 2u) { acc1 += thin_long(t, p + 32u, k) * s; }
      if (THIN_BLOCKS >= 3u) { acc2 += thin_long(t, p + 64u, k) * s; }
      if (THIN_BLOCKS >= 4u) { acc3 += thin_long(t, p + 96u, k) * s; }
    }
  }
  thin_store(t.z, p, acc0);
  if (THIN_BLOCKS >= 2u) { thin_store(t.z, p + 32u, acc1); }
  if (THIN_BLOCKS >= 3u) { thin_store(t.z, p + 64u, acc2); }
  if (THIN_BLOCKS >= 4u) { thin_store(t.z, p + 96u, acc3); }
}
