// Resizing of NHWC images, PyTorch F.interpolate semantics with align_corners=False, no antialias.
//   nearest_fwd / bilinear_fwd / bicubic_fwd: x [B, H, W, C] -> y [B, Ho, Wo, C];
//     one thread = one output element.
//   nearest_bwd / bilinear_bwd: dy [B, Ho, Wo, C] -> dx [B, H, W, C]; one thread = one input
//     element, gathering the outputs that read it (source indices are monotone in the output
//     index, so those outputs form a contiguous range per axis): race-free, no atomics.
// scale_* = in / out in f32, as PyTorch computes it; the coordinate math is f32 like PyTorch's.
// The linear index is rebuilt from a grid folded into y past 65535 workgroups.
// Bindings: input (read, dt_in), output (read_write, dt_out), uniforms last; f32 or f16 each,
// interpolation and gradient sums in f32.

override WG: u32 = 256;

// nearest: src = min(floor(dst * scale), in - 1).
fn near_src(o: u32, scale: f32, n: u32) -> u32 {
  return min(u32(floor(f32(o) * scale)), n - 1u);
}

// Bilinear source of output o: (i0, offset of i1 (0 or 1), lambda1 = weight of i1).
struct Lin {
  i0: u32,
  off: u32,
  l1: f32,
}

fn lin_src(o: u32, scale: f32, n: u32) -> Lin {
  let s = max(scale * (f32(o) + 0.5) - 0.5, 0.0);
  let i0 = min(u32(floor(s)), n - 1u);
  let l1 = clamp(s - f32(i0), 0.0, 1.0);
  var off = 0u;
  if (i0 < n - 1u) { off = 1u; }
  return Lin(i0, off, l1);
}

// Weight with which output o reads input i along one axis (0 when it does not).
fn lin_weight(o: u32, i: u32, scale: f32, n: u32) -> f32 {
  let l = lin_src(o, scale, n);
  var wgt = 0.0;
  if (l.i0 == i) { wgt += 1.0 - l.l1; }
  if (l.i0 + l.off == i) { wgt += l.l1; }
  return wgt;
}

// First output o in [0, nout] whose nearest source is >= t (nout when none).
fn near_first(t: u32, scale: f32, nin: u32, nout: u32) -> u32 {
  if (t == 0u) { return 0u; }
  if (t >= nin) { return nout; }
  var o = min(u32(max(ceil(f32(t) / scale), 0.0)), nout);
  loop {
    if (o == 0u || near_src(o - 1u, scale, nin) < t) { break; }
    o -= 1u;
  }
  loop {
    if (o >= nout || near_src(o, scale, nin) >= t) { break; }
    o += 1u;
  }
  return o;
}

// First output o in [0, nout] whose bilinear i0 is >= t (nout when none).
fn lin_first(t: i32, scale: f32, nin: u32, nout: u32) -> u32 {
  if (t <= 0) { return 0u; }
  if (u32(t) >= nin) { return nout; }
  let ut = u32(t);
  var o = min(u32(max(ceil((f32(t) + 0.5) / scale - 0.5), 0.0)), nout);
  loop {
    if (o == 0u || lin_src(o - 1u, scale, nin).i0 < ut) { break; }
    o -= 1u;
  }
  loop {
    if (o >= nout || lin_src(o, scale, nin).i0 >= ut) { break; }
    o += 1u;
  }
  return o;
}

// ---- nearest --------------------------------------------------------------------------------

@group(0) @binding(0) var<storage, read> nf_x: array<dt_in>;
@group(0) @binding(1) var<storage, read_write> nf_y: array<dt_out>;
@group(0) @binding(2) var<uniform> nf_p: ResizeParams;

@compute @workgroup_size(WG)
fn nearest_fwd(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = sl_flat_index(gid, nwg, WG);
  let p = nf_p;
  if (i >= p.b * p.ho * p.wo * p.c) { return; }
  let ci = i % p.c;
  let pix = i / p.c;
  let ox = pix % p.wo;
  let oy = (pix / p.wo) % p.ho;
  let bi = pix / (p.wo * p.ho);
  let iy = near_src(oy, p.scale_y, p.h);
  let ix = near_src(ox, p.scale_x, p.w);
  nf_y[i] = dt_out(f32(nf_x[((bi * p.h + iy) * p.w + ix) * p.c + ci]));
}

@group(0) @binding(0) var<storage, read> nb_dy: array<dt_in>;
@group(0) @binding(1) var<storage, read_write> nb_dx: array<dt_out>;
@group(0) @binding(2) var<uniform> nb_p: ResizeParams;

@compute @workgroup_size(WG)
fn nearest_bwd(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = sl_flat_index(gid, nwg, WG);
  let p = nb_p;
  if (i >= p.b * p.h * p.w * p.c) { return; }
  let ci = i % p.c;
  let pix = i / p.c;
  let ix = pix % p.w;
  let iy = (pix / p.w) % p.h;
  let bi = pix / (p.w * p.h);
  let y0 = near_first(iy, p.scale_y, p.h, p.ho);
  let y1 = near_first(iy + 1u, p.scale_y, p.h, p.ho);
  let x0 = near_first(ix, p.scale_x, p.w, p.wo);
  let x1 = near_first(ix + 1u, p.scale_x, p.w, p.wo);
  var s = 0.0;
  for (var oy = y0; oy < y1; oy++) {
    for (var ox = x0; ox < x1; ox++) {
      s += f32(nb_dy[((bi * p.ho + oy) * p.wo + ox) * p.c + ci]);
    }
  }
  nb_dx[i] = dt_out(s);
}

// ---- bilinear -------------------------------------------------------------------------------

@group(0) @binding(0) var<storage, read> bf_x: array<dt_in>;
@group(0) @binding(1) var<storage, read_write> bf_y: array<dt_out>;
@group(0) @binding(2) var<uniform> bf_p: ResizeParams;

@compute @workgroup_size(WG)
fn bilinear_fwd(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = sl_flat_index(gid, nwg, WG);
  let p = bf_p;
  if (i >= p.b * p.ho * p.wo * p.c) { return; }
  let ci = i % p.c;
  let pix = i / p.c;
  let ox = pix % p.wo;
  let oy = (pix / p.wo) % p.ho;
  let bi = pix / (p.wo * p.ho);
  let ly = lin_src(oy, p.scale_y, p.h);
  let lx = lin_src(ox, p.scale_x, p.w);
  let r0 = (bi * p.h + ly.i0) * p.w;
  let r1 = r0 + ly.off * p.w;
  let c0 = lx.i0 * p.c + ci;
  let c1 = c0 + lx.off * p.c;
  let top = (1.0 - lx.l1) * f32(bf_x[r0 * p.c + c0]) + lx.l1 * f32(bf_x[r0 * p.c + c1]);
  let bot = (1.0 - lx.l1) * f32(bf_x[r1 * p.c + c0]) + lx.l1 * f32(bf_x[r1 * p.c + c1]);
  bf_y[i] = dt_out((1.0 - ly.l1) * top + ly.l1 * bot);
}

@group(0) @binding(0) var<storage, read> bb_dy: array<dt_in>;
@group(0) @binding(1) var<storage, read_write> bb_dx: array<dt_out>;
@group(0) @binding(2) var<uniform> bb_p: ResizeParams;

// Outputs reading input row iy have i0 in {iy - 1, iy}: the range [first(iy-1), first(iy+1)).
@compute @workgroup_size(WG)
fn bilinear_bwd(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = sl_flat_index(gid, nwg, WG);
  let p = bb_p;
  if (i >= p.b * p.h * p.w * p.c) { return; }
  let ci = i % p.c;
  let pix = i / p.c;
  let ix = pix % p.w;
  let iy = (pix / p.w) % p.h;
  let bi = pix / (p.w * p.h);
  let y0 = lin_first(i32(iy) - 1, p.scale_y, p.h, p.ho);
  let y1 = lin_first(i32(iy) + 1, p.scale_y, p.h, p.ho);
  let x0 = lin_first(i32(ix) - 1, p.scale_x, p.w, p.wo);
  let x1 = lin_first(i32(ix) + 1, p.scale_x, p.w, p.wo);
  var s = 0.0;
  for (var oy = y0; oy < y1; oy++) {
    let wy = lin_weight(oy, iy, p.scale_y, p.h);
    if (wy == 0.0) { continue; }
    var row = 0.0;
    for (var ox = x0; ox < x1; ox++) {
      let gy = f32(bb_dy[((bi * p.ho + oy) * p.wo + ox) * p.c + ci]);
      row += lin_weight(ox, ix, p.scale_x, p.w) * gy;
    }
    s += wy * row;
  }
  bb_dx[i] = dt_out(s);
}

// ---- bicubic (forward only) -----------------------------------------------------------------

@group(0) @binding(0) var<storage, read> cf_x: array<dt_in>;
@group(0) @binding(1) var<storage, read_write> cf_y: array<dt_out>;
@group(0) @binding(2) var<uniform> cf_p: ResizeParams;

const CUBIC_A = -0.75;

// Keys' cubic convolution weights of the 4 taps i0-1 .. i0+2 at fraction t (PyTorch's A = -0.75).
fn cubic_coeffs(t: f32) -> vec4f {
  let a = CUBIC_A;
  let x1 = t + 1.0;
  let x2 = 1.0 - t;
  let x3 = 2.0 - t;
  return vec4f(
    ((a * x1 - 5.0 * a) * x1 + 8.0 * a) * x1 - 4.0 * a,
    ((a + 2.0) * t - (a + 3.0)) * t * t + 1.0,
    ((a + 2.0) * x2 - (a + 3.0)) * x2 * x2 + 1.0,
    ((a * x3 - 5.0 * a) * x3 + 8.0 * a) * x3 - 4.0 * a,
  );
}

@compute @workgroup_size(WG)
fn bicubic_fwd(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = sl_flat_index(gid, nwg, WG);
  let p = cf_p;
  if (i >= p.b * p.ho * p.wo * p.c) { return; }
  let ci = i % p.c;
  let pix = i / p.c;
  let ox = pix % p.wo;
  let oy = (pix / p.wo) % p.ho;
  let bi = pix / (p.wo * p.ho);
  // No clamp at 0 for cubic: the source may be negative; taps are clamped to the border.
  let sy = p.scale_y * (f32(oy) + 0.5) - 0.5;
  let sx = p.scale_x * (f32(ox) + 0.5) - 0.5;
  let fy = floor(sy);
  let fx = floor(sx);
  let wy = cubic_coeffs(sy - fy);
  let wx = cubic_coeffs(sx - fx);
  var s = 0.0;
  for (var a = 0; a < 4; a++) {
    let yy = u32(clamp(i32(fy) - 1 + a, 0, i32(p.h) - 1));
    let row = (bi * p.h + yy) * p.w;
    var r = 0.0;
    for (var c = 0; c < 4; c++) {
      let xx = u32(clamp(i32(fx) - 1 + c, 0, i32(p.w) - 1));
      r += wx[c] * f32(cf_x[(row + xx) * p.c + ci]);
    }
    s += wy[a] * r;
  }
  cf_y[i] = dt_out(s);
}
