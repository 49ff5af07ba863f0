// matmul_sg: matmul_regs (same bindings, uniforms, operand loads rg_a / rg_b with their dropout,
// all in matmul.wgsl) with operands shared across a subgroup, for CPU adapters that have
// subgroups. This file is appended to matmul.wgsl behind `enable subgroups;` (the family
// `matmulSgFamily` in src/kernels/matmul.ts), so adapters without the feature never compile it.
//
// Why (measured on lavapipe, Mesa 22.3, 8-wide AVX2): every storage load is a loop over the SIMD
// lanes, the same cost whether the lanes' addresses are equal, consecutive or scattered, while a
// subgroupShuffle costs a fraction of a load and arithmetic runs 8 lanes at once. So a workgroup is
// one 8-lane subgroup computing a 32x32 block of C: lane l loads the 4x4 blocks of A at rows
// 32y + 4l.. and of B at columns 32x + 4l.. (k in steps of 4), and takes the other lanes' A rows by
// shuffles. Per 4 steps of k a lane does 8 vec4 loads for 512 FMAs, where matmul_regs does 16
// for 256. Needs subgroups of at least 8 invocations (the launcher checks the adapter's minimum).
//
// The epilogue is matmul_regs' (rg_store -> mm_put), or with SG_PLAIN (the launcher sets it when
// there is no bias, beta, low-rank addend or fusion) a direct store of alpha * acc, which skips
// mm_put's masked branches (lavapipe runs both sides of a branch under lane masks).
override SG_PLAIN: bool = false;

// Lane q's 4x4 block of A (columns: rows 32y + 4q + i over k..k+3), in every lane.
fn sg_from_lane(a: mat4x4f, q: u32) -> mat4x4f {
  return mat4x4f(
    subgroupShuffle(a[0], q),
    subgroupShuffle(a[1], q),
    subgroupShuffle(a[2], q),
    subgroupShuffle(a[3], q),
  );
}

@compute @workgroup_size(8)
fn matmul_sg(@builtin(local_invocation_index) l: u32, @builtin(workgroup_id) wid: vec3u) {
  let t = mm_tile(wid);
  let m0 = wid.y * 32u;
  let n = wid.x * 32u + 4u * l;
  // accQ[i] = C[m0 + 4Q + i][n..n+3].
  var acc0 = mat4x4f();
  var acc1 = mat4x4f();
  var acc2 = mat4x4f();
  var acc3 = mat4x4f();
  var acc4 = mat4x4f();
  var acc5 = mat4x4f();
  var acc6 = mat4x4f();
  var acc7 = mat4x4f();
  for (var k = t.kStart; k < t.kEnd; k += 4u) {
    // a[i] = A[m0 + 4l + i][k..k+3]; b[kk] = B[k + kk][n..n+3].
    let a = transpose(rg_a(t, m0 + 4u * l, k));
    let b = transpose(rg_b(t, n, k));
    // (b * aQ)[i] = sum over kk of A[m0 + 4Q + i][k + kk] * B[k + kk][n..n+3]: row 4Q + i of C.
    acc0 += b * sg_from_lane(a, 0u);
    acc1 += b * sg_from_lane(a, 1u);
    acc2 += b * sg_from_lane(a, 2u);
    acc3 += b * sg_from_lane(a, 3u);
    acc4 += b * sg_from_lane(a, 4u);
    acc5 += b * sg_from_lane(a, 5u);
    acc6 += b * sg_from_lane(a, 6u);
    acc7 += b * sg_from_lane(a, 7u);
  }
  // One copy of the epilogue in a loop, not eight: mm_put inlined 128 times (with GELU) took
  // lavapipe minutes to compile.
  for (var q = 0u; q < 8u; q++) {
    var acc = acc0;
    if (q == 1u) { acc = acc1; }
    if (q == 2u) { acc = acc2; }
    if (q == 3u) { acc = acc3; }
    if (q == 4u) { acc = acc4; }
    if (q == 5u) { acc = acc5; }
    if (q == 6u) { acc = acc6; }
    if (q == 7u) { acc = acc7; }
    sg_put(t.z, m0 + 4u * q, n, acc);
  }
}

// Rows m..m+3 of C at columns n..n+3 (acc[i] = row m + i): with SG_PLAIN, alpha * acc stored
// directly; else through the shared epilogue (rg_store -> mm_put).
fn sg_put(z: u32, m: u32, n: u32, acc: mat4x4f) {
  if (SG_PLAIN) {
    sg_store(z, m, n, acc);
  } else {
    rg_store(z, m, n, transpose(acc));
  }
}

// alpha * acc, bounds-checked.
fn sg_store(z: u32, m: u32, n: u32, acc: mat4x4f) {
  for (var i = 0u; i < 4u; i++) {
    let gm = m + i;
    if (gm < mm_p.M) {
      let ci = z * mm_p.sC + gm * mm_p.N + n;
      let v = mm_p.alpha * acc[i];
      if (n < mm_p.N) { mm_c[ci] = dt_c(v.x); }
      if (n + 1u < mm_p.N) { mm_c[ci + 1u] = dt_c(v.y); }
      if (n + 2u < mm_p.N) { mm_c[ci + 2u] = dt_c(v.z); }
      if (n + 3u < mm_p.N) { mm_c[ci + 3u] = dt_c(v.w); }
    }
  }
}
