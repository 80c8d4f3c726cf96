/**
 * PyTorch checkpoints (`torch.save` since 1.6, PySlowFast's `.pyth`), read and written without Python.
 *
 * Format: a zip archive `<name>/data.pkl` (the pickled object), `<name>/data/<key>` (one record per
 * tensor storage, raw little-endian elements), `<name>/version` and, since torch 2.1, `<name>/byteorder`.
 * Tensors appear in the pickle as `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`
 * where `storage` is a persistent id `('storage', torch.FloatStorage, key, location, numel)`.
 *
 * Reading is restricted (src/io/pickle.ts): the only globals are OrderedDict, the tensor and parameter
 * rebuild functions and the storage types; anything else is refused by name, nothing is executed.
 * Every storage's record size is checked against its element count, every view (offset, size, stride)
 * against its storage, before any data is touched; data is read lazily, CRC-checked, when a tensor is
 * converted. Conversion to float32: float32 as is, float16/bfloat16 exactly, float64 rounded to nearest,
 * int64 only when every value is exactly a float32; other dtypes are refused naming the tensor.
 * The legacy formats (torch < 1.6) are recognised and refused with what to do.
 *
 * Writing produces what `torch.save` does (pickle protocol 2, aligned stored zip entries, version 3),
 * every tensor float32 with its own storage; torch.load with and without weights_only reads it.
 */
import * as E from 'fp-ts/lib/Either.js';
import { RevgradError } from '../tensor/errors.ts';
import { sizeOf, stridesOf } from '../tensor/shape.ts';
import {
  describePy,
  pickle,
  PickleError,
  PyDict,
  PyPersistent,
  PyReduce,
  PyRef,
  PyTuple,
  unpickle,
  type PickleOut,
  type PyGlobal,
  type PyOpaque,
  type PyValue,
} from './pickle.ts';
import type { NamedArray } from './safetensors.ts';
import { openZip, writeZip, ZipError, type ZipArchive } from './zip.ts';

export type PythErrorCode =
  | 'io'
  | 'legacy'
  | 'zip'
  | 'truncated'
  | 'crc'
  | 'pickle'
  | 'global'
  | 'limit'
  | 'storage'
  | 'dtype'
  | 'layout';

export class PythError extends RevgradError {
  override name = 'PythError';
  constructor(
    readonly code: PythErrorCode,
    message: string,
    readonly path?: string,
  ) {
    super(message);
  }
}

export type TorchDtype =
  | 'float64' | 'float32' | 'float16' | 'bfloat16' | 'int64' | 'int32' | 'int16' | 'int8' | 'uint8' | 'bool' | 'complex64' | 'complex128';

/** torch.<Name>Storage -> element type and size: the storage types torch.save writes. */
const STORAGE_TYPES: Readonly<Record<string, readonly [TorchDtype, number]>> = {
  DoubleStorage: ['float64', 8],
  FloatStorage: ['float32', 4],
  HalfStorage: ['float16', 2],
  BFloat16Storage: ['bfloat16', 2],
  LongStorage: ['int64', 8],
  IntStorage: ['int32', 4],
  ShortStorage: ['int16', 2],
  CharStorage: ['int8', 1],
  ByteStorage: ['uint8', 1],
  BoolStorage: ['bool', 1],
  ComplexFloatStorage: ['complex64', 8],
  ComplexDoubleStorage: ['complex128', 16],
};

/** The dtypes that convert to float32. */
const CONVERTIBLE: readonly TorchDtype[] = ['float32', 'float16', 'bfloat16', 'float64', 'int64'];

/** One tensor has at most this many elements (one Float32Array in every engine). */
const MAX_ELEMENTS = 2 ** 31 - 1;

interface StorageType extends PyGlobal {
  readonly dtype: TorchDtype;
  readonly itemsize: number;
}

/** A storage record of the archive, checked to hold exactly `numel` elements. */
export class TorchStorage implements PyOpaque {
  readonly pyOpaque = 'storage';
  constructor(
    readonly key: string,
    readonly dtype: TorchDtype,
    readonly itemsize: number,
    readonly numel: number,
    readonly record: string,
  ) {}
}

/** A tensor as the checkpoint describes it: a strided view of a storage, not yet read. */
export class TorchTensor implements PyOpaque {
  readonly pyOpaque = 'tensor';
  constructor(
    readonly storage: TorchStorage,
    readonly offset: number,
    readonly shape: readonly number[],
    readonly stride: readonly number[],
    readonly requiresGrad: boolean,
  ) {}
  get dtype(): TorchDtype {
    return this.storage.dtype;
  }
}

export interface PythFile {
  readonly source: string;
  /** What was saved (PySlowFast: a dict with epoch, model_state, optimizer_state, cfg). */
  readonly root: PyValue;
  /** The archive's format version (torch writes 3). */
  readonly version: number;
  readonly byteorder: 'little' | 'big';
  readonly archive: ZipArchive;
}

// ---------------------------------------------------------------------------------------------
// Reading

const isTuple = (v: PyValue): v is PyTuple => v instanceof PyTuple;
const isNatural = (v: PyValue): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

/** Names the legacy formats; null when the bytes start like a zip. */
function legacyFormat(bytes: Uint8Array): string | null {
  if (bytes.length >= 4 && bytes[0] === 0x50 && bytes[1] === 0x4b && bytes[2] === 0x03 && bytes[3] === 0x04) return null;
  const tar = bytes.length > 262 && new TextDecoder('latin1').decode(bytes.subarray(257, 262)) === 'ustar';
  if (tar) return 'the tar format of torch < 0.4';
  if (bytes.length >= 2 && bytes[0] === 0x80 && bytes[1] <= 5) return 'the legacy (non-zip) format of torch < 1.6, or a plain pickle';
  return '';
}

const fromZipError = (e: ZipError, path: string): PythError => new PythError(e.code, e.message, path);

function readText(archive: ZipArchive, name: string): string {
  return new TextDecoder('utf-8').decode(archive.read(name)).trim();
}

/**
 * Parses a checkpoint held in memory. Returns a Left with a `PythError` for every problem: not a
 * zip, a legacy file, a corrupt archive, a refused global, a storage or view that does not fit.
 */
export function decodePyth(bytes: Uint8Array, source = 'checkpoint'): E.Either<PythError, PythFile> {
  try {
    return E.right(decodeOrThrow(bytes, source));
  } catch (e) {
    if (e instanceof PythError) return E.left(e);
    if (e instanceof ZipError) return E.left(fromZipError(e, source));
    if (e instanceof PickleError) return E.left(new PythError(e.code, e.message, source));
    throw e;
  }
}

function decodeOrThrow(bytes: Uint8Array, source: string): PythFile {
  const fail = (code: PythErrorCode, message: string): never => {
    throw new PythError(code, `${source}: ${message}`, source);
  };
  const legacy = legacyFormat(bytes);
  if (legacy !== null) {
    if (legacy === '') fail(bytes.length < 4 ? 'truncated' : 'zip', 'not a PyTorch checkpoint (no zip signature; torch.save writes a zip archive since 1.6)');
    fail('legacy', `${legacy}: it cannot be read without running Python's unpickler. Load it in PyTorch and save it again (torch.save(torch.load(f), g) writes the zip format)`);
  }
  const archive = openZip(bytes, source);
  const pickles = [...archive.entries.keys()].filter((n) => /^[^/]+\/data\.pkl$/.test(n));
  if (pickles.length !== 1) {
    fail('layout', pickles.length === 0 ? 'no <name>/data.pkl in the archive: not a torch.save checkpoint' : `several pickles (${pickles.join(', ')})`);
  }
  const prefix = pickles[0]!.slice(0, -'data.pkl'.length);
  const versionRecord = [`${prefix}version`, `${prefix}.data/version`].find((n) => archive.entries.has(n));
  if (versionRecord === undefined) fail('layout', `no ${prefix}version record`);
  const versionText = readText(archive, versionRecord!);
  if (!/^\d{1,6}$/.test(versionText) || Number(versionText) < 1) fail('layout', `${versionRecord} holds ${JSON.stringify(versionText.slice(0, 20))}, expected a format version number`);
  let byteorder: 'little' | 'big' = 'little';
  if (archive.entries.has(`${prefix}byteorder`)) {
    const text = readText(archive, `${prefix}byteorder`);
    if (text !== 'little' && text !== 'big') fail('layout', `${prefix}byteorder holds ${JSON.stringify(text.slice(0, 20))}, expected "little" or "big"`);
    byteorder = text as 'little' | 'big';
  }
  const storages = new Map<string, TorchStorage>();
  const persistentLoad = (pid: PyValue): PyValue => {
    if (!isTuple(pid) || pid.items.length !== 5 || pid.items[0] !== 'storage') {
      return fail('pickle', `persistent id ${describePy(pid)} is not ('storage', type, key, location, numel)`);
    }
    const [, type, key, location, numel] = pid.items;
    if (type === null || typeof type !== 'object' || !('dtype' in type)) return fail('pickle', `storage type ${describePy(type)} is not a torch storage type`);
    if (typeof key !== 'string' || !/^[\w.-]{1,64}$/.test(key)) return fail('storage', `storage key ${describePy(key)} is not a plain name`);
    if (typeof location !== 'string') return fail('storage', `storage ${key}: location ${describePy(location)} is not a string`);
    if (!isNatural(numel)) return fail('storage', `storage ${key}: element count ${describePy(numel)}`);
    const { dtype, itemsize } = type as StorageType;
    const seen = storages.get(key);
    if (seen !== undefined) {
      if (seen.dtype !== dtype || seen.numel !== numel) fail('storage', `storage ${key} is used as ${seen.numel} ${seen.dtype} and as ${numel} ${dtype}`);
      return seen;
    }
    const record = `${prefix}data/${key}`;
    const entry = archive.entries.get(record);
    if (entry === undefined) return fail('storage', `storage ${key} has no record ${record}`);
    if (entry.size !== numel * itemsize) {
      fail('storage', `record ${record} holds ${entry.size} bytes, but storage ${key} is ${numel} ${dtype} elements (${numel * itemsize} bytes)`);
    }
    const storage = new TorchStorage(key, dtype, itemsize, numel, record);
    storages.set(key, storage);
    return storage;
  };
  const root = unpickle(archive.read(pickles[0]!), { globals: torchGlobals(fail), persistentLoad, source: `${source}: ${pickles[0]}` });
  return { source, root, version: Number(versionText), byteorder, archive };
}

/** The globals a checkpoint may name, and what they build. */
function torchGlobals(fail: (code: PythErrorCode, message: string) => never): ReadonlyMap<string, PyGlobal> {
  const table = new Map<string, PyGlobal>();
  table.set('collections.OrderedDict', {
    module: 'collections',
    qualname: 'OrderedDict',
    call: (args) => (args.length === 0 ? new PyDict('OrderedDict') : fail('pickle', `OrderedDict called with ${args.length} arguments (torch pickles it empty, then sets items)`)),
    build: (target, state) => {
      if (state !== null && !(state instanceof PyDict)) fail('pickle', `OrderedDict state ${describePy(state)} is not a dict`);
      (target as PyDict).attributes = state as PyDict | null;
    },
  });
  const rebuild = (args: readonly PyValue[], what: string): TorchTensor => {
    const [storage, offset, size, stride, requiresGrad] = args;
    if (!(storage instanceof TorchStorage)) return fail('pickle', `${what}: ${describePy(storage)} is not a storage`);
    if (!isNatural(offset ?? null)) return fail('storage', `${what}: storage offset ${describePy(offset)}`);
    if (!isTuple(size ?? null) || !(size as PyTuple).items.every(isNatural)) return fail('storage', `${what}: size ${describePy(size)} is not a tuple of non-negative ints`);
    if (!isTuple(stride ?? null) || !(stride as PyTuple).items.every(isNatural)) return fail('storage', `${what}: stride ${describePy(stride)} is not a tuple of non-negative ints`);
    const shape = (size as PyTuple).items as number[];
    const strides = (stride as PyTuple).items as number[];
    if (shape.length !== strides.length) fail('storage', `${what}: size ${describePy(size)} and stride ${describePy(stride)} differ in length`);
    const count = shape.reduce((n, d) => n * BigInt(d), 1n);
    if (count > BigInt(MAX_ELEMENTS)) fail('limit', `${what}: ${count} elements, over the limit of ${MAX_ELEMENTS}`);
    if (count > 0n) {
      const last = shape.reduce((n, d, i) => n + BigInt(d - 1) * BigInt(strides[i]!), BigInt(offset as number));
      if (last >= BigInt(storage.numel)) {
        fail('storage', `${what}: view (offset ${offset}, size ${describePy(size)}, stride ${describePy(stride)}) reaches element ${last} of a ${storage.numel}-element storage`);
      }
    }
    return new TorchTensor(storage, offset as number, shape, strides, requiresGrad === true);
  };
  table.set('torch._utils._rebuild_tensor_v2', {
    module: 'torch._utils',
    qualname: '_rebuild_tensor_v2',
    call: (args) => (args.length === 6 || args.length === 7 ? rebuild(args, '_rebuild_tensor_v2') : fail('pickle', `_rebuild_tensor_v2 takes 6 or 7 arguments, got ${args.length}`)),
  });
  table.set('torch._utils._rebuild_tensor', {
    module: 'torch._utils',
    qualname: '_rebuild_tensor',
    call: (args) => (args.length === 4 ? rebuild([...args, false], '_rebuild_tensor') : fail('pickle', `_rebuild_tensor takes 4 arguments, got ${args.length}`)),
  });
  for (const name of ['_rebuild_parameter', '_rebuild_parameter_with_state']) {
    table.set(`torch._utils.${name}`, {
      module: 'torch._utils',
      qualname: name,
      call: (args) => (args[0] instanceof TorchTensor ? args[0] : fail('pickle', `${name}: ${describePy(args[0])} is not a tensor`)),
    });
  }
  for (const [qualname, [dtype, itemsize]] of Object.entries(STORAGE_TYPES)) {
    table.set(`torch.${qualname}`, { module: 'torch', qualname, dtype, itemsize } as StorageType);
  }
  return table;
}


/** A tensor's values as float32, in row-major order (the view gathered, the dtype converted). */
export function tensorToFloat32(file: PythFile, t: TorchTensor, name: string): E.Either<PythError, Float32Array> {
  const fail = (code: PythErrorCode, message: string) => E.left(new PythError(code, `${file.source}: tensor '${name}' ${message}`, file.source));
  if (!CONVERTIBLE.includes(t.dtype)) {
    return fail('dtype', `is ${t.dtype}; only ${CONVERTIBLE.join(', ')} convert to float32`);
  }
  let raw: Uint8Array;
  try {
    raw = file.archive.read(t.storage.record);
  } catch (e) {
    if (e instanceof ZipError) return E.left(fromZipError(e, file.source));
    throw e;
  }
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const little = file.byteorder === 'little';
  const size = t.storage.itemsize;
  const count = sizeOf(t.shape);
  const out = new Float32Array(count);
  let inexact: bigint | null = null;
  const load: (i: number) => number = (() => {
    switch (t.dtype) {
      case 'float32':
        return (i) => view.getFloat32(i * 4, little);
      case 'float64':
        return (i) => view.getFloat64(i * 8, little);
      case 'float16':
        return (i) => float16ToNumber(view.getUint16(i * 2, little));
      case 'bfloat16':
        return (i) => bfloat16ToNumber(view.getUint16(i * 2, little));
      default: // int64
        return (i) => {
          const v = view.getBigInt64(i * 8, little);
          const n = Number(v);
          if (BigInt(n) !== v || Math.fround(n) !== n) inexact ??= v;
          return n;
        };
    }
  })();
  if (isContiguous(t.shape, t.stride) && t.dtype === 'float32' && little) {
    new Uint8Array(out.buffer).set(raw.subarray(t.offset * size, (t.offset + count) * size));
  } else {
    // Walk the view with an odometer over the shape (any rank, any strides, no recursion).
    const rank = t.shape.length;
    const index = new Array<number>(rank).fill(0);
    let source = t.offset;
    for (let k = 0; k < count; k++) {
      out[k] = load(source);
      for (let d = rank - 1; d >= 0; d--) {
        index[d]!++;
        source += t.stride[d]!;
        if (index[d]! < t.shape[d]!) break;
        source -= t.stride[d]! * t.shape[d]!;
        index[d] = 0;
      }
    }
  }
  if (inexact !== null) return fail('dtype', `is int64 and holds ${inexact}, which float32 cannot represent exactly`);
  return E.right(out);
}

function isContiguous(shape: readonly number[], stride: readonly number[]): boolean {
  let expected = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    if (shape[d] !== 1 && stride[d] !== expected) return false;
    expected *= shape[d]!;
  }
  return true;
}

function float16ToNumber(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 10) & 0x1f;
  const fraction = bits & 0x3ff;
  if (exponent === 0) return sign * fraction * 2 ** -24;
  if (exponent === 0x1f) return fraction === 0 ? sign * Infinity : NaN;
  return sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
}

const BF16_SCRATCH = new DataView(new ArrayBuffer(4));
function bfloat16ToNumber(bits: number): number {
  BF16_SCRATCH.setUint32(0, bits << 16);
  return BF16_SCRATCH.getFloat32(0);
}

/** The key PySlowFast saves the weights under. */
const MODEL_STATE_KEY = 'model_state';

/**
 * The weights of a checkpoint as float32 arrays by state_dict name, in the file's order: the dict
 * under `key` (default 'model_state', PySlowFast's), or the whole object when it is itself a dict of
 * tensors (torch.save(model.state_dict(), f)). Anything else is a 'layout' error naming the keys found.
 */
export function stateDictOf(file: PythFile, key?: string): E.Either<PythError, Map<string, NamedArray>> {
  const fail = (code: PythErrorCode, message: string) => E.left(new PythError(code, `${file.source}: ${message}`, file.source));
  const root = file.root;
  if (!(root instanceof PyDict)) return fail('layout', `holds ${describePy(root)}, not a dict of weights or a checkpoint dict`);
  const topKeys = () => [...root.entries.keys()].map((k) => describePy(k)).join(', ') || 'none';
  let dict: PyDict;
  let where: string;
  const chosen = key ?? (root.entries.has(MODEL_STATE_KEY) ? MODEL_STATE_KEY : undefined);
  if (chosen !== undefined) {
    const value = root.get(chosen);
    if (value === undefined) return fail('layout', `has no '${chosen}'; its top-level keys: ${topKeys()}`);
    if (!(value instanceof PyDict)) return fail('layout', `'${chosen}' is ${describePy(value)}, not a dict of tensors`);
    dict = value;
    where = `'${chosen}'`;
  } else if (root.entries.size > 0 && [...root.entries.values()].every((v) => v instanceof TorchTensor)) {
    dict = root;
    where = 'the state dict';
  } else {
    return fail('layout', `has no '${MODEL_STATE_KEY}' (PySlowFast's key for the weights) and is not a dict of tensors; its top-level keys: ${topKeys()} (choose one with the key option)`);
  }
  const out = new Map<string, NamedArray>();
  for (const [name, value] of dict.entries) {
    if (typeof name !== 'string') return fail('layout', `${where} has the key ${describePy(name)}, not a parameter name`);
    if (!(value instanceof TorchTensor)) return fail('layout', `${where} entry '${name}' is ${describePy(value)}, not a tensor`);
    const data = tensorToFloat32(file, value, name);
    if (E.isLeft(data)) return data;
    out.set(name, { shape: [...value.shape], data: data.right });
  }
  return E.right(out);
}

// ---------------------------------------------------------------------------------------------
// Writing

/** What `encodePyth` writes: pickle values, with float32 arrays (NamedArray) as tensors. */
export type PythOut =
  | Exclude<PickleOut, readonly PickleOut[] | { readonly ordered: boolean }>
  | NamedArray
  | readonly PythOut[]
  | PythDict;

export interface PythDict {
  readonly ordered: boolean;
  readonly entries: ReadonlyMap<string | number, PythOut>;
}

/** A dict (or with `ordered`, an OrderedDict, as state_dicts are) for `encodePyth`. */
export const pyDict = (entries: Iterable<readonly [string | number, PythOut]>, ordered = false): PythDict => ({ ordered, entries: new Map(entries) });

const isNamedArray = (v: unknown): v is NamedArray =>
  typeof v === 'object' && v !== null && (v as NamedArray).data instanceof Float32Array && Array.isArray((v as NamedArray).shape);

const REBUILD = new PyRef('torch._utils', '_rebuild_tensor_v2');
const FLOAT_STORAGE = new PyRef('torch', 'FloatStorage');
const EMPTY_ORDERED: PickleOut = { ordered: true, entries: new Map() };

/**
 * Serialises `value` as torch.save does (archive name 'archive', as torch uses for buffers). Every
 * NamedArray becomes a float32 tensor with its own storage. Throws a PythError for an array whose
 * shape disagrees with its data, or an archive over 4 GiB.
 */
export function encodePyth(value: PythOut): Uint8Array {
  const records: [string, Uint8Array][] = [];
  const toPickle = (v: PythOut): PickleOut => {
    if (isNamedArray(v)) {
      const count = sizeOf(v.shape);
      if (!v.shape.every((d) => Number.isSafeInteger(d) && d >= 0) || count !== v.data.length) {
        throw new PythError('storage', `pyth: an array of shape [${v.shape.join(', ')}] has ${v.data.length} values`);
      }
      const key = String(records.length);
      records.push([`archive/data/${key}`, littleEndianBytes(v.data)]);
      const stride = stridesOf(v.shape);
      return new PyReduce(REBUILD, [
        new PyPersistent(new PyTuple<PickleOut>(['storage', FLOAT_STORAGE, key, 'cpu', v.data.length])),
        0,
        new PyTuple(v.shape),
        new PyTuple(stride),
        false,
        EMPTY_ORDERED,
      ]);
    }
    if (Array.isArray(v)) return (v as readonly PythOut[]).map(toPickle);
    if (typeof v === 'object' && v !== null && 'entries' in v && 'ordered' in v) {
      return { ordered: v.ordered, entries: new Map([...v.entries].map(([k, x]) => [k, toPickle(x)])) };
    }
    return v as PickleOut;
  };
  const pkl = pickle(toPickle(value));
  const text = (s: string) => new TextEncoder().encode(s);
  // The order torch 2.x writes: the pickle, the byte order, the storages, the version.
  return writeZip([['archive/data.pkl', pkl], ['archive/byteorder', text('little')], ...records, ['archive/version', text('3\n')]]);
}

const HOST_IS_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** The float32 values as little-endian bytes: a view of the array itself on little-endian hosts (writeZip copies it). */
function littleEndianBytes(data: Float32Array): Uint8Array {
  if (HOST_IS_LITTLE_ENDIAN) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  const out = new Uint8Array(data.length * 4);
  const view = new DataView(out.buffer);
  for (let i = 0; i < data.length; i++) view.setFloat32(i * 4, data[i]!, true);
  return out;
}

