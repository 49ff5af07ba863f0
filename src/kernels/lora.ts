/**
 * LoRA linear passes, built on the products of shaders/matmul.wgsl (its dropout-on-load and
 * rank-r epilogue hooks exist for these; on CPU adapters with subgroups loraDown and loraProject
 * run matmul_sg_thin for r <= 4). x [rows, in], W [out, in], A [r, in], B [out, r].
 * The dropout mask is a hash of (seed, index of the element in x), so every pass that needs it
 * regenerates the same mask and nothing is stored.
 */
import type { Gpu } from '../gpu/runtime.js';
import { type DropoutSpec, type MatmulActivation, matmul } from './matmul.js';

export interface LoraDims {
  rows: number;
  inF: number;
  outF: number;
  rank: number;
}

/** Pass 1: t = drop(x) · Aᵀ, t [rows, r]. */
export function loraDown(
  gpu: Gpu, x: GPUBuffer, a: GPUBuffer, t: GPUBuffer, d: LoraDims, dropout: DropoutSpec | null,
): void {
  matmul(gpu, {
    a: x, b: a, c: t, M: d.rows, N: d.rank, K: d.inF, transB: true,
    dropout: dropout ? { ...dropout, operand: 'a' } : null,
  });
}

/** Epilogue fusions of a LoRA product (see MatmulCall.residual / activation). */
export interface LoraEpilogue {
  residual?: GPUBuffer | null;
  activation?: MatmulActivation | null;
}

/** Pass 2: y = x · Wᵀ + bias + scale · t · Bᵀ (+ residual, then GELU) in one kernel. */
export function loraUp(
  gpu: Gpu, x: GPUBuffer, w: GPUBuffer, bias: GPUBuffer | null, t: GPUBuffer, b: GPUBuffer,
  y: GPUBuffer, d: LoraDims, scale: number, epi: LoraEpilogue = {},
): void {
  matmul(gpu, {
    a: x, b: w, c: y, M: d.rows, N: d.outF, K: d.inF, transB: true, bias,
    lowRank: { t, l: b, rank: d.rank, scale, lTransposed: false },
    residual: epi.residual, activation: epi.activation,
  });
}

/** u = g · B, u [rows, r]: the upstream gradient projected onto the rank-r space. */
export function loraProject(gpu: Gpu, g: GPUBuffer, b: GPUBuffer, u: GPUBuffer, d: LoraDims): void {
  matmul(gpu, { a: g, b, c: u, M: d.rows, N: d.rank, K: d.outF });
}

/**
 * dx = g · W + scale · mask ⊙ (u · A) in one kernel (mask at x's own element index); with
 * `geluPre`, x was GELU's output and dx is taken on through gelu'(geluPre) in the same kernel.
 */
export function loraInputGrad(
  gpu: Gpu, g: GPUBuffer, w: GPUBuffer, u: GPUBuffer, a: GPUBuffer, dx: GPUBuffer, d: LoraDims,
  scale: number, dropout: DropoutSpec | null, geluPre: GPUBuffer | null = null,
): void {
  matmul(gpu, {
    a: g, b: w, c: dx, M: d.rows, N: d.inF, K: d.outF,
    lowRank: { t: u, l: a, rank: d.rank, scale, lTransposed: true, mask: dropout },
    activation: geluPre ? { kind: 'gelu-grad', pre: geluPre } : null,
  });
}

/** dA = scale · uᵀ · drop(x), dA [r, in]. */
export function loraGradA(
  gpu: Gpu, u: GPUBuffer, x: GPUBuffer, da: GPUBuffer, d: LoraDims, scale: number,
  dropout: DropoutSpec | null,
): void {
  matmul(gpu, {
    a: u, b: x, c: da, M: d.rank, N: d.inF, K: d.rows, transA: true, alpha: scale,
    dropout: dropout ? { ...dropout, operand: 'b' } : null,
  });
}

/** dB = scale · gᵀ · t, dB [out, r]. */
export function loraGradB(
  gpu: Gpu, g: GPUBuffer, t: GPUBuffer, db: GPUBuffer, d: LoraDims, scale: number,
): void {
  matmul(gpu, { a: g, b: t, c: db, M: d.outF, N: d.rank, K: d.rows, transA: true, alpha: scale });
}
