// Naive reference kernels for the benchmark: the obvious one-thread-per-output code a first
// WebGPU port would contain (no shared-memory tiling, no vectorisation, no register blocking).
// They exist only to show what the tuned kernels in shaders/ buy; the bench never trains on them.
// Bindings: inputs `read` first, outputs `read_write`, the uniform struct last.

// ---- y[M, N] = x[M, K] · w[N, K]ᵀ + b[N] (Linear layout). One thread = one output element.
@group(0) @binding(0) var<storage, read> nm_x: array<f32>;
@group(0) @binding(1) var<storage, read> nm_w: array<f32>;
@group(0) @binding(2) var<storage, read> nm_b: array<f32>;
@group(0) @binding(3) var<storage, read_write> nm_y: array<f32>;
@group(0) @binding(4) var<uniform> nm_p: NaiveMatmulParams;

@compute @workgroup_size(16, 16)
fn naive_matmul(@builtin(global_invocation_id) gid: vec3<u32>) {
  let n = gid.x;
  let m = gid.y;
  if (m >= nm_p.M || n >= nm_p.N) { return; }
  var acc = nm_b[n];
  for (var k = 0u; k < nm_p.K; k++) {
    acc += nm_x[m * nm_p.K + k] * nm_w[n * nm_p.K + k];
  }
  nm_y[m * nm_p.N + n] = acc;
}

// ---- Conv2d, x [B, H, W, Cin] NHWC, w [Cout, Cin, kh, kw], bias [Cout] -> y [B, Ho, Wo, Cout].
// One thread = one output element; zero padding by bounds test.
@group(0) @binding(0) var<storage, read> nc_x: array<f32>;
@group(0) @binding(1) var<storage, read> nc_w: array<f32>;
@group(0) @binding(2) var<storage, read> nc_b: array<f32>;
@group(0) @binding(3) var<storage, read_write> nc_y: array<f32>;
@group(0) @binding(4) var<uniform> nc_p: NaiveConvParams;

override WG: u32 = 256u;

@compute @workgroup_size(WG)
fn naive_conv2d(@builtin(global_invocation_id) gid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * WG;
  let total = nc_p.B * nc_p.Ho * nc_p.Wo * nc_p.Cout;
  if (i >= total) { return; }
  let co = i % nc_p.Cout;
  let ox = (i / nc_p.Cout) % nc_p.Wo;
  let oy = (i / (nc_p.Cout * nc_p.Wo)) % nc_p.Ho;
  let b = i / (nc_p.Cout * nc_p.Wo * nc_p.Ho);
  var acc = nc_b[co];
  for (var ky = 0u; ky < nc_p.kh; ky++) {
    let iy = i32(oy * nc_p.stride + ky) - i32(nc_p.pad);
    if (iy < 0 || iy >= i32(nc_p.H)) { continue; }
    for (var kx = 0u; kx < nc_p.kw; kx++) {
      let ix = i32(ox * nc_p.stride + kx) - i32(nc_p.pad);
      if (ix < 0 || ix >= i32(nc_p.W)) { continue; }
      let xb = ((b * nc_p.H + u32(iy)) * nc_p.W + u32(ix)) * nc_p.Cin;
      for (var ci = 0u; ci < nc_p.Cin; ci++) {
        acc += nc_x[xb + ci] * nc_w[((co * nc_p.Cin + ci) * nc_p.kh + ky) * nc_p.kw + kx];
      }
    }
  }
  nc_y[i] = acc;
}

// ---- Attention, step 1: s[bw, h, i, j] = scale * q_i · k_j for packed qkv [Bw, N, 3C]
// (channels [3, heads, hd]). One thread = one score.
@group(0) @binding(0) var<storage, read> ns_qkv: array<f32>;
@group(0) @binding(1) var<storage, read_write> ns_s: array<f32>;
@group(0) @binding(2) var<uniform> ns_p: NaiveAttnParams;

@compute @workgroup_size(16, 16)
fn naive_scores(@builtin(global_invocation_id) gid: vec3<u32>) {
  let j = gid.x;
  let i = gid.y;
  let bh = gid.z;
  if (i >= ns_p.N || j >= ns_p.N) { return; }
  let b = bh / ns_p.heads;
  let h = bh % ns_p.heads;
  let C = ns_p.heads * ns_p.hd;
  let qb = (b * ns_p.N + i) * 3u * C + h * ns_p.hd;
  let kb = (b * ns_p.N + j) * 3u * C + C + h * ns_p.hd;
  var acc = 0.0;
  for (var d = 0u; d < ns_p.hd; d++) { acc += ns_qkv[qb + d] * ns_qkv[kb + d]; }
  ns_s[(bh * ns_p.N + i) * ns_p.N + j] = acc * ns_p.scale;
}

// ---- Attention, step 2: row softmax of s in place. One thread = one row (N columns).
@group(0) @binding(0) var<storage, read_write> nx_s: array<f32>;
@group(0) @binding(1) var<uniform> nx_p: NaiveRowsParams;

@compute @workgroup_size(WG)
fn naive_softmax(@builtin(global_invocation_id) gid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>) {
  let r = gid.x + gid.y * nwg.x * WG;
  if (r >= nx_p.rows) { return; }
  let base = r * nx_p.cols;
  var mx = -3.0e38;
  for (var j = 0u; j < nx_p.cols; j++) { mx = max(mx, nx_s[base + j]); }
  var sum = 0.0;
  for (var j = 0u; j < nx_p.cols; j++) {
    let e = exp(nx_s[base + j] - mx);
    nx_s[base + j] = e;
    sum += e;
  }
  let inv = 1.0 / sum;
  for (var j = 0u; j < nx_p.cols; j++) { nx_s[base + j] *= inv; }
}

// ---- Attention, step 3: out[bw, i, h*hd + d] = Σ_j p[bw, h, i, j] v_j[d]. One thread = one
// output element.
@group(0) @binding(0) var<storage, read> nv_s: array<f32>;
@group(0) @binding(1) var<storage, read> nv_qkv: array<f32>;
@group(0) @binding(2) var<storage, read_write> nv_out: array<f32>;
@group(0) @binding(3) var<uniform> nv_p: NaiveAttnParams;

@compute @workgroup_size(16, 16)
fn naive_pv(@builtin(global_invocation_id) gid: vec3<u32>) {
  let d = gid.x;
  let i = gid.y;
  let bh = gid.z;
  if (i >= nv_p.N || d >= nv_p.hd) { return; }
  let b = bh / nv_p.heads;
  let h = bh % nv_p.heads;
  let C = nv_p.heads * nv_p.hd;
  var acc = 0.0;
  for (var j = 0u; j < nv_p.N; j++) {
    acc += nv_s[(bh * nv_p.N + i) * nv_p.N + j] * nv_qkv[(b * nv_p.N + j) * 3u * C + 2u * C +
      h * nv_p.hd + d];
  }
  nv_out[(b * nv_p.N + i) * C + h * nv_p.hd + d] = acc;
}

// ---- LayerNorm over the last dim, x [rows, C]. One thread = one row, two passes.
@group(0) @binding(0) var<storage, read> nl_x: array<f32>;
@group(0) @binding(1) var<storage, read> nl_w: array<f32>;
@group(0) @binding(2) var<storage, read> nl_b: array<f32>;
@group(0) @binding(3) var<storage, read_write> nl_y: array<f32>;
@group(0) @binding(4) var<uniform> nl_p: NaiveLnParams;

@compute @workgroup_size(WG)
fn naive_layer_norm(@builtin(global_invocation_id) gid: vec3<u32>,
                    @builtin(num_workgroups) nwg: vec3<u32>) {
  let r = gid.x + gid.y * nwg.x * WG;
  if (r >= nl_p.rows) { return; }
  let base = r * nl_p.C;
  var mean = 0.0;
  for (var c = 0u; c < nl_p.C; c++) { mean += nl_x[base + c]; }
  mean /= f32(nl_p.C);
  var v = 0.0;
  for (var c = 0u; c < nl_p.C; c++) {
    let d = nl_x[base + c] - mean;
    v += d * d;
  }
  let rstd = inverseSqrt(v / f32(nl_p.C) + nl_p.eps);
  for (var c = 0u; c < nl_p.C; c++) {
    nl_y[base + c] = (nl_x[base + c] - mean) * rstd * nl_w[c] + nl_b[c];
  }
}
