/** The shape of a batched matrix product, shared by the matmul engines (matmul.ts, wasm-gemm.ts). */
import { ArgumentError, ShapeError } from '../tensor/errors.ts';

/** C = op(A) @ op(B) per batch entry: a is batch x (transA ? [k, m] : [m, k]), b is batch x (transB ? [n, k] : [k, n]). */
export interface MatmulProblem {
  batch: number;
  m: number;
  k: number;
  n: number;
  transA: boolean;
  transB: boolean;
}

/** Throws unless the sizes are non-negative integers and a, b hold exactly the elements they describe. */
export function checkMatmulProblem(op: string, p: MatmulProblem, a: Float32Array, b: Float32Array): void {
  const { batch, m, k, n } = p;
  for (const [name, v] of Object.entries({ batch, m, k, n })) {
    if (!Number.isInteger(v) || v < 0) throw new ArgumentError(op, `${name} must be a non-negative integer, got ${v}`);
  }
  if (a.length !== batch * m * k) throw new ShapeError(op, `a has ${a.length} elements, expected ${batch}*${m}*${k}`);
  if (b.length !== batch * k * n) throw new ShapeError(op, `b has ${b.length} elements, expected ${batch}*${k}*${n}`);
}
