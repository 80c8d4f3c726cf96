/** revgrad: functional reverse-mode autodiff on gpu.js kernels, with reversible combinators. */
export { getBackend, setBackend, withBackend, kernelCacheStats, clearKernelCache, setKernelCacheCapacity, type BackendName } from './backend/backend.ts';
export { selectBackend, type BackendRequest, type Selection } from './backend/select.ts';
export { initWebGPU } from './backend/webgpu-node.ts';
export { measureMemory, type MemoryReport } from './backend/memory.ts';
export { webgpuCounters, counterDelta, countWebGPU, type WebGPUCounters } from './backend/webgpu-device.ts';
export { Tensor, tensor, zeros, ones, full, arange, scalar, zerosLike, onesLike, isTensor } from './tensor/tensor.ts';
export * from './tensor/errors.ts';
export * from './tensor/ops.ts';
export { matmul, type MatmulOptions } from './tensor/matmul.ts';
export { conv, maxPool3d, avgPool3d, type ConvOptions } from './tensor/conv.ts';
export { depthwiseConv3d } from './tensor/depthwise.ts';
export { softmax, logSoftmax, layerNorm, gelu, sigmoid, softplus, logSumExp, min, clip, oneHot } from './tensor/composite.ts';
export { einsum } from './tensor/einsum.ts';
export { setFastPaths } from './tensor/exec.ts';
export { vjp, jvp, hvp, grad, valueAndGrad, customVjp, stopGradient, untraced, type Pullback } from './autodiff/tape.ts';
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
  type DriftEntry,
  type Mode,
  type ReversibleBlock,
  type ReversibleSequence,
  type Stage,
} from './reversible/index.ts';
export { parseConfig, parseConfigText, formatProblems, type MViTConfig, type ConfigProblem } from './models/mvit/config.ts';
export { PRESETS, PRESET_NAMES, presetConfig } from './models/mvit/presets.ts';
export { buildModel, type MViTModel, type Params } from './models/mvit/model.ts';
export { loadWeights, saveWeights, paramsFromNamed, readNamedArrays } from './models/mvit/weights.ts';
export { readYamlConfig, readSlowFastTree, parseSlowFastYamlText, slowFastYaml, type YamlConfig, type SlowFastTree } from './models/mvit/yaml-config.ts';
export { decodeSafetensors, encodeSafetensors, readSafetensorsFile, writeSafetensorsFileAtomic } from './io/safetensors.ts';
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
} from './train/loop.ts';
export {
  decodePyth,
  encodePyth,
  readPythFile,
  writePythFileAtomic,
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
