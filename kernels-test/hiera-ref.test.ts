/**
 * Self-checks of the SAM2 encoder configs, the checkpoint key list and the float64 CPU reference
 * (no GPU needed): key sets against the shared checkpoint listings, feature shapes, pieces on
 * hand-computable cases, every block against an independent gather-style implementation, and a
 * full tiny encoder run at 64 px.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import {
  type BlockPlan,
  type EncoderConfig,
  MODEL_CONFIGS,
  type Sam2Size,
  blockPlan,
  featureShapes,
  qPoolBlocks,
  stageEnds,
  trunkChannelList,
} from '../src/model/config.js';
import { encoderKeys } from '../src/model/keys.js';
import { SEED, expectClose, randn, reportError, rng } from './helpers.js';
import {
  type WeightMap,
  blockRef,
  hieraReference,
  patchEmbedRef,
  posEmbedRef,
  randomEncoderWeights,
} from './ref/hiera.js';
import {
  attention64,
  bicubicResizeNchw64,
  conv2dNchw64,
  erf64,
  erfc64,
  erfcExact64,
  gelu64,
  layerNorm64,
  maxPoolNhwc64,
  nearestUp2Nchw64,
  windowPartition64,
  windowUnpartition64,
} from './ref/tensor64.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const SHARED = join(ROOT, '..', 'shared', 'sam2-checkpoints');

/** Parses a `*.image_encoder_keys.txt` listing: name<TAB>dtype<TAB>[shape]<TAB>data flag. */
function readKeyListing(file: string): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const [name, , shape] = line.split('\t');
    out.set(name.replace(/^model\.image_encoder\./, ''), JSON.parse(shape) as number[]);
  }
  return out;
}

const rms = (x: ArrayLike<number>) => {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += x[i] * x[i];
  return Math.sqrt(s / x.length);
};

describe('model configs', () => {
  it('tiny block plan follows Hiera.__init__', () => {
    const cfg = MODEL_CONFIGS.tiny.trunk;
    const plan = blockPlan(cfg);
    expect(stageEnds(cfg)).toEqual([0, 2, 9, 11]);
    expect(qPoolBlocks(cfg)).toEqual([1, 3, 10]);
    // Window lags a block at stage starts (block 1 uses stage 0's 8, block 10 stage 2's 14).
    expect(plan.map((b) => b.windowSize)).toEqual([8, 8, 4, 4, 14, 0, 14, 0, 14, 0, 14, 7]);
    expect(plan.map((b) => b.heads)).toEqual([1, 2, 2, 4, 4, 4, 4, 4, 4, 4, 8, 8]);
    expect(plan.map((b) => b.dimOut)).toEqual([96, 192, 192, 384, 384, 384, 384, 384, 384, 384,
      768, 768]);
    expect(plan.filter((b) => b.hasProj).map((b) => b.index)).toEqual([1, 3, 10]);
    expect(plan.filter((b) => b.qStride).map((b) => b.index)).toEqual([1, 3, 10]);
    expect(plan.map((b) => b.stage)).toEqual([0, 1, 1, 2, 2, 2, 2, 2, 2, 2, 3, 3]);
    expect(plan[1]).toMatchObject({ dim: 96, dimOut: 192, headDim: 96, mlpHidden: 768 });
  });

  it('every size: trunk channels match the neck, global blocks never pool', () => {
    for (const size of Object.keys(MODEL_CONFIGS) as Sam2Size[]) {
      const enc = MODEL_CONFIGS[size];
      expect(trunkChannelList(enc.trunk), size).toEqual(enc.neck.backboneChannelList);
      const plan = blockPlan(enc.trunk);
      expect(plan.length, size).toBe(enc.trunk.stages.reduce((a, b) => a + b, 0));
      for (const g of enc.trunk.globalAttBlocks) expect(plan[g].windowSize, `${size} ${g}`).toBe(0);
    }
    const large = blockPlan(MODEL_CONFIGS.large.trunk);
    expect(qPoolBlocks(MODEL_CONFIGS.large.trunk)).toEqual([2, 8, 44]);
    expect(large[44].windowSize).toBe(16);
    expect(large[45].windowSize).toBe(8);
    expect(large[47].heads).toBe(16);
  });

  it('feature shapes for tiny at 64/128/256/1024 px', () => {
    const f = (s: number) => featureShapes(MODEL_CONFIGS.tiny, s);
    expect(f(64)).toEqual({
      tokens: 16,
      trunk: [[1, 96, 16, 16], [1, 192, 8, 8], [1, 384, 4, 4], [1, 768, 2, 2]],
      fpn: [[1, 256, 16, 16], [1, 256, 8, 8], [1, 256, 4, 4]],
    });
    expect(f(128).trunk.map((s) => s[2])).toEqual([32, 16, 8, 4]);
    expect(f(256).fpn.map((s) => s[2])).toEqual([64, 32, 16]);
    expect(f(1024).fpn.map((s) => s[2])).toEqual([256, 128, 64]);
    // 48 px -> 12 tokens: pos_embed_window (8x8) cannot tile it in SAM2 either.
    expect(() => f(48)).toThrow(/multiple of 8/);
  });
});

describe('encoder keys', () => {
  it('counts and spot shapes (no shared files needed)', () => {
    // 12 tensors per block, 2 per stage-change proj, 4 trunk stem tensors, 2 per neck conv.
    const count = (s: Sam2Size) => {
      const t = MODEL_CONFIGS[s].trunk;
      const depth = t.stages.reduce((a, b) => a + b, 0);
      return 12 * depth + 2 * (t.stages.length - 1) + 4 + 2 * t.stages.length;
    };
    expect(encoderKeys(MODEL_CONFIGS.tiny).size).toBe(162);
    expect(encoderKeys(MODEL_CONFIGS.small).size).toBe(210);
    expect(encoderKeys(MODEL_CONFIGS.base_plus).size).toBe(306);
    expect(encoderKeys(MODEL_CONFIGS.large).size).toBe(count('large'));
    const t = encoderKeys(MODEL_CONFIGS.tiny);
    expect(t.get('trunk.pos_embed')).toEqual([1, 96, 7, 7]);
    expect(t.get('trunk.blocks.1.attn.qkv.weight')).toEqual([576, 96]);
    expect(t.get('trunk.blocks.1.proj.weight')).toEqual([192, 96]);
    expect(t.get('trunk.blocks.10.mlp.layers.0.weight')).toEqual([3072, 768]);
    expect(t.get('neck.convs.0.conv.weight')).toEqual([256, 768, 1, 1]);
    expect(t.get('neck.convs.3.conv.weight')).toEqual([256, 96, 1, 1]);
    const b = encoderKeys(MODEL_CONFIGS.base_plus);
    expect(b.get('trunk.pos_embed')).toEqual([1, 112, 14, 14]);
    expect(b.get('trunk.blocks.21.proj.weight')).toEqual([896, 448]);
    const l = encoderKeys(MODEL_CONFIGS.large);
    expect(l.get('trunk.blocks.44.attn.qkv.weight')).toEqual([3456, 576]);
    expect(l.get('neck.convs.0.conv.weight')).toEqual([256, 1152, 1, 1]);
  });

  const listings: [string, Sam2Size][] = [
    ['sam2.1_hiera_tiny', 'tiny'],
    ['sam2.1_hiera_small', 'small'],
    ['sam2.1_hiera_base_plus', 'base_plus'],
    ['MedSAM2_pretrain', 'tiny'],
  ];
  for (const [file, size] of listings) {
    const path = join(SHARED, `${file}.image_encoder_keys.txt`);
    const have = existsSync(path);
    it.skipIf(!have)(`${file} listing matches ${size} exactly (names, order, shapes)`, () => {
      const want = readKeyListing(path);
      const got = encoderKeys(MODEL_CONFIGS[size]);
      expect([...got.keys()]).toEqual([...want.keys()]);
      for (const [k, s] of want) expect(got.get(k), k).toEqual(s);
    });
    if (!have) it.skip(`${file}: ${path} not found (shared/ absent), listing check skipped`);
  }
});

describe('float64 pieces', () => {
  it('erf/erfc/GELU match correctly rounded values', () => {
    // Values from a C libm (correctly rounded to ~1 ulp).
    const cases: [number, number, number][] = [
      [0.1, 0.1124629160182849, 0.8875370839817152],
      [0.5, 0.5204998778130465, 0.4795001221869535],
      [1, 0.8427007929497149, 0.15729920705028513],
      [2, 0.9953222650189527, 0.004677734981047265],
      [2.9, 0.9999589021219005, 4.109787809945886e-5],
      [3, 0.9999779095030014, 2.2090496998585438e-5],
      [3.5, 0.9999992569016276, 7.430983723414128e-7],
      [5, 0.9999999999984626, 1.5374597944280351e-12],
      [8, 1, 1.1224297172982928e-29],
    ];
    // A few ulp: the continued fraction and the series both keep ~1e-15 relative accuracy.
    for (const [z, e, c] of cases) {
      expect(Math.abs(erf64(z) - e), `erf ${z}`).toBeLessThan(1e-15);
      expect(Math.abs(erf64(-z) + e), `erf ${-z}`).toBeLessThan(1e-15);
      expect(Math.abs(erfc64(z) - c) / c, `erfc ${z}`).toBeLessThan(1e-14);
      expect(Math.abs(erfcExact64(z) - c) / c, `erfc exact ${z}`).toBeLessThan(1e-14);
    }
    // The fast tabled Taylor path against the direct one between grid points.
    const r = rng(SEED);
    for (let i = 0; i < 2000; i++) {
      const z = -1 + 8 * r();
      const want = erfcExact64(z);
      expect(Math.abs(erfc64(z) - want) / want, `erfc ${z}`).toBeLessThan(1e-14);
    }
    const g: [number, number][] = [
      [-5, -1.4332578593959731e-6],
      [-1, -0.15865525393145707],
      [0.5, 0.34573123063700656],
      [2, 1.9544997361036416],
    ];
    for (const [x, y] of g) {
      expect(Math.abs(gelu64(x) - y) / Math.abs(y), `gelu ${x}`).toBeLessThan(1e-14);
    }
    expect(gelu64(0)).toBe(0);
  });

  it('window partition pads with zeros and round-trips', () => {
    // b 2, 5x7 grid, 3 channels, window 3 -> padded 6x9, 2x3 windows per image.
    const [b, h, w, c, ws] = [2, 5, 7, 3, 3];
    const x = Float64Array.from({ length: b * h * w * c }, (_, i) => i + 1);
    const p = windowPartition64(x, b, h, w, c, ws);
    expect([p.hp, p.wp, p.nw]).toEqual([6, 9, 6]);
    expect(p.y.length).toBe(b * p.nw * ws * ws * c);
    expect(p.y.filter((v) => v === 0).length).toBe(b * (6 * 9 - 5 * 7) * c);
    // Image 1, token (4, 5): window row 1, window column 1 -> window 1*6 + 1*3 + 1 = 10,
    // position (1, 2) inside it.
    const src = ((1 * h + 4) * w + 5) * c;
    const dst = ((10 * ws + 1) * ws + 2) * c;
    expect([...p.y.subarray(dst, dst + c)]).toEqual([...x.subarray(src, src + c)]);
    expect([...windowUnpartition64(p.y, b, p.hp, p.wp, h, w, c, ws)]).toEqual([...x]);
  });

  it('bicubic: PyTorch values on a hand case, constants, identity, non-square', () => {
    // F.interpolate([[0, 1]], size 4, bicubic, align_corners False) along one axis, computed by
    // hand from Keys' kernel with A = -0.75: sources -0.25, 0.25, 0.75, 1.25, clamped taps.
    const y = bicubicResizeNchw64(Float64Array.from([0, 1]), 1, 1, 2, 1, 4);
    const want = [-0.10546875, 0.2265625, 0.7734375, 1.10546875];
    y.forEach((v, i) => expect(Math.abs(v - want[i]), `x ${i}`).toBeLessThan(1e-15));
    const k = Float64Array.from({ length: 2 * 7 * 5 }, (_, i) => (i < 35 ? 1.5 : -2));
    const up = bicubicResizeNchw64(k, 2, 7, 5, 16, 13);
    for (let i = 0; i < up.length; i++) {
      expect(Math.abs(up[i] - (i < 16 * 13 ? 1.5 : -2))).toBeLessThan(1e-14);
    }
    const down = bicubicResizeNchw64(k, 2, 7, 5, 3, 4);
    for (let i = 0; i < down.length; i++) {
      expect(Math.abs(down[i] - (i < 12 ? 1.5 : -2))).toBeLessThan(1e-14);
    }
    const r = randn(3 * 6 * 9, rng(SEED));
    const same = bicubicResizeNchw64(r, 3, 6, 9, 6, 9);
    same.forEach((v, i) => expect(Math.abs(v - r[i])).toBeLessThan(1e-15));
  });

  it('maxpool floors, nearest x2, conv2d, layer norm, attention on hand cases', () => {
    // 1 image, 3x5 grid, 1 channel, 2x2 pool -> 1x2 (last row and column dropped).
    const x = Float64Array.from([1, 9, 2, 3, 7, 4, 5, 8, 6, 99, 99, 99, 99, 99, 99]);
    const mp = maxPoolNhwc64(x, 1, 3, 5, 1, 2, 2);
    expect([mp.ho, mp.wo, ...mp.y]).toEqual([1, 2, 9, 8]);
    expect([...nearestUp2Nchw64(Float64Array.from([1, 2, 3, 4]), 1, 2, 2)]).toEqual([
      1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4,
    ]);
    // 3x3 all-ones kernel, stride 2, pad 1 on a 3x3 ramp: corner sums of the padded image.
    const img = Float64Array.from([1, 2, 3, 4, 5, 6, 7, 8, 9]);
    const cv = conv2dNchw64(img, 1, 3, 3, new Float64Array(9).fill(1), Float64Array.from([0.5]),
      1, 3, 2, 1);
    expect([cv.ho, cv.wo, ...cv.y]).toEqual([2, 2, 12.5, 16.5, 24.5, 28.5]);
    const ln = layerNorm64(Float64Array.from([1, 3]), 1, 2, Float64Array.from([2, 1]),
      Float64Array.from([0, 10]), 0);
    expect([...ln]).toEqual([-2, 11]);
    // Identical keys -> uniform weights -> every query gets the mean of v (per head).
    const q = Float64Array.from([1, -2, 3, 0.5]);
    const kk = Float64Array.from([1, 1, 1, 1, 1, 1]);
    const v = Float64Array.from([1, 10, 2, 20, 6, 60]);
    const out = new Float64Array(4);
    attention64(q, 0, 2, 2, kk, 0, 2, v, 0, 2, 3, 2, 1, out, 0, 2);
    out.forEach((o, i) => expect(Math.abs(o - [3, 30, 3, 30][i])).toBeLessThan(1e-14));
  });
});

/**
 * A small, awkward config exercising what the released sizes hit only at large inputs:
 * 48 px -> 12 tokens; block 2 pools a 6x6 grid with window 4 (padded to 8, pooled windows of
 * 2 on a 3x3 grid padded to 4), block 3 is global on 3x3, block 4 pools a 3x3 grid with window
 * 6 (pad tokens share a pooling cell with real ones, odd side floors to 1); non-square
 * pos_embed (3x5).
 */
const MICRO: EncoderConfig = {
  name: 'tiny',
  trunk: {
    ...MODEL_CONFIGS.tiny.trunk,
    embedDim: 8,
    numHeads: 1,
    stages: [1, 1, 2, 1],
    windowSpec: [4, 4, 6, 2],
    globalAttBlocks: [3],
    windowPosEmbedBkgSpatialSize: [3, 5],
  },
  neck: { ...MODEL_CONFIGS.tiny.neck, dModel: 16, backboneChannelList: [64, 32, 16, 8],
    fpnTopDownLevels: [1] },
  scalp: 1,
};

/**
 * MultiScaleBlock written token by token ("gather" form), independent of the partition /
 * unpartition reshapes: output token (oy, ox) lies in window (oy / wsOut, ox / wsOut) at pooled
 * position (oy % wsOut, ox % wsOut); its query is the max over the stride cell of q at padded-
 * grid positions (a padded token's normalised value is 0, so its q/k/v are the qkv biases); its
 * keys are every padded-grid position of that window.
 */
function naiveBlock(weights: WeightMap, b: BlockPlan, x: Float64Array, h: number, w: number) {
  const P = (s: string) => weights.get(`trunk.blocks.${b.index}.${s}`)!.data;
  const { dim, dimOut, heads, headDim: hd } = b;
  const s = b.qStride ? b.qStride[0] : 1;
  const ws = b.windowSize > 0 ? b.windowSize : Math.max(h, w);
  const wsOut = b.windowSize > 0 ? Math.floor(ws / s) : 0;
  const ho = Math.floor(h / s);
  const wo = Math.floor(w / s);
  const lin = (v: ArrayLike<number>, W: ArrayLike<number>, B: ArrayLike<number>, o: number,
    n: number) => {
    let acc = B[o];
    for (let i = 0; i < n; i++) acc += v[i] * W[o * n + i];
    return acc;
  };
  const xn = layerNorm64(x, h * w, dim, P('norm1.weight'), P('norm1.bias'), 1e-6);
  const token = (yy: number, xx: number) =>
    yy < h && xx < w ? xn.subarray((yy * w + xx) * dim, (yy * w + xx + 1) * dim) :
      new Float64Array(dim);
  const qkvAt = (yy: number, xx: number, part: number, c: number) =>
    lin(token(yy, xx), P('attn.qkv.weight'), P('attn.qkv.bias'), part * dimOut + c, dim);
  const y = new Float64Array(ho * wo * dimOut);
  for (let oy = 0; oy < ho; oy++) {
    for (let ox = 0; ox < wo; ox++) {
      // Global blocks: one window = whole grid, pooled position = output position.
      const [wy, wx, py, px] = b.windowSize > 0
        ? [Math.floor(oy / wsOut), Math.floor(ox / wsOut), oy % wsOut, ox % wsOut]
        : [0, 0, oy, ox];
      const gh = b.windowSize > 0 ? ws : h;
      const gw = b.windowSize > 0 ? ws : w;
      const att = new Float64Array(dimOut);
      for (let hh = 0; hh < heads; hh++) {
        const q = new Float64Array(hd).fill(-Infinity);
        for (let dy = 0; dy < s; dy++) {
          for (let dx = 0; dx < s; dx++) {
            for (let d = 0; d < hd; d++) {
              const v = qkvAt(wy * ws + py * s + dy, wx * ws + px * s + dx, 0, hh * hd + d);
              if (v > q[d]) q[d] = v;
            }
          }
        }
        const logits: number[] = [];
        const vals: Float64Array[] = [];
        for (let ky = 0; ky < gh; ky++) {
          for (let kx = 0; kx < gw; kx++) {
            let dot = 0;
            const vv = new Float64Array(hd);
            for (let d = 0; d < hd; d++) {
              dot += q[d] * qkvAt(wy * ws + ky, wx * ws + kx, 1, hh * hd + d);
              vv[d] = qkvAt(wy * ws + ky, wx * ws + kx, 2, hh * hd + d);
            }
            logits.push(dot / Math.sqrt(hd));
            vals.push(vv);
          }
        }
        const m = Math.max(...logits);
        const e = logits.map((l) => Math.exp(l - m));
        const z = e.reduce((a, c) => a + c, 0);
        for (let j = 0; j < e.length; j++) {
          for (let d = 0; d < hd; d++) att[hh * hd + d] += (e[j] / z) * vals[j][d];
        }
      }
      for (let c = 0; c < dimOut; c++) {
        // Shortcut: pooled x, or pooled proj(norm1(x)) when the width changes.
        let sc = -Infinity;
        for (let dy = 0; dy < s; dy++) {
          for (let dx = 0; dx < s; dx++) {
            const t = token(oy * s + dy, ox * s + dx);
            const v = b.hasProj ? lin(t, P('proj.weight'), P('proj.bias'), c, dim)
              : x[((oy * s + dy) * w + ox * s + dx) * dim + c];
            if (v > sc) sc = v;
          }
        }
        y[(oy * wo + ox) * dimOut + c] = sc + lin(att, P('attn.proj.weight'), P('attn.proj.bias'),
          c, dimOut);
      }
    }
  }
  const n2 = layerNorm64(y, ho * wo, dimOut, P('norm2.weight'), P('norm2.bias'), 1e-6);
  for (let t = 0; t < ho * wo; t++) {
    const row = n2.subarray(t * dimOut, (t + 1) * dimOut);
    const hid = new Float64Array(b.mlpHidden);
    for (let j = 0; j < b.mlpHidden; j++) {
      hid[j] = gelu64(lin(row, P('mlp.layers.0.weight'), P('mlp.layers.0.bias'), j, dimOut));
    }
    for (let c = 0; c < dimOut; c++) {
      y[t * dimOut + c] += lin(hid, P('mlp.layers.1.weight'), P('mlp.layers.1.bias'), c,
        b.mlpHidden);
    }
  }
  return { y, ho, wo };
}

let tinyWeightsCache: WeightMap | null = null;
/** Random tiny weights (27M values, ~1 s to draw), shared by the tests below. */
const tinyWeights = () => (tinyWeightsCache ??= randomEncoderWeights(MODEL_CONFIGS.tiny, SEED));

describe('encoder reference', () => {
  // Two float64 evaluations of the same sums in different orders: measured ≤ 5.2e-16 of
  // max|want| through five blocks; 1e-14 (was 1e-12) leaves ~20x for exp/erf rounding and other
  // seeds while catching any indexing mistake (O(1)).
  const TOL = { rtol: 1e-14, atol: 1e-14 };

  // 48 px: grids 12, 6, 3, 3, 1 (the last pooling cell of block 4 mixes real and pad tokens);
  // 80 px: grids 20, 10, 5, 5, 2 (odd side at the global block and the last pooling block).
  it.each([
    [48, [[12, 12, 8], [6, 6, 16], [3, 3, 32], [3, 3, 32], [1, 1, 64]]],
    [80, [[20, 20, 8], [10, 10, 16], [5, 5, 32], [5, 5, 32], [2, 2, 64]]],
  ])('micro config at %i px: blocks equal the gather form; FPN sums', (size, blockShapes) => {
    const weights = randomEncoderWeights(MICRO, SEED);
    const input = randn(3 * size * size, rng(SEED + 1));
    const out = hieraReference(MICRO, weights, input, size, { keepBlocks: true });
    const plan = blockPlan(MICRO.trunk);
    expect(plan.map((b) => [b.windowSize, b.qStride?.[0] ?? 0])).toEqual([
      [4, 0], [4, 2], [4, 2], [0, 0], [6, 2],
    ]);
    expect(out.blocks!.map((b) => b.shape)).toEqual(blockShapes);
    // 16 px: block 4 would pool a 1x1 grid (6x6 window) to nothing; SAM2's reshape fails too.
    expect(() => featureShapes(MICRO, 16)).toThrow(/do not tile/);
    let x = out.embedded;
    let [h, w] = [size / 4, size / 4];
    for (const b of plan) {
      const n = naiveBlock(weights, b, x, h, w);
      const r = expectClose(out.blocks![b.index].data, n.y, TOL, `micro block ${b.index}`);
      reportError(`hiera-ref micro block ${b.index}`, 'vs gather form', `${h}x${w}`, r);
      x = out.blocks![b.index].data;
      [h, w] = [n.ho, n.wo];
    }
    const g = [size / 4, size / 8, blockShapes[2][0]];
    expect(out.shapes.fpn).toEqual(g.map((s) => [1, 16, s, s]));
    // Level 1 = lateral(conv 2 on trunk 1) + nearest-up(level 2 = lateral of trunk 2 alone).
    const lat = (lvl: number, ci: number, yy: number, xx: number, o: number) => {
      const t = out.trunk[lvl];
      const [, c, hh, ww] = out.shapes.trunk[lvl];
      const W = weights.get(`neck.convs.${ci}.conv.weight`)!.data;
      let s = weights.get(`neck.convs.${ci}.conv.bias`)!.data[o];
      for (let i = 0; i < c; i++) s += W[o * c + i] * t[(i * hh + yy) * ww + xx];
      return s;
    };
    const [g0, g1, g2] = g;
    for (const [o, yy, xx] of [[0, 0, 0], [5, 5, 4], [15, 2, 3]]) {
      const want1 = lat(1, 2, yy, xx, o) + lat(2, 1, yy >> 1, xx >> 1, o);
      expect(Math.abs(out.fpn[1][(o * g1 + yy) * g1 + xx] - want1)).toBeLessThan(1e-12);
      expect(Math.abs(out.fpn[2][(o * g2 + (yy % g2)) * g2 + (xx % g2)] -
        lat(2, 1, yy % g2, xx % g2, o))).toBeLessThan(1e-12);
      expect(Math.abs(out.fpn[0][(o * g0 + yy) * g0 + xx] - lat(0, 3, yy, xx, o)))
        .toBeLessThan(1e-12);
    }
  });

  it('patch embed and position embedding at single tokens', () => {
    const enc = MODEL_CONFIGS.tiny;
    const weights = tinyWeights();
    const size = 64;
    const input = randn(3 * size * size, rng(SEED + 2));
    const pe = patchEmbedRef(enc, weights, input, size);
    expect(pe.g).toBe(16);
    const W = weights.get('trunk.patch_embed.proj.weight')!.data;
    const B = weights.get('trunk.patch_embed.proj.bias')!.data;
    // Token (0, 15), channel 7: taps at rows -3..3 and columns 57..63 (pad 3, stride 4).
    let s = B[7];
    for (let ci = 0; ci < 3; ci++) {
      for (let ky = 0; ky < 7; ky++) {
        for (let kx = 0; kx < 7; kx++) {
          const iy = -3 + ky;
          const ix = 60 - 3 + kx;
          if (iy < 0 || ix >= size) continue;
          s += W[((7 * 3 + ci) * 7 + ky) * 7 + kx] * input[(ci * size + iy) * size + ix];
        }
      }
    }
    expect(Math.abs(pe.x[15 * 96 + 7] - s)).toBeLessThan(1e-12);
    // Window embedding tiles with period 8: with a zero background the grid repeats.
    const zeroBkg: WeightMap = new Map(weights);
    zeroBkg.set('trunk.pos_embed', { shape: [1, 96, 7, 7], data: new Float32Array(96 * 49) });
    const pos = posEmbedRef(enc, zeroBkg, 16, 16);
    const win = weights.get('trunk.pos_embed_window')!.data;
    for (const [yy, xx, c] of [[0, 0, 0], [9, 3, 5], [15, 15, 95]]) {
      expect(pos[(yy * 16 + xx) * 96 + c]).toBe(win[(c * 8 + (yy % 8)) * 8 + (xx % 8)]);
    }
    expect(() => posEmbedRef(enc, weights, 12, 12)).toThrow(/multiple of the 8x8/);
  });

  it('tiny at 64 px: shapes, finite O(1) activations, deterministic', () => {
    const enc = MODEL_CONFIGS.tiny;
    const weights = tinyWeights();
    const input = randn(3 * 64 * 64, rng(SEED + 3));
    const out = hieraReference(enc, weights, input, 64, { keepBlocks: true });
    expect(out.shapes).toEqual({
      trunk: [[1, 96, 16, 16], [1, 192, 8, 8], [1, 384, 4, 4], [1, 768, 2, 2]],
      fpn: [[1, 256, 16, 16], [1, 256, 8, 8], [1, 256, 4, 4]],
    });
    out.trunk.forEach((t, i) => expect(t.length).toBe(out.shapes.trunk[i].reduce((a, b) => a * b)));
    out.fpn.forEach((t, i) => expect(t.length).toBe(out.shapes.fpn[i].reduce((a, b) => a * b)));
    const r = out.blocks!.map((b) => rms(b.data));
    for (const v of [...r, ...out.fpn.map(rms)]) {
      expect(Number.isFinite(v)).toBe(true);
      // The init is meant to keep every block's output O(1): loose bounds, this is a sanity test.
      expect(v).toBeGreaterThan(0.1);
      expect(v).toBeLessThan(20);
    }
    const again = hieraReference(enc, weights, input, 64);
    expect(again.fpn[2]).toEqual(out.fpn[2]);
    expect(() => blockRef(enc, weights, blockPlan(enc.trunk)[0], out.embedded, 15, 16))
      .toThrow(/expected \[15, 16, 96\]/);
    expect(() => hieraReference(enc, new Map(), input, 64)).toThrow(/missing weight/);
  });
});
