/**
 * Rev-ViT / Rev-MViT (PySlowFast reversible_mvit.py + MViT's rev path) assembled from pure functions:
 * patch embed, positions, a `stack` of ReversibleBlocks (reversible(F, G)) and StageTransitionBlocks
 * (stages), the final fuse/mean/norm and the head. Params are a tree whose flattened paths are
 * PySlowFast's state_dict names.
 */
import { fromNamed, type PyTree } from '../../autodiff/pytree.ts';
import { dropout, dropPath, layerNorm, linear, mlp, type LinearParams, type MlpParams, type NormParams } from '../../nn/index.ts';
import { foldIn, split, type Key } from '../../random/index.ts';
import * as K from '../../random/keys.ts';
import { reversible, stack, stage, type AnyBlock, type DriftEntry, type Layer, type Mode } from '../../reversible/index.ts';
import { conv } from '../../tensor/conv.ts';
import { ShapeError } from '../../tensor/errors.ts';
import { add, chunk, concat, div, exp, maximum, mean, minimum, neg, permute, reshape } from '../../tensor/ops.ts';
import { softmax } from '../../tensor/composite.ts';
import { fmt } from '../../tensor/shape.ts';
import { tensor, type Tensor } from '../../tensor/tensor.ts';
import { attentionPool, multiScaleAttention, poolOp, type AttentionParams, type AttentionSpec } from './attention.ts';
import type { MViTConfig } from './config.ts';
import { buildGeometry, type FusionMode, type LayerGeometry, type ModelGeometry } from './geometry.ts';
import { paramSpecs, type ParamSpec } from './params-spec.ts';

export type Params = PyTree;

export interface ApplyOptions {
  readonly train: boolean;
  readonly mode?: Mode;
  /** Collect named activations (PySlowFast fixture names without the `act.` prefix). Runs in store mode. */
  readonly activations?: Map<string, Tensor>;
}

export interface MViTModel {
  readonly config: MViTConfig;
  readonly geometry: ModelGeometry;
  readonly specs: readonly ParamSpec[];
  init(key: Key): Params;
  /** train: raw logits [B, classes]; eval: HEAD_ACT applied. */
  apply(params: Params, x: Tensor, key: Key, opts: ApplyOptions): Tensor;
  /** The ReversibleMViT stack alone: tokens [B, N(+1), C0] -> [B, Nf, 2Cf]. */
  applyStack(params: Params, tokens: Tensor, key: Key, opts: ApplyOptions): Tensor;
  /** Per-reversible-block reconstruction error of the stack on the tokens this input produces. */
  drift(params: Params, x: Tensor, key: Key): DriftEntry[];
  /** Whether PySlowFast's optimizer puts this parameter in the no-weight-decay group (zeroWd1dParam: SOLVER.ZERO_WD_1D_PARAM, default true). */
  noDecay(name: string, zeroWd1dParam?: boolean): boolean;
  /** The reversible block of layer `index` (for single-block tests). */
  blockAt(index: number, train: boolean): AnyBlock;
}

// ---------------------------------------------------------------------------------------------
// Pieces

interface FusionParams {
  readonly fuse_fn?: MlpParams | readonly [NormParams, MlpParams] | { readonly 0: NormParams; readonly 1: MlpParams };
}

/** TwoStreamFusion (spec 3.5) on x [B, N, 2C]. */
function twoStreamFusion(mode: FusionMode, p: FusionParams | undefined, x: Tensor, key: Key, train: boolean): Tensor {
  if (mode.kind === 'concat') return x;
  if (mode.kind === 'concat_linear') {
    const fn = p!.fuse_fn as any;
    const inner = mode.ln ? mlp(fn[1], layerNorm(fn[0], x, 1e-5), mode.drop, key, train) : mlp(fn, x, mode.drop, key, train);
    return add(inner, x);
  }
  const [a, b] = chunk(x, 2, 2);
  switch (mode.kind) {
    case 'add':
      return add(a, b);
    case 'max':
      return maximum(a, b);
    case 'min':
      return minimum(a, b);
    case 'avg':
      return div(add(a, b), 2);
  }
}

interface AttentionSubBlockParams {
  readonly norm: NormParams;
  readonly attn: AttentionParams;
}

interface MlpSubBlockParams {
  readonly norm: NormParams;
  readonly mlp: MlpParams;
}

interface TransitionParams {
  readonly F: AttentionSubBlockParams;
  readonly G: MlpSubBlockParams;
  readonly pre_q_fuse?: FusionParams;
  readonly res_proj?: LinearParams;
}

/** Keys derived from one branch/layer key, one per use. */
const USE = { attnDropout: 0, dropPath: 1, fusion: 2 } as const;

type Sink = Map<string, Tensor> | undefined;

function attentionSpec(cfg: MViTConfig, layer: LayerGeometry, hasCls: boolean): AttentionSpec {
  const m = cfg.MVIT;
  return {
    layer,
    mode: m.MODE,
    poolFirst: m.POOL_FIRST,
    separateQkv: m.SEPARATE_QKV,
    hasCls,
    relPosSpatial: m.REL_POS_SPATIAL,
    relPosTemporal: m.REL_POS_TEMPORAL,
    residualPooling: m.RESIDUAL_POOLING,
    dropRate: m.DROPOUT_RATE,
  };
}

/** The layer list of ReversibleMViT (spec 2.3, 3.6-3.8). */
function buildLayers(cfg: MViTConfig, geo: ModelGeometry, hasCls: boolean, train: boolean, sink: Sink, sharedDropPath: boolean): Layer[] {
  return geo.layers.map((layer): Layer => {
    const spec = attentionSpec(cfg, layer, hasCls);
    const attnSub = (p: AttentionSubBlockParams, x: Tensor, key: Key) =>
      multiScaleAttention(p.attn, layerNorm(p.norm, x, 1e-6), spec, foldIn(key, USE.attnDropout), train)[0];
    const mlpSub = (p: MlpSubBlockParams, x: Tensor) => mlp(p.mlp, layerNorm(p.norm, x, 1e-6));
    const record = (name: string, t: Tensor) => {
      sink?.set(`layer${layer.index}.${name}`, t);
      return t;
    };
    if (layer.kind === 'reversible') {
      const F = (p: AttentionSubBlockParams, x: Tensor, key: Key) =>
        dropPath(foldIn(key, USE.dropPath), layer.dropPath, record('F_out', attnSub(p, x, key)), { train });
      const G = (p: MlpSubBlockParams, x: Tensor, key: Key) =>
        dropPath(foldIn(key, USE.dropPath), layer.dropPath, record('G_out', mlpSub(p, x)), { train });
      return reversible(F, G, { keys: sharedDropPath ? 'shared' : 'split' });
    }
    return stage((p: TransitionParams, x: Tensor, key: Key) => {
      const fused = record('pre_q_fuse_out', twoStreamFusion(geo.preQFusion, p.pre_q_fuse, x, foldIn(key, USE.fusion), train));
      let res = fused;
      if (layer.hasResProj && !cfg.MVIT.POOL_FIRST) res = linear(p.res_proj!, res);
      const [B, L, C] = res.shape;
      if (cfg.MVIT.REV.RES_PATH === 'conv') {
        // The residual reuses the attention's pool_q and norm_q (shared weights, spec 8.10).
        const fold = cfg.MVIT.MODE === 'conv_unshared' ? 1 : layer.heads;
        const pool = layer.poolQ === undefined ? null : poolOp(cfg.MVIT.MODE, layer.poolQ, p.F.attn.pool_q?.weight);
        const norm = cfg.MVIT.MODE === 'conv' || cfg.MVIT.MODE === 'conv_unshared' ? p.F.attn.norm_q ?? null : null;
        const [pooled] = attentionPool(permute(reshape(res, [B, L, fold, C / fold]), [0, 2, 1, 3]), pool, layer.thwIn, hasCls, norm);
        res = reshape(permute(pooled, [0, 2, 1, 3]), [B, pooled.shape[2], C]);
      } else {
        // RES_PATH "max", as intended upstream: pool over the block's input grid (spec 8.1).
        const [pooled] = attentionPool(reshape(res, [B, 1, L, C]), poolOp('max', layer.poolSkip!), layer.thwIn, hasCls, null);
        res = reshape(pooled, [B, pooled.shape[2], C]);
      }
      if (layer.hasResProj && cfg.MVIT.POOL_FIRST) res = linear(p.res_proj!, res);
      let y = add(res, record('F_out', attnSub(p.F, fused, key)));
      y = add(y, mlpSub(p.G, y));
      return record('out', dropPath(foldIn(key, USE.dropPath), layer.dropPath, y, { train }));
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Init

function initValue(spec: ParamSpec, key: Key): Tensor {
  const n = spec.shape.reduce((a, b) => a * b, 1);
  const init = spec.init;
  let values: Float32Array;
  switch (init.kind) {
    case 'trunc_normal': {
      // torch trunc_normal_(std, a, b): bounds are absolute, so standardise them.
      values = K.truncatedNormal(key, n, init.lower / init.std, init.upper / init.std).map((v) => v * init.std * (init.scale ?? 1));
      break;
    }
    case 'constant':
      values = new Float32Array(n).fill(init.value * (init.scale ?? 1));
      break;
    case 'uniform':
      values = K.uniform(key, n, init.low, init.high);
      break;
    case 'ones':
      values = new Float32Array(n).fill(1);
      break;
    case 'zeros':
      values = new Float32Array(n);
      break;
  }
  return tensor(values, spec.shape);
}

// ---------------------------------------------------------------------------------------------
// The model

export interface BuildOptions {
  /** Reproduce PySlowFast's shared drop-path mask for F and G of a reversible block (default: independent masks). */
  readonly sharedDropPathMask?: boolean;
}

export function buildModel(cfg: MViTConfig, opts: BuildOptions = {}): MViTModel {
  const geo = buildGeometry(cfg);
  const specs = paramSpecs(cfg);
  const m = cfg.MVIT;
  const hasCls = m.CLS_EMBED_ON;
  const noDecayNames = new Set(specs.filter((s) => !s.decay).map((s) => s.name));
  const skipDecayNames = new Set(specs.filter((s) => s.skipDecay).map((s) => s.name));
  const layersFor = (train: boolean, sink: Sink) => stack(buildLayers(cfg, geo, hasCls, train, sink, opts.sharedDropPathMask === true));
  const cached = new Map<boolean, ReturnType<typeof layersFor>>();
  const stackFor = (train: boolean, sink: Sink) => {
    if (sink !== undefined) return layersFor(train, sink);
    if (!cached.has(train)) cached.set(train, layersFor(train, undefined));
    return cached.get(train)!;
  };

  const tokensOf = (params: any, x: Tensor, key: Key, train: boolean, sink: Sink): Tensor => {
    const [T0, H0, W0] = geo.patchDims;
    const expected = m.PATCH_2D ? [geo.inputChannels, geo.inputDims[1], geo.inputDims[2]] : [geo.inputChannels, ...geo.inputDims];
    if (x.rank !== expected.length + 1 || x.shape.slice(1).some((d, i) => d !== expected[i])) {
      throw new ShapeError('mvit', `input must be [B, ${expected.join(', ')}] for this config, got ${fmt(x.shape)}`);
    }
    const B = x.shape[0];
    const pe = params.patch_embed.proj;
    const stride = m.PATCH_2D ? geo.patchStride.slice(1) : geo.patchStride;
    let y = conv(x, pe.weight, { stride, padding: m.PATCH_PADDING });
    const grid = m.PATCH_2D ? [1, ...y.shape.slice(2)] : y.shape.slice(2);
    if (grid.some((d, i) => d !== geo.patchDims[i])) {
      throw new ShapeError('mvit', `patch embed produced grid ${fmt(grid)}, expected ${fmt(geo.patchDims)}`);
    }
    let tokens = add(permute(reshape(y, [B, m.EMBED_DIM, T0 * H0 * W0]), [0, 2, 1]), pe.bias);
    sink?.set('patch_embed', tokens);
    if (m.USE_ABS_POS) {
      const pos = m.SEP_POS_EMBED
        ? reshape(add(reshape(params.pos_embed_spatial, [1, 1, H0 * W0, m.EMBED_DIM]), reshape(params.pos_embed_temporal, [1, T0, 1, m.EMBED_DIM])), [1, T0 * H0 * W0, m.EMBED_DIM])
        : params.pos_embed;
      tokens = add(tokens, pos);
    }
    if (m.DROPOUT_RATE > 0) tokens = dropout(foldIn(key, 0), m.DROPOUT_RATE, tokens, { train });
    if (m.NORM_STEM) tokens = layerNorm(params.norm_stem, tokens, 1e-6);
    sink?.set('stack_in', tokens);
    return tokens;
  };

  const runStack = (params: any, tokens: Tensor, key: Key, opts: ApplyOptions): Tensor => {
    const sink = opts.activations;
    const s = stackFor(opts.train, sink);
    const layerParams = params.rev_backbone.layers as unknown[];
    let out: Tensor;
    if (sink === undefined) {
      out = s.forward(layerParams, tokens, key, { mode: opts.mode ?? 'reversible' });
    } else {
      out = forwardRecording(s, layerParams, tokens, key, sink);
    }
    if (m.DROPOUT_RATE > 0) out = dropout(foldIn(key, 2), m.DROPOUT_RATE, out, { train: opts.train });
    return out;
  };

  const head = (params: any, x: Tensor, key: Key, opts: ApplyOptions): Tensor => {
    const sink = opts.activations;
    let h: Tensor;
    if (m.USE_MEAN_POOLING) h = layerNorm(params.norm, mean(twoStreamFusion(geo.respathFuse, params.fuse, x, foldIn(key, 4), opts.train), 1), 1e-6);
    else h = mean(twoStreamFusion(geo.respathFuse, params.fuse, layerNorm(params.norm, x, 1e-6), foldIn(key, 4), opts.train), 1);
    sink?.set('head_in', h);
    if (cfg.MODEL.DROPOUT_RATE > 0) h = dropout(foldIn(key, 3), cfg.MODEL.DROPOUT_RATE, h, { train: opts.train });
    const logits = linear(params.head.projection, h);
    if (opts.train) return logits;
    switch (cfg.MODEL.HEAD_ACT) {
      case 'softmax':
        return softmax(logits, -1);
      case 'sigmoid':
        return div(1, add(exp(neg(logits)), 1));
      case 'none':
        return logits;
    }
  };

  return {
    config: cfg,
    geometry: geo,
    specs,
    init(key) {
      const named = new Map<string, Tensor>();
      specs.forEach((s, i) => named.set(s.name, initValue(s, foldIn(key, i))));
      return fromNamed(named);
    },
    apply(params, x, key, opts) {
      const p = params as any;
      const [kTok, kStack, kHead] = split(key, 3);
      const tokens = tokensOf(p, x, kTok, opts.train, opts.activations);
      return head(p, runStack(p, tokens, kStack, opts), kHead, opts);
    },
    applyStack(params, tokens, key, opts) {
      return runStack(params as any, tokens, key, opts);
    },
    drift(params, x, key) {
      const p = params as any;
      const [kTok, kStack] = split(key, 3);
      const tokens = tokensOf(p, x, kTok, true, undefined);
      return stackFor(true, undefined).drift(p.rev_backbone.layers, tokens, kStack);
    },
    noDecay: (name, zeroWd1dParam = true) => (zeroWd1dParam ? noDecayNames : skipDecayNames).has(name),
    blockAt(index, train) {
      const layer = stackFor(train, undefined).layers[index];
      if (layer === undefined || layer.kind !== 'reversible') throw new ShapeError('mvit', `layer ${index} is not a reversible block`);
      return layer;
    },
  };
}

/** Store-mode forward of a stack, one block at a time, recording each block's Y1 and Y2. */
function forwardRecording(s: ReturnType<typeof stack>, params: readonly unknown[], x: Tensor, key: Key, sink: Map<string, Tensor>): Tensor {
  const keys = s.layers.length === 0 ? [] : split(key, s.layers.length);
  let h = x;
  for (const g of s.groups) {
    if (g.stage !== null) {
      h = g.stage.apply(params[g.start], h, keys[g.start]);
      continue;
    }
    let pair: [Tensor, Tensor] = [h, h];
    g.run!.blocks.forEach((b, j) => {
      const i = g.start + j;
      pair = b.forward(params[i] as any, pair, keys[i]);
      sink.set(`layer${i}.Y1`, pair[0]);
      sink.set(`layer${i}.Y2`, pair[1]);
    });
    h = concat(pair, -1);
  }
  return h;
}
