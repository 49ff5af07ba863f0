// Elementwise kernels over flat arrays of f32 or f16 (element types dt_a, dt_b, dt_out: aliases
// the runtime sets per variant; values are computed in f32 and rounded once on store). One
// thread = one element; the grid may be folded into y past 65535 workgroups, so the linear index
// is rebuilt from num_workgroups.
// Bindings: inputs (read), output (read_write), uniforms last.

override WG: u32 = 256;

fn linear_index(gid: vec3u, nwg: vec3u) -> u32 {
  return gid.x + gid.y * nwg.x * WG;
}

@group(0) @binding(0) var<storage, read> add_a: array<dt_a>;
@group(0) @binding(1) var<storage, read> add_b: array<dt_b>;
@group(0) @binding(2) var<storage, read_write> add_out: array<dt_out>;
@group(0) @binding(3) var<uniform> add_p: BinaryParams;

// out = a + alpha * b (b broadcast by modulo when its length divides a's: bias rows, scalars).
@compute @workgroup_size(WG)
fn add(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = linear_index(gid, nwg);
  if (i >= add_p.n) { return; }
  add_out[i] = dt_out(f32(add_a[i]) + add_p.alpha * f32(add_b[i % add_p.nb]));
}

@group(0) @binding(0) var<storage, read_write> fill_out: array<dt_out>;
@group(0) @binding(1) var<uniform> fill_p: FillParams;

// out[offset + i] = value.
@compute @workgroup_size(WG)
fn fill(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = linear_index(gid, nwg);
  if (i >= fill_p.n) { return; }
  fill_out[fill_p.offset + i] = dt_out(bitcast<f32>(fill_p.bits));
}

@group(0) @binding(0) var<storage, read> convert_x: array<dt_a>;
@group(0) @binding(1) var<storage, read_write> convert_out: array<dt_out>;
@group(0) @binding(2) var<uniform> convert_p: UnaryParams;

// out = x converted between element types (f32 -> f16 rounds to nearest even; overflow -> inf).
@compute @workgroup_size(WG)
fn convert(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = linear_index(gid, nwg);
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
  let i = linear_index(gid, nwg);
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
  let i = linear_index(gid, nwg);
  if (i >= mul_p.n) { return; }
  mul_out[i] = dt_out(mul_p.alpha * f32(mul_a[i]) * f32(mul_b[i % mul_p.nb]));
}

@group(0) @binding(0) var<storage, read> tile_x: array<dt_a>;
@group(0) @binding(1) var<storage, read_write> tile_out: array<dt_out>;
@group(0) @binding(2) var<uniform> tile_p: BinaryParams;

// out[i] = alpha * x[i % nb]: broadcasts a suffix-shaped tensor (the backward of a reduction).
@compute @workgroup_size(WG)
fn tile(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = linear_index(gid, nwg);
  if (i >= tile_p.n) { return; }
  tile_out[i] = dt_out(tile_p.alpha * f32(tile_x[i % tile_p.nb]));
}

@group(0) @binding(0) var<storage, read> affine_x: array<dt_a>;
@group(0) @binding(1) var<storage, read_write> affine_out: array<dt_out>;
@group(0) @binding(2) var<uniform> affine_p: AffineParams;

// out = s * x + c.
@compute @workgroup_size(WG)
fn affine(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = linear_index(gid, nwg);
  if (i >= affine_p.n) { return; }
  affine_out[i] = dt_out(affine_p.s * f32(affine_x[i]) + affine_p.c);
}

// Activations. Op codes (the OP override, see UNARY in src/kernels/elementwise.ts): 0 relu,
// 1 gelu (exact, erf), 2 sigmoid, 3 erf. OP is a pipeline constant, so the switch folds away: a
// CPU adapter's SIMD code would otherwise run every case under masks (a uniform-buffer op code
// made gelu cost all four activations on lavapipe).
override OP: u32 = 1u;

const SQRT1_2: f32 = 0.70710678118654752;
const INV_SQRT_2PI: f32 = 0.39894228040143268;

// erf(x) / x for |x| < 1, as a polynomial in x^2 (least-squares fit to float64 erf; fit error
// 1.4e-9 relative, f32 evaluation ~1.6e-7 relative).
fn erf_small(x: f32) -> f32 {
  let s = x * x;
  var p = 7.898137e-05;
  p = p * s - 8.0243306e-04;
  p = p * s + 5.1900507e-03;
  p = p * s - 2.6854808e-02;
  p = p * s + 1.1283612e-01;
  p = p * s - 3.761263e-01;
  p = p * s + 1.1283792;
  return x * p;
}

// x^2 as hi + lo with hi exact: x_hi keeps the top 12 mantissa bits, so x_hi^2 fits in f32, and
// x^2 - x_hi^2 = (x - x_hi)(x + x_hi) is small. exp(-x^2) of a rounded x^2 would lose
// ~x^2 * 2^-24 relative (~4e-6 at x^2 = 64); exp(-hi) * exp(-lo) does not.
fn square_split(x: f32) -> vec2f {
  let hi = bitcast<f32>(bitcast<u32>(x) & 0xfffff000u);
  return vec2f(hi * hi, (x - hi) * (x + hi));
}

// exp(x) with a Cody-Waite reduction, x = k ln2 + r, |r| <= ln2/2: GPU exp is typically
// exp2(x * log2 e), whose rounded product costs ~|x| * 2^-24 relative (~2e-6 at x = -32).
// k * 0.693359375 is exact (9-bit constant), so r carries no error beyond one rounding.
// For x <= 0 (callers' use); below -104 the result underflows to 0 anyway (also keeps k finite).
fn exp_reduced(x: f32) -> f32 {
  let xc = max(x, -104.0);
  let k = round(xc * 1.44269504);
  let r = (xc - k * 0.693359375) + k * 2.12194440e-4;
  return ldexp(exp(r), i32(k));
}

// exp(-s.x - s.y) for a split square s.
fn exp_neg_split(s: vec2f) -> f32 {
  return exp_reduced(-s.x) * exp(-s.y);
}

// erfc(a) for a >= 1 as t * exp(Q(t) - a^2), t = 1 / (1 + a/2), Q a degree-10 fit (the form of
// Numerical Recipes' erfcc, refitted: 7e-10 relative in float64). `s` is a^2 split (square_split).
// Relative accuracy holds far into the tail, which keeps gelu accurate for very negative inputs
// (no 1 - erf cancellation).
fn erfc_large(a: f32, s: vec2f) -> f32 {
  let t = 1.0 / (1.0 + 0.5 * a);
  var q = 3.0600923e-01;
  q = q * t - 1.08355;
  q = q * t + 1.3789774;
  q = q * t - 6.640673e-01;
  q = q * t + 1.4467466e-01;
  q = q * t - 1.9468366e-01;
  q = q * t - 7.9115346e-02;
  q = q * t + 8.2797e-02;
  q = q * t + 3.75022e-01;
  q = q * t + 9.9999964e-01;
  q = q * t - 1.2655121;
  return t * exp_reduced(-s.x) * exp(q - s.y);
}

fn erf_f32(x: f32) -> f32 {
  // Past |x| = 10 erfc underflows: erf is exactly +-1 in f32.
  let a = min(abs(x), 10.0);
  if (a < 1.0) { return erf_small(x); }
  return sign(x) * (1.0 - erfc_large(a, square_split(a)));
}

// Phi(x) = P(N(0,1) <= x) = erfc(-x / sqrt 2) / 2, accurate in relative terms on both tails.
// The erfc exponent x^2/2 is split from x itself (halving is exact), not from a rounded x/sqrt 2.
fn normal_cdf(x: f32) -> f32 {
  // Past |x| = 14, Phi is 0 or 1 in f32.
  let xc = clamp(x, -14.0, 14.0);
  let z = xc * SQRT1_2;
  let a = abs(z);
  if (a < 1.0) { return 0.5 + 0.5 * erf_small(z); }
  let c = 0.5 * erfc_large(a, 0.5 * square_split(xc));
  return select(1.0 - c, c, x < 0.0);
}

fn sigmoid_f32(x: f32) -> f32 {
  // exp of a non-positive argument only: no overflow to inf for large |x|; range-reduced so the
  // tail sigmoid(-|x|) = e / (1 + e) stays relative-accurate.
  let e = exp_reduced(-abs(x));
  let r = 1.0 / (1.0 + e);
  return select(r, e * r, x < 0.0);
}

fn unary_fwd(op: u32, x: f32) -> f32 {
  switch op {
    case 0u: { return max(x, 0.0); }
    case 1u: { return x * normal_cdf(x); }
    case 2u: { return sigmoid_f32(x); }
    default: { return erf_f32(x); }
  }
}

// d op(x) / dx.
fn unary_deriv(op: u32, x: f32) -> f32 {
  switch op {
    // 0 at x == 0, as PyTorch's threshold_backward.
    case 0u: { return select(0.0, 1.0, x > 0.0); }
    case 1u: {
      let xc = clamp(x, -14.0, 14.0);
      return normal_cdf(x) + xc * INV_SQRT_2PI * exp_neg_split(0.5 * square_split(xc));
    }
    // y (1 - y) = e / (1 + e)^2 with e = exp(-|x|): no 1 - y cancellation when y is near 1.
    case 2u: {
      let e = exp_reduced(-abs(x));
      let r = 1.0 / (1.0 + e);
      return e * r * r;
    }
    default: { return 1.1283791670955126 * exp_neg_split(square_split(min(abs(x), 10.0))); }
  }
}

@group(0) @binding(0) var<storage, read> unary_x: array<dt_a>;
@group(0) @binding(1) var<storage, read_write> unary_out: array<dt_out>;
@group(0) @binding(2) var<uniform> unary_p: UnaryParams;

// out = op(x).
@compute @workgroup_size(WG)
fn unary(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = linear_index(gid, nwg);
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
  let i = linear_index(gid, nwg);
  if (i >= unary_grad_p.n) { return; }
  unary_grad_out[i] = dt_out(f32(unary_grad_g[i]) * unary_deriv(OP, f32(unary_grad_x[i])));
}
