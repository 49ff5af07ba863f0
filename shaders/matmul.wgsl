// Matrix products and column sums.
//
// matmul: C[z] = act(alpha * op(A[b]) · op(B[b]) (+ bias[n]) (+ lrScale * mask ⊙ T · op(L))
//   (+ beta * C[z]) (+ aux[z]))
//   Bindings: 0 a, 1 b, 2 bias [N], 3 lt (T [M, rank]), 4 lr (L [N, rank] or [rank, N]), 5 c,
//   6 aux (like C: a residual, or GELU's input for its gradient), 7 c2 (like C: GELU's output
//   beside its input), 8 MatmulParams. Unused inputs are bound to any read-only buffer (flags
//   say what is read), an unused c2 to a scratch buffer.
//   op(A) is [M, K]: A stored [M, K] (row stride lda) or, with transA, [K, M]. Same for B with
//   op(B) [K, N]. Batch b = z % batch with element strides sA, sB (0 = shared operand); split-K
//   slice s = z / batch covers k in [s * kChunk, min(K, (s + 1) * kChunk)) and C[z] is at z * sC,
//   so the launcher can sum split-K partials with colsum.
//   Element types: dt_a, dt_b, dt_bias, dt_lt, dt_lr, dt_c (f32 or f16 each, set per variant);
//   tiles, accumulators and the epilogue are f32, C is rounded once on store.
//   One workgroup = a (WGY*RM) x (WGX*RN) tile of C; one thread = RM x RN outputs, strided by
//   WGY / WGX so shared-memory reads are broadcast or consecutive, and stores coalesce.
//   Optional inverted dropout on the loads of A or B (the LoRA branch input), keyed by the
//   element's index in its buffer so backward regenerates the identical mask, and an optional
//   rank-r addend in the epilogue (LoRA up-projection fused into the base layer's product).
//
// colsum: out[y * N + n] = sum of g[r, n] over the rows r of row-group y (bias gradients and the
//   split-K reduction). Bindings: 0 g [R, N], 1 out, 2 ColsumParams. One thread column = one n,
//   CS_WGY threads per column stride over the group's rows and meet in shared memory.

const RM: u32 = 4u;
const RN: u32 = 4u;
override WGX: u32 = 16u;
override WGY: u32 = 16u;
override BK: u32 = 16u;

@group(0) @binding(0) var<storage, read> mm_a: array<dt_a>;
@group(0) @binding(1) var<storage, read> mm_b: array<dt_b>;
@group(0) @binding(2) var<storage, read> mm_bias: array<dt_bias>;
@group(0) @binding(3) var<storage, read> mm_lt: array<dt_lt>;
@group(0) @binding(4) var<storage, read> mm_lr: array<dt_lr>;
@group(0) @binding(5) var<storage, read_write> mm_c: array<dt_c>;
@group(0) @binding(6) var<storage, read> mm_aux: array<dt_aux>;
@group(0) @binding(7) var<storage, read_write> mm_c2: array<dt_c2>;
@group(0) @binding(8) var<uniform> mm_p: MatmulParams;

// Epilogue fusions, pipeline constants so that a CPU adapter's SIMD code carries only the one in
// use (a uniform flag would run every branch under lane masks). MM_RES: v += aux (a residual).
// MM_ACT: 0 none; 1 C = gelu(v); 2 C = v and c2 = gelu(v) (forward keeping GELU's input for
// backward); 3 C = v * gelu'(aux) (the gradient through GELU, aux = its input). An intermediate
// is rounded to C's type where the unfused passes would have stored it, so the fused result is
// the unfused composition's, bit for bit.
override MM_RES: bool = false;
override MM_ACT: u32 = 0u;

// Tiles stored k-major: mm_as[k][m], mm_bs[k][n].
var<workgroup> mm_as: array<f32, BK * WGY * RM>;
var<workgroup> mm_bs: array<f32, BK * WGX * RN>;

// lowbias32 (Chris Wellons): a cheap integer hash with good avalanche; mirrored in the TS
// reference (kernels-test/ref/matmul.ts) and src/kernels/matmul.ts.
fn mm_hash(v: u32) -> u32 {
  var x = v;
  x ^= x >> 16u;
  x *= 0x7feb352du;
  x ^= x >> 15u;
  x *= 0x846ca68bu;
  x ^= x >> 16u;
  return x;
}

// Inverted-dropout factor of element i: 0 (dropped) or 1 / (1 - p) (kept). Keeps when the top 24
// bits of mm_hash(i ^ mm_hash(seed)) reach the threshold floor(p * 2^24), an exact integer test
// the TS side reproduces; dropKey = mm_hash(seed), hashed by the launcher.
fn mm_drop(i: u32) -> f32 {
  let h = mm_hash(i ^ mm_p.dropKey);
  return select(0.0, mm_p.dropScale, (h >> 8u) >= mm_p.dropThr);
}

// Where a workgroup's slice of the product starts.
struct MmTile {
  m0: u32,
  n0: u32,
  z: u32,
  offA: u32,
  offB: u32,
  kStart: u32,
  kEnd: u32,
}

fn mm_tile(wid: vec3u) -> MmTile {
  let bat = wid.z % mm_p.batch;
  let kStart = (wid.z / mm_p.batch) * mm_p.kChunk;
  return MmTile(
    wid.y * WGY * RM,
    wid.x * WGX * RN,
    wid.z,
    bat * mm_p.sA,
    bat * mm_p.sB,
    kStart,
    min(mm_p.K, kStart + mm_p.kChunk),
  );
}

// acc += the shared tiles' product; thread (x, y) owns rows y + i*WGY and columns x + j*WGX.
fn mm_accumulate(lid: vec3u, acc: ptr<function, array<f32, RM * RN>>) {
  let BM = WGY * RM;
  let BN = WGX * RN;
  for (var k = 0u; k < BK; k++) {
    var ra: array<f32, RM>;
    var rb: array<f32, RN>;
    for (var i = 0u; i < RM; i++) { ra[i] = mm_as[k * BM + lid.y + i * WGY]; }
    for (var j = 0u; j < RN; j++) { rb[j] = mm_bs[k * BN + lid.x + j * WGX]; }
    for (var i = 0u; i < RM; i++) {
      for (var j = 0u; j < RN; j++) {
        (*acc)[i * RN + j] = fma(ra[i], rb[j], (*acc)[i * RN + j]);
      }
    }
  }
}

// C = alpha * acc (+ low-rank addend) (+ bias) (+ beta * C), bounds-checked.
fn mm_store(lid: vec3u, t: MmTile, acc: ptr<function, array<f32, RM * RN>>) {
  for (var i = 0u; i < RM; i++) {
    let gm = t.m0 + lid.y + i * WGY;
    if (gm >= mm_p.M) { break; }
    for (var j = 0u; j < RN; j++) {
      let gn = t.n0 + lid.x + j * WGX;
      if (gn >= mm_p.N) { break; }
      mm_put(t.z, gm, gn, (*acc)[i * RN + j]);
    }
  }
}

// Writes C[z][gm][gn] = act(alpha * acc (+ low-rank addend) (+ bias) (+ beta * C) (+ aux));
// in range.
fn mm_put(z: u32, gm: u32, gn: u32, acc: f32) {
  // Flags pass through sl_bound: lavapipe (Mesa 22.3) inlines uniforms that steer a branch or a
  // loop and recompiles the shader at every dispatch, which it did for matmul_sg (80-200 ms each).
  let rank = sl_bound(mm_p.rank, gn);
  let ci = z * mm_p.sC + gm * mm_p.N + gn;
  var v = mm_p.alpha * acc;
  if (rank > 0u) {
    var lr = 0.0;
    for (var r = 0u; r < rank; r++) {
      let li = select(gn * rank + r, r * mm_p.N + gn, mm_p.lrTrans != 0u);
      lr = fma(f32(mm_lt[gm * rank + r]), f32(mm_lr[li]), lr);
    }
    if (sl_bound(mm_p.lrMask, gn) != 0u) { lr *= mm_drop(ci); }
    v += mm_p.lrScale * lr;
  }
  if (sl_bound(mm_p.hasBias, gn) != 0u) { v += f32(mm_bias[gn]); }
  // beta == 0 must not read C: it may hold garbage (or NaN poison).
  // (Any nonzero beta, sign bit aside: the test beta != 0.0 on its bits.)
  if (sl_bound(bitcast<u32>(mm_p.beta) & 0x7fffffffu, gn) != 0u) {
    v += mm_p.beta * f32(mm_c[ci]);
  }
  if (MM_RES) { v = f32(dt_c(v)) + f32(mm_aux[ci]); }
  if (MM_ACT == 1u) {
    v = sl_gelu(f32(dt_c(v)));
  } else if (MM_ACT == 2u) {
    let h = dt_c(v);
    mm_c2[ci] = dt_c2(sl_gelu(f32(h)));
  } else if (MM_ACT == 3u) {
    v = f32(dt_c(v)) * sl_gelu_deriv(f32(mm_aux[ci]));
  }
  mm_c[ci] = dt_c(v);
}

@compute @workgroup_size(WGX, WGY)
fn matmul(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let BM = WGY * RM;
  let BN = WGX * RN;
  let nthreads = WGX * WGY;
  let tid = lid.y * WGX + lid.x;
  let t = mm_tile(wid);
  let transA = mm_p.transA != 0u;
  let transB = mm_p.transB != 0u;
  var acc: array<f32, RM * RN>;
  for (var i = 0u; i < RM * RN; i++) { acc[i] = 0.0; }

  for (var k0 = t.kStart; k0 < t.kEnd; k0 += BK) {
    // Consecutive threads walk the operand's contiguous axis, so global reads coalesce.
    for (var l = tid; l < BM * BK; l += nthreads) {
      var m = l / BK;
      var k = l % BK;
      if (transA) { k = l / BM; m = l % BM; }
      let gm = t.m0 + m;
      let gk = k0 + k;
      var v = 0.0;
      if (gm < mm_p.M && gk < t.kEnd) {
        let idx = t.offA + select(gm * mm_p.lda + gk, gk * mm_p.lda + gm, transA);
        v = f32(mm_a[idx]);
        if (mm_p.dropOn == 1u) { v *= mm_drop(idx); }
      }
      mm_as[k * BM + m] = v;
    }
    for (var l = tid; l < BK * BN; l += nthreads) {
      var k = l / BN;
      var n = l % BN;
      if (transB) { n = l / BK; k = l % BK; }
      let gn = t.n0 + n;
      let gk = k0 + k;
      var v = 0.0;
      if (gn < mm_p.N && gk < t.kEnd) {
        let idx = t.offB + select(gk * mm_p.ldb + gn, gn * mm_p.ldb + gk, transB);
        v = f32(mm_b[idx]);
        if (mm_p.dropOn == 2u) { v *= mm_drop(idx); }
      }
      mm_bs[k * BN + n] = v;
    }
    workgroupBarrier();
    mm_accumulate(lid, &acc);
    workgroupBarrier();
  }
  mm_store(lid, t, &acc);
}

// matmul with 16-byte loads: the same kernel (it shares every binding but a and b, which it
// reads as vec4) for operands whose contiguous axis (lda, ldb), batch strides and K slices are
// multiples of 4, so a vec4 never straddles a row or the tile's k range.
@group(0) @binding(0) var<storage, read> mm4_a: array<vec4<dt_a>>;
@group(0) @binding(1) var<storage, read> mm4_b: array<vec4<dt_b>>;

@compute @workgroup_size(WGX, WGY)
fn matmul_v4(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let BM = WGY * RM;
  let BN = WGX * RN;
  let nthreads = WGX * WGY;
  let tid = lid.y * WGX + lid.x;
  let t = mm_tile(wid);
  let transA = mm_p.transA != 0u;
  let transB = mm_p.transB != 0u;
  var acc: array<f32, RM * RN>;
  for (var i = 0u; i < RM * RN; i++) { acc[i] = 0.0; }

  for (var k0 = t.kStart; k0 < t.kEnd; k0 += BK) {
    // Each thread loads 4 consecutive elements of the contiguous axis (k, or m when transposed).
    for (var l = tid; l < BM * BK / 4u; l += nthreads) {
      var m = (l / (BK / 4u));
      var k = (l % (BK / 4u)) * 4u;
      if (transA) { k = l / (BM / 4u); m = (l % (BM / 4u)) * 4u; }
      let gm = t.m0 + m;
      let gk = k0 + k;
      var v = vec4f(0.0);
      if (gm < mm_p.M && gk < t.kEnd) {
        let idx = t.offA + select(gm * mm_p.lda + gk, gk * mm_p.lda + gm, transA);
        v = vec4f(mm4_a[idx / 4u]);
        if (mm_p.dropOn == 1u) {
          v *= vec4f(mm_drop(idx), mm_drop(idx + 1u), mm_drop(idx + 2u), mm_drop(idx + 3u));
        }
      }
      let s = select(BM, 1u, transA);
      for (var c = 0u; c < 4u; c++) { mm_as[k * BM + m + c * s] = v[c]; }
    }
    for (var l = tid; l < BK * BN / 4u; l += nthreads) {
      var k = l / (BN / 4u);
      var n = (l % (BN / 4u)) * 4u;
      if (transB) { n = l / (BK / 4u); k = (l % (BK / 4u)) * 4u; }
      let gn = t.n0 + n;
      let gk = k0 + k;
      var v = vec4f(0.0);
      if (gn < mm_p.N && gk < t.kEnd) {
        let idx = t.offB + select(gk * mm_p.ldb + gn, gn * mm_p.ldb + gk, transB);
        v = vec4f(mm4_b[idx / 4u]);
        if (mm_p.dropOn == 2u) {
          v *= vec4f(mm_drop(idx), mm_drop(idx + 1u), mm_drop(idx + 2u), mm_drop(idx + 3u));
        }
      }
      let s = select(1u, BN, transB);
      for (var c = 0u; c < 4u; c++) { mm_bs[k * BN + n + c * s] = v[c]; }
    }
    workgroupBarrier();
    mm_accumulate(lid, &acc);
    workgroupBarrier();
  }
  mm_store(lid, t, &acc);
}

// matmul_regs: the same product (same bindings, uniforms and epilogue) without workgroup memory
// or barriers, for CPU adapters: llvmpipe (lavapipe) runs a workgroup as a SIMD loop over its
// invocations, where a barrier switches coroutines and every memory access, shared or global, is
// a per-lane loop, so staging tiles costs more than it saves and what counts is FMAs per load.
// One thread = an 8x8 block of C (4 rows or columns when RG_2M / RG_2N is off) at rows m.., columns
// n.., as 4x4 matrix products of blocks built from vec4 loads along each operand's contiguous
// axis (the vec4 kernel's alignment conditions); one workgroup = a WGY x WGX grid of such
// threads, numbered in one dimension.
// Out-of-range rows and columns are clamped (their results are never stored); k past kEnd (only
// when neither operand is contiguous in k, so K need not be a multiple of 4) loads as zero.
override RG_TA: bool = false;
override RG_TB: bool = false;
// dropOn as a constant: a uniform branch still costs both sides under llvmpipe's lane masks.
override RG_DROP: u32 = 0u;

// One vec4 of A (dropout applied): row m + c at k..k+3, or with RG_TA k + c at m..m+3 (zero
// past kEnd). Rows and the four loads are spelled out, with no private arrays: llvmpipe puts
// dynamically indexed ones in per-invocation scratch memory.
fn rg_la(t: MmTile, m: u32, k: u32, c: u32) -> vec4f {
  var idx = t.offA + min(m + c, mm_p.M - 1u) * mm_p.lda + k;
  if (RG_TA) { idx = t.offA + min(k + c, mm_p.K - 1u) * mm_p.lda + min(m, mm_p.M - 4u); }
  var v = vec4f(mm4_a[idx / 4u]);
  if (RG_DROP == 1u) {
    v *= vec4f(mm_drop(idx), mm_drop(idx + 1u), mm_drop(idx + 2u), mm_drop(idx + 3u));
  }
  return select(v, vec4f(0.0), RG_TA && k + c >= t.kEnd);
}

// Likewise for B: with RG_TB row n + c at k..k+3, else k + c at n..n+3.
fn rg_lb(t: MmTile, n: u32, k: u32, c: u32) -> vec4f {
  var idx = t.offB + min(k + c, mm_p.K - 1u) * mm_p.ldb + min(n, mm_p.N - 4u);
  if (RG_TB) { idx = t.offB + min(n + c, mm_p.N - 1u) * mm_p.ldb + k; }
  var v = vec4f(mm4_b[idx / 4u]);
  if (RG_DROP == 2u) {
    v *= vec4f(mm_drop(idx), mm_drop(idx + 1u), mm_drop(idx + 2u), mm_drop(idx + 3u));
  }
  return select(v, vec4f(0.0), !RG_TB && k + c >= t.kEnd);
}

// The 4x4 block of A at rows m.., k..: column kk = a[m + i][k + kk] over i.
fn rg_a(t: MmTile, m: u32, k: u32) -> mat4x4f {
  let x = mat4x4f(rg_la(t, m, k, 0u), rg_la(t, m, k, 1u), rg_la(t, m, k, 2u), rg_la(t, m, k, 3u));
  // Transposed storage gives columns (fixed k); row-major gives rows (fixed m).
  if (RG_TA) { return x; }
  return transpose(x);
}

// The 4x4 block of B at k.., columns n..: column j = b[k + kk][n + j] over kk.
fn rg_b(t: MmTile, n: u32, k: u32) -> mat4x4f {
  let x = mat4x4f(rg_lb(t, n, k, 0u), rg_lb(t, n, k, 1u), rg_lb(t, n, k, 2u), rg_lb(t, n, k, 3u));
  if (RG_TB) { return x; }
  return transpose(x);
}

// Two 4-row (RG_2M) and/or two 4-column (RG_2N) blocks per thread: 8 vec4 loads feed 64 FMAs in
// a 4x4 block, 16 feed 256 in an 8x8 one.
override RG_2M: bool = true;
override RG_2N: bool = true;

// One-dimensional workgroup: llvmpipe fills its SIMD lanes along x only, so a (1, 16) group
// (a thin N) would run one lane in eight.
@compute @workgroup_size(WGX * WGY)
fn matmul_regs(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3u) {
  let t = mm_tile(wid);
  let bm = select(4u, 8u, RG_2M);
  let bn = select(4u, 8u, RG_2N);
  let m = (wid.y * WGY + li / WGX) * bm;
  let n = (wid.x * WGX + li % WGX) * bn;
  // accIJ[j][i] = C[m + 4I + i][n + 4J + j].
  var acc00 = mat4x4f();
  var acc01 = mat4x4f();
  var acc10 = mat4x4f();
  var acc11 = mat4x4f();
  for (var k = t.kStart; k < t.kEnd; k += 4u) {
    let a0 = rg_a(t, m, k);
    let b0 = rg_b(t, n, k);
    acc00 += a0 * b0;
    if (RG_2N) {
      let b1 = rg_b(t, n + 4u, k);
      acc01 += a0 * b1;
      if (RG_2M) {
        let a1 = rg_a(t, m + 4u, k);
        acc10 += a1 * b0;
        acc11 += a1 * b1;
      }
    } else if (RG_2M) {
      acc10 += rg_a(t, m + 4u, k) * b0;
    }
  }
  rg_store(t.z, m, n, acc00);
  if (RG_2N) { rg_store(t.z, m, n + 4u, acc01); }
  if (RG_2M) { rg_store(t.z, m + 4u, n, acc10); }
  if (RG_2M && RG_2N) { rg_store(t.z, m + 4u, n + 4u, acc11); }
}

// Stores the block acc (acc[j][i] = C[m + i][n + j]), row by row with constant indices.
fn rg_store(z: u32, m: u32, n: u32, acc: mat4x4f) {
  let r = transpose(acc);
  rg_store_row(z, m, n, r[0]);
  rg_store_row(z, m + 1u, n, r[1]);
  rg_store_row(z, m + 2u, n, r[2]);
  rg_store_row(z, m + 3u, n, r[3]);
}

fn rg_store_row(z: u32, gm: u32, n: u32, v: vec4f) {
  if (gm >= mm_p.M) { return; }
  if (n < mm_p.N) { mm_put(z, gm, n, v.x); }
  if (n + 1u < mm_p.N) { mm_put(z, gm, n + 1u, v.y); }
  if (n + 2u < mm_p.N) { mm_put(z, gm, n + 2u, v.z); }
  if (n + 3u < mm_p.N) { mm_put(z, gm, n + 3u, v.w); }
}

override CS_WGX: u32 = 64u;
override CS_WGY: u32 = 4u;

@group(0) @binding(0) var<storage, read> cs_g: array<dt_g>;
@group(0) @binding(1) var<storage, read_write> cs_out: array<dt_out>;
@group(0) @binding(2) var<uniform> cs_p: ColsumParams;

var<workgroup> cs_part: array<f32, CS_WGX * CS_WGY>;

// Column groups run along x (folded into z past 65535), row groups along y.
@compute @workgroup_size(CS_WGX, CS_WGY)
fn colsum(
  @builtin(local_invocation_id) lid: vec3u,
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
) {
  let n = (wid.x + wid.z * nwg.x) * CS_WGX + lid.x;
  let r0 = wid.y * cs_p.rowsPerGroup;
  let r1 = min(cs_p.R, r0 + cs_p.rowsPerGroup);
  var s = 0.0;
  if (n < cs_p.N) {
    for (var r = r0 + lid.y; r < r1; r += CS_WGY) { s += f32(cs_g[r * cs_p.N + n]); }
  }
  cs_part[lid.y * CS_WGX + lid.x] = s;
  workgroupBarrier();
  if (lid.y == 0u && n < cs_p.N) {
    var t = 0.0;
    for (var y = 0u; y < CS_WGY; y++) { t += cs_part[y * CS_WGX + lid.x]; }
    cs_out[wid.y * cs_p.N + n] = dt_out(t);
  }
}
