/**
 * The settings of a `revgrad train` run: everything that determines the numbers it computes, stored in
 * every checkpoint (so `--resume` continues exactly) and read from or written to PySlowFast's SOLVER
 * (solver.ts). `settingsOptimizer` turns them into the public optimizer the loop runs.
 */
import type { Mode } from '../reversible/index.ts';
import { adamw, sgd, type NoDecay, type Optimizer } from './optim.ts';
import { warmupCosineSchedule, type CosineSchedule } from './schedule.ts';

export interface TrainSettings {
  readonly seed: number;
  readonly steps: number;
  readonly batchSize: number;
  readonly mode: Mode;
  readonly schedule: CosineSchedule;
  /**
   * AdamW β1, β2, ε and weight decay (the lr comes from the schedule); with name 'sgd', SGD with
   * momentum, dampening and nesterov (and the weight decay) instead. Absent name: AdamW.
   */
  readonly optimizer: {
    readonly beta1: number;
    readonly beta2: number;
    readonly eps: number;
    readonly weightDecay: number;
    readonly name?: 'adamw' | 'sgd';
    readonly momentum?: number;
    readonly dampening?: number;
    readonly nesterov?: boolean;
  };
  /** PySlowFast's SOLVER.ZERO_WD_1D_PARAM: no decay on 1-D params and biases (default true). */
  readonly zeroWd1dParam?: boolean;
  /** Max global gradient norm; null for no clipping. */
  readonly clipNorm: number | null;
  readonly labelSmoothing: number;
  /**
   * The batch's gradient is the sum of this many shard gradients in a fixed order (src/train/shards.ts),
   * whatever the number of workers computing them; absent: one gradient of the whole batch.
   */
  readonly shards?: number;
}

export function settingsProblems(s: TrainSettings): string[] {
  const p: string[] = [];
  if (!Number.isSafeInteger(s.seed)) p.push(`seed must be an integer, got ${s.seed}`);
  if (!(Number.isSafeInteger(s.steps) && s.steps >= 1)) p.push(`steps must be a positive integer, got ${s.steps}`);
  if (!(Number.isSafeInteger(s.batchSize) && s.batchSize >= 1)) p.push(`batch size must be a positive integer, got ${s.batchSize}`);
  if (s.mode !== 'reversible' && s.mode !== 'store') p.push(`mode must be 'reversible' or 'store', got '${s.mode}'`);
  if (s.clipNorm !== null && !(s.clipNorm > 0)) p.push(`clip norm must be positive, got ${s.clipNorm}`);
  if (!(s.labelSmoothing >= 0 && s.labelSmoothing < 1)) p.push(`label smoothing must be in [0, 1), got ${s.labelSmoothing}`);
  if (s.shards !== undefined && !(Number.isSafeInteger(s.shards) && s.shards >= 1 && s.shards <= s.batchSize)) {
    p.push(`shards must be an integer from 1 to the batch size ${s.batchSize}, got ${s.shards}`);
  }
  return p;
}

/**
 * The run's optimizer on its cosine schedule: AdamW, or SGD when `optimizer.name` is 'sgd'.
 * `noDecay(name, zeroWd1dParam)` is the model's no-weight-decay group (MViTModel.noDecay).
 */
export function settingsOptimizer(settings: TrainSettings, noDecay: (name: string, zeroWd1dParam: boolean) => boolean): Optimizer<'m' | 'v'> | Optimizer<'buf'> {
  const o = settings.optimizer;
  const lr = warmupCosineSchedule(settings.schedule);
  const skip: NoDecay = (name) => noDecay(name, settings.zeroWd1dParam ?? true);
  if (o.name === 'sgd') {
    return sgd({ lr, momentum: o.momentum ?? 0, dampening: o.dampening ?? 0, nesterov: o.nesterov ?? false, weightDecay: o.weightDecay, noDecay: skip });
  }
  return adamw({ lr, beta1: o.beta1, beta2: o.beta2, eps: o.eps, weightDecay: o.weightDecay, noDecay: skip });
}
