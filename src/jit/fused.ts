/**
 * Fused elementwise groups: an expression DAG over strided/broadcast inputs, evaluated at every
 * coordinate of one shape, writing one or more outputs (each contiguous over that shape). This is the
 * description the jit hands to kernel generators (the shape agreed with the wasm kernel work in
 * /work/coord/log.md); `hostFused` is the plain TypeScript lowering of it.
 *
 * Every node's value is rounded to float32 (Math.fround) as eager mode rounds every op's output when it
 * stores it, so a fused chain gives the bits of the unfused ops.
 */
import { coalesce, type StridedRead } from '../tensor/codegen.ts';
import type { Shape } from '../tensor/shape.ts';

export type FusedRead = StridedRead;

export type FusedNode =
  | { readonly op: 'input'; readonly input: number }
  | { readonly op: 'const'; readonly value: number }
  /** A primitive's scalar expression in x0, x1, ... applied to the nodes `args` (all earlier). */
  | { readonly op: string; readonly args: readonly number[]; readonly expr: string };

export interface FusedGroup {
  readonly shape: Shape;
  /** How each input is read at a coordinate of `shape`: offset + sum(coord[d] * strides[d]). */
  readonly reads: readonly FusedRead[];
  readonly nodes: readonly FusedNode[];
  /** Node ids written out, each to its own buffer of size(shape), row-major. */
  readonly outputs: readonly number[];
}

export type FusedFn = (inputs: readonly Float32Array[], outputs: readonly Float32Array[]) => void;

type ParamFn = (ins: readonly Float32Array[], outs: readonly Float32Array[], p: readonly number[]) => void;
const cache = new Map<string, ParamFn>();

const literal = (v: number): string => `(${Object.is(v, -0) ? '-0' : String(v)})`;

/** The scalar code of the nodes, in t0, t1, ... (inputs already loaded as x0, x1, ...). */
function nodeCode(nodes: readonly FusedNode[]): string {
  return nodes
    .map((n, j) => {
      if (n.op === 'input') return `const t${j} = x${(n as { input: number }).input};\n`;
      if (n.op === 'const') return `const t${j} = ${literal(Math.fround((n as { value: number }).value))};\n`;
      const { args, expr } = n as { args: readonly number[]; expr: string };
      return `const t${j} = fr(${expr.replace(/\bx(\d+)\b/g, (_, d: string) => `t${args[Number(d)]}`)});\n`;
    })
    .join('');
}

/**
 * One generated loop per group *structure* (nodes, rank after merging contiguous dims, number of
 * reads), with sizes and strides passed at run time: V8 optimises a few shared functions, where one
 * per shape would stay in its interpreter (docs/design.md, host loops).
 */
export function hostFused(group: FusedGroup): FusedFn {
  // Outputs are contiguous over the shape: merge dims only where every read and the outputs agree.
  const contiguous = { strides: group.shape.map((_, d) => group.shape.slice(d + 1).reduce((a, b) => a * b, 1)), offset: 0 };
  const { dims, strides } = coalesce(group.shape, [...group.reads, contiguous]);
  const rank = dims.length;
  const nReads = group.reads.length;
  const structure = JSON.stringify([group.nodes, rank, nReads, group.outputs]);
  let fn = cache.get(structure);
  if (fn === undefined) {
    let s = 'const fr = Math.fround;\nlet q = 0;\n';
    for (let d = 0; d < rank; d++) s += `const D${d} = p[q++];\n`;
    for (let k = 0; k < nReads; k++) for (let d = 0; d < rank; d++) s += `const S${k}_${d} = p[q++];\n`;
    for (let k = 0; k < nReads; k++) s += `const a${k} = ins[${k}];\nconst b${k}_ = p[q++];\n`;
    group.outputs.forEach((_, o) => (s += `const o${o} = outs[${o}];\n`));
    s += 'let i = 0;\n';
    let prev = '_';
    for (let d = 0; d < rank; d++) {
      s += `for (let c${d} = 0; c${d} < D${d}; c${d}++) {\n`;
      for (let k = 0; k < nReads; k++) s += `const b${k}_${d} = b${k}${prev} + c${d} * S${k}_${d};\n`;
      prev = `_${d}`;
    }
    for (let k = 0; k < nReads; k++) s += `const x${k} = a${k}[b${k}${prev}];\n`;
    s += nodeCode(group.nodes);
    group.outputs.forEach((node, o) => (s += `o${o}[i] = t${node};\n`));
    s += 'i++;\n' + '}\n'.repeat(rank);
    fn = new Function('ins', 'outs', 'p', s) as ParamFn;
    cache.set(structure, fn);
  }
  const params = [...dims, ...strides.slice(0, nReads).flat(), ...group.reads.map((r) => r.offset)];
  const f = fn;
  return (ins, outs) => f(ins, outs, params);
}
