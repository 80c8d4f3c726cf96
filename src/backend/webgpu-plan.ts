/**
 * Device plans: a fixed list of kernel dispatches over buffers allocated once, replayed as one command
 * encoder and one queue submission, with one readback of the values asked for.
 *
 * This is what makes a traced training step cheap on a GPU: called op by op, every kernel costs a
 * submission (and an await) of 150-390 us; recorded into one encoder, ~17 us
 * (/work/shared/reference/webgpu-node.md). The buffers of a plan live as long as the plan, so
 * parameters and optimizer state stay on the device between replays; the caller uploads what changes
 * (`write`: the batch, per-step scalars) and reads back what it needs (`run`'s results: the loss).
 *
 * A step is a WGSL kernel from wgsl-kernels.ts or a gpu.js kernel (its source as the tensor layer
 * generates it), built by gpu.js for the plan's device and bound to the plan's buffers; or a buffer copy
 * (writing a new parameter value over the old one at the end of a step). All steps run on the device
 * gpu.js's webgpu kernels share (webgpu-device.ts), and compute pipelines are cached by kernel key, so a
 * second plan of the same structure compiles nothing.
 */
import type { GPU, IKernelRunShortcut } from 'gpu.js';
import { BackendError } from '../tensor/errors.ts';
import { gpuFor } from './backend.ts';
import { webgpuDevice, type DeviceLike, type EncoderLike, type GpuBufferLike, type WebGPUShared } from './webgpu-device.ts';
import { mapKernel, type PassRef, type WgslKernel, type WgslPasses } from './wgsl-kernels.ts';

const USAGE = { MAP_READ: 0x0001, COPY_SRC: 0x0004, COPY_DST: 0x0008, UNIFORM: 0x0040, STORAGE: 0x0080 } as const;
const MAP_READ = 0x0001;
/** Uniform blocks of all steps share one buffer, each at an offset aligned to this (WebGPU's maximum minUniformBufferOffsetAlignment). */
const UNIFORM_ALIGN = 256;

/** A gpu.js kernel as a plan step: flat output of `outSize`, inputs of the given lengths. */
export interface GpuJsStep {
  readonly name: string;
  readonly source: string;
  readonly outSize: number;
  readonly inputSizes: readonly number[];
}

export type PlanStep =
  | { readonly kind: 'wgsl'; readonly kernel: WgslKernel; readonly inputs: readonly number[]; readonly outputs: readonly number[] }
  | { readonly kind: 'gpujs'; readonly kernel: GpuJsStep; readonly inputs: readonly number[]; readonly output: number }
  | { readonly kind: 'copy'; readonly from: number; readonly to: number; readonly floats: number };

/** An op's kernel or passes as plan steps, given its input slots, its output slot and a maker of scratch slots. */
export function passSteps(op: WgslKernel | WgslPasses, inputs: readonly number[], output: number, scratch: (floats: number) => number): PlanStep[] {
  if (!('passes' in op)) return [{ kind: 'wgsl', kernel: op, inputs, outputs: [output] }];
  const slots = op.scratch.map(scratch);
  const slot = (r: PassRef) => (r === 'output' ? output : 'input' in r ? inputs[r.input] : slots[r.scratch]);
  return op.passes.map((p) => ({ kind: 'wgsl', kernel: p.kernel, inputs: p.inputs.map(slot), outputs: p.outputs.map(slot) }));
}

export interface PlanSpec {
  /** Buffer slots, in floats (a slot of size 0 still gets 4 bytes to bind). */
  readonly buffers: readonly number[];
  /** Where each slot lives: a region of a shared device buffer (see `Placement`); default: every slot its own buffer. */
  readonly placement?: Placement;
  readonly steps: readonly PlanStep[];
  /** Slots copied back after every run, in this order (one staging buffer, one map). */
  readonly reads: readonly number[];
  /** For errors. */
  readonly label?: string;
}

/**
 * Slots as regions of a few large device buffers ("arenas"): slot i is `at[i].bytes` bytes at byte
 * `at[i].offset` of buffer `at[i].arena`, whose size is `arenas[k]` bytes. Offsets are multiples of the
 * device's minStorageBufferOffsetAlignment. Slots whose values are never live at the same time may share
 * bytes (the planner in src/tensor/plan.ts decides), so a plan holds about its peak of live values rather
 * than the sum of them. A slot may also be its own buffer (`arena: -1`): gpu.js kernels declare their
 * inputs read-only, and WebGPU forbids binding one buffer read-only and writable in one dispatch, so
 * the values they touch are kept apart.
 */
export interface Placement {
  readonly arenas: readonly number[];
  readonly at: readonly { readonly arena: number; readonly offset: number }[];
}

/** A slot's region: the buffer and byte range it is bound and copied as. */
interface Region {
  readonly buffer: GpuBufferLike;
  readonly offset: number;
  /** Bytes bound (at least 4: a binding cannot be empty). */
  readonly size: number;
}

interface Encoded {
  /** The kernel's name (profiles group by it). */
  readonly name: string;
  readonly pipeline: unknown;
  readonly bindGroup: unknown;
  readonly groups: readonly [number, number, number];
}
type Command = { readonly kind: 'pass'; readonly dispatches: Encoded[] } | { readonly kind: 'copy'; readonly from: Region; readonly to: Region; readonly bytes: number };

interface CachedPipeline {
  readonly pipeline: unknown;
  readonly layout: unknown;
}

/** Compute pipelines of WGSL kernels, by kernel key (one device per process). */
const pipelines = new Map<string, Promise<CachedPipeline>>();

/** An empty submission's time to queue completion, by device: what DevicePlan.time and profile subtract. */
const emptySubmissionMs = new WeakMap<object, Promise<number>>();

/** gpu.js kernels built for plans, by source and sizes (kept for the life of the process, like the kernel cache). */
const gpujsKernels = new Map<string, Promise<BuiltGpuJs>>();

interface BuiltGpuJs {
  readonly pipeline: unknown;
  readonly layout: unknown;
  /** gpu.js's params struct: byte length and where each array argument's dims go. */
  readonly paramsBytes: number;
  readonly dimsOffsets: readonly number[];
  readonly groups: readonly [number, number, number];
  readonly dispatchWidth: number;
}

async function wgslPipeline(device: DeviceLike, k: WgslKernel): Promise<CachedPipeline> {
  let p = pipelines.get(k.key);
  if (p === undefined) {
    p = (async () => {
      const module = device.createShaderModule({ code: k.code, label: k.key });
      const info = await module.getCompilationInfo();
      const errors = info.messages.filter((m) => m.type === 'error');
      if (errors.length > 0) {
        throw new BackendError(`webgpu: the WGSL kernel '${k.name}' (${k.key}) does not compile:\n${errors.map((m) => `  ${m.lineNum}:${m.linePos} ${m.message}`).join('\n')}\n--- WGSL ---\n${k.code}`);
      }
      const entries: object[] = [];
      // Every binding writable: one arena may hold a dispatch's inputs and outputs (at disjoint offsets),
      // and WebGPU allows one buffer in a dispatch only as all read-only or all writable bindings.
      for (let b = 0; b < k.inputs + k.outputs; b++) entries.push({ binding: b, visibility: 4, buffer: { type: 'storage' } });
      entries.push({ binding: k.inputs + k.outputs, visibility: 4, buffer: { type: 'uniform' } });
      const layout = device.createBindGroupLayout({ entries });
      device.pushErrorScope('validation');
      const pipeline = device.createComputePipeline({
        layout: device.createPipelineLayout({ bindGroupLayouts: [layout] }),
        compute: { module, entryPoint: 'main' },
      });
      const error = await device.popErrorScope();
      if (error !== null) throw new BackendError(`webgpu: cannot create the pipeline of '${k.name}' (${k.key}): ${error.message}`);
      return { pipeline, layout };
    })();
    pipelines.set(k.key, p);
    p.catch(() => pipelines.delete(k.key));
  }
  return p;
}

interface WebGPUKernelInternals {
  build(...args: unknown[]): Promise<void>;
  computePipeline: unknown;
  bindGroupLayout: unknown;
  paramsLayout: { byteLength: number; arrayArgs: { dimsOffset: number }[]; scalarArgs: unknown[]; randomSeedOffset: number | null; bufferConstants: unknown[] };
  outputBuffer: (GpuBufferLike & { _refs?: number }) | null;
  threadDim: number[];
  _computeDispatch(threadDim: number[]): { groups: [number, number, number]; dispatchWidth: number };
}

/** Build a gpu.js kernel (its WGSL, pipeline and layout) without running it, for binding to plan buffers. */
function gpujsKernel(step: GpuJsStep): Promise<BuiltGpuJs> {
  const key = `${step.source}#${step.outSize}#${step.inputSizes.join(',')}`;
  let p = gpujsKernels.get(key);
  if (p === undefined) {
    p = (async () => {
      const gpu: GPU = gpuFor('webgpu');
      const shortcut: IKernelRunShortcut = gpu.createKernel(step.source, { output: [step.outSize] });
      const kernel = (shortcut as unknown as { kernel: WebGPUKernelInternals }).kernel;
      // Stand-ins of the right lengths fix the argument types ('Array') and sizes the kernel is built for.
      await kernel.build(...step.inputSizes.map((n) => new Float32Array(Math.max(1, n))));
      const layout = kernel.paramsLayout;
      if (layout.scalarArgs.length > 0 || layout.randomSeedOffset !== null || layout.bufferConstants.length > 0) {
        throw new BackendError(`webgpu plan: the gpu.js kernel of '${step.name}' has scalar arguments, constants or randomness, which plans do not bind`);
      }
      // Plans write into their own buffers: the output buffer gpu.js made would only hold memory.
      const own = kernel.outputBuffer;
      if (own !== null) {
        own._refs = (own._refs ?? 1) - 1;
        if (own._refs === 0) own.destroy();
        kernel.outputBuffer = null;
      }
      const dispatch = kernel._computeDispatch(kernel.threadDim);
      return {
        pipeline: kernel.computePipeline,
        layout: kernel.bindGroupLayout,
        paramsBytes: layout.byteLength,
        dimsOffsets: layout.arrayArgs.map((a) => a.dimsOffset),
        groups: dispatch.groups,
        dispatchWidth: dispatch.dispatchWidth,
      };
    })();
    gpujsKernels.set(key, p);
    p.catch(() => gpujsKernels.delete(key));
  }
  return p;
}

/** gpu.js's params struct for a flat kernel: [outSize, 1, 1, dispatchWidth], then [len, 1, 1, len] per array argument. */
function gpujsParams(built: BuiltGpuJs, step: GpuJsStep): Uint32Array {
  const words = new Uint32Array(built.paramsBytes / 4);
  words.set([step.outSize, 1, 1, built.dispatchWidth]);
  built.dimsOffsets.forEach((offset, i) => {
    const n = Math.max(1, step.inputSizes[i]);
    words.set([n, 1, 1, n], offset / 4);
  });
  return words;
}

const describeSlot = (spec: PlanSpec, slot: number) => `slot ${slot} (${spec.buffers[slot]} floats)`;

const STORAGE_USAGE = USAGE.STORAGE | USAGE.COPY_SRC | USAGE.COPY_DST;
const bound = (r: Region) => ({ buffer: r.buffer, offset: r.offset, size: r.size });
const overlap = (a: Region, b: Region) => a.buffer === b.buffer && a.offset < b.offset + b.size && b.offset < a.offset + a.size;
const copyRegion = (encoder: EncoderLike, from: Region, to: Region, bytes: number) => encoder.copyBufferToBuffer(from.buffer, from.offset, to.buffer, to.offset, bytes);

/** The plan's device buffers: its arenas and the slots that are their own buffer, and each slot's region. */
function allocate(device: DeviceLike, spec: PlanSpec, label: string): { buffers: GpuBufferLike[]; regions: Region[] } {
  const bytesOf = (slot: number) => Math.max(4, spec.buffers[slot] * 4);
  const pl = spec.placement;
  if (pl === undefined) {
    const buffers = spec.buffers.map((_, slot) => device.createBuffer({ size: bytesOf(slot), usage: STORAGE_USAGE, label: `${label} slot ${slot}` }));
    return { buffers, regions: buffers.map((buffer, slot) => ({ buffer, offset: 0, size: bytesOf(slot) })) };
  }
  if (pl.at.length !== spec.buffers.length) throw new BackendError(`webgpu plan '${label}': the placement covers ${pl.at.length} slots, the plan has ${spec.buffers.length}`);
  const align = device.limits.minStorageBufferOffsetAlignment ?? 256;
  const arenas = pl.arenas.map((bytes, k) => {
    if (bytes > device.limits.maxBufferSize) throw new BackendError(`webgpu plan '${label}': arena ${k} needs ${bytes} bytes, over this device's ${device.limits.maxBufferSize} bytes per buffer`);
    return device.createBuffer({ size: Math.max(4, Math.ceil(bytes / 4) * 4), usage: STORAGE_USAGE, label: `${label} arena ${k}` });
  });
  const buffers = [...arenas];
  const regions = pl.at.map(({ arena, offset }, slot) => {
    const size = bytesOf(slot);
    if (arena === -1) {
      const buffer = device.createBuffer({ size, usage: STORAGE_USAGE, label: `${label} slot ${slot}` });
      buffers.push(buffer);
      return { buffer, offset: 0, size };
    }
    if (!(arena >= 0 && arena < arenas.length) || offset % align !== 0 || offset + size > pl.arenas[arena]) {
      throw new BackendError(`webgpu plan '${label}': ${describeSlot(spec, slot)} is placed at byte ${offset} of arena ${arena}, outside it or not aligned to ${align} bytes`);
    }
    return { buffer: arenas[arena], offset, size };
  });
  return { buffers, regions };
}

export class DevicePlan {
  /** The device buffers (arenas and own buffers) and each slot's region of one. */
  private readonly buffers: GpuBufferLike[];
  private readonly regions: Region[];
  private readonly uniforms: GpuBufferLike | null;
  /** Staging buffers for the reads: one per run in flight (a mapped buffer cannot take the next copy). */
  private readonly staging: { buffer: GpuBufferLike; busy: boolean }[] = [];
  private readonly stagingBytes: number;
  /** Staging buffers of out-of-band reads, by slot. */
  private readonly slotStaging = new Map<number, { buffer: GpuBufferLike; busy: boolean }[]>();
  private readonly readOffsets: number[];
  private destroyed = false;
  /** Profiled: kernels ran out of order, the values are garbage. */
  private spent = false;

  private constructor(
    private readonly shared: WebGPUShared,
    readonly spec: PlanSpec,
    buffers: GpuBufferLike[],
    regions: Region[],
    uniforms: GpuBufferLike | null,
    private readonly commands: Command[],
  ) {
    this.buffers = buffers;
    this.regions = regions;
    this.uniforms = uniforms;
    let bytes = 0;
    this.readOffsets = spec.reads.map((slot) => {
      const at = bytes;
      bytes += Math.ceil((spec.buffers[slot] * 4) / 16) * 16;
      return at;
    });
    this.stagingBytes = bytes;
  }

  private acquireStaging(): { buffer: GpuBufferLike; busy: boolean } {
    let s = this.staging.find((x) => !x.busy);
    if (s === undefined) {
      s = { buffer: this.shared.device.createBuffer({ size: this.stagingBytes, usage: USAGE.MAP_READ | USAGE.COPY_DST, label: `${this.spec.label ?? 'plan'} readback` }), busy: false };
      this.staging.push(s);
    }
    s.busy = true;
    return s;
  }

  /** Allocate the plan's buffers, build (or reuse) every step's pipeline and bind its buffers. */
  static async compile(spec: PlanSpec): Promise<DevicePlan> {
    const shared = await webgpuDevice();
    const { device } = shared;
    const label = spec.label ?? 'plan';
    const maxBinding = Math.min(device.limits.maxStorageBufferBindingSize, device.limits.maxBufferSize);
    const check = (slot: number, what: string) => {
      if (!Number.isInteger(slot) || slot < 0 || slot >= spec.buffers.length) throw new BackendError(`webgpu plan '${label}': ${what} refers to slot ${slot}, but the plan has ${spec.buffers.length} buffers`);
    };
    spec.buffers.forEach((floats, slot) => {
      if (floats * 4 > maxBinding) {
        throw new BackendError(`webgpu plan '${label}': ${describeSlot(spec, slot)} needs ${floats * 4} bytes, over this device's ${maxBinding} bytes per storage buffer; use a smaller batch`);
      }
    });
    const wgsl = await Promise.all(spec.steps.map((s) => (s.kind === 'wgsl' ? wgslPipeline(device, s.kernel) : null)));
    const gpujs = await Promise.all(spec.steps.map((s) => (s.kind === 'gpujs' ? gpujsKernel(s.kernel) : null)));

    const { buffers, regions } = allocate(device, spec, label);
    // WebGPU copies only between distinct buffers: a copy inside an arena is a kernel.
    const steps = spec.steps.map((s): PlanStep => {
      if (s.kind !== 'copy' || regions[s.from].buffer !== regions[s.to].buffer) return s;
      return { kind: 'wgsl', kernel: mapKernel({ name: 'copy', dims: [s.floats], strides: [[1]], offsets: [0], lets: [], outputs: ['x0'] }), inputs: [s.from], outputs: [s.to] };
    });
    const copyPipelines = await Promise.all(steps.map((s, i) => (s !== spec.steps[i] && s.kind === 'wgsl' ? wgslPipeline(device, s.kernel) : null)));
    copyPipelines.forEach((c, i) => c !== null && (wgsl[i] = c));
    // One uniform buffer for every step's params, each block at an aligned offset.
    const blocks: { offset: number; words: Uint32Array }[] = [];
    let uniformBytes = 0;
    const addBlock = (words: Uint32Array) => {
      const offset = uniformBytes;
      uniformBytes += Math.ceil(Math.max(16, words.byteLength) / UNIFORM_ALIGN) * UNIFORM_ALIGN;
      blocks.push({ offset, words });
      return offset;
    };
    const encoded: (Encoded | null)[] = [];
    const layouts: { step: number; offset: number; size: number }[] = [];
    steps.forEach((s, i) => {
      if (s.kind === 'wgsl') {
        if (s.inputs.length !== s.kernel.inputs || s.outputs.length !== s.kernel.outputs) {
          throw new BackendError(`webgpu plan '${label}': step ${i} (${s.kernel.name}) binds ${s.inputs.length} inputs and ${s.outputs.length} outputs, the kernel has ${s.kernel.inputs} and ${s.kernel.outputs}`);
        }
        [...s.inputs, ...s.outputs].forEach((slot) => check(slot, `step ${i} (${s.kernel.name})`));
        const clash = s.outputs.find((o, j) => s.inputs.some((x) => overlap(regions[x], regions[o])) || s.outputs.some((q, k) => k !== j && overlap(regions[q], regions[o])));
        if (clash !== undefined) throw new BackendError(`webgpu plan '${label}': step ${i} (${s.kernel.name}) writes slot ${clash}, whose bytes another of its bindings also covers`);
        layouts.push({ step: i, offset: addBlock(s.kernel.params), size: Math.max(16, s.kernel.params.byteLength) });
      } else if (s.kind === 'gpujs') {
        [...s.inputs, s.output].forEach((slot) => check(slot, `step ${i} (${s.kernel.name})`));
        // gpu.js binds its inputs read-only: WebGPU refuses a buffer bound read-only and writable in one dispatch.
        if (s.inputs.some((x) => regions[x].buffer === regions[s.output].buffer)) throw new BackendError(`webgpu plan '${label}': step ${i} (${s.kernel.name}, a gpu.js kernel) reads a buffer it writes (slot ${s.output})`);
        const built = gpujs[i]!;
        const words = gpujsParams(built, s.kernel);
        layouts.push({ step: i, offset: addBlock(words), size: words.byteLength });
      } else {
        check(s.from, `copy step ${i}`);
        check(s.to, `copy step ${i}`);
      }
    });
    const uniforms = uniformBytes === 0 ? null : device.createBuffer({ size: uniformBytes, usage: USAGE.UNIFORM | USAGE.COPY_DST, label: `${label} uniforms` });
    if (uniforms !== null) {
      const all = new Uint32Array(uniformBytes / 4);
      for (const b of blocks) all.set(b.words, b.offset / 4);
      device.queue.writeBuffer(uniforms, 0, all);
    }
    let li = 0;
    steps.forEach((s, i) => {
      if (s.kind === 'copy') {
        encoded.push(null);
        return;
      }
      const { offset, size } = layouts[li++];
      const uniform = { binding: 0, resource: { buffer: uniforms, offset, size } };
      if (s.kind === 'wgsl') {
        const { pipeline, layout } = wgsl[i]!;
        const slots = [...s.inputs, ...s.outputs];
        const entries = [
          ...slots.map((slot, b) => ({ binding: b, resource: bound(regions[slot]) })),
          { ...uniform, binding: slots.length },
        ];
        encoded.push({ name: s.kernel.name, pipeline, bindGroup: device.createBindGroup({ layout, entries }), groups: s.kernel.workgroups });
      } else {
        const built = gpujs[i]!;
        const entries = [
          uniform,
          ...s.inputs.map((slot, b) => ({ binding: 1 + b, resource: bound(regions[slot]) })),
          { binding: 1 + s.inputs.length, resource: bound(regions[s.output]) },
        ];
        encoded.push({ name: `${s.kernel.name} (gpu.js)`, pipeline: built.pipeline, bindGroup: device.createBindGroup({ layout: built.layout, entries }), groups: built.groups });
      }
    });
    // Consecutive dispatches share one compute pass (each dispatch is its own synchronisation scope).
    const commands: Command[] = [];
    steps.forEach((s, i) => {
      if (s.kind === 'copy') {
        commands.push({ kind: 'copy', from: regions[s.from], to: regions[s.to], bytes: s.floats * 4 });
        return;
      }
      const last = commands[commands.length - 1];
      if (last?.kind === 'pass') last.dispatches.push(encoded[i]!);
      else commands.push({ kind: 'pass', dispatches: [encoded[i]!] });
    });
    spec.reads.forEach((slot) => check(slot, 'a read'));
    return new DevicePlan(shared, spec, buffers, regions, uniforms, commands);
  }

  /** Upload `data` into a slot (before the next run). A queue write: no submission of its own. */
  write(slot: number, data: Float32Array): void {
    this.live();
    const floats = this.spec.buffers[slot];
    if (floats === undefined) throw new BackendError(`webgpu plan '${this.spec.label ?? 'plan'}': no slot ${slot}`);
    if (data.length !== floats) throw new BackendError(`webgpu plan '${this.spec.label ?? 'plan'}': ${describeSlot(this.spec, slot)} cannot take ${data.length} floats`);
    if (floats > 0) this.shared.device.queue.writeBuffer(this.regions[slot].buffer, this.regions[slot].offset, data);
  }

  /**
   * Every step in one command encoder and one submission; resolves to the `reads` slots' data (one map),
   * or at once to [] with `read: false`. `before`: slot-to-slot copies at the start of the encoder (a
   * value the previous run produced becoming an input of this one, without leaving the device).
   */
  run(options: { before?: readonly { from: number; to: number; floats: number }[]; read?: boolean } = {}): Promise<Float32Array[]> {
    this.live();
    const { device } = this.shared;
    // A run the device refuses (a validation error) must fail, not read back zeros.
    device.pushErrorScope('validation');
    const encoder: EncoderLike = device.createCommandEncoder();
    for (const c of options.before ?? []) {
      if (c.floats > 0) copyRegion(encoder, this.regions[c.from], this.regions[c.to], c.floats * 4);
    }
    for (const c of this.commands) {
      if (c.kind === 'copy') {
        if (c.bytes > 0) copyRegion(encoder, c.from, c.to, c.bytes);
        continue;
      }
      const pass = encoder.beginComputePass();
      for (const d of c.dispatches) {
        pass.setPipeline(d.pipeline);
        pass.setBindGroup(0, d.bindGroup);
        pass.dispatchWorkgroups(d.groups[0], d.groups[1], d.groups[2]);
      }
      pass.end();
    }
    const staging = this.stagingBytes === 0 || options.read === false ? null : this.acquireStaging();
    if (staging !== null) {
      this.spec.reads.forEach((slot, i) => {
        const bytes = this.spec.buffers[slot] * 4;
        if (bytes > 0) encoder.copyBufferToBuffer(this.regions[slot].buffer, this.regions[slot].offset, staging.buffer, this.readOffsets[i], bytes);
      });
    }
    device.queue.submit([encoder.finish()]);
    const validated = device.popErrorScope().then((e) => {
      if (e !== null) throw new BackendError(`webgpu plan '${this.spec.label ?? 'plan'}': the device refused the run: ${e.message}`);
    });
    if (staging === null) return validated.then(() => []);
    const read = async () => {
      try {
        await validated;
        await staging.buffer.mapAsync(MAP_READ);
        const mapped = staging.buffer.getMappedRange();
        const out = this.spec.reads.map((slot, i) => new Float32Array(mapped.slice(this.readOffsets[i], this.readOffsets[i] + this.spec.buffers[slot] * 4)));
        staging.buffer.unmap();
        return out;
      } finally {
        staging.busy = false;
      }
    };
    return read();
  }

  /** Read one slot now (its own submission and readback; the staging buffer is kept for the next read of it). */
  async read(slot: number): Promise<Float32Array> {
    this.live();
    const floats = this.spec.buffers[slot];
    if (floats === undefined) throw new BackendError(`webgpu plan '${this.spec.label ?? 'plan'}': no slot ${slot}`);
    if (floats === 0) return new Float32Array(0);
    const { device } = this.shared;
    const bytes = floats * 4;
    let staging = this.slotStaging.get(slot)?.find((s) => !s.busy);
    if (staging === undefined) {
      staging = { buffer: device.createBuffer({ size: bytes, usage: USAGE.MAP_READ | USAGE.COPY_DST, label: `${this.spec.label ?? 'plan'} slot ${slot} readback` }), busy: false };
      this.slotStaging.set(slot, [...(this.slotStaging.get(slot) ?? []), staging]);
    }
    staging.busy = true;
    const encoder = device.createCommandEncoder();
    encoder.copyBufferToBuffer(this.regions[slot].buffer, this.regions[slot].offset, staging.buffer, 0, bytes);
    device.queue.submit([encoder.finish()]);
    try {
      await staging.buffer.mapAsync(MAP_READ);
      const out = new Float32Array(staging.buffer.getMappedRange().slice(0, bytes));
      staging.buffer.unmap();
      return out;
    } finally {
      staging.busy = false;
    }
  }

  /** Bytes of device memory the plan holds (its buffers, uniforms and staging). */
  get deviceBytes(): number {
    let staging = this.staging.length * this.stagingBytes;
    for (const list of this.slotStaging.values()) for (const s of list) staging += s.buffer.size;
    return this.buffers.reduce((n, b) => n + b.size, 0) + (this.uniforms?.size ?? 0) + staging;
  }

  /** Dispatches per run. */
  get dispatches(): number {
    return this.commands.reduce((n, c) => n + (c.kind === 'pass' ? c.dispatches.length : 0), 0);
  }

  /** The kernel name of every dispatch of a run, in order. */
  get dispatchNames(): string[] {
    return this.commands.flatMap((c) => (c.kind === 'pass' ? c.dispatches.map((d) => d.name) : []));
  }

  /**
   * Device time by kernel (for benchmarks): per kernel name, its dispatches in plan order, `repeats` times
   * over, in one submission timed to onSubmittedWorkDone, less an empty submission's time; copies as
   * 'copy'. Kernels run out of their order, so the plan's values are garbage afterwards: the plan is
   * spent (a later run raises BackendError). Sorted by time, largest first.
   */
  async profile(repeats = 3): Promise<{ name: string; dispatches: number; ms: number }[]> {
    if (this.destroyed) throw new BackendError(`webgpu plan '${this.spec.label ?? 'plan'}' has been destroyed`);
    this.spent = true;
    const kinds = new Map<string, Command[]>();
    for (const c of this.commands) {
      if (c.kind === 'copy') kinds.set('copy', [...(kinds.get('copy') ?? []), c]);
      else for (const d of c.dispatches) kinds.set(d.name, [...(kinds.get(d.name) ?? []), { kind: 'pass', dispatches: [d] }]);
    }
    const base = await this.emptySubmission();
    const out: { name: string; dispatches: number; ms: number }[] = [];
    for (const [name, commands] of kinds) {
      await this.timed(commands, 1); // warm
      out.push({ name, dispatches: commands.reduce((n, c) => n + (c.kind === 'pass' ? c.dispatches.length : 1), 0), ms: Math.max(0, (await this.timed(commands, repeats)) - base) / repeats });
    }
    return out.sort((a, b) => b.ms - a.ms);
  }

  /**
   * Device time of one run in ms (for tuning and benchmarks): after a warm-up, the steps in order,
   * repeated to fill about `budgetMs`, in one submission timed to onSubmittedWorkDone, less an empty
   * submission's time; the better of two such measurements. Like `profile`, this spends the plan.
   */
  async time(budgetMs = 4): Promise<number> {
    if (this.destroyed) throw new BackendError(`webgpu plan '${this.spec.label ?? 'plan'}' has been destroyed`);
    this.spent = true;
    const base = await this.emptySubmission();
    await this.timed(this.commands, 1); // warm
    const once = Math.max(1e-3, (await this.timed(this.commands, 1)) - base);
    const repeats = Math.min(50, Math.max(1, Math.ceil(budgetMs / once)));
    const best = Math.min(await this.timed(this.commands, repeats), await this.timed(this.commands, repeats));
    return Math.max(0, best - base) / repeats;
  }

  /** The median time of five empty submissions to queue completion (measured once per device). */
  private emptySubmission(): Promise<number> {
    let base = emptySubmissionMs.get(this.shared.device);
    if (base === undefined) {
      base = (async () => {
        const empty: number[] = [];
        for (let i = 0; i < 5; i++) empty.push(await this.timed([], 1));
        return empty.sort((a, b) => a - b)[2];
      })();
      emptySubmissionMs.set(this.shared.device, base);
    }
    return base;
  }

  /** `commands` (dispatches first, then copies) `times` over in one submission, in ms to queue completion. */
  private async timed(commands: readonly Command[], times: number): Promise<number> {
    const { device } = this.shared;
    const encoder: EncoderLike = device.createCommandEncoder();
    for (let r = 0; r < times; r++) {
      const pass = encoder.beginComputePass();
      for (const c of commands) {
        if (c.kind !== 'pass') continue;
        for (const d of c.dispatches) {
          pass.setPipeline(d.pipeline);
          pass.setBindGroup(0, d.bindGroup);
          pass.dispatchWorkgroups(d.groups[0], d.groups[1], d.groups[2]);
        }
      }
      pass.end();
      for (const c of commands) if (c.kind === 'copy' && c.bytes > 0) copyRegion(encoder, c.from, c.to, c.bytes);
    }
    const t0 = performance.now();
    device.queue.submit([encoder.finish()]);
    await device.queue.onSubmittedWorkDone();
    return performance.now() - t0;
  }

  /** Release the plan's buffers (its pipelines stay cached for the next plan). */
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    for (const b of this.buffers) b.destroy();
    this.uniforms?.destroy();
    for (const s of this.staging) s.buffer.destroy();
    for (const list of this.slotStaging.values()) for (const s of list) s.buffer.destroy();
  }

  private live(): void {
    if (this.destroyed) throw new BackendError(`webgpu plan '${this.spec.label ?? 'plan'}' has been destroyed`);
    if (this.spent) throw new BackendError(`webgpu plan '${this.spec.label ?? 'plan'}' was profiled: its values are garbage, compile it again to run it`);
  }
}
