/** Shared by the matmul and GEMM tests: reproducible inputs and a checker against the float64 reference. */
import * as assert from 'uvu/assert';
import fc from 'fast-check';
import { matmulReference, type MatmulProblem } from '../src/backend/matmul.ts';

/** Deterministic values in [-1, 1) (xorshift32) so failures reproduce. */
export function randomArray(length: number, seed: number): Float32Array {
  const out = new Float32Array(length);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    s ^= s << 13; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    out[i] = s / 2 ** 31 - 1;
  }
  return out;
}

/** Largest |got - ref| relative to max|ref| (f32 accumulation vs f64; rtol 1e-5 for K <= 1024). */
export function relativeError(got: Float32Array, ref: ArrayLike<number>): number {
  let scale = 0;
  for (let i = 0; i < ref.length; i++) scale = Math.max(scale, Math.abs(ref[i]));
  let err = 0;
  for (let i = 0; i < ref.length; i++) err = Math.max(err, Math.abs(got[i] - ref[i]));
  return scale === 0 ? err : err / scale;
}

export type Gemm = (p: MatmulProblem, a: Float32Array, b: Float32Array) => Float32Array;

export function problemInputs(p: MatmulProblem, seed: number): [Float32Array, Float32Array] {
  return [randomArray(p.batch * p.m * p.k, seed), randomArray(p.batch * p.k * p.n, seed + 7919)];
}

/** `gemm` on seeded inputs agrees with the float64 reference within 1e-5 of max|ref|. */
export function checkGemm(gemm: Gemm, p: MatmulProblem, seed: number, what: string): void {
  const [a, b] = problemInputs(p, seed);
  const got = gemm(p, a, b);
  const ref = matmulReference(p, a, b);
  assert.is(got.length, ref.length, `${what} ${JSON.stringify(p)}: length`);
  const err = relativeError(got, ref);
  assert.ok(err <= 1e-5, `${what} ${JSON.stringify(p)}: relative error ${err}`);
}

export const TRANSPOSES = [[false, false], [false, true], [true, false], [true, true]] as const;

/** Random matmul problems up to the given sizes, all transposes. */
export const matmulProblem = (maxM: number, maxK: number, maxN: number): fc.Arbitrary<MatmulProblem> =>
  fc.record({
    batch: fc.integer({ min: 1, max: 3 }),
    m: fc.integer({ min: 1, max: maxM }),
    k: fc.integer({ min: 1, max: maxK }),
    n: fc.integer({ min: 1, max: maxN }),
    transA: fc.boolean(),
    transB: fc.boolean(),
  });
