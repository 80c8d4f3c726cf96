/**
 * The op registry: every primitive is one typed declaration (name, attributes, shape rule, kernels,
 * VJP rule, what it saves). Eager execution (`apply`), the autodiff tape, jit tracing and every
 * lowering read the same declaration; nothing looks an op up by a string at run time.
 *
 * Adding a primitive: `definePrimitive<Attrs>({ ... })` next to its op function, and call
 * `apply(prim, inputs, attrs)` from the op function after validating the arguments. `vjp` is a
 * required field, so a primitive without a rule does not compile (use `noGradient` or
 * `notDifferentiable` when that is the rule).
 */
import { ArgumentError, AutodiffError } from './errors.ts';
import { execute, type OpImpl } from './exec.ts';
import type { Shape } from './shape.ts';
import { view, type Tensor } from './tensor.ts';

/** What a tape node keeps for the backward pass: the memory accounting counts exactly this. */
export type Save = 'nothing' | 'inputs' | 'output' | 'both';

export interface RuleContext<A> {
  /** The op's inputs, if the rule saves them (else empty). */
  readonly x: readonly Tensor[];
  /** The op's output, if the rule saves it. */
  readonly y: Tensor | undefined;
  readonly shapes: readonly Shape[];
  readonly attrs: A;
  /** needs[i]: whether input i needs a cotangent; expensive rules skip the others (return null). */
  readonly needs: readonly boolean[];
}

/**
 * Elementwise primitives describe themselves as a scalar expression in x0, x1, ... (JavaScript
 * arithmetic and Math.*, valid in gpu.js kernels too) over inputs broadcast to the output shape.
 * The jit fuses chains of them into single passes.
 */
export interface Elementwise<A> {
  expr(attrs: A): string;
}

export interface Primitive<A> {
  readonly name: string;
  /** The output shape (inputs and attrs are validated by the op function that calls `apply`). */
  shape(inputs: readonly Shape[], attrs: A): Shape;
  /**
   * The kernels for one shape signature: the gpu.js kernel (the reference, and the WebGL/WebGPU path)
   * and the host/wasm fast paths beside it. Absent for views (`view: true`).
   */
  impl(inputs: readonly Shape[], attrs: A, out: Shape): OpImpl;
  /** A view shares its input's buffer (reshape); it has no kernel. */
  readonly view?: boolean;
  readonly elementwise?: Elementwise<A>;
  readonly save: Save;
  /** Cotangents of the inputs from the output cotangent `g`; reads only what `save` kept. */
  vjp(g: Tensor, ctx: RuleContext<A>): readonly (Tensor | null)[];
}

/**
 * Any primitive. Records that keep a primitive beside its attributes (a program's equations) hold
 * `Primitive<unknown>` and `attrs: unknown`; they are only ever built from a matching pair.
 */
export type AnyPrimitive = Primitive<unknown>;

const REGISTRY = new Map<string, AnyPrimitive>();

/** Declare a primitive; names are unique across the library. */
export function definePrimitive<A>(decl: Primitive<A>): Primitive<A> {
  if (REGISTRY.has(decl.name)) throw new ArgumentError('definePrimitive', `a primitive named '${decl.name}' is already declared`);
  REGISTRY.set(decl.name, decl);
  return decl;
}

/** The declared primitive of that name (for programs read back from data, and for tools). */
export function primitiveByName(name: string): AnyPrimitive | undefined {
  return REGISTRY.get(name);
}

export function primitiveNames(): string[] {
  return [...REGISTRY.keys()];
}

/** The rule of ops that have no gradient (comparisons, sign, integer-valued results): null for every input. */
export const noGradient = (_g: Tensor, { shapes }: { readonly shapes: readonly Shape[] }): readonly null[] => shapes.map(() => null);

/** The rule of ops whose derivative is not implemented: raising beats silently returning zeros. */
export function notDifferentiable(what: string): () => never {
  return () => {
    throw new NotDifferentiableError(what);
  };
}

export class NotDifferentiableError extends AutodiffError {
  override name = 'NotDifferentiableError';
  constructor(what: string) {
    super('autodiff', what);
  }
}

// ---------------------------------------------------------------------------------------------
// Running a primitive, and the one hook for those who record it

/** One applied primitive: what autodiff records and what a jit trace turns into an equation. */
export interface Applied<A> {
  readonly prim: Primitive<A>;
  readonly inputs: readonly Tensor[];
  readonly output: Tensor;
  readonly attrs: A;
}

export type OpObserver = <A>(op: Applied<A>) => void;

let observer: OpObserver | null = null;

/** Autodiff installs the observer that records applied primitives on its tapes. */
export function setOpObserver(fn: OpObserver | null): void {
  observer = fn;
}

/**
 * Evaluate how an applied primitive's output comes to be: eagerly here, or (under a jit trace) as an
 * abstract value recorded in a program. The tracer installs itself through `setEvaluator`.
 */
export type Evaluator = <A>(prim: Primitive<A>, inputs: readonly Tensor[], attrs: A, shape: Shape) => Tensor;

export const evalEager: Evaluator = (prim, inputs, attrs, shape) =>
  prim.view === true ? view(inputs[0], shape) : execute(inputs, shape, prim.impl(inputs.map((t) => t.shape), attrs, shape));

let evaluator: Evaluator = evalEager;

/** Swap the evaluator (the jit tracer does, for the extent of a trace); returns the previous one. */
export function setEvaluator(fn: Evaluator): Evaluator {
  const previous = evaluator;
  evaluator = fn;
  return previous;
}

/** Apply `prim` to validated inputs and attributes, reporting the application to the observer. */
export function apply<A>(prim: Primitive<A>, inputs: readonly Tensor[], attrs: A): Tensor {
  const shape = prim.shape(inputs.map((t) => t.shape), attrs);
  const output = evaluator(prim, inputs, attrs, shape);
  if (observer !== null) observer({ prim, inputs, output, attrs });
  return output;
}
