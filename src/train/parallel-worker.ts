/**
 * A data-parallel worker (src/train/parallel.ts): builds the model from its factory, then per step reads
 * the params and the batch from shared memory, computes the gradient of each shard it is given with
 * shards.ts's shardGradients (the code the in-process path runs) and writes it into the shard's slot.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { brandKey } from '../random/traced.ts';
import { tensor, type Tensor } from '../tensor/tensor.ts';
import { fromNamed } from '../autodiff/pytree.ts';
import { ArgumentError, InternalError } from '../tensor/errors.ts';
import { crossEntropy } from './loss.ts';
import type { TrainableModel } from './loop.ts';
import type { FromWorker, ModelFactory, ToWorker } from './parallel.ts';
import { shardGradients, type ShardSpec } from './shards.ts';
import type { Mode } from '../reversible/index.ts';
import { sizeOf } from '../tensor/shape.ts';

interface Setup {
  readonly model: ModelFactory;
  readonly mode: Mode;
  readonly labelSmoothing: number;
  /** The params' leaves: path (flattenWithPaths) and shape, in the order of the shared buffers. */
  readonly leaves: readonly { readonly path: string; readonly shape: readonly number[] }[];
}

const port = parentPort!;
const setup = workerData as Setup;
const reply = (m: FromWorker) => port.postMessage(m);
const describe = (e: unknown) => (e instanceof Error ? `${e.name}: ${e.message}` : String(e));

async function main(): Promise<void> {
  const factory = (await import(setup.model.module))[setup.model.exportName] as (...args: unknown[]) => TrainableModel<unknown>;
  if (typeof factory !== 'function') throw new ArgumentError('dataParallel', `${setup.model.module} has no function export '${setup.model.exportName}'`);
  const model = factory(...setup.model.args);
  const spec: ShardSpec = { mode: setup.mode, loss: (out, labels) => crossEntropy(out, labels, setup.labelSmoothing) };
  const sizes = setup.leaves.map((l) => sizeOf(l.shape));
  const offsets = new Map<string, number>();
  let total = 0;
  setup.leaves.forEach((l, i) => {
    offsets.set(l.path, total);
    total += sizes[i];
  });
  let buffers: Extract<ToWorker, { type: 'buffers' }> | null = null;
  port.on('message', (m: ToWorker) => {
    if (m.type === 'buffers') {
      buffers = m;
      return;
    }
    step(m).then(reply, (e: unknown) => reply({ type: 'error', message: describe(e) }));
  });
  const step = async (m: Extract<ToWorker, { type: 'step' }>): Promise<FromWorker> => {
    if (buffers === null) throw new InternalError('dataParallel worker', 'a step arrived before the shared buffers');
    // The params tree rebuilt from the leaves' paths (fromNamed: `layers.3` indexes a list).
    const flat = new Float32Array(buffers.params);
    const named = new Map<string, Tensor>();
    setup.leaves.forEach((l, i) => {
      const at = offsets.get(l.path)!;
      named.set(l.path, tensor(flat.slice(at, at + sizes[i]), [...l.shape]));
    });
    const params = fromNamed(named);
    const xCount = sizeOf(m.xShape);
    const x = tensor(new Float32Array(buffers.x, 0, xCount).slice(), [...m.xShape]);
    const labels = Array.from(new Int32Array(buffers.labels, 0, m.rows));
    const grads = new Float32Array(buffers.grads);
    const key = brandKey([m.key[0], m.key[1]]);
    const results = [];
    for (const { s, range } of m.shards) {
      const r = await shardGradients(model, spec, params, x, labels, key, s, range, m.rows);
      for (const [path, g] of r.grads) {
        const at = offsets.get(path);
        if (at === undefined) throw new InternalError('dataParallel worker', `the model produced a gradient for '${path}', which is not a parameter`);
        grads.set(await g.data(), s * total + at);
      }
      results.push({ s, loss: r.loss, correct: r.correct, peakBytes: r.peakBytes });
    }
    return { type: 'done', results };
  };
  reply({ type: 'ready' });
}

main().catch((e: unknown) => reply({ type: 'error', message: describe(e) }));
