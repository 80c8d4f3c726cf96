import type { Tensor } from '../tensor/tensor.ts';

/** A lowered program: program inputs in, program outputs out (as tensors with the shapes it returned). */
export interface Executable {
  readonly kind: 'interpret' | 'cpu' | 'webgpu';
  run(inputs: readonly Tensor[]): Tensor[];
}
