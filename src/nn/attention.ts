/**
 * MultiScaleAttention (PySlowFast attention.py): q/k/v projections (fused or separate), attention
 * pooling (pooling.ts), decomposed relative positions, residual pooling and the cls token. With no
 * pooling and no relative positions it is plain multi-head self-attention.
 */
import { foldIn, type Key } from '../random/index.ts';
import { softmax } from '../tensor/composite.ts';
import { matmul } from '../tensor/matmul.ts';
import { add, concat, mul, permute, reshape, slice, take, transpose } from '../tensor/ops.ts';
import { tensor, type Tensor } from '../tensor/tensor.ts';
import { checkRate, dropout, type TrainFlag } from './dropout.ts';
import { linear, type LinearParams, type NormParams } from './layers.ts';
import { attentionPool, type AttentionPoolParams, type PoolMode, type PoolSpec, type Vec3 } from './pooling.ts';

/** Parameters by PySlowFast's names: `qkv` (fused) or `q`, `k`, `v`; pools and rel-pos tables as configured. */
export interface AttentionParams {
  readonly qkv?: LinearParams;
  readonly q?: LinearParams;
  readonly k?: LinearParams;
  readonly v?: LinearParams;
  readonly proj: LinearParams;
  readonly pool_q?: { readonly weight: Tensor };
  readonly pool_k?: { readonly weight: Tensor };
  readonly pool_v?: { readonly weight: Tensor };
  readonly norm_q?: NormParams;
  readonly norm_k?: NormParams;
  readonly norm_v?: NormParams;
  readonly rel_pos_h?: Tensor;
  readonly rel_pos_w?: Tensor;
  readonly rel_pos_t?: Tensor;
}

/** The structure of one attention module (fixed when the model is built). */
export interface MultiScaleAttentionSpec {
  readonly heads: number;
  /** Output channels (and the q/k/v width). */
  readonly dimOut: number;
  /** The token grid of the input (without the cls token). */
  readonly thw: Vec3;
  readonly hasCls: boolean;
  readonly mode: PoolMode;
  /** The Q and K/V pooling; absent: not pooled. */
  readonly poolQ?: PoolSpec;
  readonly poolKV?: PoolSpec;
  /** Pool the input (split into heads) before the q/k/v projections. */
  readonly poolFirst: boolean;
  readonly separateQkv: boolean;
  readonly relPosSpatial: boolean;
  readonly relPosTemporal: boolean;
  /** Add the pooled q to the attention output (MViTv2). */
  readonly residualPooling: boolean;
  /** Dropout after the output projection. */
  readonly dropRate: number;
  /** eps of the pooling's LayerNorms. */
  readonly normEps: number;
}

/** The key of each random use inside the attention. */
const ATTENTION_USE = { projDropout: 0 } as const;

/** F.interpolate(mode="linear", align_corners=False) of a [L, C] table to [d, C], as a matrix product. */
function resizeRelPos(table: Tensor, d: number): Tensor {
  const L = table.shape[0];
  if (L === d) return table;
  const scale = L / d;
  const rows = Array.from({ length: d }, (_, i) => {
    const src = Math.max((i + 0.5) * scale - 0.5, 0);
    const i0 = Math.min(Math.floor(src), L - 1);
    const i1 = Math.min(i0 + 1, L - 1);
    const lambda = src - i0;
    const row = new Array<number>(L).fill(0);
    row[i0] += 1 - lambda;
    row[i1] += lambda;
    return row;
  });
  return matmul(tensor(rows.flat(), [d, L]), table);
}

/** Index of the relative-position table for every (query, key) pair along one axis (float, then .long()). */
function relIndex(q: number, k: number): Tensor {
  const qRatio = Math.max(k / q, 1);
  const kRatio = Math.max(q / k, 1);
  const idx = Array.from({ length: q }, (_, i) =>
    Array.from({ length: k }, (_, j) => Math.trunc(Math.fround(Math.fround(i * qRatio - j * kRatio) + (k - 1) * kRatio))),
  );
  return tensor(idx.flat(), [q * k]);
}

/** The table rows for one axis: [q, k, C]. */
const relTable = (table: Tensor, q: number, k: number): Tensor =>
  reshape(take(resizeRelPos(table, 2 * Math.max(q, k) - 1), relIndex(q, k), 0), [q, k, table.shape[1]]);

/** Apply `fn` to the token-token block of attn (cls row and column excluded). */
function onTokenBlock(attn: Tensor, hasCls: boolean, fn: (block: Tensor) => Tensor): Tensor {
  if (!hasCls) return fn(attn);
  const [B, h, Nq] = attn.shape;
  // slice: a missing start is 0, a missing stop the axis' end.
  const top = slice(attn, [], [B, h, 1]);
  const left = slice(attn, [0, 0, 1], [B, h, Nq, 1]);
  const block = slice(attn, [0, 0, 1, 1]);
  return concat([top, concat([left, fn(block)], 3)], 2);
}

/** Decomposed spatial relative positions (cal_rel_pos_spatial); q is unscaled. */
function addRelPosSpatial(attn: Tensor, q: Tensor, hasCls: boolean, qShape: Vec3, kShape: Vec3, relH: Tensor, relW: Tensor): Tensor {
  const [B, h, , c] = q.shape;
  const [qt, qh, qw] = qShape;
  const [kt, kh, kw] = kShape;
  const rq = reshape(hasCls ? slice(q, [0, 0, 1]) : q, [B, h, qt, qh, qw, c]);
  const M = B * h * qt;
  // rel_h[b,y,t,i,w,j] = sum_c rq[b,y,t,i,w,c] Rh[i,j,c]: one matmul per query row i.
  const relHq = matmul(reshape(permute(rq, [3, 0, 1, 2, 4, 5]), [qh, M * qw, c]), relTable(relH, qh, kh), { transB: true });
  const relHb = reshape(permute(reshape(relHq, [qh, M, qw, kh]), [1, 0, 2, 3]), [M, qh, qw, 1, kh, 1]);
  const relWq = matmul(reshape(permute(rq, [4, 0, 1, 2, 3, 5]), [qw, M * qh, c]), relTable(relW, qw, kw), { transB: true });
  const relWb = reshape(permute(reshape(relWq, [qw, M, qh, kw]), [1, 2, 0, 3]), [M, qh, qw, 1, 1, kw]);
  return onTokenBlock(attn, hasCls, (block) =>
    reshape(add(add(reshape(block, [M, qh, qw, kt, kh, kw]), relHb), relWb), block.shape as number[]),
  );
}

/** Temporal relative positions (cal_rel_pos_temporal). */
function addRelPosTemporal(attn: Tensor, q: Tensor, hasCls: boolean, qShape: Vec3, kShape: Vec3, relT: Tensor): Tensor {
  const [B, h, , c] = q.shape;
  const [qt, qh, qw] = qShape;
  const [kt, kh, kw] = kShape;
  const rq = reshape(hasCls ? slice(q, [0, 0, 1]) : q, [B, h, qt, qh * qw, c]);
  const rel = matmul(reshape(permute(rq, [2, 0, 1, 3, 4]), [qt, B * h * qh * qw, c]), relTable(relT, qt, kt), { transB: true });
  const relB = reshape(permute(reshape(rel, [qt, B * h, qh * qw, kt]), [1, 0, 2, 3]), [B * h, qt, qh * qw, kt, 1]);
  return onTokenBlock(attn, hasCls, (block) =>
    reshape(add(reshape(block, [B * h, qt, qh * qw, kt, kh * kw]), relB), block.shape as number[]),
  );
}

/** [B, N, h*d] -> [B, h, N, d] */
const heads = (x: Tensor, h: number): Tensor => {
  const [B, N, D] = x.shape;
  return permute(reshape(x, [B, N, h, D / h]), [0, 2, 1, 3]);
};

/**
 * MultiScaleAttention.forward: x [B, N, dimIn] on the grid `spec.thw` -> [B, N', dimOut], N' the
 * tokens of the Q-pooled grid.
 */
export function multiScaleAttention(spec: MultiScaleAttentionSpec): (p: AttentionParams, x: Tensor, key: Key, opts: TrainFlag) => Tensor {
  const { heads: h, dimOut, mode, hasCls, thw } = spec;
  const poolWith = (pool: PoolSpec | undefined) => (pool === undefined ? null : attentionPool({ mode, pool, thw, hasCls, normEps: spec.normEps }));
  const poolQ = poolWith(spec.poolQ);
  const poolKV = poolWith(spec.poolKV);
  const pooled = (pool: typeof poolQ, p: AttentionPoolParams, t: Tensor): [Tensor, Vec3] => (pool === null ? [t, thw] : pool(p, t));
  const scale = (dimOut / h) ** -0.5;
  checkRate('multiScaleAttention', spec.dropRate);

  return (p, x, key, { train }) => {
    const [B, N] = x.shape;
    let q: Tensor;
    let k: Tensor;
    let v: Tensor;
    if (spec.poolFirst) {
      q = k = v = heads(x, mode === 'conv_unshared' ? 1 : h);
    } else if (!spec.separateQkv) {
      const qkv = permute(reshape(linear(p.qkv!, x), [B, N, 3, h, dimOut / h]), [2, 0, 3, 1, 4]);
      const part = (i: number) => reshape(slice(qkv, [i], [i + 1]), qkv.shape.slice(1) as number[]);
      [q, k, v] = [part(0), part(1), part(2)];
    } else {
      [q, k, v] = [heads(linear(p.q!, x), h), heads(linear(p.k!, x), h), heads(linear(p.v!, x), h)];
    }
    let qShape: Vec3;
    let kShape: Vec3;
    [q, qShape] = pooled(poolQ, { weight: p.pool_q?.weight, norm: p.norm_q }, q);
    [k, kShape] = pooled(poolKV, { weight: p.pool_k?.weight, norm: p.norm_k }, k);
    [v] = pooled(poolKV, { weight: p.pool_v?.weight, norm: p.norm_v }, v);
    if (spec.poolFirst) {
      const project = (t: Tensor, lin: LinearParams) => heads(linear(lin, reshape(permute(t, [0, 2, 1, 3]), [B, t.shape[2], -1])), h);
      [q, k, v] = [project(q, p.q!), project(k, p.k!), project(v, p.v!)];
    }
    let attn = matmul(mul(q, scale), k, { transB: true });
    if (spec.relPosSpatial) attn = addRelPosSpatial(attn, q, hasCls, qShape, kShape, p.rel_pos_h!, p.rel_pos_w!);
    if (spec.relPosTemporal) attn = addRelPosTemporal(attn, q, hasCls, qShape, kShape, p.rel_pos_t!);
    let out = matmul(softmax(attn, -1), v);
    if (spec.residualPooling) {
      if (hasCls) {
        const [b, hh] = out.shape;
        out = concat([slice(out, [], [b, hh, 1]), add(slice(out, [0, 0, 1]), slice(q, [0, 0, 1]))], 2);
      } else {
        out = add(out, q);
      }
    }
    out = linear(p.proj, reshape(transpose(out, 1, 2), [B, -1, dimOut]));
    if (spec.dropRate > 0) out = dropout(foldIn(key, ATTENTION_USE.projDropout), spec.dropRate, out, { train });
    return out;
  };
}
