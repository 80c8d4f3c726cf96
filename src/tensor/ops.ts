/**
 * The primitive ops. Each op function validates its arguments (errors name the op and the shapes) and
 * applies its primitive (src/tensor/primitive.ts): one declaration holding the shape rule, the kernels
 * (a gpu.js kernel, or its generated host loop on webasm) and the VJP rule with what it saves.
 */
import { concatKernel, embedKernel, scatterAddKernel, takeKernel } from '../backend/wgsl-kernels.ts';
import { ArgumentError, ShapeError } from './errors.ts';
import { contiguousRead, floorDiv, reduce, splitIndex, stridedMap, type StridedRead } from './codegen.ts';
import type { OpImpl } from './exec.ts';
import { apply, definePrimitive, noGradient, type Primitive, type RuleContext, type Save } from './primitive.ts';
import {
  broadcastShapes,
  broadcastStrides,
  checkShape,
  describe,
  fmt,
  normAxes,
  normAxis,
  sameShape,
  sizeOf,
  stridesOf,
  checkIntList,
  type Shape,
} from './shape.ts';
import { assertTensor, scalar, Tensor } from './tensor.ts';

export type TensorLike = Tensor | number;

export function toTensor(op: string, v: TensorLike, what: string): Tensor {
  if (typeof v === 'number') return scalar(v);
  return assertTensor(op, v, what);
}

// ---------------------------------------------------------------------------------------------
// Elementwise

/**
 * erf of the expression `v` (must be a plain variable name) as kernel-language arithmetic: the
 * Eigen/XLA float32 polynomial (|error| ~ 1 ulp), plain arithmetic, so it runs in every kernel language.
 */
export function erfExpr(v: string): string {
  const x = `Math.min(Math.max(${v}, -4), 4)`;
  const x2 = `(${x} * ${x})`;
  const horner = (cs: number[]) => cs.reduce<string>((acc, c, i) => (i === 0 ? `${c}` : `(${acc}) * ${x2} + (${c})`), '');
  const alpha = [-2.72614225801306e-10, 2.77068142495902e-8, -2.10102402082508e-6, -5.69250639462346e-5, -7.34990630326855e-4, -2.95459980854025e-3, -1.60960333262415e-2];
  const beta = [-1.45660718464996e-5, -2.13374055278905e-4, -1.68282697438203e-3, -7.37332916720468e-3, -1.42647390514189e-2];
  return `(${x} * (${horner(alpha)}) / (${horner(beta)}))`;
}
const ERF = erfExpr('x0');

/**
 * sin or cos of the variable `v` as kernel-language arithmetic: Cody-Waite reduction by π/2 (three-part
 * constant), then cephes' float32 minimax polynomials on [-π/4, π/4] picked by quadrant. GPU sin/cos carry no
 * accuracy guarantee (SwiftShader's are off by 5e-5); this is float32-accurate on every backend for |x| < 3e4
 * (k·1.5703125 stays exact), and identical code everywhere.
 */
export function sinCosExpr(v: string, cos: boolean): string {
  const k = `Math.floor(${v} * 0.6366197723675814 + 0.5)`;
  const r = `(((${v} - ${k} * 1.5703125) - ${k} * 0.0004837512969970703) - ${k} * 7.549789954891882e-8)`;
  const r2 = `(${r} * ${r})`;
  const s = `(${r} * (1 + ${r2} * (-0.16666654611 + ${r2} * (0.0083321608736 - ${r2} * 0.00019515295891))))`;
  const c = `(1 + ${r2} * (-0.5 + ${r2} * (0.04166664568298827 + ${r2} * (-0.001388731625493765 + ${r2} * 0.00002443315711809948))))`;
  const kq = cos ? `(${k} + 1)` : k;
  const q = `(${kq} - 4 * Math.floor(${kq} * 0.25))`;
  return `(${q} == 0 ? ${s} : (${q} == 1 ? ${c} : (${q} == 2 ? -${s} : -${c})))`;
}

/** The output shape of elementwise ops: the inputs broadcast together. */
const broadcastAll = (op: string, shapes: readonly Shape[]): Shape => shapes.reduce<Shape>((acc, s) => broadcastShapes(op, acc, s), []);

/** out[i] = expr(x0, x1, ...) over inputs broadcast to `out`: one strided map. */
export function elementwiseImpl(name: string, inputs: readonly Shape[], out: Shape, expr: string): OpImpl {
  return stridedMap(name, out, inputs.map((s) => ({ strides: broadcastStrides(s, out), offset: 0 })), expr);
}

/** The declaration of an elementwise primitive whose expression does not depend on attributes. */
function elementwisePrimitive(name: string, expr: string, save: Save, vjp: (g: Tensor, ctx: RuleContext<void>) => readonly (Tensor | null)[]): Primitive<void> {
  return definePrimitive<void>({
    name,
    shape: (inputs) => broadcastAll(name, inputs),
    impl: (inputs, _, out) => elementwiseImpl(name, inputs, out, expr),
    elementwise: { expr: () => expr },
    save,
    vjp,
  });
}

const TWO_OVER_SQRT_PI = 2 / Math.sqrt(Math.PI);

/** Gradient share of a for max/min(a, b): 1 where a wins, 1/2 on ties (as PyTorch). */
const winShare = (a: Tensor, b: Tensor, cmp: 'greater' | 'less'): Tensor => add(binary(cmp, a, b), mul(equal(a, b), 0.5));

export const UNARY = {
  neg: elementwisePrimitive('neg', '-x0', 'nothing', (g) => [neg(g)]),
  abs: elementwisePrimitive('abs', 'Math.abs(x0)', 'inputs', (g, { x }) => [mul(g, sign(x[0]))]),
  exp: elementwisePrimitive('exp', 'Math.exp(x0)', 'output', (g, { y }) => [mul(g, y!)]),
  log: elementwisePrimitive('log', 'Math.log(x0)', 'inputs', (g, { x }) => [div(g, x[0])]),
  sqrt: elementwisePrimitive('sqrt', 'Math.sqrt(x0)', 'output', (g, { y }) => [div(mul(g, 0.5), y!)]),
  rsqrt: elementwisePrimitive('rsqrt', '1 / Math.sqrt(x0)', 'output', (g, { y }) => [mul(mul(g, -0.5), mul(y!, mul(y!, y!)))]),
  tanh: elementwisePrimitive('tanh', 'Math.tanh(x0)', 'output', (g, { y }) => [mul(g, sub(1, mul(y!, y!)))]),
  erf: elementwisePrimitive('erf', ERF, 'inputs', (g, { x }) => [mul(g, mul(exp(neg(mul(x[0], x[0]))), TWO_OVER_SQRT_PI))]),
  relu: elementwisePrimitive('relu', '(x0 > 0 ? x0 : 0)', 'output', (g, { y }) => [mul(g, greater(y!, 0))]),
  sign: elementwisePrimitive('sign', '(x0 > 0 ? 1 : (x0 < 0 ? -1 : 0))', 'nothing', noGradient),
  sin: elementwisePrimitive('sin', sinCosExpr('x0', false), 'inputs', (g, { x }) => [mul(g, cos(x[0]))]),
  cos: elementwisePrimitive('cos', sinCosExpr('x0', true), 'inputs', (g, { x }) => [neg(mul(g, sin(x[0])))]),
} as const;
export type UnaryOp = keyof typeof UNARY;

export const BINARY = {
  add: elementwisePrimitive('add', 'x0 + x1', 'nothing', (g, { shapes, needs }) => [needs[0] ? sumTo(g, shapes[0]) : null, needs[1] ? sumTo(g, shapes[1]) : null]),
  sub: elementwisePrimitive('sub', 'x0 - x1', 'nothing', (g, { shapes }) => [sumTo(g, shapes[0]), sumTo(neg(g), shapes[1])]),
  mul: elementwisePrimitive('mul', 'x0 * x1', 'inputs', (g, { x: [a, b], needs }) => [needs[0] ? sumTo(mul(g, b), a.shape) : null, needs[1] ? sumTo(mul(g, a), b.shape) : null]),
  div: elementwisePrimitive('div', 'x0 / x1', 'inputs', (g, { x: [a, b] }) => [sumTo(div(g, b), a.shape), sumTo(neg(div(mul(g, a), mul(b, b))), b.shape)]),
  pow: elementwisePrimitive('pow', 'Math.pow(x0, x1)', 'both', (g, { x: [a, b], y }) => [
    sumTo(mul(g, mul(b, pow(a, sub(b, 1)))), a.shape),
    // d/db a^b = a^b log a, defined for a > 0 (0 elsewhere, as PyTorch gives for a = 0).
    sumTo(mul(g, where(greater(a, 0), mul(y!, log(maximum(a, 1e-30))), 0)), b.shape),
  ]),
  maximum: elementwisePrimitive('maximum', 'Math.max(x0, x1)', 'inputs', (g, { x: [a, b] }) => [sumTo(mul(g, winShare(a, b, 'greater')), a.shape), sumTo(mul(g, winShare(b, a, 'greater')), b.shape)]),
  minimum: elementwisePrimitive('minimum', 'Math.min(x0, x1)', 'inputs', (g, { x: [a, b] }) => [sumTo(mul(g, winShare(a, b, 'less')), a.shape), sumTo(mul(g, winShare(b, a, 'less')), b.shape)]),
  greater: elementwisePrimitive('greater', '(x0 > x1 ? 1 : 0)', 'nothing', noGradient),
  greaterEqual: elementwisePrimitive('greaterEqual', '(x0 >= x1 ? 1 : 0)', 'nothing', noGradient),
  less: elementwisePrimitive('less', '(x0 < x1 ? 1 : 0)', 'nothing', noGradient),
  lessEqual: elementwisePrimitive('lessEqual', '(x0 <= x1 ? 1 : 0)', 'nothing', noGradient),
  equal: elementwisePrimitive('equal', '(x0 == x1 ? 1 : 0)', 'nothing', noGradient),
  notEqual: elementwisePrimitive('notEqual', '(x0 != x1 ? 1 : 0)', 'nothing', noGradient),
} as const;
export type BinaryOp = keyof typeof BINARY;

export function unary(op: UnaryOp, x: Tensor): Tensor {
  assertTensor(op, x);
  return apply(UNARY[op], [x], undefined);
}

export function binary(op: BinaryOp, a: TensorLike, b: TensorLike): Tensor {
  const ta = toTensor(op, a, 'first argument');
  const tb = toTensor(op, b, 'second argument');
  broadcastShapes(op, ta.shape, tb.shape);
  return apply(BINARY[op], [ta, tb], undefined);
}

export const neg = (x: Tensor): Tensor => unary('neg', x);
export const abs = (x: Tensor): Tensor => unary('abs', x);
export const exp = (x: Tensor): Tensor => unary('exp', x);
export const log = (x: Tensor): Tensor => unary('log', x);
export const sqrt = (x: Tensor): Tensor => unary('sqrt', x);
export const rsqrt = (x: Tensor): Tensor => unary('rsqrt', x);
export const tanh = (x: Tensor): Tensor => unary('tanh', x);
export const erf = (x: Tensor): Tensor => unary('erf', x);
export const relu = (x: Tensor): Tensor => unary('relu', x);
export const sign = (x: Tensor): Tensor => unary('sign', x);
export const sin = (x: Tensor): Tensor => unary('sin', x);
export const cos = (x: Tensor): Tensor => unary('cos', x);

export const add = (a: TensorLike, b: TensorLike): Tensor => binary('add', a, b);
export const sub = (a: TensorLike, b: TensorLike): Tensor => binary('sub', a, b);
export const mul = (a: TensorLike, b: TensorLike): Tensor => binary('mul', a, b);
export const div = (a: TensorLike, b: TensorLike): Tensor => binary('div', a, b);
export const pow = (a: TensorLike, b: TensorLike): Tensor => binary('pow', a, b);
export const maximum = (a: TensorLike, b: TensorLike): Tensor => binary('maximum', a, b);
export const minimum = (a: TensorLike, b: TensorLike): Tensor => binary('minimum', a, b);
export const greater = (a: TensorLike, b: TensorLike): Tensor => binary('greater', a, b);
export const greaterEqual = (a: TensorLike, b: TensorLike): Tensor => binary('greaterEqual', a, b);
export const less = (a: TensorLike, b: TensorLike): Tensor => binary('less', a, b);
export const lessEqual = (a: TensorLike, b: TensorLike): Tensor => binary('lessEqual', a, b);
export const equal = (a: TensorLike, b: TensorLike): Tensor => binary('equal', a, b);
export const notEqual = (a: TensorLike, b: TensorLike): Tensor => binary('notEqual', a, b);

const WHERE = elementwisePrimitive('where', '(x0 != 0 ? x1 : x2)', 'inputs', (g, { x: [c, a, b] }) => [null, sumTo(where(c, g, 0), a.shape), sumTo(where(c, 0, g), b.shape)]);

/** cond != 0 ? a : b, with broadcasting over all three. */
export function where(cond: TensorLike, a: TensorLike, b: TensorLike): Tensor {
  const op = 'where';
  const ts = [toTensor(op, cond, 'condition'), toTensor(op, a, 'second argument'), toTensor(op, b, 'third argument')];
  broadcastAll(op, ts.map((t) => t.shape));
  return apply(WHERE, ts, undefined);
}

// ---------------------------------------------------------------------------------------------
// Reductions

export interface ReduceAttrs {
  /** Sorted, normalised axes. */
  readonly axes: readonly number[];
  readonly keepdims: boolean;
}

const reducedShape = (shape: Shape, { axes, keepdims }: ReduceAttrs): Shape =>
  keepdims ? shape.map((d, i) => (axes.includes(i) ? 1 : d)) : shape.filter((_, i) => !axes.includes(i));

const reduceImpl = (kind: 'sum' | 'max') => ([shape]: readonly Shape[], { axes }: ReduceAttrs, out: Shape): OpImpl =>
  axes.length === 0 ? stridedMap('copy', out, [contiguousRead(shape)], 'x0') : reduce(kind, shape, axes);

/** The shape of x with the reduced axes kept as 1 (to broadcast a reduced result back). */
const keptShape = (shape: Shape, axes: readonly number[]): number[] => shape.map((d, i) => (axes.includes(i) ? 1 : d));

/** The sum primitive (lowerings fuse it into elementwise groups as a summed output). */
export const SUM = definePrimitive<ReduceAttrs>({
  name: 'sum',
  shape: ([x], attrs) => reducedShape(x, attrs),
  impl: reduceImpl('sum'),
  save: 'nothing',
  vjp: (g, { shapes, attrs }) => [broadcastTo(reshape(g, keptShape(shapes[0], attrs.axes)), [...shapes[0]])],
});

const MAX = definePrimitive<ReduceAttrs>({
  name: 'max',
  shape: ([x], attrs) => reducedShape(x, attrs),
  impl: reduceImpl('max'),
  // Ties share the gradient equally (torch.amax semantics).
  save: 'both',
  vjp: (g, { x: [x], y, attrs: { axes } }) => {
    const kept = keptShape(x.shape, axes);
    const mask = equal(x, reshape(y!, kept));
    const count = sum(mask, axes, true);
    return [mul(mask, div(reshape(g, kept), count))];
  },
});

function reduceOp(kind: 'sum' | 'max', x: Tensor, axes?: number | readonly number[], keepdims = false): Tensor {
  assertTensor(kind, x);
  const ax = normAxes(kind, axes, x.rank);
  if (kind === 'max' && ax.some((a) => x.shape[a] === 0)) {
    throw new ShapeError(kind, `cannot take the max over an empty axis of shape ${fmt(x.shape)}`);
  }
  return apply(kind === 'sum' ? SUM : MAX, [x], { axes: ax, keepdims });
}

export const sum = (x: Tensor, axes?: number | readonly number[], keepdims = false): Tensor => reduceOp('sum', x, axes, keepdims);
export const max = (x: Tensor, axes?: number | readonly number[], keepdims = false): Tensor => reduceOp('max', x, axes, keepdims);

export function mean(x: Tensor, axes?: number | readonly number[], keepdims = false): Tensor {
  assertTensor('mean', x);
  const ax = normAxes('mean', axes, x.rank);
  const count = ax.reduce((n, a) => n * x.shape[a], 1);
  return mul(sum(x, ax, keepdims), 1 / count);
}

// ---------------------------------------------------------------------------------------------
// Scans and index reductions along one axis

/** The sizes before (`outer`), of (`n`) and after (`inner`) axis `axis` of `shape`. */
const aroundAxis = (shape: Shape, axis: number) => ({ outer: sizeOf(shape.slice(0, axis)), n: shape[axis], inner: sizeOf(shape.slice(axis + 1)) });

export interface CumsumAttrs {
  readonly axis: number;
  /** Position k sums the entries before k (not k itself). */
  readonly exclusive: boolean;
  /** Sum from the end: position k sums the entries at and after k. */
  readonly reverse: boolean;
}

function cumsumImpl(shape: Shape, { axis, exclusive, reverse }: CumsumAttrs): OpImpl {
  const { outer, n, inner } = aroundAxis(shape, axis);
  const key = `cumsum|${outer}|${n}|${inner}|${exclusive}|${reverse}`;
  const takes = reverse ? (exclusive ? 'j > k' : 'j >= k') : exclusive ? 'j < k' : 'j <= k';
  const kernelSource = (gpu: boolean): string => `function (a0) {
${floorDiv('this.thread.x', n * inner, 'o', gpu)}const rest = this.thread.x - o * ${n * inner};
${floorDiv('rest', inner, 'k', gpu)}const i = rest - k * ${inner};
let acc = 0;
for (let j = 0; j < ${n}; j++) {
  if (${takes}) { acc += a0[o * ${n * inner} + j * ${inner} + i]; }
}
return acc;
}`;
  // Host: one running sum per lane.
  const host = () => (ins: Float32Array[], out: Float32Array) => {
    const src = ins[0];
    for (let o = 0; o < outer; o++) {
      for (let i = 0; i < inner; i++) {
        let acc = 0;
        for (let s = 0; s < n; s++) {
          const at = o * n * inner + (reverse ? n - 1 - s : s) * inner + i;
          if (exclusive) {
            out[at] = acc;
            acc += src[at];
          } else {
            acc += src[at];
            out[at] = acc;
          }
        }
      }
    }
  };
  return { name: 'cumsum', kernel: (gpu) => ({ key, source: kernelSource(gpu) }), host };
}

const CUMSUM: Primitive<CumsumAttrs> = definePrimitive<CumsumAttrs>({
  name: 'cumsum',
  shape: ([x]) => x,
  impl: ([x], attrs) => cumsumImpl(x, attrs),
  save: 'nothing',
  // The transpose of a prefix sum is the suffix sum of the cotangent (and the other way round).
  vjp: (g, { attrs }) => [apply(CUMSUM, [g], { ...attrs, reverse: !attrs.reverse })],
});

/** Cumulative sum along `axis` (torch.cumsum / jnp.cumsum); `exclusive` starts from 0, `reverse` sums from the end. */
export function cumsum(x: Tensor, axis: number, opts: { readonly exclusive?: boolean; readonly reverse?: boolean } = {}): Tensor {
  const op = 'cumsum';
  assertTensor(op, x);
  if (x.rank === 0) return reshape(cumsum(reshape(x, [1]), axis === -1 ? 0 : axis, opts), []);
  const ax = normAxis(op, axis, x.rank);
  const { exclusive = false, reverse = false } = opts ?? {};
  if (typeof exclusive !== 'boolean' || typeof reverse !== 'boolean') {
    throw new ArgumentError(op, `options exclusive and reverse must be booleans, got ${describe(exclusive)} and ${describe(reverse)}`);
  }
  return apply(CUMSUM, [x], { axis: ax, exclusive, reverse });
}

function argImpl(kind: 'argmax' | 'argmin', shape: Shape, axis: number): OpImpl {
  const { outer, n, inner } = aroundAxis(shape, axis);
  const key = `${kind}|${outer}|${n}|${inner}`;
  // The first extreme wins; a NaN beats everything (the first NaN), as torch.argmax on the host and cpu kernels.
  const better = kind === 'argmax' ? 'v > best' : 'v < best';
  const kernelSource = (gpu: boolean): string => `function (a0) {
${floorDiv('this.thread.x', inner, 'o', gpu)}const i = this.thread.x - o * ${inner};
const base = o * ${n * inner} + i;
let best = a0[base];
let arg = 0;
for (let j = 1; j < ${n}; j++) {
  const v = a0[base + j * ${inner}];
  if (${better} || (v != v && best == best)) { best = v; arg = j; }
}
return arg;
}`;
  const host = () => (ins: Float32Array[], out: Float32Array) => {
    const src = ins[0];
    for (let o = 0; o < outer; o++) {
      for (let i = 0; i < inner; i++) {
        const base = o * n * inner + i;
        let best = src[base];
        let arg = 0;
        for (let j = 1; j < n; j++) {
          const v = src[base + j * inner];
          if ((kind === 'argmax' ? v > best : v < best) || (v !== v && best === best)) {
            best = v;
            arg = j;
          }
        }
        out[o * inner + i] = arg;
      }
    }
  };
  return { name: kind, kernel: (gpu) => ({ key, source: kernelSource(gpu) }), host };
}

export interface ArgAttrs {
  readonly axis: number;
  readonly keepdims: boolean;
}

const argPrimitive = (kind: 'argmax' | 'argmin'): Primitive<ArgAttrs> =>
  definePrimitive<ArgAttrs>({
    name: kind,
    shape: ([x], { axis, keepdims }) => reducedShape(x, { axes: [axis], keepdims }),
    impl: ([x], { axis }) => argImpl(kind, x, axis),
    save: 'nothing',
    vjp: noGradient,
  });
const ARG = { argmax: argPrimitive('argmax'), argmin: argPrimitive('argmin') };

function argReduce(kind: 'argmax' | 'argmin', x: Tensor, axis: number | undefined, keepdims: boolean): Tensor {
  assertTensor(kind, x);
  if (axis === undefined) {
    // Over all entries, indexing the flattened tensor (torch.argmax(x) / jnp.argmax(x)).
    const flat = argReduce(kind, reshape(x, [x.size]), 0, false);
    return keepdims ? reshape(flat, x.shape.map(() => 1)) : flat;
  }
  const ax = normAxis(kind, axis, x.rank);
  if (x.shape[ax] === 0) throw new ShapeError(kind, `cannot take the ${kind} over the empty axis ${ax} of shape ${fmt(x.shape)}`);
  return apply(ARG[kind], [x], { axis: ax, keepdims });
}

/** Index of the largest entry along `axis` (the first on ties; over the flattened tensor without an axis). No gradient. */
export const argmax = (x: Tensor, axis?: number, keepdims = false): Tensor => argReduce('argmax', x, axis, keepdims);
/** Index of the smallest entry along `axis` (the first on ties; over the flattened tensor without an axis). No gradient. */
export const argmin = (x: Tensor, axis?: number, keepdims = false): Tensor => argReduce('argmin', x, axis, keepdims);

// ---------------------------------------------------------------------------------------------
// Movement

const RESHAPE = definePrimitive<{ readonly shape: Shape }>({
  name: 'reshape',
  shape: (_, { shape }) => shape,
  impl: () => {
    throw new ArgumentError('reshape', 'a view has no kernel');
  },
  view: true,
  save: 'nothing',
  vjp: (g, { shapes }) => [reshape(g, [...shapes[0]])],
});

/** Same data, new shape (one dimension may be -1). Shares the buffer. */
export function reshape(x: Tensor, shape: readonly number[]): Tensor {
  const op = 'reshape';
  assertTensor(op, x);
  if (!Array.isArray(shape)) throw new ArgumentError(op, `shape must be an array, got ${describe(shape)}`);
  const unknown = shape.filter((d) => d === -1).length;
  if (unknown > 1) throw new ShapeError(op, `at most one -1 is allowed in ${fmt(shape)}`);
  let target = [...shape];
  if (unknown === 1) {
    const known = sizeOf(shape.filter((d) => d !== -1));
    if (known === 0 || x.size % known !== 0) {
      throw new ShapeError(op, `cannot reshape ${fmt(x.shape)} (${x.size} values) into ${fmt(shape)}`);
    }
    target = shape.map((d) => (d === -1 ? x.size / known : d));
  }
  checkShape(op, target);
  if (sizeOf(target) !== x.size) {
    throw new ShapeError(op, `cannot reshape ${fmt(x.shape)} (${x.size} values) into ${fmt(shape)} (${sizeOf(target)} values)`);
  }
  return apply(RESHAPE, [x], { shape: target });
}

const PERMUTE = definePrimitive<{ readonly perm: readonly number[] }>({
  name: 'permute',
  shape: ([x], { perm }) => perm.map((a) => x[a]),
  impl: ([x], { perm }, out) => {
    const strides = stridesOf(x);
    return stridedMap('permute', out, [{ strides: perm.map((a) => strides[a]), offset: 0 }], 'x0');
  },
  save: 'nothing',
  vjp: (g, { attrs: { perm } }) => [permute(g, perm.map((_, i) => perm.indexOf(i)))],
});

export function permute(x: Tensor, perm: readonly number[]): Tensor {
  const op = 'permute';
  assertTensor(op, x);
  if (!Array.isArray(perm) || perm.length !== x.rank) {
    throw new ShapeError(op, `permutation ${Array.isArray(perm) ? fmt(perm) : describe(perm)} does not match rank ${x.rank} of shape ${fmt(x.shape)}`);
  }
  const p = perm.map((a) => normAxis(op, a, x.rank));
  if (new Set(p).size !== p.length) throw new ShapeError(op, `${fmt(perm)} is not a permutation`);
  return apply(PERMUTE, [x], { perm: p });
}

/** Swap two axes (default: the last two). */
export function transpose(x: Tensor, a = -2, b = -1): Tensor {
  assertTensor('transpose', x);
  const perm = [...x.shape.keys()];
  const i = normAxis('transpose', a, x.rank);
  const j = normAxis('transpose', b, x.rank);
  [perm[i], perm[j]] = [perm[j], perm[i]];
  return permute(x, perm);
}

const BROADCAST = definePrimitive<{ readonly shape: Shape }>({
  name: 'broadcastTo',
  shape: (_, { shape }) => shape,
  impl: (inputs, _, out) => elementwiseImpl('broadcast', inputs, out, 'x0'),
  elementwise: { expr: () => 'x0' },
  save: 'nothing',
  vjp: (g, { shapes }) => [sumTo(g, shapes[0])],
});

export function broadcastTo(x: Tensor, shape: readonly number[]): Tensor {
  const op = 'broadcastTo';
  assertTensor(op, x);
  checkShape(op, shape);
  const b = broadcastShapes(op, x.shape, shape);
  if (!sameShape(b, shape)) throw new ShapeError(op, `cannot broadcast ${fmt(x.shape)} to ${fmt(shape)}`);
  if (sameShape(x.shape, shape)) return x;
  return apply(BROADCAST, [x], { shape: [...shape] });
}

export interface SliceSpec {
  readonly start: readonly number[];
  readonly stop: readonly number[];
  readonly step: readonly number[];
}

const SLICE = definePrimitive<SliceSpec>({
  name: 'slice',
  shape: (_, { start, stop, step }) => start.map((b, d) => Math.max(0, Math.ceil((stop[d] - b) / step[d]))),
  impl: ([x], spec, out) => {
    const strides = stridesOf(x);
    const read: StridedRead = {
      strides: strides.map((s, d) => s * spec.step[d]),
      offset: strides.reduce((o, s, d) => o + s * spec.start[d], 0),
    };
    return stridedMap('slice', out, [read], 'x0');
  },
  save: 'nothing',
  vjp: (g, { shapes, attrs }) => [embed(g, [...shapes[0]], attrs.start, attrs.step, 0)],
});

/**
 * x[start:stop:step] on every axis (numpy semantics: negative indices count from the end, bounds are
 * clamped). Missing trailing axes take the whole axis. Steps must be positive.
 */
export function slice(x: Tensor, start: readonly number[], stop?: readonly (number | null)[], step?: readonly number[]): Tensor {
  const op = 'slice';
  assertTensor(op, x);
  checkIntList(op, 'start', start);
  if (stop !== undefined) checkIntList(op, 'stop', stop, true);
  if (step !== undefined) checkIntList(op, 'step', step);
  const spec = { start: [] as number[], stop: [] as number[], step: [] as number[] };
  for (let d = 0; d < x.rank; d++) {
    const n = x.shape[d];
    const st = step?.[d] ?? 1;
    if (!Number.isInteger(st) || st <= 0) throw new ArgumentError(op, `step ${st} on axis ${d} must be a positive integer`);
    const clamp = (v: number) => Math.min(Math.max(v < 0 ? v + n : v, 0), n);
    const b = clamp(start[d] ?? 0);
    const e = clamp(stop?.[d] ?? n);
    if (!Number.isInteger(b) || !Number.isInteger(e)) throw new ArgumentError(op, `bounds on axis ${d} must be integers`);
    spec.start.push(b);
    spec.stop.push(e);
    spec.step.push(st);
  }
  if (start.length > x.rank) throw new ShapeError(op, `${start.length} start indices for rank ${x.rank} shape ${fmt(x.shape)}`);
  return apply(SLICE, [x], spec);
}

export interface EmbedAttrs {
  readonly shape: Shape;
  readonly start: readonly number[];
  readonly step: readonly number[];
  readonly fill: number;
}

const EMBED = definePrimitive<EmbedAttrs>({
  name: 'embed',
  shape: (_, { shape }) => shape,
  impl: ([x], { start, step, fill }, out) => embedImpl(x, out, start, step, fill),
  save: 'nothing',
  vjp: (g, { shapes, attrs: { start, step } }) => {
    // An empty axis stops where it starts (start - step + 1 could be negative: slice would count it from the end).
    const stop = shapes[0].map((n, d) => (n === 0 ? start[d] : start[d] + (n - 1) * step[d] + 1));
    return [slice(g, start, stop, step)];
  },
});

/**
 * Place x into a tensor of `outShape` filled with `fill`, at positions start + i * step per axis:
 * the transpose of `slice`, and `pad` when steps are 1.
 */
export function embed(x: Tensor, outShape: readonly number[], start: readonly number[], step: readonly number[], fill = 0): Tensor {
  const op = 'embed';
  assertTensor(op, x);
  checkShape(op, outShape);
  if (outShape.length !== x.rank) throw new ShapeError(op, `output rank ${outShape.length} differs from input rank ${x.rank}`);
  checkIntList(op, 'start', start);
  checkIntList(op, 'step', step);
  if (start.length !== x.rank || step.length !== x.rank || step.some((v) => v < 1)) {
    throw new ArgumentError(op, `start ${fmt(start)} and step ${fmt(step)} must have ${x.rank} entries, steps positive`);
  }
  if (start.some((v) => v < 0)) throw new ShapeError(op, `input ${fmt(x.shape)} placed at ${fmt(start)} starts outside ${fmt(outShape)}`);
  for (let d = 0; d < x.rank; d++) {
    if (x.shape[d] > 0 && start[d] + (x.shape[d] - 1) * step[d] >= outShape[d]) {
      throw new ShapeError(op, `input ${fmt(x.shape)} placed at ${fmt(start)} with steps ${fmt(step)} does not fit in ${fmt(outShape)}`);
    }
  }
  return apply(EMBED, [x], { shape: [...outShape], start: [...start], step: [...step], fill });
}

function embedImpl(inShape: Shape, outShape: Shape, start: readonly number[], step: readonly number[], fill: number): OpImpl {
  const key = `embed|${inShape}|${outShape}|${start}|${step}|${fill}`;
  const inStrides = stridesOf(inShape);
  const rank = outShape.length;
  const kernelSource = (gpu: boolean) => {
    let body = 'let r = this.thread.x;\nlet off = 0;\nlet inside = 1;\n';
    for (let d = rank - 1; d >= 0; d--) {
      body += splitIndex('r', `c${d}`, outShape[d], gpu);
      body += `const u${d} = c${d} - ${start[d]};\n` + floorDiv(`u${d}`, step[d], `q${d}`, gpu);
      body += `if (u${d} < 0 || q${d} >= ${inShape[d]} || u${d} - q${d} * ${step[d]} != 0) { inside = 0; }\n`;
      body += `off += q${d} * ${inStrides[d]};\n`;
    }
    body += `if (inside == 1) { return a0[off]; }\nreturn ${fill};\n`;
    return `function (a0) {\n${body}}`;
  };
  // Host: fill, then write the input row by row (a block copy where the last axis has step 1),
  // advancing the output offset like an odometer over the outer axes.
  const host = () => (ins: Float32Array[], out: Float32Array) => {
    if (fill !== 0) out.fill(fill);
    const src = ins[0];
    if (src.length === 0) return;
    if (rank === 0) {
      out[0] = src[0];
      return;
    }
    const outStrides = stridesOf(outShape);
    const jump = outStrides.map((st, d) => st * step[d]);
    const last = rank - 1;
    const n = inShape[last];
    const rows = src.length / n;
    const idx = new Array<number>(last).fill(0);
    let o = start.reduce((acc, st, d) => acc + st * outStrides[d], 0);
    for (let r = 0; r < rows; r++) {
      const si = r * n;
      if (jump[last] === 1) out.set(src.subarray(si, si + n), o);
      else for (let j = 0; j < n; j++) out[o + j * jump[last]] = src[si + j];
      for (let d = last - 1; d >= 0; d--) {
        o += jump[d];
        if (++idx[d] < inShape[d]) break;
        o -= inShape[d] * jump[d];
        idx[d] = 0;
      }
    }
  };
  return { name: 'embed', kernel: (gpu) => ({ key, source: kernelSource(gpu) }), host, wgsl: () => embedKernel(inShape, outShape, start, step, fill) };
}

/** Constant padding: `widths[d] = [before, after]` for each axis (missing axes get [0, 0]). */
export function pad(x: Tensor, widths: readonly (readonly [number, number])[], value = 0): Tensor {
  assertTensor('pad', x);
  if (!Array.isArray(widths) || widths.length > x.rank || widths.some((p) => !Array.isArray(p) || p.length !== 2)) {
    throw new ArgumentError('pad', `widths must be at most ${x.rank} [before, after] pairs, got ${JSON.stringify(widths)}`);
  }
  const w = x.shape.map((_, d) => widths[d] ?? [0, 0]);
  for (const [b, a] of w) {
    if (!Number.isInteger(b) || !Number.isInteger(a) || b < 0 || a < 0) {
      throw new ArgumentError('pad', `widths must be non-negative integers, got ${JSON.stringify(widths)}`);
    }
  }
  const outShape = x.shape.map((n, d) => n + w[d][0] + w[d][1]);
  return embed(x, outShape, w.map((p) => p[0]), w.map(() => 1), value);
}

const CONCAT = definePrimitive<{ readonly axis: number }>({
  name: 'concat',
  shape: (inputs, { axis }) => inputs[0].map((d, i) => (i === axis ? inputs.reduce((n, s) => n + s[axis], 0) : d)),
  impl: (inputs, { axis }, out) => concatImpl(inputs, out, axis),
  save: 'nothing',
  vjp: (g, { shapes, attrs: { axis } }) => split(g, shapes.map((s) => s[axis]), axis),
});

export function concat(xs: readonly Tensor[], axis = 0): Tensor {
  const op = 'concat';
  if (!Array.isArray(xs as unknown) || xs.length === 0) throw new ArgumentError(op, "expected a non-empty array of tensors");
  xs.forEach((t, i) => assertTensor(op, t, `element ${i}`));
  const rank = xs[0].rank;
  const ax = normAxis(op, axis, rank);
  for (const t of xs) {
    if (t.rank !== rank || t.shape.some((d, i) => i !== ax && d !== xs[0].shape[i])) {
      throw new ShapeError(op, `shapes ${xs.map((s) => fmt(s.shape)).join(', ')} differ outside axis ${ax}`);
    }
  }
  if (xs.length === 1) return xs[0];
  return apply(CONCAT, xs, { axis: ax });
}

function concatImpl(shapes: readonly Shape[], outShape: Shape, axis: number): OpImpl {
  const key = `concat|${shapes.map((s) => s.join('x')).join(';')}|${axis}`;
  const outer = sizeOf(outShape.slice(0, axis));
  const inner = sizeOf(outShape.slice(axis + 1));
  const blocks = shapes.map((s) => s[axis] * inner);
  const row = outShape[axis] * inner;
  const kernelSource = (gpu: boolean) => {
    let body = floorDiv('this.thread.x', row, 'o', gpu) + `const w = this.thread.x - o * ${row};\n`;
    let start = 0;
    blocks.forEach((b, k) => {
      const cond = k === blocks.length - 1 ? 'true' : `w < ${start + b}`;
      body += `if (${cond}) { return a${k}[o * ${b} + w - ${start}]; }\n`;
      start += b;
    });
    body += 'return 0;\n';
    return `function (${blocks.map((_, k) => `a${k}`).join(', ')}) {\n${body}}`;
  };
  const host = () => (ins: Float32Array[], out: Float32Array) => {
    let w = 0;
    for (let o = 0; o < outer; o++) {
      for (let k = 0; k < ins.length; k++) {
        out.set(ins[k].subarray(o * blocks[k], (o + 1) * blocks[k]), w);
        w += blocks[k];
      }
    }
  };
  return { name: 'concat', kernel: (gpu) => ({ key, source: kernelSource(gpu) }), host, fills: true, wgsl: () => concatKernel(blocks, row, outer * row) };
}

export function stack(xs: readonly Tensor[], axis = 0): Tensor {
  if (!Array.isArray(xs as unknown) || xs.length === 0) throw new ArgumentError('stack', 'expected a non-empty array of tensors');
  xs.forEach((t, i) => assertTensor('stack', t, `element ${i}`));
  const rank = xs[0].rank;
  const ax = normAxis('stack', axis, rank + 1);
  if (rank + 1 > 6) {
    const shape = [...xs[0].shape.slice(0, ax), xs.length, ...xs[0].shape.slice(ax)];
    throw new ShapeError('stack', `stacking rank-${rank} tensors of shape ${fmt(xs[0].shape)} gives shape ${fmt(shape)} of rank ${rank + 1}, above the maximum rank 6`);
  }
  return concat(xs.map((t) => reshape(t, [...t.shape.slice(0, ax), 1, ...t.shape.slice(ax)])), ax);
}

/** Split along `axis` into pieces of the given sizes (or `n` equal pieces). */
export function split(x: Tensor, sizesOrCount: number | readonly number[], axis = 0): Tensor[] {
  const op = 'split';
  assertTensor(op, x);
  const ax = normAxis(op, axis, x.rank);
  const n = x.shape[ax];
  let sizes: number[];
  if (typeof sizesOrCount === 'number') {
    if (!Number.isInteger(sizesOrCount) || sizesOrCount <= 0 || n % sizesOrCount !== 0 || (n === 0 && sizesOrCount > 1)) {
      throw new ShapeError(op, `axis ${ax} of shape ${fmt(x.shape)} (size ${n}) cannot be split into ${sizesOrCount} equal parts`);
    }
    sizes = Array(sizesOrCount).fill(n / sizesOrCount);
  } else {
    checkIntList(op, 'sizes', sizesOrCount);
    sizes = [...sizesOrCount];
    if (sizes.reduce((a, b) => a + b, 0) !== n || sizes.some((s) => !Number.isInteger(s) || s < 0)) {
      throw new ShapeError(op, `sizes ${fmt(sizes)} do not add up to ${n} (axis ${ax} of ${fmt(x.shape)})`);
    }
  }
  let at = 0;
  return sizes.map((s) => {
    const start = x.shape.map((_, d) => (d === ax ? at : 0));
    const stop = x.shape.map((d, i) => (i === ax ? at + s : d));
    at += s;
    return slice(x, start, stop);
  });
}

/** torch.chunk for evenly divisible axes. */
export const chunk = (x: Tensor, n: number, axis = 0): Tensor[] => split(x, n, axis);

const TAKE = definePrimitive<{ readonly axis: number }>({
  name: 'take',
  shape: ([x, indices], { axis }) => [...x.slice(0, axis), ...indices, ...x.slice(axis + 1)],
  impl: ([x, indices], { axis }) => takeImpl(sizeOf(x.slice(0, axis)), x[axis], sizeOf(x.slice(axis + 1)), sizeOf(indices)),
  save: 'inputs',
  vjp: (g, { x: [x, idx], attrs: { axis } }) => [scatterAdd(g, idx, axis, x.shape[axis]), null],
});

/**
 * Gather along `axis`: out[..., i..., ...] = x[..., indices[i...], ...]; indices hold integers in
 * [0, x.shape[axis]) (stored as floats). Output shape: x.shape[:axis] + indices.shape + x.shape[axis+1:].
 */
export function take(x: Tensor, indices: Tensor, axis = 0): Tensor {
  const op = 'take';
  assertTensor(op, x);
  assertTensor(op, indices, 'indices');
  const ax = normAxis(op, axis, x.rank);
  const n = x.shape[ax];
  if (indices.storage.host !== null) {
    const bad = indices.storage.host.find((v) => !Number.isInteger(v) || v < 0 || v >= n);
    if (bad !== undefined) throw new ShapeError(op, `index ${bad} is out of range for axis ${ax} of shape ${fmt(x.shape)}`);
  }
  checkShape(op, [...x.shape.slice(0, ax), ...indices.shape, ...x.shape.slice(ax + 1)]);
  return apply(TAKE, [x, indices], { axis: ax });
}

function takeImpl(outer: number, n: number, inner: number, count: number): OpImpl {
  const key = `take|${outer}|${n}|${inner}|${count}`;
  const kernelSource = (gpu: boolean) =>
    `function (a0, a1) {
${floorDiv('this.thread.x', count * inner, 'o', gpu)}const rest = this.thread.x - o * ${count * inner};
${floorDiv('rest', inner, 'j', gpu)}const k = rest - j * ${inner};
return a0[o * ${n * inner} + a1[j] * ${inner} + k];
}`;
  const host = () => (ins: Float32Array[], out: Float32Array) => {
    const [src, idx] = ins;
    let w = 0;
    for (let o = 0; o < outer; o++) {
      for (let j = 0; j < count; j++) {
        const from = o * n * inner + idx[j] * inner;
        out.set(src.subarray(from, from + inner), w);
        w += inner;
      }
    }
  };
  return { name: 'take', kernel: (gpu) => ({ key, source: kernelSource(gpu) }), host, fills: true, wgsl: () => takeKernel(outer, n, inner, count) };
}

export interface ScatterAttrs {
  readonly axis: number;
  readonly size: number;
}

const SCATTER_ADD = definePrimitive<ScatterAttrs>({
  name: 'scatterAdd',
  shape: ([g, indices], { axis, size }) => [...g.slice(0, axis), size, ...g.slice(axis + indices.length)],
  impl: ([g, indices], { axis, size }) => scatterAddImpl(sizeOf(g.slice(0, axis)), size, sizeOf(g.slice(axis + indices.length)), sizeOf(indices)),
  save: 'inputs',
  vjp: (g, { x: [, idx], attrs: { axis } }) => [take(g, idx, axis), null],
});

/** The transpose of `take`: out has `size` entries on `axis`; out[..., indices[i], ...] += g[..., i, ...]. */
export function scatterAdd(g: Tensor, indices: Tensor, axis: number, size: number): Tensor {
  const op = 'scatterAdd';
  assertTensor(op, g);
  assertTensor(op, indices, 'indices');
  if (typeof size !== 'number' || !Number.isInteger(size) || size < 0) throw new ArgumentError(op, `size must be a non-negative integer, got ${describe(size)}`);
  const ax = normAxis(op, axis, g.rank - indices.rank + 1);
  return apply(SCATTER_ADD, [g, indices], { axis: ax, size });
}

function scatterAddImpl(outer: number, size: number, inner: number, count: number): OpImpl {
  const key = `scatterAdd|${outer}|${size}|${inner}|${count}`;
  return {
    name: 'scatterAdd',
    kernel: (gpu) => ({
      key,
      source: `function (a0, a1) {
${floorDiv('this.thread.x', size * inner, 'o', gpu)}const rest = this.thread.x - o * ${size * inner};
${floorDiv('rest', inner, 's', gpu)}const k = rest - s * ${inner};
let acc = 0;
for (let j = 0; j < ${count}; j++) {
  if (a1[j] == s) { acc += a0[o * ${count * inner} + j * ${inner} + k]; }
}
return acc;
}`,
    }),
    wgsl: () => scatterAddKernel(outer, size, inner, count),
    host: () => (ins, out) => {
      const [src, idx] = ins;
      for (let o = 0; o < outer; o++) {
        for (let j = 0; j < count; j++) {
          const to = o * size * inner + idx[j] * inner;
          const from = o * count * inner + j * inner;
          for (let k = 0; k < inner; k++) out[to + k] += src[from + k];
        }
      }
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Helpers built on the primitives

/** Sum `g` down to `shape` (the transpose of broadcasting). */
export function sumTo(g: Tensor, shape: Shape): Tensor {
  if (sameShape(g.shape, shape)) return g;
  const lead = g.rank - shape.length;
  const axes: number[] = [];
  for (let d = 0; d < g.rank; d++) {
    if (d < lead || (shape[d - lead] === 1 && g.shape[d] !== 1)) axes.push(d);
  }
  const s = axes.length > 0 ? sum(g, axes, true) : g;
  return reshape(s, [...shape]);
}

export const square = (x: Tensor) => mul(x, x);
export const expandDims = (x: Tensor, axis: number) => {
  const ax = normAxis('expandDims', axis, x.rank + 1);
  return reshape(x, [...x.shape.slice(0, ax), 1, ...x.shape.slice(ax)]);
};
export const squeeze = (x: Tensor, axis: number) => {
  const ax = normAxis('squeeze', axis, x.rank);
  if (x.shape[ax] !== 1) throw new ShapeError('squeeze', `axis ${axis} of shape ${fmt(x.shape)} has size ${x.shape[ax]}, not 1`);
  return reshape(x, x.shape.filter((_, i) => i !== ax));
};
