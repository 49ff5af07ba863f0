// Flash-style multi-head attention, softmax(scale * q k^T) v, never materialising the
// [Nq, Nk] score matrix: key/value (or query) blocks stream through workgroup memory with an
// online softmax. Forward saves lse = logsumexp of each score row; backward recomputes the
// probabilities from it (FlashAttention-2): D = rowsum(dO * O), then one pass over key blocks
// for dK, dV and one over query blocks for dQ (no float atomics in WGSL, so each gradient has
// a single writer).
// Layout: token rows with (stride, offset): element (b, i, h, d) of q sits at
// q[(b * Nq + i) * sq + oq + h * HS + d], so q, k, v (and dq, dk, dv) can live inside one packed
// [B, N, 3C] tensor. lse and D are contiguous [B * heads, Nq].
// Workgroups: TPR threads per row (query row in attn_fwd / attn_bwd_q, key row in attn_bwd_kv);
// thread t of a row owns output dims t, t + TPR, ... (NDT of them). grid.x = row blocks,
// grid.y/z = B * heads (folded into z past the per-dimension limit).
// Bindings: inputs (read), outputs (read_write), uniforms last.

override HD: u32 = 16;
// Rows (queries or keys) per workgroup and threads per row.
override BR: u32 = 16;
override TPR: u32 = 16;
// Rows of the streamed operand per block.
override BC: u32 = 16;
override NDT: u32 = (HD + TPR - 1u) / TPR;
// Row stride of the workgroup tiles: the threads of a row read different rows at the same d in
// the dot products, and an odd stride puts those reads in different memory banks.
override HS: u32 = HD + 1u;
override WG: u32 = 256;
// Bound on NDT, for the per-thread accumulators (private arrays need a constant size).
const MAXDT: u32 = 16u;
// Score of an out-of-range key: exp underflows to exactly 0, without inf arithmetic.
const NEG: f32 = -3.0e38;

fn bh_index(wid: vec3u, nwg: vec3u) -> u32 {
  return wid.y + wid.z * nwg.y;
}

// ---- forward ---------------------------------------------------------------------------------
// One workgroup = BR query rows of one (b, h); streams BC-key blocks of K and V.

@group(0) @binding(0) var<storage, read> fw_qb: array<dt_q>;
@group(0) @binding(1) var<storage, read> fw_kb: array<dt_k>;
@group(0) @binding(2) var<storage, read> fw_vb: array<dt_v>;
@group(0) @binding(3) var<storage, read_write> fw_ob: array<dt_o>;
@group(0) @binding(4) var<storage, read_write> fw_lse: array<f32>;
@group(0) @binding(5) var<uniform> fw_p: AttnParams;

var<workgroup> fw_q: array<f32, BR * HS>;
var<workgroup> fw_k: array<f32, BC * HS>;
var<workgroup> fw_v: array<f32, BC * HS>;
var<workgroup> fw_s: array<f32, BR * BC>;

@compute @workgroup_size(BR * TPR)
fn attn_fwd(
  @builtin(local_invocation_index) lid: u32,
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
) {
  let bh = bh_index(wid, nwg);
  if (bh >= fw_p.BH) { return; }
  let b = bh / fw_p.heads;
  let h = bh % fw_p.heads;
  let q0 = wid.x * BR;
  let r = lid / TPR;
  let t = lid % TPR;
  let nt = BR * TPR;

  // Query block, pre-scaled so scores need no multiply; rows past Nq are zero (never written).
  for (var e = lid; e < BR * HD; e += nt) {
    let i = q0 + e / HD;
    var x = 0.0;
    if (i < fw_p.Nq) { x = f32(fw_qb[(b * fw_p.Nq + i) * fw_p.sq + fw_p.oq + h * HD + e % HD]); }
    fw_q[(e / HD) * HS + e % HD] = x * fw_p.scale;
  }

  var m = NEG;
  var l = 0.0;
  var acc: array<f32, MAXDT>;
  for (var k0 = 0u; k0 < fw_p.Nk; k0 += BC) {
    for (var e = lid; e < BC * HD; e += nt) {
      let j = k0 + e / HD;
      var kx = 0.0;
      var vx = 0.0;
      if (j < fw_p.Nk) {
        let c = h * HD + e % HD;
        kx = f32(fw_kb[(b * fw_p.Nk + j) * fw_p.sk + fw_p.ok + c]);
        vx = f32(fw_vb[(b * fw_p.Nk + j) * fw_p.sv + fw_p.ov + c]);
      }
      fw_k[(e / HD) * HS + e % HD] = kx;
      fw_v[(e / HD) * HS + e % HD] = vx;
    }
    workgroupBarrier();
    for (var j = t; j < BC; j += TPR) {
      var s = NEG;
      if (k0 + j < fw_p.Nk) {
        s = 0.0;
        for (var d = 0u; d < HD; d++) { s += fw_q[r * HS + d] * fw_k[j * HS + d]; }
      }
      fw_s[r * BC + j] = s;
    }
    workgroupBarrier();
    // Every thread of the row redoes the row's max and sum (cheap next to the dot products, and
    // it saves two barriers); each block holds at least one valid key, so mn is finite.
    var mb = NEG;
    for (var j = 0u; j < BC; j++) { mb = max(mb, fw_s[r * BC + j]); }
    let mn = max(m, mb);
    let alpha = exp(m - mn);
    l *= alpha;
    for (var u = 0u; u < NDT; u++) { acc[u] *= alpha; }
    for (var j = 0u; j < BC; j++) {
      let pj = exp(fw_s[r * BC + j] - mn);
      l += pj;
      for (var u = 0u; u < NDT; u++) {
        let d = t + u * TPR;
        if (d < HD) { acc[u] += pj * fw_v[j * HS + d]; }
      }
    }
    m = mn;
    workgroupBarrier();
  }

  let i = q0 + r;
  if (i < fw_p.Nq) {
    let row = (b * fw_p.Nq + i) * fw_p.so + fw_p.oo + h * HD;
    let inv = 1.0 / l;
    for (var u = 0u; u < NDT; u++) {
      let d = t + u * TPR;
      if (d < HD) { fw_ob[row + d] = dt_o(acc[u] * inv); }
    }
    if (t == 0u) { fw_lse[bh * fw_p.Nq + i] = m + log(l); }
  }
}

// ---- backward: D = rowsum(dO * O) --------------------------------------------------------------
// One thread = one (b, h, query row). O is read through (so, oo), dO through (sg, og).

@group(0) @binding(0) var<storage, read> dd_g: array<dt_g>;
@group(0) @binding(1) var<storage, read> dd_o: array<dt_o>;
@group(0) @binding(2) var<storage, read_write> dd_out: array<f32>;
@group(0) @binding(3) var<uniform> dd_p: AttnParams;

@compute @workgroup_size(WG)
fn attn_bwd_d(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let n = gid.x + gid.y * nwg.x * WG;
  if (n >= dd_p.BH * dd_p.Nq) { return; }
  let bh = n / dd_p.Nq;
  let i = n % dd_p.Nq;
  let b = bh / dd_p.heads;
  let h = bh % dd_p.heads;
  let tok = b * dd_p.Nq + i;
  let gr = tok * dd_p.sg + dd_p.og + h * HD;
  let orow = tok * dd_p.so + dd_p.oo + h * HD;
  var s = 0.0;
  for (var d = 0u; d < HD; d++) { s += f32(dd_g[gr + d]) * f32(dd_o[orow + d]); }
  dd_out[n] = s;
}

// ---- backward: dQ ----------------------------------------------------------------------------
// One workgroup = BR query rows of one (b, h); streams BC-key blocks.
// dS = P * (dO v^T - D), dq = scale * dS k. Output through (s1, o1).

@group(0) @binding(0) var<storage, read> bq_qb: array<dt_q>;
@group(0) @binding(1) var<storage, read> bq_kb: array<dt_k>;
@group(0) @binding(2) var<storage, read> bq_vb: array<dt_v>;
@group(0) @binding(3) var<storage, read> bq_gb: array<dt_g>;
@group(0) @binding(4) var<storage, read> bq_lse: array<f32>;
@group(0) @binding(5) var<storage, read> bq_dd: array<f32>;
@group(0) @binding(6) var<storage, read_write> bq_out: array<dt_out>;
@group(0) @binding(7) var<uniform> bq_p: AttnParams;

var<workgroup> bq_q: array<f32, BR * HS>;
var<workgroup> bq_g: array<f32, BR * HS>;
var<workgroup> bq_k: array<f32, BC * HS>;
var<workgroup> bq_v: array<f32, BC * HS>;
var<workgroup> bq_s: array<f32, BR * BC>;

@compute @workgroup_size(BR * TPR)
fn attn_bwd_q(
  @builtin(local_invocation_index) lid: u32,
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
) {
  let bh = bh_index(wid, nwg);
  if (bh >= bq_p.BH) { return; }
  let b = bh / bq_p.heads;
  let h = bh % bq_p.heads;
  let q0 = wid.x * BR;
  let r = lid / TPR;
  let t = lid % TPR;
  let nt = BR * TPR;

  for (var e = lid; e < BR * HD; e += nt) {
    let i = q0 + e / HD;
    var qx = 0.0;
    var gx = 0.0;
    if (i < bq_p.Nq) {
      let tok = b * bq_p.Nq + i;
      qx = f32(bq_qb[tok * bq_p.sq + bq_p.oq + h * HD + e % HD]);
      gx = f32(bq_gb[tok * bq_p.sg + bq_p.og + h * HD + e % HD]);
    }
    bq_q[(e / HD) * HS + e % HD] = qx * bq_p.scale;
    bq_g[(e / HD) * HS + e % HD] = gx;
  }
  let i = q0 + r;
  var lse = 0.0;
  var dsum = 0.0;
  if (i < bq_p.Nq) {
    lse = bq_lse[bh * bq_p.Nq + i];
    dsum = bq_dd[bh * bq_p.Nq + i];
  }

  var acc: array<f32, MAXDT>;
  for (var k0 = 0u; k0 < bq_p.Nk; k0 += BC) {
    for (var e = lid; e < BC * HD; e += nt) {
      let j = k0 + e / HD;
      var kx = 0.0;
      var vx = 0.0;
      if (j < bq_p.Nk) {
        let c = h * HD + e % HD;
        kx = f32(bq_kb[(b * bq_p.Nk + j) * bq_p.sk + bq_p.ok + c]);
        vx = f32(bq_vb[(b * bq_p.Nk + j) * bq_p.sv + bq_p.ov + c]);
      }
      bq_k[(e / HD) * HS + e % HD] = kx;
      bq_v[(e / HD) * HS + e % HD] = vx;
    }
    workgroupBarrier();
    for (var j = t; j < BC; j += TPR) {
      var ds = 0.0;
      if (k0 + j < bq_p.Nk && i < bq_p.Nq) {
        var s = 0.0;
        var dp = 0.0;
        for (var d = 0u; d < HD; d++) {
          s += bq_q[r * HS + d] * bq_k[j * HS + d];
          dp += bq_g[r * HS + d] * bq_v[j * HS + d];
        }
        ds = exp(s - lse) * (dp - dsum);
      }
      bq_s[r * BC + j] = ds;
    }
    workgroupBarrier();
    for (var j = 0u; j < BC; j++) {
      let ds = bq_s[r * BC + j];
      for (var u = 0u; u < NDT; u++) {
        let d = t + u * TPR;
        if (d < HD) { acc[u] += ds * bq_k[j * HS + d]; }
      }
    }
    workgroupBarrier();
  }

  if (i < bq_p.Nq) {
    let row = (b * bq_p.Nq + i) * bq_p.s1 + bq_p.o1 + h * HD;
    for (var u = 0u; u < NDT; u++) {
      let d = t + u * TPR;
      if (d < HD) { bq_out[row + d] = dt_out(acc[u] * bq_p.scale); }
    }
  }
}

// ---- backward: dK, dV ------------------------------------------------------------------------
// One workgroup = BR key rows of one (b, h); streams BC-query blocks.
// dv = P^T dO, dk = scale * dS^T q. Both go to one buffer: dk through (s1, o1), dv through
// (s2, o2) (two writable bindings may not alias, and in the packed case they are one tensor).

@group(0) @binding(0) var<storage, read> bk_qb: array<dt_q>;
@group(0) @binding(1) var<storage, read> bk_kb: array<dt_k>;
@group(0) @binding(2) var<storage, read> bk_vb: array<dt_v>;
@group(0) @binding(3) var<storage, read> bk_gb: array<dt_g>;
@group(0) @binding(4) var<storage, read> bk_lse: array<f32>;
@group(0) @binding(5) var<storage, read> bk_dd: array<f32>;
@group(0) @binding(6) var<storage, read_write> bk_out: array<dt_out>;
@group(0) @binding(7) var<uniform> bk_p: AttnParams;

var<workgroup> bk_k: array<f32, BR * HS>;
var<workgroup> bk_v: array<f32, BR * HS>;
var<workgroup> bk_q: array<f32, BC * HS>;
var<workgroup> bk_g: array<f32, BC * HS>;
var<workgroup> bk_l: array<f32, BC>;
var<workgroup> bk_d: array<f32, BC>;
var<workgroup> bk_pp: array<f32, BC * BR>;
var<workgroup> bk_ds: array<f32, BC * BR>;

@compute @workgroup_size(BR * TPR)
fn attn_bwd_kv(
  @builtin(local_invocation_index) lid: u32,
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
) {
  let bh = bh_index(wid, nwg);
  if (bh >= bk_p.BH) { return; }
  let b = bh / bk_p.heads;
  let h = bh % bk_p.heads;
  let k0 = wid.x * BR;
  let r = lid / TPR;
  let t = lid % TPR;
  let nt = BR * TPR;

  for (var e = lid; e < BR * HD; e += nt) {
    let j = k0 + e / HD;
    var kx = 0.0;
    var vx = 0.0;
    if (j < bk_p.Nk) {
      let c = h * HD + e % HD;
      kx = f32(bk_kb[(b * bk_p.Nk + j) * bk_p.sk + bk_p.ok + c]);
      vx = f32(bk_vb[(b * bk_p.Nk + j) * bk_p.sv + bk_p.ov + c]);
    }
    bk_k[(e / HD) * HS + e % HD] = kx;
    bk_v[(e / HD) * HS + e % HD] = vx;
  }
  let j = k0 + r;

  var ak: array<f32, MAXDT>;
  var av: array<f32, MAXDT>;
  for (var q0 = 0u; q0 < bk_p.Nq; q0 += BC) {
    for (var e = lid; e < BC * HD; e += nt) {
      let i = q0 + e / HD;
      var qx = 0.0;
      var gx = 0.0;
      if (i < bk_p.Nq) {
        let tok = b * bk_p.Nq + i;
        qx = f32(bk_qb[tok * bk_p.sq + bk_p.oq + h * HD + e % HD]);
        gx = f32(bk_gb[tok * bk_p.sg + bk_p.og + h * HD + e % HD]);
      }
      bk_q[(e / HD) * HS + e % HD] = qx * bk_p.scale;
      bk_g[(e / HD) * HS + e % HD] = gx;
    }
    for (var e = lid; e < BC; e += nt) {
      let i = q0 + e;
      var lx = 0.0;
      var dx = 0.0;
      if (i < bk_p.Nq) {
        lx = bk_lse[bh * bk_p.Nq + i];
        dx = bk_dd[bh * bk_p.Nq + i];
      }
      bk_l[e] = lx;
      bk_d[e] = dx;
    }
    workgroupBarrier();
    for (var ii = t; ii < BC; ii += TPR) {
      var pr = 0.0;
      var ds = 0.0;
      if (q0 + ii < bk_p.Nq && j < bk_p.Nk) {
        var s = 0.0;
        var dp = 0.0;
        for (var d = 0u; d < HD; d++) {
          s += bk_q[ii * HS + d] * bk_k[r * HS + d];
          dp += bk_g[ii * HS + d] * bk_v[r * HS + d];
        }
        pr = exp(s - bk_l[ii]);
        ds = pr * (dp - bk_d[ii]);
      }
      bk_pp[ii * BR + r] = pr;
      bk_ds[ii * BR + r] = ds;
    }
    workgroupBarrier();
    for (var ii = 0u; ii < BC; ii++) {
      let pr = bk_pp[ii * BR + r];
      let ds = bk_ds[ii * BR + r];
      for (var u = 0u; u < NDT; u++) {
        let d = t + u * TPR;
        if (d < HD) {
          av[u] += pr * bk_g[ii * HS + d];
          ak[u] += ds * bk_q[ii * HS + d];
        }
      }
    }
    workgroupBarrier();
  }

  if (j < bk_p.Nk) {
    let tok = b * bk_p.Nk + j;
    let rk = tok * bk_p.s1 + bk_p.o1 + h * HD;
    let rv = tok * bk_p.s2 + bk_p.o2 + h * HD;
    for (var u = 0u; u < NDT; u++) {
      let d = t + u * TPR;
      if (d < HD) {
        // The query block was pre-scaled, so ak already carries the softmax scale.
        bk_out[rk + d] = dt_out(ak[u]);
        bk_out[rv + d] = dt_out(av[u]);
      }
    }
  }
}

// ---- zeroed columns (column copies use copy.wgsl's cols) -------------------------------------

@group(0) @binding(0) var<storage, read_write> cz_out: array<dt_out>;
@group(0) @binding(1) var<uniform> cz_p: ColsParams;

// out[r * so + oo + c] = 0 for r < rows, c < cols: the unused q columns of a packed gradient.
@compute @workgroup_size(WG)
fn attn_zero_cols(
  @builtin(global_invocation_id) gid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
) {
  let n = gid.x + gid.y * nwg.x * WG;
  if (n >= cz_p.rows * cz_p.cols) { return; }
  cz_out[(n / cz_p.cols) * cz_p.so + cz_p.oo + n % cz_p.cols] = dt_out(0.0);
}

// ---- CPU variants ----------------------------------------------------------------------------
// attn_*_regs: the same three passes (same bindings and views) without workgroup memory or
// barriers, for CPU adapters: llvmpipe runs a workgroup as a SIMD loop over its invocations,
// where a barrier switches coroutines and each shared-memory access is a per-lane gather, so the
// tiled kernels above spend more on staging than on arithmetic. One thread = 4 rows (queries, or
// keys in bwd_kv) of one (b, h), streaming the other side 8 rows at a time (two 4-row halves):
// each streamed element feeds 4 FMAs, each of the thread's own 8. The running output accumulates
// in the output rows themselves (each thread is their only writer), since per-thread registers
// cannot hold 4 x HD floats for any HD.
// Threads are numbered over (b, h, row block) on a 1-D grid folded into y; rows past the end are
// clamped for loads and never stored; streamed rows past the end get probability 0.

fn rg_valid(i: u32, n: u32) -> vec4<bool> {
  return vec4u(i, i + 1u, i + 2u, i + 3u) < vec4u(n);
}

fn rg_rows(i: u32, n: u32) -> vec4u {
  return min(vec4u(i, i + 1u, i + 2u, i + 3u), vec4u(n - 1u));
}

// Matrix columns are indexed with constants throughout: llvmpipe puts a dynamically indexed
// private matrix or array in per-invocation scratch memory, which costs more than the kernel.

// Column j of s where key j is valid, else NEG (exp gives exactly 0).
fn fr_mask(s: mat4x4f, ok: vec4<bool>) -> mat4x4f {
  let neg = vec4f(NEG);
  return mat4x4f(select(neg, s[0], ok.x), select(neg, s[1], ok.y), select(neg, s[2], ok.z),
    select(neg, s[3], ok.w));
}

@group(0) @binding(0) var<storage, read> fr_qb: array<dt_q>;
@group(0) @binding(1) var<storage, read> fr_kb: array<dt_k>;
@group(0) @binding(2) var<storage, read> fr_vb: array<dt_v>;
@group(0) @binding(3) var<storage, read_write> fr_ob: array<f32>;
@group(0) @binding(4) var<storage, read_write> fr_lse: array<f32>;
@group(0) @binding(5) var<uniform> fr_p: AttnParams;

@compute @workgroup_size(WG)
fn attn_fwd_regs(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let blocks = (fr_p.Nq + 3u) / 4u;
  let n = gid.x + gid.y * nwg.x * WG;
  if (n >= fr_p.BH * blocks) { return; }
  let bh = n / blocks;
  let b = bh / fr_p.heads;
  let h = bh % fr_p.heads;
  let i0 = (n % blocks) * 4u;
  let ok = rg_valid(i0, fr_p.Nq);
  let qi = (b * fr_p.Nq + rg_rows(i0, fr_p.Nq)) * fr_p.sq + fr_p.oq + h * HD;
  let oi = (b * fr_p.Nq + rg_rows(i0, fr_p.Nq)) * fr_p.so + fr_p.oo + h * HD;
  var m = vec4f(NEG);
  var l = vec4f(0.0);
  // Keys stream 8 at a time (two 4-key halves), so each pass over the output rows serves 8.
  for (var j0 = 0u; j0 < sl_bound(fr_p.Nk, gid.x); j0 += 8u) {
    let ra = rg_rows(j0, fr_p.Nk);
    let rb = rg_rows(j0 + 4u, fr_p.Nk);
    let ka = (b * fr_p.Nk + ra) * fr_p.sk + fr_p.ok + h * HD;
    let kb = (b * fr_p.Nk + rb) * fr_p.sk + fr_p.ok + h * HD;
    let va = (b * fr_p.Nk + ra) * fr_p.sv + fr_p.ov + h * HD;
    let vb = (b * fr_p.Nk + rb) * fr_p.sv + fr_p.ov + h * HD;
    // sX[j][i] = q_i . k_j for key j of half X.
    var sa = mat4x4f();
    var sb = mat4x4f();
    for (var d = 0u; d < HD; d++) {
      let q = vec4f(f32(fr_qb[qi.x + d]), f32(fr_qb[qi.y + d]),
        f32(fr_qb[qi.z + d]), f32(fr_qb[qi.w + d]));
      sa[0] += q * f32(fr_kb[ka.x + d]);
      sa[1] += q * f32(fr_kb[ka.y + d]);
      sa[2] += q * f32(fr_kb[ka.z + d]);
      sa[3] += q * f32(fr_kb[ka.w + d]);
      sb[0] += q * f32(fr_kb[kb.x + d]);
      sb[1] += q * f32(fr_kb[kb.y + d]);
      sb[2] += q * f32(fr_kb[kb.z + d]);
      sb[3] += q * f32(fr_kb[kb.w + d]);
    }
    let oka = rg_valid(j0, fr_p.Nk);
    let okb = rg_valid(j0 + 4u, fr_p.Nk);
    sa = fr_mask(sa * fr_p.scale, oka);
    sb = fr_mask(sb * fr_p.scale, okb);
    let mx = max(max(max(sa[0], sa[1]), max(sa[2], sa[3])),
      max(max(sb[0], sb[1]), max(sb[2], sb[3])));
    let mn = max(m, mx);
    let alpha = exp(m - mn);
    let pa = mat4x4f(exp(sa[0] - mn), exp(sa[1] - mn), exp(sa[2] - mn), exp(sa[3] - mn));
    let pb = mat4x4f(exp(sb[0] - mn), exp(sb[1] - mn), exp(sb[2] - mn), exp(sb[3] - mn));
    l = l * alpha + pa[0] + pa[1] + pa[2] + pa[3] + pb[0] + pb[1] + pb[2] + pb[3];
    m = mn;
    let first = j0 == 0u;
    for (var d = 0u; d < HD; d++) {
      let v0 = vec4f(f32(fr_vb[va.x + d]), f32(fr_vb[va.y + d]),
        f32(fr_vb[va.z + d]), f32(fr_vb[va.w + d]));
      let v1 = vec4f(f32(fr_vb[vb.x + d]), f32(fr_vb[vb.y + d]),
        f32(fr_vb[vb.z + d]), f32(fr_vb[vb.w + d]));
      // acc_i = acc_i * alpha_i + sum_j p[j][i] v_j: P times v as matrix-vector products.
      var acc = vec4f(0.0);
      if (!first) {
        acc = vec4f(fr_ob[oi.x + d], fr_ob[oi.y + d], fr_ob[oi.z + d], fr_ob[oi.w + d]) * alpha;
      }
      acc += pa * v0 + pb * v1;
      if (ok.x) { fr_ob[oi.x + d] = acc.x; }
      if (ok.y) { fr_ob[oi.y + d] = acc.y; }
      if (ok.z) { fr_ob[oi.z + d] = acc.z; }
      if (ok.w) { fr_ob[oi.w + d] = acc.w; }
    }
  }
  let inv = 1.0 / l;
  for (var d = 0u; d < HD; d++) {
    if (ok.x) { fr_ob[oi.x + d] *= inv.x; }
    if (ok.y) { fr_ob[oi.y + d] *= inv.y; }
    if (ok.z) { fr_ob[oi.z + d] *= inv.z; }
    if (ok.w) { fr_ob[oi.w + d] *= inv.w; }
  }
  let lse = m + log(l);
  let li = bh * fr_p.Nq + i0;
  if (ok.x) { fr_lse[li] = lse.x; }
  if (ok.y) { fr_lse[li + 1u] = lse.y; }
  if (ok.z) { fr_lse[li + 2u] = lse.z; }
  if (ok.w) { fr_lse[li + 3u] = lse.w; }
}

@group(0) @binding(0) var<storage, read> qr_qb: array<dt_q>;
@group(0) @binding(1) var<storage, read> qr_kb: array<dt_k>;
@group(0) @binding(2) var<storage, read> qr_vb: array<dt_v>;
@group(0) @binding(3) var<storage, read> qr_gb: array<dt_g>;
@group(0) @binding(4) var<storage, read> qr_lse: array<f32>;
@group(0) @binding(5) var<storage, read> qr_dd: array<f32>;
@group(0) @binding(6) var<storage, read_write> qr_out: array<f32>;
@group(0) @binding(7) var<uniform> qr_p: AttnParams;

@compute @workgroup_size(WG)
fn attn_bwd_q_regs(
  @builtin(global_invocation_id) gid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
) {
  let blocks = (qr_p.Nq + 3u) / 4u;
  let n = gid.x + gid.y * nwg.x * WG;
  if (n >= qr_p.BH * blocks) { return; }
  let bh = n / blocks;
  let b = bh / qr_p.heads;
  let h = bh % qr_p.heads;
  let i0 = (n % blocks) * 4u;
  let ok = rg_valid(i0, qr_p.Nq);
  let rows = rg_rows(i0, qr_p.Nq);
  let qi = (b * qr_p.Nq + rows) * qr_p.sq + qr_p.oq + h * HD;
  let gi = (b * qr_p.Nq + rows) * qr_p.sg + qr_p.og + h * HD;
  let oi = (b * qr_p.Nq + rows) * qr_p.s1 + qr_p.o1 + h * HD;
  let li = bh * qr_p.Nq + rows;
  let lse = vec4f(qr_lse[li.x], qr_lse[li.y], qr_lse[li.z], qr_lse[li.w]);
  let dsum = vec4f(qr_dd[li.x], qr_dd[li.y], qr_dd[li.z], qr_dd[li.w]);
  // Keys stream 8 at a time (two 4-key halves), so each pass over the dq rows serves 8.
  for (var j0 = 0u; j0 < sl_bound(qr_p.Nk, gid.x); j0 += 8u) {
    let ra = rg_rows(j0, qr_p.Nk);
    let rb = rg_rows(j0 + 4u, qr_p.Nk);
    let ka = (b * qr_p.Nk + ra) * qr_p.sk + qr_p.ok + h * HD;
    let kb = (b * qr_p.Nk + rb) * qr_p.sk + qr_p.ok + h * HD;
    let va = (b * qr_p.Nk + ra) * qr_p.sv + qr_p.ov + h * HD;
    let vb = (b * qr_p.Nk + rb) * qr_p.sv + qr_p.ov + h * HD;
    var sa = mat4x4f();
    var sb = mat4x4f();
    var pa = mat4x4f();
    var pb = mat4x4f();
    for (var d = 0u; d < HD; d++) {
      let q = vec4f(f32(qr_qb[qi.x + d]), f32(qr_qb[qi.y + d]),
        f32(qr_qb[qi.z + d]), f32(qr_qb[qi.w + d]));
      let g = vec4f(f32(qr_gb[gi.x + d]), f32(qr_gb[gi.y + d]),
        f32(qr_gb[gi.z + d]), f32(qr_gb[gi.w + d]));
      sa[0] += q * f32(qr_kb[ka.x + d]);
      sa[1] += q * f32(qr_kb[ka.y + d]);
      sa[2] += q * f32(qr_kb[ka.z + d]);
      sa[3] += q * f32(qr_kb[ka.w + d]);
      sb[0] += q * f32(qr_kb[kb.x + d]);
      sb[1] += q * f32(qr_kb[kb.y + d]);
      sb[2] += q * f32(qr_kb[kb.z + d]);
      sb[3] += q * f32(qr_kb[kb.w + d]);
      pa[0] += g * f32(qr_vb[va.x + d]);
      pa[1] += g * f32(qr_vb[va.y + d]);
      pa[2] += g * f32(qr_vb[va.z + d]);
      pa[3] += g * f32(qr_vb[va.w + d]);
      pb[0] += g * f32(qr_vb[vb.x + d]);
      pb[1] += g * f32(qr_vb[vb.y + d]);
      pb[2] += g * f32(qr_vb[vb.z + d]);
      pb[3] += g * f32(qr_vb[vb.w + d]);
    }
    // dS[j][i] = P_ij (dP_ij - D_i), times the softmax scale for dq; 0 for keys past Nk.
    let oka = rg_valid(j0, qr_p.Nk);
    let okb = rg_valid(j0 + 4u, qr_p.Nk);
    let da = qr_ds(sa, pa, lse, dsum, oka);
    let db = qr_ds(sb, pb, lse, dsum, okb);
    let first = j0 == 0u;
    for (var d = 0u; d < HD; d++) {
      let k0 = vec4f(f32(qr_kb[ka.x + d]), f32(qr_kb[ka.y + d]),
        f32(qr_kb[ka.z + d]), f32(qr_kb[ka.w + d]));
      let k1 = vec4f(f32(qr_kb[kb.x + d]), f32(qr_kb[kb.y + d]),
        f32(qr_kb[kb.z + d]), f32(qr_kb[kb.w + d]));
      var acc = vec4f(0.0);
      if (!first) {
        acc = vec4f(qr_out[oi.x + d], qr_out[oi.y + d], qr_out[oi.z + d], qr_out[oi.w + d]);
      }
      acc += da * k0 + db * k1;
      if (ok.x) { qr_out[oi.x + d] = acc.x; }
      if (ok.y) { qr_out[oi.y + d] = acc.y; }
      if (ok.z) { qr_out[oi.z + d] = acc.z; }
      if (ok.w) { qr_out[oi.w + d] = acc.w; }
    }
  }
}

// dS for one 4-key half: column j = scale * P_j * (dP_j - D) where key j is valid, else 0.
fn qr_ds(s: mat4x4f, dp: mat4x4f, lse: vec4f, dsum: vec4f, ok: vec4<bool>) -> mat4x4f {
  return mat4x4f(
    qr_ds_col(s[0], dp[0], lse, dsum, ok.x), qr_ds_col(s[1], dp[1], lse, dsum, ok.y),
    qr_ds_col(s[2], dp[2], lse, dsum, ok.z), qr_ds_col(s[3], dp[3], lse, dsum, ok.w));
}

fn qr_ds_col(s: vec4f, dp: vec4f, lse: vec4f, dsum: vec4f, ok: bool) -> vec4f {
  let pr = exp(s * qr_p.scale - lse);
  return select(vec4f(0.0), pr * (dp - dsum) * qr_p.scale, ok);
}

@group(0) @binding(0) var<storage, read> kr_qb: array<dt_q>;
@group(0) @binding(1) var<storage, read> kr_kb: array<dt_k>;
@group(0) @binding(2) var<storage, read> kr_vb: array<dt_v>;
@group(0) @binding(3) var<storage, read> kr_gb: array<dt_g>;
@group(0) @binding(4) var<storage, read> kr_lse: array<f32>;
@group(0) @binding(5) var<storage, read> kr_dd: array<f32>;
@group(0) @binding(6) var<storage, read_write> kr_out: array<f32>;
@group(0) @binding(7) var<uniform> kr_p: AttnParams;

@compute @workgroup_size(WG)
fn attn_bwd_kv_regs(
  @builtin(global_invocation_id) gid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
) {
  let blocks = (kr_p.Nk + 3u) / 4u;
  let n = gid.x + gid.y * nwg.x * WG;
  if (n >= kr_p.BH * blocks) { return; }
  let bh = n / blocks;
  let b = bh / kr_p.heads;
  let h = bh % kr_p.heads;
  let j0 = (n % blocks) * 4u;
  let ok = rg_valid(j0, kr_p.Nk);
  let rows = rg_rows(j0, kr_p.Nk);
  let kj = (b * kr_p.Nk + rows) * kr_p.sk + kr_p.ok + h * HD;
  let vj = (b * kr_p.Nk + rows) * kr_p.sv + kr_p.ov + h * HD;
  let dk = (b * kr_p.Nk + rows) * kr_p.s1 + kr_p.o1 + h * HD;
  let dv = (b * kr_p.Nk + rows) * kr_p.s2 + kr_p.o2 + h * HD;
  // Queries stream 8 at a time (two 4-query halves) so the thread's own k, v rows and its dk, dv
  // accumulators are read once per 8 queries.
  for (var i0 = 0u; i0 < sl_bound(kr_p.Nq, gid.x); i0 += 8u) {
    let ra = rg_rows(i0, kr_p.Nq);
    let rb = rg_rows(i0 + 4u, kr_p.Nq);
    let qa = (b * kr_p.Nq + ra) * kr_p.sq + kr_p.oq + h * HD;
    let qb = (b * kr_p.Nq + rb) * kr_p.sq + kr_p.oq + h * HD;
    let ga = (b * kr_p.Nq + ra) * kr_p.sg + kr_p.og + h * HD;
    let gb = (b * kr_p.Nq + rb) * kr_p.sg + kr_p.og + h * HD;
    // sX[c][j] = q_c . k_j for query c of half X (columns are queries, rows the thread's keys).
    var sa = mat4x4f();
    var sb = mat4x4f();
    var pa = mat4x4f();
    var pb = mat4x4f();
    for (var d = 0u; d < HD; d++) {
      let k = vec4f(f32(kr_kb[kj.x + d]), f32(kr_kb[kj.y + d]),
        f32(kr_kb[kj.z + d]), f32(kr_kb[kj.w + d]));
      let v = vec4f(f32(kr_vb[vj.x + d]), f32(kr_vb[vj.y + d]),
        f32(kr_vb[vj.z + d]), f32(kr_vb[vj.w + d]));
      sa[0] += k * f32(kr_qb[qa.x + d]);
      sa[1] += k * f32(kr_qb[qa.y + d]);
      sa[2] += k * f32(kr_qb[qa.z + d]);
      sa[3] += k * f32(kr_qb[qa.w + d]);
      sb[0] += k * f32(kr_qb[qb.x + d]);
      sb[1] += k * f32(kr_qb[qb.y + d]);
      sb[2] += k * f32(kr_qb[qb.z + d]);
      sb[3] += k * f32(kr_qb[qb.w + d]);
      pa[0] += v * f32(kr_gb[ga.x + d]);
      pa[1] += v * f32(kr_gb[ga.y + d]);
      pa[2] += v * f32(kr_gb[ga.z + d]);
      pa[3] += v * f32(kr_gb[ga.w + d]);
      pb[0] += v * f32(kr_gb[gb.x + d]);
      pb[1] += v * f32(kr_gb[gb.y + d]);
      pb[2] += v * f32(kr_gb[gb.z + d]);
      pb[3] += v * f32(kr_gb[gb.w + d]);
    }
    // In place: sX becomes P (0 past Nq), pX (dP) becomes scale * dS.
    kr_probs(bh, i0, &sa, &pa);
    kr_probs(bh, i0 + 4u, &sb, &pb);
    let first = i0 == 0u;
    for (var d = 0u; d < HD; d++) {
      let q0 = vec4f(f32(kr_qb[qa.x + d]), f32(kr_qb[qa.y + d]),
        f32(kr_qb[qa.z + d]), f32(kr_qb[qa.w + d]));
      let q1 = vec4f(f32(kr_qb[qb.x + d]), f32(kr_qb[qb.y + d]),
        f32(kr_qb[qb.z + d]), f32(kr_qb[qb.w + d]));
      let g0 = vec4f(f32(kr_gb[ga.x + d]), f32(kr_gb[ga.y + d]),
        f32(kr_gb[ga.z + d]), f32(kr_gb[ga.w + d]));
      let g1 = vec4f(f32(kr_gb[gb.x + d]), f32(kr_gb[gb.y + d]),
        f32(kr_gb[gb.z + d]), f32(kr_gb[gb.w + d]));
      var ak = vec4f(0.0);
      var av = vec4f(0.0);
      if (!first) {
        ak = vec4f(kr_out[dk.x + d], kr_out[dk.y + d], kr_out[dk.z + d], kr_out[dk.w + d]);
        av = vec4f(kr_out[dv.x + d], kr_out[dv.y + d], kr_out[dv.z + d], kr_out[dv.w + d]);
      }
      ak += pa * q0 + pb * q1;
      av += sa * g0 + sb * g1;
      if (ok.x) { kr_out[dk.x + d] = ak.x; kr_out[dv.x + d] = av.x; }
      if (ok.y) { kr_out[dk.y + d] = ak.y; kr_out[dv.y + d] = av.y; }
      if (ok.z) { kr_out[dk.z + d] = ak.z; kr_out[dv.z + d] = av.z; }
      if (ok.w) { kr_out[dk.w + d] = ak.w; kr_out[dv.w + d] = av.w; }
    }
  }
}

// s (scores of queries i0..i0+3 against the thread's keys) -> P, dp -> scale * P * (dp - D).
fn kr_probs(bh: u32, i0: u32, s: ptr<function, mat4x4f>, dp: ptr<function, mat4x4f>) {
  let li = bh * kr_p.Nq + rg_rows(i0, kr_p.Nq);
  let lse = vec4f(kr_lse[li.x], kr_lse[li.y], kr_lse[li.z], kr_lse[li.w]);
  let dsum = vec4f(kr_dd[li.x], kr_dd[li.y], kr_dd[li.z], kr_dd[li.w]);
  let ok = rg_valid(i0, kr_p.Nq);
  let p = mat4x4f(
    kr_prob((*s)[0], lse.x, ok.x), kr_prob((*s)[1], lse.y, ok.y),
    kr_prob((*s)[2], lse.z, ok.z), kr_prob((*s)[3], lse.w, ok.w));
  let d = *dp;
  *dp = mat4x4f((d[0] - dsum.x) * p[0], (d[1] - dsum.y) * p[1], (d[2] - dsum.z) * p[2],
    (d[3] - dsum.w) * p[3]) * kr_p.scale;
  *s = p;
}

fn kr_prob(s: vec4f, lse: f32, ok: bool) -> vec4f {
  return select(vec4f(0.0), exp(s * kr_p.scale - lse), ok);
}
