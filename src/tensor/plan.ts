/**
 * A program of primitive ops lowered to a webgpu device plan (src/backend/webgpu-plan.ts), and replayed.
 *
 * A `Program` is flat: values (flat float32 buffers, by id) and nodes (an op's kernels, its input value
 * ids and its output value id), with the values the caller supplies per run (`inputs`: the batch),
 * the values that live on the device across runs (`state`: parameters and optimizer moments, each
 * replaced by its `next` value at the end of a run), constants, and the values read back per run
 * (`outputs`: the loss). `lowerProgram` turns it into a plan:
 *  - every op becomes its WGSL kernel where it has one (OpImpl.wgsl: elementwise maps, reductions,
 *    row ops, the tiled matmul, convolutions, gathers) and its gpu.js kernel otherwise;
 *  - memory is planned once: every value is a byte range of a few large buffers, and values never live
 *    at the same time share bytes (see `lowerProgram`), so a plan holds about its peak of live values;
 *  - new state is computed in place where an elementwise group updates it (optimizers), and copied over
 *    the old state at the end of the run otherwise, in the same command encoder.
 * `DeviceProgram.run` then uploads the inputs, submits once and reads back the outputs once.
 *
 * Programs come from the jit tracer (src/jit/webgpu.ts `programFromTrace`: views folded into the
 * buffers they view, elementwise chains fused into one kernel, other equations run their primitive's
 * kernels).
 */
import { productKey, tuneMatmuls, type TunedProduct } from '../backend/matmul-tune.ts';
import { DevicePlan, passSteps, type PlanStep } from '../backend/webgpu-plan.ts';
import { webgpuDevice } from '../backend/webgpu-device.ts';
import { adapterDescription, isSoftwareAdapter, type AdapterLike } from '../backend/webgpu-node.ts';
import { fusedKernel, isIdentityRead, type FusedGroup, type MatmulShape, type MatmulTiling } from '../backend/wgsl-kernels.ts';
import { ArgumentError, BackendError } from './errors.ts';
import { GPU_MAX_ELEMENTS, type OpImpl } from './exec.ts';
import { sizeOf } from './shape.ts';

/** An op (its kernels from its `OpImpl`), or a fused elementwise group (one WGSL kernel, several outputs; input k = the group's read k). */
export type ProgramNode =
  | { readonly impl: OpImpl; readonly inputs: readonly number[]; readonly output: number }
  | { readonly fused: FusedGroup; readonly name: string; readonly inputs: readonly number[]; readonly outputs: readonly number[] };

const nodeOutputs = (n: ProgramNode): readonly number[] => ('fused' in n ? n.outputs : [n.output]);
const nodeName = (n: ProgramNode): string => ('fused' in n ? n.name : n.impl.name ?? 'op');

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

/** What the device allows (DeviceProgram.compile reads them from the device). */
export interface LowerOptions {
  /** Invocations per workgroup (the matmul tiling, the row kernels). */
  readonly maxThreads: number;
  /** Byte alignment of a binding's offset (minStorageBufferOffsetAlignment; default 256, WebGPU's). */
  readonly align?: number;
  /** The largest arena, in bytes (default 2 GiB; at most the device's maxBufferSize). */
  readonly arenaBytes?: number;
  /** Each product's tiling where it was timed (see `WgslContext.matmulTiling`). */
  readonly matmulTiling?: (p: MatmulShape) => MatmulTiling | undefined;
}

/** A value's bytes on the device and the nodes between which it is live ([-1, Infinity] for values held across runs). */
export interface SlotLife {
  readonly bytes: number;
  readonly start: number;
  readonly end: number;
}

export interface Lowered {
  readonly spec: { buffers: number[]; steps: PlanStep[]; reads: number[]; label?: string; placement: { arenas: number[]; at: { arena: number; offset: number }[] } };
  /** The plan slot of each value (-1 for values no buffer holds). A state value updated in place shares its slot with its next value. */
  readonly slotOf: readonly number[];
  /** Each slot's bytes and lifetime (in node indices), for memory reports. */
  readonly lives: readonly SlotLife[];
  /** State entries whose next value is computed in place (no copy, no buffer of its own). */
  readonly inPlace: ReadonlySet<number>;
  /** Nodes that run their gpu.js kernel (no WGSL form), by op name: what a WGSL kernel would replace next. */
  readonly gpujsOps: ReadonlyMap<string, number>;
}

const ARENA_BYTES = 2 ** 31;

/**
 * Plan the buffers and pick each node's kernel.
 *
 * Memory: inputs, state, constants and outputs are buffers of their own. Every other value gets a byte
 * range of an arena (a large device buffer), live from the node that produces it to its last reader;
 * ranges of values never live at once share bytes: offsets are assigned greedily, largest value first,
 * each at the lowest offset free over its lifetime (TFLite's greedy-by-size arena planner), so a plan
 * holds about the peak of its live values. A node's outputs never share bytes with its inputs, except
 * one case: a state value whose next value an elementwise group computes from it at the same index (an
 * optimizer's moments and parameters) is updated in place, so state is held once, not twice. Values a
 * gpu.js kernel touches get buffers of their own (gpu.js declares inputs read-only).
 */
export function lowerProgram(p: Program, options: LowerOptions | number): Lowered {
  const opts: LowerOptions = typeof options === 'number' ? { maxThreads: options } : options;
  const label = p.label ?? 'program';
  const n = p.sizes.length;
  const check = (v: number, what: string) => {
    if (!Number.isInteger(v) || v < 0 || v >= n) throw new ArgumentError('lowerProgram', `${label}: ${what} is value ${v}, but the program has ${n} values`);
  };
  const END = Number.POSITIVE_INFINITY;
  const lastUse = new Array<number>(n).fill(-1);
  const producer = new Array<number>(n).fill(-1);
  p.nodes.forEach((node, i) => {
    node.inputs.forEach((v) => {
      check(v, `an input of node ${i} (${nodeName(node)})`);
      lastUse[v] = i;
    });
    for (const o of nodeOutputs(node)) {
      check(o, `an output of node ${i}`);
      if (producer[o] >= 0) throw new ArgumentError('lowerProgram', `${label}: value ${o} is produced twice`);
      producer[o] = i;
    }
  });
  const persistent = new Set<number>([...p.inputs, ...p.state.map((s) => s.value), ...p.constants.map((c) => c.value)]);
  for (const v of persistent) {
    check(v, 'an input, state or constant');
    if (producer[v] >= 0) throw new ArgumentError('lowerProgram', `${label}: value ${v} is an input, state or constant but a node produces it`);
  }
  p.state.forEach((s) => check(s.value, 'a state value'));
  for (const v of [...p.outputs, ...p.state.map((s) => s.next)]) {
    check(v, 'an output or next state');
    lastUse[v] = END;
  }
  p.nodes.forEach((node, i) => {
    node.inputs.forEach((v) => {
      if (!persistent.has(v) && (producer[v] < 0 || producer[v] >= i)) throw new ArgumentError('lowerProgram', `${label}: node ${i} (${nodeName(node)}) reads value ${v} before any node produces it`);
    });
  });

  // State updated in place: next = group(value, ...) at the same index, the group being value's last reader.
  const aliasOf = new Map<number, number>(); // next value -> state value
  const inPlaceReads = new Map<number, Map<number, number>>(); // node -> read k -> output j
  const inPlace = new Set<number>();
  p.state.forEach((s, si) => {
    const i = producer[s.next];
    if (s.next === s.value || i < 0 || aliasOf.has(s.next)) return;
    const node = p.nodes[i];
    if (!('fused' in node) || lastUse[s.value] !== i || p.sizes[s.next] !== p.sizes[s.value]) return;
    const total = sizeOf(node.fused.shape);
    const reads = node.inputs.map((v, k) => (v === s.value ? k : -1)).filter((k) => k >= 0);
    if (total !== p.sizes[s.value] || reads.length === 0 || !reads.every((k) => isIdentityRead(node.fused.shape, node.fused.reads[k]))) return;
    const j = node.outputs.indexOf(s.next);
    const map = inPlaceReads.get(i) ?? new Map<number, number>();
    for (const k of reads) map.set(k, j);
    inPlaceReads.set(i, map);
    aliasOf.set(s.next, s.value);
    inPlace.add(si);
  });

  // Slots: one per stored value (a next value updated in place shares its state's).
  const slotOf = new Array<number>(n).fill(-1);
  const lives: SlotLife[] = [];
  const newSlot = (v: number, start: number, end: number) => {
    slotOf[v] = lives.push({ bytes: Math.max(4, p.sizes[v] * 4), start, end }) - 1;
  };
  for (const v of persistent) newSlot(v, -1, END);
  p.nodes.forEach((node, i) => {
    for (const o of nodeOutputs(node)) {
      const a = aliasOf.get(o);
      if (a !== undefined) slotOf[o] = slotOf[a];
      else newSlot(o, i, lastUse[o] === -1 ? i : lastUse[o]);
    }
  });

  // Kernels.
  const steps: PlanStep[] = [];
  const gpujsOps = new Map<string, number>();
  // Slots that are buffers of their own rather than arena ranges: values held across runs or to the
  // end of a run (nothing to share; the host writes and reads them, copies between runs take them),
  // and values a gpu.js kernel touches.
  const ownBuffer = new Set<number>([...persistent, ...p.outputs, ...p.state.filter((_, si) => !inPlace.has(si)).map((s) => s.next)].map((v) => slotOf[v]));
  p.nodes.forEach((node, i) => {
    if ('fused' in node) {
      const reads = inPlaceReads.get(i);
      // A value read at two strides is bound once (WebGPU refuses two writable bindings of the same bytes).
      const firstRead = new Map<number, number>();
      const shared = new Map<number, number>();
      node.inputs.forEach((v, k) => {
        if (reads?.has(k)) return;
        const first = firstRead.get(slotOf[v]);
        if (first === undefined) firstRead.set(slotOf[v], k);
        else shared.set(k, first);
      });
      steps.push({
        kind: 'wgsl',
        kernel: fusedKernel(node.name, node.fused, reads, shared),
        inputs: [...firstRead.keys()],
        outputs: node.outputs.map((o) => slotOf[o]),
      });
      return;
    }
    const out = node.output;
    if (p.sizes[out] === 0) return;
    const inputs = node.inputs.map((v) => slotOf[v]);
    if (node.impl.wgsl !== undefined) {
      // WebGPU refuses two writable bindings of the same bytes in one dispatch (and WGSL bindings here
      // are all writable): a value read twice (matmul(a, a)) is read the second time from a copy.
      const bound = inputs.map((slot, k) => {
        if (inputs.indexOf(slot) === k) return slot;
        const copy = lives.push({ bytes: lives[slot].bytes, start: i, end: i }) - 1;
        steps.push({ kind: 'copy', from: slot, to: copy, floats: p.sizes[node.inputs[k]] });
        return copy;
      });
      const kernel = node.impl.wgsl({ maxThreads: opts.maxThreads, outSize: p.sizes[out], matmulTiling: opts.matmulTiling });
      // Several passes: their scratch ranges live only at this node.
      steps.push(...passSteps(kernel, bound, slotOf[out], (floats) => lives.push({ bytes: Math.max(4, floats * 4), start: i, end: i }) - 1));
      return;
    }
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
    for (const x of [...inputs, slotOf[out]]) ownBuffer.add(x);
    steps.push({ kind: 'gpujs', kernel: { name, source: spec.source, outSize: p.sizes[out], inputSizes: node.inputs.map((v) => p.sizes[v]) }, inputs, output: slotOf[out] });
  });
  p.state.forEach((s, si) => {
    if (s.next !== s.value && !inPlace.has(si)) steps.push({ kind: 'copy', from: slotOf[s.next], to: slotOf[s.value], floats: p.sizes[s.value] });
  });
  const placement = placeSlots(lives, ownBuffer, opts.align ?? 256, Math.min(opts.arenaBytes ?? ARENA_BYTES, ARENA_BYTES));
  return {
    spec: { buffers: lives.map((l) => l.bytes / 4), steps, reads: p.outputs.map((v) => slotOf[v]), label, placement },
    slotOf,
    lives,
    inPlace,
    gpujsOps,
  };
}

/**
 * Offsets for the slots (greedy by size): largest first, each at the lowest aligned offset of the first
 * arena where no slot live at an overlapping time is in the way; a new arena when none has room.
 */
export function placeSlots(lives: readonly SlotLife[], own: ReadonlySet<number>, align: number, capacity: number): { arenas: number[]; at: { arena: number; offset: number }[] } {
  const at = lives.map(() => ({ arena: -1, offset: 0 }));
  const order = lives.map((_, i) => i).filter((i) => !own.has(i)).sort((a, b) => lives[b].bytes - lives[a].bytes || lives[a].start - lives[b].start);
  // Per arena, its placed slots sorted by offset.
  const arenas: { slot: number; offset: number; end: number }[][] = [];
  const sizes: number[] = [];
  const roundUp = (x: number) => Math.ceil(x / align) * align;
  for (const i of order) {
    const { bytes, start, end } = lives[i];
    let placed = false;
    for (let a = 0; a < arenas.length && !placed; a++) {
      let offset = 0;
      for (const q of arenas[a]) {
        const other = lives[q.slot];
        if (other.end < start || other.start > end) continue; // never live together
        if (offset + bytes <= q.offset) break;
        offset = Math.max(offset, roundUp(q.end));
      }
      if (offset + bytes <= capacity) {
        insertSorted(arenas[a], { slot: i, offset, end: offset + bytes });
        sizes[a] = Math.max(sizes[a], offset + bytes);
        at[i] = { arena: a, offset };
        placed = true;
      }
    }
    if (!placed) {
      arenas.push([{ slot: i, offset: 0, end: bytes }]);
      sizes.push(bytes);
      at[i] = { arena: arenas.length - 1, offset: 0 };
    }
  }
  return { arenas: sizes, at };
}

function insertSorted(list: { offset: number }[], item: { slot: number; offset: number; end: number }): void {
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (list[mid].offset <= item.offset) lo = mid + 1;
    else hi = mid;
  }
  list.splice(lo, 0, item);
}

/** A plan's device memory by category (see `planMemory`). */
export interface PlanMemory {
  /** Bytes of all the plan's buffers (uniforms and readback staging, a few KiB, not included). */
  readonly totalBytes: number;
  /** Bytes by what they hold, summing to totalBytes. */
  readonly categories: readonly (readonly [string, number])[];
  /** The arenas' sizes and their lower bound: the most bytes of arena values live at one node. */
  readonly arenas: readonly number[];
  readonly arenaPeakBytes: number;
  readonly peakNode: number;
  /** What is live in the arena at that node: gradients (read by the state updates) and the rest. */
  readonly livePeak: readonly (readonly [string, number])[];
  readonly dispatches: number;
}

/**
 * Where a program's device memory goes once lowered (computed, not allocated): state by the caller's
 * category per state entry, the run's inputs, constants, outputs, next-state copies, the arena.
 */
export function planMemory(p: Program, options: LowerOptions, stateCategory: (i: number) => string = () => 'state'): PlanMemory {
  return memoryOf(p, lowerProgram(p, options), stateCategory);
}

function memoryOf(p: Program, low: Lowered, stateCategory: (i: number) => string): PlanMemory {
  const { lives, slotOf } = low;
  const { placement } = low.spec;
  const categories = new Map<string, number>();
  const add = (what: string, bytes: number) => categories.set(what, (categories.get(what) ?? 0) + bytes);
  const counted = new Set<number>();
  const own = (slot: number, what: string) => {
    if (slot < 0 || counted.has(slot) || placement.at[slot].arena !== -1) return;
    counted.add(slot);
    add(what, lives[slot].bytes);
  };
  p.state.forEach((s, i) => own(slotOf[s.value], stateCategory(i)));
  p.inputs.forEach((v) => own(slotOf[v], 'batch and per-step inputs'));
  p.constants.forEach((c) => own(slotOf[c.value], 'constants'));
  p.outputs.forEach((v) => own(slotOf[v], 'outputs read back'));
  p.state.forEach((s, i) => low.inPlace.has(i) || own(slotOf[s.next], 'next state (copied over the state after a run)'));
  lives.forEach((_, slot) => own(slot, 'values gpu.js kernels touch (own buffers)'));
  const arenaTotal = placement.arenas.reduce((a, b) => a + b, 0);
  add('arena: activations, gradients, temporaries', arenaTotal);
  // The lower bound: at each node, the bytes of arena slots live there.
  const inArena = lives.map((_, slot) => placement.at[slot].arena >= 0);
  const nNodes = p.nodes.length;
  const delta = new Float64Array(nNodes + 1);
  lives.forEach((l, slot) => {
    if (!inArena[slot]) return;
    delta[Math.max(0, l.start)] += l.bytes;
    delta[Math.min(nNodes, l.end + 1)] -= l.bytes;
  });
  let live = 0;
  let peak = 0;
  let peakNode = 0;
  for (let i = 0; i < nNodes; i++) {
    live += delta[i];
    if (live > peak) [peak, peakNode] = [live, i];
  }
  // Gradients: arena values the state updates read.
  const producer = new Map<number, number>();
  p.nodes.forEach((node, i) => ('fused' in node ? node.outputs : [node.output]).forEach((o) => producer.set(o, i)));
  const gradSlots = new Set<number>();
  for (const s of p.state) {
    const i = producer.get(s.next);
    if (i !== undefined) for (const v of p.nodes[i].inputs) if (slotOf[v] >= 0 && inArena[slotOf[v]]) gradSlots.add(slotOf[v]);
  }
  const livePeak = new Map<string, number>();
  lives.forEach((l, slot) => {
    if (!inArena[slot] || l.start > peakNode || l.end < peakNode) return;
    const what = gradSlots.has(slot) ? 'gradients' : 'activations and temporaries';
    livePeak.set(what, (livePeak.get(what) ?? 0) + l.bytes);
  });
  return {
    totalBytes: [...categories.values()].reduce((a, b) => a + b, 0),
    categories: [...categories],
    arenas: placement.arenas,
    arenaPeakBytes: peak,
    peakNode,
    livePeak: [...livePeak],
    dispatches: low.spec.steps.filter((s) => s.kind !== 'copy').length,
  };
}

export interface CompileOptions {
  /**
   * Time every tiling the device allows on each distinct matrix product of the program and use the
   * fastest (backend/matmul-tune.ts; the same bits either way). Default: on a hardware adapter, where
   * it pays (each tiling of each product of 50 MFLOP or more, once per process), and off on software ones
   * (llvmpipe), where the cost model decides.
   */
  readonly tune?: boolean;
}

/** A program compiled for the webgpu device: state resident, one submission and one readback per run. */
export class DeviceProgram {
  private constructor(
    readonly program: Program,
    private readonly plan: DevicePlan,
    private readonly lowered: Lowered,
    /** The products timed while compiling (empty when not tuned). */
    readonly tuned: readonly TunedProduct[],
  ) {}

  /** Lower `program`, compile its plan and upload its constants and the initial state. */
  static async compile(program: Program, initialState: readonly Float32Array[], options: CompileOptions = {}): Promise<DeviceProgram> {
    if (initialState.length !== program.state.length) {
      throw new ArgumentError('DeviceProgram', `${program.state.length} state values, ${initialState.length} initial arrays`);
    }
    const { device, context } = await webgpuDevice();
    const limits: LowerOptions = {
      maxThreads: device.limits.maxComputeInvocationsPerWorkgroup ?? 256,
      align: device.limits.minStorageBufferOffsetAlignment ?? 256,
      arenaBytes: device.limits.maxBufferSize,
    };
    const adapter = (context as { adapter?: AdapterLike }).adapter;
    let tuned: TunedProduct[] = [];
    let matmulTiling: ((p: MatmulShape) => MatmulTiling | undefined) | undefined;
    if (options.tune ?? (adapter !== undefined && !isSoftwareAdapter(adapterDescription(adapter)))) {
      // A first lowering only collects the products (it is cheap: no device work).
      const problems: MatmulShape[] = [];
      lowerProgram(program, { ...limits, matmulTiling: (p) => void problems.push(p) });
      const table = await tuneMatmuls(problems, limits.maxThreads);
      tuned = [...table.values()];
      matmulTiling = (p) => table.get(productKey(p))?.tiling;
    }
    const lowered = lowerProgram(program, { ...limits, matmulTiling });
    const plan = await DevicePlan.compile(lowered.spec);
    const dp = new DeviceProgram(program, plan, lowered, tuned);
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

  /** The kernel name of every dispatch of a run, in order. */
  get dispatchNames(): string[] {
    return this.plan.dispatchNames;
  }

  /** Device time by kernel (DevicePlan.profile): the program is spent afterwards (its values are garbage). */
  profile(repeats?: number): Promise<{ name: string; dispatches: number; ms: number }[]> {
    return this.plan.profile(repeats);
  }

  get deviceBytes(): number {
    return this.plan.deviceBytes;
  }

  /** The plan's buffers by what they hold (state named per entry by `stateCategory`). */
  memory(stateCategory?: (i: number) => string): PlanMemory {
    return memoryOf(this.program, this.lowered, stateCategory ?? (() => 'state'));
  }

  /** Ops running their gpu.js kernel rather than a WGSL one, with counts. */
  get gpujsOps(): ReadonlyMap<string, number> {
    return this.lowered.gpujsOps;
  }

  destroy(): void {
    this.plan.destroy();
  }
}
