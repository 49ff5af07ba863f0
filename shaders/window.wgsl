// Window partitioning of channels-last maps, as SAM2's window_partition / window_unpartition:
// x [B, H, W, C] is zero-padded at the bottom/right to [B, nh * ws, nw * ws, C] and cut into
// windows [B * nh * nw, ws * ws, C] (window index (b * nh + wy) * nw + wx, token py * ws + px).
// Both directions are gathers, so each is also the other's backward without atomics: one
// workgroup per output token (n tokens; the grid may fold into y past 65535 workgroups), its
// invocations striding over the C channels. The token's source is worked out once per group
// (integer division is the costly part on CPU adapters, which scalarise it), adjacent
// invocations copy adjacent channels (coalesced on GPUs).
// win_partition_fill pads with a vector fill [C] instead of zeros (a Linear's bias: the value its
// product gives a zero token, so the product can run before the partition on real tokens only);
// win_fill_grad sums the padded tokens' gradient rows into the fill's gradient.
// Bindings: input (read, dt_x), fill (read, dt_fill), output (read_write, dt_out), uniforms
// last; f32 or f16 each.

override WG: u32 = 64;

// Offset of token `tok` of windows [B * nh * nw, ws * ws, C] in x [B, H, W, C]; WIN_PAD for a
// padding token.
const WIN_PAD = 0xffffffffu;
fn win_source(p: WinParams, tok: u32) -> u32 {
  let t = tok % (p.ws * p.ws);
  let w = tok / (p.ws * p.ws);
  let y = (w / p.nw) % p.nh * p.ws + t / p.ws;
  let x = w % p.nw * p.ws + t % p.ws;
  if (y >= p.H || x >= p.W) { return WIN_PAD; }
  return ((w / (p.nw * p.nh) * p.H + y) * p.W + x) * p.C;
}

@group(0) @binding(0) var<storage, read> wp_x: array<dt_x>;
@group(0) @binding(1) var<storage, read_write> wp_out: array<dt_out>;
@group(0) @binding(2) var<uniform> wp_p: WinParams;

// out [B * nh * nw, ws * ws, C]; padding positions read as zero.
@compute @workgroup_size(WG)
fn win_partition(
  @builtin(local_invocation_id) lid: vec3u,
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
) {
  let tok = sl_group_index(wid, nwg);
  if (tok >= wp_p.n) { return; }
  let C = sl_bound(wp_p.C, lid.x);
  let src = win_source(wp_p, tok);
  let o = tok * C;
  if (src == WIN_PAD) {
    for (var c = lid.x; c < C; c += WG) { wp_out[o + c] = dt_out(0.0); }
  } else {
    for (var c = lid.x; c < C; c += WG) { wp_out[o + c] = dt_out(f32(wp_x[src + c])); }
  }
}

@group(0) @binding(0) var<storage, read> wf_x: array<dt_x>;
@group(0) @binding(1) var<storage, read> wf_fill: array<dt_fill>;
@group(0) @binding(2) var<storage, read_write> wf_out: array<dt_out>;
@group(0) @binding(3) var<uniform> wf_p: WinParams;

// As win_partition, with padding positions reading fill[c].
@compute @workgroup_size(WG)
fn win_partition_fill(
  @builtin(local_invocation_id) lid: vec3u,
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
) {
  let tok = sl_group_index(wid, nwg);
  if (tok >= wf_p.n) { return; }
  let C = sl_bound(wf_p.C, lid.x);
  let src = win_source(wf_p, tok);
  let o = tok * C;
  if (src == WIN_PAD) {
    for (var c = lid.x; c < C; c += WG) { wf_out[o + c] = dt_out(f32(wf_fill[c])); }
  } else {
    for (var c = lid.x; c < C; c += WG) { wf_out[o + c] = dt_out(f32(wf_x[src + c])); }
  }
}

@group(0) @binding(0) var<storage, read> wu_y: array<dt_x>;
@group(0) @binding(1) var<storage, read_write> wu_out: array<dt_out>;
@group(0) @binding(2) var<uniform> wu_p: WinParams;

// out [B, H, W, C] from windows [B * nh * nw, ws * ws, C]; padding positions are dropped.
// One workgroup per output pixel (n = B * H * W).
@compute @workgroup_size(WG)
fn win_unpartition(
  @builtin(local_invocation_id) lid: vec3u,
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
) {
  let pix = sl_group_index(wid, nwg);
  if (pix >= wu_p.n) { return; }
  let C = sl_bound(wu_p.C, lid.x);
  let x = pix % wu_p.W;
  let y = (pix / wu_p.W) % wu_p.H;
  let b = pix / (wu_p.W * wu_p.H);
  let w = (b * wu_p.nh + y / wu_p.ws) * wu_p.nw + x / wu_p.ws;
  let s = (w * wu_p.ws * wu_p.ws + (y % wu_p.ws) * wu_p.ws + x % wu_p.ws) * C;
  let o = pix * C;
  for (var c = lid.x; c < C; c += WG) { wu_out[o + c] = dt_out(f32(wu_y[s + c])); }
}

@group(0) @binding(0) var<storage, read> wfg_g: array<dt_x>;
@group(0) @binding(1) var<storage, read_write> wfg_out: array<dt_out>;
@group(0) @binding(2) var<uniform> wfg_p: WinParams;

// out[c] = sum of g[t, c] over the padding tokens t of windows g [B * nh * nw, ws * ws, C]
// (n = C threads, one per channel; adjacent threads read adjacent channels). Per image the
// padded grid [nh * ws, nw * ws] has (nw * ws - W) padding columns beside each of the H real
// rows, then whole padding rows below them: k enumerates those, in that order, in f32.
@compute @workgroup_size(WG)
fn win_fill_grad(
  @builtin(global_invocation_id) gid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
) {
  let c = sl_flat_index(gid, nwg, WG);
  if (c >= wfg_p.n) { return; }
  let ws = wfg_p.ws;
  let wp = wfg_p.nw * ws;
  let side = wp - wfg_p.W;
  let nSide = wfg_p.H * side;
  let count = sl_bound(nSide + (wfg_p.nh * ws - wfg_p.H) * wp, c);
  let images = sl_bound(wfg_p.B, c);
  var acc = 0.0;
  for (var b = 0u; b < images; b++) {
    for (var k = 0u; k < count; k++) {
      var y: u32;
      var x: u32;
      if (k < nSide) {
        y = k / side;
        x = wfg_p.W + k % side;
      } else {
        y = wfg_p.H + (k - nSide) / wp;
        x = (k - nSide) % wp;
      }
      let w = (b * wfg_p.nh + y / ws) * wfg_p.nw + x / ws;
      let t = w * ws * ws + (y % ws) * ws + x % ws;
      acc += f32(wfg_g[t * wfg_p.C + c]);
    }
  }
  wfg_out[c] = dt_out(acc);
}
