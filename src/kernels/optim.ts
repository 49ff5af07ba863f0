/** Launchers for shaders/optim.wgsl (fused AdamW update, global gradient-norm clipping). */
import { type StructFields, defineShader, treeSum } from '../gpu/kernel.js';
import type { BufferRef, Gpu } from '../gpu/runtime.js';

const WG = 256;
const ITEMS = 8;
/** Chunks per tensor in the norm's first pass, at most (bounds the finalize pass's work). */
const MAX_CHUNKS = 256;

/** Parameter tensors per adamw_multi dispatch (its 16 storage bindings: 7 g, 7 p, m, v). */
export const ADAMW_SLOTS = 7;
/** Packed moment offsets are multiples of this many floats: 256 bytes, the binding alignment. */
export const STATE_ALIGN = 64;
const NO_SLOT = 0xffffffff;

function multiFields(): StructFields {
  const f: StructFields = {
    decay: 'f32', beta2: 'f32', one_minus_beta1: 'f32', one_minus_beta2: 'f32', eps: 'f32',
  };
  for (let k = 0; k < ADAMW_SLOTS; k++) {
    f[`n${k}`] = 'u32';
    if (k > 0) f[`start${k}`] = 'u32';
    f[`o${k}`] = 'u32';
    f[`ss${k}`] = 'f32';
    f[`bc${k}`] = 'f32';
  }
  return f;
}

/**
 * adamw_multi's slot code (WGSL has no arrays of storage bindings): every binding, and am_slots,
 * which picks workgroup w's slot (the last whose start is <= w) and updates element lid of it.
 * One template for all ADAMW_SLOTS slots.
 */
function multiSlotsWgsl(): string {
  const ks = [...Array(ADAMW_SLOTS).keys()];
  const slotCase = (k: number) => [
    `    case ${k}u: {`,
    `      let j = ${k === 0 ? 'w' : `(w - am_p.start${k})`} * WG + lid;`,
    `      if (j < am_p.n${k}) {`,
    `        am_p${k}[j] = am_update(am_g${k}[j], am_p${k}[j], am_p.o${k} + j, am_p.ss${k}, ` +
      `am_p.bc${k});`,
    '      }',
    '    }',
  ];
  const storage = (b: number, name: string, access: string) =>
    `@group(0) @binding(${b}) var<storage, ${access}> ${name}: array<f32>;`;
  return [
    ...ks.map((k) => storage(k, `am_g${k}`, 'read')),
    ...ks.map((k) => storage(ADAMW_SLOTS + k, `am_p${k}`, 'read_write')),
    storage(2 * ADAMW_SLOTS, 'am_m', 'read_write'),
    storage(2 * ADAMW_SLOTS + 1, 'am_v', 'read_write'),
    `@group(0) @binding(${2 * ADAMW_SLOTS + 2}) var<uniform> am_p: AdamWMultiParams;`,
    'fn am_slots(w: u32, lid: u32) {',
    '  var k = 0u;',
    ...ks.slice(1).map((k) => `  if (w >= am_p.start${k}) { k = ${k}u; }`),
    '  switch k {',
    ...ks.flatMap(slotCase),
    '    default: {}',
    '  }',
    '}',
  ].join('\n');
}

export const optim = defineShader('optim', {
  AdamWMultiParams: multiFields(),
  AdamWParams: {
    n: 'u32',
    decay: 'f32',
    beta2: 'f32',
    one_minus_beta1: 'f32',
    one_minus_beta2: 'f32',
    step_size: 'f32',
    bc2_sqrt: 'f32',
    eps: 'f32',
  },
  SumSqParams: { n: 'u32', chunk: 'u32', first: 'u32' },
  ClipParams: { P: 'u32', max_norm: 'f32' },
  ScaleParams: { n: 'u32' },
}, {
  trees: { ss_sum: treeSum(['ss_r']), cf_sum: treeSum(['cf_r']) },
  code: multiSlotsWgsl(),
});

export const adamwKernel = optim.kernel({
  name: 'optim.adamw',
  entry: 'adamw',
  params: 'AdamWParams',
  bindings: ['grad', 'param', 'exp_avg', 'exp_avg_sq'],
  overrides: { WG },
});

export const adamwMultiKernel = optim.kernel({
  name: 'optim.adamw_multi',
  entry: 'adamw_multi',
  params: 'AdamWMultiParams',
  bindings: [
    ...Array.from({ length: ADAMW_SLOTS }, (_, k) => `grad${k}`),
    ...Array.from({ length: ADAMW_SLOTS }, (_, k) => `param${k}`),
    'exp_avg',
    'exp_avg_sq',
  ],
  overrides: { WG },
});

export const sumsqKernel = optim.kernel({
  name: 'optim.sumsq_partial',
  entry: 'sumsq_partial',
  params: 'SumSqParams',
  bindings: ['x', 'partial'],
  overrides: { WG },
});

export const clipFinalizeKernel = optim.kernel({
  name: 'optim.clip_finalize',
  entry: 'clip_finalize',
  params: 'ClipParams',
  bindings: ['partial', 'norm', 'coef'],
  overrides: { WG },
});

export const scaleInplaceKernel = optim.kernel({
  name: 'optim.scale_inplace',
  entry: 'scale_inplace',
  params: 'ScaleParams',
  bindings: ['coef', 'x'],
  overrides: { WG },
});

export interface AdamWStep {
  lr: number;
  weightDecay: number;
  beta1: number;
  beta2: number;
  eps: number;
  /** 1-based step count of this parameter (bias corrections). */
  step: number;
}

/** One in-place AdamW update of a parameter of n elements (torch.optim.AdamW semantics). */
export function adamwUpdate(
  gpu: Gpu,
  grad: GPUBuffer,
  param: GPUBuffer,
  expAvg: GPUBuffer | BufferRef,
  expAvgSq: GPUBuffer | BufferRef,
  n: number,
  s: AdamWStep,
): void {
  // Scalars in float64 on the CPU, as PyTorch computes them in Python floats.
  const bc1 = 1 - s.beta1 ** s.step;
  const bc2 = 1 - s.beta2 ** s.step;
  gpu.run(adamwKernel, {
    buffers: [grad, param, expAvg, expAvgSq],
    params: {
      n,
      decay: 1 - s.lr * s.weightDecay,
      beta2: s.beta2,
      // 1 - beta in float64: 1 - f32(0.999) would be off by 1.3e-5 relative.
      one_minus_beta1: 1 - s.beta1,
      one_minus_beta2: 1 - s.beta2,
      step_size: s.lr / bc1,
      bc2_sqrt: Math.sqrt(bc2),
      eps: s.eps,
    },
    grid: gpu.grid(n, WG),
  });
}

/** One tensor of an AdamW group update: its moments live at `offset` floats in m and v. */
export interface AdamWItem {
  grad: GPUBuffer;
  param: GPUBuffer;
  n: number;
  /** Offset in the packed moment buffers, a multiple of STATE_ALIGN. */
  offset: number;
  /** 1-based step count of this parameter. */
  step: number;
}

/**
 * Tensors per AdamW dispatch by default: ADAMW_SLOTS on GPUs with 16 storage bindings per stage
 * (a GPU branches on the workgroup-uniform slot and saves the dispatches of ~100 small LoRA
 * tensors); 1 on CPU adapters, whose SIMD code runs all seven slot cases under masks (measured on
 * lavapipe: 38 ms for the LoRA-mode step's 106 tensors against 14 ms one tensor per dispatch).
 */
export function adamwSlotsFor(gpu: Gpu): number {
  if (gpu.info.cpuFallback) return 1;
  return maxAdamwSlots(gpu);
}

/** ADAMW_SLOTS if the device binds 2 * ADAMW_SLOTS + 2 storage buffers per stage, else 1. */
export function maxAdamwSlots(gpu: Gpu): number {
  return gpu.limits.maxStorageBuffersPerShaderStage >= 2 * ADAMW_SLOTS + 2 ? ADAMW_SLOTS : 1;
}

let dummies: { gpu: Gpu; read: GPUBuffer; write: GPUBuffer } | null = null;

/**
 * Bindings for an unused slot: its gradient from a read-only buffer, its parameter a disjoint
 * range of another (a buffer may not be both read-only and writable in one dispatch, and
 * writable ranges must not overlap).
 */
function unusedSlot(gpu: Gpu, k: number): [BufferRef, BufferRef] {
  const align = gpu.limits.minStorageBufferOffsetAlignment;
  if (!dummies || dummies.gpu !== gpu) {
    dummies = {
      gpu,
      read: gpu.alloc(16, 'adamw.unused_grad'),
      write: gpu.alloc(ADAMW_SLOTS * align, 'adamw.unused_param'),
    };
  }
  return [{ buffer: dummies.read, size: 4 }, { buffer: dummies.write, offset: k * align, size: 4 }];
}

/**
 * AdamW updates of several tensors of one group (same lr, weight decay, betas, eps), their
 * moments packed in m and v: ADAMW_SLOTS tensors per dispatch (adamw_multi), or one per
 * dispatch (adamw, bound to the tensor's range of m and v) when `slots` is 1.
 */
export function adamwUpdateMany(
  gpu: Gpu,
  items: AdamWItem[],
  m: GPUBuffer,
  v: GPUBuffer,
  h: Omit<AdamWStep, 'step'>,
  slots = adamwSlotsFor(gpu),
): void {
  // Scalars in float64 on the CPU, as in adamwUpdate.
  const group = {
    decay: 1 - h.lr * h.weightDecay,
    beta2: h.beta2,
    one_minus_beta1: 1 - h.beta1,
    one_minus_beta2: 1 - h.beta2,
    eps: h.eps,
  };
  const perItem = (it: AdamWItem) => {
    const bc1 = 1 - h.beta1 ** it.step;
    const bc2 = 1 - h.beta2 ** it.step;
    return { ss: h.lr / bc1, bc: Math.sqrt(bc2) };
  };
  if (slots <= 1) {
    for (const it of items) {
      const range = (b: GPUBuffer): BufferRef =>
        ({ buffer: b, offset: it.offset * 4, size: it.n * 4 });
      adamwUpdate(gpu, it.grad, it.param, range(m), range(v), it.n, { ...h, step: it.step });
    }
    return;
  }
  if (slots > ADAMW_SLOTS) throw new Error(`adamwUpdateMany: at most ${ADAMW_SLOTS} slots`);
  const maxWindow = gpu.limits.maxStorageBufferBindingSize / 4;
  for (let i = 0; i < items.length; ) {
    // The next up to `slots` tensors whose moments fit one binding window.
    const first = items[i].offset;
    let j = i + 1;
    while (j < items.length && j - i < slots &&
      items[j].offset + items[j].n - first <= maxWindow) j++;
    const batch = items.slice(i, j);
    const params: Record<string, number> = { ...group };
    const grads: (GPUBuffer | BufferRef)[] = [];
    const ps: (GPUBuffer | BufferRef)[] = [];
    let groups = 0;
    for (let k = 0; k < ADAMW_SLOTS; k++) {
      const it = batch[k];
      if (k > 0) params[`start${k}`] = it ? groups : NO_SLOT;
      if (!it) {
        Object.assign(params, { [`n${k}`]: 0, [`o${k}`]: 0, [`ss${k}`]: 0, [`bc${k}`]: 1 });
        const [g, p] = unusedSlot(gpu, k);
        grads.push(g);
        ps.push(p);
        continue;
      }
      const { ss, bc } = perItem(it);
      Object.assign(params, {
        [`n${k}`]: it.n, [`o${k}`]: it.offset - first, [`ss${k}`]: ss, [`bc${k}`]: bc,
      });
      grads.push(it.grad);
      ps.push(it.param);
      groups += Math.ceil(it.n / WG);
    }
    const last = batch[batch.length - 1];
    const window = (b: GPUBuffer): BufferRef =>
      ({ buffer: b, offset: first * 4, size: (last.offset + last.n - first) * 4 });
    gpu.run(adamwMultiKernel, {
      buffers: [...grads, ...ps, window(m), window(v)],
      params,
      grid: gpu.grid(groups, 1),
    });
    i = j;
  }
}

function chunking(n: number): { chunk: number; P: number } {
  const chunk = Math.ceil(Math.max(WG * ITEMS, Math.ceil(n / MAX_CHUNKS)) / WG) * WG;
  return { chunk, P: Math.ceil(n / chunk) };
}

/**
 * Global L2 norm of several buffers and PyTorch's clip coefficient, both left on the GPU:
 * norm [1] = sqrt(sum of squares), coef [1] = min(1, maxNorm / (norm + 1e-6)).
 */
export function globalNormAndCoef(
  gpu: Gpu,
  xs: { buffer: GPUBuffer; n: number }[],
  norm: GPUBuffer,
  coef: GPUBuffer,
  maxNorm: number,
): void {
  const plans = xs.map((x) => chunking(x.n));
  const total = Math.max(1, plans.reduce((a, p) => a + p.P, 0));
  const partial = gpu.alloc(total * 4, 'clip.partial');
  let first = 0;
  xs.forEach((x, i) => {
    const { chunk, P } = plans[i];
    gpu.run(sumsqKernel, {
      buffers: [x.buffer, partial],
      params: { n: x.n, chunk, first },
      grid: [P],
    });
    first += P;
  });
  gpu.run(clipFinalizeKernel, {
    buffers: [partial, norm, coef],
    params: { P: first, max_norm: maxNorm },
    grid: [1],
  });
  // Reused only after the recorded work is submitted (see BufferPool.release).
  gpu.free(partial);
}

/** x *= coef[0] in place, coef a [1] GPU buffer. */
export function scaleInPlace(gpu: Gpu, coef: GPUBuffer, x: GPUBuffer, n: number): void {
  gpu.run(scaleInplaceKernel, { buffers: [coef, x], params: { n }, grid: gpu.grid(n, WG) });
}
