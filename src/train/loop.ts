/**
 * The training loop over any model and any batch source, on every backend (values are read with
 * `await t.data()`). Per step: the batch, loss and gradient (valueAndGrad; 'reversible' mode unless
 * 'store' is chosen), global-norm clipping, one optimizer update, as one function (src/train/step.ts)
 * that jit traces once and replays unless `jit: false`; records (train, eval, drift, checkpoint) go to
 * `onRecord`. Files are the caller's business (`revgrad/node` has the checkpoint and metrics
 * helpers the `revgrad train` command uses), so this module also runs in browsers.
 *
 * Randomness: step s (0-based) gets the model key foldIn(key, s), so a run resumed from a checkpoint
 * after step c computes exactly what the uninterrupted run computes when the batch source is a function
 * of the step (an iterable source continues from wherever its iterator stands).
 */
import { flattenWithPaths, leaves } from '../autodiff/pytree.ts';
import { valueAndGrad } from '../autodiff/tape.ts';
import { getBackend } from '../backend/backend.ts';
import { measureMemory } from '../backend/memory.ts';
import { foldIn, key as makeKey, type Key } from '../random/index.ts';
import type { Mode } from '../reversible/index.ts';
import { ArgumentError } from '../tensor/errors.ts';
import { InterruptedError } from '../tensor/interrupt.ts';
import { tensor, type Tensor } from '../tensor/tensor.ts';
import { correctCount, crossEntropy } from './loss.ts';
import { makeTrainStep } from './step.ts';
import { clipGradNorm, type OptState, type Optimizer } from './optim.ts';
import type { GradientFn } from './shards.ts';

/** A batch: inputs and one integer class label per row. */
export interface Batch {
  readonly x: Tensor;
  readonly labels: ArrayLike<number>;
}

/**
 * Where batches come from: an async iterable (a stream, a worker, a file reader), an iterable (an array,
 * a generator), or a function of the 0-based step index (deterministic sources; exact resume).
 */
export type BatchSource = BatchStream | ((step: number) => Batch | Promise<Batch>);

/** A source with an end (what evaluation takes). */
export type BatchStream = AsyncIterable<Batch> | Iterable<Batch>;

/** What the loop needs of a model (an MViTModel has it). */
export interface TrainableModel<P> {
  /** train: raw outputs (logits) [B, classes]; eval: the head activation applied where the model has one. */
  apply(params: P, x: Tensor, key: Key, opts: { readonly train: boolean; readonly mode?: Mode }): Tensor;
  /** Per-block reconstruction error of reversible blocks (scalar tensors); drift records need it. */
  drift?(params: P, x: Tensor, key: Key): readonly { readonly block: number; readonly x1: Tensor; readonly x2: Tensor }[];
}

/** Params, optimizer state and the number of steps taken: what a checkpoint stores and `resume` takes. */
export interface TrainState<P, Slot extends string> {
  readonly step: number;
  readonly params: P;
  readonly optState: OptState<P, Slot>;
}

export interface TrainRecord {
  readonly type: 'train';
  readonly step: number;
  readonly loss: number;
  readonly acc: number;
  readonly lr: number;
  /** Global L2 norm of the gradients before clipping. */
  readonly gradNorm: number;
  readonly stepMs: number;
  readonly clipsPerSec: number;
  /** Peak live tensor bytes of the step's forward and backward pass. */
  readonly peakBytes: number;
}
export interface EvalRecord {
  readonly type: 'eval';
  readonly step: number;
  readonly testAcc: number;
  /** Mean test loss (null when the head activation gives no probabilities). */
  readonly testLoss: number | null;
  readonly clips: number;
}
export interface DriftRecord {
  readonly type: 'drift';
  readonly step: number;
  readonly max: number;
  readonly blocks: readonly { readonly block: number; readonly x1: number; readonly x2: number }[];
}
export interface CheckpointRecord {
  readonly type: 'checkpoint';
  readonly step: number;
  /** Where the checkpoint went, as the `save` callback said. */
  readonly path?: string;
}
/**
 * A step whose loss, gradients or parameters were not finite. It was not applied: the params and the
 * optimizer state are those of the step before. `tensors` names the non-finite ones (gradients, or the
 * parameters an earlier update broke), in the order of the parameters, at most 20.
 */
export interface NonFiniteRecord {
  readonly type: 'nonfinite';
  /** The step that failed (1-based, as in train records). */
  readonly step: number;
  /** 'loss': the loss is not finite (the forward pass overflowed); 'gradients': the loss is, some gradient is not; 'parameters': the params entering the step are not. */
  readonly what: 'loss' | 'gradients' | 'parameters';
  readonly loss: number;
  readonly gradNorm: number;
  readonly tensors: readonly { readonly name: string; readonly nonFinite: number; readonly size: number; readonly first: number }[];
  /** The gradient computed first in the backward pass among the non-finite ones (the last in parameter order). */
  readonly firstInBackward: string | null;
  readonly action: 'skipped' | 'stopped';
}
export type LoopRecord = TrainRecord | EvalRecord | DriftRecord | CheckpointRecord | NonFiniteRecord;

/** Why `train` returned before its last step. */
export type StopReason = 'requested' | 'interrupted' | 'nonfinite';

/** What the model's eval-mode output is: logits ('none'), or probabilities after a softmax or sigmoid. */
export type HeadActivation = 'softmax' | 'sigmoid' | 'none';

export interface EvaluateOptions {
  /** The model key in eval mode (eval mode draws no randomness, but the key is fixed anyway); default key(0). */
  readonly key?: Key;
  readonly mode?: Mode;
  /** Default 'none': the output is logits and `loss` applies. */
  readonly headAct?: HeadActivation;
  /** The loss of logits and labels, for 'none'; default crossEntropy. */
  readonly loss?: (output: Tensor, labels: ArrayLike<number>) => Tensor;
}

export interface EvalResult {
  readonly testAcc: number;
  /** Mean loss per example; null for a sigmoid head. */
  readonly testLoss: number | null;
  readonly clips: number;
}

export interface TrainOptions<P, Slot extends string> {
  readonly model: TrainableModel<P>;
  /** The starting params (ignored when `resume` is given). */
  readonly params: P;
  readonly optimizer: Optimizer<Slot>;
  readonly data: BatchSource;
  /**
   * Total optimizer steps (counting those before `resume`). Required for a function source; an iterable
   * source may instead run until it ends.
   */
  readonly steps?: number;
  /** Step s uses the model key foldIn(key, s) (dropout, drop path); default key(0). */
  readonly key?: Key;
  /**
   * Loss of the train-mode output and the labels; default crossEntropy without label smoothing. The
   * jitted step passes the labels as a [batch] tensor of class indices (an input of its program, not a
   * constant), other paths as the batch's array; crossEntropy takes both.
   */
  readonly loss?: (output: Tensor, labels: Tensor | ArrayLike<number>) => Tensor;
  /** Max global gradient L2 norm (torch.nn.utils.clip_grad_norm_); null or absent: no clipping. */
  readonly clipNorm?: number | null;
  /** Backward pass of reversible blocks: rebuild activations ('reversible', default) or keep them ('store'). */
  readonly mode?: Mode;
  /** Held-out evaluation every `every` steps and after the last one; `data` gives a fresh source each time. */
  readonly eval?: { readonly every: number; readonly data: () => BatchStream } & EvaluateOptions;
  /** Drift records (reconstruction error per reversible block) every this many steps and after the last; 0: never. */
  readonly driftEvery?: number;
  /** Save every `every` steps, after the last step and when stopping early; `save` may return where it wrote. */
  readonly checkpoint?: { readonly every: number; readonly save: (state: TrainState<P, Slot>) => Promise<string | void> | string | void };
  /** Continue from this state (its step, params and optimizer state). */
  readonly resume?: TrainState<P, Slot>;
  readonly onRecord?: (r: LoopRecord) => void;
  /** Stop early (after the current step) when this returns true; a checkpoint is written first. */
  readonly shouldStop?: () => boolean;
  /**
   * A step whose loss or gradients are not finite is never applied. 'stop' (default): the run stops,
   * saving the last good state; 'skip': the batch is skipped and the run goes on (stopping after
   * MAX_CONSECUTIVE_SKIPS in a row, or at once when the parameters themselves are not finite).
   */
  readonly onNonFinite?: 'stop' | 'skip';
  /**
   * Computes each step's loss and gradients instead of one valueAndGrad over the batch: the sharded
   * gradient of src/train/shards.ts, in process (`inProcessShards`) or on worker threads
   * (`startDataParallel` from 'revgrad/node'). `loss` and `mode` are then the gradient function's own.
   */
  readonly gradients?: GradientFn<P>;
  /**
   * Trace the step (loss, gradient, clipping, update) once and replay it (default: true, except on webgpu,
   * whose device plans' results eager kernels cannot bind yet, and with `gradients`); same numbers.
   */
  readonly jit?: boolean;
}

export interface TrainResult<P, Slot extends string> extends TrainState<P, Slot> {
  readonly records: readonly LoopRecord[];
  /** Set when the run returned before its last step. */
  readonly stopped?: StopReason;
  /** The step of the last checkpoint saved (its state was checked finite), if any. */
  readonly lastCheckpoint?: number;
}

/** With `onNonFinite: 'skip'`, this many non-finite steps in a row stop the run anyway. */
export const MAX_CONSECUTIVE_SKIPS = 20;

/** Batches of a source in order; a function source is called with the step index from `start` on. */
async function* batchesOf(op: string, source: BatchSource, start: number): AsyncGenerator<Batch> {
  if (typeof source === 'function') {
    for (let s = start; ; s++) yield await source(s);
  } else if (source !== null && typeof source === 'object' && (Symbol.asyncIterator in source || Symbol.iterator in source)) {
    yield* source;
  } else {
    throw new ArgumentError(op, `data must be an async iterable, an iterable${op === 'train' ? ' or a function (step) => batch' : ''} of { x, labels }`);
  }
}

function checkBatch(op: string, b: unknown, index: number): Batch {
  const batch = b as Partial<Batch> | null;
  if (batch === null || typeof batch !== 'object' || typeof batch.x !== 'object' || batch.labels === undefined || typeof batch.labels.length !== 'number') {
    throw new ArgumentError(op, `batch ${index} must be { x: Tensor, labels: number[] | Int32Array }`);
  }
  return batch as Batch;
}

/** Let timers (a progress bar) and signal handlers run between steps (setImmediate where there is one: no 1 ms clamp). */
const yieldToEventLoop = (): Promise<void> =>
  new Promise((r) => (typeof setImmediate === 'function' ? setImmediate(r) : setTimeout(r, 0)));

const due = (every: number, step: number, last: number | undefined) => step === last || (every > 0 && step % every === 0);

/** Accuracy and mean loss of `model` on every batch of `data`. */
export async function evaluate<P>(model: TrainableModel<P>, params: P, data: BatchStream, opts: EvaluateOptions = {}): Promise<EvalResult> {
  const headAct = opts.headAct ?? 'none';
  const lossFn = opts.loss ?? crossEntropy;
  const k = opts.key ?? makeKey(0);
  let correct = 0;
  let total = 0;
  let lossSum = 0;
  let i = 0;
  for await (const b of batchesOf('evaluate', data, 0)) {
    const { x, labels } = checkBatch('evaluate', b, i++);
    const out = model.apply(params, x, k, { train: false, mode: opts.mode ?? 'reversible' });
    correct += await correctCount(out, labels);
    total += labels.length;
    if (headAct === 'softmax') {
      const p = await out.data();
      const c = out.shape[1];
      for (let r = 0; r < labels.length; r++) lossSum -= Math.log(Math.max(p[r * c + labels[r]], 1e-12));
    } else if (headAct === 'none') {
      lossSum += (await lossFn(out, labels).item()) * labels.length;
    }
  }
  return { testAcc: total === 0 ? 0 : correct / total, testLoss: headAct === 'sigmoid' || total === 0 ? null : lossSum / total, clips: total };
}

/** Run (or continue) training; resolves when `steps` are done, the source ends, or `shouldStop` said so. */
export async function train<P, Slot extends string>(opts: TrainOptions<P, Slot>): Promise<TrainResult<P, Slot>> {
  const { model, optimizer } = opts;
  const steps = opts.steps;
  if (steps !== undefined && !(Number.isSafeInteger(steps) && steps >= 0)) throw new ArgumentError('train', `steps must be a non-negative integer, got ${steps}`);
  if (steps === undefined && typeof opts.data === 'function') throw new ArgumentError('train', 'a function batch source needs `steps` (it never ends)');
  if (opts.clipNorm !== undefined && opts.clipNorm !== null && !(opts.clipNorm > 0)) throw new ArgumentError('train', `clipNorm must be positive, got ${opts.clipNorm}`);
  const mode = opts.mode ?? 'reversible';
  if (mode !== 'reversible' && mode !== 'store') throw new ArgumentError('train', `mode must be 'reversible' or 'store', got '${String(mode)}'`);
  const lossFn = opts.loss ?? crossEntropy;
  const stepKey = opts.key ?? makeKey(0);
  const driftEvery = opts.driftEvery ?? 0;
  if (driftEvery > 0 && model.drift === undefined) throw new ArgumentError('train', 'driftEvery needs a model with a drift method');

  let params: P = opts.resume?.params ?? opts.params;
  let optState: OptState<P, Slot> = opts.resume?.optState ?? optimizer.init(params);
  const start = opts.resume?.step ?? 0;
  const onNonFinite = opts.onNonFinite ?? 'stop';
  if (onNonFinite !== 'stop' && onNonFinite !== 'skip') throw new ArgumentError('train', `onNonFinite must be 'stop' or 'skip', got '${String(onNonFinite)}'`);
  let step = start;
  let stopped: StopReason | undefined;
  let lastCheckpoint: number | undefined;
  const records: LoopRecord[] = [];
  const emit = (r: LoopRecord) => {
    records.push(r);
    opts.onRecord?.(r);
  };
  // A state is saved only when every param and every optimizer slot is finite: the file on disk is
  // always the last good state, even when a run goes non-finite between two checkpoints.
  const checkpoint = async () => {
    if (opts.checkpoint === undefined || lastCheckpoint === step) return;
    if ((await nonFiniteLeaves([params, optState], 1)).length > 0) return;
    const path = await opts.checkpoint.save({ step, params, optState });
    lastCheckpoint = step;
    emit(typeof path === 'string' ? { type: 'checkpoint', step, path } : { type: 'checkpoint', step });
  };

  // The whole step as one function (loss, gradient, clipping, update): traced once and replayed, or eager.
  // A step only proposes the next state; the loop adopts it after the non-finite guard. (On webasm/cpu
  // the inputs stay valid after a replay; webgpu runs eagerly here, see the jit default.)
  const trainStep = makeTrainStep(model, optimizer, { mode, loss: lossFn, clipNorm: opts.clipNorm, jit: opts.jit ?? getBackend() !== 'webgpu' });
  const wholeStep = async (x: Tensor, labels: ArrayLike<number>, k: Key): Promise<Proposed> => {
    const measured = measureMemory(
      () => trainStep(params, optState, x, tensor(Float32Array.from(labels), [labels.length]), k),
      (r) => [...leaves(r.params), ...leaves(r.optState), r.loss, r.logits, r.gradNorm].map((t) => t.storage),
    );
    const r = measured.value;
    // A replayed step's memory is its planned buffers (the library's accounting sees eager ops only).
    return {
      loss: await r.loss.item(),
      correct: await correctCount(r.logits, labels),
      gradNorm: await r.gradNorm.item(),
      peakBytes: trainStep.peakBytes() ?? measured.peakBytes,
      next: () => ({ params: r.params, state: r.optState }),
      // Only to name the non-finite tensors: the whole step does not hand out its gradients.
      grads: () => valueAndGrad((q: P): Tensor => lossFn(model.apply(q, x, k, { train: true, mode }), labels))(params)[1],
    };
  };
  // With a gradient function (data-parallel shards), it gives the gradients and the update runs here.
  const shardedStep = async (gradients: GradientFn<P>, x: Tensor, labels: ArrayLike<number>, k: Key): Promise<Proposed> => {
    const g = await gradients(params, { x, labels }, k);
    const clipped = clipGradNorm(g.grads, opts.clipNorm ?? Infinity);
    const gradNorm = await clipped.norm.item();
    return { loss: g.loss, correct: g.correct, gradNorm, peakBytes: g.peakBytes, next: () => optimizer.update(clipped.grads, optState, params), grads: () => g.grads };
  };
  interface Proposed {
    readonly loss: number;
    readonly correct: number;
    readonly gradNorm: number;
    readonly peakBytes: number;
    readonly next: () => { params: P; state: OptState<P, Slot> };
    readonly grads: () => P;
  }

  let skipped = 0;
  try {
    if (steps === undefined || start < steps) {
      for await (const b of batchesOf('train', opts.data, start)) {
        const s = step;
        const t0 = performance.now();
        const { x, labels } = checkBatch('train', b, s);
        const k = foldIn(stepKey, s);
        const proposed = opts.gradients !== undefined ? await shardedStep(opts.gradients, x, labels, k) : await wholeStep(x, labels, k);
        const { loss, correct, gradNorm, peakBytes } = proposed;
        if (!Number.isFinite(loss) || !Number.isFinite(gradNorm)) {
          // Not applied: params and optimizer state stay those of step s.
          const record = await diagnoseNonFinite(s + 1, loss, gradNorm, params, proposed.grads());
          const giveUp = onNonFinite === 'stop' || record.what === 'parameters' || skipped + 1 >= MAX_CONSECUTIVE_SKIPS;
          emit({ ...record, action: giveUp ? 'stopped' : 'skipped' });
          if (giveUp) {
            stopped = 'nonfinite';
            break;
          }
          skipped++;
          step = s + 1;
          if (steps !== undefined && step === steps) break;
          await yieldToEventLoop();
          continue;
        }
        skipped = 0;
        const lr = optimizer.learningRate(optState.step);
        let drift: DriftRecord | null = null;
        if (driftEvery > 0 && due(driftEvery, s + 1, steps)) {
          // The blocks' reconstruction error at the params this step starts from.
          const blocks = await Promise.all(model.drift!(params, x, k).map(async (e) => ({ block: e.block, x1: await e.x1.item(), x2: await e.x2.item() })));
          drift = { type: 'drift', step: s + 1, max: blocks.reduce((m, e) => Math.max(m, e.x1, e.x2), 0), blocks };
        }
        ({ params, state: optState } = proposed.next());
        step = s + 1;
        const stepMs = performance.now() - t0;
        emit({ type: 'train', step, loss, acc: correct / labels.length, lr, gradNorm, stepMs, clipsPerSec: (labels.length * 1000) / stepMs, peakBytes });
        if (drift !== null) emit(drift);
        if (opts.eval !== undefined && opts.eval.every > 0 && due(opts.eval.every, step, steps)) {
          emit({ type: 'eval', step, ...(await evaluate(model, params, opts.eval.data(), { mode, ...opts.eval })) });
        }
        const stopping = opts.shouldStop?.() === true;
        if ((opts.checkpoint !== undefined && due(opts.checkpoint.every, step, steps)) || stopping) await checkpoint();
        if (stopping) stopped = 'requested';
        if (stopping || step === steps) break;
        await yieldToEventLoop();
      }
    }
  } catch (e) {
    // An interrupt between two ops: the state is that of the last completed step (values are immutable,
    // and `params`, `optState` and `step` change together after an update returns).
    if (!(e instanceof InterruptedError)) throw e;
    stopped = 'interrupted';
  }
  // A source that ended before `steps`, an open-ended run, or a stop: the last good state is saved.
  if (step > start) await checkpoint();
  return { params, optState, step, records, ...(stopped !== undefined ? { stopped } : {}), ...(lastCheckpoint !== undefined ? { lastCheckpoint } : {}) };
}

/** Leaves of `tree` (tensors) holding NaN or infinities, by path, at most `max`. Reads every leaf. */
export async function nonFiniteLeaves(tree: unknown, max = 20): Promise<{ name: string; nonFinite: number; size: number; first: number }[]> {
  const out: { name: string; nonFinite: number; size: number; first: number }[] = [];
  for (const [name, t] of flattenWithPaths(tree)) {
    const d = await t.data();
    let count = 0;
    let first = -1;
    for (let i = 0; i < d.length; i++) {
      if (!Number.isFinite(d[i]!)) {
        if (count === 0) first = i;
        count++;
      }
    }
    if (count > 0) out.push({ name, nonFinite: count, size: d.length, first });
    if (out.length >= max) break;
  }
  return out;
}

/** What went non-finite in step `step`: the params entering it, else the gradients, else only the loss. */
async function diagnoseNonFinite<P>(step: number, loss: number, gradNorm: number, params: P, grads: P): Promise<Omit<NonFiniteRecord, 'action'>> {
  const badParams = await nonFiniteLeaves(params);
  if (badParams.length > 0) return { type: 'nonfinite', step, what: 'parameters', loss, gradNorm, tensors: badParams, firstInBackward: null };
  const badGrads = await nonFiniteLeaves(grads, Infinity);
  const firstInBackward = badGrads.at(-1)?.name ?? null;
  const what = Number.isFinite(loss) ? 'gradients' : 'loss';
  return { type: 'nonfinite', step, what, loss, gradNorm, tensors: badGrads.slice(0, 20), firstInBackward };
}
