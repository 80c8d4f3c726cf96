/**
 * The one WebAssembly memory the generated kernels share (row ops, depthwise convolution, fused
 * elementwise groups; the GEMM keeps its own), and the staging that moves JavaScript arrays through it.
 *
 * Tensors live in ordinary Float32Arrays, which wasm cannot address, so a kernel call copies its
 * inputs into this memory and its outputs out. Done naively that triples the memory traffic of a
 * memory-bound op; done in chunks of ~64 KiB per stream (`runChunked`), the copies stay in L1/L2 and
 * main memory sees each element read once and written once, as in a native kernel. Chunking also
 * bounds the memory: it grows only to the largest chunk (or whole operand, for ops that read
 * irregularly) ever needed, is reused by every later call, and never shrinks.
 */
import { BackendError } from '../tensor/errors.ts';
import { getBackend } from './backend.ts';
import { wasmSimdAvailable } from './wasm-builder.ts';

let enabled = true;

/**
 * Route the webasm fast paths of row ops, depthwise convolution and fused groups to the generated
 * wasm kernels (true, the default, where the engine has WebAssembly SIMD) or to the TypeScript host
 * loops (false; tests compare the two). Returns the previous setting.
 */
export function setWasmKernels(on: boolean): boolean {
  const previous = enabled;
  enabled = on;
  return previous;
}

/**
 * Whether the fast paths run the generated wasm kernels now: they are the webasm backend's; on 'cpu' (the
 * reference) host loops run, so code that calls an op's host impl directly (jit's cpu lowering) computes
 * what the backend's own kernels compute.
 */
export const wasmKernelsOn = (): boolean => enabled && getBackend() === 'webasm' && wasmSimdAvailable();

const PAGE = 65536;
/** Elements per stream per chunk: 64 KiB, so a 3-stream op keeps ~200 KiB in flight (L2-resident). */
export const CHUNK_FLOATS = 16384;
/** Bytes after each staged region that a kernel may read or write past the end (its last partial vector). */
export const SLACK_BYTES = 64;

export const align64 = (bytes: number): number => Math.ceil(bytes / 64) * 64;

const memory = new WebAssembly.Memory({ initial: 16 });
let heap = new Float32Array(memory.buffer);

/** The shared memory, imported by every kernel module as `env.memory`. */
export const kernelMemory: WebAssembly.Memory = memory;

/** The memory as a Float32Array (re-created after a grow, which detaches the old view). */
export function kernelHeap(): Float32Array {
  if (heap.buffer !== memory.buffer) heap = new Float32Array(memory.buffer);
  return heap;
}

/** Grow the shared memory to at least `bytes`; returns the (possibly new) heap view. */
export function ensureKernelBytes(bytes: number): Float32Array {
  if (bytes > 2 ** 31) throw new BackendError(`wasm kernels: an operation needs ${bytes} bytes of WebAssembly memory (the limit is 2 GiB)`);
  const have = memory.buffer.byteLength;
  if (bytes > have) memory.grow(Math.ceil((bytes - have) / PAGE));
  return kernelHeap();
}

/** Bytes the shared memory holds now (it grows to the largest call and stays). */
export function kernelMemoryBytes(): number {
  return memory.buffer.byteLength;
}

/**
 * Run a row-wise kernel over `rows` rows of `rowLen` contiguous elements, in chunks of whole rows.
 * Input k's chunk is staged at `ptrs[k]`, the output chunk at `ptrs[ins.length]` (byte offsets), each
 * region followed by SLACK_BYTES; `fixed` arrays (the same for every row, e.g. a weight) are staged once,
 * after those, at `ptrs[ins.length + 1 + j]`. `call(ptrs, n)` processes n rows. `ins` and `out` hold
 * rows * rowLen elements (rowLen 1: an elementwise op).
 */
export function runChunked(
  ins: readonly Float32Array[], out: Float32Array, rowLen: number, call: (ptrs: readonly number[], n: number) => void, fixed: readonly Float32Array[] = [],
): void {
  if (out.length === 0) return;
  const rows = out.length / rowLen;
  const per = Math.max(1, Math.floor(CHUNK_FLOATS / rowLen));
  const region = align64(Math.min(per, rows) * rowLen * 4 + SLACK_BYTES);
  const ptrs = Array.from({ length: ins.length + 1 }, (_, k) => k * region);
  let at = ptrs.length * region;
  for (const a of fixed) {
    ptrs.push(at);
    at += align64(a.length * 4 + SLACK_BYTES);
  }
  let h = ensureKernelBytes(at);
  fixed.forEach((a, j) => h.set(a, ptrs[ins.length + 1 + j] / 4));
  const outAt = ptrs[ins.length] / 4;
  for (let r0 = 0; r0 < rows; r0 += per) {
    const n = Math.min(per, rows - r0);
    const lo = r0 * rowLen;
    const hi = lo + n * rowLen;
    for (let k = 0; k < ins.length; k++) h.set(ins[k].subarray(lo, hi), ptrs[k] / 4);
    call(ptrs, n);
    h = kernelHeap();
    out.set(h.subarray(outAt, outAt + (hi - lo)), lo);
  }
}
