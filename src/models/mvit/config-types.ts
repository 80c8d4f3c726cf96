/**
 * The typed Rev-MViT config: the DATA, MODEL and MVIT fields of PySlowFast's config
 * (slowfast/config/defaults.py) that shape the model. Types only, so that geometry.ts and config.ts
 * (which validates with the geometry) both read them without importing each other in a circle.
 */
import type { HeadActivation } from '../../nn/head.ts';
import type { PoolMode } from '../../nn/pooling.ts';

export type { PoolMode };
export type HeadAct = HeadActivation;
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
