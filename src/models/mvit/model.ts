/**
 * Rev-ViT / Rev-MViT (PySlowFast's MViT with REV.ENABLE, reversible_mvit.py) composed from nn/ layers:
 * patch embedding and positions, a `stack` of ReversibleBlocks (reversible(F, G)) and
 * StageTransitionBlocks (stages), the final fusion, norm and mean, and the head. Every size and switch
 * comes from the geometry (geometry.ts); params are a tree whose flattened paths are PySlowFast's
 * state_dict names.
 */
import { fromNamed, type PyTree } from '../../autodiff/pytree.ts';
import { multiScaleAttention, type AttentionParams } from '../../nn/attention.ts';
import { dropout, dropPath, type TrainFlag } from '../../nn/dropout.ts';
import { twoStreamFusion, type FusionParams } from '../../nn/fusion.ts';
import { classifierHead, type ClassifierHeadParams } from '../../nn/head.ts';
import { layerNorm, linear, mlp, type LinearParams, type MlpParams, type NormParams } from '../../nn/layers.ts';
import { addPositions, patchEmbed, type PatchEmbedParams, type PositionParams } from '../../nn/patch-embed.ts';
import { attentionPool, type AttentionPoolParams } from '../../nn/pooling.ts';
import { foldIn, split, type Key } from '../../random/index.ts';
import * as K from '../../random/keys.ts';
import { reversible, stack, stage, type AnyBlock, type DriftEntry, type Layer, type Mode, type RunStep } from '../../reversible/index.ts';
import { ShapeError } from '../../tensor/errors.ts';
import { add, mean, permute, reshape } from '../../tensor/ops.ts';
import { fmt, sameShape, sizeOf } from '../../tensor/shape.ts';
import { tensor, type Tensor } from '../../tensor/tensor.ts';
import type { MViTConfig } from './config-types.ts';
import { buildGeometry, MVIT_NORM_EPS, type LayerGeometry, type ModelGeometry } from './geometry.ts';
import { paramSpecs, type ParamSpec } from './params-spec.ts';

export type Params = PyTree;

export interface ApplyOptions {
  readonly train: boolean;
  readonly mode?: Mode;
}

export interface MViTModel {
  readonly config: MViTConfig;
  readonly geometry: ModelGeometry;
  readonly specs: readonly ParamSpec[];
  init(key: Key): Params;
  /** train: raw logits [B, classes]; eval: HEAD_ACT applied. */
  apply(params: Params, x: Tensor, key: Key, opts: ApplyOptions): Tensor;
  /** The ReversibleMViT stack alone: tokens [B, N(+1), C0] -> [B, Nf, 2Cf] (how the cls-token configs are used). */
  applyStack(params: Params, tokens: Tensor, key: Key, opts: ApplyOptions): Tensor;
  /** Per-reversible-block reconstruction error of the stack on the tokens this input produces. */
  drift(params: Params, x: Tensor, key: Key): DriftEntry[];
  /** Whether PySlowFast's optimizer puts this parameter in the no-weight-decay group (zeroWd1dParam: SOLVER.ZERO_WD_1D_PARAM, default true). */
  noDecay(name: string, zeroWd1dParam?: boolean): boolean;
}

export interface BuildOptions {
  /** Reproduce PySlowFast's shared drop-path mask for F and G of a reversible block (default: independent masks). */
  readonly sharedDropPathMask?: boolean;
}

/**
 * The keys of the random uses. The model's key is split into [tokens, stack, head] keys, and each
 * draw folds its use into one of them; a layer's key (one per layer, split from the stack key) gives
 * each branch use its own. F and G fold in the same `dropPath` use, so with shared block keys they
 * draw the same mask, as PySlowFast does.
 */
const MODEL_USE = { tokensDropout: 0, stackDropout: 2, headDropout: 3, headFusion: 4 } as const;
const BRANCH_USE = { attention: 0, dropPath: 1, fusion: 2 } as const;

/** Named activations (PySlowFast fixture names without `act.`), recorded by the parity check. */
type Sink = Map<string, Tensor> | undefined;

/** The parameter tree by PySlowFast's names (what `init` returns). */
interface ModelParams extends PositionParams {
  readonly patch_embed: PatchEmbedParams;
  readonly norm_stem?: NormParams;
  readonly rev_backbone: { readonly layers: readonly unknown[] };
  readonly fuse?: FusionParams;
  readonly norm: NormParams;
  readonly head: ClassifierHeadParams;
}

/** A parameter tree as the model reads it (`init`'s layout; loading checks names and shapes). */
const tree = (params: Params): ModelParams => params as unknown as ModelParams;

// ---------------------------------------------------------------------------------------------
// The layers of the stack

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

/** [B, L, C] -> [B, h, L, C/h] and back (h = 1 is a reshape). */
function splitHeads(x: Tensor, h: number): Tensor {
  const [B, L, C] = x.shape;
  return h === 1 ? reshape(x, [B, 1, L, C]) : permute(reshape(x, [B, L, h, C / h]), [0, 2, 1, 3]);
}
function mergeHeads(x: Tensor): Tensor {
  const [B, h, L, c] = x.shape;
  return h === 1 ? reshape(x, [B, L, c]) : reshape(permute(x, [0, 2, 1, 3]), [B, L, h * c]);
}

/**
 * StageTransitionBlock's residual: pooled like the block's queries (RES_PATH "conv": the attention's own
 * pool_q and norm_q, shared weights, spec 8.10) or by a max pool over the block's input grid ("max",
 * as intended upstream, spec 8.1), projected by res_proj when the dim changes (before pooling, or
 * after it with POOL_FIRST).
 */
function transitionResidual(geo: ModelGeometry, layer: LayerGeometry): (p: TransitionParams, x: Tensor) => Tensor {
  const { mode, hasCls, poolFirst } = layer.attention;
  const byConv = geo.resPath === 'conv';
  const window = byConv ? layer.poolQ : layer.poolSkip!;
  const pool = window === undefined ? null : attentionPool({ mode: byConv ? mode : 'max', pool: window, thw: layer.thwIn, hasCls, normEps: MVIT_NORM_EPS });
  const heads = byConv && mode !== 'conv_unshared' ? layer.heads : 1;
  const project = (p: TransitionParams, t: Tensor) => (layer.hasResProj ? linear(p.res_proj!, t) : t);
  return (p, x) => {
    let res = poolFirst ? x : project(p, x);
    if (pool !== null) {
      const weights: AttentionPoolParams = byConv ? { weight: p.F.attn.pool_q?.weight, norm: p.F.attn.norm_q } : {};
      res = mergeHeads(pool(weights, splitHeads(res, heads))[0]);
    }
    return poolFirst ? project(p, res) : res;
  };
}

/** The layer list of ReversibleMViT (spec 2.3, 3.6-3.8); `sink` records the parity check's activations. */
function stackLayers(geo: ModelGeometry, flag: TrainFlag, sharedDropPath: boolean, sink: Sink): Layer[] {
  return geo.layers.map((layer): Layer => {
    const attention = multiScaleAttention(layer.attention);
    const attnSub = (p: AttentionSubBlockParams, x: Tensor, key: Key) =>
      attention(p.attn, layerNorm(p.norm, x, MVIT_NORM_EPS), foldIn(key, BRANCH_USE.attention), flag);
    const mlpSub = (p: MlpSubBlockParams, x: Tensor) => mlp(p.mlp, layerNorm(p.norm, x, MVIT_NORM_EPS));
    const drop = (key: Key, y: Tensor) => dropPath(foldIn(key, BRANCH_USE.dropPath), layer.dropPath, y, flag);
    const record = (name: string, t: Tensor) => {
      sink?.set(`layer${layer.index}.${name}`, t);
      return t;
    };
    if (layer.kind === 'reversible') {
      const F = (p: AttentionSubBlockParams, x: Tensor, key: Key) => drop(key, record('F_out', attnSub(p, x, key)));
      const G = (p: MlpSubBlockParams, x: Tensor, key: Key) => drop(key, record('G_out', mlpSub(p, x)));
      return reversible(F, G, { keys: sharedDropPath ? 'shared' : 'split' });
    }
    const fuse = twoStreamFusion(geo.preQFusion);
    const residual = transitionResidual(geo, layer);
    return stage((p: TransitionParams, x: Tensor, key: Key) => {
      const fused = record('pre_q_fuse_out', fuse(p.pre_q_fuse, x, foldIn(key, BRANCH_USE.fusion), flag));
      let y = add(residual(p, fused), record('F_out', attnSub(p.F, fused, key)));
      y = add(y, mlpSub(p.G, y));
      return record('out', drop(key, y));
    });
  });
}

/** A stack-walk step running each reversible block alone (store mode) and recording its outputs. */
const recordingStep =
  (sink: Map<string, Tensor>): RunStep =>
  (run, params, xs, keys, start) => {
    let pair = xs;
    run.blocks.forEach((b, j) => {
      pair = b.forward(params[j], pair, keys[j]);
      sink.set(`layer${start + j}.Y1`, pair[0]);
      sink.set(`layer${start + j}.Y2`, pair[1]);
    });
    return pair;
  };

// ---------------------------------------------------------------------------------------------
// Tokens in, classes out

/** Input [B, C, (T,) H, W] -> the tokens entering the stack: patch embed, positions, dropout, stem norm. */
function tokenizer(geo: ModelGeometry) {
  const embed = patchEmbed(geo.patchEmbed);
  const positions = geo.positions === 'none' ? null : addPositions(geo.patchDims, geo.positions === 'separate');
  const inputDims = geo.patchEmbed.twoD ? [geo.inputChannels, geo.inputDims[1], geo.inputDims[2]] : [geo.inputChannels, ...geo.inputDims];
  return (params: ModelParams, x: Tensor, key: Key, flag: TrainFlag, sink: Sink): Tensor => {
    if (!sameShape(x.shape.slice(1), inputDims)) {
      throw new ShapeError('mvit', `input must be [B, ${inputDims.join(', ')}] for this config, got ${fmt(x.shape)}`);
    }
    let tokens = embed(params.patch_embed, x);
    sink?.set('patch_embed', tokens);
    if (positions !== null) tokens = positions(params, tokens);
    if (geo.dropout > 0) tokens = dropout(foldIn(key, MODEL_USE.tokensDropout), geo.dropout, tokens, flag);
    if (geo.normStem) tokens = layerNorm(params.norm_stem!, tokens, MVIT_NORM_EPS);
    sink?.set('stack_in', tokens);
    return tokens;
  };
}

/** Stack output [B, Nf, 2Cf] -> the final fusion, norm and mean over tokens (in PySlowFast's order), dropout, the head. */
function headFor(geo: ModelGeometry) {
  const fuse = twoStreamFusion(geo.respathFuse);
  const classify = classifierHead(geo.head.act);
  return (params: ModelParams, x: Tensor, key: Key, flag: TrainFlag, sink: Sink): Tensor => {
    const kFuse = foldIn(key, MODEL_USE.headFusion);
    let h = geo.head.meanPooling
      ? layerNorm(params.norm, mean(fuse(params.fuse, x, kFuse, flag), 1), MVIT_NORM_EPS)
      : mean(fuse(params.fuse, layerNorm(params.norm, x, MVIT_NORM_EPS), kFuse, flag), 1);
    sink?.set('head_in', h);
    if (geo.head.dropout > 0) h = dropout(foldIn(key, MODEL_USE.headDropout), geo.head.dropout, h, flag);
    return classify(params.head, h, flag);
  };
}

// ---------------------------------------------------------------------------------------------
// Init

function initValue(spec: ParamSpec, key: Key): Tensor {
  const n = sizeOf(spec.shape);
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

/** What the parity check (fixture-check.ts) needs beyond the model; not part of the public API. */
export interface ModelProbes {
  /** `apply` (or `applyStack` for `stackOnly`) in store mode, recording the fixtures' named activations. */
  record(params: Params, x: Tensor, key: Key, opts: { readonly train: boolean; readonly stackOnly: boolean }): [Tensor, Map<string, Tensor>];
  /** The reversible block of layer `index`. */
  blockAt(index: number, train: boolean): AnyBlock;
}

/** The model and its probes, built once from one geometry. */
export function assembleModel(cfg: MViTConfig, opts: BuildOptions = {}): { model: MViTModel; probes: ModelProbes } {
  const geo = buildGeometry(cfg);
  const specs = paramSpecs(cfg);
  const noDecayNames = new Set(specs.filter((s) => !s.decay).map((s) => s.name));
  const skipDecayNames = new Set(specs.filter((s) => s.skipDecay).map((s) => s.name));
  const layersFor = (train: boolean, sink: Sink) => stack(stackLayers(geo, { train }, opts.sharedDropPathMask === true, sink));
  const stacks = new Map<boolean, ReturnType<typeof layersFor>>();
  const stackFor = (train: boolean) => {
    if (!stacks.has(train)) stacks.set(train, layersFor(train, undefined));
    return stacks.get(train)!;
  };

  const tokensOf = tokenizer(geo);

  /** The stack, then MViT's dropout on its output. */
  const stackOf = (params: ModelParams, tokens: Tensor, key: Key, opts: ApplyOptions, sink: Sink): Tensor => {
    const layers = params.rev_backbone.layers;
    const out =
      sink === undefined
        ? stackFor(opts.train).forward(layers, tokens, key, { mode: opts.mode ?? 'reversible' })
        : layersFor(opts.train, sink).walk(layers, tokens, key, recordingStep(sink));
    return geo.dropout > 0 ? dropout(foldIn(key, MODEL_USE.stackDropout), geo.dropout, out, opts) : out;
  };

  const headOf = headFor(geo);

  const run = (params: Params, x: Tensor, key: Key, opts: ApplyOptions, sink: Sink): Tensor => {
    const p = tree(params);
    const [kTokens, kStack, kHead] = split(key, 3);
    const tokens = tokensOf(p, x, kTokens, opts, sink);
    return headOf(p, stackOf(p, tokens, kStack, opts, sink), kHead, opts, sink);
  };

  const model: MViTModel = {
    config: cfg,
    geometry: geo,
    specs,
    init(key) {
      const named = new Map<string, Tensor>();
      specs.forEach((s, i) => named.set(s.name, initValue(s, foldIn(key, i))));
      return fromNamed(named);
    },
    apply: (params, x, key, opts) => run(params, x, key, opts, undefined),
    applyStack: (params, tokens, key, opts) => stackOf(tree(params), tokens, key, opts, undefined),
    drift(params, x, key) {
      const p = tree(params);
      const [kTokens, kStack] = split(key, 3);
      const tokens = tokensOf(p, x, kTokens, { train: true }, undefined);
      return stackFor(true).drift(p.rev_backbone.layers, tokens, kStack);
    },
    noDecay: (name, zeroWd1dParam = true) => (zeroWd1dParam ? noDecayNames : skipDecayNames).has(name),
  };

  const probes: ModelProbes = {
    record(params, x, key, { train, stackOnly }) {
      const sink = new Map<string, Tensor>();
      const out = stackOnly ? stackOf(tree(params), x, key, { train }, sink) : run(params, x, key, { train }, sink);
      return [out, sink];
    },
    blockAt(index, train) {
      const layer = stackFor(train).layers[index];
      if (layer === undefined || layer.kind !== 'reversible') throw new ShapeError('mvit', `layer ${index} is not a reversible block`);
      return layer;
    },
  };
  return { model, probes };
}

export const buildModel = (cfg: MViTConfig, opts: BuildOptions = {}): MViTModel => assembleModel(cfg, opts).model;
