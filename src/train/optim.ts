/**
 * Optimizers as pure functions over pytrees: `update(params, grads, state, hyper)` returns the new
 * params and the new state, and never mutates anything. The state is itself a pytree of tensors
 * (plus a step counter), so checkpoints store it by name like the params.
 *
 * The arithmetic follows PyTorch's single-tensor (`foreach=False`) implementations op for op, in
 * float32, so one step gives the numbers `torch.optim.SGD` / `torch.optim.AdamW` give.
 */
import { flattenWithPaths, leaves, mapTree, unflattenLike, type PyTree } from '../autodiff/pytree.ts';
import { elementwise } from '../tensor/elementwise.ts';
import { add, div, minimum, mul, sqrt, sub, sum } from '../tensor/ops.ts';
import { scalar, zeros, zerosLike, type Tensor } from '../tensor/tensor.ts';
import { ArgumentError, ShapeError } from '../tensor/errors.ts';

/** Params whose name this returns true for get no weight decay. */
export type NoDecay = (name: string) => boolean;
const decayAll: NoDecay = () => false;

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

export interface AdamWState<P = PyTree> {
  /** Steps taken so far (PyTorch's `state['step']`). */
  readonly step: number;
  /** First moment (exp_avg), shaped like the params. */
  readonly m: P;
  /** Second moment (exp_avg_sq), shaped like the params. */
  readonly v: P;
}

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

export interface SgdState<P = PyTree> {
  readonly step: number;
  /** momentum_buffer, shaped like the params (unused before the first step). */
  readonly buf: P;
}

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
  const r = sgdApply(params, grads, state.buf, hyper, scalar(hyper.lr), state.step === 0, noDecay);
  return { params: r.params, state: { step: state.step + 1, buf: r.buf } };
}

/**
 * The tensor part of an SGD step, with the learning rate given as a tensor (one jitted program serves
 * every step) and whether this is the first step (the momentum buffer starts as d). `hyper.lr` is not read.
 */
export function sgdApply<P>(
  params: P,
  grads: P,
  buf0: P,
  hyper: Omit<SgdHyper, 'lr'>,
  lr: Tensor,
  first: boolean,
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
      buf = first ? d : add(mul(buf, momentum), dampening === 0 ? d : mul(d, 1 - dampening));
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
