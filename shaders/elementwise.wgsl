// Elementwise kernels over flat f32 arrays. One thread = one element; the grid may be folded
// into y past 65535 workgroups, so the linear index is rebuilt from num_workgroups.
// Bindings: inputs (read), output (read_write), uniforms last.

override WG: u32 = 256;

fn linear_index(gid: vec3u, nwg: vec3u) -> u32 {
  return gid.x + gid.y * nwg.x * WG;
}

@group(0) @binding(0) var<storage, read> add_a: array<f32>;
@group(0) @binding(1) var<storage, read> add_b: array<f32>;
@group(0) @binding(2) var<storage, read_write> add_out: array<f32>;
@group(0) @binding(3) var<uniform> add_p: BinaryParams;

// out = a + alpha * b (b broadcast by modulo when its length divides a's: bias rows, scalars).
@compute @workgroup_size(WG)
fn add(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = linear_index(gid, nwg);
  if (i >= add_p.n) { return; }
  add_out[i] = add_a[i] + add_p.alpha * add_b[i % add_p.nb];
}

@group(0) @binding(0) var<storage, read_write> fill_out: array<f32>;
@group(0) @binding(1) var<uniform> fill_p: FillParams;

// out[offset + i] = value.
@compute @workgroup_size(WG)
fn fill(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = linear_index(gid, nwg);
  if (i >= fill_p.n) { return; }
  fill_out[fill_p.offset + i] = bitcast<f32>(fill_p.bits);
}

@group(0) @binding(0) var<storage, read> axpy_x: array<f32>;
@group(0) @binding(1) var<storage, read_write> axpy_y: array<f32>;
@group(0) @binding(2) var<uniform> axpy_p: BinaryParams;

// y[i] += alpha * x[i % nb]: in-place accumulation (a buffer may not be bound both read and
// read_write in one dispatch, so this cannot be `add` with out = a).
@compute @workgroup_size(WG)
fn axpy(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = linear_index(gid, nwg);
  if (i >= axpy_p.n) { return; }
  axpy_y[i] = axpy_y[i] + axpy_p.alpha * axpy_x[i % axpy_p.nb];
}
