/**
 * Running an op: on the host through a fast TypeScript loop, or as a gpu.js kernel.
 *
 * Every op has a gpu.js kernel. On the webasm backend, memory-bound ops may instead run a generated
 * TypeScript loop over the Float32Arrays, which measured 1.5-6x faster than gpu.js's webasm kernels for
 * such ops (docs/design.md); the `cpu` backend always runs the kernels and is the reference the laws
 * compare the fast loops against. Inputs that are still pending (webgpu) are awaited first.
 */
import type { IKernelRunShortcut } from 'gpu.js';
import { cachedKernel, getBackend } from '../backend/backend.ts';
import { fromBuffer, type Tensor } from './tensor.ts';
import { sizeOf, type Shape } from './shape.ts';

export interface KernelSpec {
  /** Cache key: must determine `source` and `outSize`. */
  readonly key: string;
  /** gpu.js kernel source (a function expression) with a flat 1-D output. */
  readonly source: string;
}

export type HostImpl = (inputs: Float32Array[], out: Float32Array) => void;

export interface OpImpl {
  readonly kernel: () => KernelSpec;
  /** Ops with their own kernel engine (matmul) run through this instead of `kernel`. */
  readonly run?: (inputs: Float32Array[], outSize: number) => Float32Array;
  /** Fast host loop writing into `out`; used on webasm when fast paths are on. */
  readonly host?: () => HostImpl;
}

let fastPaths = true;

/** Turn the host fast paths on or off (off: every op runs its gpu.js kernel). For tests and benchmarks. */
export function setFastPaths(enabled: boolean): void {
  fastPaths = enabled;
}
export const fastPathsEnabled = (): boolean => fastPaths;

export function runKernel(spec: KernelSpec, inputs: Float32Array[], outSize: number): Float32Array | Promise<Float32Array> {
  const kernel: IKernelRunShortcut = cachedKernel(spec.key, (gpu) =>
    gpu.createKernel(spec.source, { output: [outSize] }),
  );
  const result = kernel(...inputs) as unknown;
  if (result instanceof Promise) return result.then((r) => asFlat(r, outSize));
  return asFlat(result, outSize);
}

function asFlat(result: unknown, size: number): Float32Array {
  if (result instanceof Float32Array) return result.length === size ? result : result.slice(0, size);
  if (result !== null && typeof result === 'object' && 'toArray' in result) {
    return asFlat((result as { toArray(): unknown }).toArray(), size);
  }
  throw new Error(`kernel returned an unexpected ${Object.prototype.toString.call(result)}`);
}

function compute(impl: OpImpl, inputs: Float32Array[], outSize: number): Float32Array | Promise<Float32Array> {
  if (impl.run !== undefined) return impl.run(inputs, outSize);
  if (impl.host !== undefined && fastPaths && getBackend() === 'webasm') {
    const out = new Float32Array(outSize);
    impl.host()(inputs, out);
    return out;
  }
  return runKernel(impl.kernel(), inputs, outSize);
}

/** Run `impl` on `inputs`, giving a new tensor of `outShape`. */
export function execute(inputs: readonly Tensor[], outShape: Shape, impl: OpImpl): Tensor {
  const outSize = sizeOf(outShape);
  const reads = inputs.map((t) => t.storage.read());
  if (outSize === 0) return fromBuffer(new Float32Array(0), outShape);
  if (reads.every((r): r is Float32Array => r instanceof Float32Array)) {
    return fromBuffer(compute(impl, reads, outSize), outShape);
  }
  return fromBuffer(Promise.all(reads).then((bufs) => compute(impl, bufs, outSize)), outShape);
}
