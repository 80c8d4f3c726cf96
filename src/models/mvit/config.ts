/**
 * Rev-MViT configuration: PySlowFast's defaults (slowfast/config/defaults.py), the typed config, and
 * `parseConfig`, which deep-merges a partial user config over the defaults, type-checks every field
 * (a decoder, src/io/decode.ts) and then checks everything PySlowFast would only discover later
 * (validate.ts). It collects every problem, each with its path and a message that says what
 * PySlowFast would do.
 */
import * as E from 'fp-ts/lib/Either.js';
import { parseJson } from '../../io/json.ts';
import {
  boolean,
  describe,
  didYouMean,
  fail,
  integer,
  isRecord,
  list,
  MAX_LIST_ENTRIES,
  nullable,
  oneOf,
  real,
  string,
  struct,
  tooManyKeys,
  tuple,
  type Decoder,
  type Fields,
  type Problem,
} from '../../io/decode.ts';
import type {
  DataConfig,
  HeadAct,
  LayerMultiplier,
  LayerStride,
  MViTConfig,
  MViTSection,
  ModelConfig,
  PoolMode,
  ResPath,
  RevConfig,
} from './config-types.ts';
import { validateConfig, type ParseOptions } from './validate.ts';

export type * from './config-types.ts';

/** One problem of a config: where ('MVIT.POOL_Q_STRIDE[1]', '' for the whole document) and what. */
export type ConfigProblem = Problem;

export type { ParseOptions };

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
// The config's decoder (src/io/decode.ts): every problem is collected with its path.

/** What PySlowFast's yacs merge does with a key its defaults lack. */
const unknownKey = (key: string, known: readonly string[]): string =>
  `unknown key: PySlowFast's config merge raises KeyError ('Non-existent config key')${didYouMean(key, known)}`;
const section = <T>(fields: Fields<T>, ignored: readonly string[] = []): Decoder<T> => struct<T>(fields, { ignored, unknownKey });

/**
 * Most layers a config may have: no real model comes near it (PySlowFast's largest MViT has 80 layers),
 * and it keeps validation and the geometry cheap whatever the input. Lists and objects are bounded by
 * the decoders (MAX_LIST_ENTRIES); memory separately, by the resource estimate.
 */
export const MAX_DEPTH = 4096;

const positiveInt = integer({ min: 1 });
const nonNegativeInt = integer({ min: 0 });
const probability = real({ min: 0, max: 1 });
const vec3Of = (item: Decoder<number>) => list(item, [3]);
const layerMultiplier = tuple<LayerMultiplier>(nonNegativeInt, real({ above: 0 }));
const layerStride = tuple<LayerStride>(nonNegativeInt, positiveInt, positiveInt, positiveInt);

const decodeConfig: Decoder<MViTConfig> = section<MViTConfig>({
  DATA: section<DataConfig>(
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
  MODEL: section<ModelConfig>(
    {
      NUM_CLASSES: positiveInt,
      DROPOUT_RATE: probability,
      HEAD_ACT: oneOf<HeadAct>(['softmax', 'sigmoid', 'none'], 'TransformerBasicHead raises NotImplementedError'),
      DETACH_FINAL_FC: boolean,
      ACT_CHECKPOINT: boolean,
    },
    IGNORED_MODEL_KEYS,
  ),
  MVIT: section<MViTSection>({
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
    REV: section<RevConfig>({
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
    .map((k) => ({ path: k, message: unknownKey(k, known) }));
  return [...unknown, ...otherSectionProblems(user)];
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
