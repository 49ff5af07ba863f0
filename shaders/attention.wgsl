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

@group(0) @binding(0) var<storage, read> fw_qb: array<f32>;
@group(0) @binding(1) var<storage, read> fw_kb: array<f32>;
@group(0) @binding(2) var<storage, read> fw_vb: array<f32>;
@group(0) @binding(3) var<storage, read_write> fw_ob: array<f32>;
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
    if (i < fw_p.Nq) { x = fw_qb[(b * fw_p.Nq + i) * fw_p.sq + fw_p.oq + h * HD + e % HD]; }
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
        kx = fw_kb[(b * fw_p.Nk + j) * fw_p.sk + fw_p.ok + c];
        vx = fw_vb[(b * fw_p.Nk + j) * fw_p.sv + fw_p.ov + c];
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
      if (d < HD) { fw_ob[row + d] = acc[u] * inv; }
    }
    if (t == 0u) { fw_lse[bh * fw_p.Nq + i] = m + log(l); }
  }
}

// ---- backward: D = rowsum(dO * O) --------------------------------------------------------------
// One thread = one (b, h, query row). O is read through (so, oo), dO through (sg, og).

@group(0) @binding(0) var<storage, read> dd_g: array<f32>;
@group(0) @binding(1) var<storage, read> dd_o: array<f32>;
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
  for (var d = 0u; d < HD; d++) { s += dd_g[gr + d] * dd_o[orow + d]; }
  dd_out[n] = s;
}

// ---- backward: dQ ----------------------------------------------------------------------------
// One workgroup = BR query rows of one (b, h); streams BC-key blocks.
// dS = P * (dO v^T - D), dq = scale * dS k. Output through (s1, o1).

@group(0) @binding(0) var<storage, read> bq_qb: array<f32>;
@group(0) @binding(1) var<storage, read> bq_kb: array<f32>;
@group(0) @binding(2) var<storage, read> bq_vb: array<f32>;
@group(0) @binding(3) var<storage, read> bq_gb: array<f32>;
@group(0) @binding(4) var<storage, read> bq_lse: array<f32>;
@group(0) @binding(5) var<storage, read> bq_dd: array<f32>;
@group(0) @binding(6) var<storage, read_write> bq_out: array<f32>;
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
      qx = bq_qb[tok * bq_p.sq + bq_p.oq + h * HD + e % HD];
      gx = bq_gb[tok * bq_p.sg + bq_p.og + h * HD + e % HD];
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
        kx = bq_kb[(b * bq_p.Nk + j) * bq_p.sk + bq_p.ok + c];
        vx = bq_vb[(b * bq_p.Nk + j) * bq_p.sv + bq_p.ov + c];
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
      if (d < HD) { bq_out[row + d] = acc[u] * bq_p.scale; }
    }
  }
}

// ---- backward: dK, dV ------------------------------------------------------------------------
// One workgroup = BR key rows of one (b, h); streams BC-query blocks.
// dv = P^T dO, dk = scale * dS^T q. Both go to one buffer: dk through (s1, o1), dv through
// (s2, o2) (two writable bindings may not alias, and in the packed case they are one tensor).

@group(0) @binding(0) var<storage, read> bk_qb: array<f32>;
@group(0) @binding(1) var<storage, read> bk_kb: array<f32>;
@group(0) @binding(2) var<storage, read> bk_vb: array<f32>;
@group(0) @binding(3) var<storage, read> bk_gb: array<f32>;
@group(0) @binding(4) var<storage, read> bk_lse: array<f32>;
@group(0) @binding(5) var<storage, read> bk_dd: array<f32>;
@group(0) @binding(6) var<storage, read_write> bk_out: array<f32>;
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
      kx = bk_kb[(b * bk_p.Nk + j) * bk_p.sk + bk_p.ok + c];
      vx = bk_vb[(b * bk_p.Nk + j) * bk_p.sv + bk_p.ov + c];
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
        qx = bk_qb[tok * bk_p.sq + bk_p.oq + h * HD + e % HD];
        gx = bk_gb[tok * bk_p.sg + bk_p.og + h * HD + e % HD];
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
        bk_out[rk + d] = ak[u];
        bk_out[rv + d] = av[u];
      }
    }
  }
}

// ---- column copy -----------------------------------------------------------------------------
// out[r * so + oo + c] = in[r * si + oi + c] for r < rows, c < cols: splits a packed [rows, 2C]
// gradient into its halves. One thread = one element.

@group(0) @binding(0) var<storage, read> cc_in: array<f32>;
@group(0) @binding(1) var<storage, read_write> cc_out: array<f32>;
@group(0) @binding(2) var<uniform> cc_p: ColsParams;

@compute @workgroup_size(WG)
fn attn_cols(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let n = gid.x + gid.y * nwg.x * WG;
  if (n >= cc_p.rows * cc_p.cols) { return; }
  let row = n / cc_p.cols;
  let c = n % cc_p.cols;
  cc_out[row * cc_p.so + cc_p.oo + c] = cc_in[row * cc_p.si + cc_p.oi + c];
}

@group(0) @binding(0) var<storage, read_write> cz_out: array<f32>;
@group(0) @binding(1) var<uniform> cz_p: ColsParams;

// out[r * so + oo + c] = 0 for r < rows, c < cols: the unused q columns of a packed gradient.
@compute @workgroup_size(WG)
fn attn_zero_cols(
  @builtin(global_invocation_id) gid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
) {
  let n = gid.x + gid.y * nwg.x * WG;
  if (n >= cz_p.rows * cz_p.cols) { return; }
  cz_out[(n / cz_p.cols) * cz_p.so + cz_p.oo + n % cz_p.cols] = 0.0;
}
