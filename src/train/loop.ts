/**
 * The training loop over any model and any batch source, on every backend (values are read with
 * `await t.data()`). Per step: the batch, loss and gradient (valueAndGrad; 'reversible' mode unless
 * 'store' is chosen), global-norm clipping, one optimizer update; records (train, eval, drift, checkpoint)
 * go to `onRecord`. Files are the caller's business (`revgrad/node` has the checkpoint and metrics
 * helpers the `revgrad train` command uses), so this module also runs in browsers.
 *
 * Randomness: step s (0-based) gets the model key foldIn(key, s), so a run resumed from a checkpoint
 * after step c computes exactly what the uninterrupted run computes when the batch source is a function
 * of the step (an iterable source continues from wherever its iterator stands).
 */
import { leaves } from '../autodiff/pytree.ts';
import { valueAndGrad } from '../autodiff/tape.ts';
import { measureMemory } from '../backend/memory.ts';
import { foldIn, key as makeKey, type Key } from '../random/index.ts';
import type { Mode } from '../reversible/index.ts';
import { ArgumentError } from '../tensor/errors.ts';
import type { Tensor } from '../tensor/tensor.ts';
import { correctCount, crossEntropy } from './loss.ts';
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
export type LoopRecord = TrainRecord | EvalRecord | DriftRecord | CheckpointRecord;

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
  /** Loss of the train-mode output and the labels; default crossEntropy without label smoothing. */
  readonly loss?: (output: Tensor, labels: ArrayLike<number>) => Tensor;
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
   * Computes each step's loss and gradients instead of one valueAndGrad over the batch: the sharded
   * gradient of src/train/shards.ts, in process (`inProcessShards`) or on worker threads
   * (`startDataParallel` from 'revgrad/node'). `loss` and `mode` are then the gradient function's own.
   */
  readonly gradients?: GradientFn<P>;
}

export interface TrainResult<P, Slot extends string> extends TrainState<P, Slot> {
  readonly records: readonly LoopRecord[];
}

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
  let step = start;
  const records: LoopRecord[] = [];
  const emit = (r: LoopRecord) => {
    records.push(r);
    opts.onRecord?.(r);
  };
  const checkpoint = async () => {
    if (opts.checkpoint === undefined) return;
    const path = await opts.checkpoint.save({ step, params, optState });
    emit(typeof path === 'string' ? { type: 'checkpoint', step, path } : { type: 'checkpoint', step });
  };

  // Only the params are differentiated: the batch and the key are closed over, so no gradient is
  // computed for the inputs.
  const lossAndGrad = (p: P, x: Tensor, labels: ArrayLike<number>, k: Key) => {
    let logits: Tensor | null = null;
    const [loss, grads] = valueAndGrad((q: P): Tensor => {
      logits = model.apply(q, x, k, { train: true, mode });
      return lossFn(logits, labels);
    })(p);
    return { loss, grads, logits: logits as unknown as Tensor };
  };
  const localGradients = async (p: P, x: Tensor, labels: ArrayLike<number>, k: Key) => {
    const measured = measureMemory(
      () => lossAndGrad(p, x, labels, k),
      (r) => [...leaves(r.grads), r.loss, r.logits].map((t) => t.storage),
    );
    const { loss, grads, logits } = measured.value;
    return { loss: await loss.item(), correct: await correctCount(logits, labels), grads, peakBytes: measured.peakBytes };
  };

  if (steps === undefined || start < steps) {
    for await (const b of batchesOf('train', opts.data, start)) {
      const s = step;
      const t0 = performance.now();
      const { x, labels } = checkBatch('train', b, s);
      const k = foldIn(stepKey, s);
      const { loss, correct, grads: grads0, peakBytes } = opts.gradients !== undefined ? await opts.gradients(params, { x, labels }, k) : await localGradients(params, x, labels, k);
      const clipped = clipGradNorm(grads0, opts.clipNorm ?? Infinity);
      const gradNorm = await clipped.norm.item();
      const lr = optimizer.learningRate(optState.step);
      let drift: DriftRecord | null = null;
      if (driftEvery > 0 && due(driftEvery, s + 1, steps)) {
        const blocks = await Promise.all(model.drift!(params, x, k).map(async (e) => ({ block: e.block, x1: await e.x1.item(), x2: await e.x2.item() })));
        drift = { type: 'drift', step: s + 1, max: blocks.reduce((m, e) => Math.max(m, e.x1, e.x2), 0), blocks };
      }
      ({ params, state: optState } = optimizer.update(clipped.grads, optState, params));
      const stepMs = performance.now() - t0;
      step = s + 1;
      emit({ type: 'train', step, loss, acc: correct / labels.length, lr, gradNorm, stepMs, clipsPerSec: (labels.length * 1000) / stepMs, peakBytes });
      if (drift !== null) emit(drift);
      if (opts.eval !== undefined && opts.eval.every > 0 && due(opts.eval.every, step, steps)) {
        emit({ type: 'eval', step, ...(await evaluate(model, params, opts.eval.data(), { mode, ...opts.eval })) });
      }
      const stopping = opts.shouldStop?.() === true;
      if ((opts.checkpoint !== undefined && due(opts.checkpoint.every, step, steps)) || stopping) await checkpoint();
      if (stopping || step === steps) break;
      await yieldToEventLoop();
    }
  }
  // A source that ended before `steps` (or an open-ended run): the last state is still saved.
  const last = records.at(-1);
  if (step > start && !(last?.type === 'checkpoint' && last.step === step)) await checkpoint();
  return { params, optState, step, records };
}
