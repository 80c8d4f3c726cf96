/**
 * revgrad: functional reverse-mode autodiff on gpu.js kernels, with reversible combinators.
 *
 * This entry runs everywhere (Node, browsers, bundlers): its module graph has no node: built-ins.
 * File helpers (safetensors/.pyth files, weights, checkpoints, YAML configs, the fixture check) and the
 * Moving-MNIST data set are in 'revgrad/node'. Every export is listed by name: the public surface is
 * this file (docs/api.md documents each name; test/api-surface.test.ts checks that).
 */
export { getBackend, setBackend, withBackend, kernelCacheStats, clearKernelCache, setKernelCacheCapacity, type BackendName } from './backend/backend.ts';
export { selectBackend, chooseBackend, probeWebGL2, probeWebAssemblySimd, type BackendRequest, type Selection, type SelectOptions, type Probes } from './backend/select.ts';
export { initWebGPU, isSoftwareAdapter, describeAdapter, type AdapterDescription, type WebGPUStatus, type InitOptions } from './backend/webgpu-node.ts';
export { measureMemory, type MemoryReport } from './backend/memory.ts';
export { webgpuCounters, counterDelta, countWebGPU, type WebGPUCounters } from './backend/webgpu-device.ts';
export { Tensor, tensor, zeros, ones, full, arange, scalar, zerosLike, onesLike, isTensor } from './tensor/tensor.ts';
export { RevgradError, ShapeError, ArgumentError, BackendError, AutodiffError, DataError, InternalError, TraceError } from './tensor/errors.ts';
export {
  neg,
  abs,
  exp,
  log,
  sqrt,
  rsqrt,
  tanh,
  erf,
  relu,
  sign,
  sin,
  cos,
  square,
  add,
  sub,
  mul,
  div,
  pow,
  maximum,
  minimum,
  greater,
  greaterEqual,
  less,
  lessEqual,
  equal,
  notEqual,
  where,
  sum,
  max,
  mean,
  cumsum,
  argmax,
  argmin,
  sumTo,
  reshape,
  permute,
  transpose,
  expandDims,
  squeeze,
  broadcastTo,
  slice,
  embed,
  pad,
  concat,
  stack,
  split,
  chunk,
  take,
  scatterAdd,
  type TensorLike,
} from './tensor/ops.ts';
export { matmul, type MatmulOptions } from './tensor/matmul.ts';
export { conv, maxPool3d, avgPool3d, type ConvOptions } from './tensor/conv.ts';
export { depthwiseConv3d } from './tensor/depthwise.ts';
export { softmax, logSoftmax, layerNorm, gelu, sigmoid, softplus, logSumExp, min, clip, oneHot } from './tensor/composite.ts';
export { einsum } from './tensor/einsum.ts';
export { setFastPaths } from './tensor/exec.ts';
export { vjp, jvp, hvp, grad, valueAndGrad, customVjp, stopGradient, untraced, type Pullback, type GradsAt } from './autodiff/tape.ts';
export { flattenWithPaths, leaves, mapTree, zipTrees, unflattenLike, toNamed, fromNamed, type PyTree } from './autodiff/pytree.ts';
export { profileOps } from './tensor/exec.ts';
export { jit, type Jitted, type JitOptions, type JitStats, type Lowering, type Program, type Eqn } from './jit/index.ts';
export * as random from './random/index.ts';
export * as nn from './nn/index.ts';
export {
  reversible,
  sequence,
  stage,
  stack as reversibleStack,
  type Branch,
  type BlockOptions,
  type BlockParams,
  type BlockParamsOf,
  type AnyBlock,
  type SequenceParams,
  type SequenceOptions,
  type Layer,
  type LayerParams,
  type StackParams,
  type StackGroup,
  type ReversibleStack,
  type Pair,
  type DriftEntry,
  type Mode,
  type ReversibleBlock,
  type ReversibleSequence,
  type Stage,
  type RunStep,
} from './reversible/index.ts';
export { parseConfig, parseConfigText, formatProblems, type MViTConfig, type ConfigProblem } from './models/mvit/config.ts';
export { PRESETS, PRESET_NAMES, presetConfig } from './models/mvit/presets.ts';
export { buildModel, type MViTModel, type Params } from './models/mvit/model.ts';
export { paramsFromNamed, type WeightProblem } from './models/mvit/weights.ts';
export { decodeSafetensors, encodeSafetensors, SafetensorsError, type NamedArray, type SafetensorsFile } from './io/safetensors.ts';
export { adamw, sgd, clipGradNorm, ADAMW_DEFAULTS, SGD_DEFAULTS, type Optimizer, type OptState, type AdamWOptions, type SgdOptions, type AdamWState, type SgdState, type NoDecay } from './train/optim.ts';
export { warmupCosineSchedule, learningRate, scheduleDefaults, scheduleProblems, type Schedule, type CosineSchedule } from './train/schedule.ts';
export { crossEntropy, mseLoss, accuracy } from './train/loss.ts';
export { inProcessShards, shardRanges, type GradientFn, type StepGradients, type ShardSpec } from './train/shards.ts';
export {
  train,
  evaluate,
  type Batch,
  type BatchSource,
  type BatchStream,
  type TrainableModel,
  type TrainOptions,
  type TrainResult,
  type TrainState,
  type EvaluateOptions,
  type EvalResult,
  type HeadActivation,
  type LoopRecord,
  type TrainRecord,
  type EvalRecord,
  type DriftRecord,
  type CheckpointRecord,
  type NonFiniteRecord,
  type StopReason,
  MAX_CONSECUTIVE_SKIPS,
  nonFiniteLeaves,
} from './train/loop.ts';
export { InterruptedError, newInterruptFlag, requestInterrupt, watchInterrupts } from './tensor/interrupt.ts';
export {
  decodePyth,
  encodePyth,
  stateDictOf,
  tensorToFloat32,
  pyDict,
  PythError,
  TorchTensor,
  type PythFile,
  type PythOut,
} from './io/pyth.ts';
export { PyDict, PyTuple, PickleError } from './io/pickle.ts';
export { ZipError } from './io/zip.ts';
export { DeviceTrainer, type DeviceTrainerOptions, type StepResult } from './train/device-step.ts';
