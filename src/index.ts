/** revgrad: functional reverse-mode autodiff on gpu.js kernels, with reversible combinators. */
export { getBackend, setBackend, withBackend, kernelCacheStats, clearKernelCache, type BackendName } from './backend/backend.ts';
export { measureMemory, type MemoryReport } from './backend/memory.ts';
export { Tensor, tensor, zeros, ones, full, arange, scalar, zerosLike, onesLike, isTensor } from './tensor/tensor.ts';
export * from './tensor/errors.ts';
export * from './tensor/ops.ts';
export { matmul, type MatmulOptions } from './tensor/matmul.ts';
export { conv, maxPool3d, avgPool3d, type ConvOptions } from './tensor/conv.ts';
export { softmax, logSoftmax, layerNorm, gelu } from './tensor/composite.ts';
export { setFastPaths } from './tensor/exec.ts';
export { vjp, grad, valueAndGrad, customVjp, stopGradient, untraced, type Pullback } from './autodiff/tape.ts';
export { flattenWithPaths, leaves, mapTree, zipTrees, unflattenLike, toNamed, fromNamed, type PyTree } from './autodiff/pytree.ts';
