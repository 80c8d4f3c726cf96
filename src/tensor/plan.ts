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
 * Programs come from the jit tracer (`programFromTrace`: src/tensor/trace.ts's programs, views folded
 * into the buffers they view, each equation's kernels from its primitive).
 */
import { DevicePlan, type PlanStep } from '../backend/webgpu-plan.ts';
import { webgpuDevice } from '../backend/webgpu-device.ts';
import { ArgumentError, BackendError } from './errors.ts';
import { GPU_MAX_ELEMENTS, type OpImpl } from './exec.ts';
import type { Program as TracedProgram } from './trace.ts';

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
        const kernel = node.impl.kernel;
        if (kernel === undefined) {
          throw new BackendError(`${label}: op '${node.impl.name ?? 'op'}' (node ${i}) runs on the host only (it has neither a WGSL nor a gpu.js kernel), so it cannot be part of a device plan`);
        }
        const spec = kernel(true);
        const name = node.impl.name ?? spec.key.split('|')[0];
        const largest = Math.max(p.sizes[out], ...node.inputs.map((v) => p.sizes[v]));
        if (largest > GPU_MAX_ELEMENTS) {
          throw new BackendError(`${label}: op '${name}' (node ${i}) has no WGSL kernel, and its gpu.js kernel indexes a tensor of ${largest} elements, over the ${GPU_MAX_ELEMENTS} that float32 index math addresses exactly; use a smaller batch`);
        }
        gpujsOps.set(name, (gpujsOps.get(name) ?? 0) + 1);
        steps.push({ kind: 'gpujs', kernel: { name, source: spec.source, outSize: p.sizes[out], inputSizes: node.inputs.map((v) => p.sizes[v]) }, inputs, output: slotOf[out] });
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

  /**
   * Upload the inputs, run every step in one submission, and read the outputs back (one readback; none
   * with `read: false`, see `readOutput`). An input given as `{ output: k }` is output k of the previous
   * run, copied on the device.
   */
  run(inputs: readonly (Float32Array | { readonly output: number })[], options: { read?: boolean } = {}): Promise<Float32Array[]> {
    if (inputs.length !== this.program.inputs.length) {
      throw new ArgumentError('DeviceProgram.run', `expected ${this.program.inputs.length} inputs, got ${inputs.length}`);
    }
    const before: { from: number; to: number; floats: number }[] = [];
    this.program.inputs.forEach((v, i) => {
      const x = inputs[i];
      if (x instanceof Float32Array) this.plan.write(this.lowered.slotOf[v], x);
      else before.push({ from: this.lowered.slotOf[this.program.outputs[x.output]], to: this.lowered.slotOf[v], floats: this.program.sizes[v] });
    });
    return this.plan.run({ before, read: options.read });
  }

  /** Output k of the last run (a readback of its own). */
  readOutput(k: number): Promise<Float32Array> {
    const v = this.program.outputs[k];
    if (v === undefined) throw new ArgumentError('DeviceProgram.readOutput', `no output ${k} (the program has ${this.program.outputs.length})`);
    return this.plan.read(this.lowered.slotOf[v]);
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
// From the jit's traced programs

export interface FromTraceOptions {
  /** Program inputs that are state, each with the program output that replaces it after a run. */
  readonly state?: readonly { readonly input: number; readonly output: number }[];
  /** Program outputs read back per run (default: every output that is not next state). */
  readonly reads?: readonly number[];
  readonly label?: string;
}

/**
 * A traced program (src/tensor/trace.ts) as a plan program: views share the buffer they view, every
 * other equation runs its primitive's kernels, the constants' data is read (awaited: they may be on a
 * device). Returns the program and the positions of its per-run inputs among the traced inputs.
 */
export async function programFromTrace(t: TracedProgram, options: FromTraceOptions = {}): Promise<{ program: Program; runInputs: number[] }> {
  const alias = Array.from(t.sizes, (_, i) => i);
  const nodes: ProgramNode[] = [];
  for (const e of t.eqns) {
    const inputs = e.inputs.map((id) => alias[id]);
    if (e.prim.view === true) alias[e.output] = inputs[0];
    else nodes.push({ impl: e.prim.impl(e.inShapes, e.attrs as never, e.shape), inputs, output: e.output });
  }
  const state = options.state ?? [];
  const stateInputs = new Set(state.map((s) => s.input));
  const stateOutputs = new Set(state.map((s) => s.output));
  const runInputs = t.inputs.map((_, i) => i).filter((i) => !stateInputs.has(i));
  const reads = options.reads ?? t.outputs.map((_, i) => i).filter((i) => !stateOutputs.has(i));
  const constants = await Promise.all(t.consts.map(async (c) => ({ value: c.id, data: (await c.tensor.data()).slice(0, t.sizes[c.id]) })));
  return {
    program: {
      sizes: t.sizes,
      nodes,
      inputs: runInputs.map((i) => t.inputs[i]),
      state: state.map((s) => ({ value: t.inputs[s.input], next: alias[t.outputs[s.output].id] })),
      constants,
      outputs: reads.map((k) => alias[t.outputs[k].id]),
      label: options.label,
    },
    runInputs,
  };
}
