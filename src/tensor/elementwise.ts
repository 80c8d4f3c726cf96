/** Library-internal (not re-exported by src/index.ts): the optimizers' fused update passes. */
import { stridedMap } from './codegen.ts';
import { execute } from './exec.ts';
import { notify } from './observer.ts';
import { toTensor, type TensorLike } from './ops.ts';
import { broadcastShapes, broadcastStrides } from './shape.ts';
import type { Tensor } from './tensor.ts';

/**
 * A fused elementwise expression over broadcast inputs, `expr` in x0, x1, ... (JavaScript arithmetic and
 * Math.* that gpu.js also compiles). Not differentiable (autodiff has no rule for it): it is for
 * optimizer updates and similar bookkeeping, where one pass replaces a chain of ops. `expr` becomes
 * code, so it must come from the library, never from user input.
 */
export function elementwise(name: string, expr: string, inputs: readonly TensorLike[]): Tensor {
  const ts = inputs.map((t, i) => toTensor(name, t, `input ${i}`));
  const shape = ts.reduce<number[]>((acc, t) => broadcastShapes(name, acc, t.shape), []);
  const reads = ts.map((t) => ({ strides: broadcastStrides(t.shape, shape), offset: 0 }));
  return notify('elementwise', ts, execute(ts, shape, stridedMap(name, shape, reads, expr)), { name });
}

