/**
 * Classification losses and metrics.
 */
import { logSoftmax } from '../tensor/composite.ts';
import { ArgumentError, ShapeError } from '../tensor/errors.ts';
import { mean, mul, neg, square, sub, sum } from '../tensor/ops.ts';
import { tensor, type Tensor } from '../tensor/tensor.ts';

function checkLabels(op: string, logits: Tensor, labels: ArrayLike<number>): [number, number] {
  if (logits.rank !== 2) throw new ShapeError(op, `logits must be [batch, classes], got [${logits.shape.join(', ')}]`);
  const [b, k] = logits.shape;
  if (labels.length !== b) throw new ShapeError(op, `${labels.length} labels for a batch of ${b}`);
  for (let i = 0; i < b; i++) {
    const y = labels[i];
    if (!Number.isInteger(y) || y < 0 || y >= k) throw new ShapeError(op, `label ${i} is ${y}, expected an integer in [0, ${k})`);
  }
  return [b, k];
}

/**
 * PyTorch's F.cross_entropy(logits, labels, label_smoothing=ε), mean over the batch:
 *   loss_i = (1 − ε)·(−log p_i[y_i]) + ε · mean_k(−log p_i[k])
 * written as −Σ_k t_ik log p_ik with the smoothed target t = (1 − ε)·onehot + ε/K.
 */
export function crossEntropy(logits: Tensor, labels: ArrayLike<number>, labelSmoothing = 0): Tensor {
  const [b, k] = checkLabels('crossEntropy', logits, labels);
  if (!(labelSmoothing >= 0 && labelSmoothing <= 1)) throw new ArgumentError('crossEntropy', `label smoothing must be in [0, 1], got ${labelSmoothing}`);
  const target = new Float32Array(b * k).fill(labelSmoothing / k);
  for (let i = 0; i < b; i++) target[i * k + labels[i]] += 1 - labelSmoothing;
  return mul(neg(sum(mul(logSoftmax(logits, -1), tensor(target, [b, k])))), 1 / b);
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
