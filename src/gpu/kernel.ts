/**
 * Kernel specs: one WGSL file per kernel family in shaders/, one TS module per family declaring its
 * uniform structs and entry points. The WGSL struct text and the byte packing both come from the
 * same field list, so they can never drift apart. Uniform fields are 4-byte scalars only, which
 * keeps the uniform layout free of padding rules.
 */
import { shaderName, shaderText } from './shader-source.js';
import { WGSL_ACTIVATION } from './wgsl-activation.js';

export type Scalar = 'u32' | 'i32' | 'f32';
export type StructFields = Record<string, Scalar>;

/** Storage element type of a tensor. */
export type DType = 'f32' | 'f16';
/**
 * Element types of a pipeline variant: WGSL alias name (`dt_*`) -> its type. Aliases left out
 * are f32, so `{}` is the f32 variant.
 */
export type AliasTypes = Readonly<Record<string, DType>>;

export interface ShaderFamily {
  readonly file: string;
  readonly structs: Record<string, StructFields>;
  /** `dt_*` element-type aliases the file uses (found in its text). */
  aliases(): string[];
  /**
   * Generated struct declarations + alias lines + the file's text, for one assignment of its
   * element-type aliases (all f32 when omitted; `enable f16;` only when some alias is f16).
   */
  source(types?: AliasTypes): string;
  kernel(def: KernelDef): Kernel;
}

export interface KernelDef {
  /** Name used in errors and timings, e.g. `matmul.tiled`. */
  name: string;
  /** WGSL entry point. */
  entry: string;
  /** Name of the uniform struct (declared in the family); bound after the storage buffers. */
  params: string;
  /** Storage bindings in binding order, uniform last: names for error messages. */
  bindings: string[];
  /** Default `override` constants (tile sizes, workgroup size). */
  overrides?: Record<string, number>;
  /**
   * Binding name -> the `dt_*` alias that is its storage element type. A binding listed here takes
   * f32 or f16 buffers (the runtime picks the variant from the bound buffers' dtypes); any other
   * binding must be f32.
   */
  types?: Record<string, string>;
}

export interface Kernel extends KernelDef {
  family: ShaderFamily;
  fields: [string, Scalar][];
}

/**
 * WGSL keywords and reserved words (WGSL spec §15.2-15.3). A uniform field named like one breaks
 * the whole shader module, so defineShader refuses it with the name instead.
 */
const WGSL_RESERVED = new Set(
  ('alias break case const const_assert continue continuing default diagnostic discard else ' +
    'enable false fn for if let loop override requires return struct switch true var while ' +
    'NULL Self abstract active alignas alignof as asm asm_fragment async attribute auto await ' +
    'become binding_array cast catch class co_await co_return co_yield coherent column_major ' +
    'common compile compile_fragment concept const_cast consteval constexpr constinit crate ' +
    'debugger decltype delete demote demote_to_helper do dynamic_cast enum explicit export ' +
    'extends extern external fallthrough filter final finally friend from fxgroup get goto ' +
    'groupshared highp impl implements import inline instanceof interface layout lowp macro ' +
    'macro_rules match mediump meta mod module move mut mutable namespace new nil noexcept ' +
    'noinline nointerpolation noperspective null nullptr of operator package packoffset ' +
    'partition pass patch pixelfragment precise precision premerge priv protected pub public ' +
    'readonly ref regardless register reinterpret_cast require resource restrict self set ' +
    'shared sizeof smooth snorm static static_assert static_cast std subroutine super target ' +
    'template this thread_local throw trait try type typedef typeid typename typeof union ' +
    'unless unorm unsafe unsized use using varying virtual volatile wgsl where with writeonly ' +
    'yield').split(' '),
);

/**
 * WGSL every family's module starts with (after its uniform structs): helpers that kernels
 * would otherwise each spell out. Names carry the `sl_` prefix so they never collide with a
 * family's own.
 */
export const WGSL_PRELUDE = `
// ---- prelude (src/gpu/kernel.ts) ----
// Index of a thread in a 1-D launch of workgroups of size wg whose grid Gpu.grid folded into y
// past the per-dimension limit (threads past the end get indices >= the count: check them).
fn sl_flat_index(gid: vec3u, nwg: vec3u, wg: u32) -> u32 {
  return gid.x + gid.y * nwg.x * wg;
}
// Index of a workgroup in such a folded grid (one workgroup per row, token, ...; groups past the
// end get indices >= the count: check them).
fn sl_group_index(wid: vec3u, nwg: vec3u) -> u32 {
  return wid.x + wid.y * nwg.x;
}
// A loop bound read from the uniforms, passed through an invocation id: the value is unchanged
// (min(u, u | id) == u) but no longer uniform-only. lavapipe (Mesa 22.3) inlines uniforms that
// bound a loop and recompiles the shader for every dispatch (measured 4.5 ms per dispatch of
// attn_fwd_regs, 0.08 ms with this); GPU drivers pay one OR and one min.
fn sl_bound(u: u32, id: u32) -> u32 {
  return min(u, u | id);
}
`;

/**
 * A shared-memory tree reduction, generated once per use as `fn <name>(t: u32)` (WGSL cannot pass
 * a workgroup array to a function without the `unrestricted_pointer_parameters` language
 * feature, so each set of arrays gets its own function). Each thread stores its values at slot t
 * of every array, then calls it from uniform control flow (it holds the barriers, including the
 * one after the stores); on return slot 0 (lane 0's slot) holds the result, visible to every
 * thread. Lanes pair up as t and t + s for s = lanes/2, lanes/4, .., 1.
 */
export interface TreeReduction {
  /** Workgroup arrays reduced together: one loop, one barrier per step for all of them. */
  arrays: readonly string[];
  op: 'sum' | 'max';
  /** Lanes taking part: an override or const whose value is a power of two. */
  lanes: string;
  /**
   * Slots between consecutive lanes (an override or const), for a 2-D workgroup reducing along
   * y: the function is then `fn <name>(lane: u32, t: u32)`, lane = the thread's lane (lid.y), t
   * its slot. Absent: lane = slot = t.
   */
  stride?: string;
}

/** What a family's TS module adds to its WGSL file besides the uniform structs. */
export interface ShaderOptions {
  /** Folder of the .wgsl file when not shaders/ (e.g. the bench's own shaders). */
  dir?: string;
  /** Tree reductions to generate, by function name. */
  trees?: Record<string, TreeReduction>;
  /** WGSL the TS module generates itself (e.g. binding slots, which WGSL cannot index). */
  code?: string;
  /**
   * WGSL extensions the text needs (`enable` lines, e.g. `subgroups`): only devices with the
   * matching feature can build the family's pipelines.
   */
  enables?: readonly string[];
  /**
   * Files of the same folder appended to `file` (entry points that need `enables`, sharing the
   * file's functions); they join the family's name (`matmul+matmul_sg`).
   */
  append?: readonly string[];
}

/** A sum over `lanes` lanes (WG unless given) of each of `arrays`. */
export function treeSum(arrays: string[], lanes = 'WG', stride?: string): TreeReduction {
  return { arrays, op: 'sum', lanes, ...(stride ? { stride } : {}) };
}

/** A max over `lanes` lanes (WG unless given) of each of `arrays`. */
export function treeMax(arrays: string[], lanes = 'WG'): TreeReduction {
  return { arrays, op: 'max', lanes };
}

const WGSL_IDENT = /^[A-Za-z_]\w*$/;

/** The WGSL of one tree reduction (see TreeReduction). */
export function treeReductionWgsl(name: string, tree: TreeReduction): string {
  const { arrays, op, lanes, stride } = tree;
  const names = [name, lanes, ...arrays, ...(stride ? [stride] : [])];
  const bad = names.find((n) => !WGSL_IDENT.test(n) || WGSL_RESERVED.has(n));
  if (bad !== undefined || arrays.length === 0) {
    throw new Error(`tree reduction ${name}: '${bad ?? '(no arrays)'}' is not a usable name`);
  }
  const lane = stride ? 'lane' : 't';
  const other = stride ? `t + s * ${stride}` : 't + s';
  const step = (a: string) =>
    op === 'sum' ? `${a}[t] += ${a}[${other}];` : `${a}[t] = max(${a}[t], ${a}[${other}]);`;
  return [
    `fn ${name}(${stride ? 'lane: u32, ' : ''}t: u32) {`,
    '  workgroupBarrier();',
    `  for (var s = ${lanes} / 2u; s > 0u; s >>= 1u) {`,
    `    if (${lane} < s) {`,
    ...arrays.map((a) => `      ${step(a)}`),
    '    }',
    '    workgroupBarrier();',
    '  }',
    '}',
  ].join('\n');
}

/**
 * A kernel family: `file`.wgsl in shaders/ (or in `options.dir`; the family key then carries
 * that folder so pipelines never collide), with the WGSL its TS module generates.
 */
export function defineShader(
  file: string,
  structs: Record<string, StructFields>,
  options: ShaderOptions = {},
): ShaderFamily {
  const { dir, trees = {}, code = '', enables = [], append = [] } = options;
  for (const [struct, fields] of Object.entries(structs)) {
    for (const name of [struct, ...Object.keys(fields)]) {
      if (WGSL_RESERVED.has(name)) {
        throw new Error(`shader ${file}: '${name}' (in ${struct}) is a reserved word in WGSL`);
      }
    }
  }
  const generated = Object.entries(trees).map(([name, t]) => treeReductionWgsl(name, t));
  if (code) generated.push(code.trim());
  const extra = generated.length
    ? `\n// ---- generated by ${file}'s TS module (defineShader) ----\n${generated.join('\n\n')}\n`
    : '';
  const cached = new Map<string, string>();
  let text: string | undefined;
  const body = (): string => {
    if (text === undefined) {
      const t = [file, ...append].map((f) => shaderText(f, dir)).join('\n');
      for (const [name, tree] of Object.entries(trees)) {
        const missing = tree.arrays.find((a) => !new RegExp(`var<workgroup>\\s+${a}\\s*:`).test(t));
        if (missing) {
          throw new Error(`shader ${file}: tree reduction ${name} reduces '${missing}', ` +
            `not a var<workgroup> of ${file}.wgsl`);
        }
      }
      text = t;
    }
    return text;
  };
  let aliasList: string[] | undefined;
  const family: ShaderFamily = {
    file: shaderName(file, dir) + append.map((f) => `+${f}`).join(''),
    structs,
    aliases() {
      aliasList ??= [...new Set((body() + extra).match(/\bdt_\w+/g) ?? [])].sort();
      return aliasList;
    },
    source(types: AliasTypes = {}) {
      const key = typesKey(types);
      let src = cached.get(key);
      if (src === undefined) {
        const decls = Object.entries(structs)
          .map(([name, fields]) => {
            const body = Object.entries(fields)
              .map(([f, t]) => `  ${f}: ${t},`)
              .join('\n');
            return `struct ${name} {\n${body}\n}`;
          })
          .join('\n');
        const known = family.aliases();
        for (const a of Object.keys(types)) {
          if (!known.includes(a)) throw new Error(`shader ${file}: no element-type alias '${a}'`);
        }
        const f16 = known.some((a) => types[a] === 'f16');
        const aliasLines = known.map((a) => `alias ${a} = ${types[a] ?? 'f32'};`).join('\n');
        const enableLines = enables.map((e) => `enable ${e};\n`).join('');
        const head = `${enableLines}${f16 ? 'enable f16;\n' : ''}${decls}\n${aliasLines}\n`;
        src = `${head}${WGSL_PRELUDE}\n${WGSL_ACTIVATION}${extra}\n${body()}`;
        cached.set(key, src);
      }
      return src;
    },
    kernel(def: KernelDef): Kernel {
      const fields = structs[def.params];
      if (!fields) throw new Error(`kernel ${def.name}: struct ${def.params} not declared in ${file}`);
      for (const [b, a] of Object.entries(def.types ?? {})) {
        if (!def.bindings.includes(b) || !/^dt_\w+$/.test(a)) {
          throw new Error(`kernel ${def.name}: type alias '${a}' for unknown binding '${b}'`);
        }
      }
      return { ...def, family, fields: Object.entries(fields) };
    },
  };
  return family;
}

/** Bytes of a kernel's packed uniforms (a multiple of 16, at least 16). */
export function paramBytes(kernel: Kernel): number {
  return Math.max(16, Math.ceil((kernel.fields.length * 4) / 16) * 16);
}

/** Packs uniform values in struct order; a missing or non-finite field is an error. */
export function packParams(kernel: Kernel, values: Record<string, number>): ArrayBuffer {
  const buf = new ArrayBuffer(paramBytes(kernel));
  packParamsInto(kernel, values, new DataView(buf), 0);
  return buf;
}

/**
 * packParams writing into `view` at `offset` (the runtime's uniform staging memory, so a dispatch
 * allocates nothing). The bytes past the fields up to paramBytes are left as they are.
 */
export function packParamsInto(
  kernel: Kernel,
  values: Record<string, number>,
  view: DataView,
  offset: number,
): void {
  const fields = kernel.fields;
  for (let i = 0; i < fields.length; i++) {
    const [name, type] = fields[i];
    const v = values[name];
    if (v === undefined || !Number.isFinite(v)) {
      throw new Error(`kernel ${kernel.name}: uniform '${name}' is ${v}`);
    }
    const at = offset + i * 4;
    if (type === 'f32') view.setFloat32(at, v, true);
    else if (type === 'u32') {
      if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) {
        throw new Error(`kernel ${kernel.name}: uniform '${name}' = ${v} is not a u32`);
      }
      view.setUint32(at, v, true);
    } else {
      if (!Number.isInteger(v) || v < -0x80000000 || v > 0x7fffffff) {
        throw new Error(`kernel ${kernel.name}: uniform '${name}' = ${v} is not an i32`);
      }
      view.setInt32(at, v, true);
    }
  }
  // Every field was found above, so as many keys as fields means no unknown one.
  let keys = 0;
  for (const k in values) if (Object.prototype.hasOwnProperty.call(values, k)) keys++;
  if (keys === fields.length) return;
  for (const k of Object.keys(values)) {
    if (!fields.some(([n]) => n === k)) {
      throw new Error(`kernel ${kernel.name}: unknown uniform '${k}'`);
    }
  }
}

/** The f16 aliases of an assignment, sorted: '' for the all-f32 variant. */
export function typesKey(types: AliasTypes): string {
  return Object.keys(types)
    .filter((a) => types[a] === 'f16')
    .sort()
    .map((a) => `${a}=f16`)
    .join(',');
}

/** Cache key of a pipeline: everything baked into it. */
export function pipelineKey(
  kernel: Kernel,
  overrides: Record<string, number>,
  types: AliasTypes = {},
): string {
  const o = Object.keys(overrides)
    .sort()
    .map((k) => `${k}=${overrides[k]}`)
    .join(',');
  const t = typesKey(types);
  return `${kernel.family.file}#${kernel.entry}{${o}}${t ? `<${t}>` : ''}`;
}
