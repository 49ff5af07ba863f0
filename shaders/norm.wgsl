// Layer norm over the last dim C of a row-major [rows, C] view (PyTorch nn.LayerNorm: biased
// variance, eps inside the square root).
// ln_forward:  x [rows, C], w [C], b [C] (read) -> y [rows, C], stats [rows, 2] = (mean, rstd).
//              One workgroup = one row; the grid is folded into y past 65535 rows.
// ln_dx:       g [rows, C], x, w, stats (read) -> dx [rows, C]. One workgroup = one row.
// ln_dwb_partial: g, x, stats (read) -> partial [2, P, C] (dw then db partial sums over a chunk
//              of rows). Workgroup TC x TR: TC consecutive columns (coalesced) x TR row lanes;
//              workgroup (i, k) = column tile i, row chunk k. No float atomics.
// ln_dwb_reduce: partial (read) -> out [C] = sum over the P chunks. One thread = one column.
// Bindings: inputs (read), outputs (read_write), the uniform struct last. Element types: x, y, g,
// dx are dt_x, dt_y, dt_g, dt_dx (f32 or f16); w, b, stats and partials are f32; all math is f32.
// The shared-memory tree reductions (lnf_sum, lndx_sum, lnp_sum) are generated from
// src/kernels/norm.ts (defineShader's trees).

override WG: u32 = 256;
override TC: u32 = 32;
override TR: u32 = 8;

@group(0) @binding(0) var<storage, read> lnf_x: array<dt_x>;
@group(0) @binding(1) var<storage, read> lnf_w: array<f32>;
@group(0) @binding(2) var<storage, read> lnf_b: array<f32>;
@group(0) @binding(3) var<storage, read_write> lnf_y: array<dt_y>;
@group(0) @binding(4) var<storage, read_write> lnf_stats: array<f32>;
@group(0) @binding(5) var<uniform> lnf_p: LnParams;
var<workgroup> lnf_red: array<f32, WG>;

// Two passes over the row. The first sums x - x[0] (a shift by one element of the row) so a row
// with a large common offset does not lose the small deviations to f32 rounding of the sum.
@compute @workgroup_size(WG)
fn ln_forward(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let row = sl_group_index(wid, nwg);
  if (row >= lnf_p.rows) { return; }
  let C = lnf_p.C;
  let base = row * C;
  let shift = f32(lnf_x[base]);
  var s = 0.0;
  for (var c = lid; c < C; c += WG) { s += f32(lnf_x[base + c]) - shift; }
  lnf_red[lid] = s;
  lnf_sum(lid);
  let mean = shift + lnf_red[0] / f32(C);
  workgroupBarrier();
  var q = 0.0;
  for (var c = lid; c < C; c += WG) {
    let d = f32(lnf_x[base + c]) - mean;
    q += d * d;
  }
  lnf_red[lid] = q;
  lnf_sum(lid);
  let rstd = 1.0 / sqrt(lnf_red[0] / f32(C) + lnf_p.eps);
  for (var c = lid; c < C; c += WG) {
    lnf_y[base + c] = dt_y((f32(lnf_x[base + c]) - mean) * rstd * lnf_w[c] + lnf_b[c]);
  }
  if (lid == 0u) {
    lnf_stats[2u * row] = mean;
    lnf_stats[2u * row + 1u] = rstd;
  }
}

@group(0) @binding(0) var<storage, read> lndx_g: array<dt_g>;
@group(0) @binding(1) var<storage, read> lndx_x: array<dt_x>;
@group(0) @binding(2) var<storage, read> lndx_w: array<f32>;
@group(0) @binding(3) var<storage, read> lndx_stats: array<f32>;
@group(0) @binding(4) var<storage, read_write> lndx_dx: array<dt_dx>;
@group(0) @binding(5) var<uniform> lndx_p: LnParams;
var<workgroup> lndx_r1: array<f32, WG>;
var<workgroup> lndx_r2: array<f32, WG>;

// With xh = (x - mean) * rstd and gh = g * w:
// dx = rstd * (gh - mean_c(gh) - xh * mean_c(gh * xh)).
@compute @workgroup_size(WG)
fn ln_dx(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  let row = sl_group_index(wid, nwg);
  if (row >= lndx_p.rows) { return; }
  let C = lndx_p.C;
  let base = row * C;
  let mean = lndx_stats[2u * row];
  let rstd = lndx_stats[2u * row + 1u];
  var s1 = 0.0;
  var s2 = 0.0;
  for (var c = lid; c < C; c += WG) {
    let gh = f32(lndx_g[base + c]) * lndx_w[c];
    s1 += gh;
    s2 += gh * (f32(lndx_x[base + c]) - mean) * rstd;
  }
  lndx_r1[lid] = s1;
  lndx_r2[lid] = s2;
  lndx_sum(lid);
  let m1 = lndx_r1[0] / f32(C);
  let m2 = lndx_r2[0] / f32(C);
  for (var c = lid; c < C; c += WG) {
    let gh = f32(lndx_g[base + c]) * lndx_w[c];
    let xh = (f32(lndx_x[base + c]) - mean) * rstd;
    lndx_dx[base + c] = dt_dx(rstd * (gh - m1 - xh * m2));
  }
}

@group(0) @binding(0) var<storage, read> lnp_g: array<dt_g>;
@group(0) @binding(1) var<storage, read> lnp_x: array<dt_x>;
@group(0) @binding(2) var<storage, read> lnp_stats: array<f32>;
@group(0) @binding(3) var<storage, read_write> lnp_partial: array<f32>;
@group(0) @binding(4) var<uniform> lnp_p: LnPartialParams;
var<workgroup> lnp_rw: array<f32, TC * TR>;
var<workgroup> lnp_rb: array<f32, TC * TR>;

// partial[k, c] = sum over rows r of chunk k of g[r, c] * xh[r, c]; partial[P + k, c] = sum g.
@compute @workgroup_size(TC, TR)
fn ln_dwb_partial(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let C = lnp_p.C;
  let c = wid.x * TC + lid.x;
  let chunk = wid.y;
  let r0 = chunk * lnp_p.rows_per_chunk;
  let r1 = min(lnp_p.rows, r0 + lnp_p.rows_per_chunk);
  var aw = 0.0;
  var ab = 0.0;
  if (c < C) {
    for (var r = r0 + lid.y; r < r1; r += TR) {
      let g = f32(lnp_g[r * C + c]);
      aw += g * (f32(lnp_x[r * C + c]) - lnp_stats[2u * r]) * lnp_stats[2u * r + 1u];
      ab += g;
    }
  }
  let t = lid.y * TC + lid.x;
  lnp_rw[t] = aw;
  lnp_rb[t] = ab;
  lnp_sum(lid.y, t);
  if (lid.y == 0u && c < C) {
    lnp_partial[chunk * C + c] = lnp_rw[lid.x];
    lnp_partial[(lnp_p.chunks + chunk) * C + c] = lnp_rb[lid.x];
  }
}

@group(0) @binding(0) var<storage, read> lnr_partial: array<f32>;
@group(0) @binding(1) var<storage, read_write> lnr_out: array<f32>;
@group(0) @binding(2) var<uniform> lnr_p: LnReduceParams;

// out[c] = sum_k partial[first + k * C + c]: consecutive threads read consecutive columns.
@compute @workgroup_size(WG)
fn ln_dwb_reduce(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let c = sl_flat_index(gid, nwg, WG);
  if (c >= lnr_p.C) { return; }
  var s = 0.0;
  for (var k = 0u; k < lnr_p.chunks; k++) { s += lnr_partial[lnr_p.first + k * lnr_p.C + c]; }
  lnr_out[c] = s;
}

// ---- CPU-adapter path: one invocation per row, no workgroup memory or barriers ----
// lavapipe runs a workgroup as a loop over 8-lane SIMD and every storage load as a loop over the
// lanes, so the per-row tree reductions above are pure overhead there; these kernels give each
// row to one invocation. ln_forward_rows makes the same three passes (shifted sum, squared
// deviations from the mean, output). The *4 variants load vec4s (C % 4 == 0): a quarter of the
// loads per lane; ln_forward_rows4 also merges the statistics into one pass.
// Grid: sl_flat_index over rows, workgroup size WG.
// The row length comes from arrayLength(w) (the launcher binds w as exactly C floats), not from
// the uniform: lavapipe (Mesa 22.3) inlines uniforms that bound loops and recompiles the shader
// for every dispatch whose uniform buffer changed, which cost ~1 ms per dispatch here.

@group(0) @binding(0) var<storage, read> lrf_x: array<dt_x>;
@group(0) @binding(1) var<storage, read> lrf_w: array<f32>;
@group(0) @binding(2) var<storage, read> lrf_b: array<f32>;
@group(0) @binding(3) var<storage, read_write> lrf_y: array<dt_y>;
@group(0) @binding(4) var<storage, read_write> lrf_stats: array<f32>;
@group(0) @binding(5) var<uniform> lrf_p: LnParams;

@compute @workgroup_size(WG)
fn ln_forward_rows(@builtin(global_invocation_id) gid: vec3u,
                   @builtin(num_workgroups) nwg: vec3u) {
  let row = sl_flat_index(gid, nwg, WG);
  if (row >= lrf_p.rows) { return; }
  let C = arrayLength(&lrf_w);
  let base = row * C;
  let shift = f32(lrf_x[base]);
  var s = 0.0;
  for (var c = 0u; c < C; c++) { s += f32(lrf_x[base + c]) - shift; }
  let mean = shift + s / f32(C);
  var q = 0.0;
  for (var c = 0u; c < C; c++) {
    let d = f32(lrf_x[base + c]) - mean;
    q += d * d;
  }
  let rstd = 1.0 / sqrt(q / f32(C) + lrf_p.eps);
  for (var c = 0u; c < C; c++) {
    lrf_y[base + c] = dt_y((f32(lrf_x[base + c]) - mean) * rstd * lrf_w[c] + lrf_b[c]);
  }
  lrf_stats[2u * row] = mean;
  lrf_stats[2u * row + 1u] = rstd;
}

@group(0) @binding(0) var<storage, read> lrf4_x: array<vec4<dt_x>>;
@group(0) @binding(1) var<storage, read> lrf4_w: array<vec4f>;
@group(0) @binding(2) var<storage, read> lrf4_b: array<vec4f>;
@group(0) @binding(3) var<storage, read_write> lrf4_y: array<vec4<dt_y>>;
@group(0) @binding(4) var<storage, read_write> lrf4_stats: array<f32>;
@group(0) @binding(5) var<uniform> lrf4_p: LnParams;

@compute @workgroup_size(WG)
fn ln_forward_rows4(@builtin(global_invocation_id) gid: vec3u,
                    @builtin(num_workgroups) nwg: vec3u) {
  let row = sl_flat_index(gid, nwg, WG);
  if (row >= lrf4_p.rows) { return; }
  let C4 = arrayLength(&lrf4_w);
  let base = row * C4;
  // One statistics pass: per vec4 chunk its mean and squared deviations, merged into the running
  // (mean, M2) by Chan et al.'s pairwise update (as stable as the two-pass sums, a pass fewer).
  // Shifted by the row's first element, as ln_forward, so a large common offset costs no bits.
  let shift = vec4f(lrf4_x[base]).x;
  var mean = 0.0;
  var m2 = 0.0;
  for (var c = 0u; c < C4; c++) {
    let v = vec4f(lrf4_x[base + c]) - shift;
    let cm = (v.x + v.y + v.z + v.w) * 0.25;
    let d = v - cm;
    let delta = cm - mean;
    let inv = 1.0 / f32(c + 1u);
    mean += delta * inv;
    // n_a = 4c elements so far, n_b = 4: delta^2 * n_a * n_b / (n_a + n_b) = delta^2 * 4c / (c+1).
    m2 += dot(d, d) + delta * delta * (4.0 * f32(c) * inv);
  }
  let rstd = 1.0 / sqrt(m2 / f32(4u * C4) + lrf4_p.eps);
  mean += shift;
  for (var c = 0u; c < C4; c++) {
    lrf4_y[base + c] = vec4<dt_y>((vec4f(lrf4_x[base + c]) - mean) * rstd * lrf4_w[c] + lrf4_b[c]);
  }
  lrf4_stats[2u * row] = mean;
  lrf4_stats[2u * row + 1u] = rstd;
}

@group(0) @binding(0) var<storage, read> lrd_g: array<dt_g>;
@group(0) @binding(1) var<storage, read> lrd_x: array<dt_x>;
@group(0) @binding(2) var<storage, read> lrd_w: array<f32>;
@group(0) @binding(3) var<storage, read> lrd_stats: array<f32>;
@group(0) @binding(4) var<storage, read_write> lrd_dx: array<dt_dx>;
@group(0) @binding(5) var<uniform> lrd_p: LnParams;

// Same formula as ln_dx, one invocation per row: a sums pass and a write pass.
@compute @workgroup_size(WG)
fn ln_dx_rows(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let row = sl_flat_index(gid, nwg, WG);
  if (row >= lrd_p.rows) { return; }
  let C = arrayLength(&lrd_w);
  let base = row * C;
  let mean = lrd_stats[2u * row];
  let rstd = lrd_stats[2u * row + 1u];
  var s1 = 0.0;
  var s2 = 0.0;
  for (var c = 0u; c < C; c++) {
    let gh = f32(lrd_g[base + c]) * lrd_w[c];
    s1 += gh;
    s2 += gh * (f32(lrd_x[base + c]) - mean);
  }
  let m1 = s1 / f32(C);
  let m2 = s2 * rstd / f32(C);
  for (var c = 0u; c < C; c++) {
    let gh = f32(lrd_g[base + c]) * lrd_w[c];
    let xh = (f32(lrd_x[base + c]) - mean) * rstd;
    lrd_dx[base + c] = dt_dx(rstd * (gh - m1 - xh * m2));
  }
}

@group(0) @binding(0) var<storage, read> lrd4_g: array<vec4<dt_g>>;
@group(0) @binding(1) var<storage, read> lrd4_x: array<vec4<dt_x>>;
@group(0) @binding(2) var<storage, read> lrd4_w: array<vec4f>;
@group(0) @binding(3) var<storage, read> lrd4_stats: array<f32>;
@group(0) @binding(4) var<storage, read_write> lrd4_dx: array<vec4<dt_dx>>;
@group(0) @binding(5) var<uniform> lrd4_p: LnParams;

@compute @workgroup_size(WG)
fn ln_dx_rows4(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let row = sl_flat_index(gid, nwg, WG);
  if (row >= lrd4_p.rows) { return; }
  let C4 = arrayLength(&lrd4_w);
  let base = row * C4;
  let mean = lrd4_stats[2u * row];
  let rstd = lrd4_stats[2u * row + 1u];
  var s1 = vec4f(0.0);
  var s2 = vec4f(0.0);
  for (var c = 0u; c < C4; c++) {
    let gh = vec4f(lrd4_g[base + c]) * lrd4_w[c];
    s1 += gh;
    s2 += gh * (vec4f(lrd4_x[base + c]) - mean);
  }
  let m1 = (s1.x + s1.y + s1.z + s1.w) / f32(4u * C4);
  let m2 = (s2.x + s2.y + s2.z + s2.w) * rstd / f32(4u * C4);
  for (var c = 0u; c < C4; c++) {
    let gh = vec4f(lrd4_g[base + c]) * lrd4_w[c];
    let xh = (vec4f(lrd4_x[base + c]) - mean) * rstd;
    lrd4_dx[base + c] = vec4<dt_dx>(rstd * (gh - m1 - xh * m2));
  }
}

@group(0) @binding(0) var<storage, read> lrp_g: array<dt_g>;
@group(0) @binding(1) var<storage, read> lrp_x: array<dt_x>;
@group(0) @binding(2) var<storage, read> lrp_stats: array<f32>;
@group(0) @binding(3) var<storage, read_write> lrp_partial: array<f32>;
@group(0) @binding(4) var<uniform> lrp_p: LnPartialParams;

// The partial sums of ln_dwb_partial with one invocation per column over a chunk of rows
// (workgroup (i, k) = columns i*WG.., row chunk k); ln_dwb_reduce then sums the chunks.
@compute @workgroup_size(WG)
fn ln_dwb_partial_cols(@builtin(workgroup_id) wid: vec3u,
                       @builtin(local_invocation_index) lid: u32) {
  let C = lrp_p.C;
  let c = wid.x * WG + lid;
  if (c >= C) { return; }
  let chunk = wid.y;
  let r0 = chunk * lrp_p.rows_per_chunk;
  let r1 = min(lrp_p.rows, r0 + lrp_p.rows_per_chunk);
  var aw = 0.0;
  var ab = 0.0;
  for (var r = r0; r < r1; r++) {
    let g = f32(lrp_g[r * C + c]);
    aw += g * (f32(lrp_x[r * C + c]) - lrp_stats[2u * r]) * lrp_stats[2u * r + 1u];
    ab += g;
  }
  lrp_partial[chunk * C + c] = aw;
  lrp_partial[(lrp_p.chunks + chunk) * C + c] = ab;
}
