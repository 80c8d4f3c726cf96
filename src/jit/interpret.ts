/**
 * The reference lowering: run a program's equations one by one through the primitives' eager path
 * (`evalEager`: their kernels or host loops on the current backend). It runs on every backend,
 * asynchronous ones included, and is what the laws compare the fused CPU lowering against.
 */
import { evalEager } from '../tensor/primitive.ts';
import { sameShape, type Shape } from '../tensor/shape.ts';
import { view, type Tensor } from '../tensor/tensor.ts';
import type { Program } from '../tensor/trace.ts';
import type { Executable } from './executable.ts';

const asShape = (t: Tensor, shape: Shape): Tensor => (sameShape(t.shape, shape) ? t : view(t, shape));

/** For each value, the index of the last equation reading it (-1: none; outputs are kept to the end). */
export function lastUses(program: Program): Int32Array {
  const last = new Int32Array(program.sizes.length).fill(-1);
  program.eqns.forEach((e, i) => {
    for (const id of e.inputs) last[id] = i;
  });
  for (const o of program.outputs) last[o.id] = program.eqns.length;
  return last;
}

export function lowerInterpret(program: Program): Executable {
  const last = lastUses(program);
  return {
    kind: 'interpret',
    peakBytes: null,
    run(inputs) {
      const env: (Tensor | undefined)[] = new Array(program.sizes.length);
      program.inputs.forEach((id, i) => (env[id] = inputs[i]));
      for (const c of program.consts) env[c.id] = c.tensor;
      program.eqns.forEach((e, i) => {
        const ins = e.inputs.map((id, k) => asShape(env[id]!, e.inShapes[k]));
        env[e.output] = evalEager(e.prim, ins, e.attrs, e.shape);
        // Drop what nothing reads any more, so memory is what eager mode would hold.
        for (const id of e.inputs) if (last[id] === i) env[id] = undefined;
      });
      return program.outputs.map((o) => asShape(env[o.id]!, o.shape));
    },
  };
}
