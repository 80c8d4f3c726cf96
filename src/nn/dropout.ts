/**
 * Random masks. Like `random.*`, these take the key first: they are draws, not layers with parameters.
 */
import { uniform, type Key } from '../random/index.ts';
import { ArgumentError } from '../tensor/errors.ts';
import { div, greaterEqual, mul, where } from '../tensor/ops.ts';
import type { Tensor } from '../tensor/tensor.ts';

/** Whether a call is a training pass (dropout and drop path active; the head returns raw logits). */
export interface TrainFlag {
  readonly train: boolean;
}

/**
 * A dropout rate in [0, 1] (nn.Dropout's range), or in [0, 1) with `oneAllowed` false; else an ArgumentError
 * naming `op`.
 */
export function checkRate(op: string, p: number, oneAllowed = true): void {
  if (typeof p !== 'number' || !(p >= 0 && (oneAllowed ? p <= 1 : p < 1))) {
    throw new ArgumentError(op, `rate must be in [0, 1${oneAllowed ? ']' : ')'}, got ${p}`);
  }
}

/**
 * Inverted dropout: zero each element with probability p, scale the rest by 1/(1-p) (keep where U[0,1) >= p).
 * p = 1 keeps nothing (no U[0,1) reaches 1): x * 0, as PyTorch's dropout.
 */
export function dropout(key: Key, p: number, x: Tensor, { train }: TrainFlag): Tensor {
  checkRate('dropout', p);
  if (!train || p === 0) return x;
  return mul(x, where(greaterEqual(uniform(key, x.shape), p), 1 / (1 - p), 0));
}

/**
 * Stochastic depth (timm/PySlowFast drop_path): one Bernoulli(1-p) per sample (axis 0),
 * mask = floor(1 - p + U[0,1)) = (U >= p), out = x / (1 - p) * mask.
 */
export function dropPath(key: Key, p: number, x: Tensor, { train }: TrainFlag): Tensor {
  // Not 1: PySlowFast's drop_path divides by 1 - p, so a rate of 1 is NaN there.
  checkRate('dropPath', p, false);
  if (!train || p === 0) return x;
  const u = uniform(key, [x.shape[0], ...x.shape.slice(1).map(() => 1)]);
  return mul(div(x, 1 - p), greaterEqual(u, p));
}
