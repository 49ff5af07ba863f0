// 2-D convolution (groups 1, dilation 1, zero padding) on NHWC activations with PyTorch-layout
// weights [Cout, Cin, kh, kw], as implicit GEMMs tiled through workgroup memory:
//   conv_fwd: y[P, Cout]   = im2col(x)[P, K] · W[K, Cout]         (P = B*Ho*Wo, K = kh*kw*Cin)
//   conv_dx:  dx[Q, Cin]   = col(dy)[Q, kh*kw*Cout] · W[.., Cin]  (Q = B*H*W, gather: no atomics)
//   conv_dw:  dW[Cout, K]  = dy[P, Cout]^T · im2col(x)[P, K]      (split over P along grid z)
//   colsum:   out[r / RPW, c] = sum of RPW rows of in[rows, cols] (bias grad, split-K reduction)
// The reduction index k runs over (ky, kx, ci) with ci fastest, so im2col reads of NHWC x are
// contiguous. `direct` = 1 marks a 1x1 stride-1 unpadded conv: im2col(x) is x itself, a plain GEMM.
// One thread = an RM x RN block of outputs, rows ty + i*WGY, cols tx + j*WGX (conflict-free reads
// of the B tile, coalesced stores). Bindings: inputs (read), output (read_write), uniforms last.
// Storage element types are the dt_* aliases (f32 or f16 each; dt_a is binding 0's: x in conv_fwd
// and conv_dw, dy in conv_dx); tiles and accumulators are f32.

const RM = 4u;
const RN = 4u;
override WGX: u32 = 16;
override WGY: u32 = 16;
override TK: u32 = 16;

// Tiles shared by the three GEMM entry points (only one runs per dispatch).
var<workgroup> cv_as: array<f32, TK * WGY * RM>; // [TK][TM], TM = WGY * RM
var<workgroup> cv_bs: array<f32, TK * WGX * RN>; // [TK][TN], TN = WGX * RN

fn cv_tm() -> u32 { return WGY * RM; }
fn cv_tn() -> u32 { return WGX * RN; }

// acc += A_tile · B_tile for this thread's block.
fn cv_mac(tx: u32, ty: u32, acc: ptr<function, array<f32, RM * RN>>) {
  let tm = cv_tm();
  let tn = cv_tn();
  for (var kk = 0u; kk < TK; kk++) {
    var a: array<f32, RM>;
    var b: array<f32, RN>;
    for (var i = 0u; i < RM; i++) { a[i] = cv_as[kk * tm + ty + i * WGY]; }
    for (var j = 0u; j < RN; j++) { b[j] = cv_bs[kk * tn + tx + j * WGX]; }
    for (var i = 0u; i < RM; i++) {
      for (var j = 0u; j < RN; j++) { (*acc)[i * RN + j] += a[i] * b[j]; }
    }
  }
}

// ---- forward and input gradient: one GEMM body ---------------------------------------------
// Both read their A operand from binding 0 (x, or dy) and the weight from binding 1, through the
// same variables, so cv_gemm can call either pair of loaders; their outputs and uniforms follow.
// conv_dw binds x at 0 as well and reuses fwd_load_a for im2col(x).

@group(0) @binding(0) var<storage, read> cv_a: array<dt_a>;
@group(0) @binding(1) var<storage, read> cv_w: array<dt_w>;

// The forward's A: im2col(x)[m, k], zero outside the image (padding) and outside [P, K].
fn fwd_load_a(p: ConvParams, m: u32, k: u32) -> f32 {
  let kk = p.kh * p.kw * p.cin;
  if (m >= p.b * p.ho * p.wo || k >= kk) { return 0.0; }
  if (sl_bound(p.direct, m) == 1u) { return f32(cv_a[m * p.cin + k]); }
  let hw = p.ho * p.wo;
  let bi = m / hw;
  let r = m % hw;
  let oy = r / p.wo;
  let ox = r % p.wo;
  let tap = k / p.cin;
  let ci = k % p.cin;
  let iy = i32(oy * p.stride + tap / p.kw) - i32(p.pad);
  let ix = i32(ox * p.stride + tap % p.kw) - i32(p.pad);
  if (iy < 0 || ix < 0 || iy >= i32(p.h) || ix >= i32(p.w)) { return 0.0; }
  return f32(cv_a[((bi * p.h + u32(iy)) * p.w + u32(ix)) * p.cin + ci]);
}

// The forward's B: W[k, n] = weight[n, ci, ky, kx].
fn fwd_load_b(p: ConvParams, k: u32, n: u32) -> f32 {
  let khw = p.kh * p.kw;
  if (k >= khw * p.cin || n >= p.cout) { return 0.0; }
  return f32(cv_w[(n * p.cin + k % p.cin) * khw + k / p.cin]);
}

// The input gradient's A: col(dy)[m, k], m = input pixel (b, iy, ix), k = (ky, kx, co). dy at
// the output pixel whose window puts tap (ky, kx) on this input pixel, or 0 when none does.
fn dx_load_a(p: ConvParams, m: u32, k: u32) -> f32 {
  if (m >= p.b * p.h * p.w || k >= p.kh * p.kw * p.cout) { return 0.0; }
  if (sl_bound(p.direct, m) == 1u) { return f32(cv_a[m * p.cout + k]); }
  let hw = p.h * p.w;
  let bi = m / hw;
  let r = m % hw;
  let tap = k / p.cout;
  let co = k % p.cout;
  let ty = i32(r / p.w + p.pad) - i32(tap / p.kw);
  let tx = i32(r % p.w + p.pad) - i32(tap % p.kw);
  if (ty < 0 || tx < 0) { return 0.0; }
  let uy = u32(ty);
  let ux = u32(tx);
  if (uy % p.stride != 0u || ux % p.stride != 0u) { return 0.0; }
  let oy = uy / p.stride;
  let ox = ux / p.stride;
  if (oy >= p.ho || ox >= p.wo) { return 0.0; }
  return f32(cv_a[((bi * p.ho + oy) * p.wo + ox) * p.cout + co]);
}

// The input gradient's B: [k = (ky, kx, co), n = ci] -> weight[co, ci, ky, kx].
fn dx_load_b(p: ConvParams, k: u32, n: u32) -> f32 {
  let khw = p.kh * p.kw;
  if (k >= khw * p.cout || n >= p.cin) { return 0.0; }
  return f32(cv_w[((k % p.cout) * p.cin + n) * khw + k / p.cout]);
}

// This thread's RM x RN block of A[m0.., 0..kk) · B[0..kk, n0..] (rows ty + i*WGY, cols
// tx + j*WGX), the tiles staged through cv_as / cv_bs. dx false: the forward's operands; true:
// the input gradient's. Holds barriers: call from uniform control flow.
fn cv_gemm(dx: bool, p: ConvParams, lid: vec3u, wid: vec3u, m0: u32, n0: u32, kk: u32)
    -> array<f32, RM * RN> {
  let tm = cv_tm();
  let tn = cv_tn();
  let t = lid.y * WGX + lid.x;
  let nt = WGX * WGY;
  var acc: array<f32, RM * RN>;
  for (var k0 = 0u; k0 < sl_bound(kk, wid.x); k0 += TK) {
    // A with k fastest across threads: contiguous reads of x along ci (of dy along co).
    for (var e = t; e < tm * TK; e += nt) {
      let mm = e / TK;
      let ke = e % TK;
      if (dx) {
        cv_as[ke * tm + mm] = dx_load_a(p, m0 + mm, k0 + ke);
      } else {
        cv_as[ke * tm + mm] = fwd_load_a(p, m0 + mm, k0 + ke);
      }
    }
    for (var e = t; e < tn * TK; e += nt) {
      if (dx) {
        // n fastest: weight[co, ci, ..] is contiguous along ci for a fixed tap.
        let ke = e / tn;
        let nn = e % tn;
        cv_bs[ke * tn + nn] = dx_load_b(p, k0 + ke, n0 + nn);
      } else {
        // k fastest: contiguous reads of W along (ci, tap).
        let nn = e / TK;
        let ke = e % TK;
        cv_bs[ke * tn + nn] = fwd_load_b(p, k0 + ke, n0 + nn);
      }
    }
    workgroupBarrier();
    cv_mac(lid.x, lid.y, &acc);
    workgroupBarrier();
  }
  return acc;
}

@group(0) @binding(2) var<storage, read> fwd_bias: array<dt_bias>;
@group(0) @binding(3) var<storage, read_write> fwd_y: array<dt_y>;
@group(0) @binding(4) var<uniform> fwd_p: ConvParams;

@compute @workgroup_size(WGX, WGY)
fn conv_fwd(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let p = fwd_p;
  let m0 = p.m0 + wid.x * cv_tm();
  let n0 = wid.y * cv_tn();
  var acc = cv_gemm(false, p, lid, wid, m0, n0, p.kh * p.kw * p.cin);
  let rows = p.b * p.ho * p.wo;
  for (var i = 0u; i < RM; i++) {
    let m = m0 + lid.y + i * WGY;
    if (m >= rows) { continue; }
    for (var j = 0u; j < RN; j++) {
      let n = n0 + lid.x + j * WGX;
      if (n >= p.cout) { continue; }
      var v = acc[i * RN + j];
      if (p.has_bias == 1u) { v += f32(fwd_bias[n]); }
      fwd_y[m * p.cout + n] = dt_y(v);
    }
  }
}

@group(0) @binding(2) var<storage, read_write> dx_dx: array<dt_dx>;
@group(0) @binding(3) var<uniform> dx_p: ConvParams;

@compute @workgroup_size(WGX, WGY)
fn conv_dx(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let p = dx_p;
  let m0 = p.m0 + wid.x * cv_tm();
  let n0 = wid.y * cv_tn();
  var acc = cv_gemm(true, p, lid, wid, m0, n0, p.kh * p.kw * p.cout);
  let rows = p.b * p.h * p.w;
  for (var i = 0u; i < RM; i++) {
    let m = m0 + lid.y + i * WGY;
    if (m >= rows) { continue; }
    for (var j = 0u; j < RN; j++) {
      let n = n0 + lid.x + j * WGX;
      if (n >= p.cin) { continue; }
      dx_dx[m * p.cin + n] = dt_dx(acc[i * RN + j]);
    }
  }
}

// ---- weight gradient ------------------------------------------------------------------------

// x is cv_a (binding 0): the B operand im2col(x)[q, n], n = (ky, kx, ci), is fwd_load_a's.
@group(0) @binding(1) var<storage, read> dw_dy: array<dt_dy>;
@group(0) @binding(2) var<storage, read_write> dw_dw: array<dt_dw>;
@group(0) @binding(3) var<uniform> dw_p: ConvParams;

// Grid z = split of the P reduction: split z sums rows [z*chunk, (z+1)*chunk) into its own
// [Cout, Cin, kh, kw] slab of dw (summed afterwards by colsum when there are several).
@compute @workgroup_size(WGX, WGY)
fn conv_dw(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let p = dw_p;
  let tm = cv_tm();
  let tn = cv_tn();
  let m0 = wid.x * tm; // co
  let n0 = wid.y * tn; // (ky, kx, ci)
  let kk = p.kh * p.kw * p.cin;
  let rows = p.b * p.ho * p.wo;
  let q0 = wid.z * p.chunk;
  let q1 = min(q0 + p.chunk, rows);
  let t = lid.y * WGX + lid.x;
  let nt = WGX * WGY;
  var acc: array<f32, RM * RN>;
  for (var k0 = q0; k0 < q1; k0 += TK) {
    // dy rows are contiguous along co: co fastest across threads.
    for (var e = t; e < tm * TK; e += nt) {
      let ke = e / tm;
      let mm = e % tm;
      let q = k0 + ke;
      let co = m0 + mm;
      var v = 0.0;
      if (q < q1 && co < p.cout) { v = f32(dw_dy[q * p.cout + co]); }
      cv_as[ke * tm + mm] = v;
    }
    for (var e = t; e < tn * TK; e += nt) {
      let ke = e / tn;
      let nn = e % tn;
      let q = k0 + ke;
      var v = 0.0;
      if (q < q1) { v = fwd_load_a(p, q, n0 + nn); }
      cv_bs[ke * tn + nn] = v;
    }
    workgroupBarrier();
    cv_mac(lid.x, lid.y, &acc);
    workgroupBarrier();
  }
  let khw = p.kh * p.kw;
  let slab = wid.z * p.cout * kk;
  for (var i = 0u; i < RM; i++) {
    let co = m0 + lid.y + i * WGY;
    if (co >= p.cout) { continue; }
    for (var j = 0u; j < RN; j++) {
      let n = n0 + lid.x + j * WGX;
      if (n >= kk) { continue; }
      dw_dw[slab + (co * p.cin + n % p.cin) * khw + n / p.cin] = dt_dw(acc[i * RN + j]);
    }
  }
}

// ---- column sums ----------------------------------------------------------------------------

override CS_X: u32 = 64;
override CS_Y: u32 = 4;

@group(0) @binding(0) var<storage, read> cs_in: array<dt_in>;
@group(0) @binding(1) var<storage, read_write> cs_out: array<dt_out>;
@group(0) @binding(2) var<uniform> cs_p: ColsumParams;

var<workgroup> cs_part: array<f32, CS_X * CS_Y>;

// Workgroup (x, y) sums rows [y*rpw, (y+1)*rpw) of columns [x*CS_X, (x+1)*CS_X) into out row y.
// Threads along x read consecutive columns (coalesced); the CS_Y partial sums meet in shared.
@compute @workgroup_size(CS_X, CS_Y)
fn colsum(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let p = cs_p;
  let c = wid.x * CS_X + lid.x;
  let r0 = wid.y * p.rpw;
  let r1 = min(r0 + p.rpw, p.rows);
  var s = 0.0;
  if (c < p.cols) {
    for (var r = r0 + lid.y; r < r1; r += CS_Y) { s += f32(cs_in[r * p.cols + c]); }
  }
  cs_part[lid.y * CS_X + lid.x] = s;
  workgroupBarrier();
  if (lid.y != 0u || c >= p.cols) { return; }
  var tot = 0.0;
  for (var j = 0u; j < CS_Y; j++) { tot += cs_part[j * CS_X + lid.x]; }
  cs_out[wid.y * p.cols + c] = dt_out(tot);
}

// ---- im2col / col2im: conv2d as matmul products (the CPU-adapter path, src/kernels/conv.ts) --
// cols[p, j] (row length ldc) for p < P = B*Ho*Wo: j = (ci*kh + ky)*kw + kx < K = Cin*kh*kw, the
// weight's own flat order, so W [Cout, K] is the other operand as it is stored; j >= K (padding
// of ldc up to a multiple of 4 for vec4 loads) and taps outside the image are 0.
// col2im is its adjoint in gather form: dx[b, iy, ix, ci] = sum over the taps (ky, kx) whose
// output pixel exists of dcols[p, j]; one thread per dx element, so no atomics.
@group(0) @binding(0) var<storage, read> ic_in: array<dt_in>;
@group(0) @binding(1) var<storage, read_write> ic_out: array<dt_out>;
@group(0) @binding(2) var<uniform> ic_p: ColParams;

const IC_WG = 64u;

@compute @workgroup_size(IC_WG)
fn im2col(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = sl_flat_index(gid, nwg, IC_WG);
  let p = i / ic_p.ldc;
  let j = i % ic_p.ldc;
  let hw = ic_p.ho * ic_p.wo;
  if (p >= ic_p.b * hw) { return; }
  var v = 0.0;
  if (j < ic_p.cin * ic_p.kh * ic_p.kw) {
    let ci = j / (ic_p.kh * ic_p.kw);
    let r = j % (ic_p.kh * ic_p.kw);
    let bi = p / hw;
    let q = p % hw;
    let iy = i32((q / ic_p.wo) * ic_p.stride + r / ic_p.kw) - i32(ic_p.pad);
    let ix = i32((q % ic_p.wo) * ic_p.stride + r % ic_p.kw) - i32(ic_p.pad);
    if (iy >= 0 && iy < i32(ic_p.h) && ix >= 0 && ix < i32(ic_p.w)) {
      v = f32(ic_in[((bi * ic_p.h + u32(iy)) * ic_p.w + u32(ix)) * ic_p.cin + ci]);
    }
  }
  ic_out[i] = dt_out(v);
}

@compute @workgroup_size(IC_WG)
fn col2im(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = sl_flat_index(gid, nwg, IC_WG);
  if (i >= ic_p.b * ic_p.h * ic_p.w * ic_p.cin) { return; }
  let ci = i % ic_p.cin;
  let pix = i / ic_p.cin;
  let ix = pix % ic_p.w;
  let iy = (pix / ic_p.w) % ic_p.h;
  let bi = pix / (ic_p.w * ic_p.h);
  var s = 0.0;
  for (var ky = 0u; ky < sl_bound(ic_p.kh, gid.x); ky++) {
    let ty = i32(iy + ic_p.pad) - i32(ky);
    if (ty < 0 || u32(ty) % ic_p.stride != 0u) { continue; }
    let oy = u32(ty) / ic_p.stride;
    if (oy >= ic_p.ho) { continue; }
    for (var kx = 0u; kx < sl_bound(ic_p.kw, gid.x); kx++) {
      let tx = i32(ix + ic_p.pad) - i32(kx);
      if (tx < 0 || u32(tx) % ic_p.stride != 0u) { continue; }
      let ox = u32(tx) / ic_p.stride;
      if (ox >= ic_p.wo) { continue; }
      let p = (bi * ic_p.ho + oy) * ic_p.wo + ox;
      s += f32(ic_in[p * ic_p.ldc + (ci * ic_p.kh + ky) * ic_p.kw + kx]);
    }
  }
  ic_out[i] = dt_out(s);
}
