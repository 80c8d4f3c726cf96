/**
 * A `revgrad train` run: the public training toolkit (`train`, `adamw`, `warmupCosineSchedule`,
 * `evaluate`) over Moving-MNIST batches, plus the run's files (metrics.jsonl and checkpoint.safetensors
 * in the output directory). Every random choice comes from keys derived from the seed and the step:
 *
 *   root = key(seed);  [initKey, dataKey, stepKey, evalKey] = split(root, 4)
 *   step s (0-based): batch from foldIn(dataKey, s), dropout/drop-path from foldIn(stepKey, s)
 *   evaluation: batch i from foldIn(evalKey, i) on the 'test' split, model key foldIn(evalKey, -1 >>> 0)
 *
 * so a run resumed from a checkpoint after step c computes exactly what the uninterrupted run computes.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import type { KeyedBatches } from '../data/moving-mnist.ts';
import { foldIn, key as makeKey, split, type Key } from '../random/index.ts';
import type { Mode } from '../reversible/index.ts';
import { checkpointToFile, CHECKPOINT_FILE, restoreTrainState, type LoadedCheckpoint } from '../train/checkpoint.ts';
import { crossEntropy } from '../train/loss.ts';
import type { Optimizer } from '../train/optim.ts';
import { evaluate, train, type Batch, type HeadActivation, type LoopRecord, type TrainableModel, type TrainResult } from '../train/loop.ts';
import { appendMetric, METRICS_FILE, startMetrics } from '../train/metrics-file.ts';
import { settingsOptimizer, settingsProblems, type TrainSettings } from '../train/settings.ts';
import { startDataParallel, type ModelFactory } from '../train/parallel.ts';
import { inProcessShards, type GradientFn } from '../train/shards.ts';
import type { Tensor } from '../tensor/tensor.ts';
import { getBackend } from '../backend/backend.ts';
import { CliError } from './common.ts';

/** How a run is observed (not part of its numbers). */
export interface Monitoring {
  /** Test accuracy every this many steps (and at the end); 0 turns it off. */
  readonly evalEvery: number;
  readonly evalBatches: number;
  readonly evalBatchSize: number;
  /** Drift monitor every this many steps (and at the end); 0 turns it off. */
  readonly driftEvery: number;
  /** Checkpoint every this many steps (and at the end); 0 for only the end. */
  readonly ckptEvery: number;
  /** The head activation applied in eval mode, to compute the test loss from the outputs. */
  readonly headAct: HeadActivation;
}

export interface RunKeys {
  readonly root: Key;
  readonly init: Key;
  readonly data: Key;
  readonly step: Key;
  readonly eval: Key;
}

export function runKeys(seed: number): RunKeys {
  const root = makeKey(seed);
  const [init, data, step, evalKey] = split(root, 4);
  return { root, init, data, step, eval: evalKey };
}

/** The fixed model key of evaluation (eval mode uses no randomness, but the key is fixed anyway). */
export const evalModelKey = (k: RunKeys): Key => foldIn(k.eval, 0xffffffff);

/** `batches` fixed held-out batches: batch i from foldIn(evalKey, i) on the test split. */
export function* evalBatches(source: KeyedBatches, keys: RunKeys, batches: number, size: number): Generator<Batch> {
  for (let i = 0; i < batches; i++) yield source(foldIn(keys.eval, i), 'test', size);
}

export interface RunOptions<P> {
  readonly model: TrainableModel<P> & { init(key: Key): P; noDecay(name: string, zeroWd1dParam?: boolean): boolean };
  /** Batches for the model's input (the CLI: movingMnistBatches(cfg)). */
  readonly batches: KeyedBatches;
  /** The model config, stored in checkpoints. */
  readonly config: unknown;
  readonly settings: TrainSettings;
  readonly monitoring: Monitoring;
  /** Where metrics.jsonl and checkpoint.safetensors go; null keeps everything in memory. */
  readonly outDir: string | null;
  /** Continue from this checkpoint (its step, params and optimizer state). */
  readonly resume?: LoadedCheckpoint;
  readonly onRecord?: (r: LoopRecord) => void;
  /** Stop early (after the current step) when this returns true; the state is checkpointed. */
  readonly shouldStop?: () => boolean;
  /** What a step with a non-finite loss or gradient does (it is never applied): stop the run (default) or skip the batch. */
  readonly onNonFinite?: 'stop' | 'skip';
  /** With sharded settings: worker threads computing the shards (1: in this process); default 1. */
  readonly workers?: number;
  /** How a worker builds the model (the module exporting a factory and its arguments); needed for workers > 1. */
  readonly modelFactory?: ModelFactory;
  /** Replay the traced training step (default: on, except on webgpu; same numbers as eager). */
  readonly jit?: boolean;
}

/** Run (or continue) a Moving-MNIST training run with its files. */
export async function runMovingMnist<P>(opts: RunOptions<P>): Promise<TrainResult<P, string>> {
  const { model, settings, monitoring, outDir } = opts;
  const problems = settingsProblems(settings);
  if (problems.length > 0) throw new CliError(problems);
  const keys = runKeys(settings.seed);
  const optimizer: Optimizer<string> = settingsOptimizer(settings, (n, zeroWd1dParam) => model.noDecay(n, zeroWd1dParam));
  const params = model.init(keys.init);
  let resume;
  if (opts.resume !== undefined) {
    const restored = restoreTrainState(opts.resume, params, optimizer);
    if (E.isLeft(restored)) throw new CliError(['cannot resume:', ...restored.left.map((p) => `  ${p}`)]);
    resume = restored.right;
  }
  const start = resume?.step ?? 0;
  const { batches } = opts;
  const metricsPath = outDir === null ? null : join(outDir, METRICS_FILE);
  if (outDir !== null) {
    mkdirSync(outDir, { recursive: true });
    startMetrics(metricsPath!, start);
  }
  const meta = (step: number) => ({
    step,
    seed: settings.seed,
    key: keys.root,
    config: opts.config,
    optimizer: { ...settings.optimizer, name: optimizer.name },
    training: settings as unknown as Record<string, unknown>,
  });
  const gradients = await shardedGradients(opts, params);
  try {
    return await train({
      model,
      params,
      optimizer,
      resume,
      data: (s) => batches(foldIn(keys.data, s), 'train', settings.batchSize),
      steps: settings.steps,
      key: keys.step,
      loss: (logits, labels) => crossEntropy(logits, labels, settings.labelSmoothing),
      clipNorm: settings.clipNorm,
      mode: settings.mode,
      eval:
        monitoring.evalEvery > 0
          ? {
              every: monitoring.evalEvery,
              data: () => evalBatches(batches, keys, monitoring.evalBatches, monitoring.evalBatchSize),
              key: evalModelKey(keys),
              headAct: monitoring.headAct,
            }
          : undefined,
      driftEvery: monitoring.driftEvery,
      // Each save keeps the one before as checkpoint.prev.safetensors.
      checkpoint: outDir === null ? undefined : { every: monitoring.ckptEvery, save: checkpointToFile(join(outDir, CHECKPOINT_FILE), meta, { keepPrevious: true }) },
      onRecord: (r) => {
        if (metricsPath !== null) appendMetric(metricsPath, r);
        opts.onRecord?.(r);
      },
      shouldStop: opts.shouldStop,
      onNonFinite: opts.onNonFinite,
      jit: opts.jit,
      gradients: gradients?.fn,
    });
  } finally {
    await gradients?.close();
  }
}

/** The sharded gradient of the settings: on worker threads, or in this process for one worker. */
async function shardedGradients<P>(opts: RunOptions<P>, params: P): Promise<{ fn: GradientFn<P>; close: () => Promise<void> } | undefined> {
  const { settings } = opts;
  if (settings.shards === undefined) return undefined;
  // Workers run the CPU (webasm) path; on a GPU backend the shards run in this process.
  const workers = getBackend() === 'webasm' ? Math.min(opts.workers ?? 1, settings.shards) : 1;
  if (workers <= 1) {
    const loss = (logits: Tensor, labels: ArrayLike<number>) => crossEntropy(logits, labels, settings.labelSmoothing);
    return { fn: inProcessShards(opts.model, { mode: settings.mode, loss }, settings.shards), close: async () => {} };
  }
  if (opts.modelFactory === undefined) throw new CliError([`${workers} workers need a model factory (the module that builds the model in each worker)`]);
  const pool = await startDataParallel(params, { workers, shards: settings.shards, model: opts.modelFactory, mode: settings.mode, labelSmoothing: settings.labelSmoothing });
  return { fn: pool.gradients, close: () => pool.close() };
}

/** Test accuracy and loss of `params` on fixed held-out batches of a run with `seed`. */
export const evaluateRun = <P>(model: TrainableModel<P>, params: P, batches: KeyedBatches, seed: number, m: Pick<Monitoring, 'evalBatches' | 'evalBatchSize' | 'headAct'>, mode: Mode = 'reversible') => {
  const keys = runKeys(seed);
  return evaluate(model, params, evalBatches(batches, keys, m.evalBatches, m.evalBatchSize), { key: evalModelKey(keys), mode, headAct: m.headAct });
};

export { settingsProblems, type TrainSettings };
