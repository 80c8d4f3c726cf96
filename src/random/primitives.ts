/**
 * Key derivation and sampling as primitives, so a jit trace records them: a program takes its keys as
 * inputs and draws its masks itself, and a replay with a new key draws new numbers. The bits are
 * computed on the host (the same Threefry code as eager mode), so every backend gets the same numbers.
 * A key travels as the bits of a [2] float32 tensor (keyBits); nothing does float arithmetic on it.
 */
import { apply, definePrimitive, noGradient, type Primitive } from '../tensor/primitive.ts';
import type { OpImpl } from '../tensor/exec.ts';
import type { Shape } from '../tensor/shape.ts';
import { fromBuffer, type Tensor } from '../tensor/tensor.ts';
import * as K from './keys.ts';
import { isTracedKey, keyBits, keyFromBits, TracedKey, type Key } from './traced.ts';

/** Computed on the host from the key's bits, on every backend. */
const onHost = (name: string, fn: (key: Key, outSize: number) => Float32Array): OpImpl => ({
  name,
  run: ([bits], outSize) => fn(keyFromBits(bits), outSize),
});

function keyPrimitive<A>(name: string, derive: (k: Key, attrs: A) => Key): Primitive<A> {
  return definePrimitive<A>({
    name,
    shape: () => [2],
    impl: (_, attrs) => onHost(name, (k) => keyBits(derive(k, attrs))),
    save: 'nothing',
    vjp: noGradient,
  });
}

const KEY_SPLIT = keyPrimitive<{ readonly n: number; readonly index: number }>('keySplit', (k, { n, index }) => K.split(k, n)[index]);
const KEY_FOLD_IN = keyPrimitive<{ readonly data: number }>('keyFoldIn', (k, { data }) => K.foldIn(k, data));

/** The key as a tensor of its bits: a traced key's value, or a constant. */
const bitsOf = (k: Key | TracedKey): Tensor => (isTracedKey(k) ? k.bits : fromBuffer(keyBits(k), [2]));

/** split, recorded when the key is traced. */
export function tracedSplit(k: TracedKey, n: number): Key[] {
  K.split([0, 0], n); // validates n
  return Array.from({ length: n }, (_, index) => new TracedKey(apply(KEY_SPLIT, [k.bits], { n, index })).asKey());
}

/** foldIn, recorded when the key is traced. */
export function tracedFoldIn(k: TracedKey, data: number): Key {
  K.foldIn([0, 0], data); // validates data
  return new TracedKey(apply(KEY_FOLD_IN, [k.bits], { data })).asKey();
}

interface SampleAttrs {
  readonly shape: Shape;
}

function sampler<A extends SampleAttrs>(name: string, draw: (k: Key, n: number, attrs: A) => ArrayLike<number>): (k: Key, attrs: A) => Tensor {
  const prim = definePrimitive<A>({
    name,
    shape: (_, { shape }) => shape,
    impl: (_, attrs) =>
      onHost(name, (k, n) => {
        const v = draw(k, n, attrs);
        return v instanceof Float32Array ? v : Float32Array.from(v);
      }),
    save: 'nothing',
    vjp: noGradient,
  });
  return (k, attrs) => {
    draw([0, 0], 0, attrs); // validates the attributes (bounds, probabilities) before anything is recorded
    return apply(prim, [bitsOf(k)], attrs);
  };
}

export const sampleUniform = sampler<SampleAttrs & { readonly lo: number; readonly hi: number }>('randomUniform', (k, n, { lo, hi }) => K.uniform(k, n, lo, hi));
export const sampleNormal = sampler<SampleAttrs>('randomNormal', (k, n) => K.normal(k, n));
export const sampleTruncatedNormal = sampler<SampleAttrs & { readonly lower: number; readonly upper: number }>('randomTruncatedNormal', (k, n, { lower, upper }) =>
  K.truncatedNormal(k, n, lower, upper),
);
export const sampleBernoulli = sampler<SampleAttrs & { readonly p: number }>('randomBernoulli', (k, n, { p }) => K.bernoulli(k, n, p));

