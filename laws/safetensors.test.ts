import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fc from 'fast-check';
import { assertProperty } from './helpers.ts';
import { decodeSafetensors, encodeSafetensors, type NamedArray, type SafetensorsFile } from '../src/io/safetensors.ts';

// Sized so the whole file runs in a few seconds.
const RUNS = { numRuns: 200 };

/** Letters, digits and separators: digits make integer-like names ("0", "12") that plain objects reorder. */
const nameArb = fc
  .string({ unit: fc.constantFrom(...'abcxyz0129._-'), minLength: 1, maxLength: 8 })
  .filter((name) => name !== 'constructor' && name !== 'prototype');

/** Any 32-bit pattern, so NaN payloads, -0 and subnormals are all exercised. */
const tensorArb: fc.Arbitrary<NamedArray> = fc
  .array(fc.integer({ min: 0, max: 4 }), { maxLength: 4 })
  .chain((shape) => {
    const count = shape.reduce((a, b) => a * b, 1);
    return fc
      .array(fc.integer({ min: 0, max: 0xffffffff }), { minLength: count, maxLength: count })
      .map((bits) => ({ shape, data: new Float32Array(new Uint32Array(bits).buffer) }));
  });

const tensorMapArb = fc
  .uniqueArray(fc.tuple(nameArb, tensorArb), { selector: ([name]) => name, maxLength: 6 })
  .map((entries) => new Map(entries));

const metadataArb = fc
  .array(fc.tuple(fc.string({ maxLength: 6 }), fc.string({ maxLength: 12 })), { maxLength: 4 })
  .map((pairs) => Object.fromEntries(pairs) as Record<string, string>);

const validFileArb = fc.tuple(tensorMapArb, metadataArb).map(([tensors, metadata]) => encodeSafetensors(tensors, metadata));

function bitsOf(data: Float32Array): number[] {
  return Array.from(new Uint32Array(data.buffer, data.byteOffset, data.length));
}

/** Either side is fine; but a Right must be self-consistent. */
function isWellFormedResult(result: ReturnType<typeof decodeSafetensors>): boolean {
  if (result._tag === 'Left') return typeof result.left.code === 'string' && result.left.message.length > 0;
  return [...result.right.tensors.values()].every(({ shape, data }) => data.length === shape.reduce((a, b) => a * b, 1));
}

function decodeNeverThrows(bytes: Uint8Array): ReturnType<typeof decodeSafetensors> {
  try {
    return decodeSafetensors(bytes);
  } catch (error) {
    throw new Error(`decodeSafetensors threw instead of returning Left: ${String(error)}`);
  }
}

test('decode(encode(x)) equals x bit for bit, in insertion order, metadata included', () => {
  assertProperty(
    fc.property(tensorMapArb, metadataArb, (tensors, metadata) => {
      const result = decodeSafetensors(encodeSafetensors(tensors, metadata));
      if (result._tag === 'Left') throw result.left;
      const file: SafetensorsFile = result.right;
      assert.equal([...file.tensors.keys()], [...tensors.keys()]);
      for (const [name, tensor] of tensors) {
        const back = file.tensors.get(name)!;
        assert.equal(back.shape, [...tensor.shape]);
        assert.equal(bitsOf(back.data), bitsOf(tensor.data));
      }
      assert.equal(Object.entries(file.metadata), Object.entries(metadata));
    }),
    RUNS,
  );
});

test('any byte array decodes to Left or Right and never throws', () => {
  assertProperty(
    fc.property(fc.uint8Array({ maxLength: 2000 }), (bytes) => isWellFormedResult(decodeNeverThrows(bytes))),
    { numRuns: 500 },
  );
});

test('random bytes behind a plausible header length never throw either', () => {
  // A length prefix that fits makes the random bytes reach the UTF-8 and JSON stages.
  assertProperty(
    fc.property(fc.uint8Array({ maxLength: 400 }), fc.nat(), (body, seed) => {
      const bytes = new Uint8Array(8 + body.length);
      new DataView(bytes.buffer).setBigUint64(0, BigInt(body.length === 0 ? 0 : seed % (body.length + 1)), true);
      bytes.set(body, 8);
      return isWellFormedResult(decodeNeverThrows(bytes));
    }),
    { numRuns: 500 },
  );
});

test('a valid file cut short at any position is a Left', () => {
  assertProperty(
    fc.property(
      validFileArb.chain((bytes) => fc.tuple(fc.constant(bytes), fc.nat({ max: bytes.length - 1 }))),
      ([bytes, cut]) => decodeNeverThrows(bytes.subarray(0, cut))._tag === 'Left',
    ),
    RUNS,
  );
});

test("a header length beyond the file (up to 2^64 - 1) is 'truncated' or 'header'", () => {
  assertProperty(
    fc.property(
      validFileArb.chain((bytes) =>
        fc.tuple(fc.constant(bytes), fc.bigInt({ min: BigInt(bytes.length - 7), max: 2n ** 64n - 1n })),
      ),
      ([valid, declared]) => {
        const bytes = valid.slice();
        new DataView(bytes.buffer).setBigUint64(0, declared, true);
        const result = decodeNeverThrows(bytes);
        return result._tag === 'Left' && (result.left.code === 'truncated' || result.left.code === 'header');
      },
    ),
    RUNS,
  );
});

test('flipping bytes inside the JSON header never throws', () => {
  const flipsArb = fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })), { minLength: 1, maxLength: 6 });
  assertProperty(
    fc.property(validFileArb, flipsArb, (valid, flips) => {
      const bytes = valid.slice();
      const headerLength = Number(new DataView(bytes.buffer).getBigUint64(0, true));
      for (const [position, mask] of flips) bytes[8 + (position % headerLength)]! ^= mask;
      return isWellFormedResult(decodeNeverThrows(bytes));
    }),
    { numRuns: 500 },
  );
});

test('flipping bytes to JSON punctuation inside the header never throws', () => {
  // XOR masks rarely yield a still-valid JSON; swapping in structural characters reaches the validators.
  const punctuation = fc.constantFrom(...'{}[]":,0123456789-. ').map((c) => c.charCodeAt(0));
  assertProperty(
    fc.property(validFileArb, fc.array(fc.tuple(fc.nat(), punctuation), { minLength: 1, maxLength: 3 }), (valid, edits) => {
      const bytes = valid.slice();
      const headerLength = Number(new DataView(bytes.buffer).getBigUint64(0, true));
      for (const [position, byte] of edits) bytes[8 + (position % headerLength)] = byte;
      return isWellFormedResult(decodeNeverThrows(bytes));
    }),
    { numRuns: 500 },
  );
});

test.run();
