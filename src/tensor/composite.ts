/**
 * Composite ops written from the primitives (autodiff differentiates them through the primitives):
 * softmax, logSoftmax and layerNorm around the fused row primitives of fused.ts (softmaxLast,
 * normalizeLast; gelu is one), sigmoid, softplus, logSumExp, min, clip, oneHot.
 */
import { ArgumentError, ShapeError } from './errors.ts';
import { getBackend } from '../backend/backend.ts';
import { layerNormAffine, normalizeLast, softmaxLast } from './fused.ts';
import { abs, add, div, equal, exp, greater, greaterEqual, less, log, max, mul, neg, reshape, sub, sum, toTensor, transpose, where, type TensorLike } from './ops.ts';
import { checkShape, describe, fmt, normAxes, normAxis } from './shape.ts';
import { arange, assertTensor, full, isTensor, view, type Tensor } from './tensor.ts';

/** A view that is not reported to autodiff, so no gradient flows through it. */
const detach = (t: Tensor): Tensor => view(t, t.shape);

/** softmax along `axis` (fused on the last axis; other axes are moved last and back). */
export function softmax(x: Tensor, axis = -1): Tensor {
  assertTensor('softmax', x);
  const ax = normAxis('softmax', axis, x.rank);
  if (ax === x.rank - 1) return softmaxLast(x);
  return transpose(softmaxLast(transpose(x, ax, -1)), ax, -1);
}

export function logSoftmax(x: Tensor, axis = -1): Tensor {
  const shifted = sub(x, detach(max(x, axis, true)));
  return sub(shifted, log(sum(exp(shifted), axis, true)));
}

/** LayerNorm over the last axis: (x - mean) / sqrt(var + eps) * weight + bias (biased variance, as PyTorch). */
export function layerNorm(x: Tensor, weight: Tensor | null, bias: Tensor | null, eps = 1e-5): Tensor {
  // On the host backends (webasm, cpu) weight and bias of shape [C] fuse into one op; the GPU backends
  // keep normalize, mul, add (their row kernels are WGSL: wgsl-kernels.ts).
  assertTensor('layerNorm', x, 'input');
  const C = x.shape[x.rank - 1]; // undefined for a scalar: no vector matches, normalize reports it
  const host = getBackend() === 'webasm' || getBackend() === 'cpu';
  const vector = (t: Tensor | null): t is Tensor => isTensor(t) && t.rank === 1 && t.shape[0] === C;
  if (host && vector(weight) && vector(bias)) {
    return layerNormAffine(x, weight, bias, eps);
  }
  let y = normalizeLast(x, eps);
  if (weight !== null) y = mul(y, weight);
  if (bias !== null) y = add(y, bias);
  return y;
}

export { gelu } from './fused.ts';

// ---------------------------------------------------------------------------------------------
// Activations, reductions and helpers from the primitives, in numerically stable forms. Every branch of a
// `where` stays finite for every input, so no NaN leaks into gradients (0 * inf) from the unused side.

/** [x >= 0, e^-|x|]: e^-|x| in (0, 1] never overflows; written with `where` so its derivative is right at 0. */
function signAndExpNegAbs(x: Tensor): [Tensor, Tensor] {
  const pos = greaterEqual(x, 0);
  return [pos, exp(where(pos, neg(x), x))];
}

/** The logistic function 1 / (1 + e^-x), for every x (as torch.sigmoid / jax.nn.sigmoid). */
export function sigmoid(x: Tensor): Tensor {
  assertTensor('sigmoid', x);
  const [pos, z] = signAndExpNegAbs(x);
  const r = div(1, add(1, z));
  return where(pos, r, mul(z, r));
}

/**
 * log(1 + z) to full float32 accuracy for small z >= 0 (Kahan's log(u) z / (u - 1) with u = 1 + z rounded).
 * Differentiated as log(1 + z): the correction is detached, its value is what counts.
 */
function log1pAccurate(z: Tensor): Tensor {
  const plain = log(add(1, z));
  const zd = detach(z);
  const u = add(1, zd);
  const exact = equal(u, 1);
  const kahan = where(exact, zd, div(mul(log(u), zd), where(exact, 1, sub(u, 1))));
  return add(plain, detach(sub(kahan, detach(plain))));
}

/** log(1 + e^x), for every x (as torch.nn.functional.softplus / jax.nn.softplus): max(x, 0) + log1p(e^-|x|). */
export function softplus(x: Tensor): Tensor {
  assertTensor('softplus', x);
  const [pos, z] = signAndExpNegAbs(x);
  return add(where(pos, x, 0), log1pAccurate(z));
}

/**
 * log(sum(exp(x))) over `axes` (default: all), shifted by the max so nothing overflows (as
 * torch.logsumexp / jax.nn.logsumexp). Rows of -Infinity give -Infinity; an empty axis gives -Infinity.
 */
export function logSumExp(x: Tensor, axes?: number | readonly number[], keepdims = false): Tensor {
  assertTensor('logSumExp', x);
  const ax = normAxes('logSumExp', axes, x.rank);
  const outShape = x.shape.flatMap((d, i) => (!ax.includes(i) ? [d] : keepdims ? [1] : []));
  if (ax.some((a) => x.shape[a] === 0)) return full(outShape, -Infinity);
  // The shift is a constant to autodiff (it cancels); a non-finite max (all -Infinity) shifts by 0.
  const m = detach(max(x, ax, true));
  const shift = where(less(abs(m), Infinity), m, 0);
  const out = add(log(sum(exp(sub(x, shift)), ax, true)), shift);
  return reshape(out, outShape);
}

/** The minimum over `axes` (default: all); ties share the gradient, as max. */
export function min(x: Tensor, axes?: number | readonly number[], keepdims = false): Tensor {
  assertTensor('min', x);
  const ax = normAxes('min', axes, x.rank);
  if (ax.some((a) => x.shape[a] === 0)) throw new ShapeError('min', `cannot take the min over an empty axis of shape ${fmt(x.shape)}`);
  return neg(max(neg(x), ax, keepdims));
}

/**
 * x limited to [lo, hi] (as torch.clamp: lo > hi gives hi everywhere); lo or hi may be null for one side,
 * numbers or tensors broadcasting against x. The gradient flows to x inside [lo, hi] (bounds included, as
 * PyTorch) and to a tensor bound where it is the result.
 */
export function clip(x: Tensor, lo: TensorLike | null, hi: TensorLike | null): Tensor {
  const op = 'clip';
  assertTensor(op, x);
  if ((lo === null || lo === undefined) && (hi === null || hi === undefined)) throw new ArgumentError(op, 'at least one of lo and hi must be given');
  const bound = (v: TensorLike, what: string) => {
    if (Number.isNaN(v)) throw new ArgumentError(op, `${what} is NaN`);
    return toTensor(op, v, what);
  };
  let y = x;
  if (lo !== null && lo !== undefined) {
    const l = bound(lo, 'lo');
    y = where(less(y, l), l, y);
  }
  if (hi !== null && hi !== undefined) {
    const h = bound(hi, 'hi');
    y = where(greater(y, h), h, y);
  }
  return y;
}

/**
 * One-hot rows: out[..., k] = 1 where indices[...] == k, for k in [0, numClasses); shape [...indices.shape,
 * numClasses]. Indices must be integers in range (checked where their values are on the host; on an
 * asynchronous backend an out-of-range index gives a row of zeros, as jax.nn.one_hot). Not differentiable.
 */
export function oneHot(indices: Tensor, numClasses: number): Tensor {
  const op = 'oneHot';
  assertTensor(op, indices, 'indices');
  if (!Number.isInteger(numClasses) || numClasses < 1) {
    throw new ArgumentError(op, `numClasses must be a positive integer, got ${describe(numClasses)}`);
  }
  checkShape(op, [...indices.shape, numClasses]);
  const host = indices.storage.host;
  if (host !== null) {
    const bad = host.find((v) => !Number.isInteger(v) || v < 0 || v >= numClasses);
    if (bad !== undefined) throw new ShapeError(op, `index ${bad} is not an integer in [0, ${numClasses})`);
  }
  return equal(reshape(detach(indices), [...indices.shape, 1]), arange(numClasses));
}
