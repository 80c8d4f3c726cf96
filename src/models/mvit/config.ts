/**
 * Rev-MViT configuration: PySlowFast's defaults (slowfast/config/defaults.py), the typed config, and
 * `parseConfig`, which deep-merges a partial user config over the defaults, type-checks every field
 * and then checks everything PySlowFast would only discover later (an assert in __init__, a crash in
 * forward, or a silently wrong model). It collects every problem, each with its path and a message
 * that says what PySlowFast would do.
 */
import * as E from 'fp-ts/lib/Either.js';
import { pipe } from 'fp-ts/lib/function.js';
import { describeValue, parseJson } from '../../io/json.ts';
import {
  adaptiveKvStrides,
  buildLayers,
  convOutputSize,
  finalEmbedDim,
  parseFusionMode,
  patchDimsOf,
  poolingSchedule,
  sameGrid,
  type LayerGeometry,
} from './geometry.ts';

export { parseFusionMode, type FusionMode } from './geometry.ts';

export type PoolMode = 'conv' | 'conv_unshared' | 'avg' | 'max';
export type HeadAct = 'softmax' | 'sigmoid' | 'none';
export type ResPath = 'conv' | 'max';
/** [layer index, multiplier], as in DIM_MUL and HEAD_MUL. */
export type LayerMultiplier = [layer: number, multiplier: number];
/** [layer index, stride_t, stride_h, stride_w], as in POOL_Q_STRIDE and POOL_KV_STRIDE. */
export type LayerStride = [layer: number, t: number, h: number, w: number];

export interface DataConfig {
  NUM_FRAMES: number;
  TRAIN_CROP_SIZE: number;
  TEST_CROP_SIZE: number;
  /** Only entry [0] is used (the number of input channels). */
  INPUT_CHANNEL_NUM: number[];
}

export interface ModelConfig {
  NUM_CLASSES: number;
  /** Head dropout. */
  DROPOUT_RATE: number;
  HEAD_ACT: HeadAct;
  DETACH_FINAL_FC: boolean;
  ACT_CHECKPOINT: boolean;
}

export interface RevConfig {
  ENABLE: boolean;
  RESPATH_FUSE: string;
  /** The StageTransitionBlock layers (not activation buffering, despite the name). */
  BUFFER_LAYERS: number[];
  RES_PATH: ResPath;
  PRE_Q_FUSION: string;
}

export interface MViTSection {
  MODE: PoolMode;
  POOL_FIRST: boolean;
  CLS_EMBED_ON: boolean;
  PATCH_KERNEL: number[];
  PATCH_STRIDE: number[];
  PATCH_PADDING: number[];
  PATCH_2D: boolean;
  EMBED_DIM: number;
  NUM_HEADS: number;
  MLP_RATIO: number;
  QKV_BIAS: boolean;
  DROPPATH_RATE: number;
  LAYER_SCALE_INIT_VALUE: number;
  DEPTH: number;
  NORM: 'layernorm';
  DIM_MUL: LayerMultiplier[];
  HEAD_MUL: LayerMultiplier[];
  POOL_KV_STRIDE: LayerStride[];
  POOL_KV_STRIDE_ADAPTIVE: number[] | null;
  POOL_Q_STRIDE: LayerStride[];
  POOL_KVQ_KERNEL: number[] | null;
  ZERO_DECAY_POS_CLS: boolean;
  NORM_STEM: boolean;
  SEP_POS_EMBED: boolean;
  DROPOUT_RATE: number;
  USE_ABS_POS: boolean;
  REL_POS_SPATIAL: boolean;
  REL_POS_TEMPORAL: boolean;
  REL_POS_ZERO_INIT: boolean;
  RESIDUAL_POOLING: boolean;
  DIM_MUL_IN_ATT: boolean;
  SEPARATE_QKV: boolean;
  HEAD_INIT_SCALE: number;
  USE_MEAN_POOLING: boolean;
  USE_FIXED_SINCOS_POS: boolean;
  REV: RevConfig;
}

export interface MViTConfig {
  DATA: DataConfig;
  MODEL: ModelConfig;
  MVIT: MViTSection;
}

export type DeepPartial<T> = T extends readonly unknown[]
  ? T
  : T extends object
    ? { [K in keyof T]?: DeepPartial<T[K]> }
    : T;

/** What users write: any subset of the fields, plus other PySlowFast sections, which are ignored. */
export type PartialConfig = DeepPartial<MViTConfig> & { readonly [section: string]: unknown };

export interface ConfigProblem {
  /** Where, e.g. 'MVIT.POOL_Q_STRIDE[1]' ('' for the whole document). */
  readonly path: string;
  readonly message: string;
}

/**
 * 'model': the whole MViT, as PySlowFast builds it. 'stack': only the ReversibleMViT stack, which
 * (unlike MViT) supports a cls token; the stack-only golden fixtures are built that way.
 */
export interface ParseOptions {
  readonly target?: 'model' | 'stack';
}

/** PySlowFast's defaults for every field the model reads (spec 1.1-1.3). */
export const DEFAULT_CONFIG: MViTConfig = {
  DATA: { NUM_FRAMES: 8, TRAIN_CROP_SIZE: 224, TEST_CROP_SIZE: 256, INPUT_CHANNEL_NUM: [3, 3] },
  MODEL: { NUM_CLASSES: 400, DROPOUT_RATE: 0.5, HEAD_ACT: 'softmax', DETACH_FINAL_FC: false, ACT_CHECKPOINT: false },
  MVIT: {
    MODE: 'conv',
    POOL_FIRST: false,
    CLS_EMBED_ON: true,
    PATCH_KERNEL: [3, 7, 7],
    PATCH_STRIDE: [2, 4, 4],
    PATCH_PADDING: [2, 4, 4],
    PATCH_2D: false,
    EMBED_DIM: 96,
    NUM_HEADS: 1,
    MLP_RATIO: 4.0,
    QKV_BIAS: true,
    DROPPATH_RATE: 0.1,
    LAYER_SCALE_INIT_VALUE: 0.0,
    DEPTH: 16,
    NORM: 'layernorm',
    DIM_MUL: [],
    HEAD_MUL: [],
    POOL_KV_STRIDE: [],
    POOL_KV_STRIDE_ADAPTIVE: null,
    POOL_Q_STRIDE: [],
    POOL_KVQ_KERNEL: null,
    ZERO_DECAY_POS_CLS: true,
    NORM_STEM: false,
    SEP_POS_EMBED: false,
    DROPOUT_RATE: 0.0,
    USE_ABS_POS: true,
    REL_POS_SPATIAL: false,
    REL_POS_TEMPORAL: false,
    REL_POS_ZERO_INIT: false,
    RESIDUAL_POOLING: false,
    DIM_MUL_IN_ATT: false,
    SEPARATE_QKV: false,
    HEAD_INIT_SCALE: 1.0,
    USE_MEAN_POOLING: false,
    USE_FIXED_SINCOS_POS: false,
    REV: { ENABLE: false, RESPATH_FUSE: 'concat', BUFFER_LAYERS: [], RES_PATH: 'conv', PRE_Q_FUSION: 'avg' },
  },
};

/** Other top-level sections of PySlowFast's config: accepted and ignored (they do not shape the model). */
const OTHER_SLOWFAST_SECTIONS = [
  'AUG', 'AVA', 'BENCHMARK', 'BN', 'CONTRASTIVE', 'DATA_LOADER', 'DEMO', 'DETECTION', 'DIST_BACKEND',
  'LOG_MODEL_INFO', 'LOG_PERIOD', 'MASK', 'MIXUP', 'MULTIGRID', 'NONLOCAL', 'NUM_GPUS', 'NUM_SHARDS',
  'OUTPUT_DIR', 'RESNET', 'RNG_SEED', 'SHARD_ID', 'SLOWFAST', 'SOLVER', 'TASK', 'TENSORBOARD', 'TEST',
  'TRAIN', 'VIS_MASK', 'X3D',
];

/** PySlowFast DATA and MODEL keys that only concern data loading or training: accepted and ignored. */
const IGNORED_DATA_KEYS = [
  'PATH_TO_DATA_DIR', 'PATH_LABEL_SEPARATOR', 'PATH_PREFIX', 'SAMPLING_RATE', 'TRAIN_PCA_EIGVAL',
  'TRAIN_PCA_EIGVEC', 'PATH_TO_PRELOAD_IMDB', 'MEAN', 'STD', 'TRAIN_JITTER_SCALES',
  'TRAIN_JITTER_SCALES_RELATIVE', 'TRAIN_JITTER_ASPECT_RELATIVE', 'USE_OFFSET_SAMPLING',
  'TRAIN_JITTER_MOTION_SHIFT', 'TARGET_FPS', 'TRAIN_JITTER_FPS', 'DECODING_BACKEND', 'DECODING_SHORT_SIZE',
  'INV_UNIFORM_SAMPLE', 'RANDOM_FLIP', 'MULTI_LABEL', 'ENSEMBLE_METHOD', 'REVERSE_INPUT_CHANNEL',
  'TRAIN_CROP_NUM_TEMPORAL', 'TRAIN_CROP_NUM_SPATIAL', 'COLOR_RND_GRAYSCALE', 'LOADER_CHUNK_SIZE',
  'LOADER_CHUNK_OVERALL_SIZE', 'SKIP_ROWS', 'TIME_DIFF_PROB', 'SSL_COLOR_JITTER', 'SSL_COLOR_BRI_CON_SAT',
  'SSL_COLOR_HUE', 'SSL_MOCOV2_AUG', 'SSL_BLUR_SIGMA_MIN', 'SSL_BLUR_SIGMA_MAX', 'IN22K_TRAINVAL', 'IN22',
  'IN_VAL_CROP_RATIO', 'DUMMY_LOAD', 'IN22k_VAL_IN1K',
];
const IGNORED_MODEL_KEYS = [
  'ARCH', 'MODEL_NAME', 'LOSS_FUNC', 'SINGLE_PATHWAY_ARCH', 'MULTI_PATHWAY_ARCH', 'DROPCONNECT_RATE',
  'FC_INIT_STD', 'FROZEN_BN', 'FP16_ALLREDUCE',
];

// ---------------------------------------------------------------------------------------------
// Decoders: (value, path) => Either<problems, value>, combined so that every problem is collected.

type Decoded<A> = E.Either<ConfigProblem[], A>;
type Decoder<A> = (value: unknown, path: string) => Decoded<A>;

const fail = <A>(path: string, message: string): Decoded<A> => E.left([{ path, message }]);
/** A key as shown in a path: a hostile 1 MB key is cut. */
const keyText = (key: string): string => (key.length > 64 ? `${key.slice(0, 61)}...` : key);
const join = (path: string, key: string): string => (path ? `${path}.${keyText(key)}` : keyText(key));
const at = (path: string, index: number): string => `${path}[${index}]`;

/** Bounded, so a deep, cyclic or huge value in a config costs little and cannot throw. */
const describe = (value: unknown): string => describeValue(value, 60);

/**
 * Bounds that keep validation and the geometry cheap whatever the input: no real model comes near them
 * (PySlowFast's largest MViT has 80 layers). Memory is bounded separately, by the resource estimate.
 */
export const MAX_DEPTH = 4096;
/** Most entries of any list in a config (DIM_MUL, POOL_Q_STRIDE, BUFFER_LAYERS, ...). */
export const MAX_LIST_ENTRIES = 4096;

const isRecord = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

/** All successes, or every problem of every failure. */
function collect<A>(results: readonly Decoded<A>[]): Decoded<A[]> {
  const problems = results.flatMap((r) => (E.isLeft(r) ? r.left : []));
  return problems.length > 0 ? E.left(problems) : E.right(results.map((r) => (r as E.Right<A>).right));
}

const boolean: Decoder<boolean> = (v, path) =>
  typeof v === 'boolean' ? E.right(v) : fail(path, `expected true or false, got ${describe(v)}`);

interface Range {
  readonly min?: number;
  readonly max?: number;
  /** Exclusive bounds. */
  readonly above?: number;
  readonly below?: number;
}

function rangeText(r: Range): string {
  const parts = [
    r.min !== undefined ? `>= ${r.min}` : '',
    r.above !== undefined ? `> ${r.above}` : '',
    r.max !== undefined ? `<= ${r.max}` : '',
    r.below !== undefined ? `< ${r.below}` : '',
  ].filter(Boolean);
  return parts.join(' and ');
}

const inRange = (x: number, r: Range): boolean =>
  (r.min === undefined || x >= r.min) &&
  (r.max === undefined || x <= r.max) &&
  (r.above === undefined || x > r.above) &&
  (r.below === undefined || x < r.below);

const real =
  (range: Range = {}, what = 'a number'): Decoder<number> =>
  (v, path) => {
    if (typeof v !== 'number' || !Number.isFinite(v)) return fail(path, `expected ${what}, got ${describe(v)}`);
    if (!inRange(v, range)) return fail(path, `expected ${what} ${rangeText(range)}, got ${v}`);
    return E.right(v);
  };

const integer =
  (range: Range = {}): Decoder<number> =>
  (v, path) =>
    typeof v === 'number' && Number.isFinite(v) && !Number.isInteger(v)
      ? fail(path, `expected an integer, got ${v}`)
      : typeof v === 'number' && Number.isInteger(v) && !Number.isSafeInteger(v)
        ? fail(path, `expected an integer below 2^53, got ${v}`)
        : real(range, 'an integer')(v, path);

const positiveInt = integer({ min: 1 });
const nonNegativeInt = integer({ min: 0 });
const probability = real({ min: 0, max: 1 });

const oneOf =
  <T extends string>(values: readonly T[], consequence: string): Decoder<T> =>
  (v, path) => {
    const found = values.find((x) => x === v);
    return found !== undefined
      ? E.right(found)
      : fail(path, `expected one of ${values.map((x) => JSON.stringify(x)).join(', ')}, got ${describe(v)}: ${consequence}`);
  };

const string: Decoder<string> = (v, path) =>
  typeof v === 'string' ? E.right(v) : fail(path, `expected a string, got ${describe(v)}`);

const nullable =
  <A>(decoder: Decoder<A>): Decoder<A | null> =>
  (v, path) =>
    v === null ? E.right(null) : decoder(v, path);

const list =
  <A>(item: Decoder<A>, lengths?: readonly number[]): Decoder<A[]> =>
  (v, path) => {
    if (!Array.isArray(v)) return fail(path, `expected a list, got ${describe(v)}`);
    if (v.length > MAX_LIST_ENTRIES) return fail(path, `a list of ${v.length} entries; at most ${MAX_LIST_ENTRIES} are accepted`);
    if (lengths && !lengths.includes(v.length)) {
      return fail(path, `expected a list of ${lengths.join(' or ')} entries, got ${v.length}: ${describe(v)}`);
    }
    return collect(v.map((x, i) => item(x, at(path, i))));
  };

const tuple =
  <T extends unknown[]>(...items: { [K in keyof T]: Decoder<T[K]> }): Decoder<T> =>
  (v, path) => {
    if (!Array.isArray(v) || v.length !== items.length) {
      return fail(path, `expected a list of ${items.length} numbers, got ${describe(v)}`);
    }
    return collect(items.map((d: Decoder<unknown>, i) => d(v[i], at(path, i)))) as Decoded<T>;
  };

/** Small edit distance, to suggest the key a typo meant. */
function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      current[j] = Math.min(previous[j]! + 1, current[j - 1]! + 1, previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    previous = current;
  }
  return previous[b.length]!;
}

function unknownKeyMessage(key: string, known: readonly string[]): string {
  // Within distance 2 the lengths differ by at most 2; checking that first keeps long keys cheap.
  const close = known.filter((k) => Math.abs(k.length - key.length) <= 2 && editDistance(key, k) <= 2);
  const hint = close.length > 0 ? `; did you mean ${close.join(' or ')}?` : '';
  return `unknown key: PySlowFast's config merge raises KeyError ('Non-existent config key')${hint}`;
}

type Fields<T> = { [K in keyof T]: Decoder<T[K]> };

/** An object with exactly these fields (plus ignored keys); unknown keys are problems. */
const struct =
  <T>(fields: Fields<T>, ignoredKeys: readonly string[] = []): Decoder<T> =>
  (v, path) => {
    if (!isRecord(v)) return fail(path, `expected an object, got ${describe(v)}`);
    const tooMany = tooManyKeys(v, path);
    if (tooMany) return E.left([tooMany]);
    const names = Object.keys(fields) as (keyof T & string)[];
    const unknown: ConfigProblem[] = Object.keys(v)
      .filter((k) => !Object.hasOwn(fields, k) && !ignoredKeys.includes(k))
      .map((k) => ({ path: join(path, k), message: unknownKeyMessage(k, names) }));
    const decoded = collect(names.map((k) => pipe(fields[k](v[k], join(path, k)), E.map((x) => [k, x] as const))));
    const problems = [...(E.isLeft(decoded) ? decoded.left : []), ...unknown];
    if (problems.length > 0 || E.isLeft(decoded)) return E.left(problems);
    return E.right(Object.fromEntries(decoded.right) as T);
  };

function tooManyKeys(v: Record<string, unknown>, path: string): ConfigProblem | null {
  const n = Object.keys(v).length;
  return n > MAX_LIST_ENTRIES ? { path, message: `an object of ${n} keys; at most ${MAX_LIST_ENTRIES} are accepted` } : null;
}

const vec3Of = (item: Decoder<number>) => list(item, [3]);
const layerMultiplier = tuple<LayerMultiplier>(nonNegativeInt, real({ above: 0 }));
const layerStride = tuple<LayerStride>(nonNegativeInt, positiveInt, positiveInt, positiveInt);

const decodeConfig: Decoder<MViTConfig> = struct<MViTConfig>({
  DATA: struct<DataConfig>(
    {
      NUM_FRAMES: positiveInt,
      TRAIN_CROP_SIZE: positiveInt,
      TEST_CROP_SIZE: positiveInt,
      INPUT_CHANNEL_NUM: (v, path) =>
        Array.isArray(v) && v.length === 0
          ? fail(path, 'expected at least one entry: MViT reads INPUT_CHANNEL_NUM[0] (IndexError)')
          : list(positiveInt)(v, path),
    },
    IGNORED_DATA_KEYS,
  ),
  MODEL: struct<ModelConfig>(
    {
      NUM_CLASSES: positiveInt,
      DROPOUT_RATE: probability,
      HEAD_ACT: oneOf<HeadAct>(['softmax', 'sigmoid', 'none'], 'TransformerBasicHead raises NotImplementedError'),
      DETACH_FINAL_FC: boolean,
      ACT_CHECKPOINT: boolean,
    },
    IGNORED_MODEL_KEYS,
  ),
  MVIT: struct<MViTSection>({
    MODE: oneOf<PoolMode>(['conv', 'conv_unshared', 'avg', 'max'], 'MultiScaleAttention raises NotImplementedError'),
    POOL_FIRST: boolean,
    CLS_EMBED_ON: boolean,
    PATCH_KERNEL: list(positiveInt, [2, 3]),
    PATCH_STRIDE: list(positiveInt, [2, 3]),
    PATCH_PADDING: list(nonNegativeInt, [2, 3]),
    PATCH_2D: boolean,
    EMBED_DIM: positiveInt,
    NUM_HEADS: positiveInt,
    MLP_RATIO: real({ above: 0 }),
    QKV_BIAS: boolean,
    DROPPATH_RATE: real({ min: 0, below: 1 }),
    LAYER_SCALE_INIT_VALUE: real(),
    DEPTH: integer({ min: 1, max: MAX_DEPTH }),
    NORM: oneOf(['layernorm'] as const, 'MViT raises NotImplementedError("Only supports layernorm.")'),
    DIM_MUL: list(layerMultiplier),
    HEAD_MUL: list(layerMultiplier),
    POOL_KV_STRIDE: list(layerStride),
    POOL_KV_STRIDE_ADAPTIVE: nullable(vec3Of(positiveInt)),
    POOL_Q_STRIDE: list(layerStride),
    POOL_KVQ_KERNEL: nullable(vec3Of(positiveInt)),
    ZERO_DECAY_POS_CLS: boolean,
    NORM_STEM: boolean,
    SEP_POS_EMBED: boolean,
    DROPOUT_RATE: probability,
    USE_ABS_POS: boolean,
    REL_POS_SPATIAL: boolean,
    REL_POS_TEMPORAL: boolean,
    REL_POS_ZERO_INIT: boolean,
    RESIDUAL_POOLING: boolean,
    DIM_MUL_IN_ATT: boolean,
    SEPARATE_QKV: boolean,
    HEAD_INIT_SCALE: real(),
    USE_MEAN_POOLING: boolean,
    USE_FIXED_SINCOS_POS: boolean,
    REV: struct<RevConfig>({
      ENABLE: boolean,
      RESPATH_FUSE: string,
      BUFFER_LAYERS: list(nonNegativeInt),
      RES_PATH: oneOf<ResPath>(['conv', 'max'], 'StageTransitionBlock raises NotImplementedError'),
      PRE_Q_FUSION: string,
    }),
  }),
});

// ---------------------------------------------------------------------------------------------
// Merging over the defaults.

/** Objects merge key by key; anything else (lists, scalars, null) replaces the default. */
function mergeOver(base: unknown, override: unknown): unknown {
  if (override === undefined) return base;
  // An oversized object is not merged: the decoder refuses it with one problem.
  if (!isRecord(base) || !isRecord(override) || Object.keys(override).length > MAX_LIST_ENTRIES) return override;
  const keys = [...new Set([...Object.keys(base), ...Object.keys(override)])];
  // fromEntries defines own properties, so a "__proto__" key stays an (unknown) key, not a prototype.
  return Object.fromEntries(
    keys.map((k) => [k, Object.hasOwn(override, k) ? mergeOver(base[k], override[k]) : base[k]]),
  );
}

const MODEL_SECTIONS = ['DATA', 'MODEL', 'MVIT'] as const;

/** CONTRASTIVE and DETECTION are otherwise ignored, but two of their fields change the model. */
function otherSectionProblems(user: Record<string, unknown>): ConfigProblem[] {
  const problems: ConfigProblem[] = [];
  const contrastive = user['CONTRASTIVE'];
  if (isRecord(contrastive) && Object.hasOwn(contrastive, 'NUM_MLP_LAYERS') && contrastive['NUM_MLP_LAYERS'] !== 1) {
    problems.push({
      path: 'CONTRASTIVE.NUM_MLP_LAYERS',
      message: `must be 1, got ${describe(contrastive['NUM_MLP_LAYERS'])}: with more layers TransformerBasicHead builds an MLPHead, which this model does not implement`,
    });
  }
  const detection = user['DETECTION'];
  if (isRecord(detection) && Object.hasOwn(detection, 'ENABLE') && detection['ENABLE'] !== false) {
    problems.push({
      path: 'DETECTION.ENABLE',
      message: `must be false, got ${describe(detection['ENABLE'])}: MViT asserts not enable_detection on the reversible path`,
    });
  }
  return problems;
}

function topLevelProblems(user: Record<string, unknown>): ConfigProblem[] {
  const known = [...MODEL_SECTIONS, ...OTHER_SLOWFAST_SECTIONS] as readonly string[];
  const tooMany = tooManyKeys(user, '');
  if (tooMany) return [tooMany];
  const unknown = Object.keys(user)
    .filter((k) => !known.includes(k))
    .map((k) => ({ path: k, message: unknownKeyMessage(k, known) }));
  return [...unknown, ...otherSectionProblems(user)];
}

// ---------------------------------------------------------------------------------------------
// Checks beyond types. Each returns its problems; independent checks all run.

const problem = (path: string, message: string): ConfigProblem => ({ path, message });

function modelChecks(cfg: MViTConfig, options: ParseOptions): ConfigProblem[] {
  const { DATA, MVIT } = cfg;
  const out: ConfigProblem[] = [];
  if (!MVIT.REV.ENABLE) {
    out.push(problem('MVIT.REV.ENABLE', 'must be true: this library builds the reversible model only (with false PySlowFast builds the non-reversible MViT `blocks`)'));
  }
  if (DATA.TRAIN_CROP_SIZE !== DATA.TEST_CROP_SIZE) {
    out.push(problem('DATA.TEST_CROP_SIZE', `must equal DATA.TRAIN_CROP_SIZE (${DATA.TRAIN_CROP_SIZE}), got ${DATA.TEST_CROP_SIZE}: MViT.__init__ asserts TRAIN_CROP_SIZE == TEST_CROP_SIZE (note PySlowFast's default TEST_CROP_SIZE is 256, so set both)`));
  }
  if (MVIT.CLS_EMBED_ON && options.target !== 'stack') {
    out.push(problem('MVIT.CLS_EMBED_ON', 'must be false: MViT.__init__ asserts `not cls_embed_on` when REV.ENABLE (AssertionError; the published Kinetics REV_MVIT_B_16x4_CONV.yaml hits it). The reversible stack itself supports a cls token: parse with target "stack" to build only the stack'));
  }
  if (MVIT.MODE === 'conv_unshared' && !MVIT.POOL_FIRST) {
    out.push(problem('MVIT.MODE', '"conv_unshared" requires MVIT.POOL_FIRST: MultiScaleAttention.forward asserts mode != "conv_unshared" otherwise'));
  }
  if (MVIT.USE_FIXED_SINCOS_POS) {
    out.push(problem('MVIT.USE_FIXED_SINCOS_POS', 'not supported by this port: PySlowFast adds the frozen sin-cos embedding a second time on top of the learned one (and crashes with SEP_POS_EMBED or without USE_ABS_POS)'));
  }
  if (MVIT.POOL_KV_STRIDE_ADAPTIVE !== null && MVIT.POOL_KV_STRIDE.length > 0 && !kvStridesMatchAdaptive(MVIT)) {
    out.push(problem('MVIT.POOL_KV_STRIDE', 'is ignored when MVIT.POOL_KV_STRIDE_ADAPTIVE is set: MViT.__init__ silently overwrites it with the adaptive schedule; set only one of the two'));
  }
  for (const field of ['PRE_Q_FUSION', 'RESPATH_FUSE'] as const) {
    const parsed = parseFusionMode(MVIT.REV[field]);
    if (E.isLeft(parsed)) out.push(problem(`MVIT.REV.${field}`, parsed.left));
  }
  if (!MVIT.REV.RESPATH_FUSE.includes('concat') && !MVIT.USE_MEAN_POOLING) {
    out.push(problem('MVIT.REV.RESPATH_FUSE', `${JSON.stringify(MVIT.REV.RESPATH_FUSE)} (no "concat") requires MVIT.USE_MEAN_POOLING: otherwise MViT applies norm = LayerNorm(Cf) to the [B, N, 2Cf] stack output before fusing (RuntimeError)`));
  }
  return out;
}

/** A config dumped after MViT.__init__ holds the expanded adaptive schedule in POOL_KV_STRIDE: that is consistent. */
function kvStridesMatchAdaptive(mvit: MViTSection): boolean {
  const expanded = adaptiveKvStrides(mvit.POOL_KV_STRIDE_ADAPTIVE!, poolingSchedule({ ...mvit, POOL_KV_STRIDE_ADAPTIVE: null }).strideQ);
  return expanded.length === mvit.POOL_KV_STRIDE.length && expanded.every((e, i) => sameGrid(e, mvit.POOL_KV_STRIDE[i]!));
}

function patchChecks(cfg: MViTConfig): ConfigProblem[] {
  const { DATA, MVIT } = cfg;
  const rank = MVIT.PATCH_2D ? 2 : 3;
  const lengthProblems = (['PATCH_KERNEL', 'PATCH_STRIDE', 'PATCH_PADDING'] as const)
    .filter((f) => MVIT[f].length !== rank)
    .map((f) => problem(`MVIT.${f}`, `expected ${rank} entries for a ${rank}D patch embed (PATCH_2D is ${MVIT.PATCH_2D}), got ${describe(MVIT[f])}`));
  if (lengthProblems.length > 0) return lengthProblems;
  const out: ConfigProblem[] = [];
  if (MVIT.PATCH_2D && DATA.NUM_FRAMES !== 1) {
    out.push(problem('DATA.NUM_FRAMES', `must be 1 with MVIT.PATCH_2D, got ${DATA.NUM_FRAMES}: the Conv2d patch embed yields H*W tokens but MViT sizes the pos embed and grid for NUM_FRAMES*H*W (RuntimeError at the pos-embed add)`));
  }
  // The conv must produce exactly input // stride per axis; PySlowFast asserts this in forward.
  const sizes = MVIT.PATCH_2D ? [DATA.TRAIN_CROP_SIZE, DATA.TRAIN_CROP_SIZE] : [DATA.NUM_FRAMES, DATA.TRAIN_CROP_SIZE, DATA.TRAIN_CROP_SIZE];
  const axes = MVIT.PATCH_2D ? ['H', 'W'] : ['T', 'H', 'W'];
  sizes.forEach((size, d) => {
    const [k, s, p] = [MVIT.PATCH_KERNEL[d]!, MVIT.PATCH_STRIDE[d]!, MVIT.PATCH_PADDING[d]!];
    const produced = convOutputSize(size, k, s, p);
    const expected = Math.floor(size / s);
    if (expected < 1) {
      out.push(problem(at('MVIT.PATCH_STRIDE', d), `stride ${s} exceeds the input size ${size} along ${axes[d]}: the token grid would be empty`));
    } else if (produced !== expected) {
      out.push(problem(at('MVIT.PATCH_PADDING', d), `the patch-embed conv (kernel ${k}, stride ${s}, padding ${p}) turns ${size} into ${produced} along ${axes[d]}, but MViT expects ${size} // ${s} = ${expected}: PySlowFast's forward asserts the grid (AssertionError)`));
    }
  });
  return out;
}

interface IndexedField {
  readonly path: string;
  readonly layers: readonly number[];
  /** Whether naming a layer here changes its dims or grid, so that it must be a stage transition. */
  readonly needsTransition: boolean;
}

function indexedFields(mvit: MViTSection): IndexedField[] {
  return [
    { path: 'MVIT.DIM_MUL', layers: mvit.DIM_MUL.map((e) => e[0]), needsTransition: true },
    { path: 'MVIT.HEAD_MUL', layers: mvit.HEAD_MUL.map((e) => e[0]), needsTransition: true },
    { path: 'MVIT.POOL_Q_STRIDE', layers: mvit.POOL_Q_STRIDE.map((e) => e[0]), needsTransition: true },
    { path: 'MVIT.POOL_KV_STRIDE', layers: mvit.POOL_KV_STRIDE.map((e) => e[0]), needsTransition: false },
  ];
}

/** Layer indices in range and unique; buffer layers placed where a two-stream stack can use them. */
function layerIndexChecks(mvit: MViTSection): ConfigProblem[] {
  const depth = mvit.DEPTH;
  const buffers = mvit.REV.BUFFER_LAYERS;
  const out: ConfigProblem[] = [];
  for (const field of indexedFields(mvit)) {
    field.layers.forEach((layer, j) => {
      const path = at(at(field.path, j), 0);
      if (layer >= depth) out.push(problem(path, `layer ${layer} does not exist: layer indices run from 0 to DEPTH-1 = ${depth - 1}`));
      else if (field.layers.indexOf(layer) !== j) out.push(problem(path, `layer ${layer} is listed twice: PySlowFast silently keeps the last entry`));
      else if (field.needsTransition && !buffers.includes(layer)) {
        out.push(problem(path, `layer ${layer} changes the channel dim, the heads or the token grid, so it must be a stage transition (add it to MVIT.REV.BUFFER_LAYERS): a ReversibleBlock needs F: C -> C on the same tokens, and PySlowFast would build a block whose reversible coupling fails with a shape error`));
      }
    });
  }
  buffers.forEach((layer, j) => {
    const path = at('MVIT.REV.BUFFER_LAYERS', j);
    if (layer >= depth) out.push(problem(path, `layer ${layer} does not exist: layer indices run from 0 to DEPTH-1 = ${depth - 1} (PySlowFast would silently build no transition for it)`));
    else if (buffers.indexOf(layer) !== j) out.push(problem(path, `layer ${layer} is listed twice`));
    else if (layer === 0) out.push(problem(path, 'layer 0 cannot be a stage transition: it would get the one-stream [B, N, C] patch tokens instead of the two-stream [B, N, 2C] tensor its pre-Q fusion splits (shape error)'));
    else if (layer === depth - 1) out.push(problem(path, `the last layer (${layer}) cannot be a stage transition: the stack must end two-stream ([B, N, 2Cf]) for the final norm and fusion (shape error)`));
    else if (buffers.includes(layer - 1)) out.push(problem(path, `layers ${layer - 1} and ${layer} are adjacent stage transitions: the second would get the first's one-stream output instead of a two-stream tensor (shape error)`));
  });
  return out;
}

/** Checks on the derived per-layer geometry; needs valid patch fields and layer indices. */
function layerGeometryChecks(cfg: MViTConfig): ConfigProblem[] {
  const mvit = cfg.MVIT;
  const layers = buildLayers(cfg);
  const out: ConfigProblem[] = [];
  const grid = (v: readonly number[]) => `[${v.join(', ')}]`;
  const first = layers[0];
  if (first && first.streamDim !== mvit.EMBED_DIM) {
    out.push(problem('MVIT.EMBED_DIM', `${mvit.EMBED_DIM} is not a multiple of NUM_HEADS (${first.heads}): round_width makes layer 0 expect ${first.streamDim} channels while the patch embed produces ${mvit.EMBED_DIM} (shape error in layer 0)`));
  }
  for (const layer of layers) {
    const name = `layer ${layer.index}`;
    if (layer.dimOut % layer.heads !== 0) {
      out.push(problem('MVIT.NUM_HEADS', `${name}: its output dim ${layer.dimOut} is not divisible by its ${layer.heads} heads (the q/k/v reshape into heads fails)`));
    }
    if (mvit.POOL_FIRST && layer.dimIn % layer.heads !== 0) {
      out.push(problem('MVIT.POOL_FIRST', `${name}: with POOL_FIRST the input dim ${layer.dimIn} is split into ${layer.heads} heads before pooling, but it is not divisible`));
    }
    if (layer.kind === 'reversible' && layer.dimIn !== layer.dimOut) {
      out.push(problem('MVIT.HEAD_MUL', `${name} is reversible but its attention maps ${layer.dimIn} -> ${layer.dimOut} channels (round_width with the next layer's head count as divisor): make it a stage transition or choose dims divisible by the heads`));
    }
    if (layer.poolQ && !sameGrid(layer.qThw, layer.thwOut)) {
      out.push(problem('MVIT.POOL_Q_STRIDE', `${name}: Q pooling turns the grid ${grid(layer.thwIn)} into ${grid(layer.qThw)}, but PySlowFast gives the next layer thw // stride = ${grid(layer.thwOut)} (reshape error in the next layer)`));
    } else if (layer.thwOut.some((n) => n < 1)) {
      out.push(problem('MVIT.POOL_Q_STRIDE', `${name}: the token grid ${grid(layer.thwOut)} after Q pooling is empty`));
    }
    if (mvit.REL_POS_SPATIAL && layer.thwIn[1] !== layer.thwIn[2]) {
      out.push(problem('MVIT.REL_POS_SPATIAL', `${name}: the grid ${grid(layer.thwIn)} is not square; MultiScaleAttention asserts input_size[1] == input_size[2] for spatial relative positions`));
    }
    out.push(...resPathProblems(mvit, layer));
  }
  const last = layers[layers.length - 1];
  const finalDim = finalEmbedDim(mvit);
  if (last && last.dimOut !== finalDim) {
    out.push(problem('MVIT.DIM_MUL', `the last layer outputs ${last.dimOut} channels per stream, but MViT sizes the final norm and head for round_width(EMBED_DIM, prod(DIM_MUL), divisor=NUM_HEADS) = ${finalDim} (shape error in the final norm)`));
  }
  return out;
}

/**
 * RES_PATH "max" reads F.attn.pool_q.stride, so every transition needs a Q pool. (Its grid then always
 * matches the attention's: a Q pool that yields thw // s needs s | thw, and then so does the skip pool.)
 */
function resPathProblems(mvit: MViTSection, layer: LayerGeometry): ConfigProblem[] {
  if (layer.kind !== 'transition' || mvit.REV.RES_PATH !== 'max' || layer.poolQ) return [];
  return [problem('MVIT.REV.RES_PATH', `"max" needs Q pooling at every stage transition, but layer ${layer.index} has none: StageTransitionBlock reads F.attn.pool_q.stride (AttributeError on None)`)];
}

/** The per-layer geometry is only meaningful once the patch fields describe a non-empty grid. */
function patchLayoutSound(cfg: MViTConfig): boolean {
  const { MVIT } = cfg;
  const rank = MVIT.PATCH_2D ? 2 : 3;
  const lengthsOk = [MVIT.PATCH_KERNEL, MVIT.PATCH_STRIDE, MVIT.PATCH_PADDING].every((v) => v.length === rank);
  return lengthsOk && patchDimsOf(cfg).every((n) => n >= 1);
}

/** Every problem of a well-typed config (all independent checks run). */
export function validateConfig(cfg: MViTConfig, options: ParseOptions = {}): ConfigProblem[] {
  return [
    ...modelChecks(cfg, options),
    ...patchChecks(cfg),
    ...layerIndexChecks(cfg.MVIT),
    ...(patchLayoutSound(cfg) ? layerGeometryChecks(cfg) : []),
  ];
}

// ---------------------------------------------------------------------------------------------
// Public entry points.

/** Merge a partial config over PySlowFast's defaults, type-check it and validate it. */
export function parseConfig(json: unknown, options: ParseOptions = {}): E.Either<ConfigProblem[], MViTConfig> {
  if (!isRecord(json)) return fail('', `expected a config object with DATA, MODEL and MVIT sections, got ${describe(json)}`);
  const merged = Object.fromEntries(MODEL_SECTIONS.map((s) => [s, mergeOver(DEFAULT_CONFIG[s], json[s])]));
  const decoded = decodeConfig(merged, '');
  const topLevel = topLevelProblems(json);
  if (E.isLeft(decoded)) return E.left([...topLevel, ...decoded.left]);
  const problems = [...topLevel, ...validateConfig(decoded.right, options)];
  return problems.length > 0 ? E.left(problems) : E.right(decoded.right);
}

/** parseConfig on JSON text; a syntax error is one problem that names the source. */
export function parseConfigText(
  text: string,
  source: string,
  options: ParseOptions = {},
): E.Either<ConfigProblem[], MViTConfig> {
  const json = parseJson(text, source);
  return E.isLeft(json) ? fail('', json.left.message) : parseConfig(json.right, options);
}

/** One line per problem, for CLI output and error messages. */
export function formatProblems(problems: readonly ConfigProblem[], source?: string): string {
  const header = `${problems.length} config problem${problems.length === 1 ? '' : 's'}${source ? ` in ${source}` : ''}:`;
  const shown = problems.slice(0, MAX_REPORTED_PROBLEMS).map((p) => `  ${p.path || '(config)'}: ${p.message}`);
  const rest = problems.length - shown.length;
  return [header, ...shown, ...(rest > 0 ? [`  ... and ${rest} more`] : [])].join('\n');
}

/** Reports list at most this many problems (the count says how many there were). */
export const MAX_REPORTED_PROBLEMS = 50;
