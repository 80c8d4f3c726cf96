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
 * Key derivation and sampling (dropout masks) run on the host from the call's keys and are uploaded
 * with the inputs, so a new key draws new masks (the same bits as eager mode on every backend). A key a
 * jitted function returns is not available on webgpu (jit reads returned keys synchronously).
 *
 * The first call compiles (pipelines, buffers, constants uploaded) before it runs; every call's results
 * arrive asynchronously (`await t.data()`), as on the eager webgpu backend.
 */
import { webgpuDevice } from '../backend/webgpu-device.ts';
import type { FusedGroup } from '../backend/wgsl-kernels.ts';
import { BackendError } from '../tensor/errors.ts';
import { DeviceProgram, type Program as PlanProgram, type ProgramNode } from '../tensor/plan.ts';
import { withBackend } from '../backend/backend.ts';
import { evalEager } from '../tensor/primitive.ts';
import { fromBuffer, type DeviceHandle, type Storage, type Tensor } from '../tensor/tensor.ts';
import type { Eqn, Program } from '../tensor/trace.ts';
import { groupElementwise, groupNodes } from './cpu.ts';
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
  let compiled: Promise<{ dp: DeviceProgram; host: HostPrefix }> | null = null;
  let generation = 0;
  /** Results of the last call, by storage. */
  let issued = new WeakMap<Storage, Issued>();
  let lastResults: Issued[] = [];
  let chain: Promise<unknown> = Promise.resolve();

  const compile = async () => {
    const { program: planned, host } = await programFromTrace(program, { label: 'jit' });
    return { dp: await DeviceProgram.compile(planned, []), host };
  };

  return {
    kind: 'webgpu',
    // Device memory is the plan's business; the host accounting does not see it.
    peakBytes: null,
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
        const { dp, host } = await compiled!;
        const data = await Promise.all(args.map((a) => ('output' in a ? a : (a as Tensor).data())));
        // Keys and the random draws made from them: on the host, uploaded with the inputs.
        const known = new Map<number, Float32Array>();
        data.forEach((d, i) => d instanceof Float32Array && known.set(program.inputs[i], d));
        const drawn = host.compute(known);
        // The previous call's results that are not passed back (and still held) are read before this
        // call overwrites their buffers: their copies are submitted first, so they see the old data.
        for (const r of previous) {
          if (!r.donated && r.read === null && r.held.deref() !== undefined) r.read = dp.readOutput(r.output);
        }
        await dp.run([...data, ...drawn], { read: false });
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

// ---------------------------------------------------------------------------------------------
// Traced programs as plan programs

export interface FromTraceOptions {
  /** Program inputs that are state, each with the program output that replaces it after a run. */
  readonly state?: readonly { readonly input: number; readonly output: number }[];
  /** Program outputs read back per run (default: every output that is not next state). */
  readonly reads?: readonly number[];
  readonly label?: string;
  /** Fuse elementwise chains into one kernel (default true; false: one kernel per equation, for tests). */
  readonly fuse?: boolean;
  /** Storage buffers one kernel may bind (default: the device's maxStorageBuffersPerShaderStage, at most 16). */
  readonly maxBindings?: number;
}

/**
 * A traced program (src/tensor/trace.ts) as a plan program (src/tensor/plan.ts): views share the buffer
 * they view; chains of elementwise equations over one shape become one WGSL kernel (the jit's grouping,
 * src/jit/cpu.ts `groupElementwise`, and its FusedGroup description), storing only the values read
 * outside the chain; every other equation runs its primitive's kernels. Constants are read (awaited:
 * they may be on a device); single-value constants inside a chain become literals.
 */
export async function programFromTrace(t: Program, options: FromTraceOptions = {}): Promise<{ program: PlanProgram; runInputs: number[]; host: HostPrefix }> {
  const n = t.sizes.length;
  const root = Int32Array.from({ length: n }, (_, i) => i);
  for (const e of t.eqns) if (e.prim.view === true) root[e.output] = root[e.inputs[0]];
  const constData = new Map<number, Float32Array>();
  await Promise.all(t.consts.map(async (c) => constData.set(c.id, (await c.tensor.data()).slice(0, t.sizes[c.id]))));
  const state = options.state ?? [];
  const stateInputs = new Set(state.map((s) => s.input));
  const stateOutputs = new Set(state.map((s) => s.output));
  const runInputs = t.inputs.map((_, i) => i).filter((i) => !stateInputs.has(i));
  const host = hostPrefix(t, root, new Set(runInputs.map((i) => t.inputs[i])), constData);
  const reads = options.reads ?? t.outputs.map((_, i) => i).filter((i) => !stateOutputs.has(i));
  const outputRoots = new Set([...reads.map((k) => root[t.outputs[k].id]), ...state.map((s) => root[t.outputs[s.output].id])]);

  const producer = new Int32Array(n).fill(-1);
  t.eqns.forEach((e, i) => (producer[e.output] = i));
  const { groups, groupOf } = options.fuse === false ? { groups: [], groupOf: new Int32Array(t.eqns.length).fill(-1) } : groupElementwise(t, producer, { sums: false });
  // Who reads each buffer (by equation).
  const readers = new Map<number, Set<number>>();
  t.eqns.forEach((e, i) => {
    if (e.prim.view === true || host.isHost(i)) return;
    for (const id of e.inputs) {
      const r = root[id];
      if (!readers.has(r)) readers.set(r, new Set());
      readers.get(r)!.add(i);
    }
  });
  const maxBindings = options.maxBindings ?? Math.min((await webgpuDevice()).device.limits.maxStorageBuffersPerShaderStage ?? 8, 16);

  const single = (i: number): ProgramNode => {
    const e = t.eqns[i];
    return { impl: e.prim.impl(e.inShapes, e.attrs as never, e.shape), inputs: e.inputs.map((id) => root[id]), output: e.output };
  };
  // Members of one kernel: it stores the values read outside it (or returned).
  const fuse = (shape: readonly number[], members: readonly number[]) => {
    const inside = new Set(members);
    return fuseGroup(t, shape, members, root, constData, (id) => outputRoots.has(root[id]) || [...(readers.get(root[id]) ?? [])].some((r) => !inside.has(r)));
  };
  const emit = (members: readonly number[], fused: ReturnType<typeof fuse>) => {
    const names = [...new Set(members.map((m) => t.eqns[m].prim.name))];
    const name = members.length === 1 ? names[0] : `fused ${members.length} (${names.slice(0, 4).join(', ')}${names.length > 4 ? ', ...' : ''})`;
    nodes.push({ fused: fused.group, name, inputs: fused.inputs, outputs: fused.outputs });
  };
  const nodes: ProgramNode[] = [];
  t.eqns.forEach((e, i) => {
    if (e.prim.view === true || host.isHost(i)) return;
    const g = groupOf[i];
    if (g < 0) {
      nodes.push(single(i));
      return;
    }
    const { members, shape } = groups[g];
    if (members[members.length - 1] !== i) return; // a group runs at the place of its last member
    // One kernel binds at most maxBindings buffers: a larger group runs as consecutive kernels.
    let chunk: number[] = [];
    let fused: ReturnType<typeof fuse> | null = null;
    for (const m of members) {
      const trial = fuse(shape, [...chunk, m]);
      if (chunk.length > 0 && trial.inputs.length + trial.outputs.length > maxBindings) {
        emit(chunk, fused!);
        chunk = [m];
        fused = fuse(shape, chunk);
      } else {
        chunk.push(m);
        fused = trial;
      }
    }
    emit(chunk, fused!);
  });
  return {
    program: {
      sizes: t.sizes,
      nodes,
      // The host prefix's results are inputs like the caller's, uploaded after them.
      inputs: [...runInputs.map((i) => t.inputs[i]), ...host.outputs],
      state: state.map((s) => ({ value: t.inputs[s.input], next: root[t.outputs[s.output].id] })),
      constants: [...constData].map(([value, data]) => ({ value, data })),
      outputs: reads.map((k) => root[t.outputs[k].id]),
      label: options.label,
    },
    runInputs,
    host,
  };
}

/**
 * The equations that run on the host by design (key derivation and random sampling: the same Threefry
 * bits on every backend; they have no kernel), computed before each run from the caller's inputs and
 * uploaded, so a new key draws new masks on the device too. They may read only what the host has: the
 * run's inputs, constants and each other's results.
 */
export interface HostPrefix {
  readonly isHost: (eqn: number) => boolean;
  /** The values the device reads from the prefix (appended to the plan's inputs, in this order). */
  readonly outputs: readonly number[];
  /** Compute them from the run inputs' data (by traced value id). */
  compute(inputs: ReadonlyMap<number, Float32Array>): Float32Array[];
}

function hostPrefix(t: Program, root: Int32Array, runInputValues: ReadonlySet<number>, constData: ReadonlyMap<number, Float32Array>): HostPrefix {
  const onHost = t.eqns.map((e) => {
    if (e.prim.view === true) return false;
    const impl = e.prim.impl(e.inShapes, e.attrs as never, e.shape);
    return impl.kernel === undefined && impl.wgsl === undefined;
  });
  const available = new Set<number>([...runInputValues, ...constData.keys()]);
  const eqns: Eqn[] = [];
  t.eqns.forEach((e, i) => {
    if (!onHost[i]) return;
    const missing = e.inputs.find((id) => !available.has(root[id]));
    if (missing !== undefined) {
      throw new BackendError(`jit (webgpu): '${e.prim.name}' runs on the host, but it reads value ${missing}, which is computed on the device (state, or another op's result); pass keys and the values random draws depend on as inputs`);
    }
    available.add(e.output);
    eqns.push(e);
  });
  const hostValues = new Set(eqns.map((e) => e.output));
  const deviceReads = new Set<number>();
  t.eqns.forEach((e, i) => {
    if (onHost[i] || e.prim.view === true) return;
    for (const id of e.inputs) if (hostValues.has(root[id])) deviceReads.add(root[id]);
  });
  for (const o of t.outputs) if (hostValues.has(root[o.id])) deviceReads.add(root[o.id]);
  const outputs = [...deviceReads];
  return {
    isHost: (i) => onHost[i],
    outputs,
    compute(inputs) {
      if (eqns.length === 0) return [];
      const env = new Map<number, Tensor>();
      const value = (id: number, shape: readonly number[]): Tensor => {
        const r = root[id];
        const have = env.get(r);
        if (have !== undefined) return have;
        const data = inputs.get(r) ?? constData.get(r);
        if (data === undefined) throw new BackendError(`jit (webgpu): the host prefix has no data for value ${r}`);
        const tensor = fromBuffer(data, shape);
        env.set(r, tensor);
        return tensor;
      };
      withBackend('webasm', () => {
        for (const e of eqns) env.set(e.output, evalEager(e.prim, e.inputs.map((id, k) => value(id, e.inShapes[k])), e.attrs, e.shape));
      });
      return outputs.map((id) => {
        const data = env.get(id)!.storage.peek();
        if (data instanceof Promise) throw new BackendError('jit (webgpu): a host-prefix value is pending');
        return data.slice(0, t.sizes[id]);
      });
    },
  };
}

/** One group's FusedGroup, with the buffers (roots) it reads and the member values it stores. */
function fuseGroup(
  t: Program,
  shape: readonly number[],
  members: readonly number[],
  root: Int32Array,
  constData: ReadonlyMap<number, Float32Array>,
  stored: (id: number) => boolean,
): { group: FusedGroup; inputs: number[]; outputs: number[] } {
  const { nodes, reads, inputs, nodeOfValue, nodeOf } = groupNodes(shape, root, (r) => {
    const c = constData.get(r);
    return c !== undefined && c.length === 1 ? c[0] : undefined;
  });
  for (const m of members) {
    const e = t.eqns[m];
    const args = e.inputs.map((id, k) => nodeOf(id, e.inShapes[k]));
    nodes.push({ op: e.prim.name, args, expr: e.prim.elementwise!.expr(e.attrs as never) });
    nodeOfValue.set(e.output, nodes.length - 1);
  }
  const outputs = members.map((m) => t.eqns[m].output).filter(stored);
  return { group: { shape, reads, nodes, outputs: outputs.map((id) => nodeOfValue.get(id)!) }, inputs, outputs };
}
