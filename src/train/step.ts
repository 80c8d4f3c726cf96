/**
 * One training step as one function: loss and gradient of the params (reversible or store backprop),
 * global-norm clipping, AdamW or SGD. With `jit` (the default) it is traced once per batch shape and
 * replayed as a fused program; the step number and the learning rate enter as scalar tensors (AdamW's
 * step-dependent factors, SGD's lr), the labels as a tensor and the key as a key, so one program serves
 * every step (SGD traces its first step apart: its momentum buffer starts differently). Eager and jitted
 * steps compute the same numbers.
 */
import { valueAndGrad } from '../autodiff/tape.ts';
import { jit, type Jitted } from '../jit/index.ts';
import type { Key } from '../random/index.ts';
import type { Mode } from '../reversible/index.ts';
import { scalar, type Tensor } from '../tensor/tensor.ts';
import { crossEntropy } from './loss.ts';
import { adamwApply, adamwScalars, clipGradNorm, sgdApply, type AdamWHyper, type AdamWScalars, type AdamWState } from './optim.ts';

export interface StepModel<P> {
  /** Raw logits [B, classes] in training mode. */
  apply(params: P, x: Tensor, key: Key, opts: { train: boolean; mode?: Mode }): Tensor;
}

/** AdamW's β1, β2, ε and weight decay; with name 'sgd', SGD with momentum, dampening, nesterov and the weight decay. */
export interface StepOptimizer extends Omit<AdamWHyper, 'lr'> {
  readonly name?: 'adamw' | 'sgd';
  readonly momentum?: number;
  readonly dampening?: number;
  readonly nesterov?: boolean;
}

export interface StepOptions {
  readonly mode: Mode;
  readonly labelSmoothing: number;
  /** Max global gradient norm; null for no clipping. */
  readonly clipNorm: number | null;
  /** The optimizer (the lr is given per step). */
  readonly optimizer: StepOptimizer;
  /** Params that get no weight decay. */
  readonly noDecay?: (name: string) => boolean;
  /** Trace once and replay (default true); false runs every op eagerly. */
  readonly jit?: boolean;
}

export interface StepResult<P> {
  readonly loss: Tensor;
  readonly logits: Tensor;
  /** The global gradient norm before clipping. */
  readonly gradNorm: Tensor;
  readonly params: P;
  /** AdamW's moments; with SGD, m holds the momentum buffer and v is passed through. */
  readonly optState: AdamWState<P>;
}

export interface TrainStep<P> {
  (params: P, optState: AdamWState<P>, x: Tensor, labels: Tensor, key: Key, lr: number): StepResult<P>;
  /** The jitted program's planned peak bytes of its last call (null when eager or not known). */
  peakBytes(): number | null;
}

type StepScalars = AdamWScalars<Tensor> | { readonly lr: Tensor };

export function makeTrainStep<P>(model: StepModel<P>, opts: StepOptions): TrainStep<P> {
  const sgd = opts.optimizer.name === 'sgd';
  const noDecay = opts.noDecay ?? (() => false);
  const body = (params: P, m: P, v: P, x: Tensor, labels: Tensor, key: Key, scalars: StepScalars, first: boolean) => {
    let logits: Tensor | null = null;
    const [loss, grads] = valueAndGrad((q: P): Tensor => {
      logits = model.apply(q, x, key, { train: true, mode: opts.mode });
      return crossEntropy(logits, labels, opts.labelSmoothing);
    })(params) as [Tensor, P];
    const clipped = clipGradNorm(grads, opts.clipNorm ?? Infinity);
    const o = opts.optimizer;
    const next =
      'lr' in scalars
        ? { ...sgdApply(params, clipped.grads, m, { momentum: o.momentum ?? 0, dampening: o.dampening ?? 0, nesterov: o.nesterov ?? false, weightDecay: o.weightDecay }, scalars.lr, first, noDecay), v }
        : adamwApply(params, clipped.grads, m, v, o, scalars, noDecay);
    const m1 = 'buf' in next ? next.buf : next.m;
    return { loss, logits: logits! as Tensor, gradNorm: clipped.norm, params: next.params, m: m1, v: next.v };
  };
  const jitted: Jitted<Parameters<typeof body>, ReturnType<typeof body>> | null = opts.jit === false ? null : jit(body);
  const run = jitted ?? body;
  const step = ((params, optState, x, labels, key, lr) => {
    const t = optState.step + 1;
    let scalars: StepScalars;
    if (sgd) {
      scalars = { lr: scalar(lr) };
    } else {
      const s = adamwScalars({ lr, ...opts.optimizer }, t);
      scalars = { stepSize: scalar(s.stepSize), bc2Sqrt: scalar(s.bc2Sqrt), decay: scalar(s.decay) };
    }
    const r = run(params, optState.m, optState.v, x, labels, key, scalars, sgd && optState.step === 0);
    return { loss: r.loss, logits: r.logits, gradNorm: r.gradNorm, params: r.params, optState: { step: t, m: r.m, v: r.v } };
  }) as TrainStep<P>;
  step.peakBytes = () => jitted?.lastPeakBytes() ?? null;
  return step;
}
