/**
 * Rev-MViT geometry: every size PySlowFast's `MViT.__init__` and `ReversibleMViT.__init__` derive from
 * the config (spec sections 2.1-2.4), computed once as plain data so that the forward pass, the
 * parameter table and the config validation all read the same numbers.
 *
 * No tensor math lives here. `buildGeometry` expects a config that `parseConfig` accepted; the
 * smaller exports (`roundWidth`, `buildLayers`, ...) are total on any well-typed config with layer
 * indices in range, which is what the validation needs.
 */
import * as E from 'fp-ts/lib/Either.js';
import type { MultiScaleAttentionSpec } from '../../nn/attention.ts';
import { parseFusionMode, type FusionMode } from '../../nn/fusion.ts';
import type { PatchEmbedSpec } from '../../nn/patch-embed.ts';
import type { PoolSpec, Vec3 } from '../../nn/pooling.ts';
import { ArgumentError } from '../../tensor/errors.ts';
import { sizeOf } from '../../tensor/shape.ts';
import type { HeadAct, MViTConfig, MViTSection, ResPath } from './config-types.ts';

export type { FusionMode, PoolSpec, Vec3 };

/** PySlowFast's MViT builds its LayerNorms with eps 1e-6 (norm_layer = partial(nn.LayerNorm, eps=1e-6)). */
export const MVIT_NORM_EPS = 1e-6;

export interface LayerGeometry {
  readonly index: number;
  /** 'transition' = StageTransitionBlock (a BUFFER_LAYERS entry), 'reversible' = ReversibleBlock. */
  readonly kind: 'reversible' | 'transition';
  /** 2 when a transition's PRE_Q_FUSION contains "concat": its attention then sees both streams. */
  readonly inputMult: 1 | 2;
  /** Channels of each of the two streams entering the layer (PySlowFast's running embed_dim). */
  readonly streamDim: number;
  /** Input dim of F (its LayerNorm and q/k/v projections): streamDim * inputMult. */
  readonly dimIn: number;
  /** Output dim of F, and the dim of G and of the layer's output stream(s). */
  readonly dimOut: number;
  readonly heads: number;
  /** dimOut // heads: the attention head dim (rel-pos tables and, unless POOL_FIRST, the pool convs). */
  readonly headDim: number;
  /** Channels of the depthwise pool convs (conv modes; spec 3.2 `dc`). */
  readonly poolConvChannels: number;
  readonly mlpHidden: number;
  /** Token grid entering the layer (`layer.F.thw`). */
  readonly thwIn: Vec3;
  /** thwIn // strideQ: the grid PySlowFast hands to the next layer. */
  readonly thwOut: Vec3;
  /** The grid the Q pooling really produces (floor((n + 2p - k) / s) + 1); validation requires = thwOut. */
  readonly qThw: Vec3;
  /** The grid the K/V pooling produces. */
  readonly kvThw: Vec3;
  /** Token counts including the cls token when CLS_EMBED_ON. */
  readonly tokensIn: number;
  readonly tokensOut: number;
  /** The scheduled strides (spec 2.2); present even when the pool module itself is skipped. */
  readonly strideQ?: Vec3;
  readonly strideKV?: Vec3;
  /** The pooling modules MultiScaleAttention builds; absent when prod(kernel) == 1 and prod(stride) == 1. */
  readonly poolQ?: PoolSpec;
  readonly poolKV?: PoolSpec;
  /** RES_PATH "max" transitions: MaxPool3d with kernel s+1 (s>1), stride s, padding s // 2 (from the stride). */
  readonly poolSkip?: PoolSpec;
  /** Transitions whose attention changes the dim get res_proj = Linear(dimIn, dimOut). */
  readonly hasResProj: boolean;
  /** Stochastic-depth rate: torch.linspace(0, DROPPATH_RATE, DEPTH)[index] in float32. */
  readonly dropPath: number;
  /** F's attention module (its pooling is `poolQ` and `poolKV` on the grid `thwIn`). */
  readonly attention: MultiScaleAttentionSpec;
  /** Length of rel_pos_h and rel_pos_w: 2 * max(S // sq, S // skv) - 1 with S = thwIn[1]. */
  readonly relPosSpatialSize?: number;
  /** Length of rel_pos_t: 2 * thwIn[0] - 1. */
  readonly relPosTemporalSize?: number;
}

/** A stage transition alone, or a maximal run of reversible blocks (spec 3.9). */
export interface LayerGroup {
  readonly kind: 'reversible' | 'transition';
  readonly layers: readonly number[];
}

export interface ModelGeometry {
  readonly inputChannels: number;
  /** [NUM_FRAMES, S, S]. */
  readonly inputDims: Vec3;
  /** PATCH_STRIDE with 1 prepended when PATCH_2D. */
  readonly patchStride: Vec3;
  /** [T0, H0, W0] = inputDims // patchStride. */
  readonly patchDims: Vec3;
  /** N0 = T0 * H0 * W0. */
  readonly numPatches: number;
  readonly hasCls: boolean;
  readonly embedDim: number;
  readonly layers: readonly LayerGeometry[];
  readonly groups: readonly LayerGroup[];
  readonly preQFusion: FusionMode;
  readonly respathFuse: FusionMode;
  /** Cf = round_width(C0, prod(DIM_MUL), divisor=NUM_HEADS) (MViT's own formula, base heads). */
  readonly finalDim: number;
  /** Channels of the stack output [B, Nf, 2Cf]. */
  readonly stackOutDim: number;
  readonly finalTokens: number;
  /** Width of `fuse` (2Cf). */
  readonly fuseDim: number;
  /** Width of the final `norm` and of the head input: 2Cf when RESPATH_FUSE contains "concat", else Cf. */
  readonly headInputDim: number;
  readonly numClasses: number;
  /** PatchEmbed's conv (PATCH_STRIDE, PATCH_PADDING, PATCH_2D), producing the grid `patchDims`. */
  readonly patchEmbed: PatchEmbedSpec;
  /** Absolute position embeddings: none (USE_ABS_POS off), one table, or SEP_POS_EMBED's spatial + temporal. */
  readonly positions: 'none' | 'joint' | 'separate';
  /** A LayerNorm on the tokens entering the stack (NORM_STEM). */
  readonly normStem: boolean;
  /** MVIT.DROPOUT_RATE: dropout on the tokens entering and leaving the stack (and in every attention). */
  readonly dropout: number;
  /** The residual of a stage transition: its attention's Q pooling ('conv') or a max pool ('max'). */
  readonly resPath: ResPath;
  /** MViT's head: mean over the tokens before the final norm (USE_MEAN_POOLING) or after; MODEL.DROPOUT_RATE; HEAD_ACT. */
  readonly head: { readonly meanPooling: boolean; readonly dropout: number; readonly act: HeadAct };
}

/** PySlowFast's `round_width` (slowfast/models/utils.py), with Python's int() and // on positives. */
export function roundWidth(width: number, multiplier: number, minWidth = 1, divisor = 1): number {
  if (!multiplier) return width;
  const scaled = width * multiplier;
  const minimum = minWidth || divisor;
  const rounded = Math.max(minimum, Math.floor(Math.trunc(scaled + divisor / 2) / divisor) * divisor);
  return Math.trunc(rounded < 0.9 * scaled ? rounded + divisor : rounded);
}

/** Output length of a conv or pool (ceil_mode=False) along one axis. */
export const convOutputSize = (size: number, kernel: number, stride: number, padding: number): number =>
  Math.floor((size + 2 * padding - kernel) / stride) + 1;

const vec3 = (xs: readonly number[]): Vec3 => [xs[0]!, xs[1]!, xs[2]!];
const divideGrid = (thw: Vec3, stride: Vec3): Vec3 => vec3(thw.map((n, d) => Math.floor(n / stride[d]!)));
export const sameGrid = (a: readonly number[], b: readonly number[]): boolean =>
  a.length === b.length && a.every((x, i) => x === b[i]);

/** PATCH_STRIDE as a 3-vector: a 2D patch embed sees one frame, so T gets stride 1. */
const patchStrideOf = (mvit: MViTSection): Vec3 =>
  vec3(mvit.PATCH_2D ? [1, ...mvit.PATCH_STRIDE] : mvit.PATCH_STRIDE);

const inputDimsOf = (cfg: MViTConfig): Vec3 => [
  cfg.DATA.NUM_FRAMES,
  cfg.DATA.TRAIN_CROP_SIZE,
  cfg.DATA.TRAIN_CROP_SIZE,
];

export const patchDimsOf = (cfg: MViTConfig): Vec3 => divideGrid(inputDimsOf(cfg), patchStrideOf(cfg.MVIT));

/**
 * torch.linspace(0, rate, depth) as torch's CPU kernel computes it in float32: the first half counts
 * up from start, the second half counts down from end, so both ends are exact.
 */
export function dropPathRates(rate: number, depth: number): number[] {
  const f = Math.fround;
  if (depth === 1) return [0];
  const end = f(rate);
  const step = f(end / (depth - 1));
  const halfway = Math.floor(depth / 2);
  return Array.from({ length: depth }, (_, i) => (i < halfway ? f(step * i) : f(end - f(step * (depth - i - 1)))));
}

/** kernel [s+1 if s>1 else s], PySlowFast's default when POOL_KVQ_KERNEL is None. */
const defaultKernel = (stride: Vec3): Vec3 => vec3(stride.map((s) => (s > 1 ? s + 1 : s)));

export interface PoolingSchedule {
  readonly strideQ: readonly (Vec3 | undefined)[];
  readonly kernelQ: readonly (Vec3 | undefined)[];
  readonly strideKV: readonly (Vec3 | undefined)[];
  readonly kernelKV: readonly (Vec3 | undefined)[];
}

/**
 * POOL_KV_STRIDE_ADAPTIVE expanded as MViT.__init__ does (it overwrites POOL_KV_STRIDE): the KV stride
 * starts at the adaptive value and is divided by every Q stride on the way, so K/V keep a similar grid.
 */
export function adaptiveKvStrides(adaptive: readonly number[], strideQ: readonly (Vec3 | undefined)[]): number[][] {
  let kv = vec3(adaptive);
  return strideQ.map((sq, i) => {
    if (sq) kv = vec3(kv.map((s, d) => Math.max(Math.floor(s / sq[d]!), 1)));
    return [i, ...kv];
  });
}

/** Spec 2.2: per-layer Q and KV strides and kernels (undefined = no entry for that layer). */
export function poolingSchedule(mvit: MViTSection): PoolingSchedule {
  const depth = mvit.DEPTH;
  const kernelFor = (stride: Vec3): Vec3 => (mvit.POOL_KVQ_KERNEL ? vec3(mvit.POOL_KVQ_KERNEL) : defaultKernel(stride));
  const fill = (entries: readonly (readonly number[])[]) => {
    const strides: (Vec3 | undefined)[] = Array.from({ length: depth }, () => undefined);
    // Later entries for the same layer overwrite earlier ones, as PySlowFast's list assignment does.
    for (const [layer, ...stride] of entries) if (layer! < depth) strides[layer!] = vec3(stride);
    return { strides, kernels: strides.map((s) => (s ? kernelFor(s) : undefined)) };
  };
  const q = fill(mvit.POOL_Q_STRIDE);
  const kvEntries = mvit.POOL_KV_STRIDE_ADAPTIVE
    ? adaptiveKvStrides(mvit.POOL_KV_STRIDE_ADAPTIVE, q.strides)
    : mvit.POOL_KV_STRIDE;
  const kv = fill(kvEntries);
  return { strideQ: q.strides, kernelQ: q.kernels, strideKV: kv.strides, kernelKV: kv.kernels };
}

/** MultiScaleAttention skips a pool only when both kernel and stride multiply to 1. */
function poolModule(kernel: Vec3 | undefined, stride: Vec3 | undefined): PoolSpec | undefined {
  if (!kernel || !stride || (sizeOf(kernel) === 1 && sizeOf(stride) === 1)) return undefined;
  return { kernel, stride, padding: vec3(kernel.map((k) => Math.floor(k / 2))) };
}

const pooledGrid = (thw: Vec3, pool: PoolSpec | undefined): Vec3 =>
  pool ? vec3(thw.map((n, d) => convOutputSize(n, pool.kernel[d]!, pool.stride[d]!, pool.padding[d]!))) : thw;

/** StageTransitionBlock's max-pool residual: its padding comes from the stride, not the kernel (quirk 8.9). */
const poolSkipFor = (poolQ: PoolSpec): PoolSpec => ({
  kernel: defaultKernel(poolQ.stride),
  stride: poolQ.stride,
  padding: vec3(poolQ.stride.map((s) => Math.floor(s / 2))),
});

/** Multipliers live in a float32 torch.ones tensor in PySlowFast, so they are float32 values. */
function layerMultipliers(entries: readonly (readonly number[])[], depth: number): number[] {
  const muls = Array.from({ length: depth + 1 }, () => 1);
  for (const [layer, m] of entries) if (layer! <= depth) muls[layer!] = Math.fround(m!);
  return muls;
}

/** Spec 2.3: the running head count and dims of every layer, and its pooling and token grid. */
export function buildLayers(cfg: MViTConfig): LayerGeometry[] {
  const mvit = cfg.MVIT;
  const depth = mvit.DEPTH;
  const dimMul = layerMultipliers(mvit.DIM_MUL, depth);
  const headMul = layerMultipliers(mvit.HEAD_MUL, depth);
  const schedule = poolingSchedule(mvit);
  const dropPaths = dropPathRates(mvit.DROPPATH_RATE, depth);
  const concatBeforeQ = mvit.REV.PRE_Q_FUSION.includes('concat');
  const clsTokens = mvit.CLS_EMBED_ON ? 1 : 0;
  const isConvMode = mvit.MODE === 'conv';

  const layers: LayerGeometry[] = [];
  let heads = mvit.NUM_HEADS;
  let embedDim = mvit.EMBED_DIM;
  let thw = patchDimsOf(cfg);
  for (let i = 0; i < depth; i++) {
    heads = roundWidth(heads, headMul[i]!);
    embedDim = roundWidth(embedDim, i > 0 ? dimMul[i - 1]! : 1, 1, heads);
    const dimOut = roundWidth(embedDim, dimMul[i]!, 1, roundWidth(heads, headMul[i + 1]!));
    const kind = mvit.REV.BUFFER_LAYERS.includes(i) ? 'transition' : 'reversible';
    const inputMult = kind === 'transition' && concatBeforeQ ? 2 : 1;
    const dimIn = embedDim * inputMult;
    const strideQ = schedule.strideQ[i];
    const strideKV = schedule.strideKV[i];
    const poolQ = poolModule(schedule.kernelQ[i], strideQ);
    const poolKV = poolModule(schedule.kernelKV[i], strideKV);
    const thwOut = strideQ ? divideGrid(thw, strideQ) : thw;
    const headDim = Math.floor(dimOut / heads);
    // G runs on the attention output: dimOut for a transition, the block's own dim otherwise.
    const mlpDim = kind === 'transition' ? dimOut : dimIn;
    const convDim = mvit.POOL_FIRST ? dimIn : dimOut;
    const side = thw[1];
    const relSide = (stride: Vec3 | undefined) => (stride ? Math.floor(side / stride[1]) : side);
    layers.push({
      index: i,
      kind,
      inputMult,
      streamDim: embedDim,
      dimIn,
      dimOut,
      heads,
      headDim,
      poolConvChannels: isConvMode ? Math.floor(convDim / heads) : convDim,
      mlpHidden: Math.trunc(mlpDim * mvit.MLP_RATIO),
      thwIn: thw,
      thwOut,
      qThw: pooledGrid(thw, poolQ),
      kvThw: pooledGrid(thw, poolKV),
      tokensIn: sizeOf(thw) + clsTokens,
      tokensOut: sizeOf(thwOut) + clsTokens,
      ...(strideQ ? { strideQ } : {}),
      ...(strideKV ? { strideKV } : {}),
      ...(poolQ ? { poolQ } : {}),
      ...(poolKV ? { poolKV } : {}),
      ...(kind === 'transition' && mvit.REV.RES_PATH === 'max' && poolQ ? { poolSkip: poolSkipFor(poolQ) } : {}),
      hasResProj: kind === 'transition' && dimIn !== dimOut,
      dropPath: dropPaths[i]!,
      attention: {
        heads,
        dimOut,
        thw,
        hasCls: mvit.CLS_EMBED_ON,
        mode: mvit.MODE,
        ...(poolQ ? { poolQ } : {}),
        ...(poolKV ? { poolKV } : {}),
        poolFirst: mvit.POOL_FIRST,
        separateQkv: mvit.SEPARATE_QKV,
        relPosSpatial: mvit.REL_POS_SPATIAL,
        relPosTemporal: mvit.REL_POS_TEMPORAL,
        residualPooling: mvit.RESIDUAL_POOLING,
        dropRate: mvit.DROPOUT_RATE,
        normEps: MVIT_NORM_EPS,
      },
      ...(mvit.REL_POS_SPATIAL ? { relPosSpatialSize: 2 * Math.max(relSide(strideQ), relSide(strideKV)) - 1 } : {}),
      ...(mvit.REL_POS_TEMPORAL ? { relPosTemporalSize: 2 * thw[0] - 1 } : {}),
    });
    thw = thwOut;
  }
  return layers;
}

/** MViT's final embed dim: C0 times the float32 product of all DIM_MUL entries, rounded with the BASE heads. */
export function finalEmbedDim(mvit: MViTSection): number {
  const allMultipliers = Math.fround(layerMultipliers(mvit.DIM_MUL, mvit.DEPTH).reduce((a, b) => a * b, 1));
  return roundWidth(mvit.EMBED_DIM, allMultipliers, 1, mvit.NUM_HEADS);
}

/** Spec 3.9: each transition alone, each maximal run of reversible blocks together. */
export function layerGroups(layers: readonly Pick<LayerGeometry, 'index' | 'kind'>[]): LayerGroup[] {
  const groups: { kind: LayerGroup['kind']; layers: number[] }[] = [];
  for (const layer of layers) {
    const last = groups[groups.length - 1];
    if (layer.kind === 'reversible' && last?.kind === 'reversible') last.layers.push(layer.index);
    else groups.push({ kind: layer.kind, layers: [layer.index] });
  }
  return groups;
}

function fusionOrThrow(mode: string, field: string): FusionMode {
  const parsed = parseFusionMode(mode);
  if (E.isLeft(parsed)) throw new ArgumentError('buildGeometry', `${field}: ${parsed.left} (validate configs with parseConfig first)`);
  return parsed.right;
}

/** Everything MViT.__init__ derives from a validated config (spec 2). */
export function buildGeometry(cfg: MViTConfig): ModelGeometry {
  const mvit = cfg.MVIT;
  const layers = buildLayers(cfg);
  const patchDims = patchDimsOf(cfg);
  const finalDim = finalEmbedDim(mvit);
  const last = layers[layers.length - 1]!;
  const headInputDim = mvit.REV.RESPATH_FUSE.includes('concat') ? 2 * finalDim : finalDim;
  return {
    inputChannels: cfg.DATA.INPUT_CHANNEL_NUM[0]!,
    inputDims: inputDimsOf(cfg),
    patchStride: patchStrideOf(mvit),
    patchDims,
    numPatches: sizeOf(patchDims),
    hasCls: mvit.CLS_EMBED_ON,
    embedDim: mvit.EMBED_DIM,
    layers,
    groups: layerGroups(layers),
    preQFusion: fusionOrThrow(mvit.REV.PRE_Q_FUSION, 'MVIT.REV.PRE_Q_FUSION'),
    respathFuse: fusionOrThrow(mvit.REV.RESPATH_FUSE, 'MVIT.REV.RESPATH_FUSE'),
    finalDim,
    stackOutDim: 2 * last.dimOut,
    finalTokens: last.tokensOut,
    fuseDim: 2 * finalDim,
    headInputDim,
    numClasses: cfg.MODEL.NUM_CLASSES,
    patchEmbed: {
      stride: mvit.PATCH_STRIDE,
      padding: mvit.PATCH_PADDING,
      twoD: mvit.PATCH_2D,
      grid: patchDims,
    },
    positions: !mvit.USE_ABS_POS ? 'none' : mvit.SEP_POS_EMBED ? 'separate' : 'joint',
    normStem: mvit.NORM_STEM,
    dropout: mvit.DROPOUT_RATE,
    resPath: mvit.REV.RES_PATH,
    head: { meanPooling: mvit.USE_MEAN_POOLING, dropout: cfg.MODEL.DROPOUT_RATE, act: cfg.MODEL.HEAD_ACT },
  };
}
