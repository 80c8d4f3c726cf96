/**
 * Gradients of a batch as the sum of a fixed set of shard gradients: the arithmetic of data-parallel
 * training, independent of how many workers compute it.
 *
 * The batch of B rows is cut into S contiguous shards (the first B mod S shards one row longer). Shard s
 * runs the model with the key foldIn(k, s) on its rows and scales its loss by rows(s) / B, so the shard
 * losses add up to the batch mean; its gradients are the gradients of that scaled loss. The step's
 * gradient is ((g_0 + g_1) + g_2) + ..., float32 additions in shard order. Every shard is computed by the
 * same code on the same bits wherever it runs, and the sum's order is fixed, so one process, 2 workers
 * or 4 workers produce the same weights bit for bit (src/train/parallel.ts runs the shards on worker
 * threads; test/parallel.test.ts checks the bits). S is part of a run's settings (it changes the
 * numbers: dropout keys and rounding); the number of workers is not.
 */
import { flattenWithPaths, leaves, unflattenLike } from '../autodiff/pytree.ts';
import { valueAndGrad } from '../autodiff/tape.ts';
import { measureMemory } from '../backend/memory.ts';
import { foldIn, type Key } from '../random/index.ts';
import type { Mode } from '../reversible/index.ts';
import { ArgumentError } from '../tensor/errors.ts';
import { add, mul, slice } from '../tensor/ops.ts';
import type { Tensor } from '../tensor/tensor.ts';
import { correctCount } from './loss.ts';
import type { Batch, TrainableModel } from './loop.ts';

/** One step's loss (the batch mean), correct predictions, gradients and peak memory of a shard. */
export interface StepGradients<P> {
  readonly loss: number;
  readonly correct: number;
  readonly grads: P;
  /** Peak live tensor bytes of the largest shard's forward and backward pass. */
  readonly peakBytes: number;
}

/** Computes a step's loss and gradients (in process, or on workers). */
export type GradientFn<P> = (params: P, batch: Batch, key: Key) => Promise<StepGradients<P>>;

/** [start, end) rows of each of `shards` shards of a batch of `rows`. */
export function shardRanges(rows: number, shards: number): [number, number][] {
  if (!(Number.isSafeInteger(shards) && shards >= 1)) throw new ArgumentError('shards', `the shard count must be a positive integer, got ${shards}`);
  if (shards > rows) throw new ArgumentError('shards', `a batch of ${rows} rows cannot be cut into ${shards} shards (at most one shard per row)`);
  const base = Math.floor(rows / shards);
  const longer = rows % shards;
  const out: [number, number][] = [];
  let at = 0;
  for (let s = 0; s < shards; s++) {
    const n = base + (s < longer ? 1 : 0);
    out.push([at, at + n]);
    at += n;
  }
  return out;
}

export interface ShardSpec {
  readonly mode: Mode;
  /** Loss of the train-mode output and labels (a mean over the rows it is given). */
  readonly loss: (output: Tensor, labels: ArrayLike<number>) => Tensor;
}

export interface ShardResult {
  readonly loss: number;
  readonly correct: number;
  /** Gradient leaves with their paths, in `flattenWithPaths(params)` order. */
  readonly grads: [string, Tensor][];
  readonly peakBytes: number;
}

/** Loss and gradients of shard `s` (rows [a, b) of a batch of `rows`) under step key `key`. */
export async function shardGradients<P>(
  model: TrainableModel<P>, spec: ShardSpec, params: P, x: Tensor, labels: ArrayLike<number>, key: Key, s: number, [a, b]: readonly [number, number], rows: number,
): Promise<ShardResult> {
  const xs = slice(x, [a, ...x.shape.slice(1).map(() => 0)], [b, ...x.shape.slice(1)]);
  const ls = Array.from({ length: b - a }, (_, i) => labels[a + i]);
  const k = foldIn(key, s);
  let logits: Tensor | null = null;
  const measured = measureMemory(
    () => valueAndGrad((q: P): Tensor => {
      logits = model.apply(q, xs, k, { train: true, mode: spec.mode });
      return mul(spec.loss(logits, ls), (b - a) / rows);
    })(params),
    ([loss, grads]) => [...leaves(grads), loss].map((t) => t.storage),
  );
  const [loss, grads] = measured.value;
  return { loss: await loss.item(), correct: await correctCount(logits as unknown as Tensor, ls), grads: flattenWithPaths(grads), peakBytes: measured.peakBytes };
}

/**
 * The sharded gradient computed in this process, shard after shard: what `--workers 1` runs, and the
 * reference the worker pool reproduces bit for bit.
 */
export function inProcessShards<P>(model: TrainableModel<P>, spec: ShardSpec, shards: number): GradientFn<P> {
  return async (params, { x, labels }, key) => {
    const ranges = shardRanges(labels.length, shards);
    let sum: Tensor[] | null = null;
    let loss = 0;
    let correct = 0;
    let peakBytes = 0;
    for (let s = 0; s < ranges.length; s++) {
      const r = await shardGradients(model, spec, params, x, labels, key, s, ranges[s], labels.length);
      sum = sum === null ? r.grads.map(([, g]) => g) : sum.map((g, i) => add(g, r.grads[i][1]));
      loss += r.loss;
      correct += r.correct;
      peakBytes = Math.max(peakBytes, r.peakBytes);
    }
    return { loss, correct, grads: unflattenLike(params, sum!), peakBytes };
  };
}
