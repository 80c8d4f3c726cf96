/**
 * Pooling over a token grid (PySlowFast's attention pooling): tokens stay channels-last, [B, heads,
 * L, C] with L = T*H*W (+1 for a leading cls token, which is carried through unpooled).
 */
import { avgPool3d, maxPool3d } from '../tensor/conv.ts';
import { depthwiseConv3d } from '../tensor/depthwise.ts';
import { ArgumentError } from '../tensor/errors.ts';
import { concat, permute, reshape, slice } from '../tensor/ops.ts';
import { sizeOf } from '../tensor/shape.ts';
import type { Tensor } from '../tensor/tensor.ts';
import { layerNorm, type NormParams } from './layers.ts';

export type Vec3 = [number, number, number];

/** One pooling module (Conv3d, AvgPool3d or MaxPool3d) over (T, H, W). */
export interface PoolSpec {
  readonly kernel: Vec3;
  readonly stride: Vec3;
  readonly padding: Vec3;
}

/** 'conv': a depthwise Conv3d per head; 'conv_unshared': one over all channels; 'avg'/'max': parameter-free. */
export type PoolMode = 'conv' | 'conv_unshared' | 'avg' | 'max';

export const isConvPool = (mode: PoolMode): boolean => mode === 'conv' || mode === 'conv_unshared';

export interface AttentionPoolSpec {
  readonly mode: PoolMode;
  readonly pool: PoolSpec;
  /** The grid of the tokens pooled (the cls token excluded). */
  readonly thw: Vec3;
  readonly hasCls: boolean;
  readonly normEps: number;
}

/** The conv modes' weight [C, 1, kT, kH, kW] and the LayerNorm after them; avg and max use neither. */
export interface AttentionPoolParams {
  readonly weight?: Tensor;
  readonly norm?: NormParams;
}

/** The pooling op on channels-last tokens [N, T, H, W, C]. */
function pool3d(op: string, mode: PoolMode, spec: PoolSpec, weight: Tensor | undefined): (x: Tensor) => Tensor {
  if (isConvPool(mode)) {
    if (weight === undefined) throw new ArgumentError(op, `'${mode}' pooling needs a conv weight`);
    return (x) => depthwiseConv3d(x, weight, { stride: spec.stride, padding: spec.padding });
  }
  const pool = mode === 'avg' ? avgPool3d : maxPool3d;
  return (x) => permute(pool(permute(x, [0, 4, 1, 2, 3]), spec.kernel, spec.stride, spec.padding), [0, 2, 3, 4, 1]);
}

/**
 * attention_pool: t [B, h, L, C] pooled over its (T, H, W) grid; a cls token is not pooled but is
 * normed (the norm exists in the conv modes only). Returns the pooled tokens and their grid.
 */
export const attentionPool =
  (spec: AttentionPoolSpec) =>
  (p: AttentionPoolParams, t: Tensor): [Tensor, Vec3] => {
    const pool = pool3d('attentionPool', spec.mode, spec.pool, p.weight);
    const [B, h, , C] = t.shape;
    const [T, H, W] = spec.thw;
    // slice's missing start indices are 0 and its missing stops the axis sizes.
    const cls = spec.hasCls ? slice(t, [], [B, h, 1]) : null;
    const body = spec.hasCls ? slice(t, [0, 0, 1]) : t;
    const pooled = pool(reshape(body, [B * h, T, H, W, C]));
    const grid = pooled.shape.slice(1, 4) as Vec3;
    let out = reshape(pooled, [B, h, sizeOf(grid), C]);
    if (cls !== null) out = concat([cls, out], 2);
    if (isConvPool(spec.mode) && p.norm !== undefined) out = layerNorm(p.norm, out, spec.normEps);
    return [out, grid];
  };
