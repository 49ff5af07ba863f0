/**
 * WGSL activation math shared by kernel families (part of every module's prelude, see
 * defineShader): the exact (erf) GELU and its derivative, sigmoid and erf. elementwise.wgsl's
 * activations and matmul.wgsl's fused epilogues call the same functions, so a fused GELU gives
 * the separate pass's values bit for bit. Names carry the `sl_` prefix of the prelude; drivers
 * drop what an entry point does not call.
 */
export const WGSL_ACTIVATION = `
// ---- activation math (src/gpu/wgsl-activation.ts) ----
// erf(x) / x for |x| < 1, as a polynomial in x^2 (least-squares fit to float64 erf; fit error
// 1.4e-9 relative, f32 evaluation ~1.6e-7 relative).
fn sl_erf_small(x: f32) -> f32 {
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
fn sl_square_split(x: f32) -> vec2f {
  let hi = bitcast<f32>(bitcast<u32>(x) & 0xfffff000u);
  return vec2f(hi * hi, (x - hi) * (x + hi));
}

// exp(x) with a Cody-Waite reduction, x = k ln2 + r, |r| <= ln2/2: GPU exp is typically
// exp2(x * log2 e), whose rounded product costs ~|x| * 2^-24 relative (~2e-6 at x = -32).
// k * 0.693359375 is exact (9-bit constant), so r carries no error beyond one rounding.
// For x <= 0 (callers' use); below -104 the result underflows to 0 anyway (also keeps k finite).
fn sl_exp_reduced(x: f32) -> f32 {
  let xc = max(x, -104.0);
  let k = round(xc * 1.44269504);
  let r = (xc - k * 0.693359375) + k * 2.12194440e-4;
  return ldexp(exp(r), i32(k));
}

// exp(-s.x - s.y) for a split square s.
fn sl_exp_neg_split(s: vec2f) -> f32 {
  return sl_exp_reduced(-s.x) * exp(-s.y);
}

// erfc(a) for a >= 1 as t * exp(Q(t) - a^2), t = 1 / (1 + a/2), Q a degree-10 fit (the form of
// Numerical Recipes' erfcc, refitted: 7e-10 relative in float64). \`s\` is a^2 split
// (sl_square_split). Relative accuracy holds far into the tail, which keeps gelu accurate for
// very negative inputs (no 1 - erf cancellation).
fn sl_erfc_large(a: f32, s: vec2f) -> f32 {
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
  return t * sl_exp_reduced(-s.x) * exp(q - s.y);
}

fn sl_erf(x: f32) -> f32 {
  // Past |x| = 10 erfc underflows: erf is exactly +-1 in f32.
  let a = min(abs(x), 10.0);
  if (a < 1.0) { return sl_erf_small(x); }
  return sign(x) * (1.0 - sl_erfc_large(a, sl_square_split(a)));
}

// d erf(x) / dx = 2/sqrt(pi) exp(-x^2).
fn sl_erf_deriv(x: f32) -> f32 {
  return 1.1283791670955126 * sl_exp_neg_split(sl_square_split(min(abs(x), 10.0)));
}

// Phi(x) = P(N(0,1) <= x) = erfc(-x / sqrt 2) / 2, accurate in relative terms on both tails.
// The erfc exponent x^2/2 is split from x itself (halving is exact), not from a rounded x/sqrt 2.
fn sl_normal_cdf(x: f32) -> f32 {
  // Past |x| = 14, Phi is 0 or 1 in f32.
  let xc = clamp(x, -14.0, 14.0);
  let z = xc * 0.70710678118654752;
  let a = abs(z);
  if (a < 1.0) { return 0.5 + 0.5 * sl_erf_small(z); }
  let c = 0.5 * sl_erfc_large(a, 0.5 * sl_square_split(xc));
  return select(1.0 - c, c, x < 0.0);
}

// Exact GELU, x * Phi(x) (torch.nn.GELU(approximate='none')).
fn sl_gelu(x: f32) -> f32 {
  return x * sl_normal_cdf(x);
}

// d gelu(x) / dx = Phi(x) + x phi(x).
fn sl_gelu_deriv(x: f32) -> f32 {
  let xc = clamp(x, -14.0, 14.0);
  return sl_normal_cdf(x) + xc * 0.39894228040143268 * sl_exp_neg_split(0.5 * sl_square_split(xc));
}

fn sl_sigmoid(x: f32) -> f32 {
  // exp of a non-positive argument only: no overflow to inf for large |x|; range-reduced so the
  // tail sigmoid(-|x|) = e / (1 + e) stays relative-accurate.
  let e = sl_exp_reduced(-abs(x));
  let r = 1.0 / (1.0 + e);
  return select(r, e * r, x < 0.0);
}

// d sigmoid(x) / dx = y (1 - y) = e / (1 + e)^2 with e = exp(-|x|): no 1 - y cancellation when
// y is near 1.
fn sl_sigmoid_deriv(x: f32) -> f32 {
  let e = sl_exp_reduced(-abs(x));
  let r = 1.0 / (1.0 + e);
  return e * r * r;
}
`;
