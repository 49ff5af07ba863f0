// Data movement: permutes (general gather and a shared-memory tiled transpose) and column-block
// copies (slice / concat along the last dim). Flat arrays, row-major, of element types dt_x
// (input) and dt_out (output), f32 or f16 each: a copy may also convert.
// Bindings: input (read), output (read_write), uniforms last.

override WG: u32 = 256;

@group(0) @binding(0) var<storage, read> permute_x: array<dt_x>;
@group(0) @binding(1) var<storage, read_write> permute_out: array<dt_out>;
@group(0) @binding(2) var<uniform> permute_p: PermuteParams;

// One thread = one output element. o0..o5: output dims (leading 1s pad to rank 6); s0..s5: the
// input stride of each output dim. Used when the last dim stays last, so both sides are coalesced.
@compute @workgroup_size(WG)
fn permute(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = sl_flat_index(gid, nwg, WG);
  if (i >= permute_p.n) { return; }
  var r = i;
  var src = (r % permute_p.o5) * permute_p.s5;
  r /= permute_p.o5;
  src += (r % permute_p.o4) * permute_p.s4;
  r /= permute_p.o4;
  src += (r % permute_p.o3) * permute_p.s3;
  r /= permute_p.o3;
  src += (r % permute_p.o2) * permute_p.s2;
  r /= permute_p.o2;
  src += (r % permute_p.o1) * permute_p.s1;
  r /= permute_p.o1;
  src += r * permute_p.s0;
  permute_out[i] = dt_out(permute_x[src]);
}

// Tiled transpose for permutes that move the last dim. A = the input's last dim (stride 1 in x),
// B = the output's last dim (stride 1 in out); the other dims (e0..e3 in output order, with input
// strides is* and output strides os*) form a batch. One workgroup = one 32x32 (A, B) tile of one
// batch element; one thread = 4 elements. Reads run along A and writes along B, both coalesced; the
// tile is staged through shared memory (padded to 33 columns against bank conflicts).
const TR_TILE: u32 = 32u;
const TR_ROWS: u32 = 8u;

@group(0) @binding(0) var<storage, read> transpose_x: array<dt_x>;
@group(0) @binding(1) var<storage, read_write> transpose_out: array<dt_out>;
@group(0) @binding(2) var<uniform> transpose_p: TransposeParams;

var<workgroup> transpose_tile: array<array<f32, 33>, 32>;

@compute @workgroup_size(32, 8)
fn transpose(
  @builtin(local_invocation_id) lid: vec3u,
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
) {
  let p = transpose_p;
  let w = sl_group_index(wid, nwg);
  // Uniform per workgroup, so the barrier below stays in uniform control flow.
  if (w >= p.tilesA * p.tilesB * p.nbatch) { return; }
  let a0 = (w % p.tilesA) * TR_TILE;
  let b0 = ((w / p.tilesA) % p.tilesB) * TR_TILE;
  var bt = w / (p.tilesA * p.tilesB);
  var inBase = (bt % p.e3) * p.is3;
  var outBase = (bt % p.e3) * p.os3;
  bt /= p.e3;
  inBase += (bt % p.e2) * p.is2;
  outBase += (bt % p.e2) * p.os2;
  bt /= p.e2;
  inBase += (bt % p.e1) * p.is1;
  outBase += (bt % p.e1) * p.os1;
  bt /= p.e1;
  inBase += bt * p.is0;
  outBase += bt * p.os0;
  let a = a0 + lid.x;
  for (var k = 0u; k < TR_TILE; k += TR_ROWS) {
    let b = b0 + lid.y + k;
    if (a < p.A && b < p.B) {
      transpose_tile[lid.y + k][lid.x] = f32(transpose_x[inBase + b * p.sInB + a]);
    }
  }
  workgroupBarrier();
  let b = b0 + lid.x;
  for (var k = 0u; k < TR_TILE; k += TR_ROWS) {
    let a2 = a0 + lid.y + k;
    if (a2 < p.A && b < p.B) {
      transpose_out[outBase + a2 * p.sOutA + b] = dt_out(transpose_tile[lid.x][lid.y + k]);
    }
  }
}

@group(0) @binding(0) var<storage, read> cols_x: array<dt_x>;
@group(0) @binding(1) var<storage, read_write> cols_out: array<dt_out>;
@group(0) @binding(2) var<uniform> cols_p: ColsParams;

// out[r, outOff + j] = x[r, inOff + j] for j < count: a block of columns of an [rows, inC] array
// into an [rows, outC] one (slice, concat and their gradients). One thread = one element.
@compute @workgroup_size(WG)
fn cols(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = sl_flat_index(gid, nwg, WG);
  if (i >= cols_p.rows * cols_p.count) { return; }
  let r = i / cols_p.count;
  let j = i % cols_p.count;
  cols_out[r * cols_p.outC + cols_p.outOff + j] = dt_out(cols_x[r * cols_p.inC + cols_p.inOff + j]);
}
