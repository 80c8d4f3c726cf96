/**
 * Pure layer functions: `(params, x, key?) => y`, params are plain trees of tensors laid out like
 * PyTorch modules (Linear weight [out, in]), so PySlowFast state_dict names map onto them directly.
 */
import { foldIn, uniform, type Key } from '../random/index.ts';
import { layerNorm as layerNormOp, gelu } from '../tensor/composite.ts';
import { ArgumentError } from '../tensor/errors.ts';
import { matmul } from '../tensor/matmul.ts';
import { add, div, greaterEqual, mul, where } from '../tensor/ops.ts';
import type { Tensor } from '../tensor/tensor.ts';

export interface LinearParams {
  readonly weight: Tensor;
  readonly bias?: Tensor;
}

/** y = x Wᵀ + b (PyTorch nn.Linear). */
export function linear(p: LinearParams, x: Tensor): Tensor {
  const y = matmul(x, p.weight, { transB: true });
  return p.bias === undefined ? y : add(y, p.bias);
}

export interface NormParams {
  readonly weight: Tensor;
  readonly bias: Tensor;
}

export const layerNorm = (p: NormParams, x: Tensor, eps = 1e-6): Tensor => layerNormOp(x, p.weight, p.bias, eps);

export interface MlpParams {
  readonly fc1: LinearParams;
  readonly fc2: LinearParams;
}

/** fc2(gelu(fc1(x))), with dropout after the activation and after fc2 when `drop > 0` (timm/PySlowFast Mlp). */
export function mlp(p: MlpParams, x: Tensor, drop = 0, key?: Key, train = true): Tensor {
  let h = gelu(linear(p.fc1, x));
  if (drop > 0 && key !== undefined) h = dropout(foldIn(key, 0), drop, h, { train });
  let y = linear(p.fc2, h);
  if (drop > 0 && key !== undefined) y = dropout(foldIn(key, 1), drop, y, { train });
  return y;
}

function checkRate(op: string, p: number): void {
  if (typeof p !== 'number' || !(p >= 0 && p < 1)) throw new ArgumentError(op, `rate must be in [0, 1), got ${p}`);
}

export interface TrainFlag {
  readonly train: boolean;
}

/** Inverted dropout: zero each element with probability p, scale the rest by 1/(1-p) (keep where U[0,1) >= p). */
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
  checkRate('dropPath', p);
  if (!train || p === 0) return x;
  const u = uniform(key, [x.shape[0], ...x.shape.slice(1).map(() => 1)]);
  return mul(div(x, 1 - p), greaterEqual(u, p));
}
