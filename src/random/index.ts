/**
 * Explicit randomness: keys are plain values (Threefry-2x32, JAX-compatible), and every sampler takes
 * the key it draws from. Bits are computed on the host, so the same key gives the same numbers on
 * every backend and every run. fp-ts `State<Key, A>` helpers thread a key through a sequence of draws.
 */
import * as S from 'fp-ts/lib/State.js';
import { pipe } from 'fp-ts/lib/function.js';
import { checkShape, sizeOf, type Shape } from '../tensor/shape.ts';
import { tensor, type Tensor } from '../tensor/tensor.ts';
import * as K from './keys.ts';

export { key, split, foldIn, randomBits, randint, permutation, type Key } from './keys.ts';

const shaped = (op: string, shape: Shape, values: ArrayLike<number>): Tensor => tensor(Float32Array.from(values), checkShape(op, shape));

/** Uniform in [minval, maxval). */
export const uniform = (k: K.Key, shape: Shape, minval = 0, maxval = 1): Tensor =>
  shaped('uniform', shape, K.uniform(k, sizeOf(checkShape('uniform', shape)), minval, maxval));

export const normal = (k: K.Key, shape: Shape): Tensor => shaped('normal', shape, K.normal(k, sizeOf(checkShape('normal', shape))));

/** Standard normal truncated to (lower, upper) (JAX's inverse-CDF method). */
export const truncatedNormal = (k: K.Key, shape: Shape, lower = -2, upper = 2): Tensor =>
  shaped('truncatedNormal', shape, K.truncatedNormal(k, sizeOf(checkShape('truncatedNormal', shape)), lower, upper));

/** 1 with probability p, else 0 (as float32). */
export const bernoulli = (k: K.Key, p: number, shape: Shape): Tensor =>
  shaped('bernoulli', shape, K.bernoulli(k, sizeOf(checkShape('bernoulli', shape)), p));

// ---------------------------------------------------------------------------------------------
// State<Key, A>: where threading a key through several draws reads better than splitting by hand.

export type Random<A> = S.State<K.Key, A>;

/** A fresh subkey, advancing the state. */
export const nextKey: Random<K.Key> = (k) => {
  const [sub, rest] = K.split(k);
  return [sub, rest];
};

/** Lift a keyed sampler into State. */
export const draw = <A>(sample: (k: K.Key) => A): Random<A> => pipe(nextKey, S.map(sample));

/** Run a State computation from `k`, returning only the value. */
export const evalRandom = <A>(m: Random<A>, k: K.Key): A => S.evaluate(k)(m);

export { S as State };
