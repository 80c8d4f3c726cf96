/** Valid inputs the hostile ones are made from: a tiny config and a checkpoint of its model. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import { parseConfig } from '../../src/models/mvit/config.ts';
import { buildModel } from '../../src/models/mvit/model.ts';
import { saveCheckpoint } from '../../src/train/checkpoint.ts';
import { runKeys } from '../../src/cli/train-run.ts';
import { adamwInit, ADAMW_DEFAULTS } from '../../src/train/optim.ts';
import { scheduleDefaults } from '../../src/train/schedule.ts';

/** A Rev-MViT for Moving-MNIST small enough that a checkpoint is ~10 KB and a step takes milliseconds. */
export const TINY_CONFIG = {
  DATA: { NUM_FRAMES: 1, TRAIN_CROP_SIZE: 8, TEST_CROP_SIZE: 8, INPUT_CHANNEL_NUM: [1] },
  MODEL: { NUM_CLASSES: 40, DROPOUT_RATE: 0.0 },
  MVIT: {
    PATCH_KERNEL: [1, 4, 4], PATCH_STRIDE: [1, 4, 4], PATCH_PADDING: [0, 0, 0], EMBED_DIM: 4, NUM_HEADS: 1, DEPTH: 2,
    DROPPATH_RATE: 0.0, CLS_EMBED_ON: false, DIM_MUL: [], HEAD_MUL: [], POOL_Q_STRIDE: [], POOL_KV_STRIDE: [],
    POOL_KV_STRIDE_ADAPTIVE: null, REL_POS_SPATIAL: false, REL_POS_TEMPORAL: false, MLP_RATIO: 2.0,
    REV: { ENABLE: true, RESPATH_FUSE: 'concat', BUFFER_LAYERS: [], PRE_Q_FUSION: 'concat' },
  },
};

/** The config text the config mutations start from. */
export const HOSTILE_CONFIG = JSON.stringify(TINY_CONFIG);

export const TINY_SETTINGS = {
  seed: 0,
  steps: 4,
  batchSize: 2,
  mode: 'reversible' as const,
  schedule: { ...scheduleDefaults(2e-3, 4), warmupSteps: 1 },
  optimizer: { beta1: ADAMW_DEFAULTS.beta1, beta2: ADAMW_DEFAULTS.beta2, eps: ADAMW_DEFAULTS.eps, weightDecay: ADAMW_DEFAULTS.weightDecay },
  clipNorm: 1,
  labelSmoothing: 0.1,
};

/** A valid training checkpoint (step 2 of 4) of TINY_CONFIG, written to `dir` and read back. */
export async function tinyCheckpointBytes(dir: string): Promise<Uint8Array> {
  const cfg = parseConfig(TINY_CONFIG);
  if (E.isLeft(cfg)) throw new Error(`TINY_CONFIG is invalid: ${JSON.stringify(cfg.left)}`);
  const model = buildModel(cfg.right);
  const keys = runKeys(TINY_SETTINGS.seed);
  const params = model.init(keys.init);
  const path = join(dir, 'tiny-checkpoint.safetensors');
  await saveCheckpoint(path, params, { ...adamwInit(params), step: 2 }, {
    step: 2,
    seed: TINY_SETTINGS.seed,
    key: keys.root,
    config: cfg.right,
    optimizer: { name: 'adamw', ...TINY_SETTINGS.optimizer },
    training: TINY_SETTINGS,
  });
  return new Uint8Array(readFileSync(path));
}
