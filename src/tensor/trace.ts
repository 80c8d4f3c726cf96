/**
 * Tracing: run a function on abstract tensors (shapes, no data) and record every applied primitive as an
 * equation of a flat program in SSA form. The program is plain data (primitive, typed attributes, input
 * value ids, output shape); lowerings (src/jit/) turn it into something that runs, so a CPU lowering and
 * a WebGPU lowering can sit side by side.
 *
 * Values are numbered; a value is a program input, a constant (a concrete tensor the function closed
 * over or created), or the output of one equation. Views (reshape) are equations like any other; a
 * lowering may alias their buffers.
 */
import { TraceError } from './errors.ts';
import { setEvaluator, type AnyPrimitive, type Evaluator, type Primitive } from './primitive.ts';
import { fmt, sizeOf, type Shape } from './shape.ts';
import { fromBuffer, type Storage, type Tensor, type TraceSlot } from './tensor.ts';

export interface Eqn {
  readonly prim: AnyPrimitive;
  readonly attrs: unknown;
  /** Value ids of the inputs, in the primitive's order. */
  readonly inputs: readonly number[];
  /** The shapes the inputs had at this use (a value may be used through unrecorded views). */
  readonly inShapes: readonly Shape[];
  readonly output: number;
  readonly shape: Shape;
}

/**
 * The attributes of `e`, typed, when it applies `prim` (undefined otherwise). Equations are only built
 * by `apply`, which pairs a primitive with its own attributes; this is where that is relied on.
 */
export function attrsIf<A>(e: Eqn, prim: Primitive<A>): A | undefined {
  return e.prim === prim ? (e.attrs as A) : undefined;
}

export interface Program {
  /** Elements of every value, by id. */
  readonly sizes: readonly number[];
  /** Input value ids in argument order. */
  readonly inputs: readonly number[];
  /** Constants: concrete tensors captured while tracing (closed-over params, scalars, seeds). */
  readonly consts: readonly { readonly id: number; readonly tensor: Tensor }[];
  readonly eqns: readonly Eqn[];
  /** Output value ids with the shapes the function returned them in. */
  readonly outputs: readonly { readonly id: number; readonly shape: Shape }[];
}

interface Slot extends TraceSlot {
  readonly owner: ProgramBuilder;
}

export class ProgramBuilder {
  private readonly sizes: number[] = [];
  private readonly inputs: number[] = [];
  private readonly consts: { id: number; tensor: Tensor }[] = [];
  private readonly constIds = new Map<Storage, number>();
  private readonly eqns: Eqn[] = [];

  private newValue(size: number): number {
    this.sizes.push(size);
    return this.sizes.length - 1;
  }

  private abstract(id: number, shape: Shape): Tensor {
    const slot: Slot = { id, owner: this };
    return fromBuffer({ slot }, shape);
  }

  /** A new program input of this shape, as the abstract tensor the traced function receives. */
  input(shape: Shape): Tensor {
    const id = this.newValue(sizeOf(shape));
    this.inputs.push(id);
    return this.abstract(id, shape);
  }

  /** The value id of `t`: its slot if it is traced here, else a constant holding it. */
  valueOf(t: Tensor): number {
    const slot = t.storage.slot as Slot | null;
    if (slot !== null) {
      if (slot.owner !== this) throw new TraceError(`a traced value of shape ${fmt(t.shape)} from another trace was used here (a tracer escaped the jitted function that made it, e.g. through a closure or a global)`);
      return slot.id;
    }
    let id = this.constIds.get(t.storage);
    if (id === undefined) {
      id = this.newValue(t.storage.bytes / 4);
      this.constIds.set(t.storage, id);
      this.consts.push({ id, tensor: t });
    }
    return id;
  }

  record(prim: AnyPrimitive, inputs: readonly Tensor[], attrs: unknown, shape: Shape): Tensor {
    const ids = inputs.map((t) => this.valueOf(t));
    const output = this.newValue(sizeOf(shape));
    this.eqns.push({ prim, attrs, inputs: ids, inShapes: inputs.map((t) => t.shape), output, shape });
    return this.abstract(output, shape);
  }

  finish(outputs: readonly Tensor[]): Program {
    return {
      sizes: this.sizes,
      inputs: this.inputs,
      consts: this.consts,
      eqns: this.eqns,
      outputs: outputs.map((t) => ({ id: this.valueOf(t), shape: t.shape })),
    };
  }
}

/** The program without the equations and constants its outputs do not depend on. */
export function prune(program: Program): Program {
  const needed = new Uint8Array(program.sizes.length);
  for (const o of program.outputs) needed[o.id] = 1;
  const kept: Eqn[] = [];
  for (let i = program.eqns.length - 1; i >= 0; i--) {
    const e = program.eqns[i];
    if (needed[e.output] === 0) continue;
    kept.push(e);
    for (const id of e.inputs) needed[id] = 1;
  }
  return { ...program, eqns: kept.reverse(), consts: program.consts.filter((c) => needed[c.id] === 1) };
}

let active: ProgramBuilder | null = null;

/** The builder recording now, if any (jit inlines a jitted function called while tracing). */
export const activeTrace = (): ProgramBuilder | null => active;

/** Run `fn` with every applied primitive recorded into `builder` instead of computed. */
export function tracing<A>(builder: ProgramBuilder, fn: () => A): A {
  const evaluate: Evaluator = (prim, inputs, attrs, shape) => builder.record(prim, inputs, attrs, shape);
  const previousBuilder = active;
  const previous = setEvaluator(evaluate);
  active = builder;
  try {
    return fn();
  } finally {
    setEvaluator(previous);
    active = previousBuilder;
  }
}

