// Segmentation losses over logits x and 0/1 targets y of the same shape [B, N] (N = every
// non-batch element of a sample).
// dice_partial:  x, y (read) -> partial [B, P, 3] = (sum p*y, sum p, sum y) over chunk k of
//                sample b, p = sigmoid(x). Workgroup (k, b) = one chunk; threads stride it.
// dice_finalize: partial (read) -> stats [B, 2] = (num, den), loss [1] = mean_b (1 - num/den).
//                A single workgroup; it loops over the batch.
// dice_grad:     x, y, stats, gup [1] (read) -> dx [B*N]. One thread = one element.
// bce_partial:   x, y (read) -> partial [P] = chunk sums of the stable BCE term.
// sum_finalize:  partial (read) -> out [1] = scale * sum(partial). A single workgroup.
// bce_grad:      x, y, gup [1] (read) -> dx [n] = gup * (sigmoid(x) - y) / n.
// Bindings: inputs (read), outputs (read_write), the uniform struct last.
// The shared-memory tree reductions (dp_sum, df_sum, bp_sum, sf_sum) are generated from
// src/kernels/loss.ts (defineShader's trees).

override WG: u32 = 256;

// sigmoid without overflow: exp of a non-positive argument only.
fn sigmoid(x: f32) -> f32 {
  if (x >= 0.0) { return 1.0 / (1.0 + exp(-x)); }
  let e = exp(x);
  return e / (1.0 + e);
}

// log(1 + u) for u in [0, 1]: the series keeps full relative precision where 1 + u rounds to 1.
fn log1p_small(u: f32) -> f32 {
  if (u < 1e-4) { return u * (1.0 - u * (0.5 - u / 3.0)); }
  return log(1.0 + u);
}

@group(0) @binding(0) var<storage, read> dp_x: array<f32>;
@group(0) @binding(1) var<storage, read> dp_y: array<f32>;
@group(0) @binding(2) var<storage, read_write> dp_partial: array<f32>;
@group(0) @binding(3) var<uniform> dp_p: DicePartialParams;
var<workgroup> dp_r0: array<f32, WG>;
var<workgroup> dp_r1: array<f32, WG>;
var<workgroup> dp_r2: array<f32, WG>;

@compute @workgroup_size(WG)
fn dice_partial(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let k = wid.x;
  let b = wid.y;
  let start = k * dp_p.chunk;
  let end = min(dp_p.N, start + dp_p.chunk);
  let base = b * dp_p.N;
  var spy = 0.0;
  var sp = 0.0;
  var sy = 0.0;
  for (var i = start + lid; i < end; i += WG) {
    let p = sigmoid(dp_x[base + i]);
    let y = dp_y[base + i];
    spy += p * y;
    sp += p;
    sy += y;
  }
  dp_r0[lid] = spy;
  dp_r1[lid] = sp;
  dp_r2[lid] = sy;
  dp_sum(lid);
  if (lid == 0u) {
    let o = 3u * (b * dp_p.P + k);
    dp_partial[o] = dp_r0[0];
    dp_partial[o + 1u] = dp_r1[0];
    dp_partial[o + 2u] = dp_r2[0];
  }
}

@group(0) @binding(0) var<storage, read> df_partial: array<f32>;
@group(0) @binding(1) var<storage, read_write> df_stats: array<f32>;
@group(0) @binding(2) var<storage, read_write> df_loss: array<f32>;
@group(0) @binding(3) var<uniform> df_p: DiceFinalizeParams;
var<workgroup> df_r0: array<f32, WG>;
var<workgroup> df_r1: array<f32, WG>;
var<workgroup> df_r2: array<f32, WG>;

// num = 2 * sum(p*y) + smooth, den = sum(p) + sum(y) + smooth (MONAI smooth_nr = smooth_dr).
@compute @workgroup_size(WG)
fn dice_finalize(@builtin(local_invocation_index) lid: u32) {
  var total = 0.0;
  for (var b = 0u; b < df_p.B; b++) {
    var spy = 0.0;
    var sp = 0.0;
    var sy = 0.0;
    for (var k = lid; k < df_p.P; k += WG) {
      let o = 3u * (b * df_p.P + k);
      spy += df_partial[o];
      sp += df_partial[o + 1u];
      sy += df_partial[o + 2u];
    }
    df_r0[lid] = spy;
    df_r1[lid] = sp;
    df_r2[lid] = sy;
    df_sum(lid);
    let num = 2.0 * df_r0[0] + df_p.smoothing;
    let den = df_r1[0] + df_r2[0] + df_p.smoothing;
    total += 1.0 - num / den;
    if (lid == 0u) {
      df_stats[2u * b] = num;
      df_stats[2u * b + 1u] = den;
    }
    // Every thread has read the totals before the next sample overwrites them.
    workgroupBarrier();
  }
  if (lid == 0u) { df_loss[0] = total / f32(df_p.B); }
}

@group(0) @binding(0) var<storage, read> dg_x: array<f32>;
@group(0) @binding(1) var<storage, read> dg_y: array<f32>;
@group(0) @binding(2) var<storage, read> dg_stats: array<f32>;
@group(0) @binding(3) var<storage, read> dg_gup: array<f32>;
@group(0) @binding(4) var<storage, read_write> dg_dx: array<f32>;
@group(0) @binding(5) var<uniform> dg_p: DiceGradParams;

// dL/dx = gup * dL/dp * p(1-p), dL/dp = -(2y*den - num) / den^2 / B. p(1-p) is taken as
// sigmoid(x) * sigmoid(-x) so it stays accurate (not 0) at large |x|.
@compute @workgroup_size(WG)
fn dice_grad(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = sl_flat_index(gid, nwg, WG);
  if (i >= dg_p.n) { return; }
  let b = i / dg_p.N;
  let num = dg_stats[2u * b];
  let den = dg_stats[2u * b + 1u];
  let x = dg_x[i];
  let dldp = -(2.0 * dg_y[i] * den - num) / (den * den) * dg_p.inv_B;
  dg_dx[i] = dg_gup[0] * dldp * (sigmoid(x) * sigmoid(-x));
}

@group(0) @binding(0) var<storage, read> bp_x: array<f32>;
@group(0) @binding(1) var<storage, read> bp_y: array<f32>;
@group(0) @binding(2) var<storage, read_write> bp_partial: array<f32>;
@group(0) @binding(3) var<uniform> bp_p: ChunkParams;
var<workgroup> bp_r: array<f32, WG>;

// Term max(x, 0) - x*y + log(1 + exp(-|x|)): never overflows, exact to f32 at large |x|.
@compute @workgroup_size(WG)
fn bce_partial(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let k = wid.x;
  let start = k * bp_p.chunk;
  let end = min(bp_p.n, start + bp_p.chunk);
  var s = 0.0;
  for (var i = start + lid; i < end; i += WG) {
    let x = bp_x[i];
    s += max(x, 0.0) - x * bp_y[i] + log1p_small(exp(-abs(x)));
  }
  bp_r[lid] = s;
  bp_sum(lid);
  if (lid == 0u) { bp_partial[k] = bp_r[0]; }
}

@group(0) @binding(0) var<storage, read> sf_partial: array<f32>;
@group(0) @binding(1) var<storage, read_write> sf_out: array<f32>;
@group(0) @binding(2) var<uniform> sf_p: SumParams;
var<workgroup> sf_r: array<f32, WG>;

@compute @workgroup_size(WG)
fn sum_finalize(@builtin(local_invocation_index) lid: u32) {
  var s = 0.0;
  for (var k = lid; k < sf_p.P; k += WG) { s += sf_partial[k]; }
  sf_r[lid] = s;
  sf_sum(lid);
  if (lid == 0u) { sf_out[0] = sf_r[0] * sf_p.scale; }
}

@group(0) @binding(0) var<storage, read> bg_x: array<f32>;
@group(0) @binding(1) var<storage, read> bg_y: array<f32>;
@group(0) @binding(2) var<storage, read> bg_gup: array<f32>;
@group(0) @binding(3) var<storage, read_write> bg_dx: array<f32>;
@group(0) @binding(4) var<uniform> bg_p: BceGradParams;

@compute @workgroup_size(WG)
fn bce_grad(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = sl_flat_index(gid, nwg, WG);
  if (i >= bg_p.n) { return; }
  bg_dx[i] = bg_gup[0] * (sigmoid(bg_x[i]) - bg_y[i]) * bg_p.inv_n;
}
