// Elementwise kernels over flat arrays of f32 or f16 (element types dt_a, dt_b, dt_out: aliases
// the runtime sets per variant; values are computed in f32 and rounded once on store). One
// thread = one element; the grid may be folded into y past 65535 workgroups, so the linear index
// is rebuilt from num_workgroups.
// Bindings: inputs (read), output (read_write), uniforms last.

override WG: u32 = 256;

@group(0) @binding(0) var<storage, read> add_a: array<dt_a>;
@group(0) @binding(1) var<storage, read> add_b: array<dt_b>;
@group(0) @binding(2) var<storage, read_write> add_out: array<dt_out>;
@group(0) @binding(3) var<uniform> add_p: BinaryParams;

// out = a + alpha * b (b broadcast by modulo when its length divides a's: bias rows, scalars).
@compute @workgroup_size(WG)
fn add(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = sl_flat_index(gid, nwg, WG);
  if (i >= add_p.n) { return; }
  add_out[i] = dt_out(f32(add_a[i]) + add_p.alpha * f32(add_b[i % add_p.nb]));
}

@group(0) @binding(0) var<storage, read_write> fill_out: array<dt_out>;
@group(0) @binding(1) var<uniform> fill_p: FillParams;

// out[offset + i] = value.
@compute @workgroup_size(WG)
fn fill(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = sl_flat_index(gid, nwg, WG);
  if (i >= fill_p.n) { return; }
  fill_out[fill_p.offset + i] = dt_out(bitcast<f32>(fill_p.bits));
}

@group(0) @binding(0) var<storage, read> convert_x: array<dt_a>;
@group(0) @binding(1) var<storage, read_write> convert_out: array<dt_out>;
@group(0) @binding(2) var<uniform> convert_p: UnaryParams;

// out = x converted between element types (f32 -> f16 rounds to nearest even; overflow -> inf).
@compute @workgroup_size(WG)
fn convert(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = sl_flat_index(gid, nwg, WG);
  if (i >= convert_p.n) { return; }
  convert_out[i] = dt_out(f32(convert_x[i]));
}

@group(0) @binding(0) var<storage, read> axpy_x: array<dt_a>;
@group(0) @binding(1) var<storage, read_write> axpy_y: array<dt_out>;
@group(0) @binding(2) var<uniform> axpy_p: BinaryParams;

// y[i] += alpha * x[i % nb]: in-place accumulation (a buffer may not be bound both read and
// read_write in one dispatch, so this cannot be `add` with out = a).
@compute @workgroup_size(WG)
fn axpy(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = sl_flat_index(gid, nwg, WG);
  if (i >= axpy_p.n) { return; }
  axpy_y[i] = dt_out(f32(axpy_y[i]) + axpy_p.alpha * f32(axpy_x[i % axpy_p.nb]));
}

@group(0) @binding(0) var<storage, read> mul_a: array<dt_a>;
@group(0) @binding(1) var<storage, read> mul_b: array<dt_b>;
@group(0) @binding(2) var<storage, read_write> mul_out: array<dt_out>;
@group(0) @binding(3) var<uniform> mul_p: BinaryParams;

// out = alpha * a * b (b broadcast by modulo, as in `add`).
@compute @workgroup_size(WG)
fn mul(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = sl_flat_index(gid, nwg, WG);
  if (i >= mul_p.n) { return; }
  mul_out[i] = dt_out(mul_p.alpha * f32(mul_a[i]) * f32(mul_b[i % mul_p.nb]));
}

@group(0) @binding(0) var<storage, read> tile_x: array<dt_a>;
@group(0) @binding(1) var<storage, read_write> tile_out: array<dt_out>;
@group(0) @binding(2) var<uniform> tile_p: BinaryParams;

// out[i] = alpha * x[i % nb]: broadcasts a suffix-shaped tensor (the backward of a reduction).
@compute @workgroup_size(WG)
fn tile(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = sl_flat_index(gid, nwg, WG);
  if (i >= tile_p.n) { return; }
  tile_out[i] = dt_out(tile_p.alpha * f32(tile_x[i % tile_p.nb]));
}

@group(0) @binding(0) var<storage, read> affine_x: array<dt_a>;
@group(0) @binding(1) var<storage, read_write> affine_out: array<dt_out>;
@group(0) @binding(2) var<uniform> affine_p: AffineParams;

// out = s * x + c.
@compute @workgroup_size(WG)
fn affine(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = sl_flat_index(gid, nwg, WG);
  if (i >= affine_p.n) { return; }
  affine_out[i] = dt_out(affine_p.s * f32(affine_x[i]) + affine_p.c);
}

// Activations. Op codes (the OP override, see UNARY in src/kernels/elementwise.ts): 0 relu,
// 1 gelu (exact, erf), 2 sigmoid, 3 erf. OP is a pipeline constant, so the switch folds away: a
// CPU adapter's SIMD code would otherwise run every case under masks (a uniform-buffer op code
// made gelu cost all four activations on lavapipe).
override OP: u32 = 1u;

// The math is the prelude's (src/gpu/wgsl-activation.ts), shared with matmul's fused epilogues.

fn unary_fwd(op: u32, x: f32) -> f32 {
  switch op {
    case 0u: { return max(x, 0.0); }
    case 1u: { return sl_gelu(x); }
    case 2u: { return sl_sigmoid(x); }
    default: { return sl_erf(x); }
  }
}

// d op(x) / dx.
fn unary_deriv(op: u32, x: f32) -> f32 {
  switch op {
    // 0 at x == 0, as PyTorch's threshold_backward.
    case 0u: { return select(0.0, 1.0, x > 0.0); }
    case 1u: { return sl_gelu_deriv(x); }
    case 2u: { return sl_sigmoid_deriv(x); }
    default: { return sl_erf_deriv(x); }
  }
}

@group(0) @binding(0) var<storage, read> unary_x: array<dt_a>;
@group(0) @binding(1) var<storage, read_write> unary_out: array<dt_out>;
@group(0) @binding(2) var<uniform> unary_p: UnaryParams;

// out = op(x).
@compute @workgroup_size(WG)
fn unary(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = sl_flat_index(gid, nwg, WG);
  if (i >= unary_p.n) { return; }
  unary_out[i] = dt_out(unary_fwd(OP, f32(unary_x[i])));
}

@group(0) @binding(0) var<storage, read> unary_grad_x: array<dt_a>;
@group(0) @binding(1) var<storage, read> unary_grad_g: array<dt_b>;
@group(0) @binding(2) var<storage, read_write> unary_grad_out: array<dt_out>;
@group(0) @binding(3) var<uniform> unary_grad_p: UnaryParams;

// out = g * op'(x): the input gradient, recomputed from the saved input.
@compute @workgroup_size(WG)
fn unary_grad(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = sl_flat_index(gid, nwg, WG);
  if (i >= unary_grad_p.n) { return; }
  unary_grad_out[i] = dt_out(f32(unary_grad_g[i]) * unary_deriv(OP, f32(unary_grad_x[i])));
}
