/** Float64 measurements over float32 data, shared by the laws: norms, worst elements, bit equality. */
import { fmt, type Shape } from '../tensor/shape.ts';

/** float32 machine epsilon (2^-23): one ulp of 1. */
export const EPS32 = 2 ** -23;

export function maxAbs(xs: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < xs.length; i++) {
    const a = Math.abs(xs[i]);
    if (a !== a) return Infinity;
    if (a > m) m = a;
  }
  return m;
}

/** Σ a·b in float64. */
export function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

/** The element where |got - want| is largest (a NaN on one side only counts as infinitely far). */
export interface Worst {
  readonly index: number;
  readonly got: number;
  readonly want: number;
  readonly diff: number;
}

export function worstDiff(got: ArrayLike<number>, want: ArrayLike<number>): Worst {
  let w: Worst = { index: -1, got: NaN, want: NaN, diff: 0 };
  for (let i = 0; i < got.length; i++) {
    const a = got[i];
    const b = want[i];
    const d = a !== a || b !== b ? (a !== a && b !== b ? 0 : Infinity) : Math.abs(a - b);
    if (d > w.diff || w.index < 0) w = { index: i, got: a, want: b, diff: d };
  }
  return w;
}

/** Row-major coordinates of flat index `i` in `shape`. */
export function coords(shape: Shape, i: number): number[] {
  const c = new Array<number>(shape.length);
  for (let d = shape.length - 1; d >= 0; d--) {
    c[d] = i % shape[d];
    i = Math.floor(i / shape[d]);
  }
  return c;
}

/** `name[0, 2, 1]` for flat index `i` of a tensor of `shape`. */
export const at = (name: string, shape: Shape, i: number): string => `${name}${fmt(coords(shape, i))}`;

/** Index of the first element whose float32 bits differ, or -1 (NaNs compare by payload, -0 differs from 0). */
export function firstBitDifference(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) return Math.min(a.length, b.length);
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return i;
  return -1;
}

/** A float32 value in full (9 significant digits tell any two apart). */
export const exact = (v: number): string => (Number.isFinite(v) ? String(+v.toPrecision(9)) : String(v));

/** A number for a report: 4 significant digits, exponent form when small or large. */
export function num(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  if (v === 0) return '0';
  const a = Math.abs(v);
  return a >= 1e-3 && a < 1e4 ? String(+v.toPrecision(4)) : v.toExponential(2);
}

/** mulberry32: a small seeded PRNG in [0, 1), so directions and cotangents are reproducible from a seed. */
export function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** n float32 values uniform in [lo, hi) from `seed`. */
export function seededUniform(n: number, seed: number, lo = -1, hi = 1): Float32Array {
  const r = rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = lo + (hi - lo) * r();
  return out;
}
