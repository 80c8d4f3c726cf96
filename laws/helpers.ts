/**
 * Shared helpers for the law files, on top of the law kit (src/laws, published as `revgrad/laws`):
 * the kit's arbitraries (shapes, broadcast sets, axes, seeds), its property runner, its seeded data and
 * its VJP checks; plus what only our own laws need: deterministic data families, one generator of
 * well-conditioned cases per differentiable primitive / composite (OP_CASES), and the three ways an op
 * runs here (fast paths, webasm kernels, cpu kernels).
 *
 * Generated values are plain data (shapes, seeds, options); tensors are built from them inside the
 * property, so fast-check prints readable counterexamples and the same case can run on every backend.
 */
import fc from 'fast-check';
import * as assert from 'uvu/assert';
import { withBackend, type BackendName } from '../src/backend/backend.ts';
import { setFastPaths } from '../src/tensor/exec.ts';
import * as R from '../src/index.ts';
// The tensor `stack` (src/index.ts now exports the reversible-block `stack` under that name).
import { stack as stackTensors } from '../src/tensor/ops.ts';
import type { Tensor } from '../src/index.ts';
import { arb, assertProperty as kitAssertProperty, vjpLaw, type Outcome, type VjpCase, type VjpCheck, type VjpLawOptions } from '../src/laws/index.ts';
import { dot as kitDot, EPS32 as KIT_EPS32, maxAbs as kitMaxAbs, rng as kitRng, seededUniform } from '../src/laws/numeric.ts';

export const BACKENDS: readonly BackendName[] = ['webasm', 'cpu'];

/** float32 machine epsilon (2^-23). */
export const EPS32 = KIT_EPS32;

/** Run `fn` with the host fast paths switched off (every op runs its gpu.js kernel), restoring them. */
export function withoutFastPaths<A>(fn: () => A): A {
  setFastPaths(false);
  try {
    return fn();
  } finally {
    setFastPaths(true);
  }
}

/** The three ways an op can run here: host fast paths, gpu.js webasm kernels, gpu.js cpu kernels. */
export const MODES: readonly { name: string; run: <A>(fn: () => A) => A }[] = [
  { name: 'webasm (fast paths)', run: (fn) => withBackend('webasm', fn) },
  { name: 'webasm (kernels)', run: (fn) => withBackend('webasm', () => withoutFastPaths(fn)) },
  { name: 'cpu (kernels)', run: (fn) => withBackend('cpu', fn) },
];

// ---------------------------------------------------------------------------------------------
// Deterministic data

/** mulberry32: a small seeded PRNG in [0, 1), so a failing seed reproduces (the kit's). */
export const rng = kitRng;

export const sizeOf = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);

/** Uniform values in [lo, hi) (the kit's seeded data). */
export const uniform = (n: number, seed: number, lo = -1, hi = 1): Float32Array => seededUniform(n, seed, lo, hi);

/** Values with lo <= |x| < hi and a random sign (away from a kink at 0). */
export function awayFromZero(n: number, seed: number, lo = 0.1, hi = 2): Float32Array {
  const r = rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (r() < 0.5 ? -1 : 1) * (lo + (hi - lo) * r());
  return out;
}

/** Pairwise distinct values at least `gap` apart (a shuffled grid plus a little noise): no ties. */
export function distinct(n: number, seed: number, gap = 0.1): Float32Array {
  const r = rng(seed);
  const order = [...Array(n).keys()];
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1));
    [order[i], order[j]] = [order[j], order[i]];
  }
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (order[i] - n / 2) * 1.5 * gap + 0.25 * gap * r();
  return out;
}

export const rand = (shape: readonly number[], seed: number, lo = -1, hi = 1): Tensor =>
  R.tensor(uniform(sizeOf(shape), seed, lo, hi), [...shape]);

export function f64(t: Tensor): Float64Array {
  return Float64Array.from(t.dataSync());
}

export const maxAbs = kitMaxAbs;

/** Throws unless `got` and `want` have the same shape and |got - want| <= atol + rtol * max|want| everywhere. */
export function assertClose(got: Tensor, want: Tensor, rtol: number, atol: number, what: string): void {
  if (got.shape.join(',') !== want.shape.join(',')) {
    throw new Error(`${what}: shape [${got.shape}] vs [${want.shape}]`);
  }
  const a = got.dataSync();
  const b = want.dataSync();
  const tol = atol + rtol * maxAbs(b);
  for (let i = 0; i < a.length; i++) {
    const err = Math.abs(a[i] - b[i]);
    if (!(err <= tol)) {
      throw new Error(`${what}: element ${i} of [${got.shape}]: ${a[i]} vs ${b[i]} (|diff| ${err} > tol ${tol})`);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Shape generators (small: dims 1..4, rank 0..4)

export const dimArb = fc.integer({ min: 1, max: 4 });
export const shapeArb = (minRank = 0, maxRank = 4): fc.Arbitrary<number[]> => arb.shape({ minRank, maxRank });
export const seedArb = arb.seed();

/** Shapes that broadcast together (NumPy rules), with their broadcast shape `out`. */
export const broadcastShapesArb = (count: number, maxRank = 4) => arb.broadcastShapes(count, { maxRank });

/** A subset of the axes of a rank-r shape, each written as a non-negative or a negative index. */
export const axesArb = arb.axes;

/** One axis of a rank-r shape (r >= 1), possibly negative. */
export const axisArb = arb.axis;

// ---------------------------------------------------------------------------------------------
// Op cases: one generator per differentiable op, with inputs kept where the op is smooth.

export type Fn = (...xs: Tensor[]) => Tensor | Tensor[];

export interface OpCase {
  /** Inputs (tensors); `wrt` lists the differentiable ones (default: all). */
  readonly inputs: Tensor[];
  readonly f: Fn;
  readonly wrt?: readonly number[];
}

export interface OpEntry<P = any> {
  readonly name: string;
  readonly arb: fc.Arbitrary<P>;
  readonly build: (p: P) => OpCase;
  /** Smooth ops used by the Taylor test (second derivative non-zero in general). */
  readonly smooth?: boolean;
  /** Ops without a gradient (index outputs: argmax, oneHot): the laws compare their values; finite differences do not apply. */
  readonly noGradient?: boolean;
}

const op = <P>(name: string, arb: fc.Arbitrary<P>, build: (p: P) => OpCase, smooth = false): OpEntry<P> => ({ name, arb, build, smooth });

const unaryCase = (name: string, f: (x: Tensor) => Tensor, values: (n: number, seed: number) => Float32Array, smooth = false): OpEntry =>
  op(
    name,
    fc.record({ shape: shapeArb(), seed: seedArb }),
    ({ shape, seed }) => ({ inputs: [R.tensor(values(sizeOf(shape), seed), shape)], f: (x) => f(x) }),
    smooth,
  );

const binaryCase = (
  name: string,
  f: (a: Tensor, b: Tensor) => Tensor,
  va: (n: number, seed: number) => Float32Array,
  vb: (n: number, seed: number) => Float32Array,
  smooth = false,
): OpEntry =>
  op(
    name,
    fc.record({ s: broadcastShapesArb(2), seed: seedArb }),
    ({ s, seed }) => ({
      inputs: [R.tensor(va(sizeOf(s.shapes[0]), seed), s.shapes[0]), R.tensor(vb(sizeOf(s.shapes[1]), seed + 1), s.shapes[1])],
      f: (a, b) => f(a, b),
    }),
    smooth,
  );

const u = (lo: number, hi: number) => (n: number, seed: number) => uniform(n, seed, lo, hi);

/** Values k + [lo, hi) for an integer k in -2..1: two such families with disjoint fractions never tie. */
const offGrid = (lo: number, hi: number) => (n: number, seed: number) => {
  const r = rng(seed);
  return Float32Array.from({ length: n }, () => Math.floor(r() * 4) - 2 + lo + (hi - lo) * r());
};

/** Rows along the last axis spread out (values >= 0.5 apart), so the variance is far from 0. */
function spreadRows(shape: readonly number[], seed: number): Float32Array {
  const n = shape.length === 0 ? 1 : shape[shape.length - 1];
  const rows = sizeOf(shape) / n;
  const out = new Float32Array(sizeOf(shape));
  for (let r = 0; r < rows; r++) out.set(distinct(n, seed + 7 * r, 0.5).map((v, i) => v + (i % 2) * 0.01), r * n);
  return out;
}

const sliceArb = shapeArb(1, 4).chain((shape) =>
  fc.record({
    shape: fc.constant(shape),
    start: fc.tuple(...shape.map((n) => fc.integer({ min: -n, max: n - 1 }))),
    stop: fc.tuple(...shape.map((n) => fc.option(fc.integer({ min: -n - 1, max: n + 1 }), { nil: null }))),
    step: fc.tuple(...shape.map(() => fc.integer({ min: 1, max: 3 }))),
    seed: seedArb,
  }),
);

const convArb = fc
  .record({
    spatial: fc.integer({ min: 1, max: 3 }),
    batch: fc.integer({ min: 1, max: 2 }),
    mode: fc.constantFrom('plain', 'grouped', 'depthwise'),
    cg: fc.integer({ min: 1, max: 2 }),
    coutPerGroup: fc.integer({ min: 1, max: 2 }),
    seed: seedArb,
  })
  .chain((p) =>
    fc.record({
      p: fc.constant(p),
      kernel: fc.array(fc.integer({ min: 1, max: 3 }), { minLength: p.spatial, maxLength: p.spatial }),
      extra: fc.array(fc.integer({ min: 0, max: 2 }), { minLength: p.spatial, maxLength: p.spatial }),
      stride: fc.array(fc.integer({ min: 1, max: 2 }), { minLength: p.spatial, maxLength: p.spatial }),
      padding: fc.array(fc.integer({ min: 0, max: 1 }), { minLength: p.spatial, maxLength: p.spatial }),
    }),
  )
  .map(({ p, kernel, extra, stride, padding }) => {
    const groups = p.mode === 'plain' ? 1 : p.mode === 'grouped' ? 2 : 2 + (p.cg - 1);
    const cg = p.mode === 'depthwise' ? 1 : p.cg;
    const cin = cg * groups;
    const cout = p.coutPerGroup * groups;
    return {
      x: [p.batch, cin, ...kernel.map((k, i) => k + extra[i])],
      w: [cout, cg, ...kernel],
      opts: { stride, padding, groups },
      seed: p.seed,
    };
  });

const poolArb = fc
  .record({
    batched: fc.boolean(),
    c: fc.integer({ min: 1, max: 2 }),
    kernel: fc.array(fc.integer({ min: 1, max: 2 }), { minLength: 3, maxLength: 3 }),
    stride: fc.array(fc.integer({ min: 1, max: 2 }), { minLength: 3, maxLength: 3 }),
    padMask: fc.array(fc.boolean(), { minLength: 3, maxLength: 3 }),
    extra: fc.array(fc.integer({ min: 0, max: 2 }), { minLength: 3, maxLength: 3 }),
    seed: seedArb,
  })
  .map((p) => ({
    x: [...(p.batched ? [2] : []), p.c, ...p.kernel.map((k, i) => k + p.extra[i])],
    kernel: p.kernel,
    stride: p.stride,
    // PyTorch allows padding up to half the kernel.
    padding: p.kernel.map((k, i) => (p.padMask[i] ? Math.floor(k / 2) : 0)),
    seed: p.seed,
  }));

const matmulArb = fc
  .record({
    batch: broadcastShapesArb(2, 2),
    m: dimArb,
    k: dimArb,
    n: dimArb,
    vecA: fc.boolean(),
    vecB: fc.boolean(),
    transA: fc.boolean(),
    transB: fc.boolean(),
    seed: seedArb,
  })
  .map((p) => {
    // 1-D operands carry no batch axes.
    const a = p.vecA ? [p.k] : [...p.batch.shapes[0], ...(p.transA ? [p.k, p.m] : [p.m, p.k])];
    const b = p.vecB ? [p.k] : [...p.batch.shapes[1], ...(p.transB ? [p.n, p.k] : [p.k, p.n])];
    return { a, b, opts: { transA: p.transA, transB: p.transB }, seed: p.seed };
  });

/** Shapes equal except on one axis, for concat. */
const concatArb = shapeArb(1, 4).chain((shape) =>
  fc.record({
    shape: fc.constant(shape),
    axis: axisArb(shape.length),
    sizes: fc.array(dimArb, { minLength: 1, maxLength: 3 }),
    seed: seedArb,
  }),
);

/** einsum subscripts of every supported kind (matmul, batch axes, sums, permutes, outer products, ellipsis, three operands). */
const EINSUM_SPECS = ['ij,jk->ik', 'bij,bjk->bik', 'ij->ji', 'ijk->kj', 'ijk->', 'ij->i', 'i,i->', 'i,j->ij', 'ij,j->i', 'ij,jk', 'bhqd,bhkd->bhqk', '...ij,jk->...ik', '...i,...i->...', 'ij,jk,kl->il', 'ijk,ikl->jl', 'ab,cb->ca', 'ij,kj->'];

/** A spec with a size (1..3) per letter and 0-2 ellipsis axes, some of them 1 in the first operand (broadcast). */
const einsumArb = fc
  .record({
    spec: fc.constantFrom(...EINSUM_SPECS),
    sizes: fc.record(Object.fromEntries([...'abcdhijklq'].map((l) => [l, dimArb])) as Record<string, fc.Arbitrary<number>>),
    ellipsis: fc.array(fc.record({ n: dimArb, broadcast: fc.boolean() }), { maxLength: 2 }),
    seed: seedArb,
  })
  .map(({ spec, sizes, ellipsis, seed }) => {
    const lhs = spec.split('->')[0].split(',');
    const shapes = lhs.map((s, i) => [
      ...(s.startsWith('...') ? ellipsis.map((e) => (i === 0 && e.broadcast ? 1 : e.n)) : []),
      ...[...s.replace('...', '')].map((l) => sizes[l]),
    ]);
    return { spec, shapes, seed };
  });

/** Every differentiable primitive and composite, with inputs where the op is smooth. */
export const OP_CASES: readonly OpEntry[] = [
  unaryCase('neg', R.neg, u(-2, 2)),
  unaryCase('abs', R.abs, (n, s) => awayFromZero(n, s)),
  unaryCase('exp', R.exp, u(-2, 2), true),
  unaryCase('log', R.log, u(0.5, 3), true),
  unaryCase('sqrt', R.sqrt, u(0.5, 3), true),
  unaryCase('rsqrt', R.rsqrt, u(0.5, 3), true),
  unaryCase('tanh', R.tanh, u(-2, 2), true),
  unaryCase('erf', R.erf, u(-2, 2), true),
  unaryCase('relu', R.relu, (n, s) => awayFromZero(n, s)),
  binaryCase('add', R.add, u(-2, 2), u(-2, 2)),
  binaryCase('sub', R.sub, u(-2, 2), u(-2, 2)),
  binaryCase('mul', R.mul, u(-2, 2), u(-2, 2), true),
  binaryCase('div', R.div, u(-2, 2), (n, s) => awayFromZero(n, s, 0.5, 2), true),
  binaryCase('pow', R.pow, u(0.5, 2), u(-2, 2), true),
  binaryCase('maximum', R.maximum, offGrid(0.1, 0.2), offGrid(0.6, 0.7)),
  binaryCase('minimum', R.minimum, offGrid(0.1, 0.2), offGrid(0.6, 0.7)),
  op('where', fc.record({ s: broadcastShapesArb(3), seed: seedArb }), ({ s, seed }) => ({
    inputs: [
      R.tensor(uniform(sizeOf(s.shapes[0]), seed).map((v) => (v > 0 ? 1 : 0)), s.shapes[0]),
      R.tensor(uniform(sizeOf(s.shapes[1]), seed + 1, -2, 2), s.shapes[1]),
      R.tensor(uniform(sizeOf(s.shapes[2]), seed + 2, -2, 2), s.shapes[2]),
    ],
    f: (c, a, b) => R.where(c, a, b),
    wrt: [1, 2],
  })),
  ...(['sum', 'mean', 'max'] as const).map((name) =>
    op(
      name,
      shapeArb(0, 4).chain((shape) =>
        fc.record({ shape: fc.constant(shape), axes: fc.option(axesArb(shape.length), { nil: undefined }), keepdims: fc.boolean(), seed: seedArb }),
      ),
      ({ shape, axes, keepdims, seed }) => ({
        inputs: [R.tensor(name === 'max' ? distinct(sizeOf(shape), seed) : uniform(sizeOf(shape), seed, -2, 2), shape)],
        f: (x) => R[name](x, axes, keepdims),
      }),
    ),
  ),
  op(
    'reshape',
    shapeArb(0, 4).chain((shape) =>
      fc.record({
        shape: fc.constant(shape),
        target: fc.shuffledSubarray(shape, { minLength: shape.length, maxLength: shape.length }),
        ones: fc.integer({ min: 0, max: 2 }),
        minusOne: fc.option(fc.nat(), { nil: undefined }),
        seed: seedArb,
      }),
    ),
    ({ shape, target, ones, minusOne, seed }) => {
      const t = [...target, ...Array(Math.min(ones, 6 - target.length)).fill(1)];
      if (minusOne !== undefined && t.length > 0) t[minusOne % t.length] = -1;
      return { inputs: [rand(shape, seed)], f: (x) => R.reshape(x, t) };
    },
  ),
  op(
    'permute',
    shapeArb(0, 4).chain((shape) =>
      fc.record({
        shape: fc.constant(shape),
        perm: fc.shuffledSubarray([...shape.keys()], { minLength: shape.length, maxLength: shape.length }),
        neg: fc.boolean(),
        seed: seedArb,
      }),
    ),
    ({ shape, perm, neg, seed }) => ({ inputs: [rand(shape, seed)], f: (x) => R.permute(x, neg ? perm.map((a) => a - shape.length) : perm) }),
  ),
  op(
    'transpose',
    shapeArb(2, 4).chain((shape) => fc.record({ shape: fc.constant(shape), a: axisArb(shape.length), b: axisArb(shape.length), seed: seedArb })),
    ({ shape, a, b, seed }) => ({ inputs: [rand(shape, seed)], f: (x) => R.transpose(x, a, b) }),
  ),
  // The generated shape is the base with some axes set to 1 and some leading axes dropped: it broadcasts to the base.
  op('broadcastTo', fc.record({ s: broadcastShapesArb(1), seed: seedArb }), ({ s, seed }) => ({
    inputs: [rand(s.shapes[0], seed)],
    f: (x) => R.broadcastTo(x, s.base),
  })),
  op('slice', sliceArb, ({ shape, start, stop, step, seed }) => ({ inputs: [rand(shape, seed)], f: (x) => R.slice(x, start, stop, step) })),
  op(
    'pad',
    shapeArb(0, 4).chain((shape) =>
      fc.record({
        shape: fc.constant(shape),
        widths: fc.tuple(...shape.map(() => fc.tuple(fc.integer({ min: 0, max: 2 }), fc.integer({ min: 0, max: 2 })))),
        value: fc.constantFrom(0, 1.5),
        seed: seedArb,
      }),
    ),
    ({ shape, widths, value, seed }) => ({ inputs: [rand(shape, seed)], f: (x) => R.pad(x, widths as [number, number][], value) }),
  ),
  op(
    'embed',
    shapeArb(0, 4).chain((shape) =>
      fc.record({
        shape: fc.constant(shape),
        start: fc.tuple(...shape.map(() => fc.integer({ min: 0, max: 2 }))),
        step: fc.tuple(...shape.map(() => fc.integer({ min: 1, max: 3 }))),
        extra: fc.tuple(...shape.map(() => fc.integer({ min: 0, max: 2 }))),
        seed: seedArb,
      }),
    ),
    ({ shape, start, step, extra, seed }) => {
      const out = shape.map((n, d) => start[d] + (n - 1) * step[d] + 1 + extra[d]);
      return { inputs: [rand(shape, seed)], f: (x) => R.embed(x, out, start, step) };
    },
  ),
  op('concat', concatArb, ({ shape, axis, sizes, seed }) => {
    const ax = axis < 0 ? axis + shape.length : axis;
    const inputs = sizes.map((n, i) => rand(shape.map((d, j) => (j === ax ? n : d)), seed + i));
    return { inputs, f: (...xs) => R.concat(xs, axis) };
  }),
  op(
    'split',
    concatArb,
    ({ shape, axis, sizes, seed }) => {
      const ax = axis < 0 ? axis + shape.length : axis;
      const total = sizes.reduce((a, b) => a + b, 0);
      return { inputs: [rand(shape.map((d, j) => (j === ax ? total : d)), seed)], f: (x) => R.split(x, sizes, axis) };
    },
  ),
  op(
    'chunk',
    fc.record({ shape: shapeArb(1, 3), parts: fc.integer({ min: 1, max: 3 }), seed: seedArb }),
    ({ shape, parts, seed }) => ({ inputs: [rand([...shape, parts * 2], seed)], f: (x) => R.chunk(x, parts, -1) }),
  ),
  op(
    'stack',
    shapeArb(0, 3).chain((shape) => fc.record({ shape: fc.constant(shape), axis: axisArb(shape.length + 1), count: fc.integer({ min: 1, max: 3 }), seed: seedArb })),
    ({ shape, axis, count, seed }) => ({
      inputs: Array.from({ length: count }, (_, i) => rand(shape, seed + i)),
      f: (...xs) => stackTensors(xs, axis),
    }),
  ),
  op(
    'take',
    shapeArb(1, 3).chain((shape) =>
      fc.record({ shape: fc.constant(shape), axis: axisArb(shape.length), idx: shapeArb(0, 2), seed: seedArb }),
    ),
    ({ shape, axis, idx, seed }) => {
      const n = shape[axis < 0 ? axis + shape.length : axis];
      const indices = R.tensor(uniform(sizeOf(idx), seed + 3, 0, n).map(Math.floor), idx);
      return { inputs: [rand(shape, seed), indices], f: (x, i) => R.take(x, i, axis), wrt: [0] };
    },
  ),
  op(
    'scatterAdd',
    shapeArb(1, 3).chain((shape) =>
      fc.record({ shape: fc.constant(shape), axis: fc.nat({ max: shape.length - 1 }), idx: shapeArb(0, 2), seed: seedArb }),
    ),
    ({ shape, axis, idx, seed }) => {
      const n = shape[axis];
      const indices = R.tensor(uniform(sizeOf(idx), seed + 3, 0, n).map(Math.floor), idx);
      const g = [...shape.slice(0, axis), ...idx, ...shape.slice(axis + 1)];
      return { inputs: [rand(g, seed), indices], f: (x, i) => R.scatterAdd(x, i, axis, n), wrt: [0] };
    },
  ),
  op('matmul', matmulArb, ({ a, b, opts, seed }) => ({
    inputs: [rand(a, seed), rand(b, seed + 1)],
    f: (x, y) => R.matmul(x, y, opts),
  }), true),
  op('conv', convArb, ({ x, w, opts, seed }) => ({
    inputs: [rand(x, seed), rand(w, seed + 1)],
    f: (a, b) => R.conv(a, b, opts),
  }), true),
  op(
    'depthwiseConv3d',
    fc.record({
      n: fc.integer({ min: 1, max: 2 }),
      c: fc.integer({ min: 1, max: 3 }),
      kernel: fc.tuple(fc.integer({ min: 1, max: 3 }), fc.integer({ min: 1, max: 3 }), fc.integer({ min: 1, max: 3 })),
      extra: fc.tuple(fc.integer({ min: 0, max: 2 }), fc.integer({ min: 0, max: 2 }), fc.integer({ min: 0, max: 2 })),
      stride: fc.tuple(fc.integer({ min: 1, max: 2 }), fc.integer({ min: 1, max: 2 }), fc.integer({ min: 1, max: 2 })),
      padding: fc.tuple(fc.integer({ min: 0, max: 1 }), fc.integer({ min: 0, max: 1 }), fc.integer({ min: 0, max: 1 })),
      seed: seedArb,
    }),
    ({ n, c, kernel, extra, stride, padding, seed }) => ({
      inputs: [rand([n, ...kernel.map((k, i) => k + extra[i]), c], seed), rand([c, 1, ...kernel], seed + 1)],
      f: (a, b) => R.depthwiseConv3d(a, b, { stride, padding }),
    }),
    true,
  ),
  op('maxPool3d', poolArb, ({ x, kernel, stride, padding, seed }) => ({
    inputs: [R.tensor(distinct(sizeOf(x), seed), x)],
    f: (a) => R.maxPool3d(a, kernel, stride, padding),
  })),
  op('avgPool3d', poolArb, ({ x, kernel, stride, padding, seed }) => ({
    inputs: [rand(x, seed)],
    f: (a) => R.avgPool3d(a, kernel, stride, padding),
  })),
  ...(['softmax', 'logSoftmax'] as const).map((name) =>
    op(
      name,
      shapeArb(1, 4).chain((shape) => fc.record({ shape: fc.constant(shape), axis: axisArb(shape.length), seed: seedArb })),
      ({ shape, axis, seed }) => ({ inputs: [R.tensor(uniform(sizeOf(shape), seed, -2, 2), shape)], f: (x) => R[name](x, axis) }),
      true,
    ),
  ),
  op(
    'layerNorm',
    fc.record({ shape: shapeArb(0, 3), n: fc.integer({ min: 2, max: 4 }), affine: fc.boolean(), seed: seedArb }),
    ({ shape, n, affine, seed }) => {
      const xs = [...shape, n];
      const inputs = [R.tensor(spreadRows(xs, seed), xs)];
      if (!affine) return { inputs, f: (x) => R.layerNorm(x, null, null) };
      return { inputs: [...inputs, rand([n], seed + 1, 0.5, 1.5), rand([n], seed + 2)], f: (x, w, b) => R.layerNorm(x, w, b) };
    },
    true,
  ),
  unaryCase('gelu', R.gelu, u(-3, 3), true),
  // The ops of issue 11 item 7: activations, reductions, scans, index ops, einsum.
  unaryCase('sin', R.sin, u(-3, 3), true),
  unaryCase('cos', R.cos, u(-3, 3), true),
  unaryCase('sigmoid', R.sigmoid, u(-4, 4), true),
  unaryCase('softplus', R.softplus, u(-4, 4), true),
  // Reduced axes of size >= 2 (else logSumExp is the identity, with no curvature for the Taylor test).
  op(
    'logSumExp',
    shapeArb(1, 3).chain((shape) => fc.record({ shape: fc.constant(shape.map((d) => d + 1)), axes: fc.option(axesArb(shape.length).filter((a) => a.length > 0), { nil: undefined }), keepdims: fc.boolean(), seed: seedArb })),
    ({ shape, axes, keepdims, seed }) => ({ inputs: [R.tensor(uniform(sizeOf(shape), seed, -1.5, 1.5), shape)], f: (x) => R.logSumExp(x, axes, keepdims) }),
    true,
  ),
  op(
    'min',
    shapeArb(0, 4).chain((shape) => fc.record({ shape: fc.constant(shape), axes: fc.option(axesArb(shape.length), { nil: undefined }), keepdims: fc.boolean(), seed: seedArb })),
    ({ shape, axes, keepdims, seed }) => ({ inputs: [R.tensor(distinct(sizeOf(shape), seed), shape)], f: (x) => R.min(x, axes, keepdims) }),
  ),
  // Bounds and x have fractional parts >= 0.15 apart (x: .1-.2, lo: .6-.7, hi: .85-.95), so no step crosses a kink.
  op('clip (number bounds)', fc.record({ shape: shapeArb(0, 4), lo: fc.integer({ min: -2, max: 0 }), width: fc.integer({ min: 0, max: 2 }), seed: seedArb }), ({ shape, lo, width, seed }) => ({
    inputs: [R.tensor(offGrid(0.1, 0.2)(sizeOf(shape), seed), shape)],
    f: (x) => R.clip(x, lo + 0.65, lo + width + 0.9),
  })),
  op('clip (tensor bounds)', fc.record({ s: broadcastShapesArb(3), oneSided: fc.constantFrom('both', 'lo', 'hi'), seed: seedArb }), ({ s, oneSided, seed }) => ({
    inputs: [
      R.tensor(offGrid(0.1, 0.2)(sizeOf(s.shapes[0]), seed), s.shapes[0]),
      R.tensor(offGrid(0.6, 0.7)(sizeOf(s.shapes[1]), seed + 1).map((v) => v - 1), s.shapes[1]),
      R.tensor(offGrid(0.85, 0.95)(sizeOf(s.shapes[2]), seed + 2), s.shapes[2]),
    ],
    f: (x, lo, hi) => R.clip(x, oneSided === 'hi' ? null : lo, oneSided === 'lo' ? null : hi),
  })),
  op(
    'cumsum',
    shapeArb(1, 4).chain((shape) => fc.record({ shape: fc.constant(shape), axis: axisArb(shape.length), exclusive: fc.boolean(), reverse: fc.boolean(), seed: seedArb })),
    ({ shape, axis, exclusive, reverse, seed }) => ({ inputs: [rand(shape, seed)], f: (x) => R.cumsum(x, axis, { exclusive, reverse }) }),
  ),
  // No gradient (the output is an index): the laws compare values across modes and backends; the VJP is zero.
  ...(['argmax', 'argmin'] as const).map((name) =>
    op(
      name,
      shapeArb(0, 4).chain((shape) => fc.record({ shape: fc.constant(shape), axis: shape.length === 0 ? fc.constant(undefined) : fc.option(axisArb(shape.length), { nil: undefined }), keepdims: fc.boolean(), seed: seedArb })),
      ({ shape, axis, keepdims, seed }) => ({ inputs: [R.tensor(distinct(sizeOf(shape), seed), shape)], f: (x) => R[name](x, axis, keepdims), wrt: [] }),
    ),
  ).map((e) => ({ ...e, noGradient: true })),
  {
    ...op(
      'oneHot',
      fc.record({ shape: shapeArb(0, 3), n: fc.integer({ min: 1, max: 5 }), seed: seedArb }),
      ({ shape, n, seed }) => ({ inputs: [R.tensor(uniform(sizeOf(shape), seed, 0, n).map(Math.floor), shape)], f: (i) => R.oneHot(i, n), wrt: [] }),
    ),
    noGradient: true,
  },
  op('einsum', einsumArb, ({ spec, shapes, seed }) => ({
    inputs: shapes.map((s, i) => rand(s, seed + i)),
    f: (...xs) => R.einsum(spec, ...xs),
  }), true),
];

// ---------------------------------------------------------------------------------------------
// VJP checks and the property runner: the kit's

/** Σ a·b in float64. */
export const dot = kitDot;

/** One VJP check (the kit's 'fd' by default) of one case on the current backend. */
export function checkVjp(c: OpCase, seed: number, opts: VjpLawOptions & { checks?: readonly VjpCheck[] } = {}): Promise<Outcome> {
  return vjpLaw(fc.constant<VjpCase>(c), { checks: ['fd'], ...opts }).measure({ ...c, seed });
}

/** The kit's vjpLaw over an op's generated cases (each printed with the plain data it was built from). */
export function opLaw(entry: OpEntry, checks: readonly VjpCheck[], opts: VjpLawOptions = {}) {
  return vjpLaw(entry.arb.map((p) => ({ ...entry.build(p), spec: p })), { checks, ...opts });
}

/**
 * fc.assert, but the thrown error carries the failing assertion's message (uvu does not print
 * fast-check's `cause`), the counterexample and the seed/path to replay it (the kit's runner).
 */
export const assertProperty = kitAssertProperty;

/** fn throws an error of exactly class `cls` (not a subclass) with exactly `message`. */
export function throwsExactly(fn: () => unknown, cls: new (...a: never[]) => Error, message: string): void {
  try {
    fn();
  } catch (e) {
    assert.instance(e, cls);
    assert.is((e as Error).constructor, cls, `${String(e)} is a subclass of ${cls.name}`);
    assert.is((e as Error).message, message);
    return;
  }
  assert.unreachable(`expected ${cls.name}: ${message}, nothing was thrown`);
}

/** Whether two tensors hold the same float32 bit patterns, element for element (NaN payloads and -0 included). */
export function sameBits(a: Tensor, b: Tensor): boolean {
  return sameArrayBits(a.dataSync(), b.dataSync());
}

/** sameBits for float32 arrays. */
export function sameArrayBits(a: Float32Array, b: Float32Array): boolean {
  const x = new Uint32Array(Float32Array.from(a).buffer);
  const y = new Uint32Array(Float32Array.from(b).buffer);
  return x.length === y.length && x.every((v, i) => v === y[i]);
}

/** Element-wise |got - want| <= tol * (1 + |want|) for plain arrays, naming `what` and the index. */
export function closeValues(got: readonly number[], want: readonly number[], tol: number, what: string): void {
  assert.is(got.length, want.length, `${what}: length`);
  got.forEach((g, i) => assert.ok(Math.abs(g - want[i]!) <= tol * (1 + Math.abs(want[i]!)), `${what}[${i}]: ${g} vs ${want[i]}`));
}
