/**
 * The .pyth reader under hostile input: whatever the bytes, it returns a Right or a typed Left
 * (PythError with a code), never throws, never hangs, never allocates from an unchecked size.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fc from 'fast-check';
import * as E from 'fp-ts/lib/Either.js';
import { pickle, PyReduce, PyRef } from '../src/io/pickle.ts';
import { decodePyth, encodePyth, pyDict, PythError, stateDictOf } from '../src/io/pyth.ts';
import type { NamedArray } from '../src/io/safetensors.ts';
import { writeZip } from '../src/io/zip.ts';

const CODES = new Set(['io', 'legacy', 'zip', 'truncated', 'crc', 'pickle', 'global', 'limit', 'storage', 'dtype', 'layout']);

/** Decode and, when that succeeds, convert the weights: both stages must come back typed. */
function readAll(bytes: Uint8Array): E.Either<PythError, unknown> {
  let result: E.Either<PythError, unknown>;
  try {
    const file = decodePyth(bytes, 'fuzz.pyth');
    result = E.isLeft(file) ? file : stateDictOf(file.right);
  } catch (error) {
    throw new Error(`the reader threw instead of returning Left: ${String(error)}`);
  }
  if (E.isLeft(result)) {
    assert.instance(result.left, PythError);
    assert.ok(CODES.has(result.left.code), `unknown code ${result.left.code}`);
    assert.ok(result.left.message.startsWith('fuzz.pyth'), result.left.message);
  }
  return result;
}

const tensorArb: fc.Arbitrary<NamedArray> = fc
  .array(fc.integer({ min: 0, max: 3 }), { maxLength: 3 })
  .chain((shape) => {
    const n = shape.reduce((a, b) => a * b, 1);
    return fc.float32Array({ minLength: n, maxLength: n }).map((data) => ({ shape, data }));
  });
const checkpointArb = fc
  .uniqueArray(fc.tuple(fc.string({ unit: fc.constantFrom(...'abc.0129'), minLength: 1, maxLength: 6 }), tensorArb), { selector: ([n]) => n, maxLength: 4 })
  .map((entries) => encodePyth(pyDict([['epoch', 3], ['model_state', pyDict(entries, true)], ['cfg', 'x: 1']])));

test('any bytes: a typed Left (or a Right), never a throw', () => {
  fc.assert(fc.property(fc.uint8Array({ maxLength: 600 }), (bytes) => void readAll(bytes)), { numRuns: 400 });
});

test('a valid checkpoint cut short anywhere is a Left', () => {
  fc.assert(
    fc.property(checkpointArb.chain((b) => fc.tuple(fc.constant(b), fc.nat({ max: b.length - 1 }))), ([bytes, cut]) => {
      assert.ok(E.isLeft(readAll(bytes.subarray(0, cut))));
    }),
    { numRuns: 150 },
  );
});

test('flipped bytes anywhere in a valid checkpoint: typed, and a Right only if every tensor survived intact', () => {
  fc.assert(
    fc.property(checkpointArb, fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })), { minLength: 1, maxLength: 4 }), (valid, flips) => {
      const bytes = valid.slice();
      for (const [at, mask] of flips) bytes[at % bytes.length]! ^= mask;
      readAll(bytes);
    }),
    { numRuns: 300 },
  );
});

// Hostile pickles inside a well-formed archive.
const zipOf = (pkl: Uint8Array) => writeZip([['a/data.pkl', pkl], ['a/version', new TextEncoder().encode('3\n')]]);
const raw = (...parts: (number | string | Uint8Array)[]) => {
  const chunks = parts.map((p) => (typeof p === 'number' ? Uint8Array.of(p) : typeof p === 'string' ? new TextEncoder().encode(p) : p));
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  chunks.reduce((at, c) => (out.set(c, at), at + c.length), 0);
  return out;
};
const u32 = (n: number) => new Uint8Array(new Uint32Array([n]).buffer);
const u64 = (n: bigint) => new Uint8Array(new BigUint64Array([n]).buffer);
const codeOf = (pkl: Uint8Array, records: [string, Uint8Array][] = []) => {
  const r = readAll(records.length === 0 ? zipOf(pkl) : writeZip([['a/data.pkl', pkl], ...records, ['a/version', new TextEncoder().encode('3\n')]]));
  return E.isLeft(r) ? r.left : null;
};

test('random opcode soup inside a valid archive: typed, bounded', () => {
  // Bytes drawn mostly from real opcodes, so the stack machine is exercised rather than rejected at once.
  const opcodes = [...'()]}acdeghjlpqrstuKJMNQRbX\x80\x85\x86\x87\x88\x89\x8a\x8c\x93\x94\x95'].map((c) => c.charCodeAt(0));
  const byteArb = fc.oneof(fc.constantFrom(...opcodes), fc.integer({ min: 0, max: 255 }));
  fc.assert(
    fc.property(fc.array(byteArb, { maxLength: 300 }), (body) => {
      codeOf(raw(0x80, 2, Uint8Array.from(body), 0x2e));
    }),
    { numRuns: 400 },
  );
});

test('any global outside the checkpoint vocabulary is refused by name, never resolved', () => {
  const nameArb = fc.string({ unit: fc.constantFrom(...'abcxyz_.'), minLength: 1, maxLength: 12 }).filter((s) => !s.includes('\n'));
  fc.assert(
    fc.property(nameArb, nameArb, (module, name) => {
      fc.pre(!['collections.OrderedDict', 'torch._utils._rebuild_tensor_v2'].includes(`${module}.${name}`));
      const error = codeOf(pickle(new PyReduce(new PyRef(module, name), [])));
      assert.ok(error !== null);
      if (!/Storage$/.test(name) && !name.startsWith('_rebuild')) {
        assert.is(error!.code, 'global');
        assert.ok(error!.message.includes(`'${module}.${name}'`), error!.message);
      }
    }),
    { numRuns: 200 },
  );
  for (const [module, name] of [['os', 'system'], ['builtins', 'exec'], ['subprocess', 'Popen'], ['numpy.core.multiarray', 'scalar'], ['torch', 'load']]) {
    const error = codeOf(raw(0x80, 2, 'c', `${module}\n${name}\n`, ')', 'R', '.'));
    assert.is(error?.code, 'global');
    assert.match(error!.message, new RegExp(`refused global '${module.replace(/\./g, '\\.')}\\.${name}'`));
  }
});

test('huge declared sizes are refused before anything is allocated', () => {
  assert.is(codeOf(raw(0x80, 2, 'X', u32(0xffffffff), 'abc'))?.code, 'truncated'); // BINUNICODE of 4 GiB
  assert.is(codeOf(raw(0x80, 2, 0x8e, u64(2n ** 63n), 'x'))?.code, 'truncated'); // BINBYTES8 of 2^63
  assert.is(codeOf(raw(0x80, 2, 0x8d, u64(2n ** 40n), 'x'))?.code, 'truncated'); // BINUNICODE8
  assert.is(codeOf(raw(0x80, 2, 0x8b, u32(0x7fffffff), 'x'))?.code, 'limit'); // LONG4 with 2 GiB of digits
  assert.is(codeOf(raw(0x80, 2, 'L', '9'.repeat(5000), 'L\n.'))?.code, 'limit'); // a 5000-digit text LONG
  assert.is(codeOf(raw(0x80, 2, 'I', '1'.repeat(70000)))?.code, 'limit'); // a text argument without end
  assert.is(codeOf(raw(0x80, 2, 'N', 'r', u32(0xffffffff), 'j', u32(0xfffffffe), '.'))?.code, 'pickle'); // memo far out, never stored
  // A storage of 2^40 elements, and a view of 2^31 elements, in a well-formed tensor call.
  const tensorPickle = (numel: number | bigint, size: number[]) =>
    raw(0x80, 2, 'ctorch._utils\n_rebuild_tensor_v2\n', '((', 'X', u32(7), 'storage', 'ctorch\nFloatStorage\n', 'X', u32(1), '0', 'X', u32(3), 'cpu', 0x8a, 6, u64(BigInt(numel)).subarray(0, 6), 't', 'Q',
      'K', 0, '(', ...size.flatMap((d) => ['J', u32(d)]), 't', '(', ...size.map(() => raw('K', 1)), 't', 0x89, '}', 't', 'R', '.');
  assert.is(codeOf(tensorPickle(2 ** 40, [1]))?.code, 'storage');
  assert.is(codeOf(tensorPickle(4, [65536, 65536]), [['a/data/0', new Uint8Array(16)]])?.code, 'limit');
  assert.is(codeOf(tensorPickle(4, [2, 2]), [['a/data/0', new Uint8Array(16)]])?.code, 'layout'); // the same call, sized right, parses
});

test('deep nesting and cycles: no stack overflow, no hang, a typed result', () => {
  const depth = 200_000;
  // 200k nested lists built with EMPTY_LIST ... APPEND: fine for the parser; not a checkpoint.
  const nested = raw(0x80, 2, ']'.repeat(depth), 'a'.repeat(depth - 1), '.');
  assert.is(codeOf(nested)?.code, 'layout');
  // 200k open MARKs and tuples inside each other.
  assert.is(codeOf(raw(0x80, 2, '('.repeat(depth), 't'.repeat(depth), '.'))?.code, 'layout');
  // A list that contains itself (memo + APPEND), and a dict keyed by a list.
  assert.is(codeOf(raw(0x80, 2, ']', 'q', 0, 'h', 0, 'a', '.'))?.code, 'layout');
  assert.is(codeOf(raw(0x80, 2, '}', ']', 'N', 's', '.'))?.code, 'pickle');
  // More items than the stack bound allows: refused, not grown without limit.
  assert.is(codeOf(raw(0x80, 2, 'N', '2'.repeat(1_000_001), '.'))?.code, 'limit');
});

test.run();
