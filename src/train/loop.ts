/**
 * The training loop. Every random choice comes from keys derived from the seed and the step number:
 *
 *   root = key(seed);  [initKey, dataKey, stepKey, evalKey] = split(root, 4)
 *   step s (0-based): batch from foldIn(dataKey, s), dropout/drop-path from foldIn(stepKey, s)
 *   evaluation: batch i from foldIn(evalKey, i) on the 'test' split, model key foldIn(evalKey, -1 >>> 0)
 *
 * so a run resumed from a checkpoint after step c computes exactly what the uninterrupted run computes.
 * Per step (src/train/step.ts, traced once and replayed by jit unless `jit: false`): loss and gradient
 * (valueAndGrad, 'reversible' mode unless 'store' is chosen), global-norm clipping, AdamW (or SGD) with a
 * cosine/warmup learning rate. Records (train, eval, drift, checkpoint) go to
 * `onRecord` and, with an output directory, to DIR/metrics.jsonl, one JSON object per line.
 */
import { appendFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import { leaves, type PyTree } from '../autodiff/pytree.ts';
import { measureMemory } from '../backend/memory.ts';
import { makeBatch, NUM_CLASSES, type ClipSpec } from '../data/moving-mnist.ts';
import { foldIn, key as makeKey, split, type Key } from '../random/index.ts';
import type { Mode } from '../reversible/index.ts';
import { tensor, type Tensor } from '../tensor/tensor.ts';
import { restoreTree, saveCheckpoint, type LoadedCheckpoint } from './checkpoint.ts';
import { correctCount, crossEntropy } from './loss.ts';
import { adamwInit, type AdamWHyper, type AdamWState } from './optim.ts';
import { learningRate, type CosineSchedule } from './schedule.ts';
import { makeTrainStep } from './step.ts';
import { ArgumentError, DataError } from '../tensor/errors.ts';

/** What the loop needs of a model (MViTModel satisfies it). */
export interface TrainableModel<P = PyTree> {
  init(key: Key): P;
  /** train: raw logits [B, classes]; eval: the head activation applied. */
  apply(params: P, x: Tensor, key: Key, opts: { train: boolean; mode?: Mode }): Tensor;
  drift(params: P, x: Tensor, key: Key): { block: number; x1: Tensor; x2: Tensor }[];
  /** No weight decay for this param (PySlowFast's zero group; 1-D params and biases too unless zeroWd1dParam is false). */
  noDecay(name: string, zeroWd1dParam?: boolean): boolean;
}

export interface Batch {
  readonly x: Tensor;
  readonly y: Int32Array;
}
export type BatchFn = (key: Key, part: 'train' | 'test', size: number) => Batch;

/** Everything that determines the numbers a run computes (stored in every checkpoint). */
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
  readonly optimizer: Omit<AdamWHyper, 'lr'> & {
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
}

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
  readonly headAct: 'softmax' | 'sigmoid' | 'none';
}

export interface TrainRecord {
  readonly type: 'train';
  readonly step: number;
  readonly loss: number;
  readonly acc: number;
  readonly lr: number;
  readonly gradNorm: number;
  readonly stepMs: number;
  readonly clipsPerSec: number;
  readonly peakBytes: number;
}
export interface EvalRecord {
  readonly type: 'eval';
  readonly step: number;
  readonly testAcc: number;
  /** Mean test cross-entropy (null when the head activation gives no probabilities). */
  readonly testLoss: number | null;
  readonly clips: number;
}
export interface DriftRecord {
  readonly type: 'drift';
  readonly step: number;
  readonly max: number;
  readonly blocks: readonly { block: number; x1: number; x2: number }[];
}
export interface CheckpointRecord {
  readonly type: 'checkpoint';
  readonly step: number;
  readonly path: string;
}
export type LoopRecord = TrainRecord | EvalRecord | DriftRecord | CheckpointRecord;

export interface TrainOptions<P = PyTree> {
  readonly model: TrainableModel<P>;
  readonly batch: BatchFn;
  readonly settings: TrainSettings;
  readonly monitoring: Monitoring;
  /** The model config, stored in checkpoints. */
  readonly config: unknown;
  /** Where metrics.jsonl and checkpoint.safetensors go; null keeps everything in memory. */
  readonly outDir: string | null;
  /** Continue from this checkpoint (its step, params and optimizer state). */
  readonly resume?: LoadedCheckpoint;
  readonly onRecord?: (r: LoopRecord) => void;
  /** Stop early (after the current step) when this returns true; the state is checkpointed. */
  readonly shouldStop?: () => boolean;
  /** Trace the training step once and replay it (default true); false runs every op eagerly. Same numbers either way. */
  readonly jit?: boolean;
}

export interface TrainResult<P = PyTree> {
  readonly params: P;
  readonly optState: AdamWState<P>;
  readonly step: number;
  readonly records: LoopRecord[];
  readonly checkpointPath: string | null;
}

export const METRICS_FILE = 'metrics.jsonl';
export const CHECKPOINT_FILE = 'checkpoint.safetensors';

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
const evalModelKey = (k: RunKeys): Key => foldIn(k.eval, 0xffffffff);

/** Moving-MNIST batches shaped for a config's input: [B, C, T, S, S] ([B, C, S, S] for 2-D patches). */
export function movingMnistBatches(cfg: {
  DATA: { NUM_FRAMES: number; TRAIN_CROP_SIZE: number; INPUT_CHANNEL_NUM: number[] };
  MVIT: { PATCH_2D: boolean };
}): BatchFn {
  const frames = cfg.MVIT.PATCH_2D ? 1 : cfg.DATA.NUM_FRAMES;
  const size = cfg.DATA.TRAIN_CROP_SIZE;
  const channels = cfg.DATA.INPUT_CHANNEL_NUM[0] ?? 1;
  // Digits at MNIST's own 28 px where the canvas allows (no resampling blur: the digit is what is hard
  // to learn), moving 1-3 px a frame within the room left.
  const digitSize = Math.min(28, Math.max(4, size - 4));
  const spec: ClipSpec = { frames, size, digitSize, minSpeed: 1, maxSpeed: Math.max(1, Math.min(3, size - digitSize)) };
  return (k, part, n) => {
    const b = makeBatch(k, part, n, spec);
    const per = frames * size * size;
    let x = b.x;
    if (channels !== 1) {
      x = new Float32Array(n * channels * per);
      for (let i = 0; i < n; i++) for (let c = 0; c < channels; c++) x.set(b.x.subarray(i * per, (i + 1) * per), (i * channels + c) * per);
    }
    const shape = cfg.MVIT.PATCH_2D ? [n, channels, size, size] : [n, channels, frames, size, size];
    return { x: tensor(x, shape), y: b.y };
  };
}

export const MOVING_MNIST_CLASSES = NUM_CLASSES;

/** Keep only the records of metrics.jsonl up to `step` (a resumed run rewrites what came after). */
function truncateMetrics(path: string, step: number): void {
  if (!existsSync(path)) return;
  const kept = readFileSync(path, 'utf8')
    .split('\n')
    .filter((line) => {
      if (line.trim() === '') return false;
      try {
        const r = JSON.parse(line) as { step?: unknown };
        return typeof r === 'object' && r !== null && typeof r.step === 'number' && r.step <= step;
      } catch {
        return false; // a line torn by a kill
      }
    });
  writeFileSync(path, kept.map((l) => l + '\n').join(''));
}

export function readMetrics(path: string): Record<string, unknown>[] {
  if (!existsSync(path)) return [];
  return readFileSync(path, 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .flatMap((l) => {
      try {
        return [JSON.parse(l) as Record<string, unknown>];
      } catch {
        return [];
      }
    });
}

const due = (every: number, step: number, last: number) => step === last || (every > 0 && step % every === 0);

/** Test accuracy and loss on `batches` fixed held-out batches. */
export async function evaluate<P>(model: TrainableModel<P>, params: P, batch: BatchFn, keys: RunKeys, m: Pick<Monitoring, 'evalBatches' | 'evalBatchSize' | 'headAct'>, mode: Mode = 'reversible') {
  let correct = 0;
  let total = 0;
  let lossSum = 0;
  for (let i = 0; i < m.evalBatches; i++) {
    const { x, y } = batch(foldIn(keys.eval, i), 'test', m.evalBatchSize);
    const out = model.apply(params, x, evalModelKey(keys), { train: false, mode });
    correct += await correctCount(out, y);
    total += y.length;
    if (m.headAct === 'softmax') {
      const p = await out.data();
      const k = out.shape[1];
      for (let b = 0; b < y.length; b++) lossSum -= Math.log(Math.max(p[b * k + y[b]], 1e-12));
    } else if (m.headAct === 'none') {
      lossSum += (await crossEntropy(out, y).data())[0] * y.length;
    }
  }
  return { testAcc: total === 0 ? 0 : correct / total, testLoss: m.headAct === 'sigmoid' || total === 0 ? null : lossSum / total, clips: total };
}

export function settingsProblems(s: TrainSettings): string[] {
  const p: string[] = [];
  if (!Number.isSafeInteger(s.seed)) p.push(`seed must be an integer, got ${s.seed}`);
  if (!(Number.isSafeInteger(s.steps) && s.steps >= 1)) p.push(`steps must be a positive integer, got ${s.steps}`);
  if (!(Number.isSafeInteger(s.batchSize) && s.batchSize >= 1)) p.push(`batch size must be a positive integer, got ${s.batchSize}`);
  if (s.mode !== 'reversible' && s.mode !== 'store') p.push(`mode must be 'reversible' or 'store', got '${s.mode}'`);
  if (s.clipNorm !== null && !(s.clipNorm > 0)) p.push(`clip norm must be positive, got ${s.clipNorm}`);
  if (!(s.labelSmoothing >= 0 && s.labelSmoothing < 1)) p.push(`label smoothing must be in [0, 1), got ${s.labelSmoothing}`);
  return p;
}

/** Run (or continue) training, on every backend (values are read with `await t.data()`). */
export async function train<P>(opts: TrainOptions<P>): Promise<TrainResult<P>> {
  const { model, settings, monitoring, outDir } = opts;
  const problems = settingsProblems(settings);
  if (problems.length > 0) throw new ArgumentError('train', problems.join('; '));
  const keys = runKeys(settings.seed);
  let params: P = model.init(keys.init);
  const sgd = settings.optimizer.name === 'sgd';
  let optState: AdamWState<P> = adamwInit(params);
  let start = 0;
  if (opts.resume !== undefined) {
    const ck = opts.resume;
    if (ck.optim === null) throw new DataError(ck.path, 'train: the checkpoint holds no optimizer state, so the run cannot be continued exactly');
    const p = restoreTree(params, ck.params, ck.path);
    const m = restoreTree(optState.m, ck.optim.m, `${ck.path} (optim.m)`);
    // SGD keeps one buffer (its momentum, stored as optim.m); AdamW two.
    const v = sgd ? E.right(optState.v) : restoreTree(optState.v, ck.optim.v, `${ck.path} (optim.v)`);
    const errs = [p, m, v].flatMap((r) => (E.isLeft(r) ? r.left : []));
    if (errs.length > 0) throw new DataError(ck.path, `train: cannot resume:\n  ${errs.join('\n  ')}`);
    params = (p as E.Right<P>).right;
    const optimStep = Number((ck.meta.optimizer as { step?: unknown }).step ?? ck.meta.step);
    optState = { step: optimStep, m: (m as E.Right<P>).right, v: (v as E.Right<P>).right };
    start = ck.meta.step;
  }

  const metricsPath = outDir === null ? null : join(outDir, METRICS_FILE);
  const ckptPath = outDir === null ? null : join(outDir, CHECKPOINT_FILE);
  if (outDir !== null) {
    mkdirSync(outDir, { recursive: true });
    if (start > 0) truncateMetrics(metricsPath!, start);
    else writeFileSync(metricsPath!, '');
  }
  const records: LoopRecord[] = [];
  const emit = (r: LoopRecord) => {
    records.push(r);
    if (metricsPath !== null) appendFileSync(metricsPath, JSON.stringify(r) + '\n');
    opts.onRecord?.(r);
  };
  const meta = (step: number) => ({
    step,
    seed: settings.seed,
    key: keys.root,
    config: opts.config,
    optimizer: { name: 'adamw', ...settings.optimizer },
    training: settings as unknown as Record<string, unknown>,
  });
  const checkpoint = async (step: number) => {
    if (ckptPath === null) return;
    await saveCheckpoint(ckptPath, params, (sgd ? { step: optState.step, m: optState.m } : optState) as AdamWState<unknown>, meta(step));
    emit({ type: 'checkpoint', step, path: ckptPath });
  };

  // Loss, gradient, clipping and the optimizer as one step: traced once and replayed (opts.jit, default on), or eager.
  const trainStep = makeTrainStep(model, {
    mode: settings.mode,
    labelSmoothing: settings.labelSmoothing,
    clipNorm: settings.clipNorm,
    optimizer: settings.optimizer,
    noDecay: (n: string) => model.noDecay(n, settings.zeroWd1dParam ?? true),
    jit: opts.jit ?? true,
  });

  let step = start;
  let queuedDrift: DriftRecord | null = null;
  for (let s = start; s < settings.steps; s++) {
    const t0 = performance.now();
    const { x, y } = opts.batch(foldIn(keys.data, s), 'train', settings.batchSize);
    const k = foldIn(keys.step, s);
    if (monitoring.driftEvery > 0 && due(monitoring.driftEvery, s + 1, settings.steps)) {
      // The blocks' reconstruction error at the params this step starts from (emitted after its train record).
      const entries = await Promise.all(model.drift(params, x, k).map(async (e) => ({ block: e.block, x1: (await e.x1.data())[0], x2: (await e.x2.data())[0] })));
      const max = entries.reduce((m, e) => Math.max(m, e.x1, e.x2), 0);
      queuedDrift = { type: 'drift', step: s + 1, max, blocks: entries };
    }
    const lr = learningRate(settings.schedule, s);
    const labels = tensor(Float32Array.from(y), [y.length]);
    const measured = measureMemory(
      () => trainStep(params, optState, x, labels, k, lr),
      (r) => [...leaves(r.params), ...leaves(r.optState.m), ...leaves(r.optState.v), r.loss, r.logits, r.gradNorm].map((t) => t.storage),
    );
    const result = measured.value;
    // Values are read with `await` so the loop also runs on asynchronous backends (webgpu).
    const loss = (await result.loss.data())[0];
    const correct = await correctCount(result.logits, y);
    const gradNorm = (await result.gradNorm.data())[0];
    params = result.params;
    optState = result.optState;
    const peakBytes = trainStep.peakBytes() ?? measured.peakBytes;
    const stepMs = performance.now() - t0;
    step = s + 1;
    emit({
      type: 'train',
      step,
      loss,
      acc: correct / y.length,
      lr,
      gradNorm,
      stepMs,
      clipsPerSec: (y.length * 1000) / stepMs,
      peakBytes,
    });
    if (queuedDrift !== null) {
      emit(queuedDrift);
      queuedDrift = null;
    }
    if (monitoring.evalEvery > 0 && due(monitoring.evalEvery, step, settings.steps)) {
      emit({ type: 'eval', step, ...(await evaluate(model, params, opts.batch, keys, monitoring, settings.mode)) });
    }
    const stopping = opts.shouldStop?.() === true;
    if (due(monitoring.ckptEvery, step, settings.steps) || stopping) await checkpoint(step);
    if (stopping) break;
    // Let timers (progress bar) and signals run between steps.
    await new Promise<void>((r) => setImmediate(r));
  }
  if (start >= settings.steps && ckptPath !== null && !existsSync(ckptPath)) await checkpoint(step);
  return { params, optState, step, records, checkpointPath: ckptPath };
}
