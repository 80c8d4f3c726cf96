/** Library-internal (not re-exported by src/index.ts): the optimizers' fused update passes. */
import { elementwiseImpl, toTensor, type TensorLike } from './ops.ts';
import { apply, definePrimitive, notDifferentiable } from './primitive.ts';
import { broadcastShapes, type Shape } from './shape.ts';
import type { Tensor } from './tensor.ts';

export interface ElementwiseAttrs {
  /** For profiles and kernel names. */
  readonly name: string;
  /** The scalar expression in x0, x1, ... */
  readonly expr: string;
}

const ELEMENTWISE = definePrimitive<ElementwiseAttrs>({
  name: 'elementwise',
  shape: (inputs, { name }) => inputs.reduce<Shape>((acc, s) => broadcastShapes(name, acc, s), []),
  impl: (inputs, { name, expr }, out) => elementwiseImpl(name, inputs, out, expr),
  elementwise: { expr: ({ expr }) => expr },
  save: 'nothing',
  vjp: notDifferentiable('elementwise (a fused optimizer expression) has no VJP rule'),
});

/**
 * A fused elementwise expression over broadcast inputs, `expr` in x0, x1, ... (JavaScript arithmetic and
 * Math.* that gpu.js also compiles). Not differentiable: it is for optimizer updates and similar
 * bookkeeping, where one pass replaces a chain of ops. `expr` becomes code, so it must come from the
 * library, never from user input.
 */
export function elementwise(name: string, expr: string, inputs: readonly TensorLike[]): Tensor {
  const ts = inputs.map((t, i) => toTensor(name, t, `input ${i}`));
  return apply(ELEMENTWISE, ts, { name, expr });
}
