/**
 * A restricted Python unpickler and a small pickler, for the `data.pkl` of PyTorch checkpoints.
 *
 * The unpickler is a data parser, not an interpreter: it runs the pickle opcodes of protocols 0-5
 * that build plain data (None, bools, ints, floats, strings, bytes, lists, tuples, dicts) and looks
 * up every GLOBAL in a table the caller gives. A global missing from the table is refused with a
 * `PickleError` naming it (code 'global'); nothing is ever imported, called or executed by name.
 * Calls (REDUCE, NEWOBJ) reach only the table's TypeScript functions. Persistent ids (how torch
 * refers to tensor storages) go to the caller's `persistentLoad`.
 *
 * It is iterative (no recursion, so deep nesting cannot overflow the JavaScript stack), takes time
 * linear in the input, checks every length against the bytes that remain before allocating, and
 * bounds integers, the memo and the stack. Errors carry the byte offset and the opcode.
 *
 * Values: None -> null, bool -> boolean, int -> number (bigint beyond 2^53), float -> number,
 * str -> string, bytes -> Uint8Array, list -> array, tuple -> PyTuple, dict -> PyDict.
 */
import { RevgradError } from '../tensor/errors.ts';

export type PickleErrorCode = 'pickle' | 'truncated' | 'global' | 'limit';

export class PickleError extends RevgradError {
  override name = 'PickleError';
  constructor(
    readonly code: PickleErrorCode,
    message: string,
  ) {
    super(message);
  }
}

/** A tuple: of read values, or (for the pickler) of values to write. */
export class PyTuple<T = PyValue> {
  constructor(readonly items: readonly T[]) {}
}

/** Keys Python could hash and we can compare: what checkpoints use (strings, ints). */
export type PyKey = string | number | bigint | boolean | null;

/** A dict or an OrderedDict, in insertion order. */
export class PyDict {
  readonly entries = new Map<PyKey, PyValue>();
  /** Instance attributes set by BUILD (a state_dict's `_metadata`). */
  attributes: PyDict | null = null;
  constructor(readonly className: 'dict' | 'OrderedDict' = 'dict') {}
  get(key: PyKey): PyValue | undefined {
    return this.entries.get(key);
  }
}

/** What a GLOBAL resolved to, from the caller's table. */
export interface PyGlobal {
  readonly module: string;
  readonly qualname: string;
  /** REDUCE / NEWOBJ: build a value from the arguments; absent for globals that are only markers. */
  readonly call?: (args: readonly PyValue[]) => PyValue;
  /** BUILD on a value this global made; absent: BUILD is refused. */
  readonly build?: (target: PyValue, state: PyValue) => void;
}

/** Values the caller's functions create (a tensor reference, a storage type marker, ...). */
export interface PyOpaque {
  readonly pyOpaque: string;
}

export type PyValue = null | boolean | number | bigint | string | Uint8Array | PyValue[] | PyTuple | PyDict | PyGlobal | PyOpaque;

export interface UnpickleOptions {
  /** `module.qualname` -> what it means. Everything else is refused. */
  readonly globals: ReadonlyMap<string, PyGlobal>;
  /** BINPERSID / PERSID; absent: persistent ids are refused. */
  readonly persistentLoad?: (pid: PyValue) => PyValue;
  /** Names the input in messages (e.g. 'model.pyth: data.pkl'). */
  readonly source?: string;
  /** Largest int, in bytes of its two's-complement encoding (default 64). */
  readonly maxIntBytes?: number;
  /** Most live items on the stack plus marks (default 1 million; Python's pickler batches items by 1000). */
  readonly maxStack?: number;
}

/** Longest text argument of the protocol-0 opcodes (ints, floats, names). */
const MAX_LINE = 1 << 16;

const OPNAMES: Record<number, string> = {
  0x28: 'MARK', 0x2e: 'STOP', 0x30: 'POP', 0x31: 'POP_MARK', 0x32: 'DUP', 0x46: 'FLOAT', 0x49: 'INT', 0x4a: 'BININT',
  0x4b: 'BININT1', 0x4c: 'LONG', 0x4d: 'BININT2', 0x4e: 'NONE', 0x50: 'PERSID', 0x51: 'BINPERSID', 0x52: 'REDUCE',
  0x53: 'STRING', 0x54: 'BINSTRING', 0x55: 'SHORT_BINSTRING', 0x56: 'UNICODE', 0x58: 'BINUNICODE', 0x61: 'APPEND',
  0x62: 'BUILD', 0x63: 'GLOBAL', 0x64: 'DICT', 0x7d: 'EMPTY_DICT', 0x65: 'APPENDS', 0x67: 'GET', 0x68: 'BINGET',
  0x69: 'INST', 0x6a: 'LONG_BINGET', 0x6c: 'LIST', 0x5d: 'EMPTY_LIST', 0x6f: 'OBJ', 0x70: 'PUT', 0x71: 'BINPUT',
  0x72: 'LONG_BINPUT', 0x73: 'SETITEM', 0x74: 'TUPLE', 0x29: 'EMPTY_TUPLE', 0x75: 'SETITEMS', 0x47: 'BINFLOAT',
  0x80: 'PROTO', 0x81: 'NEWOBJ', 0x82: 'EXT1', 0x83: 'EXT2', 0x84: 'EXT4', 0x85: 'TUPLE1', 0x86: 'TUPLE2', 0x87: 'TUPLE3',
  0x88: 'NEWTRUE', 0x89: 'NEWFALSE', 0x8a: 'LONG1', 0x8b: 'LONG4', 0x42: 'BINBYTES', 0x43: 'SHORT_BINBYTES',
  0x8c: 'SHORT_BINUNICODE', 0x8d: 'BINUNICODE8', 0x8e: 'BINBYTES8', 0x8f: 'EMPTY_SET', 0x90: 'ADDITEMS', 0x91: 'FROZENSET',
  0x92: 'NEWOBJ_EX', 0x93: 'STACK_GLOBAL', 0x94: 'MEMOIZE', 0x95: 'FRAME', 0x96: 'BYTEARRAY8', 0x97: 'NEXT_BUFFER',
  0x98: 'READONLY_BUFFER',
};

const isKey = (v: PyValue): v is PyKey => v === null || ['string', 'number', 'bigint', 'boolean'].includes(typeof v);

/** A short rendering of a value for messages (bounded in depth and length). */
export function describePy(v: PyValue | undefined, depth = 0): string {
  if (v === undefined) return 'nothing';
  if (v === null) return 'None';
  if (typeof v === 'boolean') return v ? 'True' : 'False';
  if (typeof v === 'number' || typeof v === 'bigint') return String(v);
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? `${v.slice(0, 37)}...` : v);
  if (v instanceof Uint8Array) return `bytes(${v.length})`;
  if (depth > 2) return '...';
  const items = (xs: readonly PyValue[]) => xs.slice(0, 4).map((x) => describePy(x, depth + 1)).join(', ') + (xs.length > 4 ? ', ...' : '');
  if (Array.isArray(v)) return `[${items(v)}]`;
  if (v instanceof PyTuple) return `(${items(v.items)}${v.items.length === 1 ? ',' : ''})`;
  if (v instanceof PyDict) return `${v.className}(${v.entries.size} items)`;
  if ('qualname' in v) return `<${v.module}.${v.qualname}>`;
  return `<${v.pyOpaque}>`;
}

/** Parses a pickle. Throws `PickleError` only (a bug in a caller's function propagates as is). */
export function unpickle(bytes: Uint8Array, options: UnpickleOptions): PyValue {
  const source = options.source ?? 'pickle';
  const maxIntBytes = options.maxIntBytes ?? 64;
  const maxStack = options.maxStack ?? 1_000_000;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const latin1 = new TextDecoder('latin1');
  const utf8 = new TextDecoder('utf-8', { fatal: true });
  let stack: PyValue[] = [];
  const marks: PyValue[][] = [];
  const memo = new Map<number, PyValue>();
  let pos = 0;
  let opAt = 0;
  let op = 0;

  const fail = (code: PickleErrorCode, message: string): never => {
    throw new PickleError(code, `${source}: byte ${opAt}, ${OPNAMES[op] ?? `opcode 0x${op.toString(16)}`}: ${message}`);
  };
  const take = (n: number): Uint8Array => {
    if (n > bytes.length - pos) fail('truncated', `needs ${n} bytes, ${bytes.length - pos} remain`);
    const out = bytes.subarray(pos, pos + n);
    pos += n;
    return out;
  };
  const u8 = () => take(1)[0]!;
  const u16 = () => (take(2), view.getUint16(pos - 2, true));
  const u32 = () => (take(4), view.getUint32(pos - 4, true));
  const u64 = (): number => {
    take(8);
    const n = view.getBigUint64(pos - 8, true);
    // A length beyond what remains is caught by take(); beyond 2^53 it cannot be a length here.
    return n > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(n);
  };
  /** A text line (protocol 0), without its newline; bounded so a missing newline cannot scan far. */
  const line = (): string => {
    const window = bytes.subarray(pos, pos + MAX_LINE + 1);
    const found = window.indexOf(0x0a);
    if (found < 0) fail(window.length > MAX_LINE ? 'limit' : 'truncated', window.length > MAX_LINE ? `a text argument over ${MAX_LINE} bytes` : 'no newline ends the text argument');
    const end = pos + found;
    const text = latin1.decode(bytes.subarray(pos, end));
    pos = end + 1;
    return text;
  };
  const decodeUtf8 = (b: Uint8Array): string => {
    try {
      return utf8.decode(b);
    } catch {
      return fail('pickle', 'a string that is not valid UTF-8');
    }
  };
  const push = (v: PyValue) => {
    if (stack.length + marks.length >= maxStack) fail('limit', `more than ${maxStack} items on the stack`);
    stack.push(v);
  };
  const pop = (): PyValue => {
    if (stack.length === 0) fail('pickle', 'the stack is empty');
    return stack.pop() as PyValue;
  };
  const top = (): PyValue => {
    if (stack.length === 0) fail('pickle', 'the stack is empty');
    return stack[stack.length - 1] as PyValue;
  };
  const popMark = (): PyValue[] => {
    const items = stack as PyValue[];
    if (marks.length === 0) fail('pickle', 'no MARK to pop to');
    stack = marks.pop()!;
    return items;
  };
  const intFromBytes = (b: Uint8Array): number | bigint => {
    if (b.length > maxIntBytes) fail('limit', `an int of ${b.length} bytes (more than ${maxIntBytes})`);
    if (b.length === 0) return 0;
    let n = 0n;
    for (let i = b.length - 1; i >= 0; i--) n = (n << 8n) | BigInt(b[i]!);
    if (b[b.length - 1]! & 0x80) n -= 1n << BigInt(8 * b.length);
    return narrow(n);
  };
  const narrow = (n: bigint): number | bigint => (n >= BigInt(Number.MIN_SAFE_INTEGER) && n <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : n);
  const textInt = (text: string): number | bigint => {
    const t = text.endsWith('L') ? text.slice(0, -1) : text;
    if (!/^[+-]?\d+$/.test(t)) return fail('pickle', `${JSON.stringify(text)} is not an integer`);
    if (t.length > maxIntBytes * 3) fail('limit', `an int of ${t.length} digits`);
    return narrow(BigInt(t));
  };
  const resolve = (module: string, qualname: string): PyGlobal => {
    const found = options.globals.get(`${module}.${qualname}`);
    if (found === undefined) {
      return fail('global', `refused global '${module}.${qualname}': only the types a PyTorch checkpoint is made of are allowed (nothing is imported or run)`);
    }
    return found;
  };
  const callable = (v: PyValue, what: string): PyGlobal & { call: NonNullable<PyGlobal['call']> } => {
    if (v === null || typeof v !== 'object' || !('qualname' in v) || v.call === undefined) {
      return fail('pickle', `${what} of ${describePy(v)}, which is not an allowed callable`);
    }
    return v as PyGlobal & { call: NonNullable<PyGlobal['call']> };
  };
  const argsOf = (v: PyValue): readonly PyValue[] => (v instanceof PyTuple ? v.items : fail('pickle', `arguments must be a tuple, got ${describePy(v)}`));
  const setItems = (target: PyValue, kvs: readonly PyValue[]) => {
    if (!(target instanceof PyDict)) fail('pickle', `cannot set items on ${describePy(target)}`);
    if (kvs.length % 2 !== 0) fail('pickle', 'an odd number of items for key/value pairs');
    for (let i = 0; i < kvs.length; i += 2) {
      const k = kvs[i]!;
      if (!isKey(k)) fail('pickle', `dict key ${describePy(k)} is not a string, number, bool or None`);
      (target as PyDict).entries.set(k as PyKey, kvs[i + 1]!);
    }
  };
  const appendItems = (target: PyValue, items: readonly PyValue[]) => {
    if (!Array.isArray(target)) fail('pickle', `cannot append to ${describePy(target)}`);
    for (const item of items) (target as PyValue[]).push(item);
  };
  const memoGet = (i: number) => {
    const v = memo.get(i);
    if (v === undefined) fail('pickle', `memo ${i} was never stored`);
    return v as PyValue;
  };

  for (;;) {
    opAt = pos;
    if (pos >= bytes.length) {
      op = -1;
      fail('truncated', 'the pickle ends without STOP');
    }
    op = bytes[pos++]!;
    switch (op) {
      case 0x80: {
        const v = u8();
        if (v > 5) fail('pickle', `protocol ${v} is newer than 5`);
        break;
      }
      case 0x95: // FRAME: a length hint only
        u64();
        break;
      case 0x2e:
        return pop();
      case 0x28:
        if (stack.length + marks.length >= maxStack) fail('limit', `more than ${maxStack} items on the stack`);
        marks.push(stack);
        stack = [];
        break;
      case 0x30:
        if (stack.length > 0) stack.pop();
        else popMark();
        break;
      case 0x31:
        popMark();
        break;
      case 0x32:
        push(top());
        break;
      // ints
      case 0x49: {
        const t = line();
        push(t === '00' ? false : t === '01' ? true : textInt(t));
        break;
      }
      case 0x4a:
        take(4);
        push(view.getInt32(pos - 4, true));
        break;
      case 0x4b:
        push(u8());
        break;
      case 0x4d:
        push(u16());
        break;
      case 0x4c:
        push(textInt(line()));
        break;
      case 0x8a:
        push(intFromBytes(take(u8())));
        break;
      case 0x8b: {
        const n = u32();
        if (n > maxIntBytes) fail('limit', `an int of ${n} bytes (more than ${maxIntBytes})`);
        push(intFromBytes(take(n)));
        break;
      }
      // floats
      case 0x46: {
        const t = line().trim();
        const v = Number(t);
        if (t === '' || (Number.isNaN(v) && !/^[+-]?nan$/i.test(t))) fail('pickle', `${JSON.stringify(t)} is not a float`);
        push(v);
        break;
      }
      case 0x47:
        take(8);
        push(view.getFloat64(pos - 8, false));
        break;
      // strings and bytes
      case 0x53: {
        const t = line();
        const q = t[0];
        if (t.length < 2 || (q !== '"' && q !== "'") || t[t.length - 1] !== q) fail('pickle', 'STRING argument is not quoted');
        push(t.slice(1, -1));
        break;
      }
      case 0x54:
        push(latin1.decode(take(u32())));
        break;
      case 0x55:
        push(latin1.decode(take(u8())));
        break;
      case 0x56:
        push(line());
        break;
      case 0x58:
        push(decodeUtf8(take(u32())));
        break;
      case 0x8c:
        push(decodeUtf8(take(u8())));
        break;
      case 0x8d:
        push(decodeUtf8(take(u64())));
        break;
      case 0x42:
        push(take(u32()).slice());
        break;
      case 0x43:
        push(take(u8()).slice());
        break;
      case 0x8e:
      case 0x96:
        push(take(u64()).slice());
        break;
      // constants
      case 0x4e:
        push(null);
        break;
      case 0x88:
        push(true);
        break;
      case 0x89:
        push(false);
        break;
      // tuples
      case 0x29:
        push(new PyTuple([]));
        break;
      case 0x74:
        push(new PyTuple(popMark()));
        break;
      case 0x85:
      case 0x86:
      case 0x87: {
        const n = op - 0x84;
        if (stack.length < n) fail('pickle', `needs ${n} items, the stack has ${stack.length}`);
        push(new PyTuple(stack.splice(stack.length - n, n) as PyValue[]));
        break;
      }
      // lists
      case 0x5d:
        push([]);
        break;
      case 0x6c:
        push(popMark());
        break;
      case 0x61: {
        const v = pop();
        appendItems(top(), [v]);
        break;
      }
      case 0x65: {
        const items = popMark();
        appendItems(top(), items);
        break;
      }
      // dicts
      case 0x7d:
        push(new PyDict());
        break;
      case 0x64: {
        const d = new PyDict();
        setItems(d, popMark());
        push(d);
        break;
      }
      case 0x73: {
        const v = pop();
        const k = pop();
        setItems(top(), [k, v]);
        break;
      }
      case 0x75: {
        const kvs = popMark();
        setItems(top(), kvs);
        break;
      }
      // memo
      case 0x70: {
        const t = line();
        if (!/^\d+$/.test(t)) fail('pickle', `memo index ${JSON.stringify(t)}`);
        memo.set(Number(t), top());
        break;
      }
      case 0x71:
        memo.set(u8(), top());
        break;
      case 0x72:
        memo.set(u32(), top());
        break;
      case 0x94:
        memo.set(memo.size, top());
        break;
      case 0x67: {
        const t = line();
        if (!/^\d+$/.test(t)) fail('pickle', `memo index ${JSON.stringify(t)}`);
        push(memoGet(Number(t)));
        break;
      }
      case 0x68:
        push(memoGet(u8()));
        break;
      case 0x6a:
        push(memoGet(u32()));
        break;
      // globals and calls
      case 0x63: {
        const module = line();
        push(resolve(module, line()));
        break;
      }
      case 0x93: {
        const qualname = pop();
        const module = pop();
        if (typeof module !== 'string' || typeof qualname !== 'string') fail('pickle', 'module and name must be strings');
        push(resolve(module as string, qualname as string));
        break;
      }
      case 0x52: {
        const args = argsOf(pop());
        const f = callable(pop(), 'a call');
        push(f.call(args));
        break;
      }
      case 0x81: {
        const args = argsOf(pop());
        const f = callable(pop(), 'NEWOBJ');
        push(f.call(args));
        break;
      }
      case 0x92: {
        const kwargs = pop();
        const args = argsOf(pop());
        const f = callable(pop(), 'NEWOBJ_EX');
        if (!(kwargs instanceof PyDict) || kwargs.entries.size > 0) fail('pickle', 'keyword arguments are not supported');
        push(f.call(args));
        break;
      }
      case 0x62: {
        const state = pop();
        const target = top();
        const maker = target instanceof PyDict && target.className === 'OrderedDict' ? options.globals.get('collections.OrderedDict') : undefined;
        if (maker?.build === undefined) fail('pickle', `cannot set the state of ${describePy(target)}`);
        maker!.build!(target, state);
        break;
      }
      case 0x51: {
        if (options.persistentLoad === undefined) fail('pickle', 'persistent ids are not allowed here');
        push(options.persistentLoad!(pop()));
        break;
      }
      case 0x50: {
        if (options.persistentLoad === undefined) fail('pickle', 'persistent ids are not allowed here');
        push(options.persistentLoad!(line()));
        break;
      }
      case 0x69:
      case 0x6f:
      case 0x82:
      case 0x83:
      case 0x84:
        fail('global', 'builds objects from classes or the extension registry, which a checkpoint never needs (refused)');
        break;
      case 0x8f:
      case 0x90:
      case 0x91:
      case 0x97:
      case 0x98:
        fail('pickle', 'sets and out-of-band buffers are not part of a checkpoint (refused)');
        break;
      default:
        fail('pickle', `unknown opcode 0x${op.toString(16).padStart(2, '0')}`);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Writing (protocol 2, what torch.save writes)

/** A float written as a float even when it is integral (Python keeps 4 and 4.0 apart). */
export class PyFloat {
  constructor(readonly value: number) {}
}

/** A reference to a global (a class or function), written as GLOBAL. */
export class PyRef {
  constructor(
    readonly module: string,
    readonly qualname: string,
  ) {}
}

/** `callable(*args)`, written as REDUCE. */
export class PyReduce {
  constructor(
    readonly callable: PyRef,
    readonly args: readonly PickleOut[],
  ) {}
}

/** A persistent id (torch: a storage reference), written as BINPERSID. */
export class PyPersistent {
  constructor(readonly pid: PickleOut) {}
}

/** What the pickler writes: numbers are ints when integral (wrap floats in PyFloat), Maps are dicts. */
export type PickleOut =
  | null
  | boolean
  | number
  | bigint
  | string
  | PyFloat
  | readonly PickleOut[]
  | PyTuple<PickleOut>
  | PyRef
  | PyReduce
  | PyPersistent
  | { readonly ordered: boolean; readonly entries: ReadonlyMap<string | number, PickleOut> };

/** Python's pickler writes list and dict items in batches of this many. */
const BATCH = 1000;

/** Pickles with protocol 2 and no memo (every value written once), as Python would without sharing. */
export function pickle(value: PickleOut): Uint8Array {
  const chunks: Uint8Array[] = [];
  const encoder = new TextEncoder();
  const byte = (...bs: number[]) => chunks.push(Uint8Array.from(bs));
  const u32 = (n: number) => {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, n, true);
    chunks.push(b);
  };
  const text = (s: string) => chunks.push(encoder.encode(s));
  const global = (r: PyRef) => {
    byte(0x63);
    text(`${r.module}\n${r.qualname}\n`);
  };
  const int = (n: number | bigint) => {
    if (typeof n === 'number' && n >= 0 && n < 256) byte(0x4b, n);
    else if (typeof n === 'number' && n >= 0 && n < 65536) byte(0x4d, n & 0xff, n >> 8);
    else if (typeof n === 'number' && n >= -(2 ** 31) && n < 2 ** 31) {
      byte(0x4a);
      const b = new Uint8Array(4);
      new DataView(b.buffer).setInt32(0, n, true);
      chunks.push(b);
    } else {
      // LONG1: little-endian two's complement, as short as the sign allows.
      let v = BigInt(n);
      const out: number[] = [];
      for (;;) {
        out.push(Number(v & 0xffn));
        v >>= 8n;
        const sign = out[out.length - 1]! & 0x80;
        if ((v === 0n && !sign) || (v === -1n && sign)) break;
      }
      byte(0x8a, out.length, ...out);
    }
  };
  const tuple = (items: readonly PickleOut[]) => {
    if (items.length === 0) return byte(0x29);
    if (items.length <= 3) {
      items.forEach(write);
      return byte(0x84 + items.length);
    }
    byte(0x28);
    items.forEach(write);
    byte(0x74);
  };
  const batched = <T>(items: readonly T[], one: (x: T) => void, single: number, many: number) => {
    for (let i = 0; i < items.length; i += BATCH) {
      const batch = items.slice(i, i + BATCH);
      if (batch.length === 1) {
        one(batch[0]!);
        byte(single);
      } else {
        byte(0x28);
        batch.forEach(one);
        byte(many);
      }
    }
  };
  function write(v: PickleOut): void {
    if (v === null) byte(0x4e);
    else if (v === true) byte(0x88);
    else if (v === false) byte(0x89);
    else if (typeof v === 'bigint') int(v);
    else if (typeof v === 'number') {
      if (Number.isSafeInteger(v)) int(v);
      else write(new PyFloat(v));
    } else if (typeof v === 'string') {
      const b = encoder.encode(v);
      byte(0x58);
      u32(b.length);
      chunks.push(b);
    } else if (v instanceof PyFloat) {
      const b = new Uint8Array(9);
      b[0] = 0x47;
      new DataView(b.buffer).setFloat64(1, v.value, false);
      chunks.push(b);
    } else if (v instanceof PyTuple) tuple(v.items as readonly PickleOut[]);
    else if (v instanceof PyRef) global(v);
    else if (v instanceof PyReduce) {
      global(v.callable);
      tuple(v.args);
      byte(0x52);
    } else if (v instanceof PyPersistent) {
      write(v.pid);
      byte(0x51);
    } else if (Array.isArray(v)) {
      byte(0x5d);
      batched(v as readonly PickleOut[], write, 0x61, 0x65);
    } else {
      const d = v as { ordered: boolean; entries: ReadonlyMap<string | number, PickleOut> };
      if (d.ordered) {
        global(new PyRef('collections', 'OrderedDict'));
        byte(0x29, 0x52);
      } else byte(0x7d);
      batched([...d.entries], ([k, x]) => (write(k), write(x)), 0x73, 0x75);
    }
  }
  byte(0x80, 2);
  write(value);
  byte(0x2e);
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let p = 0;
  for (const c of chunks) {
    out.set(c, p);
    p += c.length;
  }
  return out;
}
