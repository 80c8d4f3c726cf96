/**
 * Every VJP rule of the primitive ops, in one table (in the spirit of tinygrad's gradient.py).
 * `save` says what the node keeps for the backward pass: that choice is what memory accounting counts,
 * and a rule only reads what it saved.
 */
import type { Attrs } from '../tensor/observer.ts';
import * as o from '../tensor/ops.ts';
import { avgPool3d, avgPoolGrad, conv, convTranspose, convWeightGrad, maxPoolGrad, maxPoolSelect, type PoolAttrs } from '../tensor/conv.ts';
import { matmul } from '../tensor/matmul.ts';
import { geluGrad, normalizeGrad, normalizeLast, softmaxGrad } from '../tensor/fused.ts';
import { depthwiseConv3d, depthwiseConv3dGradInput, depthwiseConv3dGradWeight } from '../tensor/depthwise.ts';
import type { Shape } from '../tensor/shape.ts';
import type { Tensor } from '../tensor/tensor.ts';

export interface RuleContext {
  /** The op's inputs, if the rule saves them (else empty). */
  readonly x: readonly Tensor[];
  /** The op's output, if the rule saves it. */
  readonly y: Tensor | undefined;
  readonly shapes: readonly Shape[];
  readonly attrs: Attrs;
  /** needs[i]: whether input i needs a cotangent; expensive rules skip the others (return null). */
  readonly needs: readonly boolean[];
}

export interface Rule {
  readonly save: readonly ('inputs' | 'output')[];
  readonly vjp: (g: Tensor, ctx: RuleContext) => (Tensor | null)[];
}

const TWO_OVER_SQRT_PI = 2 / Math.sqrt(Math.PI);
const noGrad = (n: number): Rule => ({ save: [], vjp: () => Array(n).fill(null) });

/** Gradient share of a for max/min(a, b): 1 where a wins, 1/2 on ties (as PyTorch). */
const winShare = (a: Tensor, b: Tensor, cmp: 'greater' | 'less') => o.add(o.binary(cmp, a, b), o.mul(o.equal(a, b), 0.5));

/**
 * The rules of a convolution y = conv(x, w) and of its two gradient ops. gradInput(g, w) and
 * gradWeight(x, g) are linear in both operands, so the adjoints of each are the other two ops.
 */
function convolutionRules<A>(
  name: string, inputName: string, weightName: string,
  fwd: (x: Tensor, w: Tensor, a: A) => Tensor,
  gradInput: (g: Tensor, w: Tensor, xShape: Shape, a: A) => Tensor,
  gradWeight: (x: Tensor, g: Tensor, wShape: Shape, a: A) => Tensor,
): Record<string, Rule> {
  const attrsOf = (attrs: Attrs) => attrs as unknown as A;
  return {
    [name]: {
      save: ['inputs'],
      vjp: (g, { x: [x, w], attrs, needs }) => [
        needs[0] ? gradInput(g, w, x.shape, attrsOf(attrs)) : null,
        needs[1] ? gradWeight(x, g, w.shape, attrsOf(attrs)) : null,
      ],
    },
    [inputName]: {
      save: ['inputs'],
      vjp: (h, { x: [g, w], attrs }) => [fwd(h, w, attrsOf(attrs)), gradWeight(h, g, w.shape, attrsOf(attrs))],
    },
    [weightName]: {
      save: ['inputs'],
      vjp: (h, { x: [x, g], attrs }) => [gradInput(g, h, x.shape, attrsOf(attrs)), fwd(x, h, attrsOf(attrs))],
    },
  };
}

export const RULES: Readonly<Record<string, Rule>> = {
  neg: { save: [], vjp: (g) => [o.neg(g)] },
  abs: { save: ['inputs'], vjp: (g, { x }) => [o.mul(g, o.sign(x[0]))] },
  exp: { save: ['output'], vjp: (g, { y }) => [o.mul(g, y!)] },
  log: { save: ['inputs'], vjp: (g, { x }) => [o.div(g, x[0])] },
  sqrt: { save: ['output'], vjp: (g, { y }) => [o.div(o.mul(g, 0.5), y!)] },
  rsqrt: { save: ['output'], vjp: (g, { y }) => [o.mul(o.mul(g, -0.5), o.mul(y!, o.mul(y!, y!)))] },
  tanh: { save: ['output'], vjp: (g, { y }) => [o.mul(g, o.sub(1, o.mul(y!, y!)))] },
  erf: { save: ['inputs'], vjp: (g, { x }) => [o.mul(g, o.mul(o.exp(o.neg(o.mul(x[0], x[0]))), TWO_OVER_SQRT_PI))] },
  relu: { save: ['output'], vjp: (g, { y }) => [o.mul(g, o.greater(y!, 0))] },
  sign: noGrad(1),

  add: { save: [], vjp: (g, { shapes, needs }) => [needs[0] ? o.sumTo(g, shapes[0]) : null, needs[1] ? o.sumTo(g, shapes[1]) : null] },
  sub: { save: [], vjp: (g, { shapes }) => [o.sumTo(g, shapes[0]), o.sumTo(o.neg(g), shapes[1])] },
  mul: {
    save: ['inputs'],
    vjp: (g, { x: [a, b], needs }) => [needs[0] ? o.sumTo(o.mul(g, b), a.shape) : null, needs[1] ? o.sumTo(o.mul(g, a), b.shape) : null],
  },
  div: {
    save: ['inputs'],
    vjp: (g, { x: [a, b] }) => [o.sumTo(o.div(g, b), a.shape), o.sumTo(o.neg(o.div(o.mul(g, a), o.mul(b, b))), b.shape)],
  },
  pow: {
    save: ['inputs', 'output'],
    vjp: (g, { x: [a, b], y }) => [
      o.sumTo(o.mul(g, o.mul(b, o.pow(a, o.sub(b, 1)))), a.shape),
      // d/db a^b = a^b log a, defined for a > 0 (0 elsewhere, as PyTorch gives for a = 0).
      o.sumTo(o.mul(g, o.where(o.greater(a, 0), o.mul(y!, o.log(o.maximum(a, 1e-30))), 0)), b.shape),
    ],
  },
  maximum: {
    save: ['inputs'],
    vjp: (g, { x: [a, b] }) => [o.sumTo(o.mul(g, winShare(a, b, 'greater')), a.shape), o.sumTo(o.mul(g, winShare(b, a, 'greater')), b.shape)],
  },
  minimum: {
    save: ['inputs'],
    vjp: (g, { x: [a, b] }) => [o.sumTo(o.mul(g, winShare(a, b, 'less')), a.shape), o.sumTo(o.mul(g, winShare(b, a, 'less')), b.shape)],
  },
  greater: noGrad(2),
  greaterEqual: noGrad(2),
  less: noGrad(2),
  lessEqual: noGrad(2),
  equal: noGrad(2),
  notEqual: noGrad(2),
  where: {
    save: ['inputs'],
    vjp: (g, { x: [c, a, b] }) => [null, o.sumTo(o.where(c, g, 0), a.shape), o.sumTo(o.where(c, 0, g), b.shape)],
  },

  sum: {
    save: [],
    vjp: (g, { shapes, attrs }) => {
      const axes = attrs.axes as number[];
      const kept = shapes[0].map((d, i) => (axes.includes(i) ? 1 : d));
      return [o.broadcastTo(o.reshape(g, kept), [...shapes[0]])];
    },
  },
  max: {
    // Ties share the gradient equally (torch.amax semantics).
    save: ['inputs', 'output'],
    vjp: (g, { x: [x], y, attrs }) => {
      const axes = attrs.axes as number[];
      const kept = x.shape.map((d, i) => (axes.includes(i) ? 1 : d));
      const mask = o.equal(x, o.reshape(y!, kept));
      const count = o.sum(mask, axes, true);
      return [o.mul(mask, o.div(o.reshape(g, kept), count))];
    },
  },

  reshape: { save: [], vjp: (g, { attrs }) => [o.reshape(g, [...(attrs.from as Shape)])] },
  permute: {
    save: [],
    vjp: (g, { attrs }) => {
      const perm = attrs.perm as number[];
      const inverse = perm.map((_, i) => perm.indexOf(i));
      return [o.permute(g, inverse)];
    },
  },
  broadcastTo: { save: [], vjp: (g, { attrs }) => [o.sumTo(g, attrs.from as Shape)] },
  slice: {
    save: [],
    vjp: (g, { attrs }) => [o.embed(g, [...(attrs.from as Shape)], attrs.start as number[], attrs.step as number[], 0)],
  },
  embed: {
    save: [],
    vjp: (g, { shapes, attrs }) => {
      const start = attrs.start as number[];
      const step = attrs.step as number[];
      // An empty axis stops where it starts (start - step + 1 could be negative: slice would count it from the end).
      const stop = shapes[0].map((n, d) => (n === 0 ? start[d] : start[d] + (n - 1) * step[d] + 1));
      return [o.slice(g, start, stop, step)];
    },
  },
  concat: { save: [], vjp: (g, { attrs }) => o.split(g, attrs.sizes as number[], attrs.axis as number) },
  take: {
    save: ['inputs'],
    vjp: (g, { x: [x, idx], attrs }) => [o.scatterAdd(g, idx, attrs.axis as number, x.shape[attrs.axis as number]), null],
  },
  scatterAdd: { save: ['inputs'], vjp: (g, { x: [, idx], attrs }) => [o.take(g, idx, attrs.axis as number), null] },

  matmul: {
    // C = op(A) op(B) with op = transpose where flagged; operands share one batch axis here.
    save: ['inputs'],
    vjp: (g, { x: [a, b], attrs, needs }) => {
      const { transA, transB } = attrs as { transA: boolean; transB: boolean };
      const ga = !needs[0] ? null : transA ? matmul(b, g, { transA: transB, transB: true }) : matmul(g, b, { transB: !transB });
      const gb = !needs[1] ? null : transB ? matmul(g, a, { transA: true, transB: transA }) : matmul(a, g, { transA: !transA });
      return [ga, gb];
    },
  },
  ...convolutionRules('conv', 'convTranspose', 'convWeightGrad', conv, convTranspose, convWeightGrad),
  maxPool: { save: ['inputs'], vjp: (g, { x: [x], attrs }) => [maxPoolGrad(x, g, attrs as unknown as PoolAttrs)] },
  avgPool: { save: [], vjp: (g, { shapes, attrs }) => [avgPoolGrad(g, shapes[0], attrs as unknown as PoolAttrs)] },
  avgPoolGrad: { save: [], vjp: (h, { attrs }) => [avgPool3d(h, (attrs as unknown as PoolAttrs).kernel, (attrs as unknown as PoolAttrs).stride, (attrs as unknown as PoolAttrs).padding)] },
  // maxPoolGrad(x, g) scatters g to each window's first maximum and maxPoolSelect(x, h) gathers from
  // there: each is linear in its second operand and the other's transpose; in x both are piecewise
  // constant (zero derivative almost everywhere).
  maxPoolGrad: { save: ['inputs'], vjp: (h, { x: [x], attrs }) => [null, maxPoolSelect(x, h, attrs as unknown as PoolAttrs)] },
  maxPoolSelect: { save: ['inputs'], vjp: (k, { x: [x], attrs }) => [null, maxPoolGrad(x, k, attrs as unknown as PoolAttrs)] },

  softmax: { save: ['output'], vjp: (g, { y }) => [softmaxGrad(y!, g)] },
  softmaxGrad: {
    // out = y * (g - s), s = sum(g * y): linear in g (the same op), and in y: h * (g - s) - g * sum(h * y).
    save: ['inputs'],
    vjp: (h, { x: [y, g] }) => [
      o.sub(o.mul(h, o.sub(g, o.sum(o.mul(g, y), -1, true))), o.mul(g, o.sum(o.mul(h, y), -1, true))),
      softmaxGrad(y, h),
    ],
  },
  normalize: { save: ['inputs'], vjp: (g, { x: [x], attrs }) => [normalizeGrad(x, g, attrs.eps as number)] },
  normalizeGrad: {
    // out = J(x)ᵀ g with J normalize's Jacobian, which is symmetric: the cotangent of g is normalizeGrad(x, h).
    // In x, with s = 1/sqrt(var + eps), xhat = (x - mean) s, m = mean(g xhat), k = mean(h xhat) per row:
    // d<h, out>/dx = -s² (xhat (mean((g - ḡ)(h - h̄)) - 3 m k) + k (g - ḡ) + m (h - h̄)).
    save: ['inputs'],
    vjp: (h, { x: [x, g], attrs, needs }) => {
      const eps = attrs.eps as number;
      if (!needs[0]) return [null, normalizeGrad(x, h, eps)];
      const row = (t: Tensor) => o.mean(t, -1, true);
      const xhat = normalizeLast(x, eps);
      const s2 = o.div(1, o.add(row(o.square(o.sub(x, row(x)))), eps));
      const gc = o.sub(g, row(g));
      const hc = o.sub(h, row(h));
      const m = row(o.mul(g, xhat));
      const k = row(o.mul(h, xhat));
      const c = o.sub(row(o.mul(gc, hc)), o.mul(o.mul(m, k), 3));
      const dx = o.neg(o.mul(s2, o.add(o.mul(xhat, c), o.add(o.mul(k, gc), o.mul(m, hc)))));
      return [dx, normalizeGrad(x, h, eps)];
    },
  },
  gelu: { save: ['inputs'], vjp: (g, { x: [x] }) => [geluGrad(x, g)] },
  geluGrad: {
    // g * gelu'(x): linear in g; d/dx gelu'(x) = phi(x) (2 - x^2).
    save: ['inputs'],
    vjp: (h, { x: [x, g] }) => [
      o.mul(o.mul(h, g), o.mul(o.mul(o.exp(o.mul(o.mul(x, x), -0.5)), 1 / Math.sqrt(2 * Math.PI)), o.sub(2, o.mul(x, x)))),
      geluGrad(x, h),
    ],
  },
  ...convolutionRules('depthwiseConv3d', 'depthwiseConv3dGradInput', 'depthwiseConv3dGradWeight', depthwiseConv3d, depthwiseConv3dGradInput, depthwiseConv3dGradWeight),
};
