/**
 * The row ops users call (softmax, logSoftmax, layerNorm, gelu): the fused row primitives of fused.ts
 * (softmaxLast, normalizeLast, gelu, each with its own VJP) plus ordinary ops around them.
 */
import { normalizeLast, softmaxLast } from './fused.ts';
import { add, exp, log, max, mul, sub, sum, transpose } from './ops.ts';
import { normAxis } from './shape.ts';
import { assertTensor, view, type Tensor } from './tensor.ts';

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
  let y = normalizeLast(x, eps);
  if (weight !== null) y = mul(y, weight);
  if (bias !== null) y = add(y, bias);
  return y;
}

export { gelu } from './fused.ts';
