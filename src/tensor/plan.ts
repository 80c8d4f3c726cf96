/**
 * A program of primitive ops lowered to a webgpu device plan (src/backend/webgpu-plan.ts), and replayed.
 *
 * A `Program` is flat: values (flat float32 buffers, by id) and nodes (an op's kernels, its input value
 * ids and its output value id), with the values the caller supplies per run (`inputs`: the batch),
 * the values that live on the device across runs (`state`: parameters and optimizer moments, each
 * replaced by its `next` value at the end of a run), constants, and the values read back per run
 * (`outputs`: the loss). `lowerProgram` turns it into a plan:
 *  - every op becomes its WGSL kernel where it has one (OpImpl.wgsl: elementwise maps, reductions,
 *    row ops, the tiled matmul) and its gpu.js kernel otherwise (conv, pooling, gathers, ...);
 *  - buffers are planned once: inputs, state and constants get their own; intermediate values share a
 *    pool (a buffer is reused by a value of the same size once its previous value's last reader ran);
 *  - new state is copied over old state at the end of the run, in the same command encoder.
 * `DeviceProgram.run` then uploads the inputs, submits once and reads back the outputs once.
 *
 * Programs come from the jit tracer, or from `captureProgram`, which records the ops a function
 * executes once on the host (the way CUDA graphs are captured): every tensor the function reads that
 * is neither a declared input nor state is baked in as a constant.
 */
import { getBackend, withBackend } from '../backend/backend.ts';
import { DevicePlan, type PlanStep } from '../backend/webgpu-plan.ts';
import { webgpuDevice } from '../backend/webgpu-device.ts';
import { ArgumentError, BackendError } from './errors.ts';
import { GPU_MAX_ELEMENTS, setExecuteHook, type OpImpl } from './exec.ts';
import type { Storage, Tensor } from './tensor.ts';

export interface ProgramNode {
  readonly impl: OpImpl;
  readonly inputs: readonly number[];
  readonly output: number;
}

export interface Program {
  /** Size of each value in floats, by value id. */
  readonly sizes: readonly number[];
  readonly nodes: readonly ProgramNode[];
  /** Uploaded by the caller before every run, in this order. */
  readonly inputs: readonly number[];
  /** Resident across runs; after a run, `next`'s data becomes `value`'s. */
  readonly state: readonly { readonly value: number; readonly next: number }[];
  readonly constants: readonly { readonly value: number; readonly data: Float32Array }[];
  /** Read back after every run, in this order. */
  readonly outputs: readonly number[];
  readonly label?: string;
}

export interface Lowered {
  readonly spec: { buffers: number[]; steps: PlanStep[]; reads: number[]; label?: string };
  /** The plan slot of each value (-1 for values no buffer holds: dead ones). */
  readonly slotOf: readonly number[];
  /** Nodes that run their gpu.js kernel (no WGSL form), by op name: what a WGSL kernel would replace next. */
  readonly gpujsOps: ReadonlyMap<string, number>;
}

/** Plan the buffers and pick each node's kernel. */
export function lowerProgram(p: Program, maxThreads: number): Lowered {
  const label = p.label ?? 'program';
  const n = p.sizes.length;
  const check = (v: number, what: string) => {
    if (!Number.isInteger(v) || v < 0 || v >= n) throw new ArgumentError('lowerProgram', `${label}: ${what} is value ${v}, but the program has ${n} values`);
  };
  const END = Number.POSITIVE_INFINITY;
  const lastUse = new Array<number>(n).fill(-1);
  const produced = new Array<boolean>(n).fill(false);
  p.nodes.forEach((node, i) => {
    node.inputs.forEach((v) => {
      check(v, `an input of node ${i} (${node.impl.name ?? 'op'})`);
      lastUse[v] = i;
    });
    check(node.output, `the output of node ${i}`);
    if (produced[node.output]) throw new ArgumentError('lowerProgram', `${label}: value ${node.output} is produced twice`);
    produced[node.output] = true;
  });
  const pinned = new Set<number>();
  const persistent = new Set<number>([...p.inputs, ...p.state.map((s) => s.value), ...p.constants.map((c) => c.value)]);
  for (const v of persistent) {
    check(v, 'an input, state or constant');
    if (produced[v]) throw new ArgumentError('lowerProgram', `${label}: value ${v} is an input, state or constant but a node produces it`);
  }
  for (const v of [...p.outputs, ...p.state.map((s) => s.next)]) {
    check(v, 'an output or next state');
    pinned.add(v);
    lastUse[v] = END;
  }
  const buffers: number[] = [];
  const slotOf = new Array<number>(n).fill(-1);
  const newSlot = (size: number) => buffers.push(size) - 1;
  for (const v of persistent) slotOf[v] = newSlot(p.sizes[v]);
  // Values a node produces and the run reads at the end (outputs, next state) get their own buffers, so
  // a read copies exactly the value; the others share a pool by size.
  const free = new Map<number, number[]>();
  const take = (size: number) => free.get(size)?.pop() ?? newSlot(size);
  const steps: PlanStep[] = [];
  const gpujsOps = new Map<string, number>();
  const ctx = { maxThreads };
  p.nodes.forEach((node, i) => {
    const out = node.output;
    slotOf[out] = pinned.has(out) ? newSlot(p.sizes[out]) : take(p.sizes[out]);
    const inputs = node.inputs.map((v) => {
      if (slotOf[v] < 0) throw new ArgumentError('lowerProgram', `${label}: node ${i} (${node.impl.name ?? 'op'}) reads value ${v} before any node produces it`);
      return slotOf[v];
    });
    if (p.sizes[out] > 0) {
      if (node.impl.wgsl !== undefined) {
        steps.push({ kind: 'wgsl', kernel: node.impl.wgsl({ ...ctx, outSize: p.sizes[out] }), inputs, outputs: [slotOf[out]] });
      } else {
        const name = node.impl.name ?? node.impl.kernel(true).key.split('|')[0];
        const largest = Math.max(p.sizes[out], ...node.inputs.map((v) => p.sizes[v]));
        if (largest > GPU_MAX_ELEMENTS) {
          throw new BackendError(`${label}: op '${name}' (node ${i}) has no WGSL kernel, and its gpu.js kernel indexes a tensor of ${largest} elements, over the ${GPU_MAX_ELEMENTS} that float32 index math addresses exactly; use a smaller batch`);
        }
        gpujsOps.set(name, (gpujsOps.get(name) ?? 0) + 1);
        steps.push({ kind: 'gpujs', kernel: { name, source: node.impl.kernel(true).source, outSize: p.sizes[out], inputSizes: node.inputs.map((v) => p.sizes[v]) }, inputs, output: slotOf[out] });
      }
    }
    // Inputs whose last reader this was go back to the pool (after the output took its buffer: a
    // dispatch must not read and write one buffer).
    for (const v of new Set(node.inputs)) {
      if (lastUse[v] === i && !persistent.has(v) && !pinned.has(v)) {
        const size = p.sizes[v];
        free.set(size, [...(free.get(size) ?? []), slotOf[v]]);
      }
    }
    if (lastUse[out] === -1 && !pinned.has(out)) free.set(p.sizes[out], [...(free.get(p.sizes[out]) ?? []), slotOf[out]]);
  });
  for (const s of p.state) {
    check(s.value, 'a state value');
    if (s.next !== s.value) steps.push({ kind: 'copy', from: slotOf[s.next], to: slotOf[s.value], floats: p.sizes[s.value] });
  }
  return { spec: { buffers, steps, reads: p.outputs.map((v) => slotOf[v]), label }, slotOf, gpujsOps };
}

/** A program compiled for the webgpu device: state resident, one submission and one readback per run. */
export class DeviceProgram {
  private constructor(
    readonly program: Program,
    private readonly plan: DevicePlan,
    private readonly lowered: Lowered,
  ) {}

  /** Lower `program`, compile its plan and upload its constants and the initial state. */
  static async compile(program: Program, initialState: readonly Float32Array[]): Promise<DeviceProgram> {
    if (initialState.length !== program.state.length) {
      throw new ArgumentError('DeviceProgram', `${program.state.length} state values, ${initialState.length} initial arrays`);
    }
    const { device } = await webgpuDevice();
    const lowered = lowerProgram(program, device.limits.maxComputeInvocationsPerWorkgroup ?? 256);
    const plan = await DevicePlan.compile(lowered.spec);
    const dp = new DeviceProgram(program, plan, lowered);
    for (const c of program.constants) plan.write(lowered.slotOf[c.value], c.data);
    program.state.forEach((s, i) => plan.write(lowered.slotOf[s.value], initialState[i]));
    return dp;
  }

  /** Upload the inputs, run every step in one submission, and read the outputs back (one readback). */
  run(inputs: readonly Float32Array[]): Promise<Float32Array[]> {
    if (inputs.length !== this.program.inputs.length) {
      throw new ArgumentError('DeviceProgram.run', `expected ${this.program.inputs.length} inputs, got ${inputs.length}`);
    }
    this.program.inputs.forEach((v, i) => this.plan.write(this.lowered.slotOf[v], inputs[i]));
    return this.plan.run();
  }

  /** The current data of state value `i` (a readback of its own: for checkpoints, not per step). */
  readState(i: number): Promise<Float32Array> {
    const s = this.program.state[i];
    if (s === undefined) throw new ArgumentError('DeviceProgram.readState', `no state value ${i} (the program has ${this.program.state.length})`);
    return this.plan.read(this.lowered.slotOf[s.value]);
  }

  /** Replace state value `i` (e.g. loading a checkpoint). */
  writeState(i: number, data: Float32Array): void {
    const s = this.program.state[i];
    if (s === undefined) throw new ArgumentError('DeviceProgram.writeState', `no state value ${i} (the program has ${this.program.state.length})`);
    this.plan.write(this.lowered.slotOf[s.value], data);
  }

  get dispatches(): number {
    return this.plan.dispatches;
  }

  get deviceBytes(): number {
    return this.plan.deviceBytes;
  }

  /** Ops running their gpu.js kernel rather than a WGSL one, with counts. */
  get gpujsOps(): ReadonlyMap<string, number> {
    return this.lowered.gpujsOps;
  }

  destroy(): void {
    this.plan.destroy();
  }
}

// ---------------------------------------------------------------------------------------------
// Capture

export interface Captured {
  readonly program: Program;
  /** What `fn` returned on the capture run (host data; empty when captured abstractly). */
  readonly outputs: readonly Tensor[];
  readonly state: readonly Tensor[];
}

/**
 * Record the ops `fn` executes on `inputs` and `state` (once, on the host backend) as a program.
 * `fn` returns the tensors to read back per run and the next state (one per state tensor, same sizes).
 * Anything else `fn` reads (scalars it creates, tensors it closes over) is baked in as a constant, so
 * `fn` must compute the same ops and constants on every call: pass what changes as an input.
 */
export interface CaptureOptions {
  readonly label?: string;
  /**
   * Record without computing (default false): every op's result is shaped but empty, so capturing a
   * large model costs no arithmetic; `fn` must not read computed data on the host.
   */
  readonly abstract?: boolean;
}

export function captureProgram(
  fn: (inputs: readonly Tensor[], state: readonly Tensor[]) => { outputs: readonly Tensor[]; state: readonly Tensor[] },
  inputs: readonly Tensor[],
  state: readonly Tensor[],
  options: CaptureOptions = {},
): Captured {
  const label = options.label ?? 'captured';
  const backend = getBackend() === 'cpu' ? 'cpu' : 'webasm';
  const ids = new Map<Storage, number>();
  const sizes: number[] = [];
  const constants: { value: number; data: Float32Array }[] = [];
  const nodes: ProgramNode[] = [];
  const idOf = (t: Tensor, fresh: boolean): number => {
    let id = ids.get(t.storage);
    if (id === undefined) {
      id = sizes.push(t.storage.bytes / 4) - 1;
      ids.set(t.storage, id);
      if (!fresh) {
        const host = t.storage.host;
        if (host === null) throw new BackendError(`captureProgram: ${label} reads a tensor whose data is still on the device; capture on a host backend (webasm) or await it first`);
        constants.push({ value: id, data: host.slice(0, sizes[id]) });
      }
    }
    return id;
  };
  const declared = (ts: readonly Tensor[], what: string) =>
    ts.map((t, i) => {
      if (ids.has(t.storage)) throw new ArgumentError('captureProgram', `${label}: ${what} ${i} shares its buffer with an earlier input or state tensor`);
      return idOf(t, true);
    });
  const inputIds = declared(inputs, 'input');
  const stateIds = declared(state, 'state');
  const record = (impl: OpImpl, ins: readonly Tensor[], out: Tensor) => {
    const inIds = ins.map((t) => idOf(t, false));
    if (ids.has(out.storage)) return; // a result aliasing an input (a no-op view): nothing runs
    nodes.push({ impl, inputs: inIds, output: idOf(out, true) });
  };
  const previous = setExecuteHook({ record, abstract: options.abstract === true });
  let result: { outputs: readonly Tensor[]; state: readonly Tensor[] };
  try {
    result = withBackend(backend, () => fn(inputs, state));
  } finally {
    setExecuteHook(previous);
  }
  if (result.state.length !== state.length) {
    throw new ArgumentError('captureProgram', `${label}: fn returned ${result.state.length} state tensors for ${state.length}`);
  }
  const nextIds = result.state.map((t, i) => {
    if (t.size !== state[i].size) throw new ArgumentError('captureProgram', `${label}: next state ${i} has ${t.size} values, the state has ${state[i].size}`);
    return idOf(t, false);
  });
  const program: Program = {
    sizes,
    nodes,
    inputs: inputIds,
    state: stateIds.map((value, i) => ({ value, next: nextIds[i] })),
    constants,
    outputs: result.outputs.map((t) => idOf(t, false)),
    label,
  };
  return { program, outputs: result.outputs, state: result.state };
}
