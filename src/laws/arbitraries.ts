/**
 * fast-check arbitraries for tensor programs: shapes, broadcast-compatible shape sets, axes, keys,
 * tensors with chosen value ranges (finite, away from zero, with ties), and parameter trees shaped like
 * a given tree.
 *
 * Values are drawn on a fine grid (2^22 steps per half range) rather than over float32 bit patterns:
 * fast-check's own `fc.float` spreads its draws evenly over exponents, so most values would be tiny.
 * Grid values shrink toward 0, so a counterexample comes out with simple numbers.
 */
import fc from 'fast-check';
import { flattenWithPaths, unflattenLike } from '../autodiff/pytree.ts';
import { foldIn, type Key } from '../random/keys.ts';
import { normal } from '../random/index.ts';
import { ArgumentError } from '../tensor/errors.ts';
import { mul } from '../tensor/ops.ts';
import { fmt, sizeOf, type Shape } from '../tensor/shape.ts';
import { tensor as makeTensor, type Tensor } from '../tensor/tensor.ts';

// ---------------------------------------------------------------------------------------------
// Shapes

export interface ShapeOptions {
  readonly minRank?: number;
  readonly maxRank?: number;
  readonly minDim?: number;
  readonly maxDim?: number;
}

/** Shapes of rank minRank..maxRank (default 0..4) with dims minDim..maxDim (default 1..4). */
export function shape(o: ShapeOptions = {}): fc.Arbitrary<number[]> {
  return fc.array(fc.integer({ min: o.minDim ?? 1, max: o.maxDim ?? 4 }), { minLength: o.minRank ?? 0, maxLength: o.maxRank ?? 4 });
}

export interface BroadcastSet {
  /** The shape every member broadcasts to (before dropping axes all members dropped). */
  readonly base: number[];
  readonly shapes: number[][];
  /** Their NumPy broadcast shape. */
  readonly out: number[];
}

/**
 * `count` shapes that broadcast together under NumPy rules: each is `base` with some axes set to 1 and
 * some leading axes dropped; `out` is their broadcast shape.
 */
export function broadcastShapes(count: number, o: ShapeOptions = {}): fc.Arbitrary<BroadcastSet> {
  return shape(o).chain((base) =>
    fc
      .array(fc.record({ ones: fc.array(fc.boolean(), { minLength: base.length, maxLength: base.length }), drop: fc.integer({ min: 0, max: base.length }) }), {
        minLength: count,
        maxLength: count,
      })
      .map((specs) => {
        const shapes = specs.map(({ ones, drop }) => base.map((d, i) => (ones[i] ? 1 : d)).slice(drop));
        const rank = Math.max(0, ...shapes.map((s) => s.length));
        const out = base.slice(base.length - rank).map((_, i) => {
          let d = 1;
          for (const s of shapes) {
            const j = i - (rank - s.length);
            if (j >= 0 && s[j] !== 1) d = s[j];
          }
          return d;
        });
        return { base, shapes, out };
      }),
  );
}

/** A subset of the axes of a rank-r shape, each written as a non-negative or a negative index. */
export const axes = (rank: number): fc.Arbitrary<number[]> =>
  fc
    .subarray([...Array(rank).keys()])
    .chain((as) => fc.array(fc.boolean(), { minLength: as.length, maxLength: as.length }).map((negs) => as.map((a, i) => (negs[i] ? a - rank : a))));

/** One axis of a rank-r shape (r >= 1), possibly negative. */
export const axis = (rank: number): fc.Arbitrary<number> => fc.integer({ min: -rank, max: rank - 1 });

/** A seed for seeded data (positive 31-bit). */
export const seed = (): fc.Arbitrary<number> => fc.integer({ min: 1, max: 0x7fffffff });

// ---------------------------------------------------------------------------------------------
// Keys

const uint32 = fc.integer({ min: 0, max: 0xffffffff });

/** Any Threefry key (two uint32 words). */
export const key = (): fc.Arbitrary<Key> => fc.tuple(uint32, uint32);

/** `count` pairwise different keys. */
export const distinctKeys = (count: number): fc.Arbitrary<Key[]> =>
  fc.uniqueArray(key(), { minLength: count, maxLength: count, selector: (k) => `${k[0]},${k[1]}` }) as fc.Arbitrary<Key[]>;

// ---------------------------------------------------------------------------------------------
// Values and tensors

export interface ValueOptions {
  /** Values lie in [min, max]; default [-1, 1]. */
  readonly min?: number;
  readonly max?: number;
  /** |x| >= awayFromZero as well (for functions with a kink or a pole at 0). */
  readonly awayFromZero?: number;
  /** Draw from a pool of at most ⌈n/2⌉ values, so every tensor of 2+ elements has ties (max, min, sorting). */
  readonly duplicates?: boolean;
}

export interface TensorOptions extends ValueOptions {
  /** A fixed shape or generated shapes; default `shape()` (rank 0..4, dims 1..4). */
  readonly shape?: Shape | fc.Arbitrary<Shape>;
}

const GRID = 2 ** 22;

/** One value of the options' range, on a grid of 2^22 steps per max(|min|, |max|), shrinking toward 0. */
export function value(o: ValueOptions = {}): fc.Arbitrary<number> {
  const lo = o.min ?? -1;
  const hi = o.max ?? 1;
  const away = o.awayFromZero ?? 0;
  if (!(Number.isFinite(lo) && Number.isFinite(hi) && lo <= hi)) throw new ArgumentError('laws.value', `expected finite min <= max, got [${lo}, ${hi}]`);
  const step = Math.max(Math.abs(lo), Math.abs(hi)) / GRID || 1;
  const range = (a: number, b: number) => fc.integer({ min: Math.ceil(a / step), max: Math.floor(b / step) }).map((i) => i * step);
  if (away <= 0) return range(lo, hi);
  const parts: fc.Arbitrary<number>[] = [];
  if (lo <= -away) parts.push(range(lo, Math.min(hi, -away)));
  if (hi >= away) parts.push(range(Math.max(lo, away), hi));
  if (parts.length === 0) throw new ArgumentError('laws.value', `no value in [${lo}, ${hi}] has |x| >= ${away}`);
  return parts.length === 1 ? parts[0] : fc.oneof(...parts);
}

/** n values (see ValueOptions). */
export function values(n: number, o: ValueOptions = {}): fc.Arbitrary<number[]> {
  const v = value(o);
  if (!o.duplicates || n < 2) return fc.array(v, { minLength: n, maxLength: n });
  const k = Math.ceil(n / 2);
  return fc
    .tuple(fc.array(v, { minLength: 1, maxLength: k }), fc.array(fc.nat({ max: k - 1 }), { minLength: n, maxLength: n }))
    .map(([pool, picks]) => picks.map((i) => pool[i % pool.length]));
}

const shapeArb = (s: TensorOptions['shape']): fc.Arbitrary<Shape> => (s === undefined ? shape() : isArbitrary(s) ? s : fc.constant(s));

/** A tensor with the given (or generated) shape and values. */
export const tensor = (o: TensorOptions = {}): fc.Arbitrary<Tensor> => tensors(1, o).map(([t]) => t);

/** `count` tensors of one (given or generated) shape. */
export function tensors(count: number, o: TensorOptions = {}): fc.Arbitrary<Tensor[]> {
  return shapeArb(o.shape).chain((s) => {
    const n = sizeOf(s);
    return fc.array(values(n, o), { minLength: count, maxLength: count }).map((vs) => vs.map((v) => makeTensor(Float32Array.from(v), [...s])));
  });
}

// ---------------------------------------------------------------------------------------------
// Parameter trees

export interface ParamsOptions {
  /**
   * Standard deviation of each leaf: a number, or 'fanIn' (default): 1/sqrt(fan-in) for leaves of rank
   * >= 2 (the fan-in being the size over the first axis, as for a Linear [out, in] or a Conv
   * [out, in/groups, ...k] weight) and 0.1 for vectors and scalars.
   */
  readonly scale?: number | 'fanIn';
}

const leafScale = (s: Shape, scale: ParamsOptions['scale']): number =>
  typeof scale === 'number' ? scale : s.length >= 2 && s[0] > 0 ? 1 / Math.sqrt(Math.max(1, sizeOf(s) / s[0])) : 0.1;

/** The tree `tree` with fresh normal leaves of the same shapes drawn from `k` (leaf i from foldIn(k, i)). */
export function initLike<T>(tree: T, k: Key, o: ParamsOptions = {}): T {
  const flat = flattenWithPaths(tree);
  return unflattenLike(tree, flat.map(([, t], i) => mul(normal(foldIn(k, i), t.shape), leafScale(t.shape, o.scale ?? 'fanIn'))));
}

/** Parameter trees shaped like `tree` (same structure and leaf shapes), drawn from a generated key. */
export function paramsLike<T>(tree: T, o: ParamsOptions = {}): fc.Arbitrary<T> {
  const summary = flattenWithPaths(tree).map(([p, t]) => `${p}: ${fmt(t.shape)}`).join(', ');
  return key().map((k) => {
    const p = initLike(tree, k, o);
    if (p !== null && typeof p === 'object') {
      Object.defineProperty(p, fc.toStringMethod, { value: () => `paramsLike(key [${k[0]}, ${k[1]}]) { ${summary} }`, enumerable: false });
    }
    return p;
  });
}

export function isArbitrary<T>(v: unknown): v is fc.Arbitrary<T> {
  return v instanceof fc.Arbitrary || (v !== null && typeof v === 'object' && typeof (v as fc.Arbitrary<T>).generate === 'function' && typeof (v as fc.Arbitrary<T>).canShrinkWithoutContext === 'function');
}

