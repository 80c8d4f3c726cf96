/**
 * A small expression layer over FunctionBuilder for f32x4 code, and the vector math the generated
 * kernels share (exp, log, tanh, erf, the normal CDF).
 *
 * A value `V` is a function that pushes one v128 onto the wasm stack; `let` evaluates it once into a
 * local (use it for anything read more than once). Constants are `v128.const` at each use: V8 hoists
 * them out of loops. `madd(a, b, c)` = a * b + c is one `f32x4.relaxed_madd` where the engine has
 * relaxed SIMD (fused: one rounding) and a mul + add otherwise.
 *
 * Accuracy (float32, measured against float64 in laws/wasm-kernels.test.ts): exp and log are Cephes'
 * expf/logf (range reduction with a two-part ln 2, degree 6/9 polynomials), within 2 ulp over the
 * whole range; exp overflows to +Infinity above ~88.72 and underflows through the subnormals to 0,
 * log(0) = -Infinity, log(x < 0) = NaN, NaN propagates everywhere. tanh is Cephes' tanhf (a polynomial
 * for |x| < 0.625, 1 - 2 / (exp(2|x|) + 1) beyond). erf is the clamped rational of ops.ts `erfExpr`
 * (the same coefficients the kernels use). `normalCdf` is 0.5 * erfc(-x / sqrt 2) with the Numerical
 * Recipes erfc, as in fused.ts, so GELU keeps relative precision in its left tail.
 */
import type { FunctionBuilder, SimdOp } from './wasm-builder.ts';

/** Pushes one v128. */
export type V = () => void;

const LOG2E = 1.4426950408889634;
const SQRT1_2 = 0.7071067811865476;
/** 1.5 * 2^23: adding it rounds a float of magnitude < 2^22 to an integer held in the low mantissa bits. */
const MAGIC = 12582912;
const MAGIC_BITS = 0x4b400000;
/** exp(r) ~ 1 + r (c1 + r (c2 + r (c3 + r (c4 + r c5)))) on |r| <= ln2 / 2: c1..c5, minimax. */
const EXP_P5 = [0.9999997019767761, 0.4999915063381195, 0.16667652130126953, 0.04189782217144966, 0.008289290592074394];

export class Simd {
  /** Constants by bit pattern -> their local, set once at the top of the function (see `hoistConstants`). */
  private readonly constants = new Map<string, { local: number; init: () => void }>();

  constructor(readonly f: FunctionBuilder, readonly fma: boolean) {}

  /**
   * A splatted f32 constant. Constants live in locals set once at the function's start: V8 does not
   * hoist `v128.const` out of wasm loops and builds each one from immediates (3-4 instructions).
   */
  c(x: number): V {
    const bits = new Int32Array(new Float32Array([x]).buffer)[0];
    return this.constant(bits, () => this.f.v128f32(x));
  }

  /** A splatted i32 constant (bit patterns, integer lanes). */
  ci(x: number): V {
    return this.constant(x | 0, () => this.f.v128i32(x));
  }

  private constant(bits: number, init: () => void): V {
    const key = String(bits);
    let entry = this.constants.get(key);
    if (entry === undefined) {
      entry = { local: this.f.local('v128'), init };
      this.constants.set(key, entry);
    }
    const { local } = entry;
    return () => this.f.get(local);
  }

  /** Emit the constants' initialisation at the start of the function; call once, after the body. */
  hoistConstants(): void {
    const body = this.f.code.splice(0);
    for (const { local, init } of this.constants.values()) {
      init();
      this.f.set(local);
    }
    this.f.code.push(...body);
  }

  /** The value of v128 local `index`. */
  get(index: number): V {
    return () => this.f.get(index);
  }

  /** Evaluate `v` once into a new local; the result reads the local. */
  let(v: V): V {
    const l = this.f.local('v128');
    v();
    this.f.set(l);
    return this.get(l);
  }

  /** Evaluate `v` into an existing local. */
  set(index: number, v: V): void {
    v();
    this.f.set(index);
  }

  /** A new v128 local initialised to `v`; returns its index (for loop-carried accumulators). */
  local(v: V): number {
    const l = this.f.local('v128');
    this.set(l, v);
    return l;
  }

  /** v128.load from the i32 local `ptr` plus a constant byte offset (any alignment). */
  load(ptr: number, offset = 0): V {
    return () => this.f.get(ptr).simdMem('v128.load', offset, 2);
  }

  /** v128.store of `v` at the i32 local `ptr` plus a constant byte offset. */
  store(ptr: number, v: V, offset = 0): void {
    this.f.get(ptr);
    v();
    this.f.simdMem('v128.store', offset, 2);
  }

  /** Splat an f32 pushed by `scalar`. */
  splat(scalar: () => void): V {
    return () => {
      scalar();
      this.f.simd('f32x4.splat');
    };
  }

  private bin(op: SimdOp, a: V, b: V): V {
    return () => {
      a();
      b();
      this.f.simd(op);
    };
  }

  private un(op: SimdOp, a: V): V {
    return () => {
      a();
      this.f.simd(op);
    };
  }

  add = (a: V, b: V): V => this.bin('f32x4.add', a, b);
  sub = (a: V, b: V): V => this.bin('f32x4.sub', a, b);
  mul = (a: V, b: V): V => this.bin('f32x4.mul', a, b);
  div = (a: V, b: V): V => this.bin('f32x4.div', a, b);
  /** NaN-propagating min/max (Math.min / Math.max semantics). */
  min = (a: V, b: V): V => this.bin('f32x4.min', a, b);
  max = (a: V, b: V): V => this.bin('f32x4.max', a, b);
  /** pmax(a, b) = a < b ? b : a: one instruction; a NaN in b is dropped, a NaN in a kept. */
  pmax = (a: V, b: V): V => this.bin('f32x4.pmax', a, b);
  neg = (a: V): V => this.un('f32x4.neg', a);
  abs = (a: V): V => this.un('f32x4.abs', a);
  sqrt = (a: V): V => this.un('f32x4.sqrt', a);
  nearest = (a: V): V => this.un('f32x4.nearest', a);
  gt = (a: V, b: V): V => this.bin('f32x4.gt', a, b);
  ge = (a: V, b: V): V => this.bin('f32x4.ge', a, b);
  lt = (a: V, b: V): V => this.bin('f32x4.lt', a, b);
  le = (a: V, b: V): V => this.bin('f32x4.le', a, b);
  eq = (a: V, b: V): V => this.bin('f32x4.eq', a, b);
  ne = (a: V, b: V): V => this.bin('f32x4.ne', a, b);
  and = (a: V, b: V): V => this.bin('v128.and', a, b);
  /** a & ~b. */
  andNot = (a: V, b: V): V => this.bin('v128.andnot', a, b);
  or = (a: V, b: V): V => this.bin('v128.or', a, b);
  xor = (a: V, b: V): V => this.bin('v128.xor', a, b);
  iadd = (a: V, b: V): V => this.bin('i32x4.add', a, b);
  isub = (a: V, b: V): V => this.bin('i32x4.sub', a, b);

  /** Lanes of `a` shifted by a constant. */
  shl(a: V, bits: number): V {
    return () => {
      a();
      this.f.i32(bits).simd('i32x4.shl');
    };
  }

  shrS(a: V, bits: number): V {
    return () => {
      a();
      this.f.i32(bits).simd('i32x4.shr_s');
    };
  }

  shrU(a: V, bits: number): V {
    return () => {
      a();
      this.f.i32(bits).simd('i32x4.shr_u');
    };
  }

  /** mask ? a : b, lane by lane (mask lanes all ones or all zeros). */
  select(mask: V, a: V, b: V): V {
    return () => {
      a();
      b();
      mask();
      this.f.simd('v128.bitselect');
    };
  }

  /** a * b + c (fused where relaxed SIMD is on). */
  madd(a: V, b: V, c: V): V {
    if (this.fma) {
      return () => {
        a();
        b();
        c();
        this.f.simd('f32x4.relaxed_madd');
      };
    }
    return this.add(this.mul(a, b), c);
  }

  /** Horner: coeffs from the highest power down, evaluated at x. */
  horner(x: V, coeffs: readonly number[]): V {
    let acc = this.c(coeffs[0]);
    for (let i = 1; i < coeffs.length; i++) acc = this.madd(acc, x, this.c(coeffs[i]));
    return acc;
  }

  /** Pushes the f32 sum of the four lanes of v128 local `v`: (l0 + l1) + (l2 + l3). */
  hsum(v: number): void {
    const f = this.f;
    f.get(v).extractLane(0).get(v).extractLane(1).op('f32.add');
    f.get(v).extractLane(2).get(v).extractLane(3).op('f32.add').op('f32.add');
  }

  /** Pushes the f32 max of the four lanes of v128 local `v` (NaN-propagating). */
  hmax(v: number): void {
    const f = this.f;
    f.get(v).extractLane(0).get(v).extractLane(1).op('f32.max');
    f.get(v).extractLane(2).get(v).extractLane(3).op('f32.max').op('f32.max');
  }

  // -------------------------------------------------------------------------------------------
  // math

  /**
   * Clamp to [lo, hi] with pmin/pmax (one instruction each on x64; f32x4.min/max cost ~6 to get NaN
   * and signed zeros right). x goes first, so a NaN x passes through unchanged.
   */
  clamp(x: V, lo: number, hi: number): V {
    return this.bin('f32x4.pmin', this.bin('f32x4.pmax', x, this.c(lo)), this.c(hi));
  }

  /** e^x (Cephes expf). */
  exp(x: V): V {
    const xc = this.let(this.clamp(x, -104, 88.8));
    // n = round(x / ln 2) by the 1.5 * 2^23 trick: the sum's low mantissa bits hold n, so no
    // f32x4.nearest and no i32x4.trunc_sat (a long sequence on x64).
    const shifted = this.let(this.madd(xc, this.c(LOG2E), this.c(MAGIC)));
    const n = this.let(this.sub(shifted, this.c(MAGIC)));
    const r1 = this.madd(n, this.c(-0.693359375), xc);
    const r = this.let(this.madd(n, this.c(2.12194440e-4), r1));
    const p = this.horner(r, [1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1]);
    const y = this.add(this.madd(p, this.mul(r, r), r), this.c(1));
    // 2^n as 2^h * 2^(n-h), h = n >> 1: both factors stay normal for n in [-150, 128].
    const ni = this.let(this.isub(shifted, this.ci(MAGIC_BITS)));
    const h = this.let(this.shrS(ni, 1));
    const scale = (k: V) => this.shl(this.iadd(k, this.ci(127)), 23);
    return this.mul(this.mul(y, scale(h)), scale(this.isub(ni, h)));
  }

  /**
   * exp(x) for x <= 0 (softmax's x - max(x)), in fewer instructions than `exp`: no upper clamp, one
   * 2^n factor (n >= -126 stays a normal exponent), and a degree-5 minimax polynomial on the reduced
   * argument (the rr2-p5 scheme of XNNPACK's softmax; within 3 ulps of exp on [-87.3, 0] (2.1 measured), checked
   * against float64 by laws/wasm-simd-math.test.ts). Below the float32 normal range (x < -87.34) it
   * returns 0 instead of a subnormal (an absolute error under 1.2e-38); NaN stays NaN.
   */
  expNonPositive(x: V): V {
    const xv = this.let(x);
    // n = round(x / ln 2) by the magic-bias trick; the bias carries the exponent offset 127, so the
    // sum's low mantissa bits shifted up by 23 are the bits of 2^n.
    const shifted = this.let(this.madd(xv, this.c(LOG2E), this.c(MAGIC + 127)));
    const scale = this.let(this.shl(shifted, 23));
    const n = this.let(this.sub(shifted, this.c(MAGIC + 127)));
    const r = this.let(this.madd(n, this.c(-1.428606765330187e-6 /* -ln2, low part */), this.madd(n, this.c(-0.693145751953125 /* -ln2, high part: exact times n */), xv)));
    const p = this.horner(r, [EXP_P5[4], EXP_P5[3], EXP_P5[2], EXP_P5[1], EXP_P5[0]]);
    const t = this.let(this.mul(r, scale));
    const e = this.madd(t, p, scale);
    return this.andNot(e, this.lt(xv, this.c(-87.33654022216797)));
  }

  /** Natural log (Cephes logf), subnormals included. */
  log(x: V): V {
    const xv = this.let(x);
    const small = this.let(this.lt(xv, this.c(1.1754943508222875e-38)));
    const xs = this.let(this.select(small, this.mul(xv, this.c(8388608)), xv));
    // exponent and mantissa in [0.5, 1)
    const ei = this.isub(this.shrU(xs, 23), this.ci(126));
    const m = this.let(this.or(this.and(xs, this.ci(0x807fffff | 0)), this.ci(0x3f000000)));
    const lowM = this.let(this.lt(m, this.c(SQRT1_2)));
    // m < sqrt(1/2): use 2m, one less in the exponent (the mask lanes are -1 as integers).
    const e = this.let(this.add(this.un('f32x4.convert_i32x4_s', this.iadd(ei, lowM)), this.and(small, this.c(-23))));
    const t = this.let(this.sub(this.add(m, this.and(m, lowM)), this.c(1)));
    const z = this.let(this.mul(t, t));
    const p = this.horner(t, [7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1, 1.4249322787e-1,
      -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1, 3.3333331174e-1]);
    let y = this.mul(this.mul(t, z), p);
    y = this.madd(e, this.c(-2.12194440e-4), y);
    y = this.madd(z, this.c(-0.5), y);
    let res = this.madd(e, this.c(0.693359375), this.add(t, y));
    res = this.select(this.eq(xv, this.c(Infinity)), this.c(Infinity), res);
    res = this.select(this.eq(xv, this.c(0)), this.c(-Infinity), res);
    // x < 0 and NaN: NaN
    return this.select(this.ge(xv, this.c(0)), res, this.c(NaN));
  }

  /** tanh (Cephes tanhf). */
  tanh(x: V): V {
    const xv = this.let(x);
    const ax = this.let(this.abs(xv));
    const z = this.let(this.mul(xv, xv));
    const small = this.add(this.mul(this.mul(xv, z), this.horner(z, [-5.70498872745e-3, 2.06390887954e-2, -5.37397155531e-2, 1.33314422036e-1, -3.33332819422e-1])), xv);
    const big = this.sub(this.c(1), this.div(this.c(2), this.add(this.exp(this.add(ax, ax)), this.c(1))));
    const signed = this.or(big, this.and(xv, this.ci(0x80000000 | 0)));
    return this.select(this.lt(ax, this.c(0.625)), small, signed);
  }

  /** erf, the clamped rational of ops.ts erfExpr. */
  erf(x: V): V {
    const xc = this.let(this.clamp(x, -4, 4));
    const x2 = this.let(this.mul(xc, xc));
    const alpha = [-2.72614225801306e-10, 2.77068142495902e-8, -2.10102402082508e-6, -5.69250639462346e-5, -7.34990630326855e-4, -2.95459980854025e-3, -1.60960333262415e-2];
    const beta = [-1.45660718464996e-5, -2.13374055278905e-4, -1.68282697438203e-3, -7.37332916720468e-3, -1.42647390514189e-2];
    return this.div(this.mul(xc, this.horner(x2, alpha)), this.horner(x2, beta));
  }

  /** Phi(x), the standard normal CDF, as 0.5 * erfc(-x / sqrt 2) (Numerical Recipes erfc, as fused.ts). */
  normalCdf(x: V): V {
    const u = this.let(this.mul(x, this.c(-SQRT1_2)));
    const t = this.let(this.div(this.c(1), this.madd(this.abs(u), this.c(0.5), this.c(1))));
    const poly = this.horner(t, [0.17087277, -0.82215223, 1.48851587, -1.13520398, 0.27886807, -0.18628806, 0.09678418, 0.37409196, 1.00002368, -1.26551223]);
    const y = this.let(this.mul(t, this.exp(this.sub(poly, this.mul(u, u)))));
    return this.mul(this.c(0.5), this.select(this.ge(u, this.c(0)), y, this.sub(this.c(2), y)));
  }
}
