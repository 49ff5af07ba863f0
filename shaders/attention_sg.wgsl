// attention_sg: the CPU passes of attention.wgsl (attn_*_regs: same bindings, uniforms and views)
// with the streamed rows shared across a subgroup, for CPU adapters that have subgroups. This
// file is appended to attention.wgsl behind `enable subgroups;` (the family attentionSgFamily in
// src/kernels/attention.ts), so adapters without the feature never compile it; it uses that
// file's NEG, bh_index, rg_valid, rg_rows and fr_mask.
//
// Why (lavapipe, Mesa 22.3, 8-wide AVX2; see shaders/matmul_sg.wgsl for the measured costs): a
// storage load is a loop over the SIMD lanes (9.5 ns per 8 lanes, 29.5 for a vec4), the same
// whether the lanes' addresses are equal or not, while a subgroupShuffle costs a fraction of a
// load. So a workgroup is one 8-lane subgroup owning 32 queries of one (b, h): lane l owns queries
// 32x + 4l + i (i < 4) and, for each block of 32 keys, loads keys j0 + 4l + c (c < 4) as 4x4
// blocks of vec4s (4 dims at a time) that the other lanes take by shuffles. Per 4 dims a lane
// does 8 vec4 loads for 512 score FMAs (attn_fwd_regs: 12 scalar loads for 32), and the output
// rows are read and written once per 32 keys (8 in the regs kernels), the last time already
// divided by the softmax sum. Scores of a lane's queries never leave the lane: the online
// softmax needs no cross-lane reduction.
// Needs: subgroups of at least 8 invocations, and every row start and head dim a multiple of 4
// (vec4 bindings); the launcher checks both and falls back to the regs kernels. Outputs are f32
// (an f16 output goes through the launcher's f32 stand-in, as for the regs kernels).
// Matrix layout: mat4x4f columns; `s` blocks hold column c = key 4Q + c of the block over the
// lane's 4 queries; row blocks (loads of 4 rows at 4 dims) hold column i = row i at 4 dims.

// Lane src's 4x4 block, in every lane.
fn as_lane(a: mat4x4f, src: u32) -> mat4x4f {
  return mat4x4f(
    subgroupShuffle(a[0], src),
    subgroupShuffle(a[1], src),
    subgroupShuffle(a[2], src),
    subgroupShuffle(a[3], src),
  );
}

// vec4 index of rows r..r+3 (clamped to n - 1) of head h: ((b * n + r) * stride + off + h * HD) / 4.
fn as_rows(b: u32, r: u32, n: u32, stride: u32, off: u32, h: u32) -> vec4u {
  return ((b * n + rg_rows(r, n)) * stride + off + h * HD) / 4u;
}

fn as_max(m: vec4f, s: mat4x4f) -> vec4f {
  return max(max(m, max(s[0], s[1])), max(s[2], s[3]));
}

// exp(s - mn) per column, transposed: column i = row i of the probabilities (over 4 keys).
fn as_probs(s: mat4x4f, mn: vec4f) -> mat4x4f {
  return transpose(mat4x4f(exp(s[0] - mn), exp(s[1] - mn), exp(s[2] - mn), exp(s[3] - mn)));
}

// Column i of r times c[i].
fn as_cols(r: mat4x4f, c: vec4f) -> mat4x4f {
  return mat4x4f(r[0] * c.x, r[1] * c.y, r[2] * c.z, r[3] * c.w);
}

// The streamed and owned rows of every pass: bindings 0-2 (q, k, v) in all three, 3 (dO) in the
// two backward passes (the forward's binding 3 is its output, a variable of its own).
@group(0) @binding(0) var<storage, read> as_qb: array<vec4<dt_q>>;
@group(0) @binding(1) var<storage, read> as_kb: array<vec4<dt_k>>;
@group(0) @binding(2) var<storage, read> as_vb: array<vec4<dt_v>>;
@group(0) @binding(3) var<storage, read> as_gb: array<vec4<dt_g>>;

// Rows at vec4 index r + e of 4 rows, as columns.
fn as_q4(r: vec4u, e: u32) -> mat4x4f {
  return mat4x4f(vec4f(as_qb[r.x + e]), vec4f(as_qb[r.y + e]), vec4f(as_qb[r.z + e]),
    vec4f(as_qb[r.w + e]));
}

fn as_k4(r: vec4u, e: u32) -> mat4x4f {
  return mat4x4f(vec4f(as_kb[r.x + e]), vec4f(as_kb[r.y + e]), vec4f(as_kb[r.z + e]),
    vec4f(as_kb[r.w + e]));
}

fn as_v4(r: vec4u, e: u32) -> mat4x4f {
  return mat4x4f(vec4f(as_vb[r.x + e]), vec4f(as_vb[r.y + e]), vec4f(as_vb[r.z + e]),
    vec4f(as_vb[r.w + e]));
}

fn as_g4(r: vec4u, e: u32) -> mat4x4f {
  return mat4x4f(vec4f(as_gb[r.x + e]), vec4f(as_gb[r.y + e]), vec4f(as_gb[r.z + e]),
    vec4f(as_gb[r.w + e]));
}

// ---- forward -----------------------------------------------------------------------------------

@group(0) @binding(3) var<storage, read_write> af_ob: array<vec4f>;
@group(0) @binding(4) var<storage, read_write> af_lse: array<f32>;
@group(0) @binding(5) var<uniform> af_p: AttnParams;

// Grid: x = blocks of 32 queries, y/z = B * heads (bh_index).
@compute @workgroup_size(8)
fn attn_fwd_sg(
  @builtin(local_invocation_index) lane: u32,
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
) {
  let bh = bh_index(wid, nwg);
  if (bh >= af_p.BH) { return; }
  let b = bh / af_p.heads;
  let h = bh % af_p.heads;
  // Sizes through sl_bound (by the workgroup id, which keeps them subgroup-uniform for the
  // shuffles): they bound loops and decide branches (see the prelude).
  let nq = sl_bound(af_p.Nq, wid.x);
  let nk = sl_bound(af_p.Nk, wid.x);
  let scale = af_p.scale;
  let i0 = wid.x * 32u + 4u * lane;
  let ok = rg_valid(i0, nq);
  let qi = as_rows(b, i0, nq, af_p.sq, af_p.oq, h);
  let oi = as_rows(b, i0, nq, af_p.so, af_p.oo, h);
  var m = vec4f(NEG);
  var l = vec4f(0.0);
  for (var j0 = 0u; j0 < nk; j0 += 32u) {
    let ki = as_rows(b, j0 + 4u * lane, nk, af_p.sk, af_p.ok, h);
    let vi = as_rows(b, j0 + 4u * lane, nk, af_p.sv, af_p.ov, h);
    // sQ[c][i] = q_i . k_(j0 + 4Q + c).
    var s0 = mat4x4f();
    var s1 = mat4x4f();
    var s2 = mat4x4f();
    var s3 = mat4x4f();
    var s4 = mat4x4f();
    var s5 = mat4x4f();
    var s6 = mat4x4f();
    var s7 = mat4x4f();
    for (var e = 0u; e < HD / 4u; e++) {
      // x[d][i] = q_i[4e + d]; y[c] = the lane's key c at dims 4e..4e+3.
      let x = transpose(as_q4(qi, e));
      let y = as_k4(ki, e);
      s0 += x * as_lane(y, 0u);
      s1 += x * as_lane(y, 1u);
      s2 += x * as_lane(y, 2u);
      s3 += x * as_lane(y, 3u);
      s4 += x * as_lane(y, 4u);
      s5 += x * as_lane(y, 5u);
      s6 += x * as_lane(y, 6u);
      s7 += x * as_lane(y, 7u);
    }
    s0 = fr_mask(s0 * scale, rg_valid(j0, nk));
    s1 = fr_mask(s1 * scale, rg_valid(j0 + 4u, nk));
    s2 = fr_mask(s2 * scale, rg_valid(j0 + 8u, nk));
    s3 = fr_mask(s3 * scale, rg_valid(j0 + 12u, nk));
    s4 = fr_mask(s4 * scale, rg_valid(j0 + 16u, nk));
    s5 = fr_mask(s5 * scale, rg_valid(j0 + 20u, nk));
    s6 = fr_mask(s6 * scale, rg_valid(j0 + 24u, nk));
    s7 = fr_mask(s7 * scale, rg_valid(j0 + 28u, nk));
    let mx = max(max(as_max(as_max(m, s0), s1), as_max(as_max(m, s2), s3)),
      max(as_max(as_max(m, s4), s5), as_max(as_max(m, s6), s7)));
    // Each block holds at least one valid key, so mx is finite and alpha is a number.
    let alpha = exp(m - mx);
    // pQ[i][c] = exp(s - m) for query i, key j0 + 4Q + c (0 past Nk).
    let p0 = as_probs(s0, mx);
    let p1 = as_probs(s1, mx);
    let p2 = as_probs(s2, mx);
    let p3 = as_probs(s3, mx);
    let p4 = as_probs(s4, mx);
    let p5 = as_probs(s5, mx);
    let p6 = as_probs(s6, mx);
    let p7 = as_probs(s7, mx);
    let one = vec4f(1.0);
    let ps = (p0 + p1) + (p2 + p3) + (p4 + p5) + (p6 + p7);
    l = l * alpha + vec4f(dot(ps[0], one), dot(ps[1], one), dot(ps[2], one), dot(ps[3], one));
    m = mx;
    let first = j0 == 0u;
    // The last block stores the finished rows: out = acc / l.
    let inv = select(one, one / l, j0 + 32u >= nk);
    for (var e = 0u; e < HD / 4u; e++) {
      // r[i] = row i of the output at dims 4e..4e+3: sum over keys of p * v.
      let y = as_v4(vi, e);
      var r = as_lane(y, 0u) * p0 + as_lane(y, 1u) * p1 + as_lane(y, 2u) * p2 +
        as_lane(y, 3u) * p3 + as_lane(y, 4u) * p4 + as_lane(y, 5u) * p5 +
        as_lane(y, 6u) * p6 + as_lane(y, 7u) * p7;
      if (!first) {
        r += as_cols(mat4x4f(af_ob[oi.x + e], af_ob[oi.y + e], af_ob[oi.z + e],
          af_ob[oi.w + e]), alpha);
      }
      r = as_cols(r, inv);
      if (ok.x) { af_ob[oi.x + e] = r[0]; }
      if (ok.y) { af_ob[oi.y + e] = r[1]; }
      if (ok.z) { af_ob[oi.z + e] = r[2]; }
      if (ok.w) { af_ob[oi.w + e] = r[3]; }
    }
  }
  let lse = m + log(l);
  let li = bh * af_p.Nq + i0;
  if (ok.x) { af_lse[li] = lse.x; }
  if (ok.y) { af_lse[li + 1u] = lse.y; }
  if (ok.z) { af_lse[li + 2u] = lse.z; }
  if (ok.w) { af_lse[li + 3u] = lse.w; }
}

// ---- backward: dQ ------------------------------------------------------------------------------
// dS = P * (dO v^T - D), dq = scale * dS k; dq through (s1, o1).

@group(0) @binding(4) var<storage, read> aq_lse: array<f32>;
@group(0) @binding(5) var<storage, read> aq_dd: array<f32>;
@group(0) @binding(6) var<storage, read_write> aq_out: array<vec4f>;
@group(0) @binding(7) var<uniform> aq_p: AttnParams;

// scale * P * (dP - D) for 4 keys (columns; 0 where the key is past Nk), transposed: column i =
// query i over the keys.
fn aq_ds(s: mat4x4f, dp: mat4x4f, lse: vec4f, dsum: vec4f, ok: vec4<bool>, scale: f32) -> mat4x4f {
  let z = vec4f(0.0);
  return transpose(mat4x4f(
    select(z, exp(s[0] * scale - lse) * (dp[0] - dsum) * scale, ok.x),
    select(z, exp(s[1] * scale - lse) * (dp[1] - dsum) * scale, ok.y),
    select(z, exp(s[2] * scale - lse) * (dp[2] - dsum) * scale, ok.z),
    select(z, exp(s[3] * scale - lse) * (dp[3] - dsum) * scale, ok.w)));
}

// Grid: x = blocks of 32 queries, y/z = B * heads (bh_index).
@compute @workgroup_size(8)
fn attn_bwd_q_sg(
  @builtin(local_invocation_index) lane: u32,
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
) {
  let bh = bh_index(wid, nwg);
  if (bh >= aq_p.BH) { return; }
  let b = bh / aq_p.heads;
  let h = bh % aq_p.heads;
  let nq = sl_bound(aq_p.Nq, wid.x);
  let nk = sl_bound(aq_p.Nk, wid.x);
  let scale = aq_p.scale;
  let i0 = wid.x * 32u + 4u * lane;
  let ok = rg_valid(i0, nq);
  let qi = as_rows(b, i0, nq, aq_p.sq, aq_p.oq, h);
  let gi = as_rows(b, i0, nq, aq_p.sg, aq_p.og, h);
  let oi = as_rows(b, i0, nq, aq_p.s1, aq_p.o1, h);
  let li = bh * aq_p.Nq + rg_rows(i0, nq);
  let lse = vec4f(aq_lse[li.x], aq_lse[li.y], aq_lse[li.z], aq_lse[li.w]);
  let dsum = vec4f(aq_dd[li.x], aq_dd[li.y], aq_dd[li.z], aq_dd[li.w]);
  for (var j0 = 0u; j0 < nk; j0 += 32u) {
    let ki = as_rows(b, j0 + 4u * lane, nk, aq_p.sk, aq_p.ok, h);
    let vi = as_rows(b, j0 + 4u * lane, nk, aq_p.sv, aq_p.ov, h);
    // sQ[c][i] = q_i . k_(j0 + 4Q + c), tQ[c][i] = dO_i . v_(j0 + 4Q + c).
    var s0 = mat4x4f();
    var s1 = mat4x4f();
    var s2 = mat4x4f();
    var s3 = mat4x4f();
    var s4 = mat4x4f();
    var s5 = mat4x4f();
    var s6 = mat4x4f();
    var s7 = mat4x4f();
    var t0 = mat4x4f();
    var t1 = mat4x4f();
    var t2 = mat4x4f();
    var t3 = mat4x4f();
    var t4 = mat4x4f();
    var t5 = mat4x4f();
    var t6 = mat4x4f();
    var t7 = mat4x4f();
    for (var e = 0u; e < HD / 4u; e++) {
      let x = transpose(as_q4(qi, e));
      let g = transpose(as_g4(gi, e));
      let yk = as_k4(ki, e);
      let yv = as_v4(vi, e);
      s0 += x * as_lane(yk, 0u);
      s1 += x * as_lane(yk, 1u);
      s2 += x * as_lane(yk, 2u);
      s3 += x * as_lane(yk, 3u);
      s4 += x * as_lane(yk, 4u);
      s5 += x * as_lane(yk, 5u);
      s6 += x * as_lane(yk, 6u);
      s7 += x * as_lane(yk, 7u);
      t0 += g * as_lane(yv, 0u);
      t1 += g * as_lane(yv, 1u);
      t2 += g * as_lane(yv, 2u);
      t3 += g * as_lane(yv, 3u);
      t4 += g * as_lane(yv, 4u);
      t5 += g * as_lane(yv, 5u);
      t6 += g * as_lane(yv, 6u);
      t7 += g * as_lane(yv, 7u);
    }
    let d0 = aq_ds(s0, t0, lse, dsum, rg_valid(j0, nk), scale);
    let d1 = aq_ds(s1, t1, lse, dsum, rg_valid(j0 + 4u, nk), scale);
    let d2 = aq_ds(s2, t2, lse, dsum, rg_valid(j0 + 8u, nk), scale);
    let d3 = aq_ds(s3, t3, lse, dsum, rg_valid(j0 + 12u, nk), scale);
    let d4 = aq_ds(s4, t4, lse, dsum, rg_valid(j0 + 16u, nk), scale);
    let d5 = aq_ds(s5, t5, lse, dsum, rg_valid(j0 + 20u, nk), scale);
    let d6 = aq_ds(s6, t6, lse, dsum, rg_valid(j0 + 24u, nk), scale);
    let d7 = aq_ds(s7, t7, lse, dsum, rg_valid(j0 + 28u, nk), scale);
    let first = j0 == 0u;
    for (var e = 0u; e < HD / 4u; e++) {
      // r[i] = row i of dq at dims 4e..4e+3.
      let y = as_k4(ki, e);
      var r = as_lane(y, 0u) * d0 + as_lane(y, 1u) * d1 + as_lane(y, 2u) * d2 +
        as_lane(y, 3u) * d3 + as_lane(y, 4u) * d4 + as_lane(y, 5u) * d5 +
        as_lane(y, 6u) * d6 + as_lane(y, 7u) * d7;
      if (!first) {
        r += mat4x4f(aq_out[oi.x + e], aq_out[oi.y + e], aq_out[oi.z + e], aq_out[oi.w + e]);
      }
      if (ok.x) { aq_out[oi.x + e] = r[0]; }
      if (ok.y) { aq_out[oi.y + e] = r[1]; }
      if (ok.z) { aq_out[oi.z + e] = r[2]; }
      if (ok.w) { aq_out[oi.w + e] = r[3]; }
    }
  }
}

// ---- backward: dK, dV (attn_bwd_kv_sg) ---------------------------------------------------------
// dv = P^T dO, dk = scale * dS^T q (dS = P * (dO v^T - D)); dk through (s1, o1), dv through
// (s2, o2), both in one f32 binding as in attn_bwd_kv_regs. A workgroup is one 8-lane subgroup
// owning 32 keys of one (b, h): lane l owns keys 32x + 4l + c (c < 4) and, per block of
// 4 * KV_LANES queries, loads queries and dO rows i0 + 4l + i (i < 4) as 4x4 blocks of vec4s (and
// their lse and D) that the other lanes take by shuffles. Per 4 dims a lane then does 16 vec4
// loads for 1024 FMAs (the scores q k^T and dP = dO v^T of its 4 keys against all 32 queries;
// attn_bwd_kv_regs: 24 scalar loads for 64), and the dk, dv rows are read and written once per
// 32 queries (8 in the regs kernel). Scores, P and dS never leave the lane: the softmax
// statistics come precomputed (lse, D), so no cross-lane reduction is needed.
// KV_LANES = 8 (32-query blocks), or 4, 2, 1 for Nq <= 16, 8, 4 (q-pooled blocks, 4x4 windows):
// lanes past KV_LANES then load copies of the first lanes' rows, which nothing reads. Measured on
// lavapipe, see src/kernels/attention.ts (kvSgLanes).
override KV_LANES: u32 = 8u;

@group(0) @binding(4) var<storage, read> ak_lse: array<f32>;
@group(0) @binding(5) var<storage, read> ak_dd: array<f32>;
@group(0) @binding(6) var<storage, read_write> ak_out: array<vec4f>;
@group(0) @binding(7) var<uniform> ak_p: AttnParams;

fn ak_o4(r: vec4u, e: u32) -> mat4x4f {
  return mat4x4f(ak_out[r.x + e], ak_out[r.y + e], ak_out[r.z + e], ak_out[r.w + e]);
}

// P and scale * dS of the lane's 4 keys against one source lane's 4 queries, transposed for the
// second phase (column c = key c over the queries).
struct AkProbs {
  p: mat4x4f,
  ds: mat4x4f,
}

// s, dp: column i = query i over the lane's keys; lse, dsum, ok: per query (ok false past Nq,
// whose P and dS are 0).
fn ak_probs(s: mat4x4f, dp: mat4x4f, lse: vec4f, dsum: vec4f, ok: vec4<bool>, scale: f32)
  -> AkProbs {
  let z = vec4f(0.0);
  let p = mat4x4f(
    select(z, exp(s[0] * scale - lse.x), ok.x),
    select(z, exp(s[1] * scale - lse.y), ok.y),
    select(z, exp(s[2] * scale - lse.z), ok.z),
    select(z, exp(s[3] * scale - lse.w), ok.w));
  let ds = mat4x4f((dp[0] - dsum.x) * p[0], (dp[1] - dsum.y) * p[1], (dp[2] - dsum.z) * p[2],
    (dp[3] - dsum.w) * p[3]) * scale;
  return AkProbs(transpose(p), transpose(ds));
}

// Source lane src's lse and D.
fn ak_stats(src: u32, i0: u32, lse: vec4f, dsum: vec4f, s: mat4x4f, dp: mat4x4f, nq: u32,
  scale: f32) -> AkProbs {
  return ak_probs(s, dp, subgroupShuffle(lse, src), subgroupShuffle(dsum, src),
    rg_valid(i0 + 4u * src, nq), scale);
}

// Grid: x = blocks of 32 keys, y/z = B * heads (bh_index).
@compute @workgroup_size(8)
fn attn_bwd_kv_sg(
  @builtin(local_invocation_index) lane: u32,
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
) {
  let bh = bh_index(wid, nwg);
  if (bh >= ak_p.BH) { return; }
  let b = bh / ak_p.heads;
  let h = bh % ak_p.heads;
  // Sizes through sl_bound (see the prelude), with the workgroup id: a lane id would make the
  // loop, and so its shuffles, non-uniform for WGSL's uniformity analysis.
  let nq = sl_bound(ak_p.Nq, wid.x);
  let nk = sl_bound(ak_p.Nk, wid.x);
  let scale = ak_p.scale;
  let j0 = wid.x * 32u + 4u * lane;
  let ok = rg_valid(j0, nk);
  let ki = as_rows(b, j0, nk, ak_p.sk, ak_p.ok, h);
  let vi = as_rows(b, j0, nk, ak_p.sv, ak_p.ov, h);
  let dk = as_rows(b, j0, nk, ak_p.s1, ak_p.o1, h);
  let dv = as_rows(b, j0, nk, ak_p.s2, ak_p.o2, h);
  for (var i0 = 0u; i0 < nq; i0 += 4u * KV_LANES) {
    let mine = i0 + 4u * (lane % KV_LANES);
    let qi = as_rows(b, mine, nq, ak_p.sq, ak_p.oq, h);
    let gi = as_rows(b, mine, nq, ak_p.sg, ak_p.og, h);
    // sQ[i][c] = q_(i0 + 4Q + i) . k_c, tQ[i][c] = dO_(i0 + 4Q + i) . v_c (c: the lane's keys).
    var s0 = mat4x4f();
    var s1 = mat4x4f();
    var s2 = mat4x4f();
    var s3 = mat4x4f();
    var s4 = mat4x4f();
    var s5 = mat4x4f();
    var s6 = mat4x4f();
    var s7 = mat4x4f();
    var t0 = mat4x4f();
    var t1 = mat4x4f();
    var t2 = mat4x4f();
    var t3 = mat4x4f();
    var t4 = mat4x4f();
    var t5 = mat4x4f();
    var t6 = mat4x4f();
    var t7 = mat4x4f();
    // Scores and dP in two passes over the dims, and dk and dv below in two more, each with 8
    // live 4x4 blocks rather than 16 (the loads are the same): measured 10-25% faster on
    // lavapipe than one pass per phase, likely fewer register spills.
    for (var e = 0u; e < HD / 4u; e++) {
      // xk[d][c] = k_c[4e + d]; yq: column i = query row i at 4e..4e+3.
      let xk = transpose(as_k4(ki, e));
      let yq = as_q4(qi, e);
      s0 += xk * as_lane(yq, 0u);
      if (KV_LANES > 1u) {
        s1 += xk * as_lane(yq, 1u);
      }
      if (KV_LANES > 2u) {
        s2 += xk * as_lane(yq, 2u);
        s3 += xk * as_lane(yq, 3u);
      }
      if (KV_LANES > 4u) {
        s4 += xk * as_lane(yq, 4u);
        s5 += xk * as_lane(yq, 5u);
        s6 += xk * as_lane(yq, 6u);
        s7 += xk * as_lane(yq, 7u);
      }
    }
    for (var e = 0u; e < HD / 4u; e++) {
      let xv = transpose(as_v4(vi, e));
      let yg = as_g4(gi, e);
      t0 += xv * as_lane(yg, 0u);
      if (KV_LANES > 1u) {
        t1 += xv * as_lane(yg, 1u);
      }
      if (KV_LANES > 2u) {
        t2 += xv * as_lane(yg, 2u);
        t3 += xv * as_lane(yg, 3u);
      }
      if (KV_LANES > 4u) {
        t4 += xv * as_lane(yg, 4u);
        t5 += xv * as_lane(yg, 5u);
        t6 += xv * as_lane(yg, 6u);
        t7 += xv * as_lane(yg, 7u);
      }
    }
    let li = bh * ak_p.Nq + rg_rows(mine, nq);
    let lse = vec4f(ak_lse[li.x], ak_lse[li.y], ak_lse[li.z], ak_lse[li.w]);
    let dsum = vec4f(ak_dd[li.x], ak_dd[li.y], ak_dd[li.z], ak_dd[li.w]);
    let p0 = ak_stats(0u, i0, lse, dsum, s0, t0, nq, scale);
    let p1 = ak_stats(1u, i0, lse, dsum, s1, t1, nq, scale);
    let p2 = ak_stats(2u, i0, lse, dsum, s2, t2, nq, scale);
    let p3 = ak_stats(3u, i0, lse, dsum, s3, t3, nq, scale);
    let p4 = ak_stats(4u, i0, lse, dsum, s4, t4, nq, scale);
    let p5 = ak_stats(5u, i0, lse, dsum, s5, t5, nq, scale);
    let p6 = ak_stats(6u, i0, lse, dsum, s6, t6, nq, scale);
    let p7 = ak_stats(7u, i0, lse, dsum, s7, t7, nq, scale);
    let first = i0 == 0u;
    // dk, then dv (a pass each, see above).
    for (var e = 0u; e < HD / 4u; e++) {
      // r[c] = key c's dk at dims 4e..4e+3: sum over the block's queries of dS q.
      let yq = as_q4(qi, e);
      var r = as_lane(yq, 0u) * p0.ds;
      if (KV_LANES > 1u) {
        r += as_lane(yq, 1u) * p1.ds;
      }
      if (KV_LANES > 2u) {
        r += as_lane(yq, 2u) * p2.ds + as_lane(yq, 3u) * p3.ds;
      }
      if (KV_LANES > 4u) {
        r += as_lane(yq, 4u) * p4.ds + as_lane(yq, 5u) * p5.ds + as_lane(yq, 6u) * p6.ds +
          as_lane(yq, 7u) * p7.ds;
      }
      if (!first) { r += ak_o4(dk, e); }
      if (ok.x) { ak_out[dk.x + e] = r[0]; }
      if (ok.y) { ak_out[dk.y + e] = r[1]; }
      if (ok.z) { ak_out[dk.z + e] = r[2]; }
      if (ok.w) { ak_out[dk.w + e] = r[3]; }
    }
    for (var e = 0u; e < HD / 4u; e++) {
      // r[c] = key c's dv at dims 4e..4e+3: sum over the block's queries of P dO.
      let yg = as_g4(gi, e);
      var r = as_lane(yg, 0u) * p0.p;
      if (KV_LANES > 1u) {
        r += as_lane(yg, 1u) * p1.p;
      }
      if (KV_LANES > 2u) {
        r += as_lane(yg, 2u) * p2.p + as_lane(yg, 3u) * p3.p;
      }
      if (KV_LANES > 4u) {
        r += as_lane(yg, 4u) * p4.p + as_lane(yg, 5u) * p5.p + as_lane(yg, 6u) * p6.p +
          as_lane(yg, 7u) * p7.p;
      }
      if (!first) { r += ak_o4(dv, e); }
      if (ok.x) { ak_out[dv.x + e] = r[0]; }
      if (ok.y) { ak_out[dv.y + e] = r[1]; }
      if (ok.z) { ak_out[dv.z + e] = r[2]; }
      if (ok.w) { ak_out[dv.w + e] = r[3]; }
    }
  }
}
