/**
 * Running an op: on the host through a fast TypeScript loop, or as a gpu.js kernel.
 *
 * Every op has a gpu.js kernel. On the webasm backend, memory-bound ops may instead run a generated
 * TypeScript loop over the Float32Arrays, which measured 1.5-6x faster than gpu.js's webasm kernels for
 * such ops (docs/design.md); the `cpu` backend always runs the kernels and is the reference the laws
 * compare the fast loops against. Inputs that are still pending (webgpu) are awaited first.
 */
import type { IKernelRunShortcut } from 'gpu.js';
import { cachedKernel, getBackend, withBackend, type BackendName } from '../backend/backend.ts';
import { chooseTiling, type MatmulShape, type MatmulTiling, type WgslKernel, type WgslPasses } from '../backend/wgsl-kernels.ts';
import { BackendError, InternalError } from './errors.ts';
import { checkInterrupt } from './interrupt.ts';
import { fromBuffer, type DeviceHandle, type Tensor } from './tensor.ts';
import { sizeOf, type Shape } from './shape.ts';

export interface KernelSpec {
  /** Cache key: must determine `source` and `outSize`. */
  readonly key: string;
  /** gpu.js kernel source (a function expression) with a flat 1-D output. */
  readonly source: string;
}

export type HostImpl = (inputs: Float32Array[], out: Float32Array) => void;

/**
 * GPU backends (webgpu, webgl2) run gpu.js index math in float32 with approximate division, so an exact
 * multiple can divide to just below an integer: their kernel sources decode indices with a correction
 * step (codegen.ts `splitIndex`). The host backends (webasm: IEEE f32 division, cpu: f64) keep the
 * plain, faster form.
 */
const isGpuBackend = (name: BackendName): boolean => name === 'webgpu' || name === 'webgl2';

/** The most elements a GPU kernel indexes exactly with float32 index math (2^24 - 8; see codegen.ts floorDiv). */
export const GPU_MAX_ELEMENTS = 2 ** 24 - 8;

export interface OpImpl {
  /** For profiles and errors. */
  readonly name?: string;
  /**
   * `gpu`: generate the source for a GPU backend (exact index decoding, see isGpuBackend). Every op
   * has one, except those computed on the host by design (random bits: the same numbers on every
   * backend), which have `run`.
   */
  readonly kernel?: (gpu: boolean) => KernelSpec;
  /** Ops with their own kernel engine (matmul) run through this instead of `kernel`. */
  readonly run?: (inputs: Float32Array[], outSize: number) => Float32Array | Promise<Float32Array>;
  /** Fast host loop writing into `out` (zero-filled, unless `fills`); used on webasm when fast paths are on. */
  readonly host?: () => HostImpl;
  /** The host loop writes every output element, so `out` need not be zeroed first (jit's reused buffers). */
  readonly fills?: boolean;
  /**
   * The op as a WGSL kernel for webgpu device plans (src/backend/webgpu-plan.ts): u32 index math,
   * shared-memory reductions and tiles. Absent: a plan runs the op's gpu.js kernel.
   */
  readonly wgsl?: (ctx: WgslContext) => WgslKernel | WgslPasses;
}

/** What a WGSL kernel generator may take into account. */
export interface WgslContext {
  readonly outSize: number;
  /** The device's maxComputeInvocationsPerWorkgroup. */
  readonly maxThreads: number;
  /** A product's tiling as timed on the device (DeviceProgram's tuning); undefined: the cost model's choice. */
  readonly matmulTiling?: (p: MatmulShape) => MatmulTiling | undefined;
}

/** A product's tiling in a plan: as tuned on the device, else the cost model's. */
export const planTiling = (ctx: WgslContext, p: MatmulShape): MatmulTiling => ctx.matmulTiling?.(p) ?? chooseTiling(p, ctx.maxThreads);

let fastPaths = true;
const EMPTY_STAND_IN = new Float32Array(1);

/** Turn the host fast paths on or off (off: every op runs its gpu.js kernel). For tests and benchmarks. */
export function setFastPaths(enabled: boolean): void {
  fastPaths = enabled;
}

/** Whether host fast paths are on (jit lowers to fused host loops only then). */
export const fastPathsEnabled = (): boolean => fastPaths;

function runKernel(spec: KernelSpec, inputs: Float32Array[], outSize: number): Float32Array | Promise<Float32Array> {
  // Sizes are part of the key: a kernel is built for one output size and one set of input lengths.
  const kernel: IKernelRunShortcut = cachedKernel(`${spec.key}#${outSize}#${inputs.map((x) => x.length).join(',')}`, (gpu) =>
    gpu.createKernel(spec.source, { output: [outSize] }),
  );
  const result = kernel(...inputs) as unknown;
  if (result instanceof Promise) return result.then((r) => asFlat(r, outSize));
  return asFlat(result, outSize);
}

/**
 * webgpu: run the kernel in gpu.js pipeline mode, so the result stays in a GPU buffer (a handle) that
 * the next kernels bind directly; it is copied to the host only when someone reads it. `immutable`
 * gives every call its own output buffer. Arguments are host arrays or handles, and the kernel is built
 * for one of each (part of the cache key).
 */
function runKernelOnDevice(spec: KernelSpec, args: readonly (Float32Array | DeviceHandle)[], outSize: number): Promise<DeviceHandle> {
  const kinds = args.map((a) => (a instanceof Float32Array ? `a${a.length}` : 'h')).join(',');
  const kernel: IKernelRunShortcut = cachedKernel(`${spec.key}#${outSize}#${kinds}#device`, (gpu) =>
    gpu.createKernel(spec.source, { output: [outSize], pipeline: true, immutable: true }),
  );
  return Promise.resolve((kernel as unknown as (...a: unknown[]) => Promise<DeviceHandle>)(...args));
}

function asFlat(result: unknown, size: number): Float32Array {
  if (result instanceof Float32Array) return result.length === size ? result : result.slice(0, size);
  if (result !== null && typeof result === 'object' && 'toArray' in result) {
    return asFlat((result as { toArray(): unknown }).toArray(), size);
  }
  throw new InternalError('execute', `a gpu.js kernel returned an unexpected ${Object.prototype.toString.call(result)}`);
}

/** Per-op time spent in `compute`, when profiling (keyed by the impl's name). */
let profile: Map<string, { calls: number; ms: number }> | null = null;

/** Run `fn` and report, per op kind, how many kernel/loop runs it made and their synchronous time. */
export function profileOps<A>(fn: () => A): { value: A; ops: Map<string, { calls: number; ms: number }> } {
  const previous = profile;
  profile = new Map();
  try {
    const value = fn();
    return { value, ops: profile };
  } finally {
    profile = previous;
  }
}

/** Whether `profileOps` is collecting (jit's replays report their steps then). */
export const profiling = (): boolean => profile !== null;

/** Add one run of `name` taking `ms` to the active profile. */
export function addProfile(name: string, ms: number): void {
  if (profile === null) return;
  const entry = profile.get(name) ?? { calls: 0, ms: 0 };
  entry.calls++;
  entry.ms += ms;
  profile.set(name, entry);
}

function compute(impl: OpImpl, inputs: Float32Array[], outSize: number): Float32Array | Promise<Float32Array> {
  if (profile === null) return computeNow(impl, inputs, outSize);
  const t0 = performance.now();
  const result = computeNow(impl, inputs, outSize);
  addProfile(impl.name ?? 'op', performance.now() - t0);
  return result;
}

function computeNow(impl: OpImpl, inputs: Float32Array[], outSize: number): Float32Array | Promise<Float32Array> {
  if (impl.run !== undefined) return impl.run(inputs, outSize);
  const backend = getBackend();
  if (impl.host !== undefined && fastPaths && backend === 'webasm') {
    const out = impl.fills === true ? uninitialized(outSize) : new Float32Array(outSize);
    impl.host()(inputs, out);
    return out;
  }
  const gpu = isGpuBackend(backend);
  if (gpu) checkGpuSize(impl, inputs, outSize, backend);
  // gpu.js cannot take zero-length arrays; an empty input is never read, so any stand-in will do.
  const args = inputs.map((x) => (x.length === 0 ? EMPTY_STAND_IN : x));
  return runKernel(kernelOf(impl)(gpu), args, outSize);
}

function kernelOf(impl: OpImpl): (gpu: boolean) => KernelSpec {
  if (impl.kernel === undefined) throw new BackendError(`op '${impl.name ?? 'op'}' has no kernel and no host computation`);
  return impl.kernel;
}

/**
 * The output of a host impl that writes every element (`fills`): in Node, memory from malloc without the
 * zero fill of `new Float32Array` (Buffer.allocUnsafeSlow: its own ArrayBuffer, never a pooled slice), one
 * pass over the output less per op; elsewhere, and for small outputs, a plain Float32Array.
 */
const NodeBuffer = (globalThis as { Buffer?: { allocUnsafeSlow(bytes: number): Uint8Array } }).Buffer;
const uninitialized = (n: number): Float32Array => {
  if (poison) return new Float32Array(n).fill(NaN);
  if (NodeBuffer === undefined || n < 1024) return new Float32Array(n);
  if (!mallocPrimed) primeMalloc();
  const b = NodeBuffer.allocUnsafeSlow(4 * n);
  return new Float32Array(b.buffer, b.byteOffset, n);
};

/**
 * glibc serves every malloc of 128 KiB or more with a fresh mmap, so each large op output (and the copy
 * dataSync returns) page-faults on first touch: ~1.2 ms of a 3.6 ms 3136x384 softmax + dataSync, 7x the
 * faults of a tuned run. glibc raises that threshold to the size of the largest mmapped block it frees (up
 * to 32 MiB), as MALLOC_MMAP_THRESHOLD_ would: so, once, allocate and drop a block just under 32 MiB. Once
 * V8 has collected it, outputs up to 32 MiB reuse freed heap memory. Other allocators just free it.
 */
let mallocPrimed = false;
function primeMalloc(): void {
  mallocPrimed = true;
  if ((globalThis as { process?: { platform?: string } }).process?.platform === 'linux') NodeBuffer!.allocUnsafeSlow(32 * 2 ** 20 - 64 * 1024);
}

let poison = false;

/** Tests: hand `fills` impls NaN-filled outputs, so an element an impl does not write shows. */
export function setPoisonedOutputs(on: boolean): void {
  poison = on;
}

function checkGpuSize(impl: OpImpl, inputs: Float32Array[], outSize: number, backend: BackendName): void {
  const largest = Math.max(outSize, ...inputs.map((x) => x.length));
  if (largest > GPU_MAX_ELEMENTS) {
    throw new BackendError(`op '${impl.name ?? kernelOf(impl)(true).key.split('|')[0]}' on '${backend}': a tensor of ${largest} elements exceeds the ${GPU_MAX_ELEMENTS} elements (about 2^24) that float32 index math in a GPU kernel addresses exactly; split the work (smaller batch) or use the webasm backend`);
  }
}

let keptAlive: unknown = null;
/** An observable use of `v`, so engines cannot drop it from the closure early. */
function keepAlive(v: unknown): void {
  keptAlive = v;
  void keptAlive;
  keptAlive = null;
}

/** webgpu: inputs bind as their GPU buffers where they have one, else as host data; the result stays on the device. */
function executeOnDevice(inputs: readonly Tensor[], outSize: number, outShape: Shape, impl: OpImpl): Tensor {
  // The input storages stay referenced until the kernel has consumed their buffers: a storage that is
  // garbage-collected releases its GPU buffer (tensor.ts), and a pending op holds only the promise.
  const storages = inputs.map((t) => t.storage);
  const args = storages.map((st) => st.device ?? st.peek());
  const handle = Promise.all(args).then(async (resolved) => {
    const result = await withBackend('webgpu', () => {
      const hostSizes = resolved.filter((a): a is Float32Array => a instanceof Float32Array);
      checkGpuSize(impl, hostSizes, outSize, 'webgpu');
      const bound = resolved.map((a) => (a instanceof Float32Array && a.length === 0 ? EMPTY_STAND_IN : a));
      return runKernelOnDevice(kernelOf(impl)(true), bound, outSize);
    });
    keepAlive(storages);
    return result;
  });
  return fromBuffer({ device: handle }, outShape);
}

/** Run `impl` on `inputs`, giving a new tensor of `outShape`. */
export function execute(inputs: readonly Tensor[], outShape: Shape, impl: OpImpl): Tensor {
  checkInterrupt();
  const out = executeUnaccounted(inputs, outShape, impl);
  // The inputs are read while the output exists: log their use after its allocation, so the memory
  // accounting sees both live at once (as they are).
  for (const t of inputs) t.storage.markUse();
  return out;
}

function executeUnaccounted(inputs: readonly Tensor[], outShape: Shape, impl: OpImpl): Tensor {
  const outSize = sizeOf(outShape);
  if (outSize === 0) return fromBuffer(new Float32Array(0), outShape);
  if (getBackend() === 'webgpu' && impl.run === undefined) return executeOnDevice(inputs, outSize, outShape, impl);
  const reads = inputs.map((t) => t.storage.peek());
  if (reads.every((r): r is Float32Array => r instanceof Float32Array)) {
    return fromBuffer(compute(impl, reads, outSize), outShape);
  }
  // Some input is still pending on an asynchronous backend: run once it arrives, on the backend that was
  // current when the op was issued (a `withBackend` scope has usually ended by then).
  const backend = getBackend();
  return fromBuffer(Promise.all(reads).then((bufs) => withBackend(backend, () => compute(impl, bufs, outSize))), outShape);
}
