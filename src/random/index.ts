/**
 * Explicit randomness: keys are plain values (Threefry-2x32, JAX-compatible), and every sampler takes
 * the key it draws from. Bits are computed on the host, so the same key gives the same numbers on
 * every backend and every run. Key derivation and the tensor samplers are primitives, so a jit trace
 * records them and a replay draws from the key it is given. fp-ts `State<Key, A>` helpers thread a key
 * through a sequence of draws.
 */
import * as S from 'fp-ts/lib/State.js';
import { pipe } from 'fp-ts/lib/function.js';
import { checkShape, type Shape } from '../tensor/shape.ts';
import type { Tensor } from '../tensor/tensor.ts';
import * as K from './keys.ts';
import { sampleBernoulli, sampleNormal, sampleTruncatedNormal, sampleUniform, tracedFoldIn, tracedSplit } from './primitives.ts';
import { isTracedKey } from './traced.ts';

export { key, randomBits, randint, permutation, type Key } from './keys.ts';
export { isBrandedKey } from './traced.ts';

/** Splits a key into n new, independent keys (JAX `random.split`); recorded when traced by jit. */
export const split = (k: K.Key, n = 2): K.Key[] => (isTracedKey(k) ? tracedSplit(k, n) : K.split(k, n));

/** Derives a new key from k and a uint32 of data (JAX `random.fold_in`); recorded when traced by jit. */
export const foldIn = (k: K.Key, data: number): K.Key => (isTracedKey(k) ? tracedFoldIn(k, data) : K.foldIn(k, data));

/** Uniform in [minval, maxval). */
export const uniform = (k: K.Key, shape: Shape, minval = 0, maxval = 1): Tensor =>
  sampleUniform(k, { shape: [...checkShape('uniform', shape)], lo: minval, hi: maxval });

export const normal = (k: K.Key, shape: Shape): Tensor => sampleNormal(k, { shape: [...checkShape('normal', shape)] });

/** Standard normal truncated to (lower, upper) (JAX's inverse-CDF method). */
export const truncatedNormal = (k: K.Key, shape: Shape, lower = -2, upper = 2): Tensor =>
  sampleTruncatedNormal(k, { shape: [...checkShape('truncatedNormal', shape)], lower, upper });

/** 1 with probability p, else 0 (as float32). */
export const bernoulli = (k: K.Key, p: number, shape: Shape): Tensor => sampleBernoulli(k, { shape: [...checkShape('bernoulli', shape)], p });

// ---------------------------------------------------------------------------------------------
// State<Key, A>: where threading a key through several draws reads better than splitting by hand.

export type Random<A> = S.State<K.Key, A>;

/** A fresh subkey, advancing the state. */
export const nextKey: Random<K.Key> = (k) => {
  const [sub, rest] = split(k);
  return [sub, rest];
};

/** Lift a keyed sampler into State. */
export const draw = <A>(sample: (k: K.Key) => A): Random<A> => pipe(nextKey, S.map(sample));

/** Run a State computation from `k`, returning only the value. */
export const evalRandom = <A>(m: Random<A>, k: K.Key): A => S.evaluate(k)(m);

export { S as State };
