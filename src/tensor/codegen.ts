/**
 * Generated kernels. Each op shape signature gets (a) a gpu.js kernel source with its sizes inlined as
 * literals and (b) the same computation for the host fast path: a generated TypeScript loop, or on
 * webasm from ~1,000 elements the generated wasm SIMD pass of wasm-fusion.ts (`fusedHost`). All are
 * built from one description (a strided map, a reduction, an embed), so they cannot drift apart; the
 * laws check that they agree.
 */
import { mapKernel, reduceWgsl } from '../backend/wgsl-kernels.ts';
import { compileFused, exactlyRounded, wasmElementwise, type FusedFn, type FusedGroup } from '../backend/wasm-fusion.ts';
import { wasmKernelsOn } from '../backend/wasm-memory.ts';
import type { HostImpl, OpImpl } from './exec.ts';
import { sizeOf, stridesOf, type Shape } from './shape.ts';

/** How input k is read at each output coordinate: offset + sum(coord[d] * strides[d]). */
export interface StridedRead {
  readonly strides: readonly number[];
  readonly offset: number;
}

/**
 * Host loops are generated per loop *structure* (op, expression, rank, input count) with the sizes,
 * strides and offsets passed at run time, so one function serves every shape of that structure. That
 * matters for speed: a function specialised per shape runs a handful of times per training step and
 * never gets past V8's interpreter and baseline tiers; a shared one gets hot and optimised.
 */
type ParamHost = (ins: Float32Array[], out: Float32Array, p: readonly number[]) => void;
const hostCache = new Map<string, ParamHost>();

function hostFn(structure: string, build: () => string, params: readonly number[]): () => HostImpl {
  return () => {
    let fn = hostCache.get(structure);
    if (fn === undefined) {
      fn = new Function('ins', 'out', 'p', build()) as ParamHost;
      hostCache.set(structure, fn);
    }
    const f = fn;
    return (ins, out) => f(ins, out, params);
  };
}

/**
 * The generated wasm SIMD pass (wasm-fusion.ts) for a map or sum, compiled once per key: 2-5x the host
 * loops from ~1,000 elements up (a call costs ~2 us more). Exactly rounded ops below that size keep the
 * host loop; exp, log, tanh, erf and rsqrt always take the wasm pass, so eager ops and jit's fused groups
 * (which use it at every size) round them the same way.
 */
const WASM_MIN_ELEMENTS = 1024;
const fusedCache = new Map<string, FusedFn>();

function fusedHost(key: string, group: () => FusedGroup): HostImpl {
  let fn = fusedCache.get(key);
  if (fn === undefined) {
    if (fusedCache.size >= 4096) fusedCache.clear();
    fn = compileFused(group());
    fusedCache.set(key, fn);
  }
  const f = fn;
  return (ins, out) => f(ins, [out]);
}

/** Merge adjacent output dims that every input walks contiguously; drop size-1 dims. */
export function coalesce(shape: Shape, reads: readonly StridedRead[]): { dims: number[]; strides: number[][] } {
  const dims: number[] = [];
  const strides: number[][] = reads.map(() => []);
  for (let d = 0; d < shape.length; d++) {
    if (shape[d] === 1) continue;
    const last = dims.length - 1;
    const mergeable =
      last >= 0 && reads.every((r, k) => strides[k][last] === r.strides[d] * shape[d]);
    if (mergeable) {
      dims[last] *= shape[d];
      reads.forEach((r, k) => (strides[k][last] = r.strides[d]));
    } else {
      dims.push(shape[d]);
      reads.forEach((r, k) => strides[k].push(r.strides[d]));
    }
  }
  return { dims, strides };
}

const lit = (v: number): string => (Number.isInteger(v) ? String(v) : String(v));

/**
 * Kernel statements for index math on integer-valued floats (gpu.js computes it in float32).
 *
 * `splitIndex`: `name` = r mod n, then r = floor(r / n), for r >= 0. `floorDiv`: `name` = floor(x / n)
 * for an integer-valued x of either sign. On the host targets (webasm: IEEE division, cpu: float64) the
 * plain forms are exact. GPU float32 division is approximate (WGSL allows 2.5 ulp; GLSL more), so an
 * exact multiple can land just below an integer and floor or `%` go one off. The GPU form (`gpu`):
 *  1. q = floor((x + 0.5) / n): x + 0.5 is half a step from any multiple of n, and with |x| < 2^24 a
 *     division off by a few ulps moves q by at most 7/n + 1, and never so far up that q * n > x + 7;
 *  2. n >= 8: q is off by at most one; one exact remainder test each way fixes it (x - q * n is exact:
 *     all values stay below 2^24, where float32 adds and multiplies of integers are exact).
 *     n < 8: re-divide the exact remainder: q += floor((x - q * n + 0.5) / n), a quotient under 4 in
 *     magnitude whose error (~1e-6) is far inside its half-step margin (0.5 / n > 0.07).
 * test/gpu-index.test.ts checks this with a division off by 3 ulps either way, up to 2^24 - 8.
 */
export function splitIndex(r: string, name: string, n: number, gpu: boolean, updateR = true): string {
  if (!gpu) return `const ${name} = ${r} % ${n};\n` + (updateR ? `${r} = (${r} - ${name}) / ${n};\n` : '');
  return floorDiv(r, n, `${name}_q`, true) + `const ${name} = ${r} - ${name}_q * ${n};\n` + (updateR ? `${r} = ${name}_q;\n` : '');
}

export function floorDiv(x: string, n: number, name: string, gpu: boolean): string {
  if (!gpu) return `const ${name} = Math.floor(${x} / ${n});\n`;
  if (n === 1) return `const ${name} = ${x};\n`;
  const estimate = `let ${name} = Math.floor((${x} + 0.5) / ${n});\n`;
  if (n < 8) return estimate + `${name} += Math.floor((${x} - ${name} * ${n} + 0.5) / ${n});\n`;
  return estimate +
    `if (${x} - ${name} * ${n} < 0) { ${name} -= 1; }\n` +
    `if (${x} - ${name} * ${n} >= ${n}) { ${name} += 1; }\n`;
}

/**
 * out[i] = expr(x0, x1, ...), where xk = input k read at the strided position of output i.
 * `expr` is a JavaScript expression valid both in gpu.js kernels and in plain JS.
 */
export function stridedMap(name: string, outShape: Shape, reads: readonly StridedRead[], expr: string): OpImpl {
  const { dims, strides } = coalesce(outShape, reads);
  const key = `${name}|${expr}|${dims}|${strides.map((s) => s.join(','))}|${reads.map((r) => r.offset)}`;
  const args = reads.map((_, k) => `a${k}`);
  const kernelSource = (gpu: boolean): string => {
    let body = `let r = this.thread.x;\n`;
    reads.forEach((r, k) => (body += `let o${k} = ${lit(r.offset)};\n`));
    for (let d = dims.length - 1; d >= 0; d--) {
      body += splitIndex('r', `c${d}`, dims[d], gpu, d > 0);
      reads.forEach((_, k) => {
        if (strides[k][d] !== 0) body += `o${k} += c${d} * ${strides[k][d]};\n`;
      });
    }
    reads.forEach((_, k) => (body += `const x${k} = a${k}[o${k}];\n`));
    return `function (${args.join(', ')}) {\n${body}return ${expr};\n}`;
  };
  // Runtime params: dims, then each input's strides, then each input's offset.
  const rank = dims.length;
  const params = [...dims, ...strides.flat(), ...reads.map((r) => r.offset)];
  const hostSource = (): string => {
    let s = 'let q = 0;\n';
    for (let d = 0; d < rank; d++) s += `const D${d} = p[q++];\n`;
    reads.forEach((_, k) => {
      for (let d = 0; d < rank; d++) s += `const S${k}_${d} = p[q++];\n`;
    });
    reads.forEach((_, k) => (s += `const a${k} = ins[${k}];\nconst b${k}_ = p[q++];\n`));
    s += 'let i = 0;\n';
    let prev = '_';
    for (let d = 0; d < rank; d++) {
      s += `for (let c${d} = 0; c${d} < D${d}; c${d}++) {\n`;
      reads.forEach((_, k) => (s += `const b${k}_${d} = b${k}${prev} + c${d} * S${k}_${d};\n`));
      prev = `_${d}`;
    }
    reads.forEach((_, k) => (s += `const x${k} = a${k}[b${k}${prev}];\n`));
    s += `out[i++] = ${expr};\n` + '}\n'.repeat(rank);
    return s;
  };
  const loop = hostFn(`map|${expr}|${rank}|${reads.length}`, hostSource, params);
  const size = sizeOf(dims);
  const wasm = wasmElementwise(name, expr) && (size >= WASM_MIN_ELEMENTS || !exactlyRounded(name, expr));
  const group = (): FusedGroup => ({
    shape: dims,
    reads: reads.map((r, k) => ({ strides: strides[k], offset: r.offset })),
    nodes: [...reads.map((_, k) => ({ op: 'input' as const, input: k })), { op: name, args: reads.map((_, k) => k), expr }],
    outputs: [reads.length],
  });
  const host = () => (wasm && wasmKernelsOn() ? fusedHost(key, group) : loop());
  const wgsl = () => mapKernel({ name, dims, strides, offsets: reads.map((r) => r.offset), lets: [], outputs: [expr] });
  return { name, kernel: (gpu) => ({ key, source: kernelSource(gpu) }), host, fills: true, wgsl };
}

/** Contiguous read of an input whose shape equals the output's (after broadcasting rules). */
export function contiguousRead(shape: Shape): StridedRead {
  return { strides: stridesOf(shape), offset: 0 };
}

export type ReduceKind = 'sum' | 'max';

/** Reduce `inShape` over `axes` (sorted); the output is the kept dims in order. */
export function reduce(kind: ReduceKind, inShape: Shape, axes: readonly number[]): OpImpl {
  const strides = stridesOf(inShape);
  const kept = inShape.map((_, d) => d).filter((d) => !axes.includes(d) && inShape[d] !== 1);
  const red = axes.filter((d) => inShape[d] !== 1);
  const count = red.reduce((n, d) => n * inShape[d], 1);
  const key = `reduce-${kind}|${inShape}|${axes}`;
  const init = kind === 'sum' ? '0' : '-Infinity';
  const combine = kind === 'sum' ? 'acc + v' : 'Math.max(acc, v)';
  const kernelSource = (gpu: boolean): string => {
    let body = 'let r = this.thread.x;\nlet base = 0;\n';
    for (let i = kept.length - 1; i >= 0; i--) {
      const d = kept[i];
      body += splitIndex('r', `k${i}`, inShape[d], gpu) + `base += k${i} * ${strides[d]};\n`;
    }
    body += `let acc = ${init};\nfor (let j = 0; j < ${count}; j++) {\nlet q = j;\nlet off = base;\n`;
    for (let i = red.length - 1; i >= 0; i--) {
      const d = red[i];
      body += splitIndex('q', `m${i}`, inShape[d], gpu) + `off += m${i} * ${strides[d]};\n`;
    }
    body += `const v = a0[off];\nacc = ${combine};\n}\nreturn acc;\n`;
    return `function (a0) {\n${body}}`;
  };
  // Host: walk the input in memory order and accumulate into the output slot (cache friendly).
  // Runtime params: for each non-unit input dim, its size and its stride in the output (0 if reduced).
  const outStrides: number[] = new Array(inShape.length).fill(0);
  let size = 1;
  for (let i = kept.length - 1; i >= 0; i--) {
    outStrides[kept[i]] = size;
    size *= inShape[kept[i]];
  }
  const live = inShape.map((_, d) => d).filter((d) => inShape[d] !== 1);
  const params = live.flatMap((d) => [inShape[d], outStrides[d]]);
  const hostSource = (): string => {
    let src = `const a = ins[0]; const acc = new Float64Array(out.length).fill(${init}); let i = 0;\n`;
    live.forEach((_, j) => (src += `const N${j} = p[${2 * j}]; const T${j} = p[${2 * j + 1}];\n`));
    let prev = '0';
    live.forEach((_, j) => {
      src += `for (let c${j} = 0; c${j} < N${j}; c${j}++) {\nconst o${j} = ${prev} + c${j} * T${j};\n`;
      prev = `o${j}`;
    });
    src += `const v = a[i++];\n`;
    src += kind === 'sum' ? `acc[${prev}] += v;\n` : `if (v > acc[${prev}] || v !== v) acc[${prev}] = v;\n`;
    src += '}\n'.repeat(live.length) + 'out.set(acc);\n';
    return src;
  };
  const loop = hostFn(`reduce|${kind}|${live.length}`, hostSource, params);
  const total = sizeOf(inShape);
  const group = (): FusedGroup => ({ shape: inShape, reads: [{ strides, offset: 0 }], nodes: [{ op: 'input', input: 0 }], outputs: [{ node: 0, sumAxes: axes }] });
  const host = () => (kind === 'sum' && total >= WASM_MIN_ELEMENTS && wasmKernelsOn() ? fusedHost(key, group) : loop());
  const wgsl = () =>
    reduceWgsl({ kind, kept: kept.map((d) => inShape[d]), keptStrides: kept.map((d) => strides[d]), reduced: red.map((d) => inShape[d]), reducedStrides: red.map((d) => strides[d]) });
  return { name: `reduce-${kind}`, kernel: (gpu) => ({ key, source: kernelSource(gpu) }), host, fills: true, wgsl };
}
