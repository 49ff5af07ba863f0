// Max-pooling with kernel = stride = k, no padding, floor (PyTorch MaxPool2d(k, k)) on NHWC.
//   maxpool_fwd: x [B, H, W, C] -> y [B, H/k, W/k, C]; one thread = one output element.
//   maxpool_bwd: dy, x -> dx [B, H, W, C]; one thread = one input element (gather: no atomics).
// Ties go to the first maximum in window scan order (row-major), as in PyTorch; rows/cols past
// the last whole window get no gradient. The linear index is rebuilt from a grid folded into y.
// Bindings: inputs (read), output (read_write), uniforms last. Element types dt_x, dt_y, dt_dy,
// dt_dx (f32 or f16 each); comparisons in f32 (exact for f16 values).

override WG: u32 = 256;

@group(0) @binding(0) var<storage, read> mpf_x: array<dt_x>;
@group(0) @binding(1) var<storage, read_write> mpf_y: array<dt_y>;
@group(0) @binding(2) var<uniform> mpf_p: PoolParams;

@compute @workgroup_size(WG)
fn maxpool_fwd(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = sl_flat_index(gid, nwg, WG);
  let p = mpf_p;
  if (i >= p.b * p.ho * p.wo * p.c) { return; }
  let ci = i % p.c;
  let pix = i / p.c;
  let ox = pix % p.wo;
  let oy = (pix / p.wo) % p.ho;
  let bi = pix / (p.wo * p.ho);
  let base = ((bi * p.h + oy * p.k) * p.w + ox * p.k) * p.c + ci;
  var best = f32(mpf_x[base]);
  let k = sl_bound(p.k, gid.x);
  for (var dy = 0u; dy < k; dy++) {
    for (var dx = 0u; dx < k; dx++) {
      let v = f32(mpf_x[base + (dy * p.w + dx) * p.c]);
      if (v > best) { best = v; }
    }
  }
  mpf_y[i] = dt_y(best);
}

@group(0) @binding(0) var<storage, read> mpb_dy: array<dt_dy>;
@group(0) @binding(1) var<storage, read> mpb_x: array<dt_x>;
@group(0) @binding(2) var<storage, read_write> mpb_dx: array<dt_dx>;
@group(0) @binding(3) var<uniform> mpb_p: PoolParams;

// dx = dy of the window when this element is the window's first maximum, else 0.
@compute @workgroup_size(WG)
fn maxpool_bwd(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = sl_flat_index(gid, nwg, WG);
  let p = mpb_p;
  if (i >= p.b * p.h * p.w * p.c) { return; }
  let ci = i % p.c;
  let pix = i / p.c;
  let ix = pix % p.w;
  let iy = (pix / p.w) % p.h;
  let bi = pix / (p.w * p.h);
  let oy = iy / p.k;
  let ox = ix / p.k;
  if (oy >= p.ho || ox >= p.wo) {
    mpb_dx[i] = dt_dx(0.0);
    return;
  }
  let base = ((bi * p.h + oy * p.k) * p.w + ox * p.k) * p.c + ci;
  var arg = base;
  var best = f32(mpb_x[base]);
  let k = sl_bound(p.k, gid.x);
  for (var dy = 0u; dy < k; dy++) {
    for (var dx = 0u; dx < k; dx++) {
      let j = base + (dy * p.w + dx) * p.c;
      let v = f32(mpb_x[j]);
      if (v > best) {
        best = v;
        arg = j;
      }
    }
  }
  var g = 0.0;
  if (arg == i) { g = f32(mpb_dy[((bi * p.ho + oy) * p.wo + ox) * p.c + ci]); }
  mpb_dx[i] = dt_dx(g);
}
