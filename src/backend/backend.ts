/**
 * Backend choice and the gpu.js kernel cache.
 *
 * One gpu.js `GPU` instance per backend, created lazily. Kernels are cached by a string key that
 * encodes the op and its full shape signature, so each kernel is compiled once; the cache is a
 * bounded LRU that calls `destroy()` on eviction because undestroyed gpu.js kernels pin wasm memory.
 */
import type { GPU, IKernelRunShortcut } from 'gpu.js';
import { gpujs } from './gpujs.ts';
import { applyGpuJsPatches } from './gpujs-patch.ts';
import { prepareNavigatorGpu } from './webgpu-device.ts';
import { ArgumentError, BackendError } from '../tensor/errors.ts';

export type BackendName = 'webasm' | 'cpu' | 'webgpu' | 'webgl2';
export const BACKENDS: readonly BackendName[] = ['webasm', 'cpu', 'webgpu', 'webgl2'];


let current: BackendName = 'webasm';
const gpus = new Map<BackendName, GPU>();

export function getBackend(): BackendName {
  return current;
}

export function setBackend(name: BackendName): void {
  if (!BACKENDS.includes(name)) {
    throw new ArgumentError('setBackend', `unknown backend '${String(name)}'; expected one of ${BACKENDS.join(', ')}`);
  }
  current = name;
}

/** Run `fn` with `name` as the current backend, restoring the previous one afterwards. */
export function withBackend<A>(name: BackendName, fn: () => A): A {
  const previous = current;
  setBackend(name);
  try {
    return fn();
  } finally {
    current = previous;
  }
}

export function gpuFor(name: BackendName = current): GPU {
  let gpu = gpus.get(name);
  if (gpu === undefined) {
    if (name === 'webgpu' && (globalThis as { navigator?: { gpu?: unknown } }).navigator?.gpu === undefined) {
      throw new BackendError("backend 'webgpu': no navigator.gpu here; in Node call `await initWebGPU()` (or `await selectBackend('webgpu')`) first");
    }
    applyGpuJsPatches();
    if (name === 'webgpu') prepareNavigatorGpu();
    const { GPU: Gpu } = gpujs();
    gpu = new Gpu({ mode: name } as ConstructorParameters<typeof GPU>[0]);
    gpus.set(name, gpu);
  }
  return gpu;
}

// ---------------------------------------------------------------------------------------------
// Kernel cache

/**
 * Kernels kept per backend (LRU). A training step of a small Rev-MViT uses ~600 distinct kernels on the
 * kernel-only backends, and a recompile costs milliseconds (a shader compile on a GPU); each webasm
 * kernel holds its own WebAssembly memory, but webasm runs few kernels (host loops do the rest).
 */
let cacheCapacity = 2048;

/** Change how many kernels each backend keeps compiled (evicting the least recently used now if needed). */
export function setKernelCacheCapacity(n: number): void {
  if (!Number.isInteger(n) || n < 1) throw new ArgumentError('setKernelCacheCapacity', `expected a positive integer, got ${n}`);
  cacheCapacity = n;
  for (const [name, cache] of caches) {
    while (cache.size > cacheCapacity) {
      const oldest = cache.keys().next().value as string;
      release(gpuFor(name), cache.get(oldest)!);
      cache.delete(oldest);
      stats.evicted++;
    }
  }
}
const caches = new Map<BackendName, Map<string, IKernelRunShortcut>>();
const stats = { compiled: 0, evicted: 0, hits: 0 };

/** Counters for benchmarks and tests: kernels compiled, evicted and cache hits since start. */
export function kernelCacheStats(): Readonly<typeof stats> & { size: number } {
  let size = 0;
  for (const c of caches.values()) size += c.size;
  return { ...stats, size };
}

/**
 * The kernel for `key` on the current backend, built once with `build` and kept in an LRU.
 * `key` must encode everything that `build` bakes into the kernel (op, shapes, constants).
 */
export function cachedKernel(key: string, build: (gpu: GPU) => IKernelRunShortcut): IKernelRunShortcut {
  const name = current;
  let cache = caches.get(name);
  if (cache === undefined) {
    cache = new Map();
    caches.set(name, cache);
  }
  const hit = cache.get(key);
  if (hit !== undefined) {
    // Re-insert to mark as most recently used (Map keeps insertion order).
    cache.delete(key);
    cache.set(key, hit);
    stats.hits++;
    return hit;
  }
  const kernel = build(gpuFor(name));
  stats.compiled++;
  cache.set(key, kernel);
  if (cache.size > cacheCapacity) {
    const oldest = cache.keys().next().value as string;
    const evicted = cache.get(oldest)!;
    cache.delete(oldest);
    release(gpuFor(name), evicted);
    stats.evicted++;
  }
  return kernel;
}

/**
 * Destroy a kernel and drop gpu.js's own reference to it: gpu.js 2.24's cpu kernels do not remove
 * themselves from `gpu.kernels` on destroy, which otherwise keeps every kernel ever built alive.
 */
function release(gpu: GPU, kernel: IKernelRunShortcut): void {
  kernel.destroy();
  const list = (gpu as unknown as { kernels?: unknown[] }).kernels;
  const inner = (kernel as unknown as { kernel?: unknown }).kernel;
  const i = list === undefined ? -1 : list.indexOf(inner);
  if (i >= 0) list!.splice(i, 1);
}

/** Destroy every cached kernel (all backends). */
export function clearKernelCache(): void {
  for (const [name, cache] of caches) {
    for (const k of cache.values()) release(gpuFor(name), k);
    cache.clear();
  }
}
