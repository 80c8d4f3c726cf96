/**
 * revgrad/node: the Node-only helpers (files and the Moving-MNIST data set). Everything in 'revgrad'
 * itself also runs in browsers; this entry adds what needs `node:fs` or the `mnist` package.
 */
export { readSafetensorsFile, writeSafetensorsFileAtomic } from './io/safetensors-file.ts';
export { readPythFile, writePythFileAtomic } from './io/pyth-file.ts';
export { loadWeights, saveWeights, readNamedArrays } from './models/mvit/weights-file.ts';
export { readYamlConfig, readSlowFastTree, parseSlowFastYamlText, slowFastYaml, type YamlConfig, type SlowFastTree } from './models/mvit/yaml-config.ts';
export {
  saveCheckpoint,
  loadCheckpoint,
  restoreTrainState,
  restoreTree,
  readWeights,
  checkpointToFile,
  CHECKPOINT_FILE,
  CHECKPOINT_FORMAT,
  type CheckpointMeta,
  type LoadedCheckpoint,
  type Weights,
} from './train/checkpoint.ts';
export { METRICS_FILE, startMetrics, appendMetric, readMetrics } from './train/metrics-file.ts';
export { startDataParallel, type DataParallel, type DataParallelOptions, type ModelFactory } from './train/parallel.ts';
export {
  movingMnistBatches,
  makeBatch,
  makeClip,
  loadDigits,
  type KeyedBatches,
  type Split,
} from './data/moving-mnist.ts';
export { NUM_CLASSES as MOVING_MNIST_CLASSES, DIRECTIONS, DEFAULT_CLIP_SPEC, type ClipSpec } from './data/clips.ts';
