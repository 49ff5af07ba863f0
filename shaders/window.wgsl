// Window partitioning of channels-last maps, as SAM2's window_partition / window_unpartition:
// x [B, H, W, C] is zero-padded at the bottom/right to [B, nh * ws, nw * ws, C] and cut into
// windows [B * nh * nw, ws * ws, C] (window index (b * nh + wy) * nw + wx, token py * ws + px).
// Both directions are gathers (one thread = one output element), so each is also the other's
// backward without atomics. The grid may fold into y past 65535 workgroups.
// Bindings: input (read, dt_x), output (read_write, dt_out), uniforms last; f32 or f16 each.

override WG: u32 = 256;

fn win_linear(gid: vec3u, nwg: vec3u) -> u32 {
  return gid.x + gid.y * nwg.x * WG;
}

@group(0) @binding(0) var<storage, read> wp_x: array<dt_x>;
@group(0) @binding(1) var<storage, read_write> wp_out: array<dt_out>;
@group(0) @binding(2) var<uniform> wp_p: WinParams;

// out [B * nh * nw, ws * ws, C]; padding positions read as zero.
@compute @workgroup_size(WG)
fn win_partition(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = win_linear(gid, nwg);
  if (i >= wp_p.n) { return; }
  let c = i % wp_p.C;
  let tok = i / wp_p.C;
  let p = tok % (wp_p.ws * wp_p.ws);
  let w = tok / (wp_p.ws * wp_p.ws);
  let wx = w % wp_p.nw;
  let wy = (w / wp_p.nw) % wp_p.nh;
  let b = w / (wp_p.nw * wp_p.nh);
  let y = wy * wp_p.ws + p / wp_p.ws;
  let x = wx * wp_p.ws + p % wp_p.ws;
  var v = 0.0;
  if (y < wp_p.H && x < wp_p.W) { v = f32(wp_x[((b * wp_p.H + y) * wp_p.W + x) * wp_p.C + c]); }
  wp_out[i] = dt_out(v);
}

@group(0) @binding(0) var<storage, read> wu_y: array<dt_x>;
@group(0) @binding(1) var<storage, read_write> wu_out: array<dt_out>;
@group(0) @binding(2) var<uniform> wu_p: WinParams;

// out [B, H, W, C] from windows [B * nh * nw, ws * ws, C]; padding positions are dropped.
@compute @workgroup_size(WG)
fn win_unpartition(
  @builtin(global_invocation_id) gid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
) {
  let i = win_linear(gid, nwg);
  if (i >= wu_p.n) { return; }
  let c = i % wu_p.C;
  let pix = i / wu_p.C;
  let x = pix % wu_p.W;
  let y = (pix / wu_p.W) % wu_p.H;
  let b = pix / (wu_p.W * wu_p.H);
  let w = (b * wu_p.nh + y / wu_p.ws) * wu_p.nw + x / wu_p.ws;
  let p = (y % wu_p.ws) * wu_p.ws + x % wu_p.ws;
  wu_out[i] = dt_out(f32(wu_y[(w * wu_p.ws * wu_p.ws + p) * wu_p.C + c]));
}
