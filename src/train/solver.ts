/**
 * PySlowFast's SOLVER and MIXUP sections <-> revgrad's training settings.
 *
 * Reading (`settingsFromSlowFast`): the fields the trainer has drive it; the rest are named in
 * `ignored`, so the caller can say so in one line. PySlowFast counts its schedule in epochs over a
 * dataset, revgrad in optimizer steps over a stream of clips: the schedule keeps its shape, with
 * WARMUP_EPOCHS / MAX_EPOCH of the run's steps as warmup.
 *
 *   BASE_LR, WARMUP_START_LR, COSINE_END_LR, COSINE_AFTER_WARMUP  -> the cosine schedule (LR_POLICY cosine only)
 *   WARMUP_EPOCHS / MAX_EPOCH                                    -> warmup steps as a fraction of the steps
 *   OPTIMIZING_METHOD adamw (mt_adamw: the same math) | sgd      -> AdamW (BETAS, eps 1e-8) | SGD (MOMENTUM, DAMPENING, NESTEROV)
 *   WEIGHT_DECAY, ZERO_WD_1D_PARAM                               -> weight decay and its no-decay group
 *   CLIP_GRAD_L2NORM                                             -> global-norm clipping (None: off)
 *   MIXUP.ENABLE, MIXUP.LABEL_SMOOTH_VALUE                        -> label smoothing (PySlowFast smooths only through MixUp)
 *   RNG_SEED                                                     -> the seed
 *
 * Writing (`slowFastFromSettings`) gives the sections that make PySlowFast run the same schedule and
 * optimizer over MAX_EPOCH epochs.
 */
import * as E from 'fp-ts/lib/Either.js';
import type { SlowFastTree } from '../models/mvit/yaml-config.ts';
import { SLOWFAST_TRAINING_DEFAULTS } from '../models/mvit/yaml-config.ts';
import type { TrainSettings } from './settings.ts';
import type { CosineSchedule } from './schedule.ts';

/** What a YAML config decides about a run; steps, batch size and mode come from the command line. */
export type SolverSettings = Pick<TrainSettings, 'seed' | 'schedule' | 'optimizer' | 'clipNorm' | 'labelSmoothing' | 'zeroWd1dParam'>;

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** The sections read here; any other top-level entry of the file is reported as ignored. */
const MODEL_SECTIONS = ['DATA', 'MODEL', 'MVIT'];
const USED_SOLVER = [
  'BASE_LR', 'LR_POLICY', 'COSINE_END_LR', 'MAX_EPOCH', 'WARMUP_EPOCHS', 'WARMUP_START_LR', 'COSINE_AFTER_WARMUP',
  'OPTIMIZING_METHOD', 'WEIGHT_DECAY', 'ZERO_WD_1D_PARAM', 'CLIP_GRAD_L2NORM', 'BETAS', 'MOMENTUM', 'DAMPENING', 'NESTEROV',
];

/**
 * Training settings from a decoded PySlowFast tree (yaml-config.ts) for a run of `steps` steps.
 * Left: what the trainer cannot do (another LR policy or optimizer, inconsistent numbers).
 */
export function settingsFromSlowFast(tree: SlowFastTree, steps: number): E.Either<string[], { settings: SolverSettings; ignored: string[] }> {
  const D = SLOWFAST_TRAINING_DEFAULTS;
  const solverIn = isRecord(tree.SOLVER) ? tree.SOLVER : {};
  const mixupIn = isRecord(tree.MIXUP) ? tree.MIXUP : {};
  const s = { ...D.SOLVER, ...solverIn } as typeof D.SOLVER;
  const m = { ...D.MIXUP, ...mixupIn } as typeof D.MIXUP;
  const problems: string[] = [];
  const num = (field: string, v: unknown, min = 0): number => {
    if (typeof v !== 'number' || !Number.isFinite(v) || v < min) problems.push(`SOLVER.${field}: expected a number >= ${min}, got ${JSON.stringify(v)}`);
    return v as number;
  };
  if (s.LR_POLICY !== 'cosine') problems.push(`SOLVER.LR_POLICY: revgrad's trainer has only "cosine", got ${JSON.stringify(s.LR_POLICY)}`);
  const method = s.OPTIMIZING_METHOD === 'mt_adamw' ? 'adamw' : s.OPTIMIZING_METHOD;
  if (method !== 'adamw' && method !== 'sgd') problems.push(`SOLVER.OPTIMIZING_METHOD: revgrad's trainer has "adamw" (or "mt_adamw", the same math) and "sgd", got ${JSON.stringify(s.OPTIMIZING_METHOD)}`);
  const baseLr = num('BASE_LR', s.BASE_LR);
  const endLr = num('COSINE_END_LR', s.COSINE_END_LR);
  const warmupStartLr = num('WARMUP_START_LR', s.WARMUP_START_LR);
  const maxEpoch = num('MAX_EPOCH', s.MAX_EPOCH, 1);
  const warmupEpochs = num('WARMUP_EPOCHS', s.WARMUP_EPOCHS);
  const weightDecay = num('WEIGHT_DECAY', s.WEIGHT_DECAY);
  if (!(baseLr > 0)) problems.push(`SOLVER.BASE_LR: must be positive, got ${s.BASE_LR}`);
  if (endLr >= baseLr) problems.push(`SOLVER.COSINE_END_LR: must be below BASE_LR (${baseLr}), got ${endLr}: PySlowFast's lr_func_cosine asserts it`);
  if (warmupEpochs >= maxEpoch) problems.push(`SOLVER.WARMUP_EPOCHS: ${warmupEpochs} is not less than MAX_EPOCH ${maxEpoch}`);
  const clip = s.CLIP_GRAD_L2NORM;
  if (clip !== null && !(typeof clip === 'number' && clip >= 0)) problems.push(`SOLVER.CLIP_GRAD_L2NORM: expected None or a number >= 0, got ${JSON.stringify(clip)}`);
  const betas = s.BETAS;
  if (!(Array.isArray(betas) && betas.length === 2 && betas.every((b) => typeof b === 'number' && b >= 0 && b < 1))) {
    problems.push(`SOLVER.BETAS: expected two numbers in [0, 1), got ${JSON.stringify(betas)}`);
  }
  if (method === 'sgd' && s.NESTEROV && (!(s.MOMENTUM > 0) || s.DAMPENING !== 0)) {
    problems.push(`SOLVER.NESTEROV: needs MOMENTUM > 0 and DAMPENING 0 (torch.optim.SGD raises ValueError), got ${s.MOMENTUM} and ${s.DAMPENING}`);
  }
  const smoothing = m.ENABLE ? m.LABEL_SMOOTH_VALUE : 0;
  if (!(typeof smoothing === 'number' && smoothing >= 0 && smoothing < 1)) problems.push(`MIXUP.LABEL_SMOOTH_VALUE: expected a number in [0, 1), got ${JSON.stringify(smoothing)}`);
  const seed = tree.RNG_SEED ?? D.RNG_SEED;
  if (!(typeof seed === 'number' && Number.isSafeInteger(seed) && seed >= 0)) problems.push(`RNG_SEED: expected a non-negative integer, got ${JSON.stringify(seed)}`);
  if (problems.length > 0) return E.left(problems);

  const schedule: CosineSchedule = {
    baseLr,
    totalSteps: steps,
    warmupSteps: Math.round((warmupEpochs / maxEpoch) * steps),
    warmupStartLr,
    endLr,
    cosineAfterWarmup: s.COSINE_AFTER_WARMUP,
  };
  const optimizer: TrainSettings['optimizer'] =
    method === 'sgd'
      ? { name: 'sgd', beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay, momentum: s.MOMENTUM, dampening: s.DAMPENING, nesterov: s.NESTEROV }
      : { name: 'adamw', beta1: betas[0]!, beta2: betas[1]!, eps: 1e-8, weightDecay };
  const ignored = [
    ...Object.keys(solverIn)
      .filter((k) => !USED_SOLVER.includes(k) && !(method === 'adamw' && ['MOMENTUM', 'DAMPENING', 'NESTEROV'].includes(k)))
      .map((k) => `SOLVER.${k}`),
    ...(method === 'adamw' ? ['MOMENTUM', 'DAMPENING', 'NESTEROV'].filter((k) => Object.hasOwn(solverIn, k)).map((k) => `SOLVER.${k} (adamw)`) : []),
    ...(method === 'sgd' && Object.hasOwn(solverIn, 'BETAS') ? ['SOLVER.BETAS (sgd)'] : []),
    ...Object.keys(mixupIn).filter((k) => k !== 'ENABLE' && k !== 'LABEL_SMOOTH_VALUE').map((k) => `MIXUP.${k}`),
    ...Object.keys(tree).filter((k) => !MODEL_SECTIONS.includes(k) && !['SOLVER', 'MIXUP', 'RNG_SEED'].includes(k)),
  ];
  return E.right({
    settings: { seed: seed as number, schedule, optimizer, clipNorm: clip === null || clip === 0 ? null : clip, labelSmoothing: smoothing, zeroWd1dParam: s.ZERO_WD_1D_PARAM },
    ignored,
  });
}

/**
 * The SOLVER, MIXUP and MODEL.LOSS_FUNC entries that make PySlowFast train with these settings over
 * `maxEpoch` epochs (the warmup keeps its fraction of the run). The learning rates are written as
 * used, so BASE_LR_SCALE_NUM_SHARDS is off: with N machines, scale them yourself (or turn it on).
 */
export function slowFastFromSettings(settings: TrainSettings, maxEpoch: number): SlowFastTree {
  const { schedule, optimizer } = settings;
  const sgd = optimizer.name === 'sgd';
  const solver: Record<string, unknown> = {
    BASE_LR: schedule.baseLr,
    BASE_LR_SCALE_NUM_SHARDS: false,
    LR_POLICY: 'cosine',
    MAX_EPOCH: maxEpoch,
    WARMUP_EPOCHS: (schedule.warmupSteps / schedule.totalSteps) * maxEpoch,
    WARMUP_START_LR: schedule.warmupStartLr,
    COSINE_END_LR: schedule.endLr,
    COSINE_AFTER_WARMUP: schedule.cosineAfterWarmup,
    OPTIMIZING_METHOD: sgd ? 'sgd' : 'adamw',
    WEIGHT_DECAY: optimizer.weightDecay,
    ZERO_WD_1D_PARAM: settings.zeroWd1dParam ?? true,
    CLIP_GRAD_L2NORM: settings.clipNorm,
    ...(sgd ? { MOMENTUM: optimizer.momentum ?? 0, DAMPENING: optimizer.dampening ?? 0, NESTEROV: optimizer.nesterov ?? false } : { BETAS: [optimizer.beta1, optimizer.beta2] }),
  };
  // PySlowFast smooths labels only inside MixUp; with PROB 0 MixUp never mixes and only smooths.
  const mixup = settings.labelSmoothing > 0 ? { ENABLE: true, PROB: 0.0, LABEL_SMOOTH_VALUE: settings.labelSmoothing } : { ENABLE: false };
  return {
    SOLVER: solver,
    MIXUP: mixup,
    MODEL: { LOSS_FUNC: settings.labelSmoothing > 0 ? 'soft_cross_entropy' : 'cross_entropy' },
    RNG_SEED: settings.seed,
  };
}
