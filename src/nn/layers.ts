/**
 * The basic layers: `(params, x, key?, options?)`, params laid out like PyTorch modules (Linear weight
 * [out, in]), so PySlowFast state_dict names map onto them directly.
 */
import { foldIn, type Key } from '../random/index.ts';
import { layerNorm as normalize, gelu } from '../tensor/composite.ts';
import { ArgumentError } from '../tensor/errors.ts';
import { matmul } from '../tensor/matmul.ts';
import { add } from '../tensor/ops.ts';
import type { Tensor } from '../tensor/tensor.ts';
import { checkRate, dropout } from './dropout.ts';

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

/** PyTorch nn.LayerNorm over the last axis; eps defaults to PyTorch's 1e-5, like the `layerNorm` op. */
export const layerNorm = (p: NormParams, x: Tensor, eps = 1e-5): Tensor => normalize(x, p.weight, p.bias, eps);

export interface MlpParams {
  readonly fc1: LinearParams;
  readonly fc2: LinearParams;
}

export interface MlpOptions {
  /** Dropout rate after the activation and after fc2 (default 0). */
  readonly drop?: number;
  /** Training pass (default true): dropout is active. */
  readonly train?: boolean;
}

/** The key of each random use inside `mlp`. */
const MLP_USE = { hidden: 0, out: 1 } as const;

/**
 * fc2(gelu(fc1(x))), with dropout after the activation and after fc2 when `drop > 0` (timm/PySlowFast
 * Mlp); a rate outside [0, 1] is an ArgumentError. Dropout in a training pass draws from `key`: a missing key
 * is an error, never a skipped dropout.
 */
export function mlp(p: MlpParams, x: Tensor, key?: Key, { drop = 0, train = true }: MlpOptions = {}): Tensor {
  checkRate('mlp', drop);
  if (drop > 0 && train && key === undefined) throw new ArgumentError('mlp', `dropout rate ${drop} in a training pass needs a key`);
  let h = gelu(linear(p.fc1, x));
  if (drop > 0 && key !== undefined) h = dropout(foldIn(key, MLP_USE.hidden), drop, h, { train });
  let y = linear(p.fc2, h);
  if (drop > 0 && key !== undefined) y = dropout(foldIn(key, MLP_USE.out), drop, y, { train });
  return y;
}
