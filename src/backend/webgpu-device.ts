/**
 * The WebGPU device every webgpu kernel runs on, and counters of what is asked of it.
 *
 * gpu.js keeps one shared GPUDevice (its `WebGPUContext`); our own WGSL kernels and device plans
 * (webgpu-plan.ts) must run on that same device, since their buffers are bound by gpu.js kernels and
 * the other way round. `webgpuDevice()` hands it out.
 *
 * Before gpu.js asks for the device, `prepareNavigatorGpu()` wraps `navigator.gpu.requestAdapter` so
 * that the device it gets
 *  - has the compute limits the adapter offers instead of WebGPU's defaults (compatibility mode caps
 *    a workgroup at 128 invocations and 16 KiB of shared memory; a tiled matmul wants more), and
 *  - counts its work: queue submissions, compute pipelines created, readbacks (mapAsync for reading),
 *    uploads (writeBuffer), buffers created and compute dispatches.
 * Tests assert these counts without a GPU (Mesa llvmpipe in Node, SwiftShader in Chromium): e.g. a
 * replayed training step makes at most a few submissions, one readback and no new pipelines.
 *
 * A device that was created before the wrap (someone used gpu.js's webgpu mode before initWebGPU) is
 * instrumented when `webgpuDevice()` first sees it; only the limits stay at their defaults then.
 */
import * as GpuJs from 'gpu.js';
import { BackendError } from '../tensor/errors.ts';

/** What the device has been asked to do since the process started (see `webgpuCounters`). */
export interface WebGPUCounters {
  /** queue.submit calls. */
  readonly submits: number;
  /** Command buffers in those submissions. */
  readonly commandBuffers: number;
  /** Compute pipelines created (sync or async): each is a shader compile. */
  readonly pipelines: number;
  /** Shader modules created. */
  readonly shaderModules: number;
  /** Buffers mapped for reading (mapAsync with MAP_READ): each is a device-to-host round trip. */
  readonly readbacks: number;
  /** Bytes in those reads (the mapped ranges; the whole buffer when no size was given). */
  readonly readbackBytes: number;
  /** queue.writeBuffer calls (host-to-device copies). */
  readonly uploads: number;
  readonly uploadBytes: number;
  /** Buffers created, and their bytes. */
  readonly buffers: number;
  readonly bufferBytes: number;
  /** dispatchWorkgroups calls in compute passes. */
  readonly dispatches: number;
}

const zero = (): { -readonly [K in keyof WebGPUCounters]: number } => ({
  submits: 0,
  commandBuffers: 0,
  pipelines: 0,
  shaderModules: 0,
  readbacks: 0,
  readbackBytes: 0,
  uploads: 0,
  uploadBytes: 0,
  buffers: 0,
  bufferBytes: 0,
  dispatches: 0,
});

const counts = zero();

/** A snapshot of the counters (they only grow; subtract two snapshots for a region). */
export function webgpuCounters(): WebGPUCounters {
  return { ...counts };
}

/** `after - before`, field by field. */
export function counterDelta(before: WebGPUCounters, after: WebGPUCounters): WebGPUCounters {
  const d = zero();
  for (const k of Object.keys(d) as (keyof WebGPUCounters)[]) d[k] = after[k] - before[k];
  return d;
}

/** Run `fn` (awaited) and report what it asked of the device. */
export async function countWebGPU<A>(fn: () => A | Promise<A>): Promise<{ value: A; counts: WebGPUCounters }> {
  const before = webgpuCounters();
  const value = await fn();
  return { value, counts: counterDelta(before, webgpuCounters()) };
}

// ---------------------------------------------------------------------------------------------
// Instrumentation

/** Limits raised to what the adapter offers (all are "max" limits, so asking for the adapter's value is valid). */
const RAISED_LIMITS = [
  'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupSizeX',
  'maxComputeWorkgroupSizeY',
  'maxComputeWorkgroupStorageSize',
  'maxStorageBuffersPerShaderStage',
  'maxStorageBufferBindingSize',
  'maxBufferSize',
] as const;

const MAP_READ = 0x0001;
const WRAPPED = Symbol.for('revgrad.webgpu.instrumented');

type Fn = (...args: never[]) => unknown;
type Obj = Record<string | symbol, unknown>;

/** Replace `obj[name]` by a wrapper that calls `before(args)` and then the original (bound to obj). */
function wrapMethod(obj: Obj, name: string, around: (original: Fn, args: unknown[]) => unknown): void {
  const original = obj[name] as Fn | undefined;
  if (typeof original !== 'function') return;
  const bound = original.bind(obj) as Fn;
  Object.defineProperty(obj, name, {
    value: (...args: unknown[]) => around(bound, args),
    configurable: true,
    writable: true,
  });
}

const call = (f: Fn, args: unknown[]): unknown => (f as (...a: unknown[]) => unknown)(...args);

function instrumentPass(pass: Obj): Obj {
  wrapMethod(pass, 'dispatchWorkgroups', (f, args) => {
    counts.dispatches++;
    return call(f, args);
  });
  wrapMethod(pass, 'dispatchWorkgroupsIndirect', (f, args) => {
    counts.dispatches++;
    return call(f, args);
  });
  return pass;
}

/** Count what `device` is asked to do (idempotent). */
export function instrumentDevice(device: object): void {
  const d = device as Obj;
  if (d[WRAPPED] === true) return;
  Object.defineProperty(d, WRAPPED, { value: true });
  wrapMethod(d, 'createComputePipeline', (f, args) => {
    counts.pipelines++;
    return call(f, args);
  });
  wrapMethod(d, 'createComputePipelineAsync', (f, args) => {
    counts.pipelines++;
    return call(f, args);
  });
  wrapMethod(d, 'createShaderModule', (f, args) => {
    counts.shaderModules++;
    return call(f, args);
  });
  wrapMethod(d, 'createBuffer', (f, args) => {
    const desc = args[0] as { size: number; usage: number };
    counts.buffers++;
    counts.bufferBytes += desc.size;
    const buffer = call(f, args) as Obj;
    if ((desc.usage & MAP_READ) !== 0) {
      wrapMethod(buffer, 'mapAsync', (map, mapArgs) => {
        const [mode, offset, size] = mapArgs as [number, number | undefined, number | undefined];
        if ((mode & MAP_READ) !== 0) {
          counts.readbacks++;
          counts.readbackBytes += size ?? desc.size - (offset ?? 0);
        }
        return call(map, mapArgs);
      });
    }
    return buffer;
  });
  wrapMethod(d, 'createCommandEncoder', (f, args) => {
    const encoder = call(f, args) as Obj;
    wrapMethod(encoder, 'beginComputePass', (begin, passArgs) => instrumentPass(call(begin, passArgs) as Obj));
    return encoder;
  });
  const queue = d.queue as Obj;
  wrapMethod(queue, 'submit', (f, args) => {
    counts.submits++;
    counts.commandBuffers += (args[0] as unknown[]).length;
    return call(f, args);
  });
  wrapMethod(queue, 'writeBuffer', (f, args) => {
    const data = args[2] as ArrayBufferView | ArrayBuffer;
    const elementBytes = ArrayBuffer.isView(data) ? (data as unknown as { BYTES_PER_ELEMENT?: number }).BYTES_PER_ELEMENT ?? 1 : 1;
    const size = args[4] as number | undefined;
    counts.uploads++;
    counts.uploadBytes += size !== undefined ? size * elementBytes : data.byteLength - ((args[3] as number | undefined) ?? 0) * elementBytes;
    return call(f, args);
  });
}

interface AdapterLike {
  readonly limits: Record<string, number>;
  requestDevice(desc?: { requiredLimits?: Record<string, number>; requiredFeatures?: string[] }): Promise<object>;
}
interface GpuLike {
  requestAdapter(options?: object): Promise<AdapterLike | null>;
}

/**
 * Wrap `navigator.gpu.requestAdapter` (idempotent) so that devices come with the adapter's compute
 * limits and are counted. Call before gpu.js first asks for its device (initWebGPU and gpuFor do).
 */
export function prepareNavigatorGpu(): void {
  const nav = (globalThis as { navigator?: { gpu?: GpuLike } }).navigator;
  const gpu = nav?.gpu as (GpuLike & Obj) | undefined;
  if (gpu === undefined || gpu[WRAPPED] === true) return;
  Object.defineProperty(gpu, WRAPPED, { value: true });
  wrapMethod(gpu, 'requestAdapter', async (request, args) => {
    const adapter = (await call(request, args)) as (AdapterLike & Obj) | null;
    if (adapter === null || adapter[WRAPPED] === true) return adapter;
    Object.defineProperty(adapter, WRAPPED, { value: true });
    wrapMethod(adapter, 'requestDevice', async (requestDevice, devArgs) => {
      const desc = (devArgs[0] ?? {}) as { requiredLimits?: Record<string, number> };
      const requiredLimits: Record<string, number> = { ...desc.requiredLimits };
      for (const name of RAISED_LIMITS) {
        const offered = adapter.limits[name];
        if (typeof offered === 'number' && offered > (requiredLimits[name] ?? 0)) requiredLimits[name] = offered;
      }
      const device = (await call(requestDevice, [{ ...desc, requiredLimits }])) as object;
      instrumentDevice(device);
      return device;
    });
    return adapter;
  });
}

/** GPUDevice, as far as this library uses it (the WebGPU types are not part of our TypeScript setup). */
export interface DeviceLike {
  readonly limits: Record<string, number>;
  readonly queue: {
    submit(buffers: unknown[]): void;
    writeBuffer(buffer: unknown, offset: number, data: ArrayBufferView | ArrayBuffer, dataOffset?: number, size?: number): void;
    onSubmittedWorkDone(): Promise<void>;
  };
  createBuffer(desc: { size: number; usage: number; mappedAtCreation?: boolean; label?: string }): GpuBufferLike;
  createShaderModule(desc: { code: string; label?: string }): { getCompilationInfo(): Promise<{ messages: readonly { type: string; message: string; lineNum: number; linePos: number }[] }> };
  createComputePipeline(desc: object): PipelineLike;
  createBindGroupLayout(desc: object): unknown;
  createPipelineLayout(desc: object): unknown;
  createBindGroup(desc: object): unknown;
  createCommandEncoder(desc?: object): EncoderLike;
  pushErrorScope(filter: string): void;
  popErrorScope(): Promise<{ message: string } | null>;
}
export interface GpuBufferLike {
  readonly size: number;
  mapAsync(mode: number, offset?: number, size?: number): Promise<void>;
  getMappedRange(offset?: number, size?: number): ArrayBuffer;
  unmap(): void;
  destroy(): void;
}
export interface PipelineLike {
  getBindGroupLayout(index: number): unknown;
}
export interface EncoderLike {
  beginComputePass(desc?: object): {
    setPipeline(p: unknown): void;
    setBindGroup(i: number, g: unknown): void;
    dispatchWorkgroups(x: number, y?: number, z?: number): void;
    end(): void;
  };
  copyBufferToBuffer(src: unknown, srcOffset: number, dst: unknown, dstOffset: number, size: number): void;
  clearBuffer(buffer: unknown, offset?: number, size?: number): void;
  finish(): unknown;
}

/** gpu.js's context: the device and the object its buffer handles compare against. */
export interface WebGPUShared {
  readonly device: DeviceLike;
  /** gpu.js's context object (`{ adapter, device, isLost }`); handles we create must carry it. */
  readonly context: { readonly device: DeviceLike; readonly isLost: boolean };
}

/**
 * The device gpu.js's webgpu kernels run on (acquired on first use), counted. Rejects with a
 * BackendError where there is no WebGPU (call initWebGPU or selectBackend first in Node).
 */
export async function webgpuDevice(): Promise<WebGPUShared> {
  prepareNavigatorGpu();
  let context: WebGPUShared['context'];
  try {
    const shared = (GpuJs as unknown as { WebGPUContext: { acquire(): Promise<WebGPUShared['context']> } }).WebGPUContext;
    context = await shared.acquire();
  } catch (e) {
    throw new BackendError(`webgpu: no device: ${e instanceof Error ? e.message : String(e)}; in Node call 'await initWebGPU()' first`);
  }
  instrumentDevice(context.device);
  return { device: context.device, context };
}
