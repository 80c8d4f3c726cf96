/**
 * Optimizers as pure init/update pairs over pytrees, in the style of optax:
 *
 *     const opt = adamw({ lr: warmupCosineSchedule(...), weightDecay: 0.05 });
 *     let state = opt.init(params);
 *     ({ params, state } = opt.update(grads, state, params));
 *
 * Nothing is mutated. Unlike optax, `update` returns the new params directly instead of updates to add:
 * each tensor's step is one fused pass (the arithmetic of PyTorch's single-tensor `foreach=False`
 * implementations op for op, in float32, so a step gives the numbers `torch.optim.AdamW` / `torch.optim.SGD`
 * give). The state is a step counter and one param-shaped tree per slot (AdamW: `m`, `v`; SGD: `buf`),
 * so checkpoints store it by name like the params.
 */
import { flattenWithPaths, leaves, mapTree, unflattenLike } from '../autodiff/pytree.ts';
import { ArgumentError, ShapeError } from '../tensor/errors.ts';
import { elementwise } from '../tensor/elementwise.ts';
import { add, div, minimum, mul, sqrt, sub, sum, where } from '../tensor/ops.ts';
import { scalar, zeros, zerosLike, type Tensor } from '../tensor/tensor.ts';
import type { Schedule } from './schedule.ts';

/** Params whose name (dotted pytree path) this returns true for get no weight decay. */
export type NoDecay = (name: string) => boolean;
const decayAll: NoDecay = () => false;

/** An optimizer's state: the number of steps taken and one tree shaped like the params per slot. */
export type OptState<P, Slot extends string> = { readonly step: number } & { readonly [K in Slot]: P };

/** The param-shaped trees of an optimizer's state. */
export type Slots<P, Slot extends string> = { readonly [K in Slot]: P };

/** A pure optimizer: `init` makes the state for some params, `update` takes one step. */
export interface Optimizer<Slot extends string> {
  /** 'adamw', 'sgd': stored in checkpoints. */
  readonly name: string;
  /** The names of the param-shaped trees in the state. */
  readonly slots: readonly Slot[];
  /** The hyperparameters (the learning rate as given: a number, or 'schedule'). */
  readonly hyper: Readonly<Record<string, number | boolean | string>>;
  /** The learning rate of the update that follows `step` completed steps. */
  learningRate(step: number): number;
  init<P>(params: P): OptState<P, Slot>;
  update<P>(grads: P, state: OptState<P, Slot>, params: P): { params: P; state: OptState<P, Slot> };
  /**
   * The numbers of the update after `step` completed steps that change from step to step (learning
   * rate, bias corrections, first-step flags). A jitted training step takes them as scalar tensors, so
   * one program serves every step.
   */
  stepScalars(step: number): Readonly<Record<string, number>>;
  /** The update with those numbers given as tensors: the new params and slots (`update` is this, eagerly). */
  applyUpdate<P>(grads: P, slots: Slots<P, Slot>, params: P, scalars: Readonly<Record<string, Tensor>>): { params: P; slots: Slots<P, Slot> };
}

/** `update` from `stepScalars` and `applyUpdate`, so eager and jitted steps share one definition. */
function updateVia<Slot extends string>(opt: Pick<Optimizer<Slot>, 'slots' | 'stepScalars' | 'applyUpdate'>): Optimizer<Slot>['update'] {
  return <P>(grads: P, state: OptState<P, Slot>, params: P) => {
    const scalars = Object.fromEntries(Object.entries(opt.stepScalars(state.step)).map(([k, v]) => [k, scalar(v)]));
    const r = opt.applyUpdate(grads, state, params, scalars);
    const next: OptState<P, Slot> = { ...r.slots, step: state.step + 1 };
    return { params: r.params, state: next };
  };
}

const lrAt = (lr: number | Schedule, step: number): number => (typeof lr === 'number' ? lr : lr(step));

function checkLr(op: string, lr: number | Schedule): void {
  if (typeof lr === 'function') return;
  if (typeof lr !== 'number' || !(lr >= 0) || !Number.isFinite(lr)) throw new ArgumentError(op, `lr must be a finite number >= 0 or a schedule (step => lr), got ${String(lr)}`);
}

function checkHyper(op: string, values: Record<string, number>, ranges: Record<string, [number, number]>): void {
  for (const [name, [lo, hi]] of Object.entries(ranges)) {
    const v = values[name];
    if (typeof v !== 'number' || !(v >= lo && v <= hi)) throw new ArgumentError(op, `${name} must be a number in [${lo}, ${hi}], got ${String(v)}`);
  }
}

// ---------------------------------------------------------------------------------------------
// AdamW

export interface AdamWHyper {
  readonly lr: number;
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;
}

/** torch.optim.AdamW's defaults, except the weight decay PySlowFast uses (0.05). */
export const ADAMW_DEFAULTS: AdamWHyper = { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.05 };

/** Steps taken so far (PyTorch's `state['step']`), first moment `m` (exp_avg) and second moment `v` (exp_avg_sq). */
export type AdamWState<P> = OptState<P, 'm' | 'v'>;

export function adamwInit<P>(params: P): AdamWState<P> {
  return { step: 0, m: mapTree(params, zerosLike), v: mapTree(params, zerosLike) };
}

/** The scalars of one AdamW step that depend on the step number and the learning rate. */
export interface AdamWScalars<T = number> {
  /** lr / (1 − β1ᵗ) */
  readonly stepSize: T;
  /** √(1 − β2ᵗ) */
  readonly bc2Sqrt: T;
  /** 1 − lr·wd (decoupled decay) */
  readonly decay: T;
}

/** The step-dependent scalars of AdamW at `step` (1-based, after incrementing), as PyTorch computes them. */
export function adamwScalars(hyper: AdamWHyper, step: number): AdamWScalars {
  const { lr, beta1, beta2, weightDecay } = hyper;
  return { stepSize: lr / (1 - beta1 ** step), bc2Sqrt: Math.sqrt(1 - beta2 ** step), decay: 1 - lr * weightDecay };
}

/**
 * One AdamW step (PyTorch semantics):
 *   p ← p · (1 − lr·wd)                    (decoupled decay, skipped where noDecay(name))
 *   m ← m + (1 − β1)(g − m)                (lerp)
 *   v ← β2·v + (1 − β2)·g²
 *   p ← p − lr/(1 − β1ᵗ) · m / (√v / √(1 − β2ᵗ) + ε)
 * `hyper.lr` is the learning rate of this step (a schedule sets it).
 */
export function adamwUpdate<P>(
  params: P,
  grads: P,
  state: AdamWState<P>,
  hyper: AdamWHyper,
  noDecay: NoDecay = decayAll,
): { params: P; state: AdamWState<P> } {
  const step = state.step + 1;
  const s = adamwScalars(hyper, step);
  const r = adamwApply(params, grads, state.m, state.v, hyper, { stepSize: scalar(s.stepSize), bc2Sqrt: scalar(s.bc2Sqrt), decay: scalar(s.decay) }, noDecay);
  return { params: r.params, state: { step, m: r.m, v: r.v } };
}

/**
 * The tensor part of an AdamW step, with the step-dependent scalars given (as tensors in a jitted
 * training step, so one program serves every step; `adamwUpdate` makes them from the step number).
 * β1, β2, ε and the weight decay's on/off come from `hyper`; its lr is not read.
 */
export function adamwApply<P>(
  params: P,
  grads: P,
  m0: P,
  v0: P,
  hyper: Omit<AdamWHyper, 'lr'>,
  scalars: AdamWScalars<Tensor>,
  noDecay: NoDecay = decayAll,
): { params: P; m: P; v: P } {
  const { beta1, beta2, eps, weightDecay } = hyper;
  const ps = flattenWithPaths(params);
  const gs = aligned('adamwUpdate', 'grads', ps, grads);
  const ms = aligned('adamwUpdate', 'state.m', ps, m0);
  const vs = aligned('adamwUpdate', 'state.v', ps, v0);
  const newP: Tensor[] = [];
  const newM: Tensor[] = [];
  const newV: Tensor[] = [];
  // Three fused passes per tensor (the same arithmetic as PyTorch's single-tensor AdamW, op for op).
  const oneMinusB1 = scalar(1 - beta1);
  const b2 = scalar(beta2);
  const oneMinusB2 = scalar(1 - beta2);
  const eps_ = scalar(eps);
  const keep = scalar(1);
  ps.forEach(([name, p0], i) => {
    const g = gs[i];
    const m = elementwise('adamw-m', 'x0 + (x1 - x0) * x2', [ms[i], g, oneMinusB1]);
    const v = elementwise('adamw-v', 'x0 * x2 + x1 * x1 * x3', [vs[i], g, b2, oneMinusB2]);
    const d = weightDecay !== 0 && !noDecay(name) ? scalars.decay : keep;
    newP.push(elementwise('adamw-p', 'x0 * x3 - x4 * x1 / (Math.sqrt(x2) / x5 + x6)', [p0, m, v, d, scalars.stepSize, scalars.bc2Sqrt, eps_]));
    newM.push(m);
    newV.push(v);
  });
  return { params: unflattenLike(params, newP), m: unflattenLike(m0, newM), v: unflattenLike(v0, newV) };
}

// ---------------------------------------------------------------------------------------------
// SGD with momentum

export interface SgdHyper {
  readonly lr: number;
  readonly momentum: number;
  readonly dampening: number;
  readonly weightDecay: number;
  readonly nesterov: boolean;
}

export const SGD_DEFAULTS: SgdHyper = { lr: 0.1, momentum: 0.9, dampening: 0, weightDecay: 0, nesterov: false };

/** Steps taken so far and the momentum_buffer `buf` (unused before the first step). */
export type SgdState<P> = OptState<P, 'buf'>;

export function sgdInit<P>(params: P): SgdState<P> {
  return { step: 0, buf: mapTree(params, zerosLike) };
}

/**
 * One SGD step (torch.optim.SGD): d = g + wd·p (coupled L2 decay, skipped where noDecay(name));
 * with momentum, buf = d on the first step, else buf = μ·buf + (1 − dampening)·d; then
 * d = d + μ·buf (nesterov) or d = buf; p ← p − lr·d.
 */
export function sgdUpdate<P>(
  params: P,
  grads: P,
  state: SgdState<P>,
  hyper: SgdHyper,
  noDecay: NoDecay = decayAll,
): { params: P; state: SgdState<P> } {
  const r = sgdApply(params, grads, state.buf, hyper, scalar(hyper.lr), scalar(state.step === 0 ? 1 : 0), noDecay);
  return { params: r.params, state: { step: state.step + 1, buf: r.buf } };
}

/**
 * The tensor part of an SGD step, with the learning rate given as a tensor (one jitted program serves
 * every step) and `first` = 1 on the first step (the momentum buffer starts as d; selected, so the
 * numbers are the branch's). `hyper.lr` is not read.
 */
export function sgdApply<P>(
  params: P,
  grads: P,
  buf0: P,
  hyper: Omit<SgdHyper, 'lr'>,
  lr: Tensor,
  first: Tensor,
  noDecay: NoDecay = decayAll,
): { params: P; buf: P } {
  const { momentum, dampening, weightDecay, nesterov } = hyper;
  const ps = flattenWithPaths(params);
  const gs = aligned('sgdUpdate', 'grads', ps, grads);
  const bufs = aligned('sgdUpdate', 'state.buf', ps, buf0);
  const newP: Tensor[] = [];
  const newB: Tensor[] = [];
  ps.forEach(([name, p], i) => {
    let d = weightDecay !== 0 && !noDecay(name) ? add(gs[i], mul(p, weightDecay)) : gs[i];
    let buf = bufs[i];
    if (momentum !== 0) {
      buf = where(first, d, add(mul(buf, momentum), dampening === 0 ? d : mul(d, 1 - dampening)));
      d = nesterov ? add(d, mul(buf, momentum)) : buf;
    }
    newP.push(sub(p, mul(d, lr)));
    newB.push(buf);
  });
  return { params: unflattenLike(params, newP), buf: unflattenLike(buf0, newB) };
}

// ---------------------------------------------------------------------------------------------
// Gradient clipping

/**
 * torch.nn.utils.clip_grad_norm_(max_norm, norm_type=2): the global L2 norm of all gradients
 * (the norm of the per-tensor norms), and every gradient multiplied by
 * min(1, max_norm / (total + 1e-6)). Returns the clipped grads and the norm before clipping.
 */
export function clipGradNorm<G>(grads: G, maxNorm: number): { grads: G; norm: Tensor } {
  // All in tensor ops, as torch.nn.utils.clip_grad_norm_ does: nothing is read back to the host, so
  // it also runs on asynchronous backends (webgpu); the norm is a scalar tensor for logging.
  // torch: the norm of the per-tensor norms.
  const norms = leaves(grads).map((g) => sqrt(sum(mul(g, g))));
  const norm = sqrt(norms.reduce<Tensor>((acc, n) => add(acc, mul(n, n)), zeros([])));
  if (!Number.isFinite(maxNorm)) return { grads, norm };
  const coef = minimum(div(maxNorm, add(norm, 1e-6)), 1);
  return { grads: mapTree(grads, (g) => mul(g, coef)), norm };
}

/** The tensors of `tree` in the order of `ref`, checking that names and shapes agree. */
function aligned(op: string, what: string, ref: readonly [string, Tensor][], tree: unknown): Tensor[] {
  const flat = flattenWithPaths(tree);
  if (flat.length !== ref.length) throw new ArgumentError(op, `${what} has ${flat.length} tensors, params have ${ref.length}`);
  return flat.map(([name, t], i) => {
    const [pName, p] = ref[i];
    if (name !== pName) throw new ArgumentError(op, `${what} tensor ${i} is '${name}', the param is '${pName}'`);
    if (t.shape.length !== p.shape.length || t.shape.some((d, k) => d !== p.shape[k])) {
      throw new ShapeError(op, `${what} '${name}' has shape [${t.shape.join(', ')}], the param has [${p.shape.join(', ')}]`);
    }
    return t;
  });
}

// ---------------------------------------------------------------------------------------------
// The optimizers as init/update pairs

export interface AdamWOptions {
  /** A number or a schedule (step => lr); default 1e-3. */
  readonly lr?: number | Schedule;
  readonly beta1?: number;
  readonly beta2?: number;
  readonly eps?: number;
  /** Decoupled weight decay; default 0.05 (PySlowFast's). */
  readonly weightDecay?: number;
  /** Params (by dotted path) that get no weight decay, e.g. biases and norms (`model.noDecay`). */
  readonly noDecay?: NoDecay;
}

/** AdamW (torch.optim.AdamW semantics; defaults: torch's, with PySlowFast's weight decay 0.05). */
export function adamw(opts: AdamWOptions = {}): Optimizer<'m' | 'v'> {
  const lr = opts.lr ?? ADAMW_DEFAULTS.lr;
  checkLr('adamw', lr);
  const h = { beta1: opts.beta1 ?? ADAMW_DEFAULTS.beta1, beta2: opts.beta2 ?? ADAMW_DEFAULTS.beta2, eps: opts.eps ?? ADAMW_DEFAULTS.eps, weightDecay: opts.weightDecay ?? ADAMW_DEFAULTS.weightDecay };
  checkHyper('adamw', h, { beta1: [0, 1], beta2: [0, 1], eps: [0, Infinity], weightDecay: [0, Infinity] });
  const noDecay = opts.noDecay ?? decayAll;
  const parts: Pick<Optimizer<'m' | 'v'>, 'slots' | 'stepScalars' | 'applyUpdate'> = {
    slots: ['m', 'v'],
    stepScalars: (step) => ({ ...adamwScalars({ lr: lrAt(lr, step), ...h }, step + 1) }),
    applyUpdate: (grads, { m, v }, params, sc) => {
      const r = adamwApply(params, grads, m, v, h, { stepSize: sc.stepSize, bc2Sqrt: sc.bc2Sqrt, decay: sc.decay }, noDecay);
      return { params: r.params, slots: { m: r.m, v: r.v } };
    },
  };
  return {
    ...parts,
    name: 'adamw',
    hyper: { lr: typeof lr === 'number' ? lr : 'schedule', ...h },
    learningRate: (step) => lrAt(lr, step),
    init: adamwInit,
    update: updateVia(parts),
  };
}

export interface SgdOptions {
  /** A number or a schedule (step => lr); default 0.1. */
  readonly lr?: number | Schedule;
  /** Default 0.9 (0 turns momentum off). */
  readonly momentum?: number;
  readonly dampening?: number;
  /** Coupled L2 weight decay (added to the gradient); default 0. */
  readonly weightDecay?: number;
  readonly nesterov?: boolean;
  /** Params (by dotted path) that get no weight decay. */
  readonly noDecay?: NoDecay;
}

/** SGD with momentum (torch.optim.SGD semantics). */
export function sgd(opts: SgdOptions = {}): Optimizer<'buf'> {
  const lr = opts.lr ?? SGD_DEFAULTS.lr;
  checkLr('sgd', lr);
  const h = { momentum: opts.momentum ?? SGD_DEFAULTS.momentum, dampening: opts.dampening ?? SGD_DEFAULTS.dampening, weightDecay: opts.weightDecay ?? SGD_DEFAULTS.weightDecay };
  checkHyper('sgd', h, { momentum: [0, Infinity], dampening: [0, 1], weightDecay: [0, Infinity] });
  const nesterov = opts.nesterov ?? SGD_DEFAULTS.nesterov;
  if (nesterov && (h.momentum <= 0 || h.dampening !== 0)) throw new ArgumentError('sgd', 'Nesterov momentum requires a momentum > 0 and zero dampening (as torch.optim.SGD)');
  const noDecay = opts.noDecay ?? decayAll;
  const parts: Pick<Optimizer<'buf'>, 'slots' | 'stepScalars' | 'applyUpdate'> = {
    slots: ['buf'],
    stepScalars: (step) => ({ lr: lrAt(lr, step), first: step === 0 ? 1 : 0 }),
    applyUpdate: (grads, { buf }, params, sc) => {
      const r = sgdApply(params, grads, buf, { ...h, nesterov }, sc.lr, sc.first, noDecay);
      return { params: r.params, slots: { buf: r.buf } };
    },
  };
  return {
    ...parts,
    name: 'sgd',
    hyper: { lr: typeof lr === 'number' ? lr : 'schedule', ...h, nesterov },
    learningRate: (step) => lrAt(lr, step),
    init: sgdInit,
    update: updateVia(parts),
  };
}
