/**
 * One training step as one function: loss and gradient of the params (reversible or store backprop),
 * global-norm clipping, AdamW. With `jit` (the default) it is traced once per batch shape and replayed
 * as a fused program; the step number and the learning rate enter as scalar tensors (AdamW's
 * step-dependent factors), the labels as a tensor and the key as a key, so one program serves every step.
 * Eager and jitted steps compute the same numbers.
 */
import { valueAndGrad } from '../autodiff/tape.ts';
import { jit, type Jitted } from '../jit/index.ts';
import type { Key } from '../random/index.ts';
import type { Mode } from '../reversible/index.ts';
import { scalar, type Tensor } from '../tensor/tensor.ts';
import { crossEntropy } from './loss.ts';
import { adamwApply, adamwScalars, clipGradNorm, type AdamWHyper, type AdamWScalars, type AdamWState } from './optim.ts';

export interface StepModel<P> {
  /** Raw logits [B, classes] in training mode. */
  apply(params: P, x: Tensor, key: Key, opts: { train: boolean; mode?: Mode }): Tensor;
  noDecay(name: string): boolean;
}

export interface StepOptions {
  readonly mode: Mode;
  readonly labelSmoothing: number;
  /** Max global gradient norm; null for no clipping. */
  readonly clipNorm: number | null;
  /** AdamW β1, β2, ε and weight decay (the lr is given per step). */
  readonly optimizer: Omit<AdamWHyper, 'lr'>;
  /** Trace once and replay (default true); false runs every op eagerly. */
  readonly jit?: boolean;
}

export interface StepResult<P> {
  readonly loss: Tensor;
  readonly logits: Tensor;
  /** The global gradient norm before clipping. */
  readonly gradNorm: Tensor;
  readonly params: P;
  readonly optState: AdamWState<P>;
}

export interface TrainStep<P> {
  (params: P, optState: AdamWState<P>, x: Tensor, labels: Tensor, key: Key, lr: number): StepResult<P>;
  /** The jitted program's planned peak bytes of its last call (null when eager or not known). */
  peakBytes(): number | null;
}

export function makeTrainStep<P>(model: StepModel<P>, opts: StepOptions): TrainStep<P> {
  const body = (params: P, m: P, v: P, x: Tensor, labels: Tensor, key: Key, scalars: AdamWScalars<Tensor>) => {
    let logits: Tensor | null = null;
    const [loss, grads] = valueAndGrad((q: P): Tensor => {
      logits = model.apply(q, x, key, { train: true, mode: opts.mode });
      return crossEntropy(logits, labels, opts.labelSmoothing);
    })(params) as [Tensor, P];
    const clipped = clipGradNorm(grads, opts.clipNorm ?? Infinity);
    const next = adamwApply(params, clipped.grads, m, v, opts.optimizer, scalars, (n) => model.noDecay(n));
    return { loss, logits: logits! as Tensor, gradNorm: clipped.norm, params: next.params, m: next.m, v: next.v };
  };
  const jitted: Jitted<Parameters<typeof body>, ReturnType<typeof body>> | null = opts.jit === false ? null : jit(body);
  const run = jitted ?? body;
  const step = ((params, optState, x, labels, key, lr) => {
    const t = optState.step + 1;
    const s = adamwScalars({ lr, ...opts.optimizer }, t);
    const r = run(params, optState.m, optState.v, x, labels, key, { stepSize: scalar(s.stepSize), bc2Sqrt: scalar(s.bc2Sqrt), decay: scalar(s.decay) });
    return { loss: r.loss, logits: r.logits, gradNorm: r.gradNorm, params: r.params, optState: { step: t, m: r.m, v: r.v } };
  }) as TrainStep<P>;
  step.peakBytes = () => jitted?.lastPeakBytes() ?? null;
  return step;
}
