/**
 * Generated WebAssembly SIMD (f32x4) for the row ops over the last axis and their gradients:
 * softmax, softmaxGrad, normalize (layer norm without the affine part), normalizeGrad, and the
 * elementwise GELU (erf form) and geluGrad. Same math as the host loops and gpu.js kernels of
 * src/tensor/fused.ts, which stay the reference (laws/ops.test.ts, laws/wasm-kernels.test.ts).
 *
 * Rows are contiguous, so every read is a `v128.load`. A row of C elements is C >> 2 full vectors
 * and, when C is not a multiple of 4, one partial vector: it loads 4 lanes anyway (past the row end
 * lie the next row or the staging slack), masks the extra lanes out of the reductions, and stores 4
 * lanes (the extra ones land in the next row's output, which is written after, or in the slack).
 * Rows are staged through the shared kernel memory in chunks (wasm-memory.ts).
 */
import { ModuleBuilder, type FunctionBuilder, type ValType } from './wasm-builder.ts';
import { Simd, type V } from './wasm-simd.ts';
import { kernelMemory, runChunked } from './wasm-memory.ts';
import { wasmFmaOn } from './wasm-gemm.ts';

export type RowOpName = 'softmax' | 'softmaxGrad' | 'normalize' | 'normalizeGrad';
export type ElementwiseRowOp = 'gelu' | 'geluGrad';

const INV_SQRT_2PI = 1 / Math.sqrt(2 * Math.PI);

/** Per-function state for the row loops: the lane mask of a partial vector and the loop helpers. */
class RowEmitter {
  readonly s: Simd;
  /** i32 locals: full vectors per row, remainder lanes. */
  readonly nv: number;
  readonly rem: number;
  /** v128 local: lanes < rem all ones. */
  readonly mask: number;
  private readonly cnt: number;

  constructor(readonly f: FunctionBuilder, fma: boolean, lengthParam: number) {
    this.s = new Simd(f, fma);
    this.nv = f.local('i32');
    this.rem = f.local('i32');
    this.cnt = f.local('i32');
    this.mask = f.local('v128');
    f.get(lengthParam).i32(2).op('i32.shr_u').set(this.nv);
    f.get(lengthParam).i32(3).op('i32.and').set(this.rem);
    this.s.set(this.mask, () => {
      f.v128i32(0, 1, 2, 3).get(this.rem).simd('i32x4.splat').simd('i32x4.lt_s');
    });
  }

  /** A masked value for sums: extra lanes zero. */
  zeroed(v: V, partial: boolean): V {
    return partial ? this.s.and(v, this.s.get(this.mask)) : v;
  }

  /**
   * Walk one row: `body(cursors, partial, slot)` for each full vector, then once for the partial vector
   * if there is one. `cursors` are i32 locals starting at the given row pointers. With `unroll` = U (a
   * power of 2), full vectors go U per iteration, vector `slot` of the U at byte offset 16 * slot from
   * the cursors (the body keeps one accumulator per slot, so the adds of a reduction do not wait on each
   * other), then the leftover full vectors and the partial one one at a time, as slot 0.
   */
  vectors(rowPtrs: readonly number[], body: (cursors: readonly number[], partial: boolean, slot: number) => void, unroll = 1): void {
    const f = this.f;
    const cursors = rowPtrs.map(() => f.local('i32'));
    rowPtrs.forEach((p, k) => f.get(p).set(cursors[k]));
    const loop = (count: () => void, step: number) => {
      count();
      f.set(this.cnt).block((done) => {
        f.get(this.cnt).op('i32.eqz').brIf(done);
        f.loop((top) => {
          for (let j = 0; j < step; j++) body(cursors, false, j);
          for (const c of cursors) f.get(c).i32(16 * step).op('i32.add').set(c);
          f.get(this.cnt).i32(1).op('i32.sub').tee(this.cnt).brIf(top);
        });
      });
    };
    if (unroll > 1) {
      loop(() => f.get(this.nv).i32(Math.log2(unroll)).op('i32.shr_u'), unroll);
      loop(() => f.get(this.nv).i32(unroll - 1).op('i32.and'), 1);
    } else {
      loop(() => f.get(this.nv), 1);
    }
    f.get(this.rem).ifElse(() => body(cursors, true, 0));
  }

  /**
   * for each of `rows` rows: body(rowPtrs); the pointers (params) advance by rowBytes, except those in
   * `fixed` (a per-column vector such as layer norm's weight: the same for every row).
   */
  rows(ptrParams: readonly number[], rowsParam: number, lengthParam: number, body: (rowPtrs: readonly number[]) => void, fixed: readonly number[] = []): void {
    const f = this.f;
    const rowBytes = f.local('i32');
    const r = f.local('i32');
    const ptrs = ptrParams.map(() => f.local('i32'));
    const moving = ptrs.filter((_, k) => !fixed.includes(ptrParams[k]));
    f.get(lengthParam).i32(4).op('i32.mul').set(rowBytes);
    ptrParams.forEach((p, k) => f.get(p).set(ptrs[k]));
    f.get(rowsParam).set(r).block((done) => {
      f.get(r).op('i32.eqz').brIf(done);
      f.loop((top) => {
        body(ptrs);
        for (const p of moving) f.get(p).get(rowBytes).op('i32.add').set(p);
        f.get(r).i32(1).op('i32.sub').tee(r).brIf(top);
      });
    });
  }

  /** One v128 accumulator local per slot of a 4-way unrolled walk (`vectors(..., 4)`), each set to `init`. */
  four(init: V): number[] {
    return [0, 1, 2, 3].map(() => this.s.local(init));
  }

  /** A local holding op(op(a0, a1), op(a2, a3)) of four accumulator locals. */
  fold(acc: readonly number[], op: (a: V, b: V) => V): number {
    const s = this.s;
    return s.local(op(op(s.get(acc[0]), s.get(acc[1])), op(s.get(acc[2]), s.get(acc[3]))));
  }

  /** An f32 local set to the lane sum of v128 local `v`, times `scale` (an f32 local) if given. */
  sumTo(v: number, divideBy?: number): number {
    const out = this.f.local('f32');
    this.s.hsum(v);
    if (divideBy !== undefined) this.f.get(divideBy).op('f32.div');
    this.f.set(out);
    return out;
  }
}

/** Row mean and 1 / sqrt(var + eps) (biased variance, two passes) as splatted v128 values. */
function emitStats(e: RowEmitter, x: number, Cf: number, eps: number): { mu: V; inv: V } {
  const { s, f } = e;
  const acc = s.local(s.c(0));
  e.vectors([x], ([p], partial) => s.set(acc, s.add(s.get(acc), e.zeroed(s.load(p), partial))));
  const mu = s.let(s.splat(() => f.get(e.sumTo(acc, Cf))));
  s.set(acc, s.c(0));
  e.vectors([x], ([p], partial) => {
    const d = s.let(s.sub(s.load(p), mu));
    s.set(acc, s.add(s.get(acc), e.zeroed(s.mul(d, d), partial)));
  });
  const inv = s.let(s.splat(() => {
    f.f32(1).get(e.sumTo(acc, Cf)).get(eps).op('f32.add').op('f32.sqrt').op('f32.div');
  }));
  return { mu, inv };
}

function emitRowOp(mod: ModuleBuilder, op: RowOpName, fma: boolean): void {
  const two = op === 'softmaxGrad' || op === 'normalizeGrad';
  const nIn = two ? 2 : 1;
  const params: ValType[] = [...Array<ValType>(nIn + 3).fill('i32'), ...(op.startsWith('normalize') ? ['f32' as const] : [])];
  const f = mod.func(op, params);
  const [rowsP, lenP, epsP] = [nIn + 1, nIn + 2, nIn + 3];
  const e = new RowEmitter(f, fma, lenP);
  const s = e.s;
  const Cf = f.local('f32');
  f.get(lenP).op('f32.convert_i32_s').set(Cf);
  const ptrParams = Array.from({ length: nIn + 1 }, (_, k) => k);
  e.rows(ptrParams, rowsP, lenP, (rp) => {
    const out = rp[nIn];
    switch (op) {
      case 'softmax': {
        // Four vectors per iteration with an accumulator each (XNNPACK's x16 / acc4 shape): the max and
        // sum chains stop serialising the loop.
        const [x] = rp;
        const ms = e.four(s.c(-Infinity));
        e.vectors([x], ([p], partial, j) => {
          const v = partial ? s.select(s.get(e.mask), s.load(p), s.c(-Infinity)) : s.load(p, 16 * j);
          // pmax drops NaNs from the max, but a NaN in the row still makes its sum, so every output, NaN.
          s.set(ms[j], s.pmax(s.get(ms[j]), v));
        }, 4);
        const m = e.fold(ms, s.pmax);
        const mv = s.let(s.splat(() => s.hmax(m)));  // f32.max per lane: 4 per row
        const sums = e.four(s.c(0));
        e.vectors([x, out], ([p, q], partial, j) => {
          const ev = s.let(s.expNonPositive(s.sub(s.load(p, 16 * j), mv)));
          s.store(q, ev, 16 * j);
          s.set(sums[j], s.add(s.get(sums[j]), e.zeroed(ev, partial)));
        }, 4);
        const sum = e.fold(sums, s.add);
        const inv = s.let(s.splat(() => {
          f.f32(1);
          s.hsum(sum);
          f.op('f32.div');
        }));
        e.vectors([out], ([q], _partial, j) => s.store(q, s.mul(s.load(q, 16 * j), inv), 16 * j), 4);
        break;
      }
      case 'softmaxGrad': {
        const [y, g] = rp;
        const accs = e.four(s.c(0));
        e.vectors([y, g], ([p, q], partial, j) => s.set(accs[j], s.add(s.get(accs[j]), e.zeroed(s.mul(s.load(p, 16 * j), s.load(q, 16 * j)), partial))), 4);
        const acc = e.fold(accs, s.add);
        const dot = s.let(s.splat(() => s.hsum(acc)));
        e.vectors([y, g, out], ([p, q, o], _partial, j) => s.store(o, s.mul(s.load(p, 16 * j), s.sub(s.load(q, 16 * j), dot)), 16 * j), 4);
        break;
      }
      case 'normalize': {
        const [x] = rp;
        const { mu, inv } = emitStats(e, x, Cf, epsP);
        e.vectors([x, out], ([p, o]) => s.store(o, s.mul(s.sub(s.load(p), mu), inv)));
        break;
      }
      case 'normalizeGrad': {
        const [x, g] = rp;
        const { mu, inv } = emitStats(e, x, Cf, epsP);
        const mg = s.local(s.c(0));
        const mgx = s.local(s.c(0));
        e.vectors([x, g], ([p, q], partial) => {
          const gv = s.let(e.zeroed(s.load(q), partial));
          s.set(mg, s.add(s.get(mg), gv));
          s.set(mgx, s.add(s.get(mgx), s.mul(gv, s.mul(s.sub(s.load(p), mu), inv))));
        });
        const mgv = s.let(s.splat(() => f.get(e.sumTo(mg, Cf))));
        const mgxv = s.let(s.splat(() => f.get(e.sumTo(mgx, Cf))));
        e.vectors([x, g, out], ([p, q, o]) => {
          const xh = s.mul(s.sub(s.load(p), mu), inv);
          s.store(o, s.mul(s.sub(s.sub(s.load(q), mgv), s.mul(xh, mgxv)), inv));
        });
        break;
      }
    }
  });
  s.hoistConstants();
}

/** layerNorm(x, w, b, out, rows, C, eps): (x - mean) / sqrt(var + eps) * w + b per row; w, b: [C]. */
function emitLayerNorm(mod: ModuleBuilder, fma: boolean): void {
  const params: ValType[] = ['i32', 'i32', 'i32', 'i32', 'i32', 'i32', 'f32'];
  const f = mod.func('layerNorm', params);
  const [X, Wt, B, OUT, ROWS, LEN, EPS] = [0, 1, 2, 3, 4, 5, 6];
  const e = new RowEmitter(f, fma, LEN);
  const s = e.s;
  const Cf = f.local('f32');
  f.get(LEN).op('f32.convert_i32_s').set(Cf);
  e.rows([X, Wt, B, OUT], ROWS, LEN, ([x, w, b, out]) => {
    const { mu, inv } = emitStats(e, x, Cf, EPS);
    // Rounded as normalize, then * w, then + b (no fused multiply-add): the bits of the three ops.
    e.vectors([x, w, b, out], ([p, q, r, o]) => s.store(o, s.add(s.mul(s.mul(s.sub(s.load(p), mu), inv), s.load(q)), s.load(r))));
  }, [Wt, B]);
  s.hoistConstants();
}

/** gelu(x, out, n) and geluGrad(x, g, out, n) over n contiguous elements. */
function emitGelu(mod: ModuleBuilder, grad: boolean, fma: boolean): void {
  const f = mod.func(grad ? 'geluGrad' : 'gelu', grad ? ['i32', 'i32', 'i32', 'i32'] : ['i32', 'i32', 'i32']);
  const lenP = grad ? 3 : 2;
  const e = new RowEmitter(f, fma, lenP);
  const s = e.s;
  const ptrs = grad ? [0, 1, 2] : [0, 1];
  e.vectors(ptrs, (c) => {
    const x = s.let(s.load(c[0]));
    const cdf = s.normalCdf(x);
    if (!grad) {
      s.store(c[1], s.mul(x, cdf));
      return;
    }
    const pdf = s.mul(s.exp(s.mul(s.mul(x, x), s.c(-0.5))), s.c(INV_SQRT_2PI));
    s.store(c[2], s.mul(s.load(c[1]), s.madd(x, pdf, cdf)));
  });
  s.hoistConstants();
}

/** The module bytes: exports softmax, softmaxGrad, normalize, normalizeGrad, gelu, geluGrad. */
export function rowOpsModuleBytes(fma: boolean): Uint8Array<ArrayBuffer> {
  const mod = new ModuleBuilder().importMemory('env', 'memory', 1);
  for (const op of ['softmax', 'softmaxGrad', 'normalize', 'normalizeGrad'] as const) emitRowOp(mod, op, fma);
  emitLayerNorm(mod, fma);
  emitGelu(mod, false, fma);
  emitGelu(mod, true, fma);
  return mod.toBytes();
}

interface RowOpsExports {
  softmax(x: number, out: number, rows: number, C: number): void;
  softmaxGrad(y: number, g: number, out: number, rows: number, C: number): void;
  normalize(x: number, out: number, rows: number, C: number, eps: number): void;
  normalizeGrad(x: number, g: number, out: number, rows: number, C: number, eps: number): void;
  layerNorm(x: number, w: number, b: number, out: number, rows: number, C: number, eps: number): void;
  gelu(x: number, out: number, n: number): void;
  geluGrad(x: number, g: number, out: number, n: number): void;
}

let instance: RowOpsExports | undefined;
let instanceFma: boolean | undefined;

function rowOps(): RowOpsExports {
  const fma = wasmFmaOn();
  if (instance === undefined || instanceFma !== fma) {
    const module = new WebAssembly.Module(rowOpsModuleBytes(fma));
    instance = new WebAssembly.Instance(module, { env: { memory: kernelMemory } }).exports as unknown as RowOpsExports;
    instanceFma = fma;
  }
  return instance;
}

/**
 * Row op over the last axis of length C: ins = [x] (softmax, normalize) or [x or y, g] (gradients);
 * `out` has the inputs' length. `eps` for the normalize pair.
 */
export function wasmRowOp(op: RowOpName, ins: readonly Float32Array[], out: Float32Array, C: number, eps = 0): void {
  const k = rowOps();
  switch (op) {
    case 'softmax':
      return runChunked(ins, out, C, ([x, o], n) => k.softmax(x, o, n, C));
    case 'softmaxGrad':
      return runChunked(ins, out, C, ([y, g, o], n) => k.softmaxGrad(y, g, o, n, C));
    case 'normalize':
      return runChunked(ins, out, C, ([x, o], n) => k.normalize(x, o, n, C, eps));
    case 'normalizeGrad':
      return runChunked(ins, out, C, ([x, g, o], n) => k.normalizeGrad(x, g, o, n, C, eps));
  }
}

/** Layer norm with its affine part in one pass: ins = [x, w, b], w and b of length C. */
export function wasmLayerNorm(ins: readonly Float32Array[], out: Float32Array, C: number, eps: number): void {
  const k = rowOps();
  runChunked([ins[0]], out, C, ([x, o, w, b], n) => k.layerNorm(x, w, b, o, n, C, eps), [ins[1], ins[2]]);
}

/** GELU (erf form) or its gradient g * GELU'(x), elementwise: ins = [x] or [x, g]. */
export function wasmGelu(grad: boolean, ins: readonly Float32Array[], out: Float32Array): void {
  const k = rowOps();
  if (grad) runChunked(ins, out, 1, ([x, g, o], n) => k.geluGrad(x, g, o, n));
  else runChunked(ins, out, 1, ([x, o], n) => k.gelu(x, o, n));
}
