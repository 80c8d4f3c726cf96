/**
 * Fused elementwise groups as one generated WebAssembly SIMD pass (a TypeScript loop where an op has
 * no wasm form or the engine has no SIMD).
 *
 * A group is an expression DAG evaluated at every coordinate of one shape (the description the jit
 * hands over, agreed in /work/coord/log.md): inputs are read through strides (broadcasting, permutes,
 * slices: codegen.ts's StridedRead), nodes are SSA in topological order, and each output is a node
 * written contiguously over the shape, or summed over some axes of it (`sumAxes`: a bias gradient or a
 * `sumTo` after a multiply becomes part of the same pass). Every node's value is a float32, as eager mode
 * stores each op's result: add, sub, mul, div, sqrt, min, max, comparisons and selects give the bits of
 * the unfused ops; exp, log, tanh and erf come from wasm-simd.ts's polynomials (within 2 ulp of the host
 * loops' Math.* results); sums accumulate in float64, as eager reductions do.
 *
 * Code is generated per structure (nodes, rank after merging contiguous dims, each read's inner-stride
 * class: contiguous v128.load, broadcast splat, or 4-lane gather; outputs), with sizes and strides
 * passed at run time, so one module serves every shape of a structure. The outermost dim is processed in
 * chunks of ~64 KiB per stream through the shared kernel memory: inputs read in the output's own layout
 * are staged chunk by chunk, other inputs (broadcast, permuted) once whole, outputs copied out per chunk
 * and float64 sums once at the end.
 */
import { ArgumentError } from '../tensor/errors.ts';
import { ModuleBuilder, type FunctionBuilder } from './wasm-builder.ts';
import { Simd, type V } from './wasm-simd.ts';
import { align64, CHUNK_FLOATS, ensureKernelBytes, kernelHeap, kernelMemory, SLACK_BYTES, wasmKernelsOn } from './wasm-memory.ts';
import { wasmFmaOn } from './wasm-gemm.ts';

/** How an input is read at a coordinate of the group's shape: offset + sum(coord[d] * strides[d]). */
export interface FusedRead {
  readonly strides: readonly number[];
  readonly offset: number;
}

export type FusedNode =
  | { readonly op: 'input'; readonly input: number }
  | { readonly op: 'const'; readonly value: number }
  /** An elementwise primitive by its registry name, on earlier nodes; `expr` is its JavaScript form in x0, x1, ... */
  | { readonly op: string; readonly args: readonly number[]; readonly expr: string };

/** A node written out: contiguous over the group's shape, or summed over `sumAxes` (contiguous over the rest). */
export type FusedOutput = number | { readonly node: number; readonly sumAxes: readonly number[] };

export interface FusedGroup {
  readonly shape: readonly number[];
  readonly reads: readonly FusedRead[];
  readonly nodes: readonly FusedNode[];
  readonly outputs: readonly FusedOutput[];
}

/** Runs a group: `inputs[k]` is read by `reads[k]`; `outputs[o]` receives output o (written in full). */
export type FusedFn = (inputs: readonly Float32Array[], outputs: readonly Float32Array[]) => void;

// ---------------------------------------------------------------------------------------------
// the ops: JavaScript form (must equal the registry's, else the group takes the host loop) and wasm form

type VecOp = (s: Simd, x: readonly V[]) => V;

const bool = (s: Simd, mask: V): V => s.and(mask, s.c(1));

export const WASM_ELEMENTWISE: Readonly<Record<string, { expr: string; emit: VecOp }>> = {
  neg: { expr: '-x0', emit: (s, [a]) => s.neg(a) },
  abs: { expr: 'Math.abs(x0)', emit: (s, [a]) => s.abs(a) },
  exp: { expr: 'Math.exp(x0)', emit: (s, [a]) => s.exp(a) },
  log: { expr: 'Math.log(x0)', emit: (s, [a]) => s.log(a) },
  sqrt: { expr: 'Math.sqrt(x0)', emit: (s, [a]) => s.sqrt(a) },
  rsqrt: { expr: '1 / Math.sqrt(x0)', emit: (s, [a]) => s.div(s.c(1), s.sqrt(a)) },
  tanh: { expr: 'Math.tanh(x0)', emit: (s, [a]) => s.tanh(a) },
  relu: { expr: '(x0 > 0 ? x0 : 0)', emit: (s, [a]) => s.and(a, s.gt(a, s.c(0))) },
  sign: { expr: '(x0 > 0 ? 1 : (x0 < 0 ? -1 : 0))', emit: (s, [a]) => s.or(bool(s, s.gt(a, s.c(0))), s.and(s.lt(a, s.c(0)), s.c(-1))) },
  add: { expr: 'x0 + x1', emit: (s, [a, b]) => s.add(a, b) },
  sub: { expr: 'x0 - x1', emit: (s, [a, b]) => s.sub(a, b) },
  mul: { expr: 'x0 * x1', emit: (s, [a, b]) => s.mul(a, b) },
  div: { expr: 'x0 / x1', emit: (s, [a, b]) => s.div(a, b) },
  maximum: { expr: 'Math.max(x0, x1)', emit: (s, [a, b]) => s.max(a, b) },
  minimum: { expr: 'Math.min(x0, x1)', emit: (s, [a, b]) => s.min(a, b) },
  greater: { expr: '(x0 > x1 ? 1 : 0)', emit: (s, [a, b]) => bool(s, s.gt(a, b)) },
  greaterEqual: { expr: '(x0 >= x1 ? 1 : 0)', emit: (s, [a, b]) => bool(s, s.ge(a, b)) },
  less: { expr: '(x0 < x1 ? 1 : 0)', emit: (s, [a, b]) => bool(s, s.lt(a, b)) },
  lessEqual: { expr: '(x0 <= x1 ? 1 : 0)', emit: (s, [a, b]) => bool(s, s.le(a, b)) },
  equal: { expr: '(x0 == x1 ? 1 : 0)', emit: (s, [a, b]) => bool(s, s.eq(a, b)) },
  notEqual: { expr: '(x0 != x1 ? 1 : 0)', emit: (s, [a, b]) => bool(s, s.ne(a, b)) },
  where: { expr: '(x0 != 0 ? x1 : x2)', emit: (s, [c, a, b]) => s.select(s.ne(c, s.c(0)), a, b) },
};

/** A node's wasm form: by name when its expression is the one we know, or the identity ('x0': copies). */
function vecOpOf(node: FusedNode): VecOp | null {
  if (node.op === 'input' || node.op === 'const') return null;
  const { expr } = node as { expr: string };
  if (expr.trim() === 'x0') return (_s, [a]) => a;
  const known = WASM_ELEMENTWISE[node.op];
  if (known !== undefined && known.expr === expr) return known.emit;
  if (node.op === 'erf' && expr.startsWith('(Math.min(Math.max(x0, -4), 4) * (')) return (s, [a]) => s.erf(a);
  return null;
}

/** Whether an elementwise op (registry name and expression) has a wasm form here. */
export function wasmElementwise(op: string, expr: string): boolean {
  return vecOpOf({ op, args: [], expr }) !== null;
}

/**
 * Whether the op is exactly rounded in float32 (wasm and the host loops give the same bits); the
 * others (exp, log, tanh, erf, rsqrt) are polynomials within a few ulps of Math.*.
 */
export function exactlyRounded(op: string, expr: string): boolean {
  return expr.trim() === 'x0' || (WASM_ELEMENTWISE[op]?.expr === expr && !['exp', 'log', 'tanh', 'rsqrt'].includes(op));
}

// ---------------------------------------------------------------------------------------------
// analysis: validation, merged dims, the structure key

interface Plan {
  /** Merged loop dims (at least one). */
  readonly dims: number[];
  /** Per read: element strides over `dims`. */
  readonly readStrides: number[][];
  /** Per output: contiguous (null) or the element strides of its float64 accumulator over `dims` (0: summed). */
  readonly sumStrides: (number[] | null)[];
  /** Elements of each output. */
  readonly outSizes: number[];
  readonly outNodes: number[];
}

const sizeOf = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);
const contiguousStrides = (shape: readonly number[]): number[] => shape.map((_, d) => sizeOf(shape.slice(d + 1)));

function validate(g: FusedGroup): void {
  const op = 'fused group';
  const rank = g.shape.length;
  if (!g.shape.every((d) => Number.isInteger(d) && d >= 0)) throw new ArgumentError(op, `bad shape [${g.shape}]`);
  g.reads.forEach((r, k) => {
    if (r.strides.length !== rank || !r.strides.every(Number.isInteger) || !Number.isInteger(r.offset)) {
      throw new ArgumentError(op, `read ${k} needs ${rank} integer strides and an integer offset, got ${JSON.stringify(r)}`);
    }
  });
  g.nodes.forEach((n, j) => {
    if (n.op === 'input') {
      const k = (n as { input: number }).input;
      if (!(k >= 0 && k < g.reads.length)) throw new ArgumentError(op, `node ${j} reads input ${k}, but there are ${g.reads.length} reads`);
    } else if (n.op !== 'const') {
      const { args } = n as { args: readonly number[] };
      if (!args.every((a) => Number.isInteger(a) && a >= 0 && a < j)) throw new ArgumentError(op, `node ${j} (${n.op}) has arguments ${JSON.stringify(args)}; each must be an earlier node`);
    }
  });
  g.outputs.forEach((o, i) => {
    const node = typeof o === 'number' ? o : o.node;
    if (!(Number.isInteger(node) && node >= 0 && node < g.nodes.length)) throw new ArgumentError(op, `output ${i} names node ${node}, but there are ${g.nodes.length} nodes`);
    if (typeof o !== 'number' && !o.sumAxes.every((a, q) => Number.isInteger(a) && a >= 0 && a < rank && (q === 0 || a > o.sumAxes[q - 1]))) {
      throw new ArgumentError(op, `output ${i}: sumAxes ${JSON.stringify(o.sumAxes)} must be increasing axes of the rank-${rank} shape`);
    }
  });
}

function plan(g: FusedGroup): Plan {
  const shape = g.shape;
  const patterns: number[][] = [...g.reads.map((r) => [...r.strides]), contiguousStrides(shape)];
  const sums: (number[] | null)[] = g.outputs.map((o) => {
    if (typeof o === 'number') return null;
    const kept = shape.map((d, a) => (o.sumAxes.includes(a) ? 1 : d));
    const cs = contiguousStrides(kept);
    return shape.map((_, a) => (o.sumAxes.includes(a) ? 0 : cs[a]));
  });
  for (const s of sums) if (s !== null) patterns.push(s);
  // Merge adjacent dims every pattern walks contiguously; drop size-1 dims.
  const dims: number[] = [];
  const merged: number[][] = patterns.map(() => []);
  for (let d = 0; d < shape.length; d++) {
    if (shape[d] === 1) continue;
    const last = dims.length - 1;
    if (last >= 0 && patterns.every((p, k) => merged[k][last] === p[d] * shape[d])) {
      dims[last] *= shape[d];
      patterns.forEach((p, k) => (merged[k][last] = p[d]));
    } else {
      dims.push(shape[d]);
      patterns.forEach((p, k) => merged[k].push(p[d]));
    }
  }
  if (dims.length === 0) {
    dims.push(1);
    merged.forEach((m) => m.push(0));
  }
  let q = g.reads.length + 1;
  return {
    dims,
    readStrides: merged.slice(0, g.reads.length),
    sumStrides: sums.map((s) => (s === null ? null : merged[q++])),
    outSizes: g.outputs.map((o) => (typeof o === 'number' ? sizeOf(shape) : sizeOf(shape.filter((_, a) => !o.sumAxes.includes(a))))),
    outNodes: g.outputs.map((o) => (typeof o === 'number' ? o : o.node)),
  };
}

// ---------------------------------------------------------------------------------------------
// wasm code generation

/** The inner (last merged) dim's access class of a read: 1 contiguous, 0 broadcast, 2 strided. */
const readClass = (stride: number): 0 | 1 | 2 => (stride === 1 ? 1 : stride === 0 ? 0 : 2);

interface Layout {
  readonly rank: number;
  readonly classes: readonly (0 | 1 | 2)[];
  /** Per sum output, which merged dims it sums over. */
  readonly summed: readonly (boolean[] | null)[];
}

/**
 * run(params): params at byte `params`, i32s: n0 (dim 0 this chunk), D1..D(r-1), per read: base, then
 * its r byte strides; per plain output: base; per sum output: base, then its r byte strides (float64).
 */
function emitRun(f: FunctionBuilder, g: FusedGroup, p: Plan, L: Layout, fma: boolean): void {
  const s = new Simd(f, fma);
  const r = L.rank;
  const P = 0;
  let at = 0;
  const param = () => {
    const l = f.local('i32');
    f.get(P).load('i32.load', 4 * at++).set(l);
    return l;
  };
  const D = Array.from({ length: r }, () => param());
  const reads = g.reads.map(() => ({ base: param(), strides: Array.from({ length: r }, () => param()) }));
  const outs = p.outNodes.map((_, o) => (p.sumStrides[o] === null ? { base: param(), strides: null } : { base: param(), strides: Array.from({ length: r }, () => param()) }));

  // Per-dim running pointers: ptr[d] = ptr[d - 1] at the loop's start, += stride each iteration.
  const readPtr = reads.map(() => Array.from({ length: r }, () => f.local('i32')));
  const sumPtr = outs.map((o) => (o.strides === null ? null : Array.from({ length: r }, () => f.local('i32'))));
  const plainPtr = outs.map((o) => (o.strides === null ? f.local('i32') : null));
  outs.forEach((o, k) => {
    if (o.strides === null) f.get(o.base).set(plainPtr[k]!);
  });
  const counters = Array.from({ length: r }, () => f.local('i32'));
  const rem = f.local('i32');
  const mask = f.local('v128');
  f.get(D[r - 1]).i32(3).op('i32.and').set(rem);
  f.v128i32(0, 1, 2, 3).get(rem).simd('i32x4.splat').simd('i32x4.lt_s').set(mask);

  const startDim = (d: number) => {
    reads.forEach((rd, k) => f.get(d === 0 ? rd.base : readPtr[k][d - 1]).set(readPtr[k][d]));
    outs.forEach((o, k) => {
      if (o.strides !== null) f.get(d === 0 ? o.base : sumPtr[k]![d - 1]).set(sumPtr[k]![d]);
    });
  };
  const stepDim = (d: number, lanes: number | null) => {
    // lanes: the inner dim advances by 4 elements per vector (null: one element).
    reads.forEach((rd, k) => {
      f.get(readPtr[k][d]).get(rd.strides[d]);
      if (lanes !== null) f.i32(lanes).op('i32.mul');
      f.op('i32.add').set(readPtr[k][d]);
    });
    outs.forEach((o, k) => {
      if (o.strides === null) return;
      f.get(sumPtr[k]![d]).get(o.strides[d]);
      if (lanes !== null) f.i32(lanes).op('i32.mul');
      f.op('i32.add').set(sumPtr[k]![d]);
    });
  };

  const inner = r - 1;
  const emitInner = () => {
    // Broadcast reads along the inner dim: one splat before the loop.
    const splats = reads.map((_, k) => (L.classes[k] === 0 ? s.let(s.splat(() => f.get(readPtr[k][inner]).load('f32.load'))) : null));
    const innerSums = outs.map((o, k) => (o.strides !== null && L.summed[k]![inner] ? [s.local(s.c(0)), s.local(s.c(0))] : null));
    const body = (partial: boolean) => {
      const loadRead = (k: number): V => {
        const ptr = readPtr[k][inner];
        if (L.classes[k] === 0) return splats[k]!;
        if (L.classes[k] === 1) return s.load(ptr);
        // Strided: gather 4 lanes; in a partial vector, lanes past the end re-read lane 0 (in bounds).
        return s.let(() => {
          f.v128f32(0);
          for (let lane = 0; lane < 4; lane++) {
            f.get(ptr);
            if (lane > 0) {
              f.get(reads[k].strides[inner]).i32(lane).op('i32.mul');
              if (partial) f.i32(0).i32(lane).get(rem).op('i32.lt_s').op('select');
              f.op('i32.add');
            }
            f.load('f32.load').replaceLane(lane);
          }
        });
      };
      const values: V[] = [];
      g.nodes.forEach((n, j) => {
        if (n.op === 'input') values.push(loadRead((n as { input: number }).input));
        else if (n.op === 'const') values.push(s.c(Math.fround((n as { value: number }).value)));
        else values.push(s.let(vecOpOf(n)!(s, (n as { args: readonly number[] }).args.map((a) => values[a]))));
      });
      p.outNodes.forEach((node, k) => {
        const o = outs[k];
        if (o.strides === null) {
          s.store(plainPtr[k]!, values[node]);
          return;
        }
        const v = s.let(partial ? s.and(values[node], s.get(mask)) : values[node]);
        const lo = () => {
          v();
          f.simd('f64x2.promote_low_f32x4');
        };
        const hi = () => {
          v();
          v();
          f.shuffle([8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7]).simd('f64x2.promote_low_f32x4');
        };
        const acc = innerSums[k];
        if (acc !== null) {
          // Summed along the inner dim: two float64x2 accumulators, folded into the output after the loop.
          f.get(acc[0]);
          lo();
          f.simd('f64x2.add').set(acc[0]);
          f.get(acc[1]);
          hi();
          f.simd('f64x2.add').set(acc[1]);
        } else {
          // Kept inner dim (contiguous float64 accumulators): read-modify-write 4 of them.
          const ptr = sumPtr[k]![inner];
          f.get(ptr).get(ptr).simdMem('v128.load', 0, 3);
          lo();
          f.simd('f64x2.add').simdMem('v128.store', 0, 3);
          f.get(ptr).get(ptr).simdMem('v128.load', 16, 3);
          hi();
          f.simd('f64x2.add').simdMem('v128.store', 16, 3);
        }
      });
    };
    const cnt = counters[inner];
    f.get(D[inner]).i32(2).op('i32.shr_u').set(cnt);
    f.block((done) => {
      f.get(cnt).op('i32.eqz').brIf(done);
      f.loop((top) => {
        body(false);
        stepDim(inner, 4);
        outs.forEach((o, k) => {
          if (o.strides === null) f.get(plainPtr[k]!).i32(16).op('i32.add').set(plainPtr[k]!);
        });
        f.get(cnt).i32(1).op('i32.sub').tee(cnt).brIf(top);
      });
    });
    f.get(rem).ifElse(() => {
      body(true);
      outs.forEach((o, k) => {
        if (o.strides === null) f.get(plainPtr[k]!).get(rem).i32(4).op('i32.mul').op('i32.add').set(plainPtr[k]!);
      });
    });
    innerSums.forEach((acc, k) => {
      if (acc === null) return;
      const ptr = sumPtr[k]![inner];
      f.get(ptr).get(ptr).load('f64.load');
      f.get(acc[0]).get(acc[1]).simd('f64x2.add').set(acc[0]);
      f.get(acc[0]).extractLaneF64(0).get(acc[0]).extractLaneF64(1).op('f64.add');
      f.op('f64.add').store('f64.store');
    });
  };

  const loopDim = (d: number) => {
    startDim(d);
    if (d === inner) {
      emitInner();
      return;
    }
    const c = counters[d];
    f.get(D[d]).set(c);
    f.block((done) => {
      f.get(c).op('i32.eqz').brIf(done);
      f.loop((top) => {
        loopDim(d + 1);
        stepDim(d, null);
        f.get(c).i32(1).op('i32.sub').tee(c).brIf(top);
      });
    });
  };
  loopDim(0);
  s.hoistConstants();
}

// ---------------------------------------------------------------------------------------------
// host loop (fallback): the same plan, float32 per node, float64 sums

const literal = (v: number): string => `(${Object.is(v, -0) ? '-0' : String(v)})`;

function hostSource(g: FusedGroup, p: Plan): string {
  const r = p.dims.length;
  let s = 'const fr = Math.fround;\nlet q = 0;\n';
  for (let d = 0; d < r; d++) s += `const D${d} = pr[q++];\n`;
  g.reads.forEach((_, k) => {
    s += `const a${k} = ins[${k}];\nconst b${k}_ = pr[q++];\n`;
    for (let d = 0; d < r; d++) s += `const S${k}_${d} = pr[q++];\n`;
  });
  p.outNodes.forEach((_, o) => {
    s += `const o${o} = outs[${o}];\n`;
    if (p.sumStrides[o] !== null) for (let d = 0; d < r; d++) s += `const T${o}_${d} = pr[q++];\n`;
  });
  s += 'let i = 0;\n';
  let prev = '_';
  for (let d = 0; d < r; d++) {
    s += `for (let c${d} = 0; c${d} < D${d}; c${d}++) {\n`;
    g.reads.forEach((_, k) => (s += `const b${k}_${d} = b${k}${prev} + c${d} * S${k}_${d};\n`));
    p.outNodes.forEach((_, o) => {
      if (p.sumStrides[o] !== null) s += `const u${o}_${d} = ${d === 0 ? '0' : `u${o}_${d - 1}`} + c${d} * T${o}_${d};\n`;
    });
    prev = `_${d}`;
  }
  g.reads.forEach((_, k) => (s += `const x${k} = a${k}[b${k}${prev}];\n`));
  g.nodes.forEach((n, j) => {
    if (n.op === 'input') s += `const t${j} = x${(n as { input: number }).input};\n`;
    else if (n.op === 'const') s += `const t${j} = ${literal(Math.fround((n as { value: number }).value))};\n`;
    else {
      const { args, expr } = n as { args: readonly number[]; expr: string };
      s += `const t${j} = fr(${expr.replace(/\bx(\d+)\b/g, (_m, k: string) => `t${args[Number(k)]}`)});\n`;
    }
  });
  p.outNodes.forEach((node, o) => {
    s += p.sumStrides[o] === null ? `o${o}[i] = t${node};\n` : `o${o}[u${o}_${r - 1}] += t${node};\n`;
  });
  s += 'i++;\n' + '}\n'.repeat(r);
  return s;
}

// ---------------------------------------------------------------------------------------------
// compile and run

type RunExport = (params: number) => void;
type HostFn = (ins: readonly Float32Array[], outs: readonly (Float32Array | Float64Array)[], pr: readonly number[]) => void;

const wasmCache = new Map<string, RunExport>();
const hostCache = new Map<string, HostFn>();

/** Compile a group: one wasm SIMD pass, or the host loop where some op has no wasm form (or wasm SIMD is off). */
export function compileFused(group: FusedGroup): FusedFn {
  validate(group);
  const p = plan(group);
  const total = sizeOf(group.shape);
  const r = p.dims.length;
  if (total === 0) return (_ins, outs) => outs.forEach((o) => o.fill(0));
  const wasmable = group.nodes.every((n) => n.op === 'input' || n.op === 'const' || vecOpOf(n) !== null);
  const layout: Layout = {
    rank: r,
    classes: p.readStrides.map((st) => readClass(st[r - 1])),
    summed: p.sumStrides.map((st) => (st === null ? null : st.map((x) => x === 0))),
  };
  const structure = JSON.stringify([group.nodes, layout, p.outNodes]);
  const host = hostFor(structure, group, p);
  return (inputs, outputs) => {
    checkBuffers(group, p, inputs, outputs);
    if (!wasmable || !wasmKernelsOn()) {
      runHost(host, group, p, inputs, outputs);
      return;
    }
    runWasm(wasmFor(structure, group, p, layout), group, p, inputs, outputs);
  };
}

function checkBuffers(g: FusedGroup, p: Plan, inputs: readonly Float32Array[], outputs: readonly Float32Array[]): void {
  if (inputs.length !== g.reads.length) throw new ArgumentError('fused group', `expected ${g.reads.length} inputs, got ${inputs.length}`);
  if (outputs.length !== p.outSizes.length) throw new ArgumentError('fused group', `expected ${p.outSizes.length} outputs, got ${outputs.length}`);
  outputs.forEach((o, k) => {
    if (o.length !== p.outSizes[k]) throw new ArgumentError('fused group', `output ${k} has ${o.length} elements, expected ${p.outSizes[k]}`);
  });
  // The furthest element each read touches must exist (the kernel does not check).
  inputs.forEach((a, k) => {
    let lo = g.reads[k].offset;
    let hi = g.reads[k].offset;
    p.readStrides[k].forEach((st, d) => {
      const span = st * (p.dims[d] - 1);
      if (span < 0) lo += span;
      else hi += span;
    });
    if (lo < 0 || hi >= a.length) throw new ArgumentError('fused group', `input ${k} (${a.length} elements) is read at elements ${lo}..${hi}`);
  });
}

function hostFor(structure: string, g: FusedGroup, p: Plan): HostFn {
  let fn = hostCache.get(structure);
  if (fn === undefined) {
    fn = new Function('ins', 'outs', 'pr', hostSource(g, p)) as HostFn;
    hostCache.set(structure, fn);
  }
  return fn;
}

function runHost(fn: HostFn, g: FusedGroup, p: Plan, inputs: readonly Float32Array[], outputs: readonly Float32Array[]): void {
  // Parameters in hostSource's order: dims; per read, its offset then strides; per sum output, its strides.
  const pr: number[] = [...p.dims];
  p.readStrides.forEach((st, k) => pr.push(g.reads[k].offset, ...st));
  p.sumStrides.forEach((st) => {
    if (st !== null) pr.push(...st);
  });
  const accs = outputs.map((o, k) => (p.sumStrides[k] === null ? o : new Float64Array(o.length)));
  fn(inputs, accs, pr);
  accs.forEach((a, k) => {
    if (a !== outputs[k]) outputs[k].set(a);
  });
}

function wasmFor(structure: string, g: FusedGroup, p: Plan, L: Layout): RunExport {
  const fma = wasmFmaOn();
  const key = `${structure}|${fma}`;
  let run = wasmCache.get(key);
  if (run === undefined) {
    const mod = new ModuleBuilder().importMemory('env', 'memory', 1);
    emitRun(mod.func('run', ['i32']), g, p, L, fma);
    const module = new WebAssembly.Module(mod.toBytes());
    run = (new WebAssembly.Instance(module, { env: { memory: kernelMemory } }).exports as { run: RunExport }).run;
    wasmCache.set(key, run);
  }
  return run;
}

function runWasm(run: RunExport, g: FusedGroup, p: Plan, inputs: readonly Float32Array[], outputs: readonly Float32Array[]): void {
  const { dims } = p;
  const r = dims.length;
  const inner = sizeOf(dims.slice(1));
  const rowsPer = Math.max(1, Math.floor(CHUNK_FLOATS / inner));
  const rows = Math.min(rowsPer, dims[0]);
  const cs = contiguousStrides(dims);
  // A read in the output's own layout is staged chunk by chunk; any other once, whole.
  const streamed = p.readStrides.map((st) => st.every((x, d) => x === cs[d]));
  const paramBytes = align64(4 * (r + g.reads.length * (r + 1) + p.outNodes.length * (r + 1)));
  let at = paramBytes;
  const region = (bytes: number) => {
    const start = at;
    at += align64(bytes + SLACK_BYTES);
    return start;
  };
  const readAt = inputs.map((a, k) => region(4 * (streamed[k] ? rows * inner : a.length)));
  const outAt = outputs.map((o, k) => region(p.sumStrides[k] === null ? 4 * rows * inner : 8 * o.length));
  let h = ensureKernelBytes(at);
  const i32 = new Int32Array(h.buffer);
  inputs.forEach((a, k) => {
    if (!streamed[k]) h.set(a, readAt[k] / 4);
  });
  const f64 = new Float64Array(h.buffer);
  outputs.forEach((o, k) => {
    if (p.sumStrides[k] !== null) f64.fill(0, outAt[k] / 8, outAt[k] / 8 + o.length);
  });
  for (let r0 = 0; r0 < dims[0]; r0 += rowsPer) {
    const n0 = Math.min(rowsPer, dims[0] - r0);
    let q = 0;
    i32[q++] = n0;
    for (let d = 1; d < r; d++) i32[q++] = dims[d];
    inputs.forEach((a, k) => {
      const st = p.readStrides[k];
      if (streamed[k]) {
        const lo = g.reads[k].offset + r0 * inner;
        h.set(a.subarray(lo, lo + n0 * inner), readAt[k] / 4);
        i32[q++] = readAt[k];
      } else {
        i32[q++] = readAt[k] + 4 * (g.reads[k].offset + r0 * st[0]);
      }
      for (let d = 0; d < r; d++) i32[q++] = 4 * st[d];
    });
    outputs.forEach((_, k) => {
      const st = p.sumStrides[k];
      if (st === null) {
        i32[q++] = outAt[k];
        return;
      }
      i32[q++] = outAt[k] + 8 * r0 * st[0];
      for (let d = 0; d < r; d++) i32[q++] = 8 * st[d];
    });
    run(0);
    h = kernelHeap();
    outputs.forEach((o, k) => {
      if (p.sumStrides[k] === null) o.set(h.subarray(outAt[k] / 4, outAt[k] / 4 + n0 * inner), r0 * inner);
    });
  }
  const acc = new Float64Array(h.buffer);
  outputs.forEach((o, k) => {
    if (p.sumStrides[k] !== null) o.set(acc.subarray(outAt[k] / 8, outAt[k] / 8 + o.length));
  });
}
