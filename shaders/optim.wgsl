// Optimizer kernels.
// adamw:         grad (read); param, exp_avg, exp_avg_sq (read_write, in place), all [n].
//                One thread = one element. The step's scalars (bias corrections, lr) come from
//                the CPU in the uniform, so no readback is needed.
// sumsq_partial: x [n] (read) -> partial[first + k] = sum of x^2 over chunk k. One workgroup =
//                one chunk.
// clip_finalize: partial [P] (read) -> norm [1] = sqrt(sum partial), coef [1] =
//                min(1, max_norm / (norm + 1e-6)). A single workgroup.
// scale_inplace: coef [1] (read), x [n] (read_write): x *= coef[0]. One thread = one element.
// Bindings: inputs (read), outputs (read_write), the uniform struct last. The tree reductions
// (ss_sum, cf_sum) and adamw_multi's slots are generated from src/kernels/optim.ts.

override WG: u32 = 256;

@group(0) @binding(0) var<storage, read> adamw_g: array<f32>;
@group(0) @binding(1) var<storage, read_write> adamw_param: array<f32>;
@group(0) @binding(2) var<storage, read_write> adamw_m: array<f32>;
@group(0) @binding(3) var<storage, read_write> adamw_v: array<f32>;
@group(0) @binding(4) var<uniform> adamw_p: AdamWParams;

// torch.optim.AdamW (amsgrad off), in its order of operations:
// p *= 1 - lr*wd; m = lerp(m, g, 1 - beta1); v = beta2*v + (1 - beta2)*g^2;
// p -= step_size * m / (sqrt(v) / sqrt(1 - beta2^t) + eps), step_size = lr / (1 - beta1^t).
@compute @workgroup_size(WG)
fn adamw(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = sl_flat_index(gid, nwg, WG);
  if (i >= adamw_p.n) { return; }
  let g = adamw_g[i];
  let p = adamw_param[i] * adamw_p.decay;
  let m = adamw_m[i] + adamw_p.one_minus_beta1 * (g - adamw_m[i]);
  let v = adamw_p.beta2 * adamw_v[i] + adamw_p.one_minus_beta2 * g * g;
  adamw_m[i] = m;
  adamw_v[i] = v;
  adamw_param[i] = p - adamw_p.step_size * m / (sqrt(v) / adamw_p.bc2_sqrt + adamw_p.eps);
}

@group(0) @binding(0) var<storage, read> ss_x: array<f32>;
@group(0) @binding(1) var<storage, read_write> ss_partial: array<f32>;
@group(0) @binding(2) var<uniform> ss_p: SumSqParams;
var<workgroup> ss_r: array<f32, WG>;

@compute @workgroup_size(WG)
fn sumsq_partial(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let k = wid.x;
  let start = k * ss_p.chunk;
  let end = min(ss_p.n, start + ss_p.chunk);
  var s = 0.0;
  for (var i = start + lid; i < end; i += WG) {
    let x = ss_x[i];
    s += x * x;
  }
  ss_r[lid] = s;
  ss_sum(lid);
  if (lid == 0u) { ss_partial[ss_p.first + k] = ss_r[0]; }
}

@group(0) @binding(0) var<storage, read> cf_partial: array<f32>;
@group(0) @binding(1) var<storage, read_write> cf_norm: array<f32>;
@group(0) @binding(2) var<storage, read_write> cf_coef: array<f32>;
@group(0) @binding(3) var<uniform> cf_p: ClipParams;
var<workgroup> cf_r: array<f32, WG>;

// torch.nn.utils.clip_grad_norm_: coef = max_norm / (total_norm + 1e-6), clamped to at most 1.
@compute @workgroup_size(WG)
fn clip_finalize(@builtin(local_invocation_index) lid: u32) {
  var s = 0.0;
  for (var k = lid; k < cf_p.P; k += WG) { s += cf_partial[k]; }
  cf_r[lid] = s;
  cf_sum(lid);
  if (lid == 0u) {
    let norm = sqrt(cf_r[0]);
    cf_norm[0] = norm;
    cf_coef[0] = min(1.0, cf_p.max_norm / (norm + 1e-6));
  }
}

@group(0) @binding(0) var<storage, read> sc_coef: array<f32>;
@group(0) @binding(1) var<storage, read_write> sc_x: array<f32>;
@group(0) @binding(2) var<uniform> sc_p: ScaleParams;

@compute @workgroup_size(WG)
fn scale_inplace(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = sl_flat_index(gid, nwg, WG);
  if (i >= sc_p.n) { return; }
  sc_x[i] = sc_x[i] * sc_coef[0];
}

// ---- adamw_multi: up to ADAMW_SLOTS (7) parameter tensors in one dispatch ----
// g0..g6 (read), p0..p6 (read_write): the slots' gradients and parameters (unused slots bind
// 4-byte dummies); m, v (read_write): the optimizer's packed exp_avg / exp_avg_sq, bound as the
// window that holds these slots, slot k's elements at o_k. Workgroups from start_k on update slot
// k (so a workgroup never straddles two slots); unused slots have start 0xffffffff. Same update
// and order of operations as adamw above; the per-slot step size and bias correction follow each
// tensor's own step count. WGSL has no arrays of storage bindings, so the bindings (am_g*, am_p*,
// am_m, am_v, am_p) and am_slots, the switch over the slots, are generated from one template in
// src/kernels/optim.ts.

// The new parameter value; updates m[o] and v[o] in place.
fn am_update(g: f32, p0: f32, o: u32, step_size: f32, bc2_sqrt: f32) -> f32 {
  let p = p0 * am_p.decay;
  let m = am_m[o] + am_p.one_minus_beta1 * (g - am_m[o]);
  let v = am_p.beta2 * am_v[o] + am_p.one_minus_beta2 * g * g;
  am_m[o] = m;
  am_v[o] = v;
  return p - step_size * m / (sqrt(v) / bc2_sqrt + am_p.eps);
}

@compute @workgroup_size(WG)
fn adamw_multi(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) lid: u32,
) {
  // The slot from the workgroup index, not the thread's: uniform across the workgroup, so a
  // CPU adapter's SIMD loop runs only that slot's case (a per-lane switch would run all seven).
  am_slots(sl_group_index(wid, nwg), lid);
}
