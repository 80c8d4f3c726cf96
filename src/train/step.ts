/**
 * One training step as one function: loss and gradient of the params (reversible or store backprop),
 * global-norm clipping, the optimizer's update. With `jit` (the default) it is traced once per batch
 * shape and replayed as a fused program: the numbers that change from step to step (the optimizer's
 * `stepScalars`: learning rate, bias corrections) enter as scalar tensors, the labels as a tensor and the
 * key as a key, so one program serves every step. Eager and jitted steps compute the same numbers.
 */
import { valueAndGrad } from '../autodiff/tape.ts';
import { jit, type Jitted } from '../jit/index.ts';
import type { Key } from '../random/index.ts';
import type { Mode } from '../reversible/index.ts';
import { scalar, type Tensor } from '../tensor/tensor.ts';
import { crossEntropy } from './loss.ts';
import { clipGradNorm, type OptState, type Optimizer, type Slots } from './optim.ts';

export interface StepModel<P> {
  /** Raw outputs (logits) [B, classes] in training mode. */
  apply(params: P, x: Tensor, key: Key, opts: { readonly train: boolean; readonly mode?: Mode }): Tensor;
}

export interface StepOptions {
  /** Backward pass of reversible blocks: 'reversible' (default) or 'store'. */
  readonly mode?: Mode;
  /** Loss of the train-mode output and the [batch] labels tensor; default crossEntropy. */
  readonly loss?: (output: Tensor, labels: Tensor) => Tensor;
  /** Max global gradient norm; null or absent for no clipping. */
  readonly clipNorm?: number | null;
  /** Trace once and replay (default true); false runs every op eagerly. */
  readonly jit?: boolean;
}

export interface StepResult<P, Slot extends string> {
  readonly loss: Tensor;
  /** The train-mode output the loss was computed from. */
  readonly logits: Tensor;
  /** The global gradient norm before clipping. */
  readonly gradNorm: Tensor;
  readonly params: P;
  readonly optState: OptState<P, Slot>;
}

export interface TrainStep<P, Slot extends string> {
  (params: P, optState: OptState<P, Slot>, x: Tensor, labels: Tensor, key: Key): StepResult<P, Slot>;
  /** The jitted program's planned peak bytes of its last call (null when eager or not planned). */
  peakBytes(): number | null;
}

export function makeTrainStep<P, Slot extends string>(model: StepModel<P>, optimizer: Optimizer<Slot>, opts: StepOptions = {}): TrainStep<P, Slot> {
  const lossFn = opts.loss ?? ((out: Tensor, labels: Tensor) => crossEntropy(out, labels));
  const body = (params: P, slots: Slots<P, Slot>, x: Tensor, labels: Tensor, key: Key, scalars: Readonly<Record<string, Tensor>>) => {
    let logits: Tensor | null = null;
    const [loss, grads] = valueAndGrad((q: P): Tensor => {
      logits = model.apply(q, x, key, { train: true, mode: opts.mode ?? 'reversible' });
      return lossFn(logits, labels);
    })(params) as [Tensor, P];
    const clipped = clipGradNorm(grads, opts.clipNorm ?? Infinity);
    const next = optimizer.applyUpdate(clipped.grads, slots, params, scalars);
    return { loss, logits: logits! as Tensor, gradNorm: clipped.norm, params: next.params, slots: next.slots };
  };
  const jitted: Jitted<Parameters<typeof body>, ReturnType<typeof body>> | null = opts.jit === false ? null : jit(body);
  const run = jitted ?? body;
  const step = ((params, optState, x, labels, key) => {
    const scalars = Object.fromEntries(Object.entries(optimizer.stepScalars(optState.step)).map(([k, v]) => [k, scalar(v)]));
    const slots = Object.fromEntries(optimizer.slots.map((s) => [s, optState[s]])) as Slots<P, Slot>;
    const r = run(params, slots, x, labels, key, scalars);
    const next: OptState<P, Slot> = { ...r.slots, step: optState.step + 1 };
    return { loss: r.loss, logits: r.logits, gradNorm: r.gradNorm, params: r.params, optState: next };
  }) as TrainStep<P, Slot>;
  step.peakBytes = () => jitted?.lastPeakBytes() ?? null;
  return step;
}
