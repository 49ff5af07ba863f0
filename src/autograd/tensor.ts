/**
 * GPU tensors and the tape. A Tensor is a shape over a reference-counted GPU storage (views such as
 * reshape share it). Ops record a Node on the tape when grad mode is on and an input needs a
 * gradient; backward() walks the tape in reverse (creation order is a topological order) and
 * releases each node's saved tensors as soon as its rule has run.
 */
import type { DType } from '../gpu/kernel.js';
import type { Gpu } from '../gpu/runtime.js';
import { add as addKernelCall, axpy, cast as castKernel, fill } from '../kernels/elementwise.js';
import { fromF16Bits, storageBytes, toF16Bits } from '../util/f16.js';

export type { DType } from '../gpu/kernel.js';

export type Shape = readonly number[];

export function numel(shape: Shape): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** The output type of an op over an activation and a weight: f16 when either is f16. */
export function mixedDtype(...ts: Tensor[]): DType {
  return ts.some((t) => t.dtype === 'f16') ? 'f16' : 'f32';
}

export function shapeStr(shape: Shape): string {
  return `[${shape.join(',')}]`;
}

class Storage {
  refs = 1;
  /** Elements to zero before the buffer's next use (Tensor.zero defers its fill); 0: none. */
  zeroPending = 0;
  constructor(
    readonly gpu: Gpu,
    public buffer: GPUBuffer | null,
    readonly bytes: number,
  ) {}
  retain(): void {
    this.refs++;
  }
  release(): void {
    if (--this.refs === 0 && this.buffer) {
      this.gpu.free(this.buffer);
      this.buffer = null;
    }
  }
}

export interface Node {
  name: string;
  inputs: Tensor[];
  output: Tensor;
  /** Tensors the backward rule reads; retained until the rule has run. */
  saved: Tensor[];
  /** Returns one gradient per input (null where none is needed or flows). */
  backward(gradOut: Tensor, needs: boolean[]): (Tensor | null)[];
}

export class Tensor {
  readonly size: number;
  requiresGrad: boolean;
  /** Accumulated gradient of a leaf that requires it (parameters). */
  grad: Tensor | null = null;
  node: Node | null = null;
  /** Parameters live across steps and are never released by a scope. */
  isParameter = false;
  name?: string;
  private released = false;
  /** How many owners (scope/user, tape nodes) hold this tensor. */
  private refs = 1;

  constructor(
    readonly engine: Engine,
    private storage: Storage,
    readonly shape: Shape,
    requiresGrad = false,
    /** Storage element type; kernels compute in f32 whatever it is. */
    public dtype: DType = 'f32',
  ) {
    this.size = numel(shape);
    this.requiresGrad = requiresGrad;
  }

  get gpu(): Gpu {
    return this.storage.gpu;
  }

  get buffer(): GPUBuffer {
    const s = this.storage;
    const b = s.buffer;
    if (!b || this.released) {
      throw new Error(`tensor ${this.name ?? shapeStr(this.shape)} was used after release`);
    }
    if (s.zeroPending > 0) {
      // A deferred zero() lands before whatever the caller records with the buffer.
      fill(s.gpu, b, s.zeroPending, 0);
      s.zeroPending = 0;
    }
    return b;
  }

  /**
   * Sets every value to 0. The fill is deferred to the buffer's next use (any view's), so a leaf
   * gradient that the next backward overwrites whole costs no dispatch (Engine.accumulateLeaf).
   */
  zero(): void {
    if (!this.storage.buffer || this.released) {
      throw new Error(`tensor ${this.name ?? shapeStr(this.shape)} was used after release`);
    }
    this.storage.zeroPending = Math.max(this.storage.zeroPending, this.size);
  }

  /** True while a zero() is deferred: the values are 0 but the buffer was not written yet. */
  get isZeroPending(): boolean {
    return this.storage.zeroPending > 0;
  }

  /**
   * True when this handle is the only owner of its storage (one reference, no view): a write
   * through it, or handing the storage to another tensor, is seen by nobody else.
   */
  get isExclusive(): boolean {
    return !this.released && this.refs === 1 && this.storage.refs === 1;
  }

  /** True when another tensor (a view) shares this storage. */
  get sharesStorage(): boolean {
    return this.storage.refs > 1;
  }

  /**
   * Overwrite-only access: the buffer without materialising a deferred zero, for a caller that
   * writes every element next (a copy into a zeroed gradient).
   */
  bufferForOverwrite(): GPUBuffer {
    this.storage.zeroPending = 0;
    return this.buffer;
  }

  /**
   * Engine-internal: this tensor (e.g. a parameter's .grad, so holders keep the same object)
   * takes `src`'s storage in place of its own, like an in-place overwrite. No view may share this
   * storage, src must be exclusive (isExclusive), dtypes and sizes equal; src keeps its reference
   * to the storage until it is released.
   */
  adoptStorage(src: Tensor): void {
    if (this.released || this.storage.refs !== 1 || !src.isExclusive ||
        src.dtype !== this.dtype || src.size !== this.size) {
      throw new Error(`adoptStorage: ${this.name ?? shapeStr(this.shape)} cannot take over ` +
        `${src.dtype} ${shapeStr(src.shape)}`);
    }
    src.storage.retain();
    this.storage.release();
    this.storage = src.storage;
  }

  get isReleased(): boolean {
    return this.released;
  }

  /** A view with another shape over the same storage. */
  view(shape: Shape): Tensor {
    if (numel(shape) !== this.size) {
      throw new Error(`view: cannot view ${shapeStr(this.shape)} as ${shapeStr(shape)}`);
    }
    this.storage.retain();
    const t = new Tensor(this.engine, this.storage, [...shape], false, this.dtype);
    this.engine.track(t);
    return t;
  }

  retain(): this {
    this.refs++;
    return this;
  }

  /** Drops one ownership; the storage returns to the pool when nobody holds it. */
  release(): void {
    if (this.released) return;
    if (--this.refs > 0) return;
    this.released = true;
    this.storage.release();
  }

  /** Releases regardless of other holders (end of life of a parameter or a test tensor). */
  dispose(): void {
    if (this.released) return;
    this.refs = 1;
    this.release();
    this.grad?.dispose();
    this.grad = null;
  }

  /** The values as f32 (f16 storage widens exactly). */
  async toArray(): Promise<Float32Array> {
    if (this.dtype === 'f16') {
      const raw = await this.gpu.read(this.buffer, storageBytes(this.size, 'f16'));
      return fromF16Bits(new Uint16Array(raw, 0, this.size));
    }
    return this.gpu.readF32(this.buffer, this.size);
  }

  /**
   * Converts a leaf (a parameter, typically a frozen weight) to `dtype` in place, on the GPU: its
   * storage is replaced, so every module holding it sees the new type. Not for tensors on the
   * tape or with views alive.
   */
  convert(dtype: DType): this {
    if (dtype === this.dtype) return this;
    if (this.node) throw new Error(`convert: ${this.name ?? shapeStr(this.shape)} is on the tape`);
    if (this.storage.refs !== 1) {
      throw new Error(`convert: ${this.name ?? shapeStr(this.shape)} has views alive`);
    }
    const gpu = this.gpu;
    const buf = gpu.alloc(storageBytes(this.size, dtype), this.name, dtype);
    castKernel(gpu, this.buffer, buf, this.size);
    this.storage.release();
    this.storage = new Storage(gpu, buf, storageBytes(this.size, dtype));
    this.dtype = dtype;
    this.grad?.dispose();
    this.grad = null;
    return this;
  }
}

export class Engine {
  private tape: Node[] = [];
  private scopes: Tensor[][] = [];
  private gradEnabled = true;
  /** Tests set this: every new output is filled with NaN so an unwritten element fails. */
  poisonOutputs = false;

  constructor(readonly gpu: Gpu) {}

  get isGradEnabled(): boolean {
    return this.gradEnabled;
  }

  track(t: Tensor): void {
    this.scopes[this.scopes.length - 1]?.push(t);
  }

  /** An uninitialised tensor (NaN-poisoned when poisonOutputs is on). */
  empty(shape: Shape, label?: string, dtype: DType = 'f32'): Tensor {
    const n = numel(shape);
    if (!Number.isInteger(n) || n <= 0) throw new Error(`empty: bad shape ${shapeStr(shape)}`);
    const bytes = storageBytes(n, dtype);
    const buf = this.gpu.alloc(bytes, label, dtype);
    const t = new Tensor(this, new Storage(this.gpu, buf, bytes), [...shape], false, dtype);
    if (this.poisonOutputs) fill(this.gpu, buf, n, NaN);
    this.track(t);
    return t;
  }

  /** An uninitialised tensor of `like`'s dtype (shape given): what most ops output. */
  emptyLike(like: Tensor, shape: Shape = like.shape): Tensor {
    return this.empty(shape, undefined, like.dtype);
  }

  zeros(shape: Shape, dtype: DType = 'f32'): Tensor {
    return this.full(shape, 0, dtype);
  }

  full(shape: Shape, value: number, dtype: DType = 'f32'): Tensor {
    const t = this.empty(shape, undefined, dtype);
    fill(this.gpu, t.buffer, t.size, value);
    return t;
  }

  /** Uploads values; an f16 tensor gets them rounded to nearest even on the CPU. */
  fromArray(
    data: ArrayLike<number>,
    shape: Shape,
    requiresGrad = false,
    dtype: DType = 'f32',
  ): Tensor {
    const n = numel(shape);
    if (data.length !== n) {
      throw new Error(`fromArray: ${data.length} values for shape ${shapeStr(shape)}`);
    }
    let buf: GPUBuffer;
    if (dtype === 'f16') {
      buf = this.gpu.alloc(storageBytes(n, 'f16'), undefined, 'f16');
      this.gpu.write(buf, toF16Bits(data));
    } else {
      buf = this.gpu.upload(data instanceof Float32Array ? data : Float32Array.from(data));
    }
    const bytes = storageBytes(n, dtype);
    const t = new Tensor(this, new Storage(this.gpu, buf, bytes), [...shape], requiresGrad, dtype);
    this.track(t);
    return t;
  }

  /** A trainable (or frozen) parameter: never released by scopes. */
  parameter(data: ArrayLike<number>, shape: Shape, requiresGrad = true, name?: string): Tensor {
    const t = this.untracked(() => this.fromArray(data, shape, requiresGrad));
    t.isParameter = true;
    t.name = name;
    return t;
  }

  private untracked<T>(fn: () => T): T {
    this.scopes.push([]);
    try {
      return fn();
    } finally {
      this.scopes.pop();
    }
  }

  /**
   * Runs fn; every tensor created inside and not returned (nor reachable from the returned value
   * as array/object members) is released at the end. Tape nodes keep what backward needs.
   */
  scope<T>(fn: () => T): T {
    const list: Tensor[] = [];
    this.scopes.push(list);
    let result: T;
    try {
      result = fn();
    } finally {
      this.scopes.pop();
    }
    const keep = new Set<Tensor>();
    collectTensors(result, keep);
    for (const t of list) {
      if (keep.has(t)) this.track(t);
      else if (!t.isParameter) t.release();
    }
    return result;
  }

  async scopeAsync<T>(fn: () => Promise<T>): Promise<T> {
    const list: Tensor[] = [];
    this.scopes.push(list);
    let result: T;
    try {
      result = await fn();
    } finally {
      this.scopes.splice(this.scopes.indexOf(list), 1);
    }
    const keep = new Set<Tensor>();
    collectTensors(result, keep);
    for (const t of list) {
      if (keep.has(t)) this.track(t);
      else if (!t.isParameter) t.release();
    }
    return result;
  }

  noGrad<T>(fn: () => T): T {
    const prev = this.gradEnabled;
    this.gradEnabled = false;
    try {
      return fn();
    } finally {
      this.gradEnabled = prev;
    }
  }

  /** True when an op over these inputs must be recorded. */
  needsTape(inputs: Tensor[]): boolean {
    return this.gradEnabled && inputs.some((t) => t.requiresGrad);
  }

  /** Records an op's node; the op's output then requires grad. */
  record(node: Omit<Node, 'output'>, output: Tensor): Tensor {
    if (!this.needsTape(node.inputs)) return output;
    for (const t of node.inputs) t.retain();
    for (const t of node.saved) t.retain();
    output.requiresGrad = true;
    output.node = { ...node, output };
    this.tape.push(output.node);
    return output;
  }

  /**
   * Backpropagates from a scalar (or from `seed` for a non-scalar output) through the tape.
   * Leaves that require grad (parameters, test inputs) accumulate into `.grad`; the tape is
   * cleared. Each intermediate gradient is freed as soon as the node that consumes it has run.
   */
  backward(root: Tensor, seed?: Tensor): void {
    if (!root.requiresGrad) throw new Error('backward: output does not require grad');
    // Anything created here is owned explicitly (the grads map or a leaf), never by a scope.
    const stray: Tensor[] = [];
    this.scopes.push(stray);
    const tape = this.tape;
    this.tape = [];
    const grads = new Map<Tensor, Tensor>();
    try {
      if (seed) {
        if (seed.size !== root.size) throw new Error('backward: seed shape differs from output');
        grads.set(root, seed.retain());
      } else {
        grads.set(root, this.full(root.shape, 1));
      }
      for (let i = tape.length - 1; i >= 0; i--) {
        const node = tape[i];
        const g = grads.get(node.output);
        if (g) {
          grads.delete(node.output);
          this.runRule(node, g, grads);
          g.release();
        }
        for (const t of node.saved) t.release();
        for (const t of node.inputs) t.release();
        node.output.node = null;
      }
      // What is left belongs to leaves (or to branches that never reached one).
      for (const [t, g] of grads) {
        if (t.requiresGrad && !t.node) this.accumulateLeaf(t, g);
        g.release();
      }
    } finally {
      this.scopes.pop();
      for (const node of this.tape) node.output.node = null;
    }
  }

  private runRule(node: Node, g: Tensor, grads: Map<Tensor, Tensor>): void {
    const needs = node.inputs.map((t) => t.requiresGrad);
    const created: Tensor[] = [];
    this.scopes.push(created);
    let inGrads: (Tensor | null)[];
    // Rules may call ops (not only kernels): nothing they do may land on the tape.
    const prevGrad = this.gradEnabled;
    this.gradEnabled = false;
    try {
      inGrads = node.backward(g, needs);
    } finally {
      this.gradEnabled = prevGrad;
      this.scopes.pop();
    }
    const returned = new Set(inGrads.filter((t): t is Tensor => t !== null));
    for (const t of created) if (!returned.has(t)) t.release();
    node.inputs.forEach((inp, k) => {
      let gi = inGrads[k];
      if (!gi || !needs[k]) return;
      if (gi.dtype !== inp.dtype) {
        // A gradient has its input's dtype (f16 activations get f16 gradients).
        const c = this.empty(gi.shape, undefined, inp.dtype);
        castKernel(this.gpu, gi.buffer, c.buffer, gi.size);
        // Released below with the rule's own tensors; gi itself is left to that too.
        returned.add(c);
        created.push(c);
        gi = c;
      }
      if (gi.size !== inp.size) {
        throw new Error(
          `backward of ${node.name}: gradient ${shapeStr(gi.shape)} for input ${k} ` +
            `of shape ${shapeStr(inp.shape)}`,
        );
      }
      const prev = grads.get(inp);
      if (!prev) {
        // The first gradient is taken over as is (no copy); it may be shared, see below.
        grads.set(inp, gi.retain());
        return;
      }
      if (prev.isExclusive) {
        // Only the map holds prev and no view shares its storage: accumulate in place.
        axpy(this.gpu, gi.buffer, prev.buffer, prev.size);
        return;
      }
      // Sum into a fresh tensor: prev shares storage with another gradient or a saved value.
      const sum = this.empty(inp.shape, undefined, inp.dtype);
      addKernelCall(this.gpu, prev.buffer, gi.buffer, sum.buffer, sum.size);
      prev.release();
      grads.set(inp, sum);
    });
    // The rule's own references to what it created.
    for (const t of returned) if (created.includes(t)) t.release();
  }

  /**
   * Adds g (held by the caller, released after) into t.grad, always f32. The first gradient
   * since the last zero (or ever) is not added to zeros: g's storage is taken over when nothing
   * else can see it (g exclusive, f32), else copied (or cast from f16) in one command. Later
   * ones (another backward, the next micro-batch) accumulate with axpy.
   */
  private accumulateLeaf(t: Tensor, g: Tensor): void {
    const cur = t.grad;
    if (cur && !cur.isZeroPending) {
      axpy(this.gpu, g.buffer, cur.buffer, t.size);
      return;
    }
    const own = g.dtype === 'f32' && g.isExclusive;
    if (!cur) {
      // A view keeps t's shape; g's release by the caller leaves the view the storage's owner.
      const grad = own ? g.view(t.shape) : this.empty(t.shape);
      if (!own) this.overwrite(g, grad);
      grad.isParameter = true;
      t.grad = grad;
    } else if (own && !cur.sharesStorage) {
      cur.adoptStorage(g);
    } else {
      this.overwrite(g, cur);
    }
  }

  /** dst = g (dst f32, every element written): a buffer copy, or a cast from f16. */
  private overwrite(g: Tensor, dst: Tensor): void {
    const out = dst.bufferForOverwrite();
    if (g.dtype === dst.dtype) this.gpu.copy(g.buffer, 0, out, 0, storageBytes(g.size, g.dtype));
    else castKernel(this.gpu, g.buffer, out, g.size);
  }

  /** Sets every leaf gradient of `params` to zero (keeps the buffers; the fill is deferred). */
  zeroGrad(params: Iterable<Tensor>): void {
    for (const p of params) p.grad?.zero();
  }

  /** Drops the tape without backward (e.g. after an evaluation under grad mode). */
  clearTape(): void {
    for (const node of this.tape) {
      for (const t of node.saved) t.release();
      for (const t of node.inputs) t.release();
      node.output.node = null;
    }
    this.tape = [];
  }

  get tapeLength(): number {
    return this.tape.length;
  }
}


function collectTensors(v: unknown, out: Set<Tensor>, depth = 0): void {
  if (depth > 4 || v === null || typeof v !== 'object') return;
  if (v instanceof Tensor) {
    out.add(v);
    return;
  }
  if (Array.isArray(v)) for (const x of v) collectTensors(x, out, depth + 1);
  else if (v instanceof Map) for (const x of v.values()) collectTensors(x, out, depth + 1);
  else for (const x of Object.values(v)) collectTensors(x, out, depth + 1);
}
