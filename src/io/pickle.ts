/**
 * A restricted unpickler for PyTorch checkpoints, in the spirit of `torch.load(weights_only=True)`:
 * it builds plain values (dicts, tuples, lists, numbers, strings), storage references from
 * persistent ids and tensor descriptors from `_rebuild_tensor_v2`, and refuses every other global
 * by name. Nothing is ever called or imported; every size is checked against the bytes present
 * before anything is allocated. Also the matching writer for `torch.save`-style state dicts.
 */

export class PickleError extends Error {
  constructor(source: string, problem: string) {
    super(`${source}: ${problem}`);
    this.name = 'PickleError';
  }
}

export type DType =
  | 'float32' | 'float16' | 'bfloat16' | 'float64'
  | 'int64' | 'int32' | 'int16' | 'int8' | 'uint8' | 'bool';

export const DTYPE_BYTES: Record<DType, number> = {
  float32: 4, float16: 2, bfloat16: 2, float64: 8,
  int64: 8, int32: 4, int16: 2, int8: 1, uint8: 1, bool: 1,
};

/** `torch.<Name>Storage` → dtype; these are the legacy names `torch.save` still writes. */
const STORAGE_DTYPES: Record<string, DType> = {
  FloatStorage: 'float32', HalfStorage: 'float16', BFloat16Storage: 'bfloat16',
  DoubleStorage: 'float64', LongStorage: 'int64', IntStorage: 'int32', ShortStorage: 'int16',
  CharStorage: 'int8', ByteStorage: 'uint8', BoolStorage: 'bool',
};

const CALLABLES = new Set([
  'collections.OrderedDict',
  'torch._utils._rebuild_tensor_v2',
  'torch._utils._rebuild_parameter',
]);

export class PyTuple {
  constructor(readonly items: PyValue[]) {}
}

export class PyDict {
  readonly map = new Map<string | number | boolean | bigint | null, PyValue>();
  /** Instance attributes set by BUILD (a state dict's `_metadata`); kept, never interpreted. */
  attrs: PyDict | null = null;
  constructor(readonly ordered: boolean) {}
}

/** A global the allow-list accepted: a callable above or a storage class. */
export class PyGlobal {
  constructor(readonly module: string, readonly name: string) {}
  get qualified(): string {
    return `${this.module}.${this.name}`;
  }
}

export interface StorageRef {
  kind: 'storage';
  key: string;
  dtype: DType;
  location: string;
  /** Elements (not bytes) in the storage, as the persistent id declares. */
  numel: number;
}

export interface TensorRef {
  kind: 'tensor';
  storage: StorageRef;
  /** In elements. */
  offset: number;
  shape: number[];
  stride: number[];
}

export type PyValue =
  | null | boolean | number | bigint | string | Uint8Array
  | PyValue[] | PyTuple | PyDict | PyGlobal | StorageRef | TensorRef;

export const PICKLE_LIMITS = {
  maxMemo: 1 << 24,
  /** Widest integer accepted from LONG1/LONG4, in bytes. */
  maxLongBytes: 16,
};

function isStorage(v: PyValue): v is StorageRef {
  return typeof v === 'object' && v !== null && (v as StorageRef).kind === 'storage';
}
function isTensor(v: PyValue): v is TensorRef {
  return typeof v === 'object' && v !== null && (v as TensorRef).kind === 'tensor';
}

export function pyTypeName(v: PyValue): string {
  if (v === null) return 'None';
  if (Array.isArray(v)) return 'list';
  if (v instanceof Uint8Array) return 'bytes';
  if (v instanceof PyTuple) return 'tuple';
  if (v instanceof PyDict) return v.ordered ? 'OrderedDict' : 'dict';
  if (v instanceof PyGlobal) return v.qualified;
  if (isStorage(v)) return 'storage';
  if (isTensor(v)) return 'tensor';
  return typeof v;
}

const MARK = Symbol('mark');
type Slot = PyValue | typeof MARK;

/**
 * Unpickles `data` (protocols 2–5, the opcodes PyTorch checkpoints use). Throws a PickleError
 * naming `source` for refused globals, unsupported opcodes and malformed input.
 */
export function unpickle(data: Uint8Array, source: string): PyValue {
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const n = data.byteLength;
  const utf8 = new TextDecoder('utf-8', { fatal: true });
  const latin1 = new TextDecoder('latin1');
  const stack: Slot[] = [];
  const marks: number[] = [];
  const memo = new Map<number, PyValue>();
  const storages = new Map<string, StorageRef>();
  let p = 0;
  const fail = (problem: string): never => {
    throw new PickleError(source, `pickle: ${problem} (at byte ${p})`);
  };
  const need = (k: number, what: string) => {
    if (k < 0 || p + k > n) fail(`${what} of ${k} bytes runs past the end of the pickle`);
  };
  const u8 = () => (need(1, 'opcode argument'), data[p++]);
  const u16 = () => (need(2, 'opcode argument'), (p += 2), view.getUint16(p - 2, true));
  const u32 = () => (need(4, 'opcode argument'), (p += 4), view.getUint32(p - 4, true));
  const u64 = () => {
    need(8, 'opcode argument');
    const v = view.getBigUint64(p, true);
    p += 8;
    if (v > BigInt(n)) fail(`length ${v} is larger than the pickle`);
    return Number(v);
  };
  const bytes = (k: number) => {
    need(k, 'string');
    p += k;
    return data.subarray(p - k, p);
  };
  const text = (k: number) => {
    const b = bytes(k);
    try {
      return utf8.decode(b);
    } catch {
      return fail('invalid UTF-8 in a string');
    }
  };
  const line = () => {
    const end = data.indexOf(0x0a, p);
    if (end < 0) fail('unterminated line');
    const s = latin1.decode(data.subarray(p, end));
    p = end + 1;
    return s;
  };
  const pop = (): PyValue => {
    if (stack.length === 0 || (marks.length && stack.length <= marks[marks.length - 1])) {
      fail('stack underflow');
    }
    const v = stack.pop() as Slot;
    if (v === MARK) fail('unexpected MARK');
    return v as PyValue;
  };
  const top = (): PyValue => {
    if (stack.length === 0) fail('stack underflow');
    return stack[stack.length - 1] as PyValue;
  };
  const popMark = (): PyValue[] => {
    const m = marks.pop();
    if (m === undefined) fail('no MARK on the stack');
    return stack.splice(m as number).slice(1) as PyValue[];
  };
  const put = (i: number) => {
    if (stack[stack.length - 1] === MARK) fail('memoizing a MARK');
    if (memo.size >= PICKLE_LIMITS.maxMemo && !memo.has(i)) fail('memo too large');
    memo.set(i, top());
  };
  const get = (i: number) => {
    if (!memo.has(i)) fail(`memo key ${i} was never stored`);
    stack.push(memo.get(i) as PyValue);
  };
  const pushInt = (v: bigint) => {
    stack.push(v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER)
      ? Number(v) : v);
  };
  const long = (k: number) => {
    if (k > PICKLE_LIMITS.maxLongBytes) fail(`integer of ${k} bytes is too large`);
    const b = bytes(k);
    let v = 0n;
    for (let i = k - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]);
    if (k > 0 && b[k - 1] & 0x80) v -= 1n << BigInt(8 * k);
    pushInt(v);
  };
  const global = (module: string, name: string) => {
    const q = `${module}.${name}`;
    if (CALLABLES.has(q) || (module === 'torch' && name in STORAGE_DTYPES)) {
      stack.push(new PyGlobal(module, name));
    } else if (module === 'torch' && name.endsWith('Storage')) {
      fail(`unsupported dtype: ${q} (float32/16, bfloat16, float64 and integer storages are read)`);
    } else {
      fail(`refusing global ${q}: only tensors, storages and (Ordered)Dict may be loaded; ` +
        'loading never runs code');
    }
  };
  const setItems = (d: PyValue, items: PyValue[]) => {
    if (!(d instanceof PyDict)) fail(`SETITEM(S) on a ${pyTypeName(d)}`);
    for (let i = 0; i + 1 < items.length; i += 2) {
      const k = items[i];
      if (k !== null && typeof k === 'object') {
        fail(`unsupported dict key of type ${pyTypeName(k)}`);
      }
      (d as PyDict).map.set(k as string, items[i + 1]);
    }
  };
  const reduce = (fn: PyValue, args: PyValue): PyValue => {
    if (!(fn instanceof PyGlobal) || !CALLABLES.has(fn.qualified)) {
      return fail(`refusing to call ${pyTypeName(fn)}`);
    }
    if (!(args instanceof PyTuple)) {
      return fail(`${fn.qualified} called with a ${pyTypeName(args)}`);
    }
    const a = args.items;
    switch (fn.qualified) {
      case 'collections.OrderedDict':
        if (a.length !== 0) fail('OrderedDict with arguments is not supported');
        return new PyDict(true);
      case 'torch._utils._rebuild_parameter':
        if (a.length < 1 || !isTensor(a[0])) fail('_rebuild_parameter without a tensor');
        return a[0];
      default:
        return rebuildTensor(a, fail);
    }
  };
  const persistent = (pid: PyValue): StorageRef => {
    const t = pid instanceof PyTuple ? pid.items : null;
    if (!t || t.length !== 5 || t[0] !== 'storage') {
      return fail(`unsupported persistent id (a ${pyTypeName(pid)}, expected ('storage', …))`);
    }
    const [, cls, key, location, numel] = t;
    if (!(cls instanceof PyGlobal) || !(cls.name in STORAGE_DTYPES) || cls.module !== 'torch') {
      return fail(`unsupported storage type ${pyTypeName(cls)}`);
    }
    if (typeof key !== 'string' || typeof location !== 'string') fail('malformed storage id');
    if (typeof numel !== 'number' || !Number.isInteger(numel) || numel < 0) {
      fail(`storage ${String(key)} declares ${String(numel)} elements`);
    }
    const dtype = STORAGE_DTYPES[cls.name];
    const prev = storages.get(key as string);
    if (prev) {
      if (prev.dtype !== dtype || prev.numel !== numel) fail(`storage ${key} declared twice`);
      return prev;
    }
    const s: StorageRef = {
      kind: 'storage', key: key as string, dtype, location: location as string,
      numel: numel as number,
    };
    storages.set(s.key, s);
    return s;
  };

  while (true) {
    if (p >= n) fail('no STOP opcode: the pickle is truncated');
    const op = data[p++];
    switch (op) {
      case 0x80: // PROTO
        if (u8() > 5) fail('pickle protocol above 5');
        break;
      case 0x95: // FRAME: framing is only a hint for buffered readers
        u64();
        break;
      case 0x2e: // STOP
        if (stack.length !== 1 || marks.length) fail('STOP with a malformed stack');
        return stack[0] as PyValue;
      case 0x28: // MARK
        marks.push(stack.length);
        stack.push(MARK);
        break;
      case 0x30: // POP
        if (stack.length && stack[stack.length - 1] === MARK) {
          stack.pop();
          marks.pop();
        } else {
          pop();
        }
        break;
      case 0x31: // POP_MARK
        popMark();
        break;
      case 0x32: // DUP
        stack.push(top());
        break;
      case 0x4e: // NONE
        stack.push(null);
        break;
      case 0x88: // NEWTRUE
        stack.push(true);
        break;
      case 0x89: // NEWFALSE
        stack.push(false);
        break;
      case 0x4a: // BININT
        need(4, 'int');
        stack.push(view.getInt32(p, true));
        p += 4;
        break;
      case 0x4b: // BININT1
        stack.push(u8());
        break;
      case 0x4d: // BININT2
        stack.push(u16());
        break;
      case 0x8a: // LONG1
        long(u8());
        break;
      case 0x8b: // LONG4
        long(u32());
        break;
      case 0x47: // BINFLOAT (big-endian)
        need(8, 'float');
        stack.push(view.getFloat64(p, false));
        p += 8;
        break;
      case 0x58: // BINUNICODE
        stack.push(text(u32()));
        break;
      case 0x8c: // SHORT_BINUNICODE
        stack.push(text(u8()));
        break;
      case 0x8d: // BINUNICODE8
        stack.push(text(u64()));
        break;
      case 0x54: // BINSTRING (Python 2 str)
        stack.push(latin1.decode(bytes(u32())));
        break;
      case 0x55: // SHORT_BINSTRING
        stack.push(latin1.decode(bytes(u8())));
        break;
      case 0x42: // BINBYTES
        stack.push(bytes(u32()).slice());
        break;
      case 0x43: // SHORT_BINBYTES
        stack.push(bytes(u8()).slice());
        break;
      case 0x8e: // BINBYTES8
        stack.push(bytes(u64()).slice());
        break;
      case 0x29: // EMPTY_TUPLE
        stack.push(new PyTuple([]));
        break;
      case 0x85: // TUPLE1
        stack.push(new PyTuple([pop()]));
        break;
      case 0x86: { // TUPLE2
        const b = pop();
        stack.push(new PyTuple([pop(), b]));
        break;
      }
      case 0x87: { // TUPLE3
        const c = pop();
        const b = pop();
        stack.push(new PyTuple([pop(), b, c]));
        break;
      }
      case 0x74: // TUPLE
        stack.push(new PyTuple(popMark()));
        break;
      case 0x5d: // EMPTY_LIST
        stack.push([]);
        break;
      case 0x6c: // LIST
        stack.push(popMark());
        break;
      case 0x61: { // APPEND
        const v = pop();
        const l = top();
        if (!Array.isArray(l)) fail(`APPEND to a ${pyTypeName(l)}`);
        (l as PyValue[]).push(v);
        break;
      }
      case 0x65: { // APPENDS
        const items = popMark();
        const l = top();
        if (!Array.isArray(l)) fail(`APPENDS to a ${pyTypeName(l)}`);
        for (const v of items) (l as PyValue[]).push(v);
        break;
      }
      case 0x7d: // EMPTY_DICT
        stack.push(new PyDict(false));
        break;
      case 0x64: { // DICT
        const d = new PyDict(false);
        setItems(d, popMark());
        stack.push(d);
        break;
      }
      case 0x73: { // SETITEM
        const v = pop();
        const k = pop();
        setItems(top(), [k, v]);
        break;
      }
      case 0x75: { // SETITEMS
        const items = popMark();
        if (items.length % 2) fail('SETITEMS with an odd number of items');
        setItems(top(), items);
        break;
      }
      case 0x71: // BINPUT
        put(u8());
        break;
      case 0x72: // LONG_BINPUT
        put(u32());
        break;
      case 0x94: // MEMOIZE
        put(memo.size);
        break;
      case 0x68: // BINGET
        get(u8());
        break;
      case 0x6a: // LONG_BINGET
        get(u32());
        break;
      case 0x63: { // GLOBAL "module\nname\n"
        const module = line();
        global(module, line());
        break;
      }
      case 0x93: { // STACK_GLOBAL
        const name = pop();
        const module = pop();
        if (typeof module !== 'string' || typeof name !== 'string') {
          fail('STACK_GLOBAL needs strings');
        }
        global(module as string, name as string);
        break;
      }
      case 0x52: { // REDUCE
        const args = pop();
        const fn = pop();
        stack.push(reduce(fn, args));
        break;
      }
      case 0x62: { // BUILD: only an OrderedDict's attributes (`state_dict()._metadata`)
        const state = pop();
        const obj = top();
        if (!(obj instanceof PyDict) || !obj.ordered || !(state instanceof PyDict)) {
          fail(`BUILD of a ${pyTypeName(obj)} with a ${pyTypeName(state)} is not supported`);
        }
        (obj as PyDict).attrs = state as PyDict;
        break;
      }
      case 0x51: // BINPERSID
        stack.push(persistent(pop()));
        break;
      default:
        fail(`unsupported opcode 0x${op.toString(16).padStart(2, '0')} ` +
          `(${JSON.stringify(String.fromCharCode(op))})`);
    }
  }
}

function rebuildTensor(a: PyValue[], fail: (p: string) => never): TensorRef {
  if (a.length < 6 || a.length > 7) fail(`_rebuild_tensor_v2 with ${a.length} arguments`);
  const [storage, offset, size, stride, , hooks] = a;
  if (!isStorage(storage)) return fail('_rebuild_tensor_v2 without a storage');
  const ints = (v: PyValue, what: string): number[] => {
    if (!(v instanceof PyTuple)) return fail(`tensor ${what} is a ${pyTypeName(v)}, not a tuple`);
    if (v.items.length > 16) fail(`tensor ${what} has ${v.items.length} dimensions`);
    return v.items.map((x) => {
      if (typeof x !== 'number' || !Number.isInteger(x) || x < 0) fail(`bad tensor ${what} ${x}`);
      return x as number;
    });
  };
  const shape = ints(size, 'shape');
  const strides = ints(stride, 'stride');
  if (shape.length !== strides.length) fail('tensor shape and stride differ in rank');
  if (typeof offset !== 'number' || !Number.isInteger(offset) || offset < 0) {
    fail('bad storage offset');
  }
  if (!(hooks instanceof PyDict) || hooks.map.size) {
    fail('tensors with backward hooks are not supported');
  }
  // The furthest element the view touches must lie inside the storage.
  let numel = 1;
  let last = offset as number;
  for (let i = 0; i < shape.length; i++) {
    numel *= shape[i];
    last += (shape[i] - 1) * strides[i];
  }
  if (!Number.isSafeInteger(numel) || !Number.isSafeInteger(last)) fail('tensor too large');
  if (numel > 0 && last >= storage.numel) {
    fail(`tensor [${shape}] at offset ${offset} does not fit its storage ${storage.key} ` +
      `of ${storage.numel} elements`);
  }
  return { kind: 'tensor', storage, offset: offset as number, shape, stride: strides };
}

/** One tensor for the writer: the storage it lives in (whole, contiguous, offset 0). */
export interface PickleTensor {
  name: string;
  dtype: DType;
  shape: number[];
  storageKey: string;
}

const CLASS_OF: Record<DType, string> = Object.fromEntries(
  Object.entries(STORAGE_DTYPES).map(([k, v]) => [v, k]),
) as Record<DType, string>;

/**
 * Protocol-2 pickle of `{name: tensor}` as an OrderedDict of `_rebuild_tensor_v2` calls with
 * persistent storage ids, optionally wrapped as `{"model": …}`: the form `torch.save(state_dict)`
 * produces and `torch.load(weights_only=True)` accepts.
 */
export function pickleStateDict(tensors: PickleTensor[], wrapModel: boolean): Uint8Array {
  const out: number[] = [];
  const enc = new TextEncoder();
  const memo = new Map<string, number>();
  const byte = (...b: number[]) => out.push(...b);
  const u32 = (v: number) => byte(v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff);
  const memoize = (key: string) => {
    const i = memo.size;
    memo.set(key, i);
    if (i < 256) byte(0x71, i);
    else byte(0x72), u32(i);
  };
  const recall = (key: string): boolean => {
    const i = memo.get(key);
    if (i === undefined) return false;
    if (i < 256) byte(0x68, i);
    else byte(0x6a), u32(i);
    return true;
  };
  const str = (s: string, cache = false) => {
    if (cache && recall(`s:${s}`)) return;
    const b = enc.encode(s);
    byte(0x58);
    u32(b.length);
    for (const x of b) out.push(x);
    if (cache) memoize(`s:${s}`);
  };
  const int = (v: number) => {
    if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`pickle: bad integer ${v}`);
    if (v < 256) byte(0x4b, v);
    else if (v < 65536) byte(0x4d, v & 0xff, v >>> 8);
    else if (v < 2 ** 31) byte(0x4a), u32(v);
    else {
      const b: number[] = [];
      let x = BigInt(v);
      while (x > 0n) {
        b.push(Number(x & 0xffn));
        x >>= 8n;
      }
      if (b[b.length - 1] & 0x80) b.push(0);
      byte(0x8a, b.length, ...b);
    }
  };
  const global = (module: string, name: string) => {
    if (recall(`g:${module}.${name}`)) return;
    byte(0x63);
    for (const x of enc.encode(`${module}\n${name}\n`)) out.push(x);
    memoize(`g:${module}.${name}`);
  };
  const tuple = (v: number[]) => {
    if (v.length === 0) return byte(0x29);
    if (v.length > 3) byte(0x28);
    v.forEach(int);
    byte(v.length === 1 ? 0x85 : v.length === 2 ? 0x86 : v.length === 3 ? 0x87 : 0x74);
  };
  const orderedDict = () => {
    global('collections', 'OrderedDict');
    byte(0x29, 0x52);
  };

  byte(0x80, 2);
  if (wrapModel) {
    byte(0x7d);
    str('model');
  }
  orderedDict();
  for (let i = 0; i < tensors.length; i += 1000) {
    byte(0x28);
    for (const t of tensors.slice(i, i + 1000)) {
      str(t.name);
      global('torch._utils', '_rebuild_tensor_v2');
      byte(0x28, 0x28);
      str('storage', true);
      global('torch', CLASS_OF[t.dtype]);
      str(t.storageKey);
      str('cpu', true);
      int(t.shape.reduce((a, b) => a * b, 1));
      byte(0x74, 0x51);
      int(0);
      tuple(t.shape);
      const stride: number[] = [];
      for (let d = t.shape.length - 1, s = 1; d >= 0; d--) {
        stride.unshift(s);
        s *= t.shape[d];
      }
      tuple(stride);
      byte(0x89);
      orderedDict();
      byte(0x74, 0x52);
    }
    byte(0x75);
  }
  if (wrapModel) byte(0x73);
  byte(0x2e);
  return Uint8Array.from(out);
}
