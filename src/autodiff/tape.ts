/**
 * Reverse mode: a trace records the primitive ops whose inputs it tracks; the pullback walks the record
 * backwards, applying each primitive's VJP rule (its declaration, src/tensor/primitive.ts) and summing
 * cotangents. Traces nest (each records ops touching its own tracked tensors), so `vjp` can be used
 * inside a pullback, as reversible backprop does.
 */
import { setOpObserver, type Applied } from '../tensor/primitive.ts';
import { add, mul, reshape, sum } from '../tensor/ops.ts';
import { ArgumentError, AutodiffError, ShapeError } from '../tensor/errors.ts';
import { fmt, sameShape } from '../tensor/shape.ts';
import { ones, Tensor, view, zeros } from '../tensor/tensor.ts';
import { flattenWithPaths, leaves, mapTree, unflattenLike } from './pytree.ts';

/** What a node keeps for the backward pass, and how to map output cotangents to input cotangents. */
export interface Node {
  /** The primitive's name, or 'customVjp': named in errors about the cotangents its rule returns. */
  readonly op: string;
  readonly inputs: readonly Tensor[];
  readonly outputs: readonly Tensor[];
  /** Tensors held until the backward pass (the residuals): these are what memory accounting counts. */
  readonly saved: readonly Tensor[];
  readonly backward: (gOuts: readonly (Tensor | null)[]) => readonly (Tensor | null)[];
}

class Trace {
  readonly tracked = new Set<number>();
  readonly nodes: Node[] = [];
  /** > 0 while a custom op differentiated at this level (or an enclosing one) runs its forward: see customVjp. */
  paused = 0;
  tracks(inputs: readonly Tensor[]): boolean {
    return inputs.some((t) => this.tracked.has(t.id));
  }
  push(node: Node): void {
    this.nodes.push(node);
    for (const o of node.outputs) this.tracked.add(o.id);
  }
}

const traces: Trace[] = [];
let paused = 0;

/** The tape node of an applied primitive: it keeps what the primitive's declaration says to save. */
function primitiveNode<A>({ prim, inputs, output, attrs }: Applied<A>, needs: readonly boolean[]): Node {
  const savedInputs = prim.save === 'inputs' || prim.save === 'both' ? inputs : [];
  const y = prim.save === 'output' || prim.save === 'both' ? output : undefined;
  const shapes = inputs.map((t) => t.shape);
  return {
    op: prim.name,
    inputs,
    outputs: [output],
    saved: y === undefined ? savedInputs : [...savedInputs, y],
    backward: ([g]) => (g === null ? inputs.map(() => null) : prim.vjp(g, { x: savedInputs, y, shapes, attrs, needs })),
  };
}

setOpObserver((op) => {
  if (paused > 0 || traces.length === 0) return;
  for (const trace of traces) {
    if (trace.paused > 0 || !trace.tracks(op.inputs)) continue;
    // Which inputs need a cotangent at all (e.g. not the data a network is applied to).
    trace.push(primitiveNode(op, op.inputs.map((t) => trace.tracked.has(t.id))));
  }
});

/** Whether an autodiff trace is open and recording (a jitted function called now runs eagerly, so the tape sees its ops). */
export const recording = (): boolean => paused === 0 && traces.some((t) => t.paused === 0);

/** Run `fn` with recording off: nothing inside it is differentiated by the enclosing traces. */
export function untraced<A>(fn: () => A): A {
  paused++;
  try {
    return fn();
  } finally {
    paused--;
  }
}

/** The same values, cut off from differentiation. */
export function stopGradient<T>(tree: T): T {
  return unflattenLike(tree, leaves(tree).map((t) => view(t, t.shape)));
}

function accumulate(grads: Map<number, Tensor>, t: Tensor, g: Tensor, from: string): void {
  if (!sameShape(g.shape, t.shape)) {
    throw new ShapeError('vjp', `the rule of '${from}' gave a cotangent of shape ${fmt(g.shape)} for an input of shape ${fmt(t.shape)}`);
  }
  const prev = grads.get(t.id);
  grads.set(t.id, prev === undefined ? g : add(prev, g));
}

function backprop(trace: Trace, seeds: ReadonlyMap<number, Tensor>): Map<number, Tensor> {
  const grads = new Map(seeds);
  for (let i = trace.nodes.length - 1; i >= 0; i--) {
    const node = trace.nodes[i];
    const gOuts = node.outputs.map((o) => grads.get(o.id) ?? null);
    if (gOuts.every((g) => g === null)) continue;
    const gIns = node.backward(gOuts);
    node.inputs.forEach((t, k) => {
      const g = gIns[k];
      if (g !== null && trace.tracked.has(t.id)) accumulate(grads, t, g, node.op);
    });
    // Cotangents of this node's outputs are not needed any more: they are fresh tensors, so every node
    // still to be walked (applied earlier) neither reads nor makes them, and the trace's inputs, the only
    // entries read at the end, exist before the trace opens (an output that is also a primal is an input).
    for (const o of node.outputs) grads.delete(o.id);
  }
  return grads;
}

/** A pullback also reports the bytes its residuals hold (unique buffers, primals excluded). */
export interface Pullback<P, O> {
  (cotangent?: O): P;
  readonly residualBytes: number;
}

/**
 * Evaluate `f` at `primals` and return its output and the pullback, which maps an output cotangent
 * (a tree like the output; omitted for a scalar output means 1) to cotangents of every primal
 * (trees like the primals; zeros where the output does not depend on them).
 */
export function vjp<P extends unknown[], O>(f: (...primals: P) => O, ...primals: P): [O, Pullback<P, O>] {
  const trace = new Trace();
  const primalLeaves = primals.map((p) => leaves(p));
  // Each primal leaf gets its own identity, so a tensor passed twice gets two cotangents. The identity
  // is a recorded reshape: an enclosing trace that tracks the primal then sees this vjp's forward and
  // pullback as functions of it, which is what makes grad of grad correct.
  const inputs = primalLeaves.map((ls) => ls.map((t) => reshape(t, [...t.shape])));
  for (const ls of inputs) for (const t of ls) trace.tracked.add(t.id);
  const traced = primals.map((p, i) => unflattenLike(p, inputs[i])) as P;
  traces.push(trace);
  let out: O;
  try {
    out = f(...traced);
  } finally {
    traces.splice(traces.indexOf(trace), 1);
  }
  const outLeaves = leaves(out);
  const primalBuffers = new Set(inputs.flat().map((t) => t.storage.id));
  const residualBytes = residualBytesOf(trace.nodes, primalBuffers);
  const pullback = ((cotangent?: O) => {
    let cts: Tensor[];
    if (cotangent === undefined) {
      if (outLeaves.length !== 1 || outLeaves[0].size !== 1) {
        throw new ArgumentError('vjp', `a cotangent is required for a non-scalar output (output leaves: ${outLeaves.map((t) => fmt(t.shape)).join(', ')})`);
      }
      cts = [ones(outLeaves[0].shape)];
    } else {
      cts = leaves(cotangent);
      if (cts.length !== outLeaves.length) throw new ArgumentError('vjp', `cotangent has ${cts.length} tensors, the output has ${outLeaves.length}`);
    }
    const seeds = new Map<number, Tensor>();
    outLeaves.forEach((o, i) => {
      if (!sameShape(cts[i].shape, o.shape)) {
        throw new ShapeError('vjp', `cotangent ${i} has shape ${fmt(cts[i].shape)}, the output has ${fmt(o.shape)}`);
      }
      const prev = seeds.get(o.id);
      seeds.set(o.id, prev === undefined ? cts[i] : add(prev, cts[i]));
    });
    const grads = backprop(trace, seeds);
    return primals.map((p, i) =>
      unflattenLike(p, inputs[i].map((t) => grads.get(t.id) ?? zeros(t.shape))),
    ) as P;
  }) as Pullback<P, O>;
  Object.defineProperty(pullback, 'residualBytes', { value: residualBytes });
  return [out, pullback];
}

function residualBytesOf(nodes: readonly Node[], exclude: ReadonlySet<number>): number {
  const seen = new Set<number>();
  let bytes = 0;
  for (const n of nodes) {
    for (const t of n.saved) {
      if (seen.has(t.storage.id) || exclude.has(t.storage.id)) continue;
      seen.add(t.storage.id);
      bytes += t.storage.bytes;
    }
  }
  return bytes;
}

type Argnums = number | readonly number[];

function selectGrads(grads: unknown[], argnums: Argnums): unknown {
  return typeof argnums === 'number' ? grads[argnums] : argnums.map((i) => grads[i]);
}

function scalarOutput(op: string, out: unknown): Tensor {
  if (!(out instanceof Tensor) || out.size !== 1) {
    throw new ArgumentError(op, `the function must return a scalar tensor, got ${out instanceof Tensor ? `shape ${fmt(out.shape)}` : typeof out}`);
  }
  return out;
}

/**
 * The gradients `grad(f, argnums)` returns: for one argument index, a tree like that argument (as JAX's
 * grad returns a pytree like its input: tensor leaves replaced by their gradients, other leaves kept);
 * for a list of indices, a tuple of such trees.
 */
export type GradsAt<A extends readonly unknown[], N extends number | readonly number[]> = N extends number
  ? A[N]
  : { -readonly [K in keyof N]: A[N[K] & keyof A] };

/** `valueAndGrad(f, argnums)(...args)` = [f(...args), gradient w.r.t. the args at `argnums` (default 0)]. */
export function valueAndGrad<A extends unknown[] = [Tensor]>(f: (...args: A) => Tensor): (...args: A) => [Tensor, A[0]];
export function valueAndGrad<A extends unknown[] = [Tensor], const N extends number | readonly number[] = 0>(f: (...args: A) => Tensor, argnums: N): (...args: A) => [Tensor, GradsAt<A, N>];
export function valueAndGrad<A extends unknown[]>(f: (...args: A) => Tensor, argnums: Argnums = 0): (...args: A) => [Tensor, unknown] {
  return (...args: A): [Tensor, unknown] => {
    const [out, pullback] = vjp(f, ...args);
    scalarOutput('valueAndGrad', out);
    return [out, selectGrads(pullback(), argnums)];
  };
}

/** `grad(f, argnums)(...args)`: the gradient of a scalar function w.r.t. the args at `argnums` (default 0), shaped like them. */
export function grad<A extends unknown[] = [Tensor]>(f: (...args: A) => Tensor): (...args: A) => A[0];
export function grad<A extends unknown[] = [Tensor], const N extends number | readonly number[] = 0>(f: (...args: A) => Tensor, argnums: N): (...args: A) => GradsAt<A, N>;
export function grad<A extends unknown[]>(f: (...args: A) => Tensor, argnums: Argnums = 0): (...args: A) => unknown {
  const vg = valueAndGrad(f, argnums);
  return (...args: A) => vg(...args)[1];
}

/** Throws unless `tangents` is a tree of tensors shaped like `primals` (leaf for leaf). */
function checkTangents(op: string, primals: readonly unknown[], tangents: readonly unknown[]): void {
  if (!Array.isArray(primals) || !Array.isArray(tangents)) {
    throw new ArgumentError(op, `primals and tangents must be arrays (one entry per argument), got ${typeof primals} and ${typeof tangents}`);
  }
  if (primals.length !== tangents.length) throw new ArgumentError(op, `${primals.length} primals but ${tangents.length} tangents`);
  const ps = flattenWithPaths(primals);
  const ts = flattenWithPaths(tangents);
  if (ps.length !== ts.length || ps.some(([p], i) => p !== ts[i][0])) {
    throw new ArgumentError(op, `tangents must have the primals' structure: tensor leaves ${ps.map(([p]) => p).join(', ')} vs ${ts.map(([p]) => p).join(', ')}`);
  }
  ps.forEach(([path, p], i) => {
    if (!sameShape(p.shape, ts[i][1].shape)) throw new ShapeError(op, `tangent ${path} has shape ${fmt(ts[i][1].shape)}, its primal ${fmt(p.shape)}`);
  });
}

/**
 * Forward mode: `jvp(f, primals, tangents)` = [f(...primals), J t], the directional derivative of `f` at
 * `primals` along `tangents` (trees like the primals; the result is a tree like the output), as JAX's
 * jax.jvp. Computed by transposing the pullback: the pullback u -> Jᵀu is linear, so its own VJP at any
 * u maps t to J t. It costs about two reverse passes and works wherever grad of grad does.
 */
export function jvp<P extends unknown[], O>(f: (...primals: P) => O, primals: P, tangents: P): [O, O] {
  checkTangents('jvp', primals, tangents);
  const [out, pullback] = vjp(f, ...primals);
  const u = mapTree(out, (t) => zeros(t.shape));
  const [, transposed] = vjp((ct: O) => pullback(ct), u);
  return [out, transposed(tangents)[0]];
}

/**
 * Hessian-vector product of a scalar `f`: `hvp(f, primals, tangents)` = H t, a tree like the primals (the
 * JVP of grad f along t), computed as the gradient of x -> <grad f(x), t> (reverse over reverse).
 */
export function hvp<P extends unknown[]>(f: (...primals: P) => Tensor, primals: P, tangents: P): P {
  checkTangents('hvp', primals, tangents);
  const tLeaves = leaves(tangents);
  const gradDotT = (...xs: P): Tensor => {
    const [out, pullback] = vjp(f, ...xs);
    scalarOutput('hvp', out);
    const gs = leaves(pullback());
    return gs.reduce<Tensor>((acc, g, i) => add(acc, sum(mul(g, tLeaves[i]))), zeros([]));
  };
  const [, pullback] = vjp(gradDotT, ...primals);
  return pullback();
}

/**
 * A function with a hand-written VJP. `forward(...args)` returns [output, residuals]; `backward(residuals,
 * cotangent)` returns cotangents for the args (trees with the args' tensor leaves; null where an arg is
 * not differentiable; another count is an AutodiffError).
 *
 * JAX's custom_vjp semantics: the rule applies at the level that differentiates the op (the innermost
 * active trace tracking an argument), which records one node keeping only the residuals. Enclosing levels
 * (grad of grad, jvp, hvp) see `forward` as ordinary code, and the pullback's call of `backward` too, so
 * residuals stay differentiable functions of the arguments and higher derivatives are correct. With a
 * single level (plain grad) nothing inside `forward` is recorded: memory is exactly the residuals.
 */
export function customVjp<A extends unknown[], O, R>(
  forward: (...args: A) => [O, R],
  backward: (residuals: R, cotangent: O) => unknown[],
): (...args: A) => O {
  return (...args: A): O => {
    const argLeaves = args.map((a) => leaves(a));
    const inputs = argLeaves.flat();
    let level = -1;
    if (paused === 0) for (let i = traces.length - 1; i >= 0 && level < 0; i--) if (traces[i].paused === 0 && traces[i].tracks(inputs)) level = i;
    if (level < 0) return forward(...args)[0];
    // This level and those nested in it see one node; enclosing levels record forward's ops.
    const own = traces.slice(level);
    let out: O;
    let residuals: R;
    let outLeaves: Tensor[];
    for (const t of own) t.paused++;
    try {
      [out, residuals] = forward(...args);
      // Fresh identities for the outputs (an output may also be an input), recorded so that enclosing
      // levels link them to forward's ops.
      outLeaves = leaves(out).map((t) => reshape(t, [...t.shape]));
    } finally {
      for (const t of own) t.paused--;
    }
    const result = unflattenLike(out, outLeaves);
    traces[level].push({
      op: 'customVjp',
      inputs,
      outputs: outLeaves,
      saved: leaves(residuals),
      backward: (gOuts) => {
        const ct = unflattenLike(out, gOuts.map((g, i) => g ?? zeros(outLeaves[i].shape)));
        const gArgs = backward(residuals, ct);
        if (!Array.isArray(gArgs) || gArgs.length !== args.length) {
          throw new AutodiffError('customVjp', `backward must return one cotangent per argument (${args.length}), got ${Array.isArray(gArgs) ? gArgs.length : typeof gArgs}`);
        }
        return gArgs.flatMap((g, i) => {
          if (g === null || g === undefined) return argLeaves[i].map(() => null);
          const gLeaves = flattenWithPaths(g).map(([, t]) => t);
          // A tree with other leaves would hand the cotangents to the wrong inputs.
          if (gLeaves.length !== argLeaves[i].length) {
            throw new AutodiffError('customVjp', `backward's cotangent for argument ${i} has ${gLeaves.length} tensor leaves, the argument has ${argLeaves[i].length}`);
          }
          return gLeaves;
        });
      },
    });
    return result;
  };
}
