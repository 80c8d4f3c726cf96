/**
 * Batched matmul engine: the host entry `matmulKernelRun` and the gpu.js kernels.
 *
 * webasm: the hand-generated WebAssembly SIMD GEMM (wasm-gemm.ts) where the engine has SIMD. The
 * gpu.js "rows4" kernel is the fallback (no SIMD, or `setWasmGemm(false)` for tests and benchmarks):
 * A is packed to [batch][Mp/4][K][4] (M padded to a multiple of 4, transA folded into the packing), B
 * is used as [batch][K][N] (transB folded into a transposing copy). Each thread computes 4 rows of one
 * output column and returns them as Array(4): per k-step one lane-varying gather of B feeds 16 MACs,
 * while the 4 A values are lane-uniform scalar loads. The k-loop is unrolled x2 (Rows4Options). All
 * index math is written inline so it stays i32. The result is read back as one flat Float32Array (the
 * kernel's per-cell output shaping is skipped, see `skipOutputShaping`) and un-interleaved into
 * row-major order in one pass. Numbers and alternatives: docs/perf-notes-matmul.md.
 *
 * cpu (reference backend): one scalar kernel with a 1D output and transposes in the index math.
 *
 * webgpu / webgl2 (`matmulKernelAny`): one kernel over a [n, m, batch] grid (x = column, y = row,
 * z = batch), so all index math stays integer (i32) and exact at any size; the transposes are in the
 * index math. webgpu kernels return a Promise. A GPU variant of rows4 (4 rows per thread, the same
 * packing) is kept for benchmarks (`setGpuMatmulVariant`, bench/gpu-check.sh); 'plain' is the default
 * until a GPU measurement says otherwise.
 */
import type { GPU, IKernelRunShortcut } from 'gpu.js';
import { cachedKernel, getBackend } from './backend.ts';
import { checkMatmulProblem, type MatmulProblem } from './matmul-problem.ts';
import { wasmSimdAvailable } from './wasm-builder.ts';
import { wasmGemm } from './wasm-gemm.ts';
import { ArgumentError, BackendError, InternalError } from '../tensor/errors.ts';

export type { MatmulProblem };

/** Tuning knobs of the webasm kernel; the defaults are the measured best (docs/perf-notes-matmul.md). */
export interface Rows4Options {
  /** k-steps per loop iteration. */
  unroll: number;
  /** Let gpu.js shape the Array(4) output (one subarray per cell) instead of returning the flat buffer. */
  shapeOutput: boolean;
}

const DEFAULT_ROWS4: Rows4Options = { unroll: 2, shapeOutput: false };

/**
 * C = op(A) @ op(B) for each batch entry, on the current backend (synchronous backends only).
 * a: batch x (transA ? [k,m] : [m,k]) row-major; b: batch x (transB ? [n,k] : [k,n]);
 * returns batch x [m,n] row-major.
 */
export function matmulKernelRun(p: MatmulProblem, a: Float32Array, b: Float32Array): Float32Array {
  checkMatmulProblem('matmul', p, a, b);
  const { batch, m, k, n } = p;
  if (batch * m * n === 0) return new Float32Array(0);
  // An empty reduction is all zeros; gpu.js cannot take zero-length arrays.
  if (k === 0) return new Float32Array(batch * m * n);
  const backend = getBackend();
  if (backend === 'webasm') {
    // Node CPU path: the hand-generated wasm SIMD GEMM (wasm-gemm.ts) when the engine has SIMD; the
    // gpu.js rows4 kernel stays as the fallback and for tests/benchmarks (setWasmGemm(false)).
    if (useWasmGemm && wasmSimdAvailable()) return wasmGemm(p, a, b);
    return runRows4(p, a, b, DEFAULT_ROWS4);
  }
  if (backend === 'cpu') return runPlain(p, a, b);
  throw new BackendError(`matmulKernelRun: backend '${backend}' is not supported here (synchronous webasm and cpu only)`);
}

let useWasmGemm = true;

/**
 * webasm only: route matmulKernelRun to the wasm SIMD GEMM (true, the default) or to the gpu.js rows4
 * kernel (false). The webgpu/webgl2 and cpu paths are unaffected. Returns the previous setting.
 */
export function setWasmGemm(enabled: boolean): boolean {
  const previous = useWasmGemm;
  useWasmGemm = enabled;
  return previous;
}

export type GpuMatmulVariant = 'plain' | 'rows4';
let gpuVariant: GpuMatmulVariant = 'plain';

/** Choose the webgpu/webgl2 matmul kernel (benchmarks). */
export function setGpuMatmulVariant(variant: GpuMatmulVariant): void {
  if (variant !== 'plain' && variant !== 'rows4') throw new ArgumentError('matmul', `unknown GPU variant '${String(variant)}' (expected 'plain' or 'rows4')`);
  gpuVariant = variant;
}

/**
 * matmulKernelRun on every backend: the same on webasm and cpu; on webgpu (a Promise) and webgl2 the
 * GPU kernels described above. Same layouts as matmulKernelRun.
 */
export function matmulKernelAny(p: MatmulProblem, a: Float32Array, b: Float32Array): Float32Array | Promise<Float32Array> {
  const backend = getBackend();
  if (backend !== 'webgpu' && backend !== 'webgl2') return matmulKernelRun(p, a, b);
  checkMatmulProblem('matmul', p, a, b);
  const { batch, m, k, n } = p;
  if (batch * m * n === 0) return new Float32Array(0);
  if (k === 0) return new Float32Array(batch * m * n);
  return gpuVariant === 'rows4' ? runRows4Gpu(p, a, b) : runGrid(p, a, b);
}

/** Plain float64 loops, for tests. Same layouts as matmulKernelRun. */
export function matmulReference(p: MatmulProblem, a: Float32Array, b: Float32Array): Float64Array {
  checkMatmulProblem('matmul', p, a, b);
  const { batch, m, k, n, transA, transB } = p;
  const out = new Float64Array(batch * m * n);
  for (let z = 0; z < batch; z++) {
    const aBase = z * m * k;
    const bBase = z * k * n;
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        let s = 0;
        for (let t = 0; t < k; t++) {
          const av = a[aBase + (transA ? t * m + i : i * k + t)];
          const bv = b[bBase + (transB ? j * k + t : t * n + j)];
          s += av * bv;
        }
        out[(z * m + i) * n + j] = s;
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// webasm: rows4 formulation

const roundUp4 = (x: number): number => Math.ceil(x / 4) * 4;

/** The webasm formulation with non-default tuning, for benchmarks (runs on the current backend). */
export function matmulRows4Variant(
  p: MatmulProblem, a: Float32Array, b: Float32Array, options: Partial<Rows4Options>,
): Float32Array {
  checkMatmulProblem('matmul', p, a, b);
  const chosen = { ...DEFAULT_ROWS4, ...options };
  if (!Number.isInteger(chosen.unroll) || chosen.unroll < 1) throw new ArgumentError('matmul', `unroll must be a positive integer, got ${chosen.unroll}`);
  if (p.batch * p.m * p.n * p.k === 0) return matmulKernelRun(p, a, b);
  return runRows4(p, a, b, chosen);
}

function runRows4(p: MatmulProblem, a: Float32Array, b: Float32Array, options: Rows4Options): Float32Array {
  const { batch, m, k, n } = p;
  const mp = roundUp4(m);
  const key = `matmul:rows4:u${options.unroll}:s${+options.shapeOutput}:b${batch}:mp${mp}:k${k}:n${n}`;
  const kernel = cachedKernel(key, (gpu) => buildRows4(gpu, { batch, mp, k, n }, options));
  const packedA = packRowQuads(a, p, mp);
  const rowMajorB = p.transB ? transposeBatches(b, batch, n, k) : b;
  const interleaved = flatResult(kernel(packedA, rowMajorB), batch * mp * n);
  return unpackRowQuads(interleaved, batch, m, mp, n);
}

interface Rows4Shape {
  batch: number;
  mp: number;
  k: number;
  n: number;
}

function buildRows4(gpu: GPU, shape: Rows4Shape, options: Rows4Options): IKernelRunShortcut {
  const { batch, mp, n } = shape;
  const output = batch === 1 ? [n, mp / 4] : [n, mp / 4, batch];
  const kernel = gpu.createKernel(rows4Source(shape, options.unroll), { output } as never) as IKernelRunShortcut;
  if (!options.shapeOutput) skipOutputShaping(kernel);
  return kernel;
}

/**
 * Kernel source with every shape inlined as an integer literal. Each k-step reads
 * B[k][x] once (a gather) and the 4 packed A values of this thread's row quad (uniform).
 */
function rows4Source({ batch, mp, k, n }: Rows4Shape, unroll: number): string {
  const aBatch = batch === 1 ? '' : `this.thread.z * ${mp * k} + `;
  const bBatch = batch === 1 ? '' : `this.thread.z * ${k * n} + `;
  const aAt = (kExpr: string, r: number) => `a[${aBatch}this.thread.y * ${4 * k} + ${kExpr} * 4 + ${r}]`;
  const bAt = (kExpr: string) => `b[${bBatch}${kExpr} * ${n} + this.thread.x]`;
  const step = (kExpr: string, v: string) =>
    `const ${v} = ${bAt(kExpr)};\n` +
    [0, 1, 2, 3].map((r) => `s${r} += ${aAt(kExpr, r)} * ${v};`).join(' ') + '\n';
  // The counter must be `j++`: a `j += unroll` loop compiles to a much slower form (2.7 vs 6.8 GF/s).
  const mainSteps = Math.floor(k / unroll);
  let body = '';
  for (let u = 0; u < unroll; u++) body += step(`(j * ${unroll} + ${u})`, `bv${u}`);
  let tail = '';
  for (let t = mainSteps * unroll; t < k; t++) tail += step(String(t), `bt${t}`);
  const loop = mainSteps > 0 ? `for (let j = 0; j < ${mainSteps}; j++) {\n${body}}\n` : '';
  return `function (a, b) {
let s0 = 0; let s1 = 0; let s2 = 0; let s3 = 0;
${loop}${tail}return [s0, s1, s2, s3];
}`;
}

/**
 * gpu.js shapes an Array(4) result into one subarray per output cell (~150 ns each: 48 ms of an
 * 82 ms call at 3136x384). We only need the flat buffer, so this kernel instance returns it as is.
 * `flatResult` still accepts a shaped result in case gpu.js swaps the kernel object.
 */
function skipOutputShaping(shortcut: IKernelRunShortcut): void {
  const kernel = (shortcut as unknown as { kernel?: { _shapeOutput?: unknown } }).kernel;
  if (kernel !== undefined && typeof kernel._shapeOutput === 'function') {
    kernel._shapeOutput = (data: Float32Array) => data;
  }
}

/** The kernel's output as one flat Float32Array of `length` values, without copying. */
function flatResult(result: unknown, length: number): Float32Array {
  let leaf = result;
  while (!(leaf instanceof Float32Array)) {
    if (!Array.isArray(leaf) || leaf.length === 0) throw new InternalError('matmul', 'the gpu.js kernel returned no Float32Array');
    leaf = leaf[0];
  }
  if (leaf.length === length) return leaf;
  // Shaped output: every cell is a view into the same flat buffer, the first one at its start.
  return new Float32Array(leaf.buffer, leaf.byteOffset, length);
}

/** A (any transA) -> [batch][mp/4][k][4], rows past m zero. */
function packRowQuads(a: Float32Array, p: MatmulProblem, mp: number): Float32Array {
  const { batch, m, k, transA } = p;
  const packed = new Float32Array(batch * mp * k);
  // element (row i, col t) of batch z sits at src + i * rowStride + t * colStride
  const rowStride = transA ? 1 : k;
  const colStride = transA ? m : 1;
  for (let z = 0; z < batch; z++) {
    const src = z * m * k;
    const dstBatch = z * mp * k;
    for (let i = 0; i < m; i++) {
      const dst = dstBatch + (i >> 2) * 4 * k + (i & 3);
      const row = src + i * rowStride;
      for (let t = 0; t < k; t++) packed[dst + t * 4] = a[row + t * colStride];
    }
  }
  return packed;
}

/** Per batch entry, [rows][cols] -> [cols][rows]. */
function transposeBatches(x: Float32Array, batch: number, rows: number, cols: number): Float32Array {
  const out = new Float32Array(x.length);
  for (let z = 0; z < batch; z++) {
    const base = z * rows * cols;
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < cols; c++) out[base + c * rows + r] = x[base + r * cols + c];
    }
  }
  return out;
}

/**
 * [batch][mp/4][n][4] -> [batch][m][n], dropping the padding rows. Reads the kernel output in order
 * and writes 4 row streams (measured ~25% faster than gathering each output row at stride 4).
 */
function unpackRowQuads(data: Float32Array, batch: number, m: number, mp: number, n: number): Float32Array {
  const out = new Float32Array(batch * m * n);
  for (let z = 0; z < batch; z++) {
    for (let row = 0; row < m; row += 4) {
      const src = (z * mp + row) * n;
      const dst = (z * m + row) * n;
      if (row + 4 <= m) unpackFullQuad(data, out, src, dst, n);
      else unpackPartialQuad(data, out, src, dst, n, m - row);
    }
  }
  return out;
}

function unpackFullQuad(data: Float32Array, out: Float32Array, src: number, dst: number, n: number): void {
  for (let x = 0, s = src; x < n; x++, s += 4) {
    out[dst + x] = data[s];
    out[dst + n + x] = data[s + 1];
    out[dst + 2 * n + x] = data[s + 2];
    out[dst + 3 * n + x] = data[s + 3];
  }
}

function unpackPartialQuad(data: Float32Array, out: Float32Array, src: number, dst: number, n: number, rows: number): void {
  for (let r = 0; r < rows; r++) {
    for (let x = 0; x < n; x++) out[dst + r * n + x] = data[src + x * 4 + r];
  }
}

// ---------------------------------------------------------------------------------------------
// cpu: plain formulation (reference backend)

function runPlain(p: MatmulProblem, a: Float32Array, b: Float32Array): Float32Array {
  const { batch, m, k, n, transA, transB } = p;
  const key = `matmul:plain:b${batch}:m${m}:k${k}:n${n}:ta${+transA}:tb${+transB}`;
  const kernel = cachedKernel(key, (gpu) =>
    gpu.createKernel(plainSource(p), { output: [batch * m * n] } as never) as IKernelRunShortcut);
  return flatResult(kernel(a, b), batch * m * n);
}

/** One output per thread over a 1D output; batch, row and column decoded from thread.x. */
function plainSource(p: MatmulProblem): string {
  const { m, k, n, transA, transB } = p;
  const aAt = transA ? `z * ${m * k} + i * ${m} + row` : `z * ${m * k} + row * ${k} + i`;
  const bAt = transB ? `z * ${k * n} + col * ${k} + i` : `z * ${k * n} + i * ${n} + col`;
  return `function (a, b) {
const z = Math.floor(this.thread.x / ${m * n});
const row = Math.floor((this.thread.x - z * ${m * n}) / ${n});
const col = this.thread.x - z * ${m * n} - row * ${n};
let s = 0;
for (let i = 0; i < ${k}; i++) {
  s += a[${aAt}] * b[${bAt}];
}
return s;
}`;
}

// ---------------------------------------------------------------------------------------------
// webgpu / webgl2

/** The kernel's result (or its Promise) as one flat Float32Array of `length` values. */
function flatAsync(result: unknown, length: number): Float32Array | Promise<Float32Array> {
  if (result instanceof Promise) return result.then((r) => flatResult(r, length));
  return flatResult(result, length);
}

/** One output per thread on a [n, m, batch] grid; every index is an integer expression (i32 on the GPU). */
function runGrid(p: MatmulProblem, a: Float32Array, b: Float32Array): Float32Array | Promise<Float32Array> {
  const { batch, m, k, n, transA, transB } = p;
  const key = `matmul:grid:b${batch}:m${m}:k${k}:n${n}:ta${+transA}:tb${+transB}`;
  const output = batch === 1 ? [n, m] : [n, m, batch];
  const kernel = cachedKernel(key, (gpu) => {
    const built = gpu.createKernel(gridSource(p), { output } as never) as IKernelRunShortcut;
    skipOutputShaping(built);
    return built;
  });
  return flatAsync(kernel(a, b), batch * m * n);
}

function gridSource(p: MatmulProblem): string {
  const { batch, m, k, n, transA, transB } = p;
  const z = batch === 1 ? '' : 'this.thread.z * ';
  const aAt = transA ? `${z ? `${z}${m * k} + ` : ''}i * ${m} + this.thread.y` : `${z ? `${z}${m * k} + ` : ''}this.thread.y * ${k} + i`;
  const bAt = transB ? `${z ? `${z}${k * n} + ` : ''}this.thread.x * ${k} + i` : `${z ? `${z}${k * n} + ` : ''}i * ${n} + this.thread.x`;
  return `function (a, b) {
let s = 0;
for (let i = 0; i < ${k}; i++) {
  s += a[${aAt}] * b[${bAt}];
}
return s;
}`;
}

/** rows4 on a GPU backend: the webasm formulation, whose result may be a Promise. */
function runRows4Gpu(p: MatmulProblem, a: Float32Array, b: Float32Array): Float32Array | Promise<Float32Array> {
  const { batch, m, k, n } = p;
  const mp = roundUp4(m);
  const key = `matmul:rows4:u${DEFAULT_ROWS4.unroll}:s0:b${batch}:mp${mp}:k${k}:n${n}`;
  const kernel = cachedKernel(key, (gpu) => buildRows4(gpu, { batch, mp, k, n }, DEFAULT_ROWS4));
  const packedA = packRowQuads(a, p, mp);
  const rowMajorB = p.transB ? transposeBatches(b, batch, n, k) : b;
  const unpack = (r: unknown) => unpackRowQuads(flatResult(r, batch * mp * n), batch, m, mp, n);
  const result = kernel(packedA, rowMajorB) as unknown;
  return result instanceof Promise ? result.then(unpack) : unpack(result);
}
