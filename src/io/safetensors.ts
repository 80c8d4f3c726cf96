/**
 * safetensors reader and writer on plain arrays (this module knows nothing of the tensor layer).
 *
 * Format (https://github.com/huggingface/safetensors): an 8-byte little-endian u64 header length N,
 * N bytes of UTF-8 JSON `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {k: v}}`,
 * then the data section; `data_offsets` count from the start of the data section.
 *
 * Reading returns every tensor as float32: F32 is copied as is (into a fresh, aligned buffer), while
 * F64, F16 and BF16 are CONVERTED to F32 on load (F16 and BF16 exactly, F64 rounded to nearest).
 * Any other dtype (I32, I64, U8, BOOL, ...) is refused. The reader checks everything the reference
 * implementation checks and never throws; error codes:
 * - `truncated`: fewer than 8 bytes, or a header length that runs past the end of the file;
 * - `header`: a header over the reference's 100 MB limit, or one that is not UTF-8;
 * - `json`: not JSON, nested deeper than 64 levels or listing more than 200,000 entries (both refused
 *   by a scan before parsing: the reference has no such limits, but deep nesting overflowed the stack
 *   of every recursive walk and 1.6 M empty tensors took 9 s and 2 GB), not an object, an entry that
 *   is not an object, `__metadata__` not a string map;
 * - `dtype`: a dtype that is not a string or not one of F32, F64, F16, BF16;
 * - `shape`: a shape that is not an array of non-negative safe integers;
 * - `offsets`: `data_offsets` malformed, outside the data section, of a size that disagrees with
 *   shape and dtype, overlapping, or leaving bytes of the data section that belong to no tensor;
 * - `name`: an empty, reserved (`__proto__`, `constructor`, `prototype`) or repeated tensor name;
 * - `io`: the file system failed.
 *
 * Writing always stores F32, in insertion order with contiguous offsets, `__metadata__` first, and
 * the header padded with spaces so that 8 + N is a multiple of 8, as the reference writer does.
 */
import { chain, isLeft, left, map, right, type Either } from 'fp-ts/lib/Either.js';
import { pipe } from 'fp-ts/lib/function.js';
import { RevgradError } from '../tensor/errors.ts';
import { describeValue, parseJson } from './json.ts';

export interface NamedArray {
  readonly shape: readonly number[];
  readonly data: Float32Array;
}

export interface SafetensorsFile {
  /** In the order the header lists them. */
  readonly tensors: Map<string, NamedArray>;
  /** A null-prototype object, so no key can reach Object.prototype. */
  readonly metadata: Record<string, string>;
}

type SafetensorsErrorCode =
  | 'truncated'
  | 'header'
  | 'json'
  | 'dtype'
  | 'offsets'
  | 'shape'
  | 'name'
  | 'io';

export class SafetensorsError extends RevgradError {
  override readonly name = 'SafetensorsError';
  readonly code: SafetensorsErrorCode;
  /** The file (or the `source` given to `decodeSafetensors`) the error is about. */
  readonly path?: string;

  constructor(code: SafetensorsErrorCode, message: string, path?: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
    if (path !== undefined) this.path = path;
  }
}

export type TensorInput = Map<string, NamedArray> | Record<string, NamedArray>;

const LENGTH_PREFIX_BYTES = 8;
/** The reference implementation refuses headers above this size; so do we. */
const MAX_HEADER_BYTES = 100_000_000;
const METADATA_KEY = '__metadata__';
/** The most header entries (tensors, and `__metadata__`) a file may list; see the module comment. */
export const MAX_TENSORS = 200_000;
/** A valid header nests 3 levels ({name: {shape: [...]}}); anything past this is refused before parsing. */
const MAX_HEADER_DEPTH = 64;
/** Names that would alias Object.prototype members if anyone put tensors in a plain object. */
const RESERVED_NAMES: ReadonlySet<string> = new Set(['__proto__', 'constructor', 'prototype']);

type LoadableDtype = 'F32' | 'F64' | 'F16' | 'BF16';
const DTYPE_BYTES: ReadonlyMap<string, number> = new Map<LoadableDtype, number>([
  ['F32', 4],
  ['F64', 8],
  ['F16', 2],
  ['BF16', 2],
]);

const HOST_IS_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

interface TensorEntry {
  readonly name: string;
  readonly dtype: LoadableDtype;
  readonly shape: readonly number[];
  readonly begin: number;
  readonly end: number;
}

interface ValidHeader {
  readonly entries: readonly TensorEntry[];
  readonly metadata: Record<string, string>;
}

/** Makes an error whose message starts with the file it concerns. */
type Fail = (code: SafetensorsErrorCode, detail: string) => SafetensorsError;

const failFor =
  (source: string | undefined): Fail =>
  (code, detail) =>
    new SafetensorsError(code, `${source ?? 'safetensors'}: ${detail}`, source);

// ---------------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------------

/**
 * Parses and validates a safetensors file held in memory. Never throws: every problem comes back
 * as a `SafetensorsError` whose message names `source`, the tensor and the offending values.
 */
export function decodeSafetensors(bytes: Uint8Array, source?: string): Either<SafetensorsError, SafetensorsFile> {
  const fail = failFor(source);
  return pipe(
    headerLength(bytes, fail),
    chain((length) => {
      const data = bytes.subarray(LENGTH_PREFIX_BYTES + length);
      return pipe(
        headerText(bytes.subarray(LENGTH_PREFIX_BYTES, LENGTH_PREFIX_BYTES + length), fail),
        chain((text) => parseHeaderObject(text, fail)),
        chain(({ root, keys }) => validateHeader(root, keys, data.length, fail)),
        map(({ entries, metadata }) => ({ tensors: readTensors(entries, data), metadata })),
      );
    }),
  );
}


/** The u64 header length, checked against the bytes present before anything is sized by it. */
function headerLength(bytes: Uint8Array, fail: Fail): Either<SafetensorsError, number> {
  if (bytes.length < LENGTH_PREFIX_BYTES) {
    return left(fail('truncated', `file is ${bytes.length} bytes, too short for the 8-byte header length`));
  }
  // BigInt because a u64 can exceed 2^53, where a Number would silently round.
  const declared = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getBigUint64(0, true);
  const available = bytes.length - LENGTH_PREFIX_BYTES;
  if (declared > BigInt(available)) {
    return left(fail('truncated', `header length ${declared} exceeds the ${available} bytes that follow it`));
  }
  const length = Number(declared);
  if (length > MAX_HEADER_BYTES) {
    return left(fail('header', `header length ${length} exceeds the limit of ${MAX_HEADER_BYTES} bytes`));
  }
  return right(length);
}

function headerText(headerBytes: Uint8Array, fail: Fail): Either<SafetensorsError, string> {
  try {
    // ignoreBOM keeps a byte-order mark in the text, so JSON.parse refuses it like the reference does.
    return right(new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(headerBytes));
  } catch {
    return left(fail('header', `header (${headerBytes.length} bytes) is not valid UTF-8`));
  }
}

interface ParsedHeader {
  readonly root: Record<string, unknown>;
  /** Top-level keys in file order, repeats included. */
  readonly keys: readonly string[];
}

function parseHeaderObject(text: string, fail: Fail): Either<SafetensorsError, ParsedHeader> {
  const parsed = parseJson(text, 'header', { maxDepth: MAX_HEADER_DEPTH, maxEntries: MAX_TENSORS });
  if (isLeft(parsed)) {
    const e = parsed.left;
    const detail =
      e.code === 'depth'
        ? `header nests more than ${MAX_HEADER_DEPTH} levels deep (a valid one nests 3); refused before parsing`
        : e.code === 'entries'
          ? `header lists more than ${MAX_TENSORS} tensors (entries), the most this reader accepts; refused before parsing`
          : `header is not valid JSON: ${e.reason}`;
    return left(fail('json', detail));
  }
  const root = parsed.right;
  if (!isJsonObject(root)) {
    return left(fail('json', `header must be a JSON object, got ${describe(root)}`));
  }
  return right({ root, keys: topLevelKeys(text) });
}

/**
 * The keys of a valid JSON object text in the order they are written. JSON.parse cannot tell us:
 * objects list integer-like keys ("0", "12") first, and it keeps only the last of repeated keys.
 */
function topLevelKeys(text: string): string[] {
  const keys: string[] = [];
  let depth = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      const close = closingQuote(text, i);
      if (depth === 1 && text[nextNonSpace(text, close + 1)] === ':') {
        keys.push(JSON.parse(text.slice(i, close + 1)) as string);
      }
      i = close;
    } else if (c === '{' || c === '[') {
      depth++;
    } else if (c === '}' || c === ']') {
      depth--;
    }
  }
  return keys;
}

function closingQuote(text: string, open: number): number {
  let i = open + 1;
  while (text[i] !== '"') i += text[i] === '\\' ? 2 : 1;
  return i;
}

function nextNonSpace(text: string, from: number): number {
  let i = from;
  while (i < text.length && (text[i] === ' ' || text[i] === '\t' || text[i] === '\n' || text[i] === '\r')) i++;
  return i;
}

function validateHeader(
  root: Record<string, unknown>,
  keys: readonly string[],
  dataLength: number,
  fail: Fail,
): Either<SafetensorsError, ValidHeader> {
  const seen = new Set<string>();
  const entries: TensorEntry[] = [];
  let metadata: Record<string, string> = Object.create(null);
  for (const key of keys) {
    if (seen.has(key)) {
      return left(fail(key === METADATA_KEY ? 'json' : 'name', `header lists '${key}' more than once`));
    }
    seen.add(key);
    const value = Object.getOwnPropertyDescriptor(root, key)?.value;
    if (key === METADATA_KEY) {
      const checked = validateMetadata(value, fail);
      if (isLeft(checked)) return checked;
      metadata = checked.right;
    } else {
      const checked = validateEntry(key, value, dataLength, fail);
      if (isLeft(checked)) return checked;
      entries.push(checked.right);
    }
  }
  return pipe(
    checkLayout(entries, dataLength, fail),
    map(() => ({ entries, metadata })),
  );
}

function validateMetadata(value: unknown, fail: Fail): Either<SafetensorsError, Record<string, string>> {
  const metadata: Record<string, string> = Object.create(null);
  if (value === null) return right(metadata); // the reference reads `null` as "no metadata"
  if (!isJsonObject(value)) {
    return left(fail('json', `__metadata__ must be an object of strings, got ${describe(value)}`));
  }
  for (const [key, entry] of Object.entries(value)) {
    if (typeof entry !== 'string') {
      return left(fail('json', `__metadata__ '${key}' must be a string, got ${describe(entry)}`));
    }
    metadata[key] = entry;
  }
  return right(metadata);
}

function validateEntry(name: string, value: unknown, dataLength: number, fail: Fail): Either<SafetensorsError, TensorEntry> {
  if (name === '') return left(fail('name', 'a tensor has an empty name'));
  if (RESERVED_NAMES.has(name)) {
    return left(fail('name', `tensor name '${name}' is reserved (it collides with Object.prototype)`));
  }
  if (!isJsonObject(value)) {
    return left(fail('json', `tensor '${name}' must be an object with dtype, shape and data_offsets, got ${describe(value)}`));
  }
  const { dtype, shape, data_offsets: offsets } = value;
  if (typeof dtype !== 'string') {
    return left(fail('dtype', `tensor '${name}' has dtype ${describe(dtype)}, expected a string`));
  }
  const dtypeBytes = DTYPE_BYTES.get(dtype);
  if (dtypeBytes === undefined) {
    return left(fail('dtype', `tensor '${name}' has dtype ${dtype}; only ${[...DTYPE_BYTES.keys()].join(', ')} can be loaded as float32`));
  }
  if (!Array.isArray(shape) || !shape.every(isNonNegativeSafeInteger)) {
    return left(fail('shape', `tensor '${name}' has shape ${describe(shape)}, expected an array of non-negative integers`));
  }
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isNonNegativeSafeInteger)) {
    return left(fail('offsets', `tensor '${name}' has data_offsets ${describe(offsets)}, expected [begin, end] of non-negative integers`));
  }
  const [begin, end] = offsets as [number, number];
  if (begin > end) {
    return left(fail('offsets', `tensor '${name}' has data_offsets [${begin}, ${end}] with begin after end`));
  }
  if (end > dataLength) {
    return left(fail('offsets', `tensor '${name}' has data_offsets [${begin}, ${end}] past the end of the ${dataLength}-byte data section`));
  }
  const needed = elementCount(shape) * BigInt(dtypeBytes);
  if (needed !== BigInt(end - begin)) {
    return left(
      fail(
        'offsets',
        `tensor '${name}' has data_offsets [${begin}, ${end}] (${end - begin} bytes) but shape ${formatShape(shape)} ${dtype} needs ${needed} bytes`,
      ),
    );
  }
  return right({ name, dtype: dtype as LoadableDtype, shape, begin, end });
}

/** Tensors must tile the data section exactly: no overlaps, no gaps, no trailing bytes. */
function checkLayout(entries: readonly TensorEntry[], dataLength: number, fail: Fail): Either<SafetensorsError, void> {
  const byOffset = [...entries].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let covered = 0;
  let previous: TensorEntry | undefined;
  for (const entry of byOffset) {
    if (entry.begin < covered && previous) {
      return left(
        fail(
          'offsets',
          `tensor '${entry.name}' data_offsets [${entry.begin}, ${entry.end}] overlap tensor '${previous.name}' [${previous.begin}, ${previous.end}]`,
        ),
      );
    }
    if (entry.begin > covered) {
      return left(fail('offsets', `bytes [${covered}, ${entry.begin}) of the data section belong to no tensor`));
    }
    covered = entry.end;
    previous = entry;
  }
  if (covered < dataLength) {
    return left(fail('offsets', `bytes [${covered}, ${dataLength}) at the end of the data section belong to no tensor`));
  }
  return right(undefined);
}

function readTensors(entries: readonly TensorEntry[], data: Uint8Array): Map<string, NamedArray> {
  const tensors = new Map<string, NamedArray>();
  for (const { name, dtype, shape, begin, end } of entries) {
    tensors.set(name, { shape: [...shape], data: toFloat32(dtype, data.subarray(begin, end)) });
  }
  return tensors;
}

function toFloat32(dtype: LoadableDtype, bytes: Uint8Array): Float32Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  switch (dtype) {
    case 'F32':
      return copyFloat32(bytes);
    case 'F64':
      return Float32Array.from({ length: bytes.length / 8 }, (_, i) => view.getFloat64(8 * i, true));
    case 'F16':
      return Float32Array.from({ length: bytes.length / 2 }, (_, i) => float16ToNumber(view.getUint16(2 * i, true)));
    case 'BF16':
      return bfloat16ToFloat32(view);
  }
}

/** Copies rather than views: the source offset need not be 4-aligned, and callers may mutate. */
function copyFloat32(bytes: Uint8Array): Float32Array {
  const out = new Float32Array(bytes.length / 4);
  if (HOST_IS_LITTLE_ENDIAN) {
    new Uint8Array(out.buffer).set(bytes);
  } else {
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    for (let i = 0; i < out.length; i++) out[i] = view.getFloat32(4 * i, true);
  }
  return out;
}

/** IEEE 754 half precision: 1 sign bit, 5 exponent bits (bias 15), 10 fraction bits. */
function float16ToNumber(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 10) & 0x1f;
  const fraction = bits & 0x3ff;
  if (exponent === 0) return sign * fraction * 2 ** -24; // zero and subnormals
  if (exponent === 0x1f) return fraction === 0 ? sign * Infinity : NaN;
  return sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
}

/** bfloat16 is the top half of a float32, so widening is a shift that keeps every bit (NaNs too). */
function bfloat16ToFloat32(view: DataView): Float32Array {
  const words = new Uint32Array(view.byteLength / 2);
  for (let i = 0; i < words.length; i++) words[i] = view.getUint16(2 * i, true) << 16;
  return new Float32Array(words.buffer);
}

// ---------------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------------

/**
 * Serialises tensors as F32 in insertion order (a Record's order is JavaScript's: integer-like keys
 * first). Throws a `SafetensorsError` for a bad name, a shape that disagrees with the data, or a
 * metadata value that is not a string.
 */
export function encodeSafetensors(tensors: TensorInput, metadata: Record<string, string> = {}): Uint8Array {
  const named = tensors instanceof Map ? [...tensors] : Object.entries(tensors);
  const fields: string[] = [];
  const metadataEntries = checkedMetadataEntries(metadata);
  if (metadataEntries.length > 0) {
    const body = metadataEntries.map(([key, value]) => `${JSON.stringify(key)}:${JSON.stringify(value)}`).join(',');
    fields.push(`${JSON.stringify(METADATA_KEY)}:{${body}}`);
  }
  let dataLength = 0;
  for (const [name, tensor] of named) {
    checkTensorForWriting(name, tensor);
    const begin = dataLength;
    dataLength += tensor.data.byteLength;
    const info = { dtype: 'F32', shape: [...tensor.shape], data_offsets: [begin, dataLength] };
    // Written by hand rather than JSON.stringify(object), which would move integer-like names first.
    fields.push(`${JSON.stringify(name)}:${JSON.stringify(info)}`);
  }
  const header = new TextEncoder().encode(`{${fields.join(',')}}`);
  const paddedLength = Math.ceil(header.length / 8) * 8;
  const out = new Uint8Array(LENGTH_PREFIX_BYTES + paddedLength + dataLength);
  new DataView(out.buffer).setBigUint64(0, BigInt(paddedLength), true);
  out.set(header, LENGTH_PREFIX_BYTES);
  out.fill(0x20, LENGTH_PREFIX_BYTES + header.length, LENGTH_PREFIX_BYTES + paddedLength);
  let offset = LENGTH_PREFIX_BYTES + paddedLength;
  for (const [, tensor] of named) {
    writeFloat32LittleEndian(out, offset, tensor.data);
    offset += tensor.data.byteLength;
  }
  return out;
}

function checkedMetadataEntries(metadata: Record<string, string>): [string, string][] {
  const entries = Object.entries(metadata as Record<string, unknown>);
  for (const [key, value] of entries) {
    if (typeof value !== 'string') {
      throw new SafetensorsError('json', `safetensors: metadata '${key}' must be a string, got ${describe(value)} (${typeof value})`);
    }
  }
  return entries as [string, string][];
}

function checkTensorForWriting(name: string, tensor: NamedArray): void {
  if (name === '' || name === METADATA_KEY || RESERVED_NAMES.has(name)) {
    throw new SafetensorsError('name', `safetensors: cannot write a tensor named '${name}' (empty or reserved)`);
  }
  if (!(tensor.data instanceof Float32Array)) {
    throw new SafetensorsError('dtype', `safetensors: tensor '${name}' data must be a Float32Array`);
  }
  if (!Array.isArray(tensor.shape) || !tensor.shape.every(isNonNegativeSafeInteger)) {
    throw new SafetensorsError('shape', `safetensors: tensor '${name}' has shape ${describe(tensor.shape)}, expected non-negative integers`);
  }
  if (elementCount(tensor.shape) !== BigInt(tensor.data.length)) {
    throw new SafetensorsError(
      'shape',
      `safetensors: tensor '${name}' has shape ${formatShape(tensor.shape)} (${elementCount(tensor.shape)} elements) but ${tensor.data.length} values`,
    );
  }
}

function writeFloat32LittleEndian(out: Uint8Array, offset: number, data: Float32Array): void {
  if (HOST_IS_LITTLE_ENDIAN) {
    out.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), offset);
  } else {
    const view = new DataView(out.buffer, out.byteOffset + offset, data.byteLength);
    for (let i = 0; i < data.length; i++) view.setFloat32(4 * i, data[i]!, true);
  }
}


// ---------------------------------------------------------------------------------------------
// Small shared helpers
// ---------------------------------------------------------------------------------------------

function isJsonObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isNonNegativeSafeInteger(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

/** Exact even when the product passes 2^53, so a hostile shape cannot round into agreement. */
function elementCount(shape: readonly number[]): bigint {
  return shape.reduce((count, dim) => count * BigInt(dim), 1n);
}

function formatShape(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

/** A short rendering of a value for messages (bounded: safe on deep, cyclic or bigint values). */
const describe = (value: unknown): string => describeValue(value, 80);

export function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
