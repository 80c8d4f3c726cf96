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
 *    pool (a buffer is reused, by a value at most as large and at least half its size, once its previous
 *    value's last reader ran);
 *  - new state is copied over old state at the end of the run, in the same command encoder.
 * `DeviceProgram.run` then uploads the inputs, submits once and reads back the outputs once.
 *
 * Programs come from the jit tracer (src/jit/webgpu.ts `programFromTrace`: views folded into the
 * buffers they view, elementwise chains fused into one kernel, other equations run their primitive's
 * kernels).
 */
import { DevicePlan, type PlanStep } from '../backend/webgpu-plan.ts';
import { webgpuDevice } from '../backend/webgpu-device.ts';
import { ArgumentError, BackendError } from './errors.ts';
import { GPU_MAX_ELEMENTS, type OpImpl } from './exec.ts';
import type { WgslKernel } from '../backend/wgsl-kernels.ts';

/** An op (its kernels from its `OpImpl`), or a fused group given as one WGSL kernel with several outputs. */
export type ProgramNode =
  | { readonly impl: OpImpl; readonly inputs: readonly number[]; readonly output: number }
  | { readonly fused: WgslKernel; readonly inputs: readonly number[]; readonly outputs: readonly number[] };

const nodeOutputs = (n: ProgramNode): readonly number[] => ('fused' in n ? n.outputs : [n.output]);
const nodeName = (n: ProgramNode): string => ('fused' in n ? n.fused.name : n.impl.name ?? 'op');

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
      check(v, `an input of node ${i} (${nodeName(node)})`);
      lastUse[v] = i;
    });
    for (const o of nodeOutputs(node)) {
      check(o, `an output of node ${i}`);
      if (produced[o]) throw new ArgumentError('lowerProgram', `${label}: value ${o} is produced twice`);
      produced[o] = true;
    }
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
  // a read copies exactly the value; the others share a pool.
  // Free pooled buffers; a value takes the smallest that holds it, unless that is over twice its size
  // (kernels index by the value's size, so a larger buffer is fine; a much larger one is waste).
  const free: number[] = [];
  const take = (size: number): number => {
    let best = -1;
    for (let j = 0; j < free.length; j++) {
      const b = buffers[free[j]];
      if (b >= size && b <= 2 * Math.max(size, 1) && (best < 0 || b < buffers[free[best]])) best = j;
    }
    if (best < 0) return newSlot(size);
    return free.splice(best, 1)[0];
  };
  const steps: PlanStep[] = [];
  const gpujsOps = new Map<string, number>();
  const ctx = { maxThreads };
  p.nodes.forEach((node, i) => {
    const outs = nodeOutputs(node);
    for (const o of outs) slotOf[o] = pinned.has(o) ? newSlot(p.sizes[o]) : take(p.sizes[o]);
    const inputs = node.inputs.map((v) => {
      if (slotOf[v] < 0) throw new ArgumentError('lowerProgram', `${label}: node ${i} (${nodeName(node)}) reads value ${v} before any node produces it`);
      return slotOf[v];
    });
    if ('fused' in node) {
      steps.push({ kind: 'wgsl', kernel: node.fused, inputs, outputs: outs.map((o) => slotOf[o]) });
    } else if (p.sizes[node.output] > 0) {
      const out = node.output;
      if (node.impl.wgsl !== undefined) {
        steps.push({ kind: 'wgsl', kernel: node.impl.wgsl({ ...ctx, outSize: p.sizes[out] }), inputs, outputs: [slotOf[out]] });
      } else {
        const kernel = node.impl.kernel;
        if (kernel === undefined) {
          throw new BackendError(`${label}: op '${nodeName(node)}' (node ${i}) runs on the host only (it has neither a WGSL nor a gpu.js kernel), so it cannot be part of a device plan`);
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
    // Inputs whose last reader this was go back to the pool (after the outputs took their buffers: a
    // dispatch must not read and write one buffer).
    const release = (v: number) => free.push(slotOf[v]);
    for (const v of new Set(node.inputs)) if (lastUse[v] === i && !persistent.has(v) && !pinned.has(v)) release(v);
    for (const o of outs) if (lastUse[o] === -1 && !pinned.has(o)) release(o);
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
