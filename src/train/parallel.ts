/**
 * Data-parallel training on worker_threads (Node only; exported from 'revgrad/node'): the shards of
 * src/train/shards.ts computed by a pool of workers, summed on the main thread in shard order, so the
 * weights are bit for bit those of the in-process computation for any number of workers.
 *
 * Each worker builds its own copy of the model from a factory (a module URL, an export name and
 * structured-cloneable arguments: a function cannot cross threads). Per step the main thread writes the
 * params and the batch into SharedArrayBuffers, hands shard s to worker s mod W, and each worker writes
 * the gradient of each of its shards into that shard's slot of a shared gradient buffer; the main thread
 * then adds the slots in shard order. The optimizer update stays on the main thread.
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { flattenWithPaths, leaves, unflattenLike } from '../autodiff/pytree.ts';
import { ArgumentError, BackendError } from '../tensor/errors.ts';
import { tensor, type Tensor } from '../tensor/tensor.ts';
import type { Mode } from '../reversible/index.ts';
import { shardRanges, type GradientFn } from './shards.ts';
import { sizeOf } from '../tensor/shape.ts';

/** How a worker builds the model: `(await import(module))[exportName](...args)`. */
export interface ModelFactory {
  readonly module: string;
  readonly exportName: string;
  readonly args: readonly unknown[];
}

export interface DataParallelOptions {
  /** Worker threads; default: the machine's cores (os.availableParallelism()), at most `shards`. */
  readonly workers?: number;
  /** The fixed shard count (the arithmetic); workers only distribute the shards. */
  readonly shards: number;
  readonly model: ModelFactory;
  readonly mode: Mode;
  /** Label smoothing of the cross-entropy loss the workers use. */
  readonly labelSmoothing: number;
}

export interface DataParallel<P> {
  readonly workers: number;
  readonly gradients: GradientFn<P>;
  /** Stop the workers. */
  close(): Promise<void>;
}

/** Messages to a worker. */
export type ToWorker =
  | { readonly type: 'buffers'; readonly params: SharedArrayBuffer; readonly grads: SharedArrayBuffer; readonly x: SharedArrayBuffer; readonly labels: SharedArrayBuffer }
  | { readonly type: 'step'; readonly key: readonly [number, number]; readonly xShape: readonly number[]; readonly rows: number; readonly shards: readonly { readonly s: number; readonly range: readonly [number, number] }[] };

/** Messages from a worker. */
export type FromWorker =
  | { readonly type: 'ready' }
  | { readonly type: 'done'; readonly results: readonly { readonly s: number; readonly loss: number; readonly correct: number; readonly peakBytes: number }[] }
  | { readonly type: 'error'; readonly message: string };

/**
 * A worker running parallel-worker: the compiled .js directly; from TypeScript sources (development,
 * tests) through a bootstrap that registers tsx's loader in the worker first (loader hooks are per thread,
 * and Node 20 workers do not take --import from the parent).
 */
function spawnWorker(workerData: unknown): Worker {
  const fromSource = import.meta.url.endsWith('.ts');
  const url = new URL(`./parallel-worker.${fromSource ? 'ts' : 'js'}`, import.meta.url);
  if (!fromSource) return new Worker(url, { workerData });
  const bootstrap = `import('tsx/esm/api').then((api) => { api.register(); return import(${JSON.stringify(url.href)}); });`;
  return new Worker(bootstrap, { eval: true, workerData });
}

/** Start the pool; resolves when every worker has built its model. */
export async function startDataParallel<P>(template: P, opts: DataParallelOptions): Promise<DataParallel<P>> {
  const { shards } = opts;
  if (!(Number.isSafeInteger(shards) && shards >= 1)) throw new ArgumentError('dataParallel', `shards must be a positive integer, got ${shards}`);
  const requested = opts.workers ?? availableParallelism();
  if (!(Number.isSafeInteger(requested) && requested >= 1)) throw new ArgumentError('dataParallel', `workers must be a positive integer, got ${requested}`);
  const count = Math.min(requested, shards);
  const named = flattenWithPaths(template);
  const shapes = named.map(([, t]) => [...t.shape]);
  const total = named.reduce((n, [, t]) => n + t.size, 0);
  const params = new SharedArrayBuffer(4 * total);
  const grads = new SharedArrayBuffer(4 * total * shards);
  let x = new SharedArrayBuffer(4);
  let labels = new SharedArrayBuffer(4);

  const setup = { model: opts.model, mode: opts.mode, labelSmoothing: opts.labelSmoothing, leaves: named.map(([path, t]) => ({ path, shape: [...t.shape] })) };
  const workers = Array.from({ length: count }, () => spawnWorker(setup));
  const pending = new Map<Worker, { resolve: (m: FromWorker) => void; reject: (e: Error) => void }>();
  let failure: Error | null = null;
  for (const w of workers) {
    w.on('message', (m: FromWorker) => {
      const p = pending.get(w);
      pending.delete(w);
      if (m.type === 'error') p?.reject(new BackendError(`data-parallel worker: ${m.message}`));
      else p?.resolve(m);
    });
    w.on('error', (e) => {
      failure = new BackendError(`data-parallel worker crashed: ${e instanceof Error ? e.message : String(e)}`);
      pending.get(w)?.reject(failure);
      pending.delete(w);
    });
    w.on('exit', (code) => {
      if (pending.has(w)) {
        failure = new BackendError(`data-parallel worker exited (code ${code}) during a step`);
        pending.get(w)!.reject(failure);
        pending.delete(w);
      }
    });
  }
  const ask = (w: Worker, m: ToWorker | null): Promise<FromWorker> =>
    new Promise((resolve, reject) => {
      if (failure !== null) return reject(failure);
      pending.set(w, { resolve, reject });
      if (m !== null) w.postMessage(m);
    });
  const sendBuffers = () => Promise.resolve(workers.forEach((w) => w.postMessage({ type: 'buffers', params, grads, x, labels } satisfies ToWorker)));
  try {
    await Promise.all(workers.map((w) => ask(w, null)));
  } catch (e) {
    await Promise.all(workers.map((w) => w.terminate()));
    throw e;
  }
  await sendBuffers();

  const paramView = new Float32Array(params);
  const gradView = new Float32Array(grads);
  const gradients: GradientFn<P> = async (p, batch, key) => {
    const rows = batch.labels.length;
    const ranges = shardRanges(rows, shards);
    // The step's params and batch into shared memory (the workers copy them into their own tensors).
    let at = 0;
    for (const t of leaves(p)) {
      paramView.set(await t.data(), at);
      at += t.size;
    }
    const xData = await batch.x.data();
    if (x.byteLength < 4 * xData.length || labels.byteLength < 4 * rows) {
      x = new SharedArrayBuffer(4 * Math.max(xData.length, 1));
      labels = new SharedArrayBuffer(4 * Math.max(rows, 1));
      await sendBuffers();
    }
    new Float32Array(x).set(xData);
    const lv = new Int32Array(labels);
    for (let i = 0; i < rows; i++) lv[i] = batch.labels[i];
    const replies = await Promise.all(
      workers.map((w, j) =>
        ask(w, {
          type: 'step',
          // Keys are branded pairs; the brand does not cross threads, the words do.
          key: [key[0], key[1]],
          xShape: [...batch.x.shape],
          rows,
          shards: ranges.flatMap((range, s) => (s % count === j ? [{ s, range }] : [])),
        }),
      ),
    );
    const results = replies.flatMap((r) => (r.type === 'done' ? r.results : [])).sort((a, b) => a.s - b.s);
    if (results.length !== shards) throw new BackendError(`data-parallel: ${results.length} of ${shards} shard results came back`);
    // g = ((g_0 + g_1) + g_2) + ...: float32 additions in shard order, as the in-process sum.
    const sum = gradView.slice(0, total);
    for (let s = 1; s < shards; s++) {
      const g = gradView.subarray(s * total, (s + 1) * total);
      for (let i = 0; i < total; i++) sum[i] += g[i];
    }
    let off = 0;
    const gradLeaves: Tensor[] = shapes.map((shape) => {
      const n = sizeOf(shape);
      const t = tensor(sum.subarray(off, off + n), shape);
      off += n;
      return t;
    });
    let loss = 0;
    let correct = 0;
    let peakBytes = 0;
    for (const r of results) {
      loss += r.loss;
      correct += r.correct;
      peakBytes = Math.max(peakBytes, r.peakBytes);
    }
    return { loss, correct, grads: unflattenLike(p, gradLeaves), peakBytes };
  };
  return {
    workers: count,
    gradients,
    close: async () => {
      await Promise.all(workers.map((w) => w.terminate()));
    },
  };
}
