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
import type { WgslKernel } from './wgsl-kernels.ts';

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

export interface PlanSpec {
  /** Buffer slots, in floats (a slot of size 0 still gets a 4-byte buffer to bind). */
  readonly buffers: readonly number[];
  readonly steps: readonly PlanStep[];
  /** Slots copied back after every run, in this order (one staging buffer, one map). */
  readonly reads: readonly number[];
  /** For errors. */
  readonly label?: string;
}

interface Encoded {
  readonly pipeline: unknown;
  readonly bindGroup: unknown;
  readonly groups: readonly [number, number, number];
}
type Command = { readonly kind: 'pass'; readonly dispatches: Encoded[] } | { readonly kind: 'copy'; readonly from: number; readonly to: number; readonly bytes: number };

interface CachedPipeline {
  readonly pipeline: unknown;
  readonly layout: unknown;
}

/** Compute pipelines of WGSL kernels, by kernel key (one device per process). */
const pipelines = new Map<string, Promise<CachedPipeline>>();

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
      for (let b = 0; b < k.inputs; b++) entries.push({ binding: b, visibility: 4, buffer: { type: 'read-only-storage' } });
      for (let b = 0; b < k.outputs; b++) entries.push({ binding: k.inputs + b, visibility: 4, buffer: { type: 'storage' } });
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

export class DevicePlan {
  private readonly buffers: GpuBufferLike[];
  private readonly uniforms: GpuBufferLike | null;
  /** Staging buffers for the reads: one per run in flight (a mapped buffer cannot take the next copy). */
  private readonly staging: { buffer: GpuBufferLike; busy: boolean }[] = [];
  private readonly stagingBytes: number;
  /** Staging buffers of out-of-band reads, by slot. */
  private readonly slotStaging = new Map<number, { buffer: GpuBufferLike; busy: boolean }[]>();
  private readonly readOffsets: number[];
  private destroyed = false;

  private constructor(
    private readonly shared: WebGPUShared,
    readonly spec: PlanSpec,
    buffers: GpuBufferLike[],
    uniforms: GpuBufferLike | null,
    private readonly commands: Command[],
  ) {
    this.buffers = buffers;
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

    const buffers = spec.buffers.map((floats, slot) =>
      device.createBuffer({ size: Math.max(4, Math.ceil((floats * 4) / 4) * 4), usage: USAGE.STORAGE | USAGE.COPY_SRC | USAGE.COPY_DST, label: `${label} slot ${slot}` }),
    );
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
    spec.steps.forEach((s, i) => {
      if (s.kind === 'wgsl') {
        if (s.inputs.length !== s.kernel.inputs || s.outputs.length !== s.kernel.outputs) {
          throw new BackendError(`webgpu plan '${label}': step ${i} (${s.kernel.name}) binds ${s.inputs.length} inputs and ${s.outputs.length} outputs, the kernel has ${s.kernel.inputs} and ${s.kernel.outputs}`);
        }
        [...s.inputs, ...s.outputs].forEach((slot) => check(slot, `step ${i} (${s.kernel.name})`));
        const clash = s.outputs.find((o) => s.inputs.includes(o));
        if (clash !== undefined) throw new BackendError(`webgpu plan '${label}': step ${i} (${s.kernel.name}) reads and writes slot ${clash} in one dispatch`);
        layouts.push({ step: i, offset: addBlock(s.kernel.params), size: Math.max(16, s.kernel.params.byteLength) });
      } else if (s.kind === 'gpujs') {
        [...s.inputs, s.output].forEach((slot) => check(slot, `step ${i} (${s.kernel.name})`));
        if (s.inputs.includes(s.output)) throw new BackendError(`webgpu plan '${label}': step ${i} (${s.kernel.name}) reads and writes slot ${s.output} in one dispatch`);
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
    spec.steps.forEach((s, i) => {
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
          ...slots.map((slot, b) => ({ binding: b, resource: { buffer: buffers[slot] } })),
          { ...uniform, binding: slots.length },
        ];
        encoded.push({ pipeline, bindGroup: device.createBindGroup({ layout, entries }), groups: s.kernel.workgroups });
      } else {
        const built = gpujs[i]!;
        const entries = [
          uniform,
          ...s.inputs.map((slot, b) => ({ binding: 1 + b, resource: { buffer: buffers[slot] } })),
          { binding: 1 + s.inputs.length, resource: { buffer: buffers[s.output] } },
        ];
        encoded.push({ pipeline: built.pipeline, bindGroup: device.createBindGroup({ layout: built.layout, entries }), groups: built.groups });
      }
    });
    // Consecutive dispatches share one compute pass (each dispatch is its own synchronisation scope).
    const commands: Command[] = [];
    spec.steps.forEach((s, i) => {
      if (s.kind === 'copy') {
        commands.push({ kind: 'copy', from: s.from, to: s.to, bytes: s.floats * 4 });
        return;
      }
      const last = commands[commands.length - 1];
      if (last?.kind === 'pass') last.dispatches.push(encoded[i]!);
      else commands.push({ kind: 'pass', dispatches: [encoded[i]!] });
    });
    spec.reads.forEach((slot) => check(slot, 'a read'));
    return new DevicePlan(shared, spec, buffers, uniforms, commands);
  }

  /** Upload `data` into a slot (before the next run). A queue write: no submission of its own. */
  write(slot: number, data: Float32Array): void {
    this.live();
    const floats = this.spec.buffers[slot];
    if (floats === undefined) throw new BackendError(`webgpu plan '${this.spec.label ?? 'plan'}': no slot ${slot}`);
    if (data.length !== floats) throw new BackendError(`webgpu plan '${this.spec.label ?? 'plan'}': ${describeSlot(this.spec, slot)} cannot take ${data.length} floats`);
    if (floats > 0) this.shared.device.queue.writeBuffer(this.buffers[slot], 0, data);
  }

  /**
   * Every step in one command encoder and one submission; resolves to the `reads` slots' data (one map),
   * or at once to [] with `read: false`. `before`: slot-to-slot copies at the start of the encoder (a
   * value the previous run produced becoming an input of this one, without leaving the device).
   */
  run(options: { before?: readonly { from: number; to: number; floats: number }[]; read?: boolean } = {}): Promise<Float32Array[]> {
    this.live();
    const { device } = this.shared;
    const encoder: EncoderLike = device.createCommandEncoder();
    for (const c of options.before ?? []) {
      if (c.floats > 0) encoder.copyBufferToBuffer(this.buffers[c.from], 0, this.buffers[c.to], 0, c.floats * 4);
    }
    for (const c of this.commands) {
      if (c.kind === 'copy') {
        if (c.bytes > 0) encoder.copyBufferToBuffer(this.buffers[c.from], 0, this.buffers[c.to], 0, c.bytes);
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
        if (bytes > 0) encoder.copyBufferToBuffer(this.buffers[slot], 0, staging.buffer, this.readOffsets[i], bytes);
      });
    }
    device.queue.submit([encoder.finish()]);
    if (staging === null) return Promise.resolve([]);
    const read = async () => {
      try {
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
    encoder.copyBufferToBuffer(this.buffers[slot], 0, staging.buffer, 0, bytes);
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
  }
}
