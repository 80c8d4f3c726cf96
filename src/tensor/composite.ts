/** Composite ops written from the primitives (autodiff differentiates them through the primitives). */
import { add, div, erf, exp, log, max, mean, mul, sqrt, sub, sum } from './ops.ts';
import { view, type Tensor } from './tensor.ts';

/** A view that is not reported to autodiff, so no gradient flows through it. */
const detach = (t: Tensor): Tensor => view(t, t.shape);

/** softmax along `axis` (max-shifted for stability; the shift carries no gradient). */
export function softmax(x: Tensor, axis = -1): Tensor {
  const shifted = sub(x, detach(max(x, axis, true)));
  const e = exp(shifted);
  return div(e, sum(e, axis, true));
}

export function logSoftmax(x: Tensor, axis = -1): Tensor {
  const shifted = sub(x, detach(max(x, axis, true)));
  return sub(shifted, log(sum(exp(shifted), axis, true)));
}

/** LayerNorm over the last axis: (x - mean) / sqrt(var + eps) * weight + bias (biased variance, as PyTorch). */
export function layerNorm(x: Tensor, weight: Tensor | null, bias: Tensor | null, eps = 1e-5): Tensor {
  const mu = mean(x, -1, true);
  const centered = sub(x, mu);
  const variance = mean(mul(centered, centered), -1, true);
  let y = div(centered, sqrt(add(variance, eps)));
  if (weight !== null) y = mul(y, weight);
  if (bias !== null) y = add(y, bias);
  return y;
}

/** GELU, exact erf form (PyTorch's nn.GELU() default). */
export function gelu(x: Tensor): Tensor {
  return mul(mul(x, 0.5), add(erf(mul(x, Math.SQRT1_2)), 1));
}
