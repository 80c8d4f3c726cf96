import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Either } from 'fp-ts/lib/Either.js';
import { decodeSafetensors, encodeSafetensors, SafetensorsError, type NamedArray, type SafetensorsFile } from '../src/io/safetensors.ts';
import { readSafetensorsFile, writeSafetensorsFileAtomic } from '../src/io/safetensors-file.ts';

// ---- helpers ------------------------------------------------------------------------------------

/** A file built by hand: 8-byte length, the header text exactly as given, then the data bytes. */
function rawFile(header: string | object, data: Uint8Array = new Uint8Array(0)): Uint8Array {
  const text = new TextEncoder().encode(typeof header === 'string' ? header : JSON.stringify(header));
  const out = new Uint8Array(8 + text.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(text.length), true);
  out.set(text, 8);
  out.set(data, 8 + text.length);
  return out;
}

function u16le(values: number[]): Uint8Array {
  const out = new Uint8Array(values.length * 2);
  values.forEach((v, i) => new DataView(out.buffer).setUint16(2 * i, v, true));
  return out;
}

function f64le(values: number[]): Uint8Array {
  const out = new Uint8Array(values.length * 8);
  values.forEach((v, i) => new DataView(out.buffer).setFloat64(8 * i, v, true));
  return out;
}

function expectRight(result: Either<SafetensorsError, SafetensorsFile>): SafetensorsFile {
  if (result._tag === 'Left') throw new Error(`expected Right, got ${result.left.code}: ${result.left.message}`);
  return result.right;
}

function expectLeft(result: Either<SafetensorsError, SafetensorsFile>, code: SafetensorsError['code']): SafetensorsError {
  if (result._tag === 'Right') throw new Error(`expected Left '${code}', got Right`);
  assert.instance(result.left, SafetensorsError);
  assert.is(result.left.code, code, result.left.message);
  return result.left;
}

function decodedValues(header: object, data: Uint8Array, name = 't'): number[] {
  return Array.from(expectRight(decodeSafetensors(rawFile(header, data))).tensors.get(name)!.data);
}

const f32 = (values: number[]) => new Float32Array(values);

/** One valid tensor of 3 F32 values, for cases that break one thing at a time. */
const threeFloats = new Uint8Array(f32([1, 2, 3]).buffer);

// ---- round trip ---------------------------------------------------------------------------------

test('round trip keeps names in insertion order, shapes, data bits and metadata', () => {
  const tensors = new Map<string, NamedArray>([
    ['head.weight', { shape: [2, 3], data: f32([1, -2, 3.5, 0, -0, 1e-40]) }],
    ['10', { shape: [1], data: f32([NaN]) }],
    ['scalar', { shape: [], data: f32([Infinity]) }],
    ['2', { shape: [0, 4], data: f32([]) }],
    ['émoji 🙂', { shape: [1, 1, 1, 2], data: f32([-Infinity, 7]) }],
  ]);
  const metadata = { fixture: 'round-trip', format: 'pt', '3': 'integer-like key' };
  const file = expectRight(decodeSafetensors(encodeSafetensors(tensors, metadata)));
  assert.equal([...file.tensors.keys()], [...tensors.keys()]);
  for (const [name, { shape, data }] of tensors) {
    const back = file.tensors.get(name)!;
    assert.equal(back.shape, shape, name);
    assert.equal(new Uint32Array(back.data.buffer), new Uint32Array(data.buffer), name);
  }
  assert.equal({ ...file.metadata }, metadata);
  assert.is(Object.getPrototypeOf(file.metadata), null);
});

test('a Record is written in its own key order', () => {
  const file = expectRight(decodeSafetensors(encodeSafetensors({ b: { shape: [1], data: f32([1]) }, a: { shape: [1], data: f32([2]) } })));
  assert.equal([...file.tensors.keys()], ['b', 'a']);
  assert.equal(Object.keys(file.metadata), []);
});

test('writer pads the header with spaces to a multiple of 8 and lays data out contiguously', () => {
  const bytes = encodeSafetensors(new Map([['x', { shape: [3], data: f32([1, 2, 3]) }], ['y', { shape: [1], data: f32([4]) }]]), { k: 'v' });
  const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  assert.is((8 + n) % 8, 0);
  const text = new TextDecoder().decode(bytes.subarray(8, 8 + n));
  assert.ok(text.startsWith('{"__metadata__":{"k":"v"},"x":'), text);
  assert.match(text, /\}\s*$/);
  assert.ok(/^ *$/.test(text.slice(text.lastIndexOf('}') + 1)), 'padding is spaces');
  const header = JSON.parse(text);
  assert.equal(header.x, { dtype: 'F32', shape: [3], data_offsets: [0, 12] });
  assert.equal(header.y, { dtype: 'F32', shape: [1], data_offsets: [12, 16] });
  assert.equal(Array.from(new Float32Array(bytes.slice(8 + n).buffer)), [1, 2, 3, 4]);
});

test('decoded arrays are copies: mutating one leaves the file bytes alone', () => {
  const bytes = encodeSafetensors({ x: { shape: [2], data: f32([1, 2]) } });
  const before = bytes.slice();
  expectRight(decodeSafetensors(bytes)).tensors.get('x')!.data[0] = 99;
  assert.equal(bytes, before);
});

test('F32 data at an unaligned offset inside a larger buffer still decodes', () => {
  const file = encodeSafetensors({ x: { shape: [2], data: f32([1.25, -3]) } });
  const shifted = new Uint8Array(file.length + 3);
  shifted.set(file, 3);
  assert.equal(Array.from(expectRight(decodeSafetensors(shifted.subarray(3))).tensors.get('x')!.data), [1.25, -3]);
});

// ---- dtype conversion ---------------------------------------------------------------------------

test('F16 converts to F32: normals, subnormals, zeros, infinities, NaN', () => {
  const bits = [0x3c00, 0xc000, 0x3555, 0x7bff, 0x0001, 0x03ff, 0x8000, 0x7c00, 0xfc00, 0x7e00];
  const values = decodedValues({ t: { dtype: 'F16', shape: [bits.length], data_offsets: [0, 2 * bits.length] } }, u16le(bits));
  assert.equal(values.slice(0, 9), [
    1, // 0x3C00
    -2, // 0xC000
    0.333251953125, // 0x3555 = (1 + 341/1024) / 4
    65504, // 0x7BFF, the largest half
    2 ** -24, // 0x0001, the smallest subnormal
    1023 * 2 ** -24, // 0x03FF, the largest subnormal
    -0, // 0x8000
    Infinity,
    -Infinity,
  ]);
  assert.ok(Object.is(values[6], -0), 'negative zero keeps its sign');
  assert.ok(Number.isNaN(values[9]));
});

test('BF16 converts to F32 by widening the bits', () => {
  const bits = [0x3f80, 0xc040, 0x4049, 0x7f80, 0x0001, 0x8000];
  const values = decodedValues({ t: { dtype: 'BF16', shape: [2, 3], data_offsets: [0, 12] } }, u16le(bits));
  assert.equal(values, [1, -3, 3.140625, Infinity, 2 ** -133, -0]);
  assert.ok(Object.is(values[5], -0));
});

test('F64 converts to F32 rounding to nearest', () => {
  const values = decodedValues({ t: { dtype: 'F64', shape: [4], data_offsets: [0, 32] } }, f64le([1.5, -0.1, 1e300, 2 ** -149]));
  assert.equal(values, [1.5, Math.fround(-0.1), Infinity, 2 ** -149]);
});

test('mixed dtypes in one file each convert and keep file order', () => {
  const data = new Uint8Array([...u16le([0x3c00]), ...threeFloats.subarray(0, 4), ...f64le([2])]);
  const file = expectRight(
    decodeSafetensors(
      rawFile({
        h: { dtype: 'F16', shape: [], data_offsets: [0, 2] },
        f: { dtype: 'F32', shape: [1], data_offsets: [2, 6] },
        d: { dtype: 'F64', shape: [1, 1], data_offsets: [6, 14] },
      }, data),
    ),
  );
  assert.equal([...file.tensors].map(([name, t]) => [name, t.shape, Array.from(t.data)]), [
    ['h', [], [1]],
    ['f', [1], [1]],
    ['d', [1, 1], [2]],
  ]);
});

// ---- validation errors --------------------------------------------------------------------------

test("'truncated': shorter than 8 bytes, or a header length past the end", () => {
  expectLeft(decodeSafetensors(new Uint8Array(7)), 'truncated');
  const valid = encodeSafetensors({ x: { shape: [3], data: f32([1, 2, 3]) } });
  expectLeft(decodeSafetensors(valid.subarray(0, 20)), 'truncated');
  const huge = valid.slice();
  new DataView(huge.buffer).setBigUint64(0, 2n ** 64n - 1n, true);
  const error = expectLeft(decodeSafetensors(huge, 'big.safetensors'), 'truncated');
  assert.match(error.message, /^big\.safetensors: header length 18446744073709551615 exceeds/);
  assert.is(error.path, 'big.safetensors');
});

test("'header': a header that is not UTF-8", () => {
  const bytes = rawFile('{"__metadata__": {"k": "?"}}');
  bytes[bytes.indexOf('?'.charCodeAt(0))] = 0xff; // a byte that never occurs in UTF-8
  expectLeft(decodeSafetensors(bytes), 'header');
});

test("'json': not JSON, not an object, a byte-order mark, an entry or __metadata__ of the wrong form", () => {
  expectLeft(decodeSafetensors(rawFile('{"a": ')), 'json');
  expectLeft(decodeSafetensors(rawFile('')), 'json');
  expectLeft(decodeSafetensors(rawFile('[]')), 'json');
  expectLeft(decodeSafetensors(rawFile('null')), 'json');
  expectLeft(decodeSafetensors(rawFile('\ufeff{}')), 'json');
  expectLeft(decodeSafetensors(rawFile({ a: 3 })), 'json');
  expectLeft(decodeSafetensors(rawFile({ __metadata__: { k: 1 } })), 'json');
  expectLeft(decodeSafetensors(rawFile({ __metadata__: ['v'] })), 'json');
  expectLeft(decodeSafetensors(rawFile('{"__metadata__": {}, "__metadata__": {}}')), 'json');
});

test('an empty header object is a valid empty file, and null metadata means none', () => {
  assert.is(expectRight(decodeSafetensors(rawFile('{}'))).tensors.size, 0);
  assert.is(expectRight(decodeSafetensors(rawFile('  {}  '))).tensors.size, 0);
  assert.equal(Object.keys(expectRight(decodeSafetensors(rawFile({ __metadata__: null }))).metadata), []);
});

test("'dtype': unsupported or missing dtype names the tensor and the dtype", () => {
  for (const dtype of ['I32', 'I64', 'U8', 'BOOL', 'F8_E4M3']) {
    const error = expectLeft(
      decodeSafetensors(rawFile({ 'layer.idx': { dtype, shape: [3], data_offsets: [0, 12] } }, new Uint8Array(12)), 'm.safetensors'),
      'dtype',
    );
    assert.match(error.message, `m.safetensors: tensor 'layer.idx' has dtype ${dtype}`);
  }
  expectLeft(decodeSafetensors(rawFile({ t: { shape: [3], data_offsets: [0, 12] } }, threeFloats)), 'dtype');
  expectLeft(decodeSafetensors(rawFile({ t: { dtype: 4, shape: [3], data_offsets: [0, 12] } }, threeFloats)), 'dtype');
});

test("'shape': negative, fractional, unsafe or non-array shapes", () => {
  for (const shape of [[-3], [1.5], [2 ** 53], '3', null, [[3]]]) {
    expectLeft(decodeSafetensors(rawFile({ t: { dtype: 'F32', shape, data_offsets: [0, 12] } }, threeFloats)), 'shape');
  }
});

test("'offsets': size disagreeing with shape, with the message the docs promise", () => {
  const error = expectLeft(
    decodeSafetensors(rawFile({ 'head.weight': { dtype: 'F32', shape: [3, 4], data_offsets: [0, 40] } }, new Uint8Array(40)), 'model.safetensors'),
    'offsets',
  );
  assert.is(error.message, "model.safetensors: tensor 'head.weight' has data_offsets [0, 40] (40 bytes) but shape [3, 4] F32 needs 48 bytes");
});

test("'offsets': a shape whose element count passes 2^53 cannot round into agreement", () => {
  const shape = [2 ** 26, 2 ** 26, 2 ** 26]; // 2^78 elements
  expectLeft(decodeSafetensors(rawFile({ t: { dtype: 'F32', shape, data_offsets: [0, 12] } }, threeFloats)), 'offsets');
});

test("'offsets': malformed, reversed, past the end, overlapping, gaps and trailing bytes", () => {
  const entry = (data_offsets: unknown, shape = [3]) => ({ dtype: 'F32', shape, data_offsets });
  const cases: [string, object, Uint8Array][] = [
    ['three numbers', { t: entry([0, 12, 12]) }, threeFloats],
    ['negative', { t: entry([-12, 0]) }, threeFloats],
    ['fractional', { t: entry([0, 11.5]) }, threeFloats],
    ['strings', { t: entry(['0', '12']) }, threeFloats],
    ['begin after end', { t: entry([12, 0]) }, threeFloats],
    ['past the data section', { t: entry([0, 12]) }, threeFloats.subarray(0, 8)],
    ['overlap', { a: entry([0, 8], [2]), b: entry([4, 12], [2]) }, threeFloats],
    ['empty tensor inside another', { a: entry([0, 12]), b: entry([4, 4], [0]) }, threeFloats],
    ['gap', { a: entry([0, 4], [1]), b: entry([8, 12], [1]) }, threeFloats],
    ['trailing bytes', { a: entry([0, 8], [2]) }, threeFloats],
    ['no tensors but data', {}, threeFloats],
  ];
  for (const [label, header, data] of cases) {
    const result = decodeSafetensors(rawFile(header, data));
    assert.is(result._tag === 'Left' && result.left.code, 'offsets', label);
  }
  const overlap = expectLeft(decodeSafetensors(rawFile(cases[6]![1], threeFloats)), 'offsets');
  assert.match(overlap.message, "tensor 'b' data_offsets [4, 12] overlap tensor 'a' [0, 8]");
  assert.match(expectLeft(decodeSafetensors(rawFile(cases[9]![1], threeFloats)), 'offsets').message, 'bytes [8, 12)');
});

test('tensors listed out of offset order are fine as long as they tile the data section', () => {
  const header = { late: { dtype: 'F32', shape: [1], data_offsets: [8, 12] }, early: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } };
  const file = expectRight(decodeSafetensors(rawFile(header, threeFloats)));
  assert.equal([...file.tensors.keys()], ['late', 'early']);
  assert.equal(Array.from(file.tensors.get('late')!.data), [3]);
});

test("'name': reserved, empty and repeated names are refused without touching prototypes", () => {
  const one = { dtype: 'F32', shape: [3], data_offsets: [0, 12] };
  for (const name of ['__proto__', 'constructor', 'prototype', '']) {
    const header = `{${JSON.stringify(name)}: ${JSON.stringify(one)}}`;
    expectLeft(decodeSafetensors(rawFile(header, threeFloats)), 'name');
  }
  const repeated = `{"t": ${JSON.stringify(one)}, "t": ${JSON.stringify(one)}}`;
  assert.match(expectLeft(decodeSafetensors(rawFile(repeated, threeFloats)), 'name').message, "'t' more than once");
  assert.is(({} as Record<string, unknown>)['dtype'], undefined);
});

test('a __proto__ metadata key stays an ordinary key of a null-prototype object', () => {
  const file = expectRight(decodeSafetensors(rawFile('{"__metadata__": {"__proto__": "x", "polluted": "y"}}')));
  assert.is(Object.getPrototypeOf(file.metadata), null);
  assert.is(file.metadata['__proto__'], 'x');
  assert.is(({} as Record<string, unknown>)['polluted'], undefined);
});

test("'io': reading a missing file names the path", () => {
  const error = expectLeft(readSafetensorsFile('/nonexistent/dir/w.safetensors'), 'io');
  assert.is(error.path, '/nonexistent/dir/w.safetensors');
  assert.match(error.message, '/nonexistent/dir/w.safetensors');
});

test('writer refuses bad names, shapes that disagree with data, and non-string metadata', () => {
  const code = (fn: () => unknown): string | undefined => {
    try {
      fn();
    } catch (error) {
      return error instanceof SafetensorsError ? error.code : `not a SafetensorsError: ${String(error)}`;
    }
    return undefined;
  };
  const x = { shape: [2], data: f32([1, 2]) };
  assert.is(code(() => encodeSafetensors({ x }, { step: 3 as unknown as string })), 'json');
  assert.is(code(() => encodeSafetensors({ x }, { big: 3n as unknown as string })), 'json');
  assert.is(code(() => encodeSafetensors({ x: { shape: [3], data: f32([1, 2]) } })), 'shape');
  assert.is(code(() => encodeSafetensors({ x: { shape: [-2], data: f32([1, 2]) } })), 'shape');
  assert.is(code(() => encodeSafetensors(new Map([['__proto__', x]]))), 'name');
  assert.is(code(() => encodeSafetensors(new Map([['__metadata__', x]]))), 'name');
  assert.is(code(() => encodeSafetensors(new Map([['', x]]))), 'name');
  assert.is(code(() => encodeSafetensors({ x: { shape: [2], data: [1, 2] as unknown as Float32Array } })), 'dtype');
});

// ---- atomic write -------------------------------------------------------------------------------

function scratchDirectory(): string {
  return mkdtempSync(join(tmpdir(), 'revgrad-safetensors-'));
}

test('atomic write creates and then replaces a file, leaving no temporary files', () => {
  const dir = scratchDirectory();
  try {
    const path = join(dir, 'w.safetensors');
    writeSafetensorsFileAtomic(path, { a: { shape: [1], data: f32([1]) } }, { version: '1' });
    writeSafetensorsFileAtomic(path, { b: { shape: [2], data: f32([2, 3]) } }, { version: '2' });
    const file = expectRight(readSafetensorsFile(path));
    assert.equal([...file.tensors.keys()], ['b']);
    assert.is(file.metadata['version'], '2');
    assert.equal(readdirSync(dir), ['w.safetensors']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('atomic write: when encoding throws the old file survives untouched', () => {
  const dir = scratchDirectory();
  try {
    const path = join(dir, 'w.safetensors');
    writeSafetensorsFileAtomic(path, { a: { shape: [1], data: f32([1]) } });
    const before = readFileSync(path);
    assert.throws(
      () => writeSafetensorsFileAtomic(path, { a: { shape: [1], data: f32([9]) } }, { epoch: 2 as unknown as string }),
      (error: unknown) => error instanceof SafetensorsError && error.code === 'json',
    );
    assert.equal(readFileSync(path), before);
    assert.equal(readdirSync(dir), ['w.safetensors']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('atomic write: a failed rename (target is a directory) throws io and removes the temporary file', () => {
  const dir = scratchDirectory();
  try {
    const target = join(dir, 'taken.safetensors');
    mkdirSync(target);
    writeFileSync(join(target, 'keep'), 'occupied');
    assert.throws(
      () => writeSafetensorsFileAtomic(target, { a: { shape: [1], data: f32([1]) } }),
      (error: unknown) => error instanceof SafetensorsError && error.code === 'io' && error.path === target,
    );
    assert.equal(readdirSync(dir), ['taken.safetensors']);
    assert.equal(readdirSync(target), ['keep']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('atomic write into a missing directory throws io', () => {
  assert.throws(
    () => writeSafetensorsFileAtomic('/nonexistent/dir/w.safetensors', { a: { shape: [1], data: f32([1]) } }),
    (error: unknown) => error instanceof SafetensorsError && error.code === 'io',
  );
});

// ---- golden fixtures written by PyTorch ---------------------------------------------------------

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const fixtureDirectory = [join(repoRoot, 'test', 'fixtures'), join(repoRoot, '..', 'shared', 'fixtures')].find(
  (dir) => existsSync(dir) && readdirSync(dir).some((name) => name.endsWith('.safetensors')),
);

if (fixtureDirectory === undefined) {
  console.log('safetensors: no fixtures in test/fixtures or ../shared/fixtures; skipping the golden-file cases');
} else {
  for (const name of readdirSync(fixtureDirectory).filter((n) => n.endsWith('.safetensors')).sort()) {
    const path = join(fixtureDirectory, name);
    test(`fixture ${name}: every tensor decodes, metadata and input are as documented`, () => {
      const file = expectRight(readSafetensorsFile(path));
      assert.ok(file.tensors.size > 0);
      for (const [tensorName, { shape, data }] of file.tensors) {
        assert.is(data.length, shape.reduce((a, b) => a * b, 1), tensorName);
      }
      assert.is(file.metadata['fixture'], basename(name, '.safetensors'));
      assert.is(file.tensors.get('input')?.shape[0], 2);
    });
    test(`fixture ${name}: re-encoding reproduces the PyTorch-written bytes exactly`, () => {
      const original = readFileSync(path);
      const file = expectRight(decodeSafetensors(original, name));
      assert.ok(Buffer.from(encodeSafetensors(file.tensors, file.metadata)).equals(original));
    });
  }
}

test.run();
