/**
 * Keys inside a jit trace. A key made by `key`, `split` or `foldIn` is a branded pair of uint32 words, so
 * `jit` can tell it from other numbers and make it a program input. While tracing, a key is a
 * `TracedKey`: an abstract value (its two words as the bits of a [2] float32 tensor) from which `split`,
 * `foldIn` and the samplers record program equations, so a replay with a new key draws new numbers,
 * the same ones eager mode draws from that key. Reading its words on the host raises a TraceError.
 */
import { TraceError } from '../tensor/errors.ts';
import type { Tensor } from '../tensor/tensor.ts';

/** A PRNG key: two uint32 words, exactly JAX's threefry key data. */
export type Key = readonly [number, number];

const KEY_BRAND = Symbol('revgrad.key');

/** Mark a freshly made key pair (invisible to equality checks, JSON and spreading). */
export function brandKey(k: [number, number]): Key {
  Object.defineProperty(k, KEY_BRAND, { value: true });
  return k;
}

/** Whether `v` is a key made by the library (a jit argument that becomes a key input). */
export const isBrandedKey = (v: unknown): v is Key => Array.isArray(v) && (v as { [KEY_BRAND]?: boolean })[KEY_BRAND] === true;

const readError = () =>
  new TraceError('a traced key was read on the host while tracing; inside a jitted function derive keys with split/foldIn and draw with the tensor samplers (uniform, normal, bernoulli), not the Float32Array ones of random/keys.ts');

export class TracedKey {
  /** The key's two words, as the bits of an abstract [2] float32 tensor. */
  constructor(readonly bits: Tensor) {}
  get 0(): number {
    throw readError();
  }
  get 1(): number {
    throw readError();
  }
  get length(): 2 {
    return 2;
  }
  /** The one place a traced key is typed as a key: everything that reads its words checks for it first. */
  asKey(): Key {
    return this as unknown as Key;
  }
}

export const isTracedKey = (k: unknown): k is TracedKey => k instanceof TracedKey;

/** Throw the typed error for host code handed a traced key. */
export function rejectTracedKey(k: unknown, where: string): void {
  if (k instanceof TracedKey) throw new TraceError(`${where}: ${readError().message.replace(/^jit: /, '')}`);
}

/** A key's words as the bits of two float32 values (how programs carry keys). */
export function keyBits(k: Key): Float32Array {
  return new Float32Array(new Uint32Array([k[0], k[1]]).buffer);
}

/** The key stored in the bits of a [2] float32 buffer. */
export function keyFromBits(bits: Float32Array): Key {
  const words = new Uint32Array(bits.buffer, bits.byteOffset, 2);
  return brandKey([words[0], words[1]]);
}
