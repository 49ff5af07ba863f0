// Softmax over the last dim of a row-major [rows, cols] array.
// Bindings: inputs (read), output (read_write), SoftmaxParams last.
// One workgroup = one row (rows folded into y past 65535); one thread = a stride-WG slice of the
// row, combined by shared-memory trees (softmax_max, softmax_sum, softmax_grad_sum, generated
// from src/kernels/softmax.ts). Rows of any length: threads loop over the columns.

override WG: u32 = 256;

// Must be >= WG (power of two).
const SOFTMAX_SHARED: u32 = 256u;

@group(0) @binding(0) var<storage, read> softmax_x: array<f32>;
@group(0) @binding(1) var<storage, read_write> softmax_y: array<f32>;
@group(0) @binding(2) var<uniform> softmax_p: SoftmaxParams;

var<workgroup> softmax_sh: array<f32, SOFTMAX_SHARED>;

// y = exp(x - max) / sum(exp(x - max)): subtracting the row max keeps exp from overflowing.
@compute @workgroup_size(WG)
fn softmax(
  @builtin(local_invocation_id) lid: vec3u,
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
) {
  let row = sl_group_index(wid, nwg);
  // Uniform per workgroup: the whole group returns, so the barriers below stay uniform.
  if (row >= softmax_p.rows) { return; }
  let t = lid.x;
  let base = row * softmax_p.cols;
  var m = bitcast<f32>(0xff7fffffu); // -FLT_MAX
  for (var j = t; j < softmax_p.cols; j += WG) { m = max(m, softmax_x[base + j]); }
  softmax_sh[t] = m;
  softmax_max(t);
  let rowMax = softmax_sh[0];
  workgroupBarrier();
  var acc = 0.0;
  for (var j = t; j < softmax_p.cols; j += WG) { acc += exp(softmax_x[base + j] - rowMax); }
  softmax_sh[t] = acc;
  softmax_sum(t);
  let inv = 1.0 / softmax_sh[0];
  for (var j = t; j < softmax_p.cols; j += WG) {
    softmax_y[base + j] = exp(softmax_x[base + j] - rowMax) * inv;
  }
}

@group(0) @binding(0) var<storage, read> softmax_grad_y: array<f32>;
@group(0) @binding(1) var<storage, read> softmax_grad_g: array<f32>;
@group(0) @binding(2) var<storage, read_write> softmax_grad_out: array<f32>;
@group(0) @binding(3) var<uniform> softmax_grad_p: SoftmaxParams;

var<workgroup> softmax_grad_sh: array<f32, SOFTMAX_SHARED>;

// dx = y * (g - sum(g * y)) from the saved output y.
@compute @workgroup_size(WG)
fn softmax_grad(
  @builtin(local_invocation_id) lid: vec3u,
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
) {
  let row = sl_group_index(wid, nwg);
  if (row >= softmax_grad_p.rows) { return; }
  let t = lid.x;
  let base = row * softmax_grad_p.cols;
  var acc = 0.0;
  for (var j = t; j < softmax_grad_p.cols; j += WG) {
    acc += softmax_grad_g[base + j] * softmax_grad_y[base + j];
  }
  softmax_grad_sh[t] = acc;
  softmax_grad_sum(t);
  let dot = softmax_grad_sh[0];
  for (var j = t; j < softmax_grad_p.cols; j += WG) {
    softmax_grad_out[base + j] = softmax_grad_y[base + j] * (softmax_grad_g[base + j] - dot);
  }
}
