/** A classification head: PySlowFast's TransformerBasicHead after its dropout (the caller draws that, with `dropout`). */
import { add, div, exp, neg } from '../tensor/ops.ts';
import { softmax } from '../tensor/composite.ts';
import type { Tensor } from '../tensor/tensor.ts';
import type { TrainFlag } from './dropout.ts';
import { linear, type LinearParams } from './layers.ts';

/** The activation of an evaluation pass (a training pass returns raw logits, as PySlowFast does). */
export type HeadActivation = 'softmax' | 'sigmoid' | 'none';

export interface ClassifierHeadParams {
  readonly projection: LinearParams;
}

/** features [B, D] -> logits [B, classes] (train), or the activation of the logits (eval). */
export const classifierHead =
  (act: HeadActivation) =>
  (p: ClassifierHeadParams, x: Tensor, { train }: TrainFlag): Tensor => {
    const logits = linear(p.projection, x);
    if (train) return logits;
    switch (act) {
      case 'softmax':
        return softmax(logits, -1);
      case 'sigmoid':
        return div(1, add(exp(neg(logits)), 1));
      case 'none':
        return logits;
    }
  };
