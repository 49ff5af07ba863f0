/**
 * Module base: parameters are discovered from field names (and array indices), so dotted keys
 * are exactly PyTorch's (`trunk.blocks.3.attn.qkv.weight`) and SAM2 checkpoints load with no
 * remapping table.
 */
import { type Engine, type Tensor, shapeStr } from '../autograd/tensor.js';
import { toF16Bits } from '../util/f16.js';

export interface HostTensor {
  shape: number[];
  data: Float32Array;
}

export type HostStateDict = Map<string, HostTensor>;

export abstract class Module {
  protected training = false;

  constructor(readonly engine: Engine) {}

  /** Parameters with their dotted names, in field order. */
  namedParameters(prefix = ''): [string, Tensor][] {
    const out: [string, Tensor][] = [];
    for (const [key, value] of Object.entries(this)) {
      if (key === 'engine' || key === 'training') continue;
      collect(`${prefix}${key}`, value, out);
    }
    return out;
  }

  parameters(): Tensor[] {
    return this.namedParameters().map(([, t]) => t);
  }

  /** Trainable parameters only. */
  trainable(): [string, Tensor][] {
    return this.namedParameters().filter(([, t]) => t.requiresGrad);
  }

  /** Sub-modules, recursively, with their dotted names. */
  namedModules(prefix = ''): [string, Module][] {
    const out: [string, Module][] = [[prefix.replace(/\.$/, ''), this]];
    for (const [key, value] of Object.entries(this)) {
      if (value instanceof Module) out.push(...value.namedModules(`${prefix}${key}.`));
      else if (Array.isArray(value)) {
        value.forEach((v, i) => {
          if (v instanceof Module) out.push(...v.namedModules(`${prefix}${key}.${i}.`));
        });
      }
    }
    return out;
  }

  train(mode = true): this {
    for (const [, m] of this.namedModules()) m.training = mode;
    return this;
  }

  get isTraining(): boolean {
    return this.training;
  }

  /** Reads every parameter back to the CPU. */
  async stateDict(filter?: (name: string) => boolean): Promise<HostStateDict> {
    const out: HostStateDict = new Map();
    for (const [name, t] of this.namedParameters()) {
      if (filter && !filter(name)) continue;
      out.set(name, { shape: [...t.shape], data: await t.toArray() });
    }
    return out;
  }

  /**
   * Copies values into the parameters. With `strict`, every parameter must be present; keys that
   * match no parameter are always reported. One error lists everything wrong, by full name.
   */
  loadStateDict(
    sd: HostStateDict,
    opts: { strict?: boolean; source?: string; allowMissing?: (name: string) => boolean } = {},
  ): { loaded: string[]; missing: string[] } {
    const params = new Map(this.namedParameters());
    const missing: string[] = [];
    const unexpected: string[] = [];
    const misshaped: string[] = [];
    for (const [name, t] of params) {
      const v = sd.get(name);
      if (!v) {
        if (!opts.allowMissing?.(name)) missing.push(name);
        continue;
      }
      if (v.data.length !== t.size || v.shape.join(',') !== t.shape.join(',')) {
        misshaped.push(`${name}: expected ${shapeStr(t.shape)}, got ${shapeStr(v.shape)}`);
      }
    }
    for (const k of sd.keys()) if (!params.has(k)) unexpected.push(k);
    // Counts and the first few names: a wrong file can mismatch hundreds of keys.
    const few = (list: string[], sep = ', ') =>
      list.slice(0, 8).join(sep) + (list.length > 8 ? `${sep}and ${list.length - 8} more` : '');
    const problems: string[] = [];
    if (opts.strict !== false && missing.length) {
      problems.push(`${missing.length} missing keys: ${few(missing)}`);
    }
    if (unexpected.length) problems.push(`${unexpected.length} unexpected keys: ${few(unexpected)}`);
    if (misshaped.length) problems.push(`${misshaped.length} shape mismatches: ${few(misshaped, '; ')}`);
    if (problems.length) {
      throw new Error(`${opts.source ?? 'state dict'}: ${problems.join('. ')}`);
    }
    const loaded: string[] = [];
    for (const [name, t] of params) {
      const v = sd.get(name);
      if (!v) continue;
      // An f16 parameter (a frozen weight converted for mixed precision) takes its values rounded.
      this.engine.gpu.write(t.buffer, t.dtype === 'f16' ? toF16Bits(v.data) : v.data);
      loaded.push(name);
    }
    return { loaded, missing };
  }

  /** Freezes (or unfreezes) every parameter of this module. */
  requiresGrad(flag: boolean): this {
    for (const [, t] of this.namedParameters()) t.requiresGrad = flag;
    return this;
  }
}

function collect(name: string, value: unknown, out: [string, Tensor][]): void {
  if (value instanceof Module) {
    out.push(...value.namedParameters(`${name}.`));
  } else if (Array.isArray(value)) {
    value.forEach((v, i) => collect(`${name}.${i}`, v, out));
  } else if (value && typeof value === 'object' && (value as Tensor).isParameter === true) {
    out.push([name, value as Tensor]);
  }
}
