/**
 * What a config will cost before anything is allocated: parameter and activation bytes estimated from
 * the geometry (plain arithmetic on sizes, so EMBED_DIM 1e9 or TRAIN_CROP_SIZE 1e5 is refused in
 * microseconds instead of ending in the kernel's OOM killer or a RangeError deep in a kernel).
 *
 * The activation model counts, per layer and clip, the tensors one block's forward and backward hold
 * (normalised input, q/k/v and their pooled forms, attention scores and probabilities, the MLP hidden
 * layer, the residual streams). In 'store' mode every layer's are alive at the peak; in 'reversible'
 * mode only the largest block's, plus the stage transitions (which store theirs) and the input.
 * Calibrated against `measureMemory` on the test and preset configs (bench/mvit-memory.ts): the measured
 * peak is 0.5-1.0x the estimate in both modes, so the estimate errs on the safe side.
 */
import { buildGeometry, type ModelGeometry } from './geometry.ts';
import { sizeOf } from '../../tensor/shape.ts';
import type { MViTConfig } from './config-types.ts';
import { paramSpecs } from './params-spec.ts';

const F32 = 4;
/**
 * The largest single tensor accepted: the webasm matmul engine works inside one 4 GiB WebAssembly memory
 * that holds both operands and the result, and typed arrays stop at 2^32 elements.
 */
export const MAX_TENSOR_BYTES = 2 ** 30;

export interface ResourceEstimate {
  readonly params: number;
  readonly paramBytes: number;
  /** Peak bytes of the activations of one step (training: forward + backward; eval: forward). */
  readonly activationBytes: number;
  /** Training: params, gradients and AdamW's two moments, plus the activations. Eval: params plus activations. */
  readonly totalBytes: number;
  /** The largest single tensor (a parameter, the input batch, or an activation). */
  readonly largestTensor: { readonly what: string; readonly bytes: number };
}

export interface EstimateOptions {
  readonly batch: number;
  /** 'train': forward + backward + optimizer state; 'eval': forward only. */
  readonly purpose: 'train' | 'eval';
  readonly mode?: 'reversible' | 'store';
}

/** Elements one block keeps per clip (see the module comment), and its largest single tensor. */
function layerElements(g: ModelGeometry, layer: ModelGeometry['layers'][number], relPos: boolean) {
  const N = layer.tokensIn;
  const Nq = layer.tokensOut;
  const Nkv = layer.kvThw[0] * layer.kvThw[1] * layer.kvThw[2] + (g.hasCls ? 1 : 0);
  const scores = layer.heads * Nq * Nkv;
  const elements =
    N * layer.dimIn + // normalised input
    3 * N * layer.dimOut + // q, k, v
    2 * (Nq + 2 * Nkv) * layer.dimOut + // pooled q, k, v and their norms
    2 * scores + // attention scores and probabilities
    (relPos ? 4 * scores : 0) + // relative-position terms added to the scores
    5 * Nq * layer.dimOut + // attention output, projection, residual, MLP norm and output
    2 * Nq * layer.mlpHidden; // MLP hidden layer before and after GELU
  const largest = Math.max(scores, Nq * layer.mlpHidden, 3 * N * layer.dimOut);
  return { elements, largest };
}

/** Estimate the memory of one training (or evaluation) step of `cfg` at `batch` clips. */
export function estimateResources(cfg: MViTConfig, opts: EstimateOptions): ResourceEstimate {
  const g = buildGeometry(cfg);
  const specs = paramSpecs(cfg);
  let params = 0;
  let largest = { what: 'a parameter', bytes: 0 };
  for (const s of specs) {
    const n = sizeOf(s.shape);
    params += n;
    if (n * F32 > largest.bytes) largest = { what: `parameter ${s.name} [${s.shape.join(', ')}]`, bytes: n * F32 };
  }
  const B = opts.batch;
  const inputElements = B * g.inputChannels * g.inputDims[0] * g.inputDims[1] * g.inputDims[2];
  if (inputElements * F32 > largest.bytes) largest = { what: `the input batch [${B}, ${g.inputChannels}, ${g.inputDims.join(', ')}]`, bytes: inputElements * F32 };
  const relPos = cfg.MVIT.REL_POS_SPATIAL || cfg.MVIT.REL_POS_TEMPORAL;
  let sum = 0;
  let max = 0;
  let transitions = 0;
  for (const layer of g.layers) {
    const { elements, largest: big } = layerElements(g, layer, relPos);
    sum += elements;
    max = Math.max(max, elements);
    if (layer.kind === 'transition') transitions += elements;
    if (B * big * F32 > largest.bytes) largest = { what: `an activation of layer ${layer.index} (${(B * big).toExponential(2)} elements)`, bytes: B * big * F32 };
  }
  const perClip =
    opts.purpose === 'eval' ? max : (opts.mode ?? 'reversible') === 'store' ? sum : max + transitions;
  const activationBytes = (B * perClip + inputElements) * F32;
  const paramBytes = params * F32;
  // Training holds params, gradients and AdamW's m and v.
  const totalBytes = (opts.purpose === 'train' ? 4 : 1) * paramBytes + activationBytes;
  return { params, paramBytes, activationBytes, totalBytes, largestTensor: largest };
}

export interface MemoryLimit {
  readonly bytes: number;
  /** Where the limit comes from, for the message ('the available memory', '--max-memory'). */
  readonly source: string;
}

/** Bytes for messages, in binary units. */
export function bytesText(n: number): string {
  if (!Number.isFinite(n)) return 'more than 2^1024 B';
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return v >= 1e4 ? `${v.toExponential(2)} ${units[u]}` : `${v.toFixed(v < 10 ? 2 : 1)} ${units[u]}`;
}

/**
 * Why `cfg` cannot run at this batch within `limit`, or null: a single tensor past MAX_TENSOR_BYTES
 * (whatever the limit), or an estimated step past the limit. The message has the estimate and the limit.
 */
export function resourceProblem(cfg: MViTConfig, opts: EstimateOptions, limit: MemoryLimit, subject: string): string | null {
  const est = estimateResources(cfg, opts);
  if (!(est.largestTensor.bytes <= MAX_TENSOR_BYTES)) {
    const atBatch = est.largestTensor.what.startsWith('parameter') ? '' : ` at batch ${opts.batch}`;
    return `${subject}: ${est.largestTensor.what} would take ${bytesText(est.largestTensor.bytes)}${atBatch}, more than the ${bytesText(MAX_TENSOR_BYTES)} one tensor may have (the webasm matmul engine keeps operands and result in one 4 GiB WebAssembly memory); use a smaller batch or config`;
  }
  if (est.totalBytes <= limit.bytes) return null;
  const what = opts.purpose === 'train' ? `one training step (${opts.mode ?? 'reversible'} mode)` : 'one evaluation batch';
  const params =
    opts.purpose === 'train'
      ? `${est.params.toLocaleString('en-US')} params: ${bytesText(est.paramBytes)} x4 for params, gradients and AdamW state`
      : `${est.params.toLocaleString('en-US')} params: ${bytesText(est.paramBytes)}`;
  return `${subject}: ${what} needs about ${bytesText(est.totalBytes)} (${params}; activations ${bytesText(est.activationBytes)} at batch ${opts.batch}), more than the limit of ${bytesText(limit.bytes)} (${limit.source}); use a smaller batch or config`;
}
