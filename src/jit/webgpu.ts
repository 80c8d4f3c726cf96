/**
 * The webgpu lowering of jit: the traced program compiled once into a device plan (src/tensor/plan.ts,
 * src/backend/webgpu-plan.ts) and replayed with one command encoder and one submission per call. WGSL
 * kernels where the op has one (maps, reductions, row ops, the tiled matmul, convolutions), its gpu.js
 * kernel otherwise; buffers planned once and reused by every call.
 *
 * Results are device tensors: nothing is read back until someone reads them. What keeps a training
 * loop's state on the device is passing results back in, as `params = step(params, batch)` does:
 *  - a result of the previous call passed as an argument is copied on the device into the input's
 *    buffer (no transfer), and is then *donated*: the next call reuses its buffer, so reading that
 *    tensor afterwards raises a BackendError (read it before the call, or pass a copy);
 *  - the previous call's results that are not passed back (the loss, metrics) are read back before the
 *    next call overwrites them (one readback each), so they stay readable.
 * So a step that returns (loss, params, state) and is fed its own params and state makes one submission
 * for the step and one readback (plus its submission) for the loss.
 *
 * The first call compiles (pipelines, buffers, constants uploaded) before it runs; every call's results
 * arrive asynchronously (`await t.data()`), as on the eager webgpu backend.
 */
import { BackendError } from '../tensor/errors.ts';
import { DeviceProgram, programFromTrace } from '../tensor/plan.ts';
import { fromBuffer, type DeviceHandle, type Storage, type Tensor } from '../tensor/tensor.ts';
import type { Program } from '../tensor/trace.ts';
import type { Executable } from './executable.ts';

interface Issued {
  readonly generation: number;
  readonly output: number;
  /** Set when a later call took this result as an input (its buffer is reused). */
  donated: boolean;
  /** Its readback, once asked for (by a reader, or by the next call before it overwrites the buffer). */
  read: Promise<Float32Array> | null;
  /** Whether anyone still holds the tensor (a result nobody holds needs no readback). */
  readonly held: WeakRef<Storage>;
}

export function lowerWebGPU(program: Program): Executable {
  let compiled: Promise<DeviceProgram> | null = null;
  let generation = 0;
  /** Results of the last call, by storage. */
  let issued = new WeakMap<Storage, Issued>();
  let lastResults: Issued[] = [];
  let chain: Promise<unknown> = Promise.resolve();

  const compile = async (): Promise<DeviceProgram> => {
    const { program: planned } = await programFromTrace(program, { label: 'jit' });
    return DeviceProgram.compile(planned, []);
  };

  return {
    kind: 'webgpu',
    run(inputs: readonly Tensor[]): Tensor[] {
      compiled ??= compile();
      const gen = ++generation;
      // Inputs that are results of the previous call stay on the device; the others are uploaded.
      const args = inputs.map((t) => {
        const r = issued.get(t.storage);
        if (r !== undefined && r.generation === gen - 1) {
          r.donated = true;
          return { output: r.output };
        }
        return t;
      });
      const previous = lastResults;
      const ran = chain.then(async () => {
        const dp = await compiled!;
        const data = await Promise.all(args.map((a) => ('output' in a ? a : (a as Tensor).data())));
        // The previous call's results that are not passed back (and still held) are read before this
        // call overwrites their buffers: their copies are submitted first, so they see the old data.
        for (const r of previous) {
          if (!r.donated && r.read === null && r.held.deref() !== undefined) r.read = dp.readOutput(r.output);
        }
        await dp.run(data, { read: false });
        return dp;
      });
      chain = ran.catch(() => undefined);
      const next = new WeakMap<Storage, Issued>();
      const records: Issued[] = [];
      const results = program.outputs.map((o, k) => {
        let resolveHandle!: (h: DeviceHandle) => void;
        let rejectHandle!: (e: unknown) => void;
        const t = fromBuffer({ device: new Promise<DeviceHandle>((res, rej) => ((resolveHandle = res), (rejectHandle = rej))) }, o.shape);
        const record: Issued = { generation: gen, output: k, donated: false, read: null, held: new WeakRef(t.storage) };
        void ran.then(
          (dp) =>
            resolveHandle({
              toArray: () => {
                if (record.read !== null) return record.read;
                if (record.donated) {
                  return Promise.reject(new BackendError(`jit (webgpu): result ${k} [${o.shape.join(', ')}] was passed back into the jitted function, which reused its device buffer; read it before that call, or pass a copy`));
                }
                return (record.read = dp.readOutput(k));
              },
              delete: () => undefined,
            }),
          (e: unknown) => rejectHandle(e),
        );
        next.set(t.storage, record);
        records.push(record);
        return t;
      });
      issued = next;
      lastResults = records;
      return results;
    },
  };
}
