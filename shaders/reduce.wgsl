// Column sums of a row-major [R, C] array: out[s, c] = alpha * (sum over the rows r of split s
// of x[r, c]).
// Bindings: x (read, dt_x), out (read_write, dt_out), ReduceParams last; sums in f32.
// Grid: (ceil(C / CT) folded into x and z past 65535, S). One workgroup = CT columns x one split of `chunk` rows; one thread =
// one column, striding over the split's rows by RT, then a shared-memory tree over the RT lanes
// (colsum_tree, generated from src/kernels/reduce.ts).
// A full sum is the case C = 1 (CT = 1, all 256 threads on rows, reading consecutive addresses).
// The launcher reduces R rows to S partial rows, then the partials to one row (two stages).

override CT: u32 = 32;
override RT: u32 = 8;

// Must be >= CT * RT (launchers keep CT * RT = 256).
const COLSUM_SHARED: u32 = 256u;

@group(0) @binding(0) var<storage, read> colsum_x: array<dt_x>;
@group(0) @binding(1) var<storage, read_write> colsum_out: array<dt_out>;
@group(0) @binding(2) var<uniform> colsum_p: ReduceParams;

var<workgroup> colsum_sh: array<f32, COLSUM_SHARED>;

@compute @workgroup_size(CT, RT)
fn colsum(
  @builtin(local_invocation_id) lid: vec3u,
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
) {
  let col = (wid.x + wid.z * nwg.x) * CT + lid.x;
  // No early return: every thread must reach the barriers; out-of-range columns add zeros.
  let r0 = wid.y * colsum_p.chunk;
  let r1 = min(r0 + colsum_p.chunk, colsum_p.R);
  var acc = 0.0;
  if (col < colsum_p.C) {
    for (var r = r0 + lid.y; r < r1; r += RT) {
      acc += f32(colsum_x[r * colsum_p.C + col]);
    }
  }
  let t = lid.y * CT + lid.x;
  colsum_sh[t] = acc;
  colsum_tree(lid.y, t);
  if (lid.y == 0u && col < colsum_p.C) {
    colsum_out[wid.y * colsum_p.C + col] = dt_out(colsum_p.alpha * colsum_sh[lid.x]);
  }
}
