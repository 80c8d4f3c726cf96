/**
 * From pixels to tokens: PySlowFast's PatchEmbed (a strided Conv3d, or a Conv2d on a single frame) and
 * MViT's learned absolute position embeddings.
 */
import { conv } from '../tensor/conv.ts';
import { ShapeError } from '../tensor/errors.ts';
import { add, permute, reshape } from '../tensor/ops.ts';
import { fmt, sameShape, sizeOf } from '../tensor/shape.ts';
import type { Tensor } from '../tensor/tensor.ts';
import type { Vec3 } from './pooling.ts';

export interface PatchEmbedSpec {
  /** The conv's stride and padding over (T, H, W), or over (H, W) when `twoD`. */
  readonly stride: readonly number[];
  readonly padding: readonly number[];
  /** A Conv2d on [B, C, H, W] (the grid then has T = 1). */
  readonly twoD: boolean;
  /** The token grid [T, H, W] the conv must produce. */
  readonly grid: Vec3;
}

export interface PatchEmbedParams {
  /** Conv weight [C, inChannels, ...kernel] and bias [C]. */
  readonly proj: { readonly weight: Tensor; readonly bias: Tensor };
}

/** x [B, inChannels, (T,) H, W] -> tokens [B, T*H*W, C], in (T, H, W) row-major order. */
export const patchEmbed =
  (spec: PatchEmbedSpec) =>
  (p: PatchEmbedParams, x: Tensor): Tensor => {
    const y = conv(x, p.proj.weight, { stride: spec.stride, padding: spec.padding });
    const grid = spec.twoD ? [1, ...y.shape.slice(2)] : y.shape.slice(2);
    if (!sameShape(grid, spec.grid)) throw new ShapeError('patchEmbed', `the conv produced the grid ${fmt(grid)}, expected ${fmt(spec.grid)}`);
    const [B, C] = y.shape;
    return add(permute(reshape(y, [B, C, sizeOf(spec.grid)]), [0, 2, 1]), p.proj.bias);
  };

/** One table [1, N, C] for all tokens, or (separate) a spatial [1, H*W, C] plus a temporal [1, T, C] one. */
export interface PositionParams {
  readonly pos_embed?: Tensor;
  readonly pos_embed_spatial?: Tensor;
  readonly pos_embed_temporal?: Tensor;
}

/** tokens [B, N, C] on `grid` plus their learned positions (MViT's pos_embed, or SEP_POS_EMBED's sum of two). */
export const addPositions =
  (grid: Vec3, separate: boolean) =>
  (p: PositionParams, tokens: Tensor): Tensor => {
    if (!separate) return add(tokens, p.pos_embed!);
    const [T, H, W] = grid;
    const C = tokens.shape[2];
    const spatial = reshape(p.pos_embed_spatial!, [1, 1, H * W, C]);
    const temporal = reshape(p.pos_embed_temporal!, [1, T, 1, C]);
    return add(tokens, reshape(add(spatial, temporal), [1, T * H * W, C]));
  };
