/**
 * Classification losses and metrics.
 */
import { logSoftmax } from '../tensor/composite.ts';
import { ArgumentError, ShapeError } from '../tensor/errors.ts';
import { add, equal, mean, mul, neg, reshape, square, sub, sum } from '../tensor/ops.ts';
import { arange, hostData, Tensor, tensor } from '../tensor/tensor.ts';

function checkLabels(op: string, logits: Tensor, labels: ArrayLike<number>, countOnly = false): [number, number] {
  if (logits.rank !== 2) throw new ShapeError(op, `logits must be [batch, classes], got [${logits.shape.join(', ')}]`);
  const [b, k] = logits.shape;
  if (labels.length !== b) throw new ShapeError(op, `${labels.length} labels for a batch of ${b}`);
  for (let i = 0; i < b && !countOnly; i++) {
    const y = labels[i];
    if (!Number.isInteger(y) || y < 0 || y >= k) throw new ShapeError(op, `label ${i} is ${y}, expected an integer in [0, ${k})`);
  }
  return [b, k];
}

/**
 * PyTorch's F.cross_entropy(logits, labels, label_smoothing=ε), mean over the batch:
 *   loss_i = (1 − ε)·(−log p_i[y_i]) + ε · mean_k(−log p_i[k])
 * written as −Σ_k t_ik log p_ik with the smoothed target t = (1 − ε)·onehot + ε/K. `labels` are class
 * indices, as numbers or as a [batch] tensor (what a jitted training step takes: the one-hot target is
 * then computed inside the program, not baked in).
 */
export function crossEntropy(logits: Tensor, labels: ArrayLike<number> | Tensor, labelSmoothing = 0): Tensor {
  const [b, k] = labels instanceof Tensor ? checkLabelTensor('crossEntropy', logits, labels) : checkLabels('crossEntropy', logits, labels);
  if (!(labelSmoothing >= 0 && labelSmoothing <= 1)) throw new ArgumentError('crossEntropy', `label smoothing must be in [0, 1], got ${labelSmoothing}`);
  const y = labels instanceof Tensor ? labels : tensor(Float32Array.from(labels), [b]);
  const onehot = equal(reshape(y, [b, 1]), reshape(arange(k), [1, k]));
  const target = labelSmoothing === 0 ? onehot : add(mul(onehot, 1 - labelSmoothing), labelSmoothing / k);
  return mul(neg(sum(mul(logSoftmax(logits, -1), target))), 1 / b);
}

/** A [batch] tensor of labels; its values are checked when they are on the host (not while tracing). */
function checkLabelTensor(op: string, logits: Tensor, labels: Tensor): [number, number] {
  if (labels.rank !== 1) throw new ShapeError(op, `labels must be a [batch] tensor of class indices, got shape [${labels.shape.join(', ')}]`);
  const host = hostData(labels);
  return checkLabels(op, logits, host === null ? { length: labels.size } : host.subarray(0, labels.size), host === null);
}

/** torch.nn.functional.mse_loss (mean reduction): mean((prediction − target)²); shapes must agree. */
export function mseLoss(prediction: Tensor, target: Tensor): Tensor {
  if (prediction.shape.length !== target.shape.length || prediction.shape.some((d, i) => d !== target.shape[i])) {
    throw new ShapeError('mseLoss', `prediction [${prediction.shape.join(', ')}] and target [${target.shape.join(', ')}] must have the same shape`);
  }
  return mean(square(sub(prediction, target)));
}

/** Index of the largest value in each row (the first one on ties, as torch.argmax). */
export function argmaxRows(values: Float32Array, rows: number, cols: number): Int32Array {
  const out = new Int32Array(rows);
  for (let i = 0; i < rows; i++) {
    let best = 0;
    for (let j = 1; j < cols; j++) if (values[i * cols + j] > values[i * cols + best]) best = j;
    out[i] = best;
  }
  return out;
}

/** Number of rows whose argmax is the label. */
export async function correctCount(logits: Tensor, labels: ArrayLike<number>): Promise<number> {
  const [b, k] = checkLabels('accuracy', logits, labels);
  const pred = argmaxRows(await logits.data(), b, k);
  let n = 0;
  for (let i = 0; i < b; i++) if (pred[i] === labels[i]) n++;
  return n;
}

/** Fraction of rows whose argmax is the label. */
export const accuracy = async (logits: Tensor, labels: ArrayLike<number>): Promise<number> => (await correctCount(logits, labels)) / labels.length;
