/**
 * Threefry-2x32 with 20 rounds, the counter-based block cipher behind JAX's default PRNG.
 *
 * The round structure, rotation constants and key schedule follow Random123 (Salmon et al., SC'11)
 * and `jax._src.prng.threefry_2x32`, so the same (key, counter) pair gives the same two words here
 * as in JAX. Everything is uint32 arithmetic done on JS numbers: additions wrap with `| 0`,
 * results are returned unsigned with `>>> 0`.
 */

/** Rotation amounts of the two alternating groups of four rounds. */
const ROTATIONS_A = [13, 15, 26, 6] as const;
const ROTATIONS_B = [17, 29, 16, 24] as const;

/** Skein's key-schedule parity constant: the third key word is k0 ^ k1 ^ this. */
const KEY_SCHEDULE_PARITY = 0x1bd11bda;

const rotateLeft32 = (x: number, r: number): number => (x << r) | (x >>> (32 - r));

/**
 * Encrypts one counter block (c0, c1) under key (k0, k1) and writes the two output words into
 * `out` at `offset` and `offset + 1`. Writing into a caller's buffer keeps the hot loop free of
 * allocations; `threefry2x32` is the convenient tuple form.
 */
function threefry2x32Into(
  k0: number,
  k1: number,
  c0: number,
  c1: number,
  out: Uint32Array,
  offset: number,
): void {
  const ks0 = k0 | 0;
  const ks1 = k1 | 0;
  const ks2 = ks0 ^ ks1 ^ KEY_SCHEDULE_PARITY;
  const schedule = [ks0, ks1, ks2];

  let x0 = (c0 + ks0) | 0;
  let x1 = (c1 + ks1) | 0;
  // Five groups of four rounds; after group g the key words rotate by g+1 and g+1 is injected.
  for (let group = 0; group < 5; group++) {
    const rotations = group % 2 === 0 ? ROTATIONS_A : ROTATIONS_B;
    for (const r of rotations) {
      x0 = (x0 + x1) | 0;
      x1 = rotateLeft32(x1, r) ^ x0;
    }
    const injection = group + 1;
    x0 = (x0 + schedule[injection % 3]!) | 0;
    x1 = (x1 + schedule[(injection + 1) % 3]! + injection) | 0;
  }
  out[offset] = x0 >>> 0;
  out[offset + 1] = x1 >>> 0;
}

/** Threefry-2x32-20 of one counter block: returns the two uint32 output words. */
export function threefry2x32(
  key: readonly [number, number],
  counter: readonly [number, number],
): [number, number] {
  const out = new Uint32Array(2);
  threefry2x32Into(key[0], key[1], counter[0], counter[1], out, 0);
  return [out[0]!, out[1]!];
}

/**
 * JAX's `threefry_2x32(key, count)` on a flat array of counters (the legacy, non-partitionable
 * layout): the counters are padded with one zero to even length, the first half feeds the first
 * counter word and the second half the second, and the two output halves are concatenated back
 * (dropping the pad). Output word i therefore depends only on counts[i] and its partner.
 */
export function threefry2x32Counts(key: readonly [number, number], counts: Uint32Array): Uint32Array {
  const n = counts.length;
  const half = Math.ceil(n / 2);
  const padded = new Uint32Array(2 * half);
  padded.set(counts);
  const out = new Uint32Array(2 * half);
  const block = new Uint32Array(2);
  for (let i = 0; i < half; i++) {
    threefry2x32Into(key[0], key[1], padded[i]!, padded[half + i]!, block, 0);
    out[i] = block[0]!;
    out[half + i] = block[1]!;
  }
  return n === out.length ? out : out.slice(0, n);
}
