/**
 * Bad input gets a typed error (ShapeError or ArgumentError, both RevgradError) whose message names
 * the op and the shapes. Then a fuzz: random shapes (including empty and over-rank ones) and random
 * junk arguments; every call either returns a tensor of the expected shape (an independent oracle
 * written here) or throws a RevgradError subclass, never another exception type and never a silently
 * wrong shape. Runs on 'webasm' and 'cpu'.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fc from 'fast-check';
import { withBackend } from '../src/backend/backend.ts';
import * as R from '../src/index.ts';
// The tensor `stack` (src/index.ts now exports the reversible-block `stack` under that name).
import { stack as stackTensors } from '../src/tensor/ops.ts';
import { ArgumentError, RevgradError, ShapeError, type Tensor } from '../src/index.ts';
import { assertProperty, BACKENDS } from './helpers.ts';

type ErrorClass = typeof ShapeError | typeof ArgumentError;

/** `fn` throws an instance of `cls` whose message contains every string in `mentions`. */
function throwsTyped(fn: () => unknown, cls: ErrorClass, mentions: readonly string[], what: string): void {
  for (const backend of BACKENDS) {
    let err: unknown = null;
    try {
      withBackend(backend, fn);
    } catch (e) {
      err = e;
    }
    if (!(err instanceof cls)) {
      throw new Error(`${what} on ${backend}: expected ${cls.name}, got ${err === null ? 'no error' : `${(err as Error).constructor?.name}: ${(err as Error).message}`}`);
    }
    for (const m of mentions) assert.ok(err.message.includes(m), `${what} on ${backend}: message "${err.message}" does not mention "${m}"`);
  }
}

const t = (shape: number[]) => R.zeros(shape);

test('mismatched broadcast shapes: ShapeError naming the op and both shapes', () => {
  throwsTyped(() => R.add(t([2, 3]), t([4])), ShapeError, ['add', '[2, 3]', '[4]'], 'add');
  throwsTyped(() => R.mul(t([2, 1, 3]), t([2, 2])), ShapeError, ['mul', '[2, 1, 3]', '[2, 2]'], 'mul');
  throwsTyped(() => R.where(t([3]), t([2, 3]), t([2])), ShapeError, ['where', '[2, 3]', '[2]'], 'where');
  throwsTyped(() => R.broadcastTo(t([3]), [4]), ShapeError, ['broadcastTo', '[3]', '[4]'], 'broadcastTo');
  throwsTyped(() => R.broadcastTo(t([2, 3]), [3]), ShapeError, ['broadcastTo', '[2, 3]', '[3]'], 'broadcastTo to a lower rank');
});

test('matmul inner-dimension and batch mismatches: ShapeError naming matmul and the shapes', () => {
  throwsTyped(() => R.matmul(t([2, 3]), t([4, 5])), ShapeError, ['matmul', '[2, 3]', '[4, 5]'], 'inner dims');
  throwsTyped(() => R.matmul(t([3]), t([4])), ShapeError, ['matmul', '[3]', '[4]'], 'vectors');
  throwsTyped(() => R.matmul(t([2, 3]), t([3, 2]), { transA: true }), ShapeError, ['matmul', '[2, 3]', '[3, 2]'], 'transA');
  throwsTyped(() => R.matmul(t([2, 3]), t([2, 3]), { transB: false }), ShapeError, ['matmul', '[2, 3]'], 'transB false');
  throwsTyped(() => R.matmul(t([2, 2, 3]), t([3, 3, 1])), ShapeError, ['matmul', '[2]', '[3]'], 'batch');
  throwsTyped(() => R.matmul(t([]), t([3])), ShapeError, ['matmul', '[]', '[3]'], 'rank 0');
});

test('negative, fractional and NaN sizes in tensor/zeros/reshape: ShapeError naming the op and the shape', () => {
  for (const bad of [[-1], [2, -3], [1.5], [2, 0.5], [NaN], [Infinity]]) {
    throwsTyped(() => R.zeros(bad), ShapeError, ['full', String(bad[bad.length - 1])], `zeros(${bad})`);
    throwsTyped(() => R.tensor([], bad), ShapeError, ['tensor'], `tensor([], ${bad})`);
    // [-1, 6] is a valid reshape (-1 is inferred); -2 is not.
    const r = bad.map((d) => (d === -1 ? -2 : d));
    throwsTyped(() => R.reshape(t([2, 3]), [...r, 6]), ShapeError, ['reshape', String(r[r.length - 1])], `reshape to ${r},6`);
  }
  throwsTyped(() => R.tensor([1, 2, 3], [2, 2]), ShapeError, ['tensor', '[2, 2]'], 'size mismatch');
  throwsTyped(() => R.reshape(t([2, 3]), [4, -1]), ShapeError, ['reshape', '[2, 3]', '[4, -1]'], 'reshape -1 not dividing');
  throwsTyped(() => R.reshape(t([2, 3]), [-1, -1]), ShapeError, ['reshape', '[-1, -1]'], 'two -1');
  throwsTyped(() => R.reshape(t([2, 3]), [5]), ShapeError, ['reshape', '[2, 3]', '[5]'], 'reshape size');
});

test('rank > 6: ShapeError mentioning the rank', () => {
  const seven = [1, 1, 1, 1, 1, 1, 1];
  throwsTyped(() => R.zeros(seven), ShapeError, ['full', 'rank 7'], 'zeros');
  throwsTyped(() => R.tensor([1], seven), ShapeError, ['tensor', 'rank 7'], 'tensor');
  throwsTyped(() => R.reshape(t([1]), seven), ShapeError, ['reshape', 'rank 7'], 'reshape');
  throwsTyped(() => R.broadcastTo(t([1]), seven), ShapeError, ['broadcastTo', 'rank 7'], 'broadcastTo');
  // Reported under the op that builds the rank-7 shape (stack reshapes each input), with the shape.
  throwsTyped(() => stackTensors([t([1, 1, 1, 1, 1, 1])]), ShapeError, ['rank 7', '[1, 1, 1, 1, 1, 1, 1]'], 'stack');
});

test('wrong argument types: ArgumentError naming the op and what it got', () => {
  const x = t([2]);
  throwsTyped(() => R.exp('a' as never), ArgumentError, ['exp', 'string'], 'exp(string)');
  throwsTyped(() => R.add(null as never, x), ArgumentError, ['add', 'null'], 'add(null, x)');
  throwsTyped(() => R.add(x, [1, 2] as never), ArgumentError, ['add', 'array'], 'add(x, array)');
  throwsTyped(() => R.matmul([[1]] as never, x), ArgumentError, ['matmul', 'array'], 'matmul(array, x)');
  throwsTyped(() => R.conv(t([1, 1, 3]), 'w' as never), ArgumentError, ['conv', 'string'], 'conv(x, string)');
  throwsTyped(() => R.sum({} as never), ArgumentError, ['sum', 'Object'], 'sum({})');
  throwsTyped(() => R.reshape(x, 'ab' as never), ArgumentError, ['reshape', 'string'], 'reshape(x, string)');
  throwsTyped(() => R.zeros('ab' as never), ArgumentError, ['full', 'string'], 'zeros(string)');
  throwsTyped(() => R.tensor(null as never), ArgumentError, ['tensor', 'null'], 'tensor(null)');
  throwsTyped(() => R.tensor(['a'] as never), ArgumentError, ['tensor', 'string'], 'tensor([string])');
  throwsTyped(() => R.concat([x, 3] as never), ArgumentError, ['concat', 'element 1'], 'concat([x, 3])');
  throwsTyped(() => R.concat([] as never), ArgumentError, ['concat'], 'concat([])');
  throwsTyped(() => R.full([2], 'v' as never), ArgumentError, ['full', 'string'], 'full([2], string)');
  throwsTyped(() => R.take(t([3]), [0, 1] as never), ArgumentError, ['take', 'array'], 'take(x, array)');
});

test('bad axes: ShapeError (out of range, repeated) or ArgumentError (not an integer), naming the op and the rank', () => {
  const x = t([2, 3]);
  throwsTyped(() => R.sum(x, 2), ShapeError, ['sum', 'axis 2', 'rank 2'], 'sum axis 2');
  throwsTyped(() => R.max(x, -3), ShapeError, ['max', 'axis -3', 'rank 2'], 'max axis -3');
  throwsTyped(() => R.mean(x, [0, -2]), ShapeError, ['mean', 'repeated'], 'mean repeated');
  throwsTyped(() => R.sum(x, 0.5), ArgumentError, ['sum', '0.5'], 'sum axis 0.5');
  throwsTyped(() => R.softmax(x, 5), ShapeError, ['axis 5', 'rank 2'], 'softmax axis 5');
  throwsTyped(() => R.concat([x, x], 2), ShapeError, ['concat', 'axis 2'], 'concat axis 2');
  throwsTyped(() => R.concat([x, t([3, 3])], 1), ShapeError, ['concat', '[2, 3]', '[3, 3]'], 'concat shapes');
  throwsTyped(() => R.split(x, 2, 1), ShapeError, ['split', '[2, 3]', '2 equal parts'], 'split uneven');
  throwsTyped(() => R.split(x, [1, 1], 1), ShapeError, ['split', '[1, 1]', '3'], 'split sizes');
  throwsTyped(() => R.transpose(t([3])), ShapeError, ['transpose', 'rank 1'], 'transpose rank 1');
  throwsTyped(() => R.squeeze(x, 0), ShapeError, ['squeeze', '[2, 3]'], 'squeeze non-1 axis');
  throwsTyped(() => R.max(t([0, 2]), 0), ShapeError, ['max', 'empty', '[0, 2]'], 'max over an empty axis');
});

test('bad permutations: ShapeError naming permute, the permutation and the shape', () => {
  const x = t([2, 3]);
  throwsTyped(() => R.permute(x, [0, 0]), ShapeError, ['permute', '[0, 0]'], 'repeated');
  throwsTyped(() => R.permute(x, [0]), ShapeError, ['permute', '[0]', '[2, 3]'], 'too short');
  throwsTyped(() => R.permute(x, [0, 1, 2]), ShapeError, ['permute', '[0, 1, 2]', '[2, 3]'], 'too long');
  throwsTyped(() => R.permute(x, [0, 2]), ShapeError, ['permute', 'axis 2'], 'out of range');
  throwsTyped(() => R.permute(x, null as never), ShapeError, ['permute', 'null', '[2, 3]'], 'null');
});

test('conv and pooling: group mismatch and bad windows give ShapeError / ArgumentError naming the op and shapes', () => {
  throwsTyped(() => R.conv(t([1, 3, 4]), t([2, 2, 1]), { groups: 2 }), ShapeError, ['conv', '[1, 3, 4]', '[2, 2, 1]', 'groups=2'], 'Cin not divisible');
  throwsTyped(() => R.conv(t([1, 4, 4]), t([3, 2, 1]), { groups: 2 }), ShapeError, ['conv', 'groups=2'], 'Cout not divisible');
  throwsTyped(() => R.conv(t([1, 4, 4]), t([2, 4, 1]), { groups: 0 }), ShapeError, ['conv', 'groups=0'], 'groups 0');
  throwsTyped(() => R.conv(t([1, 1, 2]), t([1, 1, 3])), ShapeError, ['conv', '[3]', '[1, 1, 2]'], 'kernel larger than input');
  throwsTyped(() => R.conv(t([1, 1, 4, 4]), t([1, 1, 3])), ShapeError, ['conv', '[1, 1, 4, 4]', '[1, 1, 3]'], 'rank mismatch');
  throwsTyped(() => R.conv(t([1, 1, 4]), t([1, 1, 2]), { stride: [1, 1] }), ArgumentError, ['conv', 'stride'], 'stride length');
  throwsTyped(() => R.conv(t([1, 1, 4]), t([1, 1, 2]), { padding: -1 }), ArgumentError, ['conv', 'padding'], 'negative padding');
  throwsTyped(() => R.maxPool3d(t([1, 2, 2]), [1, 1, 1]), ShapeError, ['maxPool3d', '[1, 2, 2]'], 'pool rank');
  throwsTyped(() => R.avgPool3d(t([1, 1, 4, 4, 4]), [2, 2, 2], [1, 1, 1], [2, 0, 0]), ArgumentError, ['avgPool3d', 'padding'], 'pool padding');
});

// --- regressions: each of these failed before its fix, with the error described; do not weaken -----

// Was a bug (src/tensor/conv.ts, `triple` accepts 0 for stride): conv with stride 0 divides by zero in
// outSize and throws a RangeError ("Invalid typed array length: Infinity") from new Float32Array.
test('conv with stride 0 is an ArgumentError', () => {
  throwsTyped(() => R.conv(t([1, 1, 4]), t([1, 1, 2]), { stride: 0 }), ArgumentError, ['conv', 'stride'], 'stride 0');
});

// Was a bug (src/tensor/conv.ts, poolOutShape is never checked): a pooling window larger than the padded
// input gives a negative output size; webasm throws RangeError ("Invalid typed array length: -64"),
// cpu a plain gpu.js Error ("CPUKernel.output[0] incorrectly defined as `-64`").
test('a pooling window larger than the input is a ShapeError', () => {
  throwsTyped(() => R.maxPool3d(t([1, 1, 2, 2, 2]), [7, 7, 7], [1, 1, 1]), ShapeError, ['maxPool3d', '[1, 1, 2, 2, 2]'], 'maxPool3d');
  throwsTyped(() => R.avgPool3d(t([1, 1, 2, 2, 2]), [7, 7, 7], [1, 1, 1]), ShapeError, ['avgPool3d', '[1, 1, 2, 2, 2]'], 'avgPool3d');
});

// Was a bug (src/tensor/ops.ts: slice reads start[d], pad reads and destructures widths[d], embed reads start[d],
// split spreads sizesOrCount, shape.ts normAxes spreads `axes`, conv.ts triple spreads any non-number,
// all without checking types): null / {} / a bare number gave TypeErrors ("Cannot read properties of
// null (reading '0')", "axes is not iterable", "v is not iterable", ".for is not iterable"). Each line
// below failed on its own (checked one by one).
test('null where an index list, padding widths or axes are expected is an ArgumentError', () => {
  throwsTyped(() => R.slice(t([2]), null as never), ArgumentError, ['slice'], 'slice(x, null)');
  throwsTyped(() => R.pad(t([2]), null as never), ArgumentError, ['pad'], 'pad(x, null)');
  throwsTyped(() => R.sum(t([2]), null as never), ArgumentError, ['sum'], 'sum(x, null)');
  // normAxes spreads any iterable: the empty string is taken as "no axes" and sum(x, '') returns x.
  throwsTyped(() => R.sum(t([2, 3]), '' as never), ArgumentError, ['sum'], "sum(x, '')");
  throwsTyped(() => R.embed(t([2]), [4], null as never, [1]), ArgumentError, ['embed'], 'embed(x, shape, null, step)');
  throwsTyped(() => R.split(t([2]), null as never), ArgumentError, ['split'], 'split(x, null)');
  // conv.ts `triple` spreads any non-number: null / {} give "TypeError: v is not iterable".
  throwsTyped(() => R.conv(t([1, 1, 4]), t([1, 1, 2]), { padding: null as never }), ArgumentError, ['conv', 'padding'], 'conv padding null');
  throwsTyped(() => R.avgPool3d(t([1, 1, 2, 2, 2]), {} as never), ArgumentError, ['avgPool3d', 'kernel'], 'avgPool3d kernel {}');
  // pad destructures each width: a bare number gives "TypeError: .for is not iterable".
  throwsTyped(() => R.pad(t([2]), [0] as never), ArgumentError, ['pad'], 'pad(x, [0])');
});

// Was a bug (src/tensor/composite.ts softmax: reads x.rank before checking that x is a tensor): softmax(null)
// throws "TypeError: Cannot read properties of null (reading 'rank')", softmax('a') normalises an axis of a
// string's undefined rank.
test('softmax of a non-tensor is an ArgumentError', () => {
  throwsTyped(() => R.softmax(null as never), ArgumentError, ['softmax', 'null'], 'softmax(null)');
  throwsTyped(() => R.softmax([1, 2] as never), ArgumentError, ['softmax', 'array'], 'softmax(array)');
});

// Was a bug (src/tensor/ops.ts take: the output shape x.shape[:axis] + indices.shape + x.shape[axis+1:] is not
// checked against the maximum rank): take(zeros([1, 1, 1, 1]), zeros([1, 1, 1, 1]), 0) returns a rank-7
// tensor (shape [1, 1, 1, 1, 1, 1, 1]), which no other op accepts.
test('take whose output would exceed rank 6 is a ShapeError', () => {
  throwsTyped(() => R.take(t([1, 1, 1, 1]), t([1, 1, 1, 1]), 0), ShapeError, ['take', 'rank 7'], 'take rank 7');
});

// Was a bug (src/tensor/tensor.ts, inferShape only follows the first element): ragged nested arrays whose
// total length happens to match the first-element shape are accepted with a wrong shape:
// tensor([[1], [2, 3], []]) returns shape [3, 1] with data [1, 2, 3].
test('ragged nested arrays are a ShapeError even when the element count matches', () => {
  throwsTyped(() => R.tensor([[1], [2, 3], []]), ShapeError, ['tensor', 'ragged'], 'tensor([[1], [2, 3], []])');
});

// Was a bug (src/tensor/tensor.ts arange, src/tensor/ops.ts scatterAdd): sizes computed from NaN are not
// validated: arange(NaN) returns a tensor of shape [NaN]; scatterAdd(g, idx, 0, NaN) returns shape
// [NaN] on webasm and throws a plain gpu.js Error on cpu.
test('NaN sizes in arange and scatterAdd are errors, not tensors of shape [NaN]', () => {
  throwsTyped(() => R.arange(NaN), ArgumentError, ['arange'], 'arange(NaN)');
  throwsTyped(() => R.scatterAdd(t([2]), R.tensor([0, 1]), 0, NaN), ArgumentError, ['scatterAdd', 'NaN'], 'scatterAdd size NaN');
});

// Was a bug (src/tensor/ops.ts embed: start and step are not validated): a negative start writes outside the
// output and silently gives a wrong result (embed(ones([2]), [4], [-1], [1]) = [1, 0, 0, 0]); a step of 0
// stacks every element on one position.
test('embed with a negative start or a zero step is an error, not a silent wrong result', () => {
  throwsTyped(() => R.embed(R.ones([2]), [4], [-1], [1]), ShapeError, ['embed', '[-1]'], 'negative start');
  throwsTyped(() => R.embed(R.ones([2]), [4], [0], [0]), ArgumentError, ['embed', 'step'], 'zero step');
});

// Was a bug (src/tensor/shape.ts normAxis accepts axis 0 / -1 for rank 0 via Math.max(rank, 1); then
// codegen.ts reduce computes count = 1 * inShape[0] = NaN): sum(scalar(3), 0) returns 3 on webasm but
// throws "ReferenceError: user_NaN is not defined" from the generated gpu.js kernel on cpu.
test('reducing a rank-0 tensor over axis 0 is either a ShapeError or the same value on every backend', () => {
  for (const backend of BACKENDS) {
    withBackend(backend, () => {
      try {
        const r = R.sum(R.scalar(3), 0);
        assert.equal([...r.shape], []);
        assert.is(r.itemSync(), 3);
      } catch (e) {
        assert.instance(e, ShapeError, `${backend}: ${(e as Error).constructor.name}: ${(e as Error).message}`);
      }
    });
  }
});

// --- fuzz ---------------------------------------------------------------------------------------

/** Descriptions of arguments (materialised inside the property): tensors of possibly bad shapes and junk. */
type Junk =
  | { tensor: number[]; ints?: number }
  | { value: unknown };

const tensorShapeArb = fc.array(fc.integer({ min: 0, max: 3 }), { minLength: 0, maxLength: 4 });
const junkValueArb: fc.Arbitrary<unknown> = fc.oneof(
  fc.integer({ min: -4, max: 6 }),
  fc.constantFrom(NaN, Infinity, -Infinity, 0.5, -0.5, -1, 7),
  fc.string({ maxLength: 3 }),
  fc.constantFrom(null, undefined, true, false),
  fc.array(fc.integer({ min: -2, max: 4 }), { maxLength: 7 }),
  fc.array(fc.constantFrom(NaN, 1.5, -1, 2, null, 'a'), { maxLength: 3 }),
  fc.constant({}),
);
const junkArb: fc.Arbitrary<Junk> = fc.oneof(
  { weight: 3, arbitrary: tensorShapeArb.map((tensor) => ({ tensor })) },
  { weight: 2, arbitrary: junkValueArb.map((value) => ({ value })) },
);

function materialise(j: Junk): unknown {
  if ('tensor' in j) {
    const n = j.tensor.reduce((a, b) => a * b, 1);
    // Non-integer values, or with `ints` the integers 0 .. ints-1 (index tensors).
    const ints = j.ints;
    return R.tensor(Float32Array.from({ length: n }, (_, i) => (ints === undefined ? ((i * 7) % 5) - 2 + 0.25 : (i * 7) % ints)), j.tensor);
  }
  // A list may hold tensors to make (the fitting stack arguments).
  const isJunk = (x: unknown): x is Junk => x !== null && typeof x === 'object' && ('tensor' in x || 'value' in x);
  return Array.isArray(j.value) ? j.value.map((x) => (isJunk(x) ? materialise(x) : x)) : j.value;
}

const isTensor = (v: unknown): v is Tensor => v instanceof R.Tensor;
const isInt = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v);
const validShape = (s: unknown): s is number[] => Array.isArray(s) && s.length <= 6 && s.every((d) => isInt(d) && d >= 0);
const size = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

function broadcast(a: readonly number[], b: readonly number[]): number[] | null {
  const rank = Math.max(a.length, b.length);
  const out: number[] = [];
  for (let i = 0; i < rank; i++) {
    const x = a[a.length - rank + i] ?? 1;
    const y = b[b.length - rank + i] ?? 1;
    if (x !== y && x !== 1 && y !== 1) return null;
    out.push(x === 1 ? y : x);
  }
  return out;
}

/** An array of integers (null entries allowed where `nulls`). */
const intList = (v: unknown, nulls = false): v is number[] => Array.isArray(v) && v.every((x) => (nulls && x === null) || isInt(x));

/** A per-axis option: undefined (the default), one integer for every axis, or `n` integers; each >= min. */
function perAxis(v: unknown, n: number, dflt: number | null, min: number): number[] | null {
  const list = v === undefined ? (dflt === null ? null : Array(n).fill(dflt)) : typeof v === 'number' ? Array(n).fill(v) : Array.isArray(v) ? v : null;
  return list !== null && list.length === n && list.every((x) => isInt(x) && x >= min) ? list : null;
}

const asOperand = (v: unknown): number[] | null => (isTensor(v) ? [...v.shape] : typeof v === 'number' ? [] : null);

/** Normalised axes of a rank-r tensor, or null where they are invalid (rank 0 has no axes). */
function axesOf(axes: unknown, rank: number): number[] | null {
  const list = axes === undefined ? [...Array(rank).keys()] : isInt(axes) ? [axes] : Array.isArray(axes) ? axes : null;
  if (list === null || !list.every((a) => isInt(a) && a >= -rank && a < rank)) return null;
  const norm = list.map((a: number) => (a < 0 ? a + rank : a));
  return new Set(norm).size === norm.length ? norm : null;
}

/**
 * One fuzzed op: argument generators and an oracle giving the expected output shape (a list of shapes
 * for ops returning several tensors; null: the call must throw a RevgradError).
 */
interface FuzzOp {
  readonly name: string;
  readonly args: fc.Arbitrary<Junk[]>;
  readonly call: (...args: any[]) => unknown;
  readonly expect: (...args: any[]) => number[] | number[][] | null;
}

const args = (...arbs: fc.Arbitrary<Junk>[]) => fc.tuple(...arbs);
const shapeJunk: fc.Arbitrary<Junk> = fc.oneof(tensorShapeArb.map((value) => ({ value })), junkValueArb.map((value) => ({ value })));
const maybeAxes: fc.Arbitrary<Junk> = fc.oneof(
  fc.constant({ value: undefined }),
  fc.integer({ min: -5, max: 5 }).map((value) => ({ value })),
  fc.array(fc.integer({ min: -5, max: 5 }), { maxLength: 4 }).map((value) => ({ value })),
  junkValueArb.map((value) => ({ value })),
);
const bool: fc.Arbitrary<Junk> = fc.boolean().map((value) => ({ value }));

// Arguments that fit (or nearly fit): junk alone rarely reaches an op's success path, where the
// oracle's shape is what is checked.
const dim = fc.integer({ min: 1, max: 3 });
const fittingSplit = fc.tuple(fc.array(dim, { minLength: 1, maxLength: 3 }), fc.integer({ min: 1, max: 3 }), fc.boolean()).chain(([shape, parts, asSizes]) => {
  const full = [...shape, parts * 2];
  const sizes = asSizes ? fc.array(fc.nat({ max: parts * 2 }), { minLength: parts, maxLength: parts }).map((v) => [...v.slice(0, -1), parts * 2 - v.slice(0, -1).reduce((a, b) => a + b, 0)]) : fc.constant(parts);
  return fc.tuple(fc.constant({ tensor: full } as Junk), sizes.map((value) => ({ value }) as Junk), fc.constant({ value: -1 } as Junk));
});
const fittingStack = fc.tuple(tensorShapeArb, fc.integer({ min: 1, max: 3 }), fc.integer({ min: -3, max: 3 })).map(([shape, n, axis]) => [
  { value: Array.from({ length: n }, () => ({ tensor: shape })) } as Junk,
  { value: axis } as Junk,
]);
const fittingTake = fc.tuple(fc.array(dim, { minLength: 1, maxLength: 3 }), fc.array(dim, { maxLength: 2 }), fc.nat({ max: 2 })).map(([shape, idx, axis]) => [
  { tensor: shape } as Junk,
  { tensor: idx, ints: shape[Math.min(axis, shape.length - 1)] } as Junk,
  { value: Math.min(axis, shape.length - 1) } as Junk,
]);
const fittingConv = fc
  .record({ b: dim, g: fc.integer({ min: 1, max: 2 }), cg: dim, cpg: dim, k: fc.array(dim, { minLength: 1, maxLength: 3 }), extra: fc.nat({ max: 2 }), stride: fc.oneof(fc.constant(undefined), dim), padding: fc.oneof(fc.constant(undefined), fc.nat({ max: 1 })) })
  .map(({ b, g, cg, cpg, k, extra, stride, padding }) => [
    { tensor: [b, g * cg, ...k.map((v) => v + extra)] } as Junk,
    { tensor: [g * cpg, cg, ...k] } as Junk,
    { value: { stride, padding, groups: g } } as Junk,
  ]);
const fittingPool = fc
  .record({ lead: fc.array(dim, { minLength: 1, maxLength: 2 }), k: fc.array(dim, { minLength: 3, maxLength: 3 }), extra: fc.array(fc.nat({ max: 2 }), { minLength: 3, maxLength: 3 }), stride: fc.oneof(fc.constant(undefined), fc.array(dim, { minLength: 3, maxLength: 3 })), pad: fc.boolean() })
  .map(({ lead, k, extra, stride, pad }) => [
    { tensor: [...lead, ...k.map((v, i) => v + extra[i])] } as Junk,
    { value: k } as Junk,
    { value: stride } as Junk,
    { value: pad ? k.map((v) => Math.floor(v / 2)) : undefined } as Junk,
  ]);

const FUZZ: readonly FuzzOp[] = [
  { name: 'zeros', args: args(shapeJunk), call: (s) => R.zeros(s), expect: (s) => (validShape(s) ? [...s] : null) },
  {
    name: 'tensor',
    args: args(fc.array(fc.double({ noNaN: false }), { maxLength: 8 }).map((value) => ({ value })), fc.oneof(fc.constant({ value: undefined }), shapeJunk)),
    call: (d, s) => R.tensor(d, s),
    expect: (d: number[], s) => (s === undefined ? [d.length] : validShape(s) && size(s) === d.length ? [...s] : null),
  },
  ...(['exp', 'neg', 'relu', 'erf'] as const).map((name): FuzzOp => ({
    name,
    args: args(junkArb),
    call: (x) => R[name](x),
    expect: (x) => (isTensor(x) ? [...x.shape] : null),
  })),
  { name: 'gelu', args: args(junkArb), call: (x) => R.gelu(x), expect: (x) => (isTensor(x) ? [...x.shape] : null) },
  ...(['add', 'mul', 'pow', 'maximum', 'greater'] as const).map((name): FuzzOp => ({
    name,
    args: args(junkArb, junkArb),
    call: (a, b) => R[name](a, b),
    expect: (a, b) => {
      const [sa, sb] = [asOperand(a), asOperand(b)];
      return sa === null || sb === null ? null : broadcast(sa, sb);
    },
  })),
  {
    name: 'where',
    args: args(junkArb, junkArb, junkArb),
    call: (c, a, b) => R.where(c, a, b),
    expect: (c, a, b) => {
      const s = [c, a, b].map(asOperand);
      if (s.some((x) => x === null)) return null;
      const ab = broadcast(s[0]!, s[1]!);
      return ab === null ? null : broadcast(ab, s[2]!);
    },
  },
  ...(['sum', 'mean', 'max'] as const).map((name): FuzzOp => ({
    name,
    args: args(junkArb, maybeAxes, bool),
    call: (x, axes, keepdims) => R[name](x, axes, keepdims),
    expect: (x, axes, keepdims) => {
      if (!isTensor(x)) return null;
      const ax = axesOf(axes, x.rank);
      if (ax === null) return null;
      if (name === 'max' && ax.some((a) => x.shape[a] === 0)) return null;
      return keepdims ? x.shape.map((d, i) => (ax.includes(i) ? 1 : d)) : x.shape.filter((_, i) => !ax.includes(i));
    },
  })),
  {
    name: 'reshape',
    args: args(junkArb, shapeJunk),
    call: (x, s) => R.reshape(x, s),
    expect: (x, s) => {
      if (!isTensor(x) || !Array.isArray(s) || s.length > 6) return null;
      if (s.filter((d) => d === -1).length > 1 || !s.every((d) => d === -1 || (isInt(d) && d >= 0))) return null;
      const known = size(s.filter((d) => d !== -1));
      if (s.includes(-1)) return known > 0 && x.size % known === 0 ? s.map((d) => (d === -1 ? x.size / known : d)) : null;
      return known === x.size ? [...s] : null;
    },
  },
  {
    name: 'permute',
    args: args(junkArb, maybeAxes),
    call: (x, p) => R.permute(x, p),
    expect: (x, p) => {
      if (!isTensor(x) || !Array.isArray(p) || p.length !== x.rank) return null;
      const ax = axesOf(p, x.rank);
      return ax === null ? null : p.map((a: number) => x.shape[a < 0 ? a + x.rank : a]);
    },
  },
  {
    name: 'transpose',
    args: args(junkArb, fc.integer({ min: -4, max: 4 }).map((value) => ({ value })), fc.integer({ min: -4, max: 4 }).map((value) => ({ value }))),
    call: (x, a, b) => R.transpose(x, a, b),
    expect: (x, a, b) => {
      if (!isTensor(x) || axesOf(a, x.rank) === null || axesOf(b, x.rank) === null) return null;
      const s = [...x.shape];
      const [i, j] = [a < 0 ? a + x.rank : a, b < 0 ? b + x.rank : b];
      [s[i], s[j]] = [s[j], s[i]];
      return s;
    },
  },
  {
    name: 'broadcastTo',
    args: args(junkArb, shapeJunk),
    call: (x, s) => R.broadcastTo(x, s),
    expect: (x, s) => {
      if (!isTensor(x) || !validShape(s)) return null;
      const b = broadcast(x.shape, s);
      return b !== null && b.length === s.length && b.every((d, i) => d === s[i]) ? [...s] : null;
    },
  },
  {
    name: 'matmul',
    args: args(junkArb, junkArb, bool, bool),
    call: (a, b, transA, transB) => R.matmul(a, b, { transA, transB }),
    expect: (a, b, transA, transB) => {
      if (!isTensor(a) || !isTensor(b) || a.rank === 0 || b.rank === 0) return null;
      const a2 = a.rank === 1 ? (transA ? [a.size, 1] : [1, a.size]) : [...a.shape];
      const b2 = b.rank === 1 ? (transB ? [1, b.size] : [b.size, 1]) : [...b.shape];
      const [m, k] = transA ? [a2.at(-1)!, a2.at(-2)!] : [a2.at(-2)!, a2.at(-1)!];
      const [k2, n] = transB ? [b2.at(-1)!, b2.at(-2)!] : [b2.at(-2)!, b2.at(-1)!];
      const batch = broadcast(a2.slice(0, -2), b2.slice(0, -2));
      if (k !== k2 || batch === null) return null;
      let out = [...batch, m, n];
      if (a.rank === 1) out = [...batch, n];
      if (b.rank === 1) out = out.slice(0, -1);
      return out;
    },
  },
  {
    name: 'concat',
    args: args(fc.array(junkArb, { maxLength: 3 }).map((value) => ({ value })), fc.integer({ min: -3, max: 3 }).map((value) => ({ value }))),
    call: (xs, axis) => R.concat(xs, axis),
    expect: (xs, axis) => {
      if (!Array.isArray(xs) || xs.length === 0 || !xs.every(isTensor)) return null;
      const rank = xs[0].rank;
      const ax = axesOf(axis, rank);
      if (ax === null || ax.length !== 1) return null;
      if (!xs.every((t) => t.rank === rank && t.shape.every((d, i) => i === ax[0] || d === xs[0].shape[i]))) return null;
      return xs[0].shape.map((d, i) => (i === ax[0] ? xs.reduce((s, t) => s + t.shape[i], 0) : d));
    },
  },
  // Ops whose oracles follow the documented argument rules (docs/api.md) and the implementations' checks.
  {
    name: 'slice',
    args: args(junkArb, shapeJunk, fc.oneof(fc.constant({ value: undefined }), shapeJunk, fc.array(fc.oneof(fc.constant(null), fc.integer({ min: -4, max: 5 })), { maxLength: 4 }).map((value) => ({ value }))), fc.oneof(fc.constant({ value: undefined }), shapeJunk)),
    call: (x, a, b, c) => R.slice(x, a, b, c),
    expect: (x, start, stop, step) => {
      if (!isTensor(x) || !intList(start) || (stop !== undefined && !intList(stop, true)) || (step !== undefined && !intList(step))) return null;
      if (start.length > x.rank) return null;
      const out: number[] = [];
      for (let d = 0; d < x.rank; d++) {
        const n = x.shape[d];
        const st = step?.[d] ?? 1;
        if (st <= 0) return null;
        const clamp = (v: number) => Math.min(Math.max(v < 0 ? v + n : v, 0), n);
        out.push(Math.max(0, Math.ceil((clamp(stop?.[d] ?? n) - clamp(start[d] ?? 0)) / st)));
      }
      return out;
    },
  },
  {
    name: 'pad',
    args: args(junkArb, fc.oneof(fc.array(fc.tuple(fc.integer({ min: -1, max: 2 }), fc.integer({ min: -1, max: 2 })), { maxLength: 4 }).map((value) => ({ value })), shapeJunk)),
    call: (x, w) => R.pad(x, w),
    expect: (x, widths) => {
      if (!isTensor(x) || !Array.isArray(widths) || widths.length > x.rank) return null;
      if (!widths.every((p) => Array.isArray(p) && p.length === 2 && p.every((v) => isInt(v) && v >= 0))) return null;
      return x.shape.map((n, d) => n + (widths[d]?.[0] ?? 0) + (widths[d]?.[1] ?? 0));
    },
  },
  {
    name: 'split',
    args: fc.oneof(args(junkArb, fc.oneof(junkValueArb.map((value) => ({ value })), shapeJunk), fc.integer({ min: -3, max: 3 }).map((value) => ({ value }))), fittingSplit),
    call: (x, s, a) => R.split(x, s, a),
    expect: (x, s, axis): number[][] | null => {
      if (!isTensor(x)) return null;
      const ax = axesOf(axis, x.rank);
      if (ax === null || !isInt(axis)) return null;
      const n = x.shape[ax[0]];
      let sizes: number[];
      if (typeof s === 'number') {
        if (!isInt(s) || s <= 0 || n % s !== 0 || (n === 0 && s > 1)) return null;
        sizes = Array(s).fill(n / s);
      } else {
        if (!intList(s) || s.reduce((p: number, q: number) => p + q, 0) !== n || s.some((v: number) => v < 0)) return null;
        sizes = s;
      }
      return sizes.map((k) => x.shape.map((d, i) => (i === ax[0] ? k : d)));
    },
  },
  {
    name: 'stack',
    args: fc.oneof(args(fc.array(junkArb, { maxLength: 3 }).map((value) => ({ value })), fc.integer({ min: -4, max: 4 }).map((value) => ({ value }))), fittingStack),
    call: (xs, a) => stackTensors(xs, a),
    expect: (xs, axis) => {
      if (!Array.isArray(xs) || xs.length === 0 || !xs.every(isTensor)) return null;
      const s = xs[0].shape;
      const ax = axesOf(axis, s.length + 1);
      if (ax === null || s.length + 1 > 6 || !xs.every((t) => t.shape.join() === s.join())) return null;
      return [...s.slice(0, ax[0]), xs.length, ...s.slice(ax[0])];
    },
  },
  {
    name: 'take',
    args: fc.oneof(args(junkArb, junkArb, fc.integer({ min: -3, max: 3 }).map((value) => ({ value }))), fittingTake),
    call: (x, i, a) => R.take(x, i, a),
    expect: (x, indices, axis) => {
      if (!isTensor(x) || !isTensor(indices)) return null;
      const ax = axesOf(axis, x.rank);
      if (ax === null) return null;
      const n = x.shape[ax[0]];
      if (!indices.dataSync().every((v) => isInt(v) && v >= 0 && v < n)) return null;
      const out = [...x.shape.slice(0, ax[0]), ...indices.shape, ...x.shape.slice(ax[0] + 1)];
      return out.length > 6 ? null : out;
    },
  },
  {
    name: 'softmax',
    args: args(junkArb, maybeAxes),
    call: (x, a) => R.softmax(x, a),
    // One axis (default -1): an integer in range; a list of axes is not an axis.
    expect: (x, axis) => (isTensor(x) && (axis === undefined || isInt(axis)) && axesOf(axis ?? -1, x.rank) !== null ? [...x.shape] : null),
  },
  {
    name: 'layerNorm',
    args: args(junkArb, fc.oneof(junkArb, fc.constant({ value: null })), fc.oneof(junkArb, fc.constant({ value: null }))),
    call: (x, w, b) => R.layerNorm(x, w, b),
    // Normalises the last axis (rank >= 1), then weight and bias broadcast (null: none; a number is a scalar).
    expect: (x, w, b) => {
      if (!isTensor(x) || x.rank === 0) return null;
      let out: number[] | null = [...x.shape];
      for (const p of [w, b]) {
        if (p === null) continue;
        const s = asOperand(p);
        out = s === null || out === null ? null : broadcast(out, s);
      }
      return out;
    },
  },
  {
    name: 'conv',
    args: fc.oneof(fittingConv, args(junkArb, junkArb, fc.record({ stride: fc.oneof(fc.constant(undefined), junkValueArb), padding: fc.oneof(fc.constant(undefined), junkValueArb), groups: fc.oneof(fc.constant(undefined), junkValueArb) }).map((value) => ({ value })))),
    call: (x, w, o) => R.conv(x, w, o),
    expect: (x, w, o: { stride?: unknown; padding?: unknown; groups?: unknown }) => {
      if (!isTensor(x) || !isTensor(w)) return null;
      const spatial = w.rank - 2;
      if (spatial < 1 || spatial > 3 || x.rank !== w.rank) return null;
      const stride = perAxis(o.stride, spatial, 1, 1);
      const padding = perAxis(o.padding, spatial, 0, 0);
      const g = o.groups ?? 1;
      if (stride === null || padding === null || !isInt(g) || g < 1) return null;
      const [cin, cout, cg] = [x.shape[1], w.shape[0], w.shape[1]];
      if (cin % g !== 0 || cout % g !== 0 || cg * g !== cin) return null;
      const sp = x.shape.slice(2).map((n, d) => Math.floor((n + 2 * padding[d] - w.shape[2 + d]) / stride[d]) + 1);
      return sp.some((n) => n <= 0) ? null : [x.shape[0], cout, ...sp];
    },
  },
  ...(['maxPool3d', 'avgPool3d'] as const).map((name): FuzzOp => ({
    name,
    args: fc.oneof(args(junkArb, shapeJunk, fc.oneof(fc.constant({ value: undefined }), shapeJunk), fc.oneof(fc.constant({ value: undefined }), shapeJunk)), fittingPool),
    call: (x, k, s, p) => R[name](x, k, s, p),
    // [B, C, D, H, W] or [C, D, H, W]; kernel, stride (default the kernel) and padding: 3 integers or one
    // for all (kernel, stride >= 1; 0 <= padding <= kernel / 2); every output axis non-empty.
    expect: (x, kernel, stride, padding) => {
      if (!isTensor(x) || (x.rank !== 4 && x.rank !== 5)) return null;
      const k = perAxis(kernel, 3, null, 1);
      const s = perAxis(stride ?? kernel, 3, 1, 1);
      const p = perAxis(padding, 3, 0, 0);
      if (k === null || s === null || p === null || p.some((v, i) => v > k[i] / 2)) return null;
      const lead = x.shape.slice(0, x.rank - 3);
      const out = [...lead, ...x.shape.slice(x.rank - 3).map((n, d) => Math.floor((n + 2 * p[d] - k[d]) / s[d]) + 1)];
      return out.some((n) => n <= 0) ? null : out;
    },
  })),
];

function checkCall(op: FuzzOp, junk: Junk[], backend: string): void {
  const values = junk.map(materialise);
  const want = op.expect(...values);
  let result: unknown;
  try {
    result = op.call(...values);
  } catch (e) {
    if (!(e instanceof RevgradError)) {
      throw new Error(`${op.name} on ${backend} threw ${(e as Error)?.constructor?.name}: ${(e as Error)?.message}`);
    }
    if (want !== null) throw new Error(`${op.name} on ${backend}: expected shape ${JSON.stringify(want)}, got ${e.name}: ${e.message}`);
    return;
  }
  for (const r of Array.isArray(result) ? result : [result]) {
    if (!isTensor(r)) throw new Error(`${op.name} on ${backend} returned a non-tensor ${String(r)}`);
    if (!validShape([...r.shape]) || r.dataSync().length !== size(r.shape)) {
      throw new Error(`${op.name} on ${backend} returned an invalid shape [${r.shape}] with ${r.dataSync().length} values`);
    }
  }
  const got = Array.isArray(result) ? result.map((r: Tensor) => [...r.shape]) : [...(result as Tensor).shape];
  if (want === null) throw new Error(`${op.name} on ${backend}: expected a RevgradError, got shape ${JSON.stringify(got)}`);
  if (JSON.stringify(got) !== JSON.stringify(want)) throw new Error(`${op.name} on ${backend}: expected shape ${JSON.stringify(want)}, got ${JSON.stringify(got)}`);
}

for (const op of FUZZ) {
  test(`fuzz ${op.name}: a tensor of the expected shape or a RevgradError, never another exception`, () => {
    assertProperty(
      fc.property(op.args, (junk) => {
        for (const backend of BACKENDS) withBackend(backend, () => checkCall(op, junk, backend));
      }),
      { numRuns: 60 },
    );
  });
}

test.run();
