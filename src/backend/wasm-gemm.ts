/**
 * A hand-generated WebAssembly SIMD GEMM for the Node CPU path ('webasm' backend).
 *
 * gpu.js's webasm code generator cannot emit contiguous v128 loads or more than 4 outputs per thread,
 * which caps its matmul at ~7 GFLOP/s here (docs/perf-notes-matmul.md). This module writes the wasm
 * bytes itself (wasm-builder.ts) with the classic GotoBLAS/XNNPACK structure:
 *
 * - B is packed into column panels of NR columns, [ceil(N/NR)][K][NR] (columns past N zero), so each
 *   k-step of the microkernel reads NR/4 contiguous v128 vectors.
 * - A is packed into row panels of MR rows, [ceil(M/MR)][K][MR] (rows past M zero); each k-step
 *   broadcasts the MR values with `v128.load32_splat`.
 * - The microkernel keeps an MR x NR tile in MR*NR/4 v128 accumulators (f32x4.mul + f32x4.add), the
 *   k-loop unrolled `unroll` times with constant load offsets. Full tiles are stored straight into the
 *   row-major C; edge tiles go through a scratch tile and a scalar copy of the valid part.
 * - Transposes are folded into the packing (any element strides). Batch = a loop over batch entries.
 *
 * One module instance per configuration, compiled once; its memory grows to the largest problem seen
 * and is reused (it never shrinks, so growth is bounded by the largest call). Single-threaded.
 */
import { ModuleBuilder, type FunctionBuilder } from './wasm-builder.ts';
import { checkMatmulProblem, type MatmulProblem } from './matmul-problem.ts';
import { ArgumentError, BackendError } from '../tensor/errors.ts';

export interface WasmGemmConfig {
  /** Rows per register tile (A panel height). */
  mr: number;
  /** Columns per register tile (B panel width), a multiple of 4. */
  nr: number;
  /** k-steps per microkernel loop iteration. */
  unroll: number;
  /** Use f32x4.relaxed_madd (fused) instead of mul + add; needs relaxed SIMD in the engine. */
  fma?: boolean;
  /**
   * Load each B vector at every use instead of once per k-step, so V8 can fold the load into the
   * multiply (`vmulps x, splat, [mem]`) and keep the register file for accumulators.
   */
  reloadB?: boolean;
  /**
   * Rows of the register tile between two ordering stores (0: none). V8's TurboFan schedules every
   * wasm load of a loop body first and the arithmetic late, so all B vectors and A broadcasts of a
   * k-step are live at once and accumulators spill; a store of one accumulator to the scratch tile
   * after each group of rows keeps the next group's loads after this group's arithmetic.
   */
  fence?: number;
}

/**
 * The measured best on the benchmark machine (docs/perf-notes-matmul.md, "hand-written wasm SIMD GEMM"):
 * a 4x8 tile (8 accumulators) with no manual unrolling. `wasmGemm` adds `fma: true` where the engine
 * has relaxed SIMD (Node 20: only behind --experimental-wasm-relaxed-simd).
 */
export const DEFAULT_WASM_GEMM: WasmGemmConfig = { mr: 4, nr: 8, unroll: 1 };
const FMA_WASM_GEMM: WasmGemmConfig = { ...DEFAULT_WASM_GEMM, fma: true };

// ---------------------------------------------------------------------------------------------
// code generation

/**
 * pack(src, dst, count, k, sIdx, sK): dst[p][t][w] = element (p*W + w, t) for p < ceil(count/W),
 * where element (i, t) sits at byte src + i*sIdx + t*sK; indices i >= count are zero.
 */
function emitPack(f: FunctionBuilder, width: number): void {
  const [src, dst, count, k, sIdx, sK] = [0, 1, 2, 3, 4, 5];
  const p0 = f.local('i32');
  const base = f.local('i32');
  const t = f.local('i32');
  const s = f.local('i32');
  const sw = f.local('i32');
  const d = f.local('i32');
  const rem = f.local('i32');
  const panelStride = f.local('i32');
  f.get(dst).set(d).get(src).set(base).i32(0).set(p0);
  f.get(sIdx).i32(width).op('i32.mul').set(panelStride);
  f.get(count).op('i32.eqz').get(k).op('i32.eqz').op('i32.or').ifElse(() => f.op('return'));
  f.loop((panels) => {
    f.get(count).get(p0).op('i32.sub').set(rem);
    f.get(k).set(t).get(base).set(s);
    const kLoop = (step: () => void) => f.loop((top) => {
      step();
      f.get(d).i32(width * 4).op('i32.add').set(d);
      f.get(s).get(sK).op('i32.add').set(s);
      f.get(t).i32(1).op('i32.sub').tee(t).brIf(top);
    });
    const scalarCopy = (valid: number | null) => {
      f.get(s).set(sw);
      for (let w = 0; w < width; w++) {
        const copy = () => {
          f.get(d).get(sw).load('f32.load').store('f32.store', 4 * w);
          if (w + 1 < width) f.get(sw).get(sIdx).op('i32.add').set(sw);
        };
        if (valid === null) copy();
        else f.i32(w).get(valid).op('i32.lt_s').ifElse(copy);
      }
    };
    f.get(rem).i32(width).op('i32.ge_s').ifElse(() => {
      if (width % 4 === 0) {
        // Contiguous source rows (sIdx = 4 bytes): v128 copies.
        f.get(sIdx).i32(4).op('i32.eq').ifElse(() => kLoop(() => {
          for (let q = 0; q < width / 4; q++) f.get(d).get(s).simdMem('v128.load', 16 * q, 2).simdMem('v128.store', 16 * q, 2);
        }), () => kLoop(() => scalarCopy(null)));
      } else {
        kLoop(() => scalarCopy(null));
      }
    }, () => {
      // Last, partial panel: zero it, then copy the valid indices.
      f.get(d).i32(0).get(k).i32(width * 4).op('i32.mul').memoryFill();
      kLoop(() => scalarCopy(rem));
    });
    f.get(base).get(panelStride).op('i32.add').set(base);
    f.get(p0).i32(width).op('i32.add').tee(p0).get(count).op('i32.lt_s').brIf(panels);
  });
}

/**
 * compute(ap, bp, c, m, n, k, scratch): C[m][n] (row-major at byte c) = packed A @ packed B.
 * Loops: row panels (outer), column panels (inner), then the register-blocked microkernel.
 */
function emitCompute(
  f: FunctionBuilder, { mr, nr, unroll, fma = false, reloadB = false, fence = 0 }: WasmGemmConfig,
): void {
  const [ap, bp, c, m, n, k, scratch] = [0, 1, 2, 3, 4, 5, 6];
  const nq = nr / 4;
  const i = f.local('i32');
  const j = f.local('i32');
  const aPanel = f.local('i32');
  const bPanel = f.local('i32');
  const cRow = f.local('i32');
  const ldc = f.local('i32');
  const aP = f.local('i32');
  const bP = f.local('i32');
  const cnt = f.local('i32');
  const kMain = f.local('i32');
  const kRem = f.local('i32');
  const ptr = f.local('i32');
  const rows = f.local('i32');
  const cols = f.local('i32');
  const r = f.local('i32');
  const cc = f.local('i32');
  const src = f.local('i32');
  const acc: number[][] = [];
  for (let row = 0; row < mr; row++) acc.push(Array.from({ length: nq }, () => f.local('v128')));
  const bv = Array.from({ length: nq }, () => f.local('v128'));
  const av = f.local('v128');

  f.get(m).op('i32.eqz').get(n).op('i32.eqz').op('i32.or').ifElse(() => f.op('return'));
  f.get(n).i32(4).op('i32.mul').set(ldc);
  f.get(k).i32(unroll).op('i32.div_u').set(kMain);
  f.get(k).get(kMain).i32(unroll).op('i32.mul').op('i32.sub').set(kRem);

  // One k-step u of the microkernel: NR/4 vector loads of B, MR broadcasts of A, MR*NR/4 MACs.
  const kStep = (u: number) => {
    const loadB = (q: number) => f.get(bP).simdMem('v128.load', (u * nr + 4 * q) * 4);
    if (!reloadB) for (let q = 0; q < nq; q++) loadB(q).set(bv[q]);
    const pushB = (q: number) => (reloadB ? loadB(q) : f.get(bv[q]));
    for (let row = 0; row < mr; row++) {
      f.get(aP).simdMem('v128.load32_splat', (u * mr + row) * 4).set(av);
      for (let q = 0; q < nq; q++) {
        if (fma) {
          f.get(av);
          pushB(q).get(acc[row][q]).simd('f32x4.relaxed_madd').set(acc[row][q]);
        } else {
          f.get(acc[row][q]).get(av);
          pushB(q).simd('f32x4.mul').simd('f32x4.add').set(acc[row][q]);
        }
      }
      if (fence > 0 && (row + 1) % fence === 0) f.get(scratch).get(acc[row][nq - 1]).simdMem('v128.store');
    }
  };
  const kLoop = (count: number, steps: number) => f.get(count).set(cnt).block((done) => {
    f.get(cnt).op('i32.eqz').brIf(done);
    f.loop((top) => {
      for (let u = 0; u < steps; u++) kStep(u);
      f.get(aP).i32(steps * mr * 4).op('i32.add').set(aP);
      f.get(bP).i32(steps * nr * 4).op('i32.add').set(bP);
      f.get(cnt).i32(1).op('i32.sub').tee(cnt).brIf(top);
    });
  });

  f.i32(0).set(i).get(ap).set(aPanel).get(c).set(cRow);
  f.loop((rowPanels) => {
    f.i32(0).set(j).get(bp).set(bPanel);
    f.loop((colPanels) => {
      for (const row of acc) for (const x of row) f.v128f32(0).set(x);
      f.get(aPanel).set(aP).get(bPanel).set(bP);
      kLoop(kMain, unroll);
      if (unroll > 1) kLoop(kRem, 1);
      // Full tile: store straight into C. Edge tile: scratch, then copy the valid rows and columns.
      f.get(i).i32(mr).op('i32.add').get(m).op('i32.le_s')
        .get(j).i32(nr).op('i32.add').get(n).op('i32.le_s').op('i32.and')
        .ifElse(() => {
          f.get(cRow).get(j).i32(4).op('i32.mul').op('i32.add').set(ptr);
          for (let row = 0; row < mr; row++) {
            for (let q = 0; q < nq; q++) f.get(ptr).get(acc[row][q]).simdMem('v128.store', 16 * q);
            if (row + 1 < mr) f.get(ptr).get(ldc).op('i32.add').set(ptr);
          }
        }, () => {
          for (let row = 0; row < mr; row++) {
            for (let q = 0; q < nq; q++) f.get(scratch).get(acc[row][q]).simdMem('v128.store', (row * nr + 4 * q) * 4);
          }
          f.get(m).get(i).op('i32.sub').set(rows);
          f.get(rows).i32(mr).op('i32.gt_s').ifElse(() => f.i32(mr).set(rows));
          f.get(n).get(j).op('i32.sub').set(cols);
          f.get(cols).i32(nr).op('i32.gt_s').ifElse(() => f.i32(nr).set(cols));
          f.i32(0).set(r).get(cRow).get(j).i32(4).op('i32.mul').op('i32.add').set(ptr).get(scratch).set(src);
          f.loop((rowLoop) => {
            f.i32(0).set(cc);
            f.loop((colLoop) => {
              f.get(ptr).get(cc).i32(4).op('i32.mul').op('i32.add')
                .get(src).get(cc).i32(4).op('i32.mul').op('i32.add').load('f32.load')
                .store('f32.store');
              f.get(cc).i32(1).op('i32.add').tee(cc).get(cols).op('i32.lt_s').brIf(colLoop);
            });
            f.get(ptr).get(ldc).op('i32.add').set(ptr);
            f.get(src).i32(nr * 4).op('i32.add').set(src);
            f.get(r).i32(1).op('i32.add').tee(r).get(rows).op('i32.lt_s').brIf(rowLoop);
          });
        });
      f.get(bPanel).get(k).i32(nr * 4).op('i32.mul').op('i32.add').set(bPanel);
      f.get(j).i32(nr).op('i32.add').tee(j).get(n).op('i32.lt_s').brIf(colPanels);
    });
    f.get(aPanel).get(k).i32(mr * 4).op('i32.mul').op('i32.add').set(aPanel);
    f.get(cRow).get(ldc).i32(mr).op('i32.mul').op('i32.add').set(cRow);
    f.get(i).i32(mr).op('i32.add').tee(i).get(m).op('i32.lt_s').brIf(rowPanels);
  });
}

/** The module bytes for one configuration: exports memory, packA, packB and compute. */
export function gemmModuleBytes(config: WasmGemmConfig): Uint8Array<ArrayBuffer> {
  const { mr, nr, unroll } = config;
  if (!Number.isInteger(mr) || mr < 1 || mr > 8) throw new ArgumentError('wasmGemm', `mr must be an integer in 1..8, got ${mr}`);
  if (!Number.isInteger(nr) || nr < 4 || nr % 4 !== 0 || nr > 32) throw new ArgumentError('wasmGemm', `nr must be a multiple of 4 in 4..32, got ${nr}`);
  if (!Number.isInteger(unroll) || unroll < 1 || unroll > 16) throw new ArgumentError('wasmGemm', `unroll must be an integer in 1..16, got ${unroll}`);
  const mod = new ModuleBuilder().exportMemory('memory', 1);
  const packParams = ['i32', 'i32', 'i32', 'i32', 'i32', 'i32'] as const;
  emitPack(mod.func('packA', packParams), mr);
  emitPack(mod.func('packB', packParams), nr);
  emitCompute(mod.func('compute', ['i32', 'i32', 'i32', 'i32', 'i32', 'i32', 'i32']), config);
  return mod.toBytes();
}

// ---------------------------------------------------------------------------------------------
// runtime

interface GemmExports {
  memory: WebAssembly.Memory;
  packA(src: number, dst: number, count: number, k: number, sIdx: number, sK: number): void;
  packB(src: number, dst: number, count: number, k: number, sIdx: number, sK: number): void;
  compute(ap: number, bp: number, c: number, m: number, n: number, k: number, scratch: number): void;
}

/**
 * Whether the engine accepts relaxed SIMD (f32x4.relaxed_madd). Relaxed SIMD is standard WebAssembly
 * (3.0) and on by default from V8 11.4 (Node 22, current browsers); Node 20's V8 has it complete but
 * behind --experimental-wasm-relaxed-simd. There the flag is switched on at run time (v8 module,
 * reached through process.getBuiltinModule so browser bundles carry no node: import) before the check:
 * the flag only makes the engine accept the extra opcodes in modules compiled afterwards, and the fused
 * multiply-add is worth 24 % in the GEMM and 20-35 % in the row kernels (docs/benchmarks.md).
 * REVGRAD_RELAXED_SIMD=0 in the environment leaves the engine's flags alone.
 */
export function wasmRelaxedSimdAvailable(): boolean {
  if (relaxedAvailable === undefined) {
    const fmaBytes = gemmModuleBytes({ ...DEFAULT_WASM_GEMM, fma: true });
    try {
      if (typeof WebAssembly === 'object' && !WebAssembly.validate(fmaBytes)) enableRelaxedSimdFlag();
      relaxedAvailable = typeof WebAssembly === 'object' && WebAssembly.validate(fmaBytes);
    } catch {
      relaxedAvailable = false;
    }
  }
  return relaxedAvailable;
}

let relaxedAvailable: boolean | undefined;

function enableRelaxedSimdFlag(): void {
  const proc = (globalThis as { process?: { env?: Record<string, string | undefined>; getBuiltinModule?: (id: string) => unknown } }).process;
  if (proc?.getBuiltinModule === undefined || proc.env?.REVGRAD_RELAXED_SIMD === '0') return;
  const v8 = proc.getBuiltinModule('node:v8') as { setFlagsFromString?: (flags: string) => void } | undefined;
  v8?.setFlagsFromString?.('--experimental-wasm-relaxed-simd');
}

let fmaWanted = true;

/**
 * Use the fused multiply-add (relaxed SIMD) in the generated kernels and the GEMM where the engine has
 * it (true, the default) or the separate multiply and add (false: for tests of that path, or for bits
 * that do not depend on whether the hardware fuses). Returns the previous setting.
 */
export function setWasmFma(on: boolean): boolean {
  const previous = fmaWanted;
  fmaWanted = on;
  return previous;
}

/** Whether the generated kernels use relaxed_madd now. */
export const wasmFmaOn = (): boolean => fmaWanted && wasmRelaxedSimdAvailable();

const PAGE = 65536;
const align64 = (bytes: number): number => Math.ceil(bytes / 64) * 64;

export type GemmFn = (p: MatmulProblem, a: Float32Array, b: Float32Array) => Float32Array;

interface Instance {
  run: GemmFn;
  memoryBytes(): number;
}

let retainedBytes = 256 * 2 ** 20;

/**
 * Wasm memory an instance keeps between calls (default 256 MiB). A call that needs more still runs;
 * afterwards its instance is replaced by a fresh one of the same compiled module, which releases the
 * memory. Returns the previous limit.
 */
export function setWasmGemmRetainedBytes(bytes: number): number {
  if (!(bytes >= 0)) throw new ArgumentError('wasmGemm', `the retained byte limit must be >= 0, got ${bytes}`);
  const previous = retainedBytes;
  retainedBytes = bytes;
  return previous;
}

const instances = new Map<string, Instance>();

function instanceFor(config: WasmGemmConfig): Instance {
  const key = `${config.mr}x${config.nr}u${config.unroll}${config.fma ? 'm' : ''}${config.reloadB ? 'r' : ''}f${config.fence ?? 0}`;
  let instance = instances.get(key);
  if (instance === undefined) {
    instance = instantiate(config);
    instances.set(key, instance);
  }
  return instance;
}

/** A GEMM with the given register tiling (one compiled module per configuration, cached). */
export function wasmGemmWith(config: WasmGemmConfig): GemmFn {
  return instanceFor(config).run;
}

/**
 * Bytes of wasm memory held by the instance of `config`: it grows to the largest problem seen and
 * stays, up to the retained limit (setWasmGemmRetainedBytes).
 */
export function wasmGemmMemoryBytes(config: WasmGemmConfig = wasmGemmConfig()): number {
  return instanceFor(config).memoryBytes();
}

function instantiate(config: WasmGemmConfig): Instance {
  const module = new WebAssembly.Module(gemmModuleBytes(config));
  const { mr, nr } = config;
  let ex = new WebAssembly.Instance(module, {}).exports as unknown as GemmExports;
  warmUp(ex);
  let heap = new Float32Array(ex.memory.buffer);

  const ensure = (bytes: number): void => {
    const have = ex.memory.buffer.byteLength;
    if (bytes > have) ex.memory.grow(Math.ceil((bytes - have) / PAGE));
    if (heap.buffer !== ex.memory.buffer) heap = new Float32Array(ex.memory.buffer);
  };

  const run: GemmFn = (p, a, b) => {
    checkMatmulProblem('wasmGemm', p, a, b);
    const { batch, m, k, n, transA, transB } = p;
    if (batch * m * n === 0 || k === 0) return new Float32Array(batch * m * n);
    const mp = Math.ceil(m / mr) * mr;
    const np = Math.ceil(n / nr) * nr;
    // Layout (bytes): A | B | C | packed A | packed B | scratch tile, each 64-byte aligned.
    const aOff = 0;
    const bOff = aOff + align64(m * k * 4);
    const cOff = bOff + align64(k * n * 4);
    const paOff = cOff + align64(m * n * 4);
    const pbOff = paOff + align64(mp * k * 4);
    const scratchOff = pbOff + align64(np * k * 4);
    const total = scratchOff + align64(mr * nr * 4);
    if (total > 2 ** 31) throw new BackendError(`wasmGemm: the problem needs ${total} bytes of wasm memory (limit 2 GiB); use smaller batches`);
    ensure(total);
    // Element (row i, col t) of A at i*rowStride + t*colStride (bytes); B's (t, col j) likewise.
    const aRow = transA ? 4 : k * 4;
    const aCol = transA ? m * 4 : 4;
    const bRow = transB ? 4 : n * 4;
    const bCol = transB ? k * 4 : 4;
    // One batch entry: slice() copies C out into a fresh array without zero-filling it first.
    let out: Float32Array | undefined = batch === 1 ? undefined : new Float32Array(batch * m * n);
    for (let z = 0; z < batch; z++) {
      heap.set(a.subarray(z * m * k, (z + 1) * m * k), aOff / 4);
      heap.set(b.subarray(z * k * n, (z + 1) * k * n), bOff / 4);
      ex.packA(aOff, paOff, m, k, aRow, aCol);
      ex.packB(bOff, pbOff, n, k, bCol, bRow);
      ex.compute(paOff, pbOff, cOff, m, n, k, scratchOff);
      if (out === undefined) out = heap.slice(cOff / 4, cOff / 4 + m * n);
      else out.set(heap.subarray(cOff / 4, cOff / 4 + m * n), z * m * n);
    }
    if (ex.memory.buffer.byteLength > retainedBytes) {
      // Release an oversized memory: a new instance shares the compiled (and tiered-up) code.
      ex = new WebAssembly.Instance(module, {}).exports as unknown as GemmExports;
      heap = new Float32Array(ex.memory.buffer);
    }
    return out as Float32Array;
  };
  return { run, memoryBytes: () => ex.memory.buffer.byteLength };
}

/**
 * V8 first runs wasm in its baseline compiler (Liftoff) and tiers a function up to TurboFan once it
 * has run enough; a call keeps the code it started with. Without this, the first real product runs
 * entirely in Liftoff (measured 20.8 vs 5.3 ms at 784x192x768). Ten 32x32x32 products (~1 ms)
 * trigger the tier-up, so the first real call usually gets the optimized code (6.2 ms measured).
 * The data is whatever the fresh memory holds (zeros); the instance's memory is not grown.
 */
function warmUp(ex: GemmExports): void {
  const s = 32;
  const bytes = s * s * 4;
  if (ex.memory.buffer.byteLength < 5 * bytes) return;
  for (let i = 0; i < 10; i++) {
    ex.packA(0, bytes, s, s, s * 4, 4);
    ex.packB(0, 2 * bytes, s, s, 4, s * 4);
    ex.compute(bytes, 2 * bytes, 3 * bytes, s, s, s, 4 * bytes);
  }
}


/**
 * C = op(A) @ op(B) per batch entry with `wasmGemmConfig()`; same layouts as matmulKernelRun
 * (a: batch x (transA ? [k,m] : [m,k]), b: batch x (transB ? [n,k] : [k,n]), out: batch x [m,n]).
 * Requires wasmSimdAvailable().
 */
export function wasmGemm(p: MatmulProblem, a: Float32Array, b: Float32Array): Float32Array {
  return wasmGemmWith(wasmGemmConfig())(p, a, b);
}

/** The configuration `wasmGemm` uses: DEFAULT_WASM_GEMM, fused multiply-add where relaxed SIMD exists. */
export function wasmGemmConfig(): WasmGemmConfig {
  return wasmFmaOn() ? FMA_WASM_GEMM : DEFAULT_WASM_GEMM;
}
