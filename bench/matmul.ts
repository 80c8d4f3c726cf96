/**
 * Matmul benchmark: our engine (webasm, as shipped), its tuning variants, a plain TypeScript
 * 4x4 register-blocked loop, the gpu.js cpu backend, and the anchors (tfjs wasm/cpu, jax-js wasm).
 *
 *   npx tsx bench/matmul.ts            # everything (about a minute)
 *   npx tsx bench/matmul.ts --ours     # our formulations only
 *
 * Times are medians of warm runs and include everything a caller pays: packing, the kernel call
 * (copy in, compute, copy out) and unpacking into a row-major Float32Array.
 */
import { withBackend } from '../src/backend/backend.ts';
import { matmulKernelRun, matmulRows4Variant, matmulReference, type MatmulProblem } from '../src/backend/matmul.ts';
import {
  MATMUL_CASES, adaptiveMedianMs, anchorTimings, formatRows, matmulRow, seededArray, type MatmulCase, type Row,
} from './anchors.ts';

const OURS = 'ours webasm';

/** C = A @ B per batch entry in plain TypeScript: 4x4 register blocks, scalar edges. */
export function blockedMatmulTs(p: MatmulProblem, a: Float32Array, b: Float32Array): Float32Array {
  if (p.transA || p.transB) throw new Error('blockedMatmulTs: only the non-transposed layout is benchmarked');
  const { batch, m, k, n } = p;
  const c = new Float32Array(batch * m * n);
  for (let z = 0; z < batch; z++) {
    const A = a.subarray(z * m * k, (z + 1) * m * k);
    const B = b.subarray(z * k * n, (z + 1) * k * n);
    const C = c.subarray(z * m * n, (z + 1) * m * n);
    const m4 = m & ~3;
    const n4 = n & ~3;
    for (let i = 0; i < m4; i += 4) {
      for (let j = 0; j < n4; j += 4) block4x4(A, B, C, i, j, k, n);
      for (let j = n4; j < n; j++) for (let r = i; r < i + 4; r++) C[r * n + j] = dot(A, B, r, j, k, n);
    }
    for (let r = m4; r < m; r++) for (let j = 0; j < n; j++) C[r * n + j] = dot(A, B, r, j, k, n);
  }
  return c;
}

function dot(A: Float32Array, B: Float32Array, row: number, col: number, k: number, n: number): number {
  let s = 0;
  for (let t = 0; t < k; t++) s += A[row * k + t] * B[t * n + col];
  return s;
}

function block4x4(A: Float32Array, B: Float32Array, C: Float32Array, i: number, j: number, k: number, n: number): void {
  const a0 = i * k, a1 = a0 + k, a2 = a1 + k, a3 = a2 + k;
  let c00 = 0, c01 = 0, c02 = 0, c03 = 0, c10 = 0, c11 = 0, c12 = 0, c13 = 0;
  let c20 = 0, c21 = 0, c22 = 0, c23 = 0, c30 = 0, c31 = 0, c32 = 0, c33 = 0;
  for (let t = 0, bo = j; t < k; t++, bo += n) {
    const b0 = B[bo], b1 = B[bo + 1], b2 = B[bo + 2], b3 = B[bo + 3];
    const x0 = A[a0 + t], x1 = A[a1 + t], x2 = A[a2 + t], x3 = A[a3 + t];
    c00 += x0 * b0; c01 += x0 * b1; c02 += x0 * b2; c03 += x0 * b3;
    c10 += x1 * b0; c11 += x1 * b1; c12 += x1 * b2; c13 += x1 * b3;
    c20 += x2 * b0; c21 += x2 * b1; c22 += x2 * b2; c23 += x2 * b3;
    c30 += x3 * b0; c31 += x3 * b1; c32 += x3 * b2; c33 += x3 * b3;
  }
  let o = i * n + j;
  C[o] = c00; C[o + 1] = c01; C[o + 2] = c02; C[o + 3] = c03; o += n;
  C[o] = c10; C[o + 1] = c11; C[o + 2] = c12; C[o + 3] = c13; o += n;
  C[o] = c20; C[o + 1] = c21; C[o + 2] = c22; C[o + 3] = c23; o += n;
  C[o] = c30; C[o + 1] = c31; C[o + 2] = c32; C[o + 3] = c33;
}

type Impl = (p: MatmulProblem, a: Float32Array, b: Float32Array) => Float32Array;

const OUR_IMPLS: readonly { name: string; run: Impl; note?: string; slow?: boolean }[] = [
  { name: OURS, run: matmulKernelRun, note: 'rows4, unroll 2, flat readback' },
  { name: 'rows4 unroll 1', run: (p, a, b) => matmulRows4Variant(p, a, b, { unroll: 1 }) },
  { name: 'rows4 unroll 4', run: (p, a, b) => matmulRows4Variant(p, a, b, { unroll: 4 }) },
  { name: 'rows4 gpu.js-shaped output', run: (p, a, b) => matmulRows4Variant(p, a, b, { shapeOutput: true }) },
  { name: 'TS 4x4 blocked loop', run: blockedMatmulTs },
  { name: 'ours gpu.js cpu', run: (p, a, b) => withBackend('cpu', () => matmulKernelRun(p, a, b)), slow: true },
];

function problemOf(c: MatmulCase): MatmulProblem {
  return { batch: c.batch, m: c.m, k: c.k, n: c.n, transA: false, transB: false };
}

/** Fails loudly if an implementation is wrong, so a fast wrong variant cannot win. */
function checkAgainstReference(name: string, got: Float32Array, ref: Float64Array): void {
  let scale = 0;
  let err = 0;
  for (let i = 0; i < ref.length; i++) {
    scale = Math.max(scale, Math.abs(ref[i]));
    err = Math.max(err, Math.abs(got[i] - ref[i]));
  }
  if (!(err <= 1e-5 * scale)) throw new Error(`${name}: max error ${err} vs scale ${scale}`);
}

export function ourMatmulTimings(includeSlow = true): Row[] {
  const rows: Row[] = [];
  for (const c of MATMUL_CASES) {
    const p = problemOf(c);
    const a = seededArray(c.batch * c.m * c.k, 1);
    const b = seededArray(c.batch * c.k * c.n, 2);
    const ref = matmulReference(p, a, b);
    for (const impl of OUR_IMPLS) {
      if (impl.slow && !includeSlow) continue;
      checkAgainstReference(impl.name, impl.run(p, a, b), ref);
      rows.push(matmulRow(c, impl.name, adaptiveMedianMs(() => impl.run(p, a, b)), impl.note));
    }
  }
  return rows;
}

async function main(): Promise<void> {
  const oursOnly = process.argv.includes('--ours');
  const rows = ourMatmulTimings();
  if (!oursOnly) rows.push(...(await anchorTimings(['matmul'])));
  const byShape = MATMUL_CASES.flatMap((c) => rows.filter((r) => r.shape === c.label));
  console.log(formatRows(byShape, OURS));
}

await main();
