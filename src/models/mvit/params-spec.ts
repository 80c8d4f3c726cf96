/**
 * The parameters of PySlowFast's MViT with REV.ENABLE, by exact state_dict name, in state_dict order
 * (a module's own parameters first, then its children in registration order), with their shapes,
 * their init (spec 2.4) and whether PySlowFast's optimizer applies weight decay to them.
 */
import { fusionHidden, type FusionMode } from '../../nn/fusion.ts';
import { sizeOf } from '../../tensor/shape.ts';
import type { MViTConfig, MViTSection } from './config-types.ts';
import { buildGeometry, type LayerGeometry, type ModelGeometry } from './geometry.ts';

/**
 * trunc_normal: PyTorch's trunc_normal_(std) whose bounds a, b are ABSOLUTE (-2, 2), so at std 0.02 it
 * is a plain normal in practice. uniform: the untouched PyTorch default of the patch-embed conv bias.
 * `scale` multiplies the drawn value (HEAD_INIT_SCALE on the head).
 */
export type ParamInit =
  | { readonly kind: 'trunc_normal'; readonly std: number; readonly lower: number; readonly upper: number; readonly scale?: number }
  | { readonly kind: 'constant'; readonly value: number; readonly scale?: number }
  | { readonly kind: 'uniform'; readonly low: number; readonly high: number }
  | { readonly kind: 'ones' }
  | { readonly kind: 'zeros' };

export interface ParamSpec {
  readonly name: string;
  readonly shape: readonly number[];
  readonly init: ParamInit;
  /** False for what PySlowFast's optimizer puts in the zero-weight-decay group (with SOLVER.ZERO_WD_1D_PARAM). */
  readonly decay: boolean;
  /** Named by MViT.no_weight_decay() (pos embeds, rel-pos tables, cls token): no decay even without ZERO_WD_1D_PARAM. */
  readonly skipDecay: boolean;
}

type Draft = Omit<ParamSpec, 'decay' | 'skipDecay'>;

const TRUNC_NORMAL = { kind: 'trunc_normal', std: 0.02, lower: -2, upper: 2 } as const satisfies ParamInit;
/** MViT._init_weights sets Linear biases and LayerNorm biases to 0.02, not 0. */
const BIAS_002: ParamInit = { kind: 'constant', value: 0.02 };
const ONES: ParamInit = { kind: 'ones' };
const ZEROS: ParamInit = { kind: 'zeros' };

const param = (name: string, shape: readonly number[], init: ParamInit): Draft => ({ name, shape, init });

function linear(prefix: string, inDim: number, outDim: number, bias = true): Draft[] {
  return [
    param(`${prefix}.weight`, [outDim, inDim], TRUNC_NORMAL),
    ...(bias ? [param(`${prefix}.bias`, [outDim], BIAS_002)] : []),
  ];
}

const layerNorm = (prefix: string, dim: number): Draft[] => [
  param(`${prefix}.weight`, [dim], ONES),
  param(`${prefix}.bias`, [dim], BIAS_002),
];

const mlp = (prefix: string, dim: number, hidden: number): Draft[] => [
  ...linear(`${prefix}.fc1`, dim, hidden),
  ...linear(`${prefix}.fc2`, hidden, dim),
];

/** TwoStreamFusion: only the concat_linear modes own parameters (an Mlp, after a LayerNorm for "ln+"). */
function fusion(prefix: string, mode: FusionMode, dim: number): Draft[] {
  if (mode.kind !== 'concat_linear') return [];
  const hidden = fusionHidden(mode, dim);
  return mode.ln
    ? [...layerNorm(`${prefix}.fuse_fn.0`, dim), ...mlp(`${prefix}.fuse_fn.1`, dim, hidden)]
    : mlp(`${prefix}.fuse_fn`, dim, hidden);
}

/** MultiScaleAttention: rel-pos tables (its own parameters) first, then projections and pools. */
function attention(prefix: string, layer: LayerGeometry, mvit: MViTSection): Draft[] {
  const relPosInit = mvit.REL_POS_ZERO_INIT ? ZEROS : TRUNC_NORMAL;
  const relPos = [
    ...(layer.relPosSpatialSize !== undefined
      ? ['h', 'w'].map((axis) => param(`${prefix}.rel_pos_${axis}`, [layer.relPosSpatialSize!, layer.headDim], relPosInit))
      : []),
    ...(layer.relPosTemporalSize !== undefined
      ? [param(`${prefix}.rel_pos_t`, [layer.relPosTemporalSize, layer.headDim], relPosInit)]
      : []),
  ];
  const projections =
    mvit.POOL_FIRST || mvit.SEPARATE_QKV
      ? ['q', 'k', 'v'].flatMap((x) => linear(`${prefix}.${x}`, layer.dimIn, layer.dimOut, mvit.QKV_BIAS))
      : linear(`${prefix}.qkv`, layer.dimIn, 3 * layer.dimOut, mvit.QKV_BIAS);
  const convPools = mvit.MODE === 'conv' || mvit.MODE === 'conv_unshared';
  const pool = (x: 'q' | 'k' | 'v', spec: LayerGeometry['poolQ']): Draft[] =>
    convPools && spec
      ? [
          param(`${prefix}.pool_${x}.weight`, [layer.poolConvChannels, 1, ...spec.kernel], TRUNC_NORMAL),
          ...layerNorm(`${prefix}.norm_${x}`, layer.poolConvChannels),
        ]
      : [];
  return [
    ...relPos,
    ...projections,
    ...linear(`${prefix}.proj`, layer.dimOut, layer.dimOut),
    ...pool('q', layer.poolQ),
    ...pool('k', layer.poolKV),
    ...pool('v', layer.poolKV),
  ];
}

/** A ReversibleBlock or StageTransitionBlock: F, G, then (transitions) pre_q_fuse and res_proj. */
function block(layer: LayerGeometry, geometry: ModelGeometry, mvit: MViTSection): Draft[] {
  const prefix = `rev_backbone.layers.${layer.index}`;
  const mlpDim = layer.kind === 'transition' ? layer.dimOut : layer.dimIn;
  const transitionOnly =
    layer.kind === 'transition'
      ? [
          ...fusion(`${prefix}.pre_q_fuse`, geometry.preQFusion, layer.dimIn),
          ...(layer.hasResProj ? linear(`${prefix}.res_proj`, layer.dimIn, layer.dimOut) : []),
        ]
      : [];
  return [
    ...layerNorm(`${prefix}.F.norm`, layer.dimIn),
    ...attention(`${prefix}.F.attn`, layer, mvit),
    ...layerNorm(`${prefix}.G.norm`, mlpDim),
    ...mlp(`${prefix}.G.mlp`, mlpDim, layer.mlpHidden),
    ...transitionOnly,
  ];
}

/** MViT's own parameters: the cls token and the absolute position embeddings. */
function embeddings(geometry: ModelGeometry, mvit: MViTSection): Draft[] {
  const c0 = geometry.embedDim;
  const [t0, h0, w0] = geometry.patchDims;
  const cls = geometry.hasCls ? 1 : 0;
  const positions = !mvit.USE_ABS_POS
    ? []
    : mvit.SEP_POS_EMBED
      ? [
          param('pos_embed_spatial', [1, h0 * w0, c0], TRUNC_NORMAL),
          param('pos_embed_temporal', [1, t0, c0], TRUNC_NORMAL),
          ...(cls ? [param('pos_embed_class', [1, 1, c0], TRUNC_NORMAL)] : []),
        ]
      : [param('pos_embed', [1, geometry.numPatches + cls, c0], TRUNC_NORMAL)];
  return [...(cls ? [param('cls_token', [1, 1, c0], TRUNC_NORMAL)] : []), ...positions];
}

/** Conv2d/Conv3d patch embed; MViT._init_weights re-inits the weight only, the bias keeps PyTorch's default. */
function patchEmbed(geometry: ModelGeometry, mvit: MViTSection): Draft[] {
  const inChannels = geometry.inputChannels;
  const fanIn = inChannels * sizeOf(mvit.PATCH_KERNEL);
  const bound = 1 / Math.sqrt(fanIn);
  return [
    param('patch_embed.proj.weight', [geometry.embedDim, inChannels, ...mvit.PATCH_KERNEL], TRUNC_NORMAL),
    param('patch_embed.proj.bias', [geometry.embedDim], { kind: 'uniform', low: -bound, high: bound }),
  ];
}

function head(geometry: ModelGeometry, mvit: MViTSection): Draft[] {
  const scale = mvit.HEAD_INIT_SCALE;
  return [
    param('head.projection.weight', [geometry.numClasses, geometry.headInputDim], { ...TRUNC_NORMAL, scale }),
    param('head.projection.bias', [geometry.numClasses], { kind: 'constant', value: 0.02, scale }),
  ];
}

/** MViT.no_weight_decay(): matched as substrings of the name, as PySlowFast's optimizer does. */
function noWeightDecayNames(mvit: MViTSection): string[] {
  if (!mvit.ZERO_DECAY_POS_CLS) return [];
  return [
    ...(mvit.USE_ABS_POS ? (mvit.SEP_POS_EMBED ? ['pos_embed_spatial', 'pos_embed_temporal', 'pos_embed_class'] : ['pos_embed']) : []),
    ...(mvit.REL_POS_SPATIAL ? ['rel_pos_h', 'rel_pos_w', 'rel_pos_hw'] : []),
    ...(mvit.REL_POS_TEMPORAL ? ['rel_pos_t'] : []),
    ...(mvit.CLS_EMBED_ON ? ['cls_token'] : []),
  ];
}

/** PySlowFast's optimizer (ZERO_WD_1D_PARAM): no decay for no_weight_decay names, 1-D params and biases. */
const decays = (draft: Draft, skip: readonly string[]): boolean =>
  !(skipped(draft, skip) || draft.shape.length === 1 || draft.name.endsWith('.bias'));
const skipped = (draft: Draft, skip: readonly string[]): boolean => skip.some((k) => draft.name.includes(k));

/** Every parameter of the model the (validated) config describes, in state_dict order. */
export function paramSpecs(cfg: MViTConfig): ParamSpec[] {
  const mvit = cfg.MVIT;
  const geometry = buildGeometry(cfg);
  const drafts = [
    ...embeddings(geometry, mvit),
    ...patchEmbed(geometry, mvit),
    ...(mvit.NORM_STEM ? layerNorm('norm_stem', geometry.embedDim) : []),
    ...geometry.layers.flatMap((layer) => block(layer, geometry, mvit)),
    ...fusion('fuse', geometry.respathFuse, geometry.fuseDim),
    ...layerNorm('norm', geometry.headInputDim),
    ...head(geometry, mvit),
  ];
  const skip = noWeightDecayNames(mvit);
  return drafts.map((d) => ({ ...d, decay: decays(d, skip), skipDecay: skipped(d, skip) }));
}

const paramSize = (spec: Pick<ParamSpec, 'shape'>): number => sizeOf(spec.shape);

/** Total number of scalars, as sum(p.numel() for p in model.parameters()). */
export const paramCount = (specs: readonly Pick<ParamSpec, 'shape'>[]): number =>
  specs.reduce((total, spec) => total + paramSize(spec), 0);
