/** matmul with batch broadcasting (torch.matmul semantics), on the backend's matmul kernels. */
import { getBackend } from '../backend/backend.ts';
import { matmulKernelAny } from '../backend/matmul.ts';
import { matmulWgsl } from '../backend/wgsl-kernels.ts';
import { splitIndex } from './codegen.ts';
import { ShapeError } from './errors.ts';
import { planTiling } from './exec.ts';
import { broadcastTo, reshape } from './ops.ts';
import { apply, definePrimitive } from './primitive.ts';
import { broadcastShapes, fmt, sizeOf } from './shape.ts';
import { assertTensor, type Tensor } from './tensor.ts';

export interface MatmulAttrs {
  readonly transA: boolean;
  readonly transB: boolean;
}

/**
 * The primitive: C[z] = op(A[z]) op(B[z]) over operands of rank 3 with one shared batch axis (`matmul`
 * folds, promotes and broadcasts everything else before applying it).
 */
const MATMUL = definePrimitive<MatmulAttrs>({
  name: 'matmul',
  shape: ([a, b], { transA, transB }) => [a[0], transA ? a[2] : a[1], transB ? b[1] : b[2]],
  impl: ([a], { transA, transB }, [batch, m, n]) => {
    const problem = { batch, m, k: transA ? a[1] : a[2], n, transA, transB };
    // webgpu runs the kernel below on device-resident operands; the other backends use the matmul engine
    // (wasm GEMM on webasm, gpu.js kernels on cpu and webgl2).
    return {
      name: 'matmul',
      kernel: (gpu) => ({ key: `matmul|${batch}|${problem.m}|${problem.k}|${n}|${transA}|${transB}`, source: matmulSource(problem, gpu) }),
      run: getBackend() === 'webgpu' ? undefined : ([x, y]) => matmulKernelAny(problem, x, y),
      wgsl: (ctx) => matmulWgsl(problem, planTiling(ctx, problem)),
    };
  },
  save: 'inputs',
  vjp: (g, { x: [a, b], attrs: { transA, transB }, needs }) => [
    !needs[0] ? null : transA ? matmul(b, g, { transA: transB, transB: true }) : matmul(g, b, { transB: !transB }),
    !needs[1] ? null : transB ? matmul(g, a, { transA: true, transB: transA }) : matmul(a, g, { transA: !transA }),
  ],
});

export interface MatmulOptions {
  /** Use the transpose of the last two axes of a / b (no copy). */
  readonly transA?: boolean;
  readonly transB?: boolean;
}

/**
 * a @ b. 1-D operands are promoted as in torch.matmul (a vector on the left is a row, on the right a
 * column, and the added axis is removed from the result). Leading (batch) axes broadcast.
 */
export function matmul(a: Tensor, b: Tensor, opts: MatmulOptions = {}): Tensor {
  const op = 'matmul';
  assertTensor(op, a, 'first argument');
  assertTensor(op, b, 'second argument');
  if (a.rank === 0 || b.rank === 0) throw new ShapeError(op, `operands must have rank >= 1, got ${fmt(a.shape)} and ${fmt(b.shape)}`);
  const transA = opts.transA === true;
  const transB = opts.transB === true;
  const a2 = a.rank === 1 ? reshape(a, transA ? [a.size, 1] : [1, a.size]) : a;
  const b2 = b.rank === 1 ? reshape(b, transB ? [1, b.size] : [b.size, 1]) : b;
  const [m, k] = transA ? [a2.shape[a2.rank - 1], a2.shape[a2.rank - 2]] : [a2.shape[a2.rank - 2], a2.shape[a2.rank - 1]];
  const [k2, n] = transB ? [b2.shape[b2.rank - 1], b2.shape[b2.rank - 2]] : [b2.shape[b2.rank - 2], b2.shape[b2.rank - 1]];
  if (k !== k2) {
    throw new ShapeError(op, `inner dimensions differ: ${fmt(a.shape)}${transA ? 'ᵀ' : ''} @ ${fmt(b.shape)}${transB ? 'ᵀ' : ''} (${k} vs ${k2})`);
  }
  // A stack of matrices times one matrix (x @ Wᵀ in every linear layer): fold the stack into the rows,
  // one larger product instead of a batch of small ones over copies of b (and b's gradient comes out
  // of one product instead of a batch reduced afterwards).
  if (b.rank === 2 && a.rank > 2 && !transA) {
    // The row count is explicit: reshape cannot infer -1 when k is 0 (an empty product).
    const rows = reshape(a, [sizeOf(a.shape.slice(0, -1)), k]);
    return reshape(matmul(rows, b, { transB }), [...a.shape.slice(0, -1), n]);
  }
  const batchShape = broadcastShapes(op, a2.shape.slice(0, -2), b2.shape.slice(0, -2));
  const batch = sizeOf(batchShape);
  const expand = (t: Tensor) => {
    const full = [...batchShape, ...t.shape.slice(-2)];
    return reshape(broadcastTo(t, full), [batch, ...t.shape.slice(-2)]);
  };
  const a3 = expand(a2);
  const b3 = expand(b2);
  let out = apply(MATMUL, [a3, b3], { transA, transB });
  out = reshape(out, [...batchShape, m, n]);
  if (a.rank === 1) out = reshape(out, [...batchShape, n]);
  if (b.rank === 1) out = reshape(out, out.shape.slice(0, -1));
  return out;
}

/** One output per thread over a flat [batch, m, n] output, with exact integer index decoding on GPUs. */
function matmulSource(p: { batch: number; m: number; k: number; n: number; transA: boolean; transB: boolean }, gpu: boolean): string {
  const { m, k, n, transA, transB } = p;
  const aAt = transA ? `z * ${m * k} + i * ${m} + row` : `z * ${m * k} + row * ${k} + i`;
  const bAt = transB ? `z * ${k * n} + col * ${k} + i` : `z * ${k * n} + i * ${n} + col`;
  return `function (a, b) {
let r = this.thread.x;
${splitIndex('r', 'col', n, gpu)}${splitIndex('r', 'row', m, gpu)}const z = r;
let s = 0;
for (let i = 0; i < ${k}; i++) {
  s += a[${aAt}] * b[${bAt}];
}
return s;
}
`;
}
