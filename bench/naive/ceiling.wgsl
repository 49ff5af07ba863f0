// Device ceilings the bench measures itself. Bindings: inputs `read`, outputs `read_write`,
// uniform struct last.

override WG: u32 = 256u;

// ---- FMA-bound: CHAINS (8 or 2) independent vec4 FMA chains per thread, `iters` rounds; nothing
// read from memory inside the loop. FLOPs = threads * iters * CHAINS * 4 * 2. 8 chains suit a
// GPU's register file; a CPU adapter (llvmpipe runs a lane's vec4 as 4 SIMD registers of 8 lanes)
// has 16 of them, so 8 chains spill and 2 are its best case: the bench takes the faster.
override CHAINS: u32 = 8u;
@group(0) @binding(0) var<storage, read_write> cf_out: array<f32>;
@group(0) @binding(1) var<uniform> cf_p: CeilFmaParams;

@compute @workgroup_size(WG)
fn ceil_fma(@builtin(global_invocation_id) gid: vec3<u32>,
            @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * WG;
  if (i >= cf_p.threads) { return; }
  let s = f32(i & 255u) * 1e-3;
  var a0 = vec4<f32>(s, s + 1.0, s + 2.0, s + 3.0);
  var a1 = a0 + 0.1;
  var a2 = a0 + 0.2;
  var a3 = a0 + 0.3;
  var a4 = a0 + 0.4;
  var a5 = a0 + 0.5;
  var a6 = a0 + 0.6;
  var a7 = a0 + 0.7;
  // m < 1 and c small keep every chain finite however long it runs.
  let m = vec4<f32>(cf_p.m);
  let c = vec4<f32>(cf_p.c);
  // sl_bound: lavapipe would otherwise compile the uniform bound into the shader at every dispatch.
  for (var k = 0u; k < sl_bound(cf_p.iters, gid.x); k++) {
    a0 = fma(a0, m, c);
    a1 = fma(a1, m, c);
    if (CHAINS > 2u) {
      a2 = fma(a2, m, c);
      a3 = fma(a3, m, c);
      a4 = fma(a4, m, c);
      a5 = fma(a5, m, c);
      a6 = fma(a6, m, c);
      a7 = fma(a7, m, c);
    }
  }
  let t = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7;
  cf_out[i] = t.x + t.y + t.z + t.w;
}

// ---- Bandwidth: dst = src, vec4 per thread. Bytes moved = 2 * n4 * 16.
@group(0) @binding(0) var<storage, read> cc_src: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> cc_dst: array<vec4<f32>>;
@group(0) @binding(2) var<uniform> cc_p: CeilCopyParams;

@compute @workgroup_size(WG)
fn ceil_copy(@builtin(global_invocation_id) gid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * WG;
  if (i >= cc_p.n4) { return; }
  cc_dst[i] = cc_src[i];
}
