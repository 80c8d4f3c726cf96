/**
 * Functional, counter-based random numbers on plain typed arrays, bit-compatible with JAX's
 * threefry PRNG in its legacy layout (`jax_threefry_partitionable=False`, JAX's default before
 * 0.5.0). A key is a plain pair of uint32 words; nothing here holds hidden state, so the same key
 * always yields the same numbers and independent streams come from `split` / `foldIn`.
 *
 * Layout notes (all checked against JAX values in laws/random.test.ts):
 * - `split(k, n)` = threefry_2x32(k, iota(2n)) reshaped to n keys: with the counters halved,
 *   child j takes output words 2j and 2j+1 of the concatenated halves.
 * - `randomBits(k, n)` = threefry_2x32(k, iota(n)) (odd n is padded with one zero counter).
 * - `foldIn(k, d)` = threefry_2x32(k, [0, d]), i.e. one block with counter (0, d).
 * JAX >= 0.5 defaults to the partitionable layout instead (child j = threefry(k, (0, j))), so
 * its `split(PRNGKey(0))` differs from the one here; values from older JAX match exactly.
 */
import { threefry2x32, threefry2x32Counts } from './threefry.ts';
import { brandKey, rejectTracedKey, type Key } from './traced.ts';
import { ArgumentError } from '../tensor/errors.ts';

export type { Key } from './traced.ts';

const TWO_POW_32 = 0x1_0000_0000;

const isUint32 = (v: number): boolean => Number.isInteger(v) && v >= 0 && v < TWO_POW_32;

function assertKey(k: Key, where: string): void {
  rejectTracedKey(k, where);
  if (!Array.isArray(k) || k.length !== 2 || !isUint32(k[0]) || !isUint32(k[1])) {
    throw new ArgumentError(where, `expected a key [uint32, uint32], got ${JSON.stringify(k)}`);
  }
}

function assertCount(n: number, where: string): void {
  if (!Number.isSafeInteger(n) || n < 0) {
    throw new ArgumentError(where, `count must be a non-negative integer, got ${n}`);
  }
}

/**
 * JAX's `PRNGKey(seed)`: the seed's high and low 32 bits. Seeds must be non-negative safe
 * integers, because a silently truncated or rounded seed would alias another seed's stream.
 */
export function key(seed: number): Key {
  if (!Number.isSafeInteger(seed) || seed < 0) {
    throw new ArgumentError('key', `seed must be a non-negative safe integer (0 .. 2^53-1), got ${seed}`);
  }
  return brandKey([Math.floor(seed / TWO_POW_32), seed % TWO_POW_32]);
}

/** Splits a key into n new, independent keys (JAX `random.split`, legacy layout). */
export function split(k: Key, n = 2): Key[] {
  assertKey(k, 'split');
  if (!Number.isSafeInteger(n) || n < 1) throw new ArgumentError('split', `n must be a positive integer, got ${n}`);
  const words = threefry2x32Counts(k, iota(2 * n));
  return Array.from({ length: n }, (_, j): Key => brandKey([words[2 * j]!, words[2 * j + 1]!]));
}

/** Derives a new key from k and a uint32 of data (JAX `random.fold_in`). */
export function foldIn(k: Key, data: number): Key {
  assertKey(k, 'foldIn');
  if (!isUint32(data)) throw new ArgumentError('foldIn', `data must be an integer in [0, 2^32), got ${data}`);
  return brandKey(threefry2x32(k, [0, data]));
}

/** n uniformly random uint32 words (JAX `random.bits` with a 32-bit dtype, legacy layout). */
export function randomBits(k: Key, n: number): Uint32Array {
  assertKey(k, 'randomBits');
  assertCount(n, 'randomBits');
  return threefry2x32Counts(k, iota(n));
}

function iota(n: number): Uint32Array {
  const counts = new Uint32Array(n);
  for (let i = 0; i < n; i++) counts[i] = i;
  return counts;
}

// ---------------------------------------------------------------------------------------------
// Floats

const f32 = Math.fround;
const ONE_F32_BITS = 0x3f800000;
const MANTISSA_SHIFT = 32 - 23;

/**
 * Maps uint32 words to float32 in [0, 1) the way JAX does: keep the top 23 bits as the mantissa
 * of a float in [1, 2) and subtract one. Every result is a multiple of 2^-23, so it is exact.
 */
function unitFloats(bits: Uint32Array): Float32Array {
  const asInt = new Uint32Array(bits.length);
  for (let i = 0; i < bits.length; i++) asInt[i] = (bits[i]! >>> MANTISSA_SHIFT) | ONE_F32_BITS;
  const floats = new Float32Array(asInt.buffer);
  for (let i = 0; i < floats.length; i++) floats[i] = floats[i]! - 1;
  return floats;
}

/** Largest float32 strictly below x (x a finite float32). */
function float32Below(x: number): number {
  const view = new Float32Array([x]);
  const bits = new Uint32Array(view.buffer);
  if (x === 0) bits[0] = 0x80000001;
  else if (x > 0) bits[0] = bits[0]! - 1;
  else bits[0] = bits[0]! + 1;
  return view[0]!;
}

/** Smallest float32 strictly above x (x a finite float32). */
const float32Above = (x: number): number => -float32Below(-x);

/**
 * JAX's uniform in float32: u * (hi - lo) + lo, floored at lo. Rounding of that float32 sum
 * can land on hi (e.g. [1000, 1001)); unlike JAX, such values are pulled back to the float32
 * just below hi so the interval really is half-open. Elsewhere the result is JAX's.
 */
function scaleUnitFloats(u: Float32Array, lo: number, hi: number): Float32Array {
  const lo32 = f32(lo);
  const hi32 = f32(hi);
  const width = f32(hi32 - lo32);
  const justBelowHi = float32Below(hi32);
  const out = new Float32Array(u.length);
  for (let i = 0; i < u.length; i++) {
    const v = Math.max(lo32, f32(f32(u[i]! * width) + lo32));
    out[i] = v >= hi32 ? justBelowHi : v;
  }
  return out;
}

/** n float32 samples uniform in [lo, hi) (JAX `random.uniform`); never returns hi. */
export function uniform(k: Key, n: number, lo = 0, hi = 1): Float32Array {
  if (!(Number.isFinite(lo) && Number.isFinite(hi) && f32(lo) < f32(hi))) {
    throw new ArgumentError('uniform', `need finite lo < hi (as float32), got [${lo}, ${hi})`);
  }
  const u = unitFloats(randomBits(k, n));
  return lo === 0 && hi === 1 ? u : scaleUnitFloats(u, lo, hi);
}

// ---------------------------------------------------------------------------------------------
// erf and erfinv: float64 versions for accuracy, a float32 erfinv for JAX-identical samples

const TWO_OVER_SQRT_PI = 2 / Math.sqrt(Math.PI);
const SQRT2_F32 = f32(Math.SQRT2);

/** erf(x) for |x| < 2.5 by its Maclaurin series; cancellation costs at most ~3 digits there. */
function erfSeries(x: number): number {
  const x2 = x * x;
  let term = x; // (-1)^n x^(2n+1) / n!
  let sum = x;
  for (let n = 1; n < 200; n++) {
    term *= -x2 / n;
    const contribution = term / (2 * n + 1);
    sum += contribution;
    if (Math.abs(contribution) < 1e-17 * Math.abs(sum)) break;
  }
  return TWO_OVER_SQRT_PI * sum;
}

/** erfc(x) for x >= 2.5 by Laplace's continued fraction, evaluated bottom-up at fixed depth. */
function erfcContinuedFraction(x: number): number {
  let tail = x;
  for (let m = 60; m >= 1; m--) tail = x + m / 2 / tail;
  return Math.exp(-x * x) / Math.sqrt(Math.PI) / tail;
}

/** The error function, accurate to ~1e-15 absolute in float64 (NaN gives NaN through the continued fraction). */
export function erf(x: number): number {
  const ax = Math.abs(x);
  if (ax < 2.5) return erfSeries(x);
  const tail = ax > 27 ? 0 : erfcContinuedFraction(ax);
  return Math.sign(x) * (1 - tail);
}

/** Coefficients of Giles' single-precision erfinv ("Approximating the erfinv function", GPU
 * Computing Gems, 2011), highest degree first, for the central (w < 5) and tail branches. */
const GILES_CENTRAL = [
  2.81022636e-8, 3.43273939e-7, -3.5233877e-6, -4.39150654e-6, 0.00021858087, -0.00125372503,
  -0.00417768164, 0.246640727, 1.50140941,
] as const;
const GILES_TAIL = [
  -0.000200214257, 0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773, -0.0076224613,
  0.00943887047, 1.00167406, 2.83297682,
] as const;

/**
 * Giles' erfinv with every operation rounded by `round`: identity gives the float64 evaluation
 * (relative error about 4e-7, from the fit itself), Math.fround gives the float32 evaluation
 * that XLA uses for `lax.erf_inv` on float32.
 */
function erfinvGiles(u: number, round: (v: number) => number): number {
  const w = -round(Math.log(round(round(1 - u) * round(1 + u))));
  const central = w < 5;
  const t = central ? round(w - 2.5) : round(round(Math.sqrt(w)) - 3);
  const coefficients = central ? GILES_CENTRAL : GILES_TAIL;
  let p = round(coefficients[0]);
  for (let i = 1; i < coefficients.length; i++) p = round(round(coefficients[i]!) + round(p * t));
  return round(p * u);
}

/**
 * Giles' erfinv evaluated in float32, step by step, as XLA evaluates `lax.erf_inv` for float32.
 * The samplers use it because it reproduces JAX's samples: normal(key(0), 10) equals the values
 * printed in JAX's quickstart bit for bit, while the float64 `erfinv` lands 1-2 ulps from them.
 */
export function erfinvFloat32(u: number): number {
  if (Number.isNaN(u) || u < -1 || u > 1) return NaN;
  if (u === 1 || u === -1) return u * Infinity;
  return erfinvGiles(f32(u), f32);
}

/** Inverse error function on (-1, 1); ±1 map to ±Infinity. */
export function erfinv(u: number): number {
  // NaN and |u| > 1 give NaN through Giles' log((1 - u)(1 + u)) and the Newton steps.
  if (u === 1 || u === -1) return u * Infinity;
  let x = erfinvGiles(u, (v) => v);
  // Two Newton steps take Giles' ~4e-7 relative error to near float64 accuracy.
  for (let step = 0; step < 2; step++) {
    x -= (erf(x) - u) / (TWO_OVER_SQRT_PI * Math.exp(-x * x));
  }
  return x;
}

/**
 * n standard normal float32 samples, JAX's method: √2·erfinv(u) with u uniform in (-1, 1),
 * everything in float32 as XLA computes it.
 */
export function normal(k: Key, n: number): Float32Array {
  const lowestAboveMinusOne = float32Above(-1);
  const u = scaleUnitFloats(unitFloats(randomBits(k, n)), lowestAboveMinusOne, 1);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = f32(SQRT2_F32 * erfinvFloat32(u[i]!));
  return out;
}

/**
 * n float32 samples of a standard normal truncated to (lower, upper), JAX's method: uniform
 * between erf(lower/√2) and erf(upper/√2) pushed through √2·erfinv, then clamped to the open
 * interval so rounding can never produce a bound itself.
 */
export function truncatedNormal(k: Key, n: number, lower = -2, upper = 2): Float32Array {
  const lower32 = f32(lower);
  const upper32 = f32(upper);
  if (!(lower32 < upper32) || float32Above(lower32) >= upper32) {
    throw new ArgumentError('truncatedNormal', `need lower < upper with room between them, got (${lower}, ${upper})`);
  }
  // The bounds' erf is float64 rounded once; XLA's float32 erf may differ from it by an ulp.
  const a = f32(erf(f32(lower32 / SQRT2_F32)));
  const b = f32(erf(f32(upper32 / SQRT2_F32)));
  if (!(a < b)) {
    throw new ArgumentError('truncatedNormal', `interval (${lower}, ${upper}) has no float32 probability mass`);
  }
  const u = scaleUnitFloats(unitFloats(randomBits(k, n)), a, b);
  const floor = float32Above(lower32);
  const ceiling = float32Below(upper32);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    out[i] = Math.min(ceiling, Math.max(floor, f32(SQRT2_F32 * erfinvFloat32(u[i]!))));
  }
  return out;
}

/** n Bernoulli(p) draws as 0/1 bytes: uniform < p (JAX `random.bernoulli`). */
export function bernoulli(k: Key, n: number, p: number): Uint8Array {
  if (!(p >= 0 && p <= 1)) throw new ArgumentError('bernoulli', `p must be in [0, 1], got ${p}`);
  const u = uniform(k, n);
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = u[i]! < p ? 1 : 0;
  return out;
}

// ---------------------------------------------------------------------------------------------
// Integers

/** Words per block of the on-demand word stream used by rejection sampling. */
const STREAM_BLOCK_WORDS = 1024;

/**
 * An endless stream of uint32 words for key k: block b is randomBits(foldIn(k, b), 1024).
 * Rejection sampling needs an unbounded number of words; the stream makes the draws a pure
 * function of k, and a prefix of n draws never depends on how many more are taken.
 */
function wordStream(k: Key): () => number {
  let blockIndex = 0;
  let block = randomBits(foldIn(k, 0), STREAM_BLOCK_WORDS);
  let position = 0;
  return () => {
    if (position === STREAM_BLOCK_WORDS) {
      blockIndex += 1;
      block = randomBits(foldIn(k, blockIndex), STREAM_BLOCK_WORDS);
      position = 0;
    }
    return block[position++]!;
  };
}

/**
 * High and low 32-bit halves of the 64-bit product of two uint32 values, exactly: the product
 * can exceed 2^53, so it is assembled from 16-bit partial products that all stay exact.
 */
function multiplyUint32(a: number, b: number): { high: number; low: number } {
  const upper = Math.floor(a / 0x10000) * b; // < 2^48
  const lower = (a % 0x10000) * b; // < 2^48
  const upperLow16 = upper % 0x10000;
  const sumLow = upperLow16 * 0x10000 + lower; // < 2^49, exact
  return {
    high: Math.floor(upper / 0x10000) + Math.floor(sumLow / TWO_POW_32),
    low: sumLow % TWO_POW_32,
  };
}

/**
 * An unbiased integer in [0, range) for 1 <= range <= 2^32, by Lemire's multiply-shift with
 * rejection ("Fast random integer generation in an interval", 2019): a draw is rejected only
 * when its low product half falls in the 2^32 mod range short bucket, so results are exact.
 */
function boundedInteger(nextWord: () => number, range: number): number {
  const threshold = TWO_POW_32 % range; // = (2^32 - range) mod range
  for (;;) {
    const { high, low } = multiplyUint32(nextWord(), range);
    if (low >= threshold) return high;
  }
}

/**
 * n integers uniform in [lo, hi) as Int32 (unbiased, see `boundedInteger`). Bounds must lie in
 * [-2^31, 2^31] so every result fits an Int32. Draws come from the key's word stream, so the
 * first m values of randint(k, n, lo, hi) equal randint(k, m, lo, hi).
 */
export function randint(k: Key, n: number, lo: number, hi: number): Int32Array {
  assertKey(k, 'randint');
  assertCount(n, 'randint');
  const inInt32Bounds = (v: number): boolean => Number.isInteger(v) && v >= -(2 ** 31) && v <= 2 ** 31;
  if (!inInt32Bounds(lo) || !inInt32Bounds(hi) || !(lo < hi)) {
    throw new ArgumentError('randint', `need integers -2^31 <= lo < hi <= 2^31, got [${lo}, ${hi})`);
  }
  const nextWord = wordStream(k);
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) out[i] = lo + boundedInteger(nextWord, hi - lo);
  return out;
}

/** A uniformly random permutation of 0..n-1 by Fisher-Yates with unbiased bounded draws. */
export function permutation(k: Key, n: number): Int32Array {
  assertKey(k, 'permutation');
  if (!Number.isSafeInteger(n) || n < 0 || n > 2 ** 31) {
    throw new ArgumentError('permutation', `n must be an integer in [0, 2^31], got ${n}`);
  }
  const nextWord = wordStream(k);
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) out[i] = i;
  for (let i = n - 1; i > 0; i--) {
    const j = boundedInteger(nextWord, i + 1);
    const held = out[i]!;
    out[i] = out[j]!;
    out[j] = held;
  }
  return out;
}
