/**
 * MultiScaleAttention (PySlowFast attention.py) as pure functions: q/k/v projections (fused or
 * separate), attention pooling (depthwise conv + LN, avg or max), decomposed relative positions,
 * residual pooling and the cls token (spec 3.2).
 */
import { dropout, layerNorm, linear, type LinearParams, type NormParams } from '../../nn/index.ts';
import { foldIn, type Key } from '../../random/index.ts';
import { softmax } from '../../tensor/composite.ts';
import { avgPool3d, maxPool3d } from '../../tensor/conv.ts';
import { depthwiseConv3d } from '../../tensor/depthwise.ts';
import { matmul } from '../../tensor/matmul.ts';
import { add, concat, mul, permute, reshape, slice, take, transpose } from '../../tensor/ops.ts';
import { tensor, type Tensor } from '../../tensor/tensor.ts';
import type { PoolMode } from './config.ts';
import type { LayerGeometry, PoolSpec, Vec3 } from './geometry.ts';

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

/** What one attention module needs to know beyond its params (fixed at build time). */
export interface AttentionSpec {
  readonly layer: LayerGeometry;
  readonly mode: PoolMode;
  readonly poolFirst: boolean;
  readonly separateQkv: boolean;
  readonly hasCls: boolean;
  readonly relPosSpatial: boolean;
  readonly relPosTemporal: boolean;
  readonly residualPooling: boolean;
  readonly dropRate: number;
}

const prod = (xs: readonly number[]) => xs.reduce((a, b) => a * b, 1);

/** The pooling op of a PoolSpec on channels-last tokens [B*h, T, H, W, C]. */
export function poolOp(mode: PoolMode, spec: PoolSpec, weight?: Tensor): (x: Tensor) => Tensor {
  if (mode === 'conv' || mode === 'conv_unshared') return (x) => depthwiseConv3d(x, weight!, { stride: spec.stride, padding: spec.padding });
  const pool = mode === 'avg' ? avgPool3d : maxPool3d;
  return (x) => permute(pool(permute(x, [0, 4, 1, 2, 3]), spec.kernel, spec.stride, spec.padding), [0, 2, 3, 4, 1]);
}

/**
 * attention_pool: t [B, h, L, C] (cls token first when hasCls) pooled over the (T, H, W) grid; the cls
 * token is not pooled but is normed. Returns the pooled tensor and its grid. The tokens are already
 * channels-last, so pooling needs no permutes.
 */
export function attentionPool(t: Tensor, pool: ((x: Tensor) => Tensor) | null, thw: Vec3, hasCls: boolean, norm: NormParams | null): [Tensor, Vec3] {
  if (pool === null) return [t, thw];
  const [B, h, L, C] = t.shape;
  const cls = hasCls ? slice(t, [0, 0, 0, 0], [B, h, 1, C]) : null;
  const body = hasCls ? slice(t, [0, 0, 1, 0], [B, h, L, C]) : t;
  const pooled = pool(reshape(body, [B * h, thw[0], thw[1], thw[2], C]));
  const grid = pooled.shape.slice(1, 4) as Vec3;
  let out = reshape(pooled, [B, h, prod(grid), C]);
  if (cls !== null) out = concat([cls, out], 2);
  if (norm !== null) out = layerNorm(norm, out, 1e-6);
  return [out, grid];
}

/** F.interpolate(mode="linear", align_corners=False) of a [L, C] table to [d, C], as a matrix product. */
function resizeRelPos(table: Tensor, d: number): Tensor {
  const L = table.shape[0];
  if (L === d) return table;
  const m = new Float32Array(d * L);
  const scale = L / d;
  for (let i = 0; i < d; i++) {
    const src = Math.max((i + 0.5) * scale - 0.5, 0);
    const i0 = Math.min(Math.floor(src), L - 1);
    const i1 = Math.min(i0 + 1, L - 1);
    const lambda = src - i0;
    m[i * L + i0] += 1 - lambda;
    m[i * L + i1] += lambda;
  }
  return matmul(tensor(m, [d, L]), table);
}

/** Index of the relative-position table for every (query, key) pair along one axis (float, then .long()). */
function relIndex(q: number, k: number): Tensor {
  const qRatio = Math.max(k / q, 1);
  const kRatio = Math.max(q / k, 1);
  const idx = new Float32Array(q * k);
  for (let i = 0; i < q; i++) {
    for (let j = 0; j < k; j++) idx[i * k + j] = Math.trunc(Math.fround(Math.fround(i * qRatio - j * kRatio) + (k - 1) * kRatio));
  }
  return tensor(idx, [q * k]);
}

/** The table rows for one axis: [q, k, C]. */
const relTable = (table: Tensor, q: number, k: number): Tensor =>
  reshape(take(resizeRelPos(table, 2 * Math.max(q, k) - 1), relIndex(q, k), 0), [q, k, table.shape[1]]);

/** Apply `fn` to the token-token block of attn (cls row and column excluded). */
function onTokenBlock(attn: Tensor, hasCls: boolean, fn: (block: Tensor) => Tensor): Tensor {
  if (!hasCls) return fn(attn);
  const [B, h, Nq, Nk] = attn.shape;
  const top = slice(attn, [0, 0, 0, 0], [B, h, 1, Nk]);
  const left = slice(attn, [0, 0, 1, 0], [B, h, Nq, 1]);
  const block = slice(attn, [0, 0, 1, 1], [B, h, Nq, Nk]);
  return concat([top, concat([left, fn(block)], 3)], 2);
}

/** Decomposed spatial relative positions (cal_rel_pos_spatial); q is unscaled. */
function addRelPosSpatial(attn: Tensor, q: Tensor, hasCls: boolean, qShape: Vec3, kShape: Vec3, relH: Tensor, relW: Tensor): Tensor {
  const [B, h, Nq, c] = q.shape;
  const [qt, qh, qw] = qShape;
  const [kt, kh, kw] = kShape;
  const rq = reshape(hasCls ? slice(q, [0, 0, 1, 0], [B, h, Nq, c]) : q, [B, h, qt, qh, qw, c]);
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
  const [B, h, Nq, c] = q.shape;
  const [qt, qh, qw] = qShape;
  const [kt, kh, kw] = kShape;
  const rq = reshape(hasCls ? slice(q, [0, 0, 1, 0], [B, h, Nq, c]) : q, [B, h, qt, qh * qw, c]);
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

/** MultiScaleAttention.forward: x [B, N, dimIn] on grid thw -> ([B, N', dimOut], q grid). */
export function multiScaleAttention(p: AttentionParams, x: Tensor, spec: AttentionSpec, key: Key, train: boolean): [Tensor, Vec3] {
  const { layer, mode, hasCls } = spec;
  const thw = layer.thwIn;
  const h = layer.heads;
  const [B, N] = x.shape;
  let q: Tensor;
  let k: Tensor;
  let v: Tensor;
  if (spec.poolFirst) {
    q = k = v = heads(x, mode === 'conv_unshared' ? 1 : h);
  } else if (!spec.separateQkv) {
    const qkv = permute(reshape(linear(p.qkv!, x), [B, N, 3, h, layer.dimOut / h]), [2, 0, 3, 1, 4]);
    const part = (i: number) => reshape(slice(qkv, [i], [i + 1]), qkv.shape.slice(1) as number[]);
    [q, k, v] = [part(0), part(1), part(2)];
  } else {
    [q, k, v] = [heads(linear(p.q!, x), h), heads(linear(p.k!, x), h), heads(linear(p.v!, x), h)];
  }
  const pools = (which: 'q' | 'k' | 'v') => {
    const spec2 = which === 'q' ? layer.poolQ : layer.poolKV;
    if (spec2 === undefined) return { pool: null, norm: null };
    const weight = p[`pool_${which}`]?.weight;
    const norm = mode === 'conv' || mode === 'conv_unshared' ? p[`norm_${which}`] ?? null : null;
    return { pool: poolOp(mode, spec2, weight), norm };
  };
  const pq = pools('q');
  const pk = pools('k');
  const pv = pools('v');
  let qShape: Vec3;
  let kShape: Vec3;
  [q, qShape] = attentionPool(q, pq.pool, thw, hasCls, pq.norm);
  [k, kShape] = attentionPool(k, pk.pool, thw, hasCls, pk.norm);
  [v] = attentionPool(v, pv.pool, thw, hasCls, pv.norm);
  if (spec.poolFirst) {
    const project = (t: Tensor, lin: LinearParams) => heads(linear(lin, reshape(permute(t, [0, 2, 1, 3]), [B, t.shape[2], -1])), h);
    [q, k, v] = [project(q, p.q!), project(k, p.k!), project(v, p.v!)];
  }
  const scale = (layer.dimOut / h) ** -0.5;
  let attn = matmul(mul(q, scale), k, { transB: true });
  if (spec.relPosSpatial) attn = addRelPosSpatial(attn, q, hasCls, qShape, kShape, p.rel_pos_h!, p.rel_pos_w!);
  if (spec.relPosTemporal) attn = addRelPosTemporal(attn, q, hasCls, qShape, kShape, p.rel_pos_t!);
  let out = matmul(softmax(attn, -1), v);
  if (spec.residualPooling) {
    if (hasCls) {
      const [b, hh, n, d] = out.shape;
      out = concat([slice(out, [0, 0, 0, 0], [b, hh, 1, d]), add(slice(out, [0, 0, 1, 0], [b, hh, n, d]), slice(q, [0, 0, 1, 0], [b, hh, n, d]))], 2);
    } else {
      out = add(out, q);
    }
  }
  out = reshape(transpose(out, 1, 2), [B, -1, layer.dimOut]);
  out = linear(p.proj, out);
  if (spec.dropRate > 0) out = dropout(foldIn(key, 0), spec.dropRate, out, { train });
  return [out, qShape];
}
