/** Launchers for shaders/resize.wgsl: nearest/bilinear/bicubic resizing of NHWC images. */
import { defineShader, type Kernel } from '../gpu/kernel.js';
import type { Gpu } from '../gpu/runtime.js';

const WG = 256;

export const resize = defineShader('resize', {
  ResizeParams: {
    b: 'u32',
    h: 'u32',
    w: 'u32',
    c: 'u32',
    ho: 'u32',
    wo: 'u32',
    scale_y: 'f32',
    scale_x: 'f32',
  },
});

export type ResizeMode = 'nearest' | 'bilinear' | 'bicubic';

function k(entry: string, bindings: string[]): Kernel {
  return resize.kernel({
    name: `resize.${entry}`,
    entry,
    params: 'ResizeParams',
    bindings,
    overrides: { WG },
    types: { [bindings[0]]: 'dt_in', [bindings[1]]: 'dt_out' },
  });
}

export const resizeFwdKernels: Record<ResizeMode, Kernel> = {
  nearest: k('nearest_fwd', ['x', 'y']),
  bilinear: k('bilinear_fwd', ['x', 'y']),
  bicubic: k('bicubic_fwd', ['x', 'y']),
};

export const resizeBwdKernels: Record<'nearest' | 'bilinear', Kernel> = {
  nearest: k('nearest_bwd', ['dy', 'dx']),
  bilinear: k('bilinear_bwd', ['dy', 'dx']),
};

/** Input [b, h, w, c] resized to [b, ho, wo, c]. */
export interface ResizeDims {
  b: number;
  h: number;
  w: number;
  c: number;
  ho: number;
  wo: number;
}

// PyTorch's scale when a size (not a scale factor) is given: in / out, rounded to f32 on packing.
function params(d: ResizeDims) {
  return { ...d, scale_y: d.h / d.ho, scale_x: d.w / d.wo };
}

/** y = interpolate(x, [ho, wo], mode), align_corners=False. */
export function resizeForward(
  gpu: Gpu,
  mode: ResizeMode,
  x: GPUBuffer,
  y: GPUBuffer,
  d: ResizeDims,
): void {
  const n = d.b * d.ho * d.wo * d.c;
  gpu.run(resizeFwdKernels[mode], { buffers: [x, y], params: params(d), grid: gpu.grid(n, WG) });
}

/** dx [b, h, w, c] = adjoint of the resize applied to dy [b, ho, wo, c]. */
export function resizeBackward(
  gpu: Gpu,
  mode: 'nearest' | 'bilinear',
  dy: GPUBuffer,
  dx: GPUBuffer,
  d: ResizeDims,
): void {
  const n = d.b * d.h * d.w * d.c;
  gpu.run(resizeBwdKernels[mode], { buffers: [dy, dx], params: params(d), grid: gpu.grid(n, WG) });
}
