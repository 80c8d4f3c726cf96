import type { Tensor } from '../tensor/tensor.ts';

/** A lowered program: program inputs in, program outputs out (as tensors with the shapes it returned). */
export interface Executable {
  readonly kind: 'interpret' | 'cpu' | 'webgpu';
  run(inputs: readonly Tensor[]): Tensor[];
  /**
   * Peak bytes a call holds beyond its inputs, as planned (the arena plus the arrays made per call);
   * null where the lowering allocates through the tensor layer, whose own accounting (measureMemory) sees it.
   */
  readonly peakBytes: number | null;
}
