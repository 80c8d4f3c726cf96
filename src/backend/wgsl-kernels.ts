/**
 * WGSL compute kernels for the webgpu device plans (webgpu-plan.ts), generated from the same
 * descriptions the tensor layer builds its gpu.js kernels and host loops from:
 *  - `mapKernel`: a strided elementwise map (codegen.ts `stridedMap`: each input read at offset +
 *    coord·strides of the output coordinate), with `lets` statements and one or more outputs: a fused
 *    elementwise group is one such map;
 *  - `reduceKernel`: sum/max over some axes; a workgroup per output with a shared-memory tree when the
 *    reduction is long, a thread per output when it is short;
 *  - `rowKernel`: softmax, layer normalisation and their gradients over the last axis, a workgroup per
 *    row (the gpu.js kernels recompute the row statistics in every thread);
 *  - `matmulKernel`: a tiled matmul with workgroup shared memory and a register block per thread,
 *    which gpu.js kernels cannot express (they have no shared memory).
 *
 * Unlike the gpu.js kernels, whose index math runs in float32 (exact up to 2^24 elements), these use
 * u32 index math, so they address any buffer the device allows. Sizes and strides are passed in a
 * uniform block, so one pipeline serves every shape of a structure (few shader compiles).
 *
 * Binding convention (every kernel): inputs at bindings 0..I-1 (read-only storage), outputs at
 * I..I+O-1 (read-write storage), the uniform block at I+O.
 */
import type { FusedNode, FusedRead } from './wasm-fusion.ts';
import { BackendError } from '../tensor/errors.ts';
import { renameExpr, splitStatements, WGSL_HELPERS, wgslExpr, wgslLets } from './wgsl-expr.ts';

export interface WgslKernel {
  /** For errors and profiles. */
  readonly name: string;
  /** Identifies `code` (the pipeline cache key). */
  readonly key: string;
  readonly code: string;
  readonly inputs: number;
  readonly outputs: number;
  /** The uniform block's contents (u32 words; f32 values as their bits). */
  readonly params: Uint32Array;
  readonly workgroups: readonly [number, number, number];
}

/** A binding of a pass: input k of the op, scratch range j, or the op's output. */
export type PassRef = { readonly input: number } | { readonly scratch: number } | 'output';

/** An op as several dispatches, in order, through scratch ranges of its own (live at its node only), `scratch[j]` floats each. */
export interface WgslPasses {
  readonly scratch: readonly number[];
  readonly passes: readonly { readonly kernel: WgslKernel; readonly inputs: readonly PassRef[]; readonly outputs: readonly PassRef[] }[];
}

/** Builds WgslPasses, nesting an op's kernel or passes as one of its passes. */
class Passes {
  private readonly scratch: number[] = [];
  private readonly passes: { kernel: WgslKernel; inputs: PassRef[]; outputs: PassRef[] }[] = [];

  /** A new scratch range of `floats`. */
  range(floats: number): PassRef {
    return { scratch: this.scratch.push(floats) - 1 };
  }

  /** `op` (a kernel, or passes with scratch of their own) reading `inputs` and writing `output`. */
  add(op: WgslKernel | WgslPasses, inputs: readonly PassRef[], output: PassRef): this {
    if (!('passes' in op)) {
      this.passes.push({ kernel: op, inputs: [...inputs], outputs: [output] });
      return this;
    }
    const own = op.scratch.map((floats) => this.range(floats));
    const map = (r: PassRef): PassRef => (r === 'output' ? output : 'input' in r ? inputs[r.input] : own[r.scratch]);
    for (const p of op.passes) this.passes.push({ kernel: p.kernel, inputs: p.inputs.map(map), outputs: p.outputs.map(map) });
    return this;
  }

  build(): WgslPasses {
    return { scratch: this.scratch, passes: this.passes };
  }
}

/** Threads per workgroup of the 1-D kernels (within WebGPU's compatibility-mode default of 128). */
export const WG = 128;
/** The most workgroups per dispatch dimension (WebGPU's default limit). */
const MAX_GROUPS = 65535;

/** `n` workgroups as a 2-D dispatch where one dimension cannot hold them. */
export function groups1d(n: number): [number, number, number] {
  if (n <= MAX_GROUPS) return [Math.max(1, n), 1, 1];
  const y = Math.ceil(n / MAX_GROUPS);
  return [Math.ceil(n / y), y, 1];
}

/** WGSL reading word `i` of the uniform block `p` (declared as array<vec4<u32>, N>). */
const u = (i: number): string => `p.v[${i >> 2}].${'xyzw'[i & 3]}`;
const f32Bits = (v: number): number => new Uint32Array(new Float32Array([v]).buffer)[0];

function uniformBlock(words: number[]): { decl: string; params: Uint32Array } {
  const n = Math.max(1, Math.ceil(words.length / 4));
  const params = new Uint32Array(n * 4);
  params.set(words.map((w) => w >>> 0));
  return { decl: `struct P { v : array<vec4<u32>, ${n}> }\n`, params };
}

function bindings(inputs: number, outputs: number, names?: { in?: string; out?: string }): string {
  let s = '';
  // Inputs are declared read_write too (the plan binds every storage buffer writable: see webgpu-plan.ts).
  for (let k = 0; k < inputs; k++) s += `@group(0) @binding(${k}) var<storage, read_write> ${names?.in ?? 'a'}${k} : array<f32>;\n`;
  for (let k = 0; k < outputs; k++) s += `@group(0) @binding(${inputs + k}) var<storage, read_write> ${names?.out ?? 'out'}${k} : array<f32>;\n`;
  return s;
}

const uniformBinding = (at: number) => `@group(0) @binding(${at}) var<uniform> p : P;\n`;

/** The flat thread index of a 1-D kernel dispatched by groups1d (x fastest, then y). */
const FLAT_INDEX = `@builtin(global_invocation_id) gid : vec3<u32>, @builtin(num_workgroups) nwg : vec3<u32>`;
const flat = `gid.x + gid.y * nwg.x * ${WG}u`;

// ---------------------------------------------------------------------------------------------
// Strided map

export interface MapDescription {
  /** For errors and profiles. */
  readonly name: string;
  /** The output's dims (already coalesced: adjacent dims every input walks contiguously merged). */
  readonly dims: readonly number[];
  /** Per input, its stride along each of `dims` (0 where broadcast), and its start offset. */
  readonly strides: readonly (readonly number[])[];
  readonly offsets: readonly number[];
  /** Statements `name = expr` evaluated in order after the reads x0..xn (may be empty). */
  readonly lets: readonly string[];
  /** One expression per output (each a buffer of the output's size). */
  readonly outputs: readonly string[];
  /**
   * Inputs updated in place: input k -> output j means input k is output j's buffer before the
   * dispatch, read at the thread's own index (so its strides must be the output's, contiguous, offset
   * 0): it gets no binding of its own, and the thread reads it before it writes output j.
   */
  readonly inPlace?: ReadonlyMap<number, number>;
  /**
   * Inputs that are another input's buffer read at other strides (input k -> input k' < k, itself
   * bound): k gets no binding of its own. WebGPU refuses two writable bindings of the same bytes in one
   * dispatch, and every binding here is writable.
   */
  readonly shared?: ReadonlyMap<number, number>;
}

/**
 * out_j[i] = outputs[j] evaluated at output i, inputs x_k = a_k[offset_k + sum_d coord_d * stride_kd].
 * Uniform words: total, dims, then each input's strides, then the offsets.
 */
export function mapKernel(d: MapDescription): WgslKernel {
  const rank = d.dims.length;
  const nIn = d.strides.length;
  const total = d.dims.reduce((a, b) => a * b, 1);
  const words = [total, ...d.dims, ...d.strides.flatMap((s) => [...s]), ...d.offsets];
  const { decl, params } = uniformBlock(words);
  const dimAt = (dim: number) => 1 + dim;
  const strideAt = (k: number, dim: number) => 1 + rank + k * rank + dim;
  const offsetAt = (k: number) => 1 + rank + nIn * rank + k;
  // Strides that are 0 for every shape of this structure are dropped from the code (broadcasts).
  const zero = d.strides.map((s) => s.map((v) => v === 0));
  const inPlace = d.inPlace ?? new Map<number, number>();
  const shared = d.shared ?? new Map<number, number>();
  const indexed = d.strides.map((_, k) => k).filter((k) => !inPlace.has(k));
  const bound = indexed.filter((k) => !shared.has(k));
  for (const [k, b] of shared) {
    if (!(b < k && bound.includes(b))) throw new BackendError(`map kernel '${d.name}': input ${k} shares the buffer of input ${b}, which is not an earlier bound input`);
  }
  let body = `  let i = ${flat};\n  if (i >= ${u(0)}) { return; }\n  var r = i;\n`;
  for (const k of indexed) body += `  var o${k} = ${u(offsetAt(k))};\n`;
  for (let dim = rank - 1; dim >= 0; dim--) {
    if (dim > 0) body += `  let c${dim} = r % ${u(dimAt(dim))};\n  r = r / ${u(dimAt(dim))};\n`;
    else body += `  let c0 = r;\n`;
    for (const k of indexed) if (!zero[k][dim]) body += `  o${k} += c${dim} * ${u(strideAt(k, dim))};\n`;
  }
  for (let k = 0; k < nIn; k++) body += inPlace.has(k) ? `  let x${k} = out${inPlace.get(k)}[i];\n` : `  let x${k} = a${shared.get(k) ?? k}[o${k}];\n`;
  body += wgslLets(d.lets);
  d.outputs.forEach((e, j) => (body += `  out${j}[i] = ${wgslExpr(e)};\n`));
  let binds = '';
  bound.forEach((k, b) => (binds += `@group(0) @binding(${b}) var<storage, read_write> a${k} : array<f32>;\n`));
  d.outputs.forEach((_, j) => (binds += `@group(0) @binding(${bound.length + j}) var<storage, read_write> out${j} : array<f32>;\n`));
  const aliasKey = [...[...inPlace].map(([k, j]) => `${k}>${j}`), ...[...shared].map(([k, b]) => `${k}=${b}`)].join(',');
  const structure = `${d.lets.join(';')}|${d.outputs.join(';')}|${rank}|${zero.map((z) => z.map(Number).join('')).join(',')}|${aliasKey}`;
  const code = `${decl}${binds}${uniformBinding(bound.length + d.outputs.length)}${WGSL_HELPERS}` +
    `@compute @workgroup_size(${WG})\nfn main(${FLAT_INDEX}) {\n${body}}\n`;
  return { name: d.name, key: `map|${structure}`, code, inputs: bound.length, outputs: d.outputs.length, params, workgroups: groups1d(Math.ceil(total / WG)) };
}

// ---------------------------------------------------------------------------------------------
// Reduction

export interface ReduceDescription {
  readonly kind: 'sum' | 'max';
  /** Kept (output) dims, outermost first, and the input stride of each. */
  readonly kept: readonly number[];
  readonly keptStrides: readonly number[];
  /** Reduced dims, outermost first, and the input stride of each. */
  readonly reduced: readonly number[];
  readonly reducedStrides: readonly number[];
}

/** Below this many terms a thread reduces one output alone; from it on a workgroup shares the work. */
const WORKGROUP_REDUCE_FROM = 64;

/** Threads a column reduction's first pass aims for (about one per 32 KiB of a large GPU's L2 across its SMs). */
const COLUMN_REDUCE_THREADS = 262_144;
/** The fewest terms one thread of it sums. */
const COLUMN_REDUCE_MIN_CHUNK = 16;

/**
 * A reduction as plans run it. Where consecutive outputs read consecutive addresses (the innermost
 * kept stride is 1: bias and norm-weight gradients, sums over rows) and the reductions are long, a
 * workgroup per output would read one column with all its threads (uncoalesced, and few workgroups);
 * instead thread (part, o) sums part `part` of output o's terms (coalesced across o, enough threads to
 * fill the GPU), and a second pass sums the parts.
 */
export function reduceWgsl(d: ReduceDescription): WgslKernel | WgslPasses {
  const outCount = d.kept.reduce((a, b) => a * b, 1);
  const count = d.reduced.reduce((a, b) => a * b, 1);
  const columns = d.kept.length > 0 && d.keptStrides[d.kept.length - 1] === 1 && d.kept[d.kept.length - 1] > 1;
  if (!columns || count < WORKGROUP_REDUCE_FROM) return reduceKernel(d);
  const chunk = Math.max(COLUMN_REDUCE_MIN_CHUNK, Math.ceil(count / Math.ceil(COLUMN_REDUCE_THREADS / outCount)));
  const parts = Math.ceil(count / chunk);
  if (parts === 1) return reduceKernel(d, { parts, chunk });
  const q = new Passes();
  const partial = q.range(parts * outCount);
  q.add(reduceKernel(d, { parts, chunk }), [{ input: 0 }], partial);
  return q.add(reduceKernel({ kind: d.kind, kept: [outCount], keptStrides: [1], reduced: [parts], reducedStrides: [outCount] }), [partial], 'output').build();
}

/**
 * out[o] = sum/max over the reduced coordinates of a0[base(o) + offset(j)]. With `split`, thread t =
 * part·outCount + o reduces terms j in [part·chunk, (part + 1)·chunk) of output o into out[t] (four
 * loads in flight per thread), for reduceWgsl's first pass.
 */
export function reduceKernel(d: ReduceDescription, split?: { readonly parts: number; readonly chunk: number }): WgslKernel {
  const outCount = d.kept.reduce((a, b) => a * b, 1);
  const count = d.reduced.reduce((a, b) => a * b, 1);
  const nk = d.kept.length;
  const nr = d.reduced.length;
  const words = [outCount, count, ...d.kept, ...d.keptStrides, ...d.reduced, ...d.reducedStrides, split?.parts ?? 1, split?.chunk ?? count];
  const { decl, params } = uniformBlock(words);
  const keptAt = (i: number) => 2 + i;
  const keptStrideAt = (i: number) => 2 + nk + i;
  const redAt = (i: number) => 2 + 2 * nk + i;
  const redStrideAt = (i: number) => 2 + 2 * nk + nr + i;
  // max starts from the first term (WGSL constants cannot be infinite); sum from 0.
  const init = d.kind === 'sum' ? '0.0' : 'a0[base]';
  // max propagates NaN like the host loop (v !== v) and Math.max, from either side (WGSL's max may drop a
  // NaN operand; NaN tested on the bits, as wgsl-expr's js_max: compilers may fold x != x to false).
  const nan = (x: string) => `((bitcast<u32>(${x}) & 0x7fffffffu) > 0x7f800000u)`;
  const combine = (acc: string, v: string) => (d.kind === 'sum' ? `${acc} + ${v}` : `select(max(${acc}, ${v}), ${acc} + ${v}, ${nan(acc)} || ${nan(v)})`);
  const decode = (index: string, base: string, dims: (i: number) => number, strides: (i: number) => number, n: number, name: string) => {
    let s = `  var ${name}r = ${index};\n  var ${base} = 0u;\n`;
    for (let i = n - 1; i >= 0; i--) {
      if (i > 0) s += `  ${base} += (${name}r % ${u(dims(i))}) * ${u(strides(i))};\n  ${name}r = ${name}r / ${u(dims(i))};\n`;
      else s += `  ${base} += ${name}r * ${u(strides(0))};\n`;
    }
    return s;
  };
  // Term `index`'s offset as off<tag> (q<tag> its scratch), statements indented by `pad`.
  const decodeInLoop = (index: string, tag = '', pad = '    ') => {
    const [q, off] = [`q${tag}`, `off${tag}`];
    let s = `${pad}var ${q} = ${index};\n${pad}var ${off} = base;\n`;
    for (let i = nr - 1; i >= 0; i--) {
      if (i > 0) s += `${pad}${off} += (${q} % ${u(redAt(i))}) * ${u(redStrideAt(i))};\n${pad}${q} = ${q} / ${u(redAt(i))};\n`;
      else s += `${pad}${off} += ${q} * ${u(redStrideAt(0))};\n`;
    }
    return s;
  };
  const workgroup = split === undefined && count >= WORKGROUP_REDUCE_FROM;
  const partsAt = 2 + 2 * nk + 2 * nr;
  let code: string;
  if (split !== undefined) {
    const load = (j: string, v: string) => `${decodeInLoop(j, v, '      ')}      let ${v} = a0[off${v}];\n`;
    code = `${decl}${bindings(1, 1)}${uniformBinding(2)}@compute @workgroup_size(${WG})\nfn main(${FLAT_INDEX}) {\n` +
      `  let t = ${flat};\n  if (t >= ${u(0)} * ${u(partsAt)}) { return; }\n  let o = t % ${u(0)};\n` +
      `${decode('o', 'base', keptAt, keptStrideAt, nk, 'k')}` +
      `  let j0 = (t / ${u(0)}) * ${u(partsAt + 1)};\n  let j1 = min(${u(1)}, j0 + ${u(partsAt + 1)});\n` +
      `  var acc0 : f32 = ${d.kind === 'sum' ? '0.0' : 'a0[base]'};\n  var acc1 = acc0;\n  var acc2 = acc0;\n  var acc3 = acc0;\n` +
      `  var j = j0;\n  for (; j + 3u < j1; j += 4u) {\n${load('j', 'v0')}${load('j + 1u', 'v1')}${load('j + 2u', 'v2')}${load('j + 3u', 'v3')}` +
      `      acc0 = ${combine('acc0', 'v0')};\n      acc1 = ${combine('acc1', 'v1')};\n      acc2 = ${combine('acc2', 'v2')};\n      acc3 = ${combine('acc3', 'v3')};\n  }\n` +
      `  for (; j < j1; j++) {\n${load('j', 'v0')}      acc0 = ${combine('acc0', 'v0')};\n  }\n` +
      `  out0[t] = ${combine(combine('acc0', 'acc1'), combine('acc2', 'acc3'))};\n}\n`;
  } else if (!workgroup) {
    code = `${decl}${bindings(1, 1)}${uniformBinding(2)}@compute @workgroup_size(${WG})\nfn main(${FLAT_INDEX}) {\n` +
      `  let o = ${flat};\n  if (o >= ${u(0)}) { return; }\n${decode('o', 'base', keptAt, keptStrideAt, nk, 'k')}` +
      `  var acc : f32 = ${init};\n  for (var j = 0u; j < ${u(1)}; j++) {\n${decodeInLoop('j')}    let v = a0[off];\n    acc = ${combine('acc', 'v')};\n  }\n  out0[o] = acc;\n}\n`;
  } else {
    code = `${decl}${bindings(1, 1)}${uniformBinding(2)}var<workgroup> part : array<f32, ${WG}>;\n` +
      `@compute @workgroup_size(${WG})\nfn main(@builtin(local_invocation_id) lid : vec3<u32>, @builtin(workgroup_id) wid : vec3<u32>, @builtin(num_workgroups) nwg : vec3<u32>) {\n` +
      `  let o = wid.x + wid.y * nwg.x;\n  let live = o < ${u(0)};\n` +
      `${decode('min(o, ' + u(0) + ' - 1u)', 'base', keptAt, keptStrideAt, nk, 'k')}` +
      `  var acc : f32 = ${init};\n  for (var j = lid.x; j < ${u(1)}; j += ${WG}u) {\n${decodeInLoop('j')}    let v = a0[off];\n    acc = ${combine('acc', 'v')};\n  }\n` +
      `  part[lid.x] = acc;\n  workgroupBarrier();\n` +
      `  for (var h = ${WG / 2}u; h > 0u; h = h >> 1u) {\n    if (lid.x < h) { part[lid.x] = ${combine('part[lid.x]', 'part[lid.x + h]')}; }\n    workgroupBarrier();\n  }\n` +
      `  if (lid.x == 0u && live) { out0[o] = part[0]; }\n}\n`;
  }
  return {
    name: `reduce-${d.kind}`,
    key: `reduce|${d.kind}|${nk}|${nr}|${split !== undefined ? 'parts' : workgroup}`,
    code,
    inputs: 1,
    outputs: 1,
    params,
    workgroups: workgroup ? groups1d(outCount) : groups1d(Math.ceil((outCount * (split?.parts ?? 1)) / WG)),
  };
}

// ---------------------------------------------------------------------------------------------
// Row ops over the last axis

export type RowOp = 'softmax' | 'softmaxGrad' | 'normalize' | 'normalizeGrad' | 'layerNorm';

/**
 * A workgroup per row of C values (x = a0; for the gradients g = a1; for layerNorm the weight a1 and
 * bias a2, of C each): the row statistics are reduced once in shared memory, then every thread writes
 * its share of the row.
 */
export function rowKernel(op: RowOp, rows: number, C: number, eps: number): WgslKernel {
  const { decl, params } = uniformBlock([rows, C, f32Bits(eps)]);
  const inputs = op === 'softmax' || op === 'normalize' ? 1 : op === 'layerNorm' ? 3 : 2;
  const reduceInto = (name: string, kind: 'sum' | 'max', term: string) =>
    `  {\n    var acc : f32 = ${kind === 'sum' ? '0.0' : 'a0[base]'};\n` +
    `    for (var j = lid.x; j < C; j += ${WG}u) { let v = ${term}; acc = ${kind === 'sum' ? 'acc + v' : 'max(acc, v)'}; }\n` +
    `    part[lid.x] = acc;\n    workgroupBarrier();\n` +
    `    for (var h = ${WG / 2}u; h > 0u; h = h >> 1u) {\n      if (lid.x < h) { part[lid.x] = ${kind === 'sum' ? 'part[lid.x] + part[lid.x + h]' : 'max(part[lid.x], part[lid.x + h])'}; }\n      workgroupBarrier();\n    }\n` +
    `    ${name} = part[0];\n    workgroupBarrier();\n  }\n`;
  const x = 'a0[base + j]';
  const g = 'a1[base + j]';
  // Rows past the end (a 2-D dispatch rounds up) still reach every barrier, reading row 0, and write nothing.
  const store = (e: string) => `  for (var j = lid.x; j < C; j += ${WG}u) { if (live) { out0[base + j] = ${e}; } }\n`;
  const stats = `  var mu : f32 = 0.0;\n${reduceInto('mu', 'sum', x)}  mu = mu / f32(C);\n` +
    `  var vr : f32 = 0.0;\n${reduceInto('vr', 'sum', `(${x} - mu) * (${x} - mu)`)}  let inv = 1.0 / sqrt(vr / f32(C) + eps);\n`;
  let body = '';
  switch (op) {
    case 'softmax':
      body = `  var m : f32 = 0.0;\n${reduceInto('m', 'max', x)}  var s : f32 = 0.0;\n${reduceInto('s', 'sum', `exp(${x} - m)`)}` + store(`exp(${x} - m) / s`);
      break;
    case 'softmaxGrad':
      body = `  var s : f32 = 0.0;\n${reduceInto('s', 'sum', `${x} * ${g}`)}` + store(`${x} * (${g} - s)`);
      break;
    case 'normalize':
      body = stats + store(`(${x} - mu) * inv`);
      break;
    case 'layerNorm':
      body = stats + store(`(${x} - mu) * inv * a1[j] + a2[j]`);
      break;
    case 'normalizeGrad':
      body = stats + `  var mg : f32 = 0.0;\n${reduceInto('mg', 'sum', g)}  mg = mg / f32(C);\n` +
        `  var mgx : f32 = 0.0;\n${reduceInto('mgx', 'sum', `${g} * (${x} - mu) * inv`)}  mgx = mgx / f32(C);\n` +
        store(`(${g} - mg - (${x} - mu) * inv * mgx) * inv`);
      break;
  }
  const code = `${decl}${bindings(inputs, 1)}${uniformBinding(inputs + 1)}var<workgroup> part : array<f32, ${WG}>;\n` +
    `@compute @workgroup_size(${WG})\nfn main(@builtin(local_invocation_id) lid : vec3<u32>, @builtin(workgroup_id) wid : vec3<u32>, @builtin(num_workgroups) nwg : vec3<u32>) {\n` +
    `  let row = wid.x + wid.y * nwg.x;\n  let live = row < ${u(0)};\n  let C = ${u(1)};\n  let eps = bitcast<f32>(${u(2)});\n  let base = select(0u, row, live) * C;\n${body}}\n`;
  return { name: op, key: `row|${op}`, code, inputs, outputs: 1, params, workgroups: groups1d(rows) };
}

// ---------------------------------------------------------------------------------------------
// Tiled matmul

export interface MatmulTiling {
  /** Output tile of a workgroup (rows x columns) and the k-slice staged in shared memory per step. */
  readonly bm: number;
  readonly bn: number;
  readonly bk: number;
  /** Outputs per thread (rows x columns); the workgroup is (bn / tn) x (bm / tm) threads. */
  readonly tm: number;
  readonly tn: number;
  /**
   * How a thread's rows and columns lie in the tile: 1 (default), interleaved across the workgroup one
   * by one (scalar shared-memory reads); 4, in runs of 4 adjacent ones read as one vec4 each (a quarter
   * of the shared-memory instructions per multiply-add; tm and tn multiples of 4).
   */
  readonly vec?: 1 | 4;
  /** Fetch the next k-slice from global memory into registers while multiplying the current one. */
  readonly prefetch?: boolean;
}

/** 128x128 tiles, 8x8 per thread (256 threads): for large products on devices that allow 256 invocations. */
export const TILE_LARGE: MatmulTiling = { bm: 128, bn: 128, bk: 8, tm: 8, tn: 8 };
/** 64x64 tiles, 4x4 per thread (256 threads). */
export const TILE_MEDIUM: MatmulTiling = { bm: 64, bn: 64, bk: 16, tm: 4, tn: 4 };
/** 32x32 tiles, 4x2 per thread (128 threads): small products and devices at the default limits. */
export const TILE_SMALL: MatmulTiling = { bm: 32, bn: 32, bk: 16, tm: 4, tn: 2 };
/**
 * TILE_MEDIUM and TILE_LARGE with their threads' rows and columns in runs of 4 read as vec4: by
 * instruction counts the scalar 4x4 kernel issues one shared-memory read per two multiply-adds, which
 * caps an NVIDIA SM at half its FMA rate; these issue one per eight. Not yet timed on a GPU, so the
 * cost model does not pick them; tuning times them beside the others.
 */
export const TILE_MEDIUM_VEC4: MatmulTiling = { bm: 64, bn: 64, bk: 16, tm: 4, tn: 4, vec: 4 };
export const TILE_LARGE_VEC4: MatmulTiling = { bm: 128, bn: 128, bk: 8, tm: 8, tn: 8, vec: 4 };
/** The rectangular tiles between them (CUTLASS's 128x64 and 64x128), 16-deep k-slices, vec4: for products with one short side. */
export const TILE_TALL_VEC4: MatmulTiling = { bm: 128, bn: 64, bk: 16, tm: 8, tn: 4, vec: 4 };
export const TILE_WIDE_VEC4: MatmulTiling = { bm: 64, bn: 128, bk: 16, tm: 4, tn: 8, vec: 4 };
/** TILE_LARGE_VEC4 and TILE_MEDIUM_VEC4 with the next k-slice prefetched into registers (software pipelining, as CUTLASS's mainloop). */
export const TILE_LARGE_VEC4_PREFETCH: MatmulTiling = { ...TILE_LARGE_VEC4, prefetch: true };
export const TILE_MEDIUM_VEC4_PREFETCH: MatmulTiling = { ...TILE_MEDIUM_VEC4, prefetch: true };

export interface MatmulShape {
  readonly batch: number;
  readonly m: number;
  readonly k: number;
  readonly n: number;
  readonly transA: boolean;
  readonly transB: boolean;
}

export const tilingThreads = (t: MatmulTiling): number => (t.bm / t.tm) * (t.bn / t.tn);
/** Bytes of workgroup memory a tiling's kernel declares: its A and B k-slices, each k-row padded by `vec` floats. */
export const tilingSharedBytes = (t: MatmulTiling): number => 4 * t.bk * (t.bm + t.bn + 2 * (t.vec ?? 1));

/** Every tiling, largest first; a device runs those within its invocations per workgroup. */
export const TILINGS: readonly MatmulTiling[] = [
  TILE_LARGE, TILE_LARGE_VEC4, TILE_LARGE_VEC4_PREFETCH, TILE_TALL_VEC4, TILE_WIDE_VEC4, TILE_MEDIUM, TILE_MEDIUM_VEC4, TILE_MEDIUM_VEC4_PREFETCH, TILE_SMALL,
];
export const tilingsFor = (maxThreads: number): MatmulTiling[] => TILINGS.filter((t) => tilingThreads(t) <= maxThreads);
export const tilingName = (t: MatmulTiling): string => `${t.bm}x${t.bn}/${t.tm}x${t.tn}${t.bk !== 16 ? ` k${t.bk}` : ''}${t.vec === 4 ? ' vec4' : ''}${t.prefetch === true ? ' prefetch' : ''}`;

/**
 * The cost model behind `chooseTiling`, fitted to the H200 runs of docs/benchmarks.md (N x N products,
 * N = 1024-8192): a tiling's throughput is its peak rate (relative to 64x64/4x4) times how well its
 * threads fill the GPU, T / (T + 51,200) for T threads in all. It predicts the 64x64 and 32x32 rates
 * within 6 % at every N; it underrates 128x128 (by 44 % at N = 2048, where that tiling was 11 % faster
 * than 64x64, and 26 % at 1024), and gets the fastest tiling right at N = 1024, 4096 and 8192.
 */
const TILING_RATE = new Map<MatmulTiling, number>([[TILE_LARGE, 0.88], [TILE_MEDIUM, 1], [TILE_SMALL, 0.62]]);
const FILL_THREADS = 51_200;

/** The model's time of a product in arbitrary units: padded multiply-adds over rate x fill. */
export function tilingCost(p: MatmulShape, t: MatmulTiling, splits = splitK(p)): number {
  const rowTiles = Math.ceil(p.m / t.bm);
  const colTiles = Math.ceil(p.n / t.bn);
  const threads = p.batch * splits * rowTiles * colTiles * tilingThreads(t);
  const padded = p.batch * rowTiles * t.bm * colTiles * t.bn * Math.max(1, p.k);
  return padded / ((TILING_RATE.get(t) ?? 1) * (threads / (threads + FILL_THREADS)));
}

/** The tiling the cost model expects to be fastest among the fitted ones the device allows (DeviceProgram may time them all instead). */
export function chooseTiling(p: MatmulShape, maxThreads: number): MatmulTiling {
  const allowed = tilingsFor(maxThreads).filter((t) => TILING_RATE.has(t));
  if (allowed.length === 0) throw new BackendError(`matmul: no tiling fits in ${maxThreads} invocations per workgroup`);
  return allowed.reduce((best, t) => (tilingCost(p, t) < tilingCost(p, best) ? t : best));
}

/** Workgroups (of 64x64 tiles) that fill a large GPU: 1,024 ran at 80 % of the kernel's peak on the H200, 256 at 55 %. */
const SPLIT_K_FILL = 1024;
/** The shortest k range worth a split of its own. */
const SPLIT_K_MIN = 256;

/**
 * Split-K: into how many k ranges a product is cut (each a workgroup layer writing its partial sums,
 * then one pass adding them up), so that products with few output tiles and a long k, the weight
 * gradients (e.g. 1536 x 384 over k = 25,088 tokens), still fill the GPU. A power of two, from the shape
 * alone: the tiling never changes which terms are summed in which order, so timing tilings against
 * each other never changes a result's bits.
 */
export function splitK(p: MatmulShape): number {
  const tiles = p.batch * Math.ceil(p.m / TILE_MEDIUM.bm) * Math.ceil(p.n / TILE_MEDIUM.bn);
  let s = 1;
  while (tiles * s < SPLIT_K_FILL && p.k / (2 * s) >= SPLIT_K_MIN && p.batch * 2 * s <= MAX_GROUPS) s *= 2;
  return s;
}

/** The k range of one split: a multiple of every tiling's k-slice. */
const splitChunk = (k: number, splits: number): number => Math.ceil(k / splits / 16) * 16;

/**
 * C[z] = op(A[z]) @ op(B[z]) (row-major; A is [m,k], or [k,m] with transA; B is [k,n], or [n,k] with
 * transB). A workgroup computes a bm x bn tile: per k-step it stages a bk-slice of A and B in shared
 * memory (coalesced loads, zero-filled past the edges), and each thread accumulates a tm x tn block in
 * registers, its rows and columns interleaved across the workgroup (conflict-free shared reads,
 * coalesced stores). Every output is one fma chain over k in order, whatever the tiling.
 *
 * With `splits` > 1 the k axis is cut into that many ranges and the kernel writes [batch, splits, m, n]
 * partial products (`matmulSplitSum` adds them up). Uniform words: m, k, n, batch stride of A, of B,
 * the size of one output (m n), splits, the k range of one split.
 */
export function matmulKernel(p: MatmulShape, t: MatmulTiling = TILE_SMALL, splits = 1): WgslKernel {
  const { bm, bn, bk, tm, tn } = t;
  const vec = t.vec ?? 1;
  if (!Number.isInteger(splits) || splits < 1) throw new BackendError(`matmul: splits must be a positive integer, got ${splits}`);
  if (p.batch * splits > MAX_GROUPS) throw new BackendError(`matmul: a batch of ${p.batch} products in ${splits} k ranges exceeds the ${MAX_GROUPS} workgroups of one dispatch dimension`);
  const wx = bn / tn;
  const wy = bm / tm;
  const threads = wx * wy;
  if (!Number.isInteger(wx) || !Number.isInteger(wy) || (bm * bk) % threads !== 0 || (bk * bn) % threads !== 0 || tm % vec !== 0 || tn % vec !== 0) {
    throw new BackendError(`matmul: tiling ${JSON.stringify(t)} does not divide evenly over its ${threads} threads`);
  }
  const { decl, params } = uniformBlock([p.m, p.k, p.n, p.m * p.k, p.k * p.n, p.m * p.n, splits, splitChunk(p.k, splits)]);
  const aLoads = (bm * bk) / threads;
  const bLoads = (bk * bn) / threads;
  // Load index l -> (row r, k kk) of the A tile, with consecutive threads on consecutive addresses.
  const aIndex = p.transA
    ? { r: 'l % BM', kk: 'l / BM', at: (r: string, kk: string) => `za + ${kk} * M + ${r}` }
    : { r: 'l / BK', kk: 'l % BK', at: (r: string, kk: string) => `za + ${r} * K + ${kk}` };
  const bIndex = p.transB
    ? { c: 'l / BK', kk: 'l % BK', at: (c: string, kk: string) => `zb + ${c} * K + ${kk}` }
    : { c: 'l % BN', kk: 'l / BN', at: (c: string, kk: string) => `zb + ${kk} * N + ${c}` };
  let s = `${decl}${bindings(2, 1)}${uniformBinding(3)}`;
  s += `const BM = ${bm}u;\nconst BN = ${bn}u;\nconst BK = ${bk}u;\n`;
  // Shared tiles, k-major: As[kk][row], Bs[kk][column] (in vec4s of 4 adjacent rows / columns with vec 4).
  // Each k-row is padded by `pad` floats: where consecutive threads load consecutive k (A without
  // transA, B with transB) their stores would otherwise all hit one of the 32 shared-memory banks.
  const pad = vec; // as in tilingSharedBytes
  const rowA = bm + pad;
  const rowB = bn + pad;
  const shared = vec === 4 ? 'vec4<f32>' : 'f32';
  s += `var<workgroup> As : array<${shared}, ${(bk * rowA) / vec}>;\nvar<workgroup> Bs : array<${shared}, ${(bk * rowB) / vec}>;\n`;
  const store = (tile: string, at: string) => (vec === 4 ? `${tile}[(${at}) / 4u][(${at}) % 4u]` : `${tile}[${at}]`);
  s += `@compute @workgroup_size(${wx}, ${wy}, 1)\n`;
  s += `fn main(@builtin(local_invocation_id) lid : vec3<u32>, @builtin(workgroup_id) wid : vec3<u32>) {\n`;
  s += `  let M = ${u(0)};\n  let K = ${u(1)};\n  let N = ${u(2)};\n`;
  // wid.z = product * splits + split; the output (or partial product) wid.z is at wid.z * m n.
  s += `  let product = wid.z / ${u(6)};\n  let kBegin = (wid.z % ${u(6)}) * ${u(7)};\n  let kEnd = min(K, kBegin + ${u(7)});\n`;
  s += `  let za = product * ${u(3)};\n  let zb = product * ${u(4)};\n  let zc = wid.z * ${u(5)};\n`;
  s += `  let row0 = wid.y * BM;\n  let col0 = wid.x * BN;\n  let tid = lid.y * ${wx}u + lid.x;\n`;
  // Thread (x, y) holds rows y·vec + g·wy·vec + r (r < vec) for g < tm / vec, columns likewise with x and
  // wx; accumulator c<i>_<h> is row i (g·vec + r) against column group h (a vec4 with vec 4).
  const acc = vec === 4 ? 'vec4<f32>' : 'f32';
  for (let i = 0; i < tm; i++) for (let h = 0; h < tn / vec; h++) s += `  var c${i}_${h} : ${acc} = ${acc}();\n`;
  // Element q of this thread's share of the A (B) k-slice at k0: fetched from global memory into `dst`
  // (0 past the edges), and put into the shared tile.
  const fetchA = (q: number, k0: string, dst: string) =>
    `      { let l = tid + ${q * threads}u; let gr = row0 + ${aIndex.r}; let gk = ${k0} + ${aIndex.kk}; ${dst} = 0.0; if (gr < M && gk < kEnd) { ${dst} = a0[${aIndex.at('gr', 'gk')}]; } }\n`;
  const fetchB = (q: number, k0: string, dst: string) =>
    `      { let l = tid + ${q * threads}u; let gc = col0 + ${bIndex.c}; let gk = ${k0} + ${bIndex.kk}; ${dst} = 0.0; if (gc < N && gk < kEnd) { ${dst} = a1[${bIndex.at('gc', 'gk')}]; } }\n`;
  const putA = (q: number, src: string) => `      { let l = tid + ${q * threads}u; let r = ${aIndex.r}; let kk = ${aIndex.kk}; ${store('As', `kk * ${rowA}u + r`)} = ${src}; }\n`;
  const putB = (q: number, src: string) => `      { let l = tid + ${q * threads}u; let c = ${bIndex.c}; let kk = ${bIndex.kk}; ${store('Bs', `kk * ${rowB}u + c`)} = ${src}; }\n`;
  const qs = (n: number) => Array.from({ length: n }, (_, q) => q);
  if (t.prefetch === true) {
    // Software pipelining: the next k-slice's global loads are issued before this slice's multiply-adds
    // and stored to shared memory after them, so their latency hides behind the arithmetic.
    for (const q of qs(aLoads)) s += `  var ra${q} : f32;\n`;
    for (const q of qs(bLoads)) s += `  var rb${q} : f32;\n`;
    s += `  {\n${qs(aLoads).map((q) => fetchA(q, 'kBegin', `ra${q}`)).join('')}${qs(bLoads).map((q) => fetchB(q, 'kBegin', `rb${q}`)).join('')}  }\n`;
    s += `  for (var k0 = kBegin; k0 < kEnd; k0 += BK) {\n`;
    s += qs(aLoads).map((q) => putA(q, `ra${q}`)).join('') + qs(bLoads).map((q) => putB(q, `rb${q}`)).join('');
    s += `    workgroupBarrier();\n    if (k0 + BK < kEnd) {\n`;
    s += qs(aLoads).map((q) => fetchA(q, 'k0 + BK', `ra${q}`)).join('') + qs(bLoads).map((q) => fetchB(q, 'k0 + BK', `rb${q}`)).join('');
    s += `    }\n`;
  } else {
    s += `  for (var k0 = kBegin; k0 < kEnd; k0 += BK) {\n`;
    for (const q of qs(aLoads)) s += `    {\n      var v : f32;\n${fetchA(q, 'k0', 'v')}${putA(q, 'v')}    }\n`;
    for (const q of qs(bLoads)) s += `    {\n      var v : f32;\n${fetchB(q, 'k0', 'v')}${putB(q, 'v')}    }\n`;
    s += `    workgroupBarrier();\n`;
  }
  s += `    for (var kk = 0u; kk < BK; kk++) {\n`;
  for (let g = 0; g < tm / vec; g++) s += `      let a${g} = As[kk * ${rowA / vec}u + lid.y + ${g * wy}u];\n`;
  for (let h = 0; h < tn / vec; h++) s += `      let b${h} = Bs[kk * ${rowB / vec}u + lid.x + ${h * wx}u];\n`;
  for (let i = 0; i < tm; i++) {
    const a = vec === 4 ? `vec4<f32>(a${Math.floor(i / 4)}[${i % 4}])` : `a${i}`;
    for (let h = 0; h < tn / vec; h++) s += `      c${i}_${h} = fma(${a}, b${h}, c${i}_${h});\n`;
  }
  s += `    }\n    workgroupBarrier();\n  }\n`;
  for (let i = 0; i < tm; i++) {
    const row = `lid.y * ${vec}u + ${Math.floor(i / vec) * wy * vec + (i % vec)}u`;
    s += `  {\n    let gr = row0 + ${row};\n    if (gr < M) {\n`;
    for (let j = 0; j < tn; j++) {
      const h = Math.floor(j / vec);
      const col = `lid.x * ${vec}u + ${h * wx * vec + (j % vec)}u`;
      s += `      { let gc = col0 + ${col}; if (gc < N) { out0[zc + gr * N + gc] = c${i}_${h}${vec === 4 ? `[${j % 4}]` : ''}; } }\n`;
    }
    s += `    }\n  }\n`;
  }
  s += `}\n`;
  const tiling = `${bm}x${bn}x${bk}/${tm}x${tn}${vec === 4 ? '/vec4' : ''}${t.prefetch === true ? '/prefetch' : ''}`;
  return {
    name: 'matmul',
    key: `matmul|${tiling}|${p.transA}|${p.transB}`,
    code: s,
    inputs: 2,
    outputs: 1,
    params,
    workgroups: [Math.ceil(p.n / bn), Math.ceil(p.m / bm), p.batch * splits],
  };
}

/** A product as plans run it: one dispatch, or split-K's partial products and their sum (see `splitK`). */
export function matmulWgsl(p: MatmulShape, t: MatmulTiling): WgslKernel | WgslPasses {
  const splits = splitK(p);
  if (splits === 1) return matmulKernel(p, t);
  const q = new Passes();
  const partial = q.range(p.batch * splits * p.m * p.n);
  return q.add(matmulKernel(p, t, splits), [{ input: 0 }, { input: 1 }], partial).add(matmulSplitSum(p, splits), [partial], 'output').build();
}

/** C[z] = the sum of the `splits` partial products matmulKernel(p, t, splits) wrote (in split order). */
export function matmulSplitSum(p: MatmulShape, splits: number): WgslKernel {
  const mn = p.m * p.n;
  return { ...reduceKernel({ kind: 'sum', kept: [p.batch, mn], keptStrides: [splits * mn, 1], reduced: [splits], reducedStrides: [mn] }), name: 'matmul-split-sum' };
}

/** Sizes of a canonical 3-D convolution (conv.ts: x [B, Cin, D, H, W], w [Cout, Cg, KD, KH, KW], y [B, Cout, OD, OH, OW]). */
export interface ConvGeometry {
  readonly B: number; readonly Cin: number; readonly D: number; readonly H: number; readonly W: number;
  readonly Cout: number; readonly Cg: number; readonly KD: number; readonly KH: number; readonly KW: number;
  readonly OD: number; readonly OH: number; readonly OW: number;
  readonly sd: number; readonly sh: number; readonly sw: number;
  readonly pd: number; readonly ph: number; readonly pw: number;
  readonly coutPerGroup: number;
}

const CONV_FIELDS = ['B', 'Cin', 'D', 'H', 'W', 'Cout', 'Cg', 'KD', 'KH', 'KW', 'OD', 'OH', 'OW', 'sd', 'sh', 'sw', 'pd', 'ph', 'pw', 'coutPerGroup'] as const;

/**
 * A convolution part as the gpu.js kernels of conv.ts compute it, one thread per output element, with
 * i32/u32 index math: 'fwd' y = conv(x, w) (inputs x, w); 'dx' the input gradient (inputs g, w);
 * 'dw' the weight gradient (inputs x, g).
 */
export function convKernel(part: 'fwd' | 'dx' | 'dw', c: ConvGeometry): WgslKernel {
  const total = part === 'fwd' ? c.B * c.Cout * c.OD * c.OH * c.OW : part === 'dx' ? c.B * c.Cin * c.D * c.H * c.W : c.Cout * c.Cg * c.KD * c.KH * c.KW;
  const { decl, params } = uniformBlock([...CONV_FIELDS.map((f) => c[f]), total]);
  let head = '';
  CONV_FIELDS.forEach((f, i) => (head += `  let ${f} = i32(${u(i)});\n`));
  const X = (b: string, ch: string, z: string, y: string, x: string) => `u32(((((${b}) * Cin + (${ch})) * D + (${z})) * H + (${y})) * W + (${x}))`;
  const Wt = (co: string, ci: string, z: string, y: string, x: string) => `u32(((((${co}) * Cg + (${ci})) * KD + (${z})) * KH + (${y})) * KW + (${x}))`;
  const O = (b: string, co: string, z: string, y: string, x: string) => `u32(((((${b}) * Cout + (${co})) * OD + (${z})) * OH + (${y})) * OW + (${x}))`;
  const decode = (names: string[], dims: string[]) => {
    let s = '  var r = i;\n';
    for (let k = names.length - 1; k >= 0; k--) {
      s += k > 0 ? `  let ${names[k]} = i32(r % u32(${dims[k]}));\n  r = r / u32(${dims[k]});\n` : `  let ${names[k]} = i32(r);\n`;
    }
    return s;
  };
  let body: string;
  if (part === 'fwd') {
    body = decode(['b', 'co', 'oz', 'oy', 'ox'], ['B', 'Cout', 'OD', 'OH', 'OW']) +
      `  let gi = co / coutPerGroup;\n  var acc : f32 = 0.0;\n` +
      `  for (var ci = 0; ci < Cg; ci++) { for (var kz = 0; kz < KD; kz++) { for (var ky = 0; ky < KH; ky++) { for (var kx = 0; kx < KW; kx++) {\n` +
      `    let iz = oz * sd - pd + kz; let iy = oy * sh - ph + ky; let ix = ox * sw - pw + kx;\n` +
      `    if (iz >= 0 && iz < D && iy >= 0 && iy < H && ix >= 0 && ix < W) { acc += a0[${X('b', 'gi * Cg + ci', 'iz', 'iy', 'ix')}] * a1[${Wt('co', 'ci', 'kz', 'ky', 'kx')}]; }\n` +
      `  } } } }\n  out0[i] = acc;\n`;
  } else if (part === 'dx') {
    body = decode(['b', 'ch', 'iz', 'iy', 'ix'], ['B', 'Cin', 'D', 'H', 'W']) +
      `  let gi = ch / Cg;\n  let ci = ch - gi * Cg;\n  var acc : f32 = 0.0;\n` +
      `  for (var j = 0; j < coutPerGroup; j++) { for (var kz = 0; kz < KD; kz++) { for (var ky = 0; ky < KH; ky++) { for (var kx = 0; kx < KW; kx++) {\n` +
      `    let tz = iz + pd - kz; let ty = iy + ph - ky; let tx = ix + pw - kx;\n` +
      `    if (tz >= 0 && ty >= 0 && tx >= 0 && tz % sd == 0 && ty % sh == 0 && tx % sw == 0) {\n` +
      `      let oz = tz / sd; let oy = ty / sh; let ox = tx / sw;\n` +
      `      if (oz < OD && oy < OH && ox < OW) { acc += a0[${O('b', 'gi * coutPerGroup + j', 'oz', 'oy', 'ox')}] * a1[${Wt('gi * coutPerGroup + j', 'ci', 'kz', 'ky', 'kx')}]; }\n` +
      `    }\n  } } } }\n  out0[i] = acc;\n`;
  } else {
    body = decode(['co', 'ci', 'kz', 'ky', 'kx'], ['Cout', 'Cg', 'KD', 'KH', 'KW']) +
      `  let gi = co / coutPerGroup;\n  var acc : f32 = 0.0;\n` +
      `  for (var b = 0; b < B; b++) { for (var oz = 0; oz < OD; oz++) { for (var oy = 0; oy < OH; oy++) { for (var ox = 0; ox < OW; ox++) {\n` +
      `    let iz = oz * sd - pd + kz; let iy = oy * sh - ph + ky; let ix = ox * sw - pw + kx;\n` +
      `    if (iz >= 0 && iz < D && iy >= 0 && iy < H && ix >= 0 && ix < W) { acc += a0[${X('b', 'gi * Cg + ci', 'iz', 'iy', 'ix')}] * a1[${O('b', 'co', 'oz', 'oy', 'ox')}]; }\n` +
      `  } } } }\n  out0[i] = acc;\n`;
  }
  const code = `${decl}${bindings(2, 1)}${uniformBinding(3)}@compute @workgroup_size(${WG})\nfn main(${FLAT_INDEX}) {\n` +
    `  let i = ${flat};\n  if (i >= ${u(CONV_FIELDS.length)}) { return; }\n${head}${body}}\n`;
  return { name: `conv-${part}`, key: `conv|${part}`, code, inputs: 2, outputs: 1, params, workgroups: groups1d(Math.ceil(total / WG)) };
}

/**
 * The patches of a dense (groups 1) convolution as rows, [B·P, CK]: col[b·P + o, ck] = x[b, ci,
 * oz·sd − pd + kz, oy·sh − ph + ky, ox·sw − pw + kx], 0 in the padding, for o = (oz·OH + oy)·OW + ox and
 * ck = ((ci·KD + kz)·KH + ky)·KW + kx (the weight's layout past Cout).
 */
export function im2colKernel(c: ConvGeometry): WgslKernel {
  const CK = c.Cin * c.KD * c.KH * c.KW;
  const total = c.B * c.OD * c.OH * c.OW * CK;
  const { decl, params } = uniformBlock([...CONV_FIELDS.map((f) => c[f]), total]);
  let body = `  let i = ${flat};\n  if (i >= ${u(CONV_FIELDS.length)}) { return; }\n`;
  CONV_FIELDS.forEach((f, k) => (body += `  let ${f} = i32(${u(k)});\n`));
  body += '  var r = i;\n';
  for (const [name, dim] of [['kx', 'KW'], ['ky', 'KH'], ['kz', 'KD'], ['ci', 'Cin'], ['ox', 'OW'], ['oy', 'OH'], ['oz', 'OD']]) {
    body += `  let ${name} = i32(r % u32(${dim}));\n  r = r / u32(${dim});\n`;
  }
  body += '  let b = i32(r);\n  let iz = oz * sd - pd + kz;\n  let iy = oy * sh - ph + ky;\n  let ix = ox * sw - pw + kx;\n  var v : f32 = 0.0;\n' +
    '  if (iz >= 0 && iz < D && iy >= 0 && iy < H && ix >= 0 && ix < W) { v = a0[u32((((b * Cin + ci) * D + iz) * H + iy) * W + ix)]; }\n  out0[i] = v;\n';
  const code = `${decl}${bindings(1, 1)}${uniformBinding(2)}@compute @workgroup_size(${WG})\nfn main(${FLAT_INDEX}) {\n${body}}\n`;
  return { name: 'conv-im2col', key: 'conv|im2col', code, inputs: 1, outputs: 1, params, workgroups: groups1d(Math.ceil(total / WG)) };
}

/**
 * A dense (groups 1) convolution part as im2col and one matrix product (as conv.ts's host path does), so
 * it runs at the tiled matmul's speed instead of one long loop per output: 'fwd' (inputs x, w)
 * y = W colᵀ as [Cout, B, P], then permuted to [B, Cout, P]; 'dw' (inputs x, g) dW = g' col, where g'
 * is g permuted from [B, Cout, P] to [Cout, B, P] (k = B·P, usually split-K). `tiling` picks each product's.
 */
export function convMatmulPasses(part: 'fwd' | 'dw', c: ConvGeometry, tiling: (p: MatmulShape) => MatmulTiling): WgslPasses {
  const P = c.OD * c.OH * c.OW;
  const BP = c.B * P;
  const CK = c.Cin * c.KD * c.KH * c.KW;
  const permute = (dims: number[], strides: number[]) => mapKernel({ name: 'conv-permute', dims, strides: [strides], offsets: [0], lets: [], outputs: ['x0'] });
  const q = new Passes();
  const col = q.range(BP * CK);
  q.add(im2colKernel(c), [{ input: 0 }], col);
  if (part === 'fwd') {
    const p = { batch: 1, m: c.Cout, k: CK, n: BP, transA: false, transB: true };
    const yT = q.range(c.Cout * BP);
    return q.add(matmulWgsl(p, tiling(p)), [{ input: 1 }, col], yT).add(permute([c.B, c.Cout, P], [P, BP, 1]), [yT], 'output').build();
  }
  const p = { batch: 1, m: c.Cout, k: BP, n: CK, transA: false, transB: false };
  const gT = q.range(c.Cout * BP);
  return q.add(permute([c.Cout, c.B, P], [P, c.Cout * P, 1]), [{ input: 1 }], gT).add(matmulWgsl(p, tiling(p)), [gT, col], 'output').build();
}

// ---------------------------------------------------------------------------------------------
// Depthwise 3-D convolution, channels last (depthwise.ts: x [N, D, H, W, C], w [C, 1, KD, KH, KW], y [N, OD, OH, OW, C])

const DEPTHWISE_FIELDS = ['N', 'D', 'H', 'W', 'C', 'KD', 'KH', 'KW', 'OD', 'OH', 'OW', 'sd', 'sh', 'sw', 'pd', 'ph', 'pw'] as const;

/**
 * A depthwise convolution part as depthwise.ts's gpu.js kernels compute it, with u32 indexing: 'fwd'
 * y = x * w (inputs x, w) and 'dx' (inputs g, w), a thread per output element (consecutive threads on
 * consecutive channels: coalesced); 'dw' (inputs x, g) a workgroup per weight element, its threads
 * striding over the output positions and summing in shared memory. `geom` in DEPTHWISE_FIELDS order.
 */
export function depthwiseKernel(part: 'fwd' | 'dx' | 'dw', geom: readonly number[]): WgslKernel {
  const g = Object.fromEntries(DEPTHWISE_FIELDS.map((f, i) => [f, geom[i]])) as Record<(typeof DEPTHWISE_FIELDS)[number], number>;
  const positions = g.N * g.OD * g.OH * g.OW;
  const total = part === 'fwd' ? positions * g.C : part === 'dx' ? g.N * g.D * g.H * g.W * g.C : g.C * g.KD * g.KH * g.KW;
  const { decl, params } = uniformBlock([...geom, total, positions]);
  let head = '';
  DEPTHWISE_FIELDS.forEach((f, i) => (head += `  let ${f} = i32(${u(i)});\n`));
  const X = `u32(((((n * D + iz) * H + iy) * W + ix) * C + c))`;
  const O = `u32(((((n * OD + oz) * OH + oy) * OW + ox) * C + c))`;
  const Wt = `u32(((c * KD + kz) * KH + ky) * KW + kx)`;
  const decode = (index: string, names: string[], dims: string[]) => {
    let s = `  var r = ${index};\n`;
    for (let k = names.length - 1; k >= 0; k--) s += k > 0 ? `  let ${names[k]} = i32(r % u32(${dims[k]}));\n  r = r / u32(${dims[k]});\n` : `  let ${names[k]} = i32(r);\n`;
    return s;
  };
  const taps = (body: string) => `  for (var kz = 0; kz < KD; kz++) { for (var ky = 0; ky < KH; ky++) { for (var kx = 0; kx < KW; kx++) {\n${body}  } } }\n`;
  const totalAt = u(DEPTHWISE_FIELDS.length);
  let code: string;
  if (part !== 'dw') {
    const body = part === 'fwd'
      ? decode('i', ['n', 'oz', 'oy', 'ox', 'c'], ['N', 'OD', 'OH', 'OW', 'C']) + `  var acc : f32 = 0.0;\n` +
        taps(`    let iz = oz * sd - pd + kz; let iy = oy * sh - ph + ky; let ix = ox * sw - pw + kx;\n` +
          `    if (iz >= 0 && iz < D && iy >= 0 && iy < H && ix >= 0 && ix < W) { acc += a0[${X}] * a1[${Wt}]; }\n`)
      : decode('i', ['n', 'iz', 'iy', 'ix', 'c'], ['N', 'D', 'H', 'W', 'C']) + `  var acc : f32 = 0.0;\n` +
        taps(`    let tz = iz + pd - kz; let ty = iy + ph - ky; let tx = ix + pw - kx;\n` +
          `    if (tz >= 0 && ty >= 0 && tx >= 0 && tz % sd == 0 && ty % sh == 0 && tx % sw == 0) {\n` +
          `      let oz = tz / sd; let oy = ty / sh; let ox = tx / sw;\n` +
          `      if (oz < OD && oy < OH && ox < OW) { acc += a0[${O}] * a1[${Wt}]; }\n    }\n`);
    code = `${decl}${bindings(2, 1)}${uniformBinding(3)}@compute @workgroup_size(${WG})\nfn main(${FLAT_INDEX}) {\n` +
      `  let i = ${flat};\n  if (i >= ${totalAt}) { return; }\n${head}${body}  out0[i] = acc;\n}\n`;
  } else {
    code = `${decl}${bindings(2, 1)}${uniformBinding(3)}var<workgroup> part : array<f32, ${WG}>;\n` +
      `@compute @workgroup_size(${WG})\nfn main(@builtin(local_invocation_id) lid : vec3<u32>, @builtin(workgroup_id) wid : vec3<u32>, @builtin(num_workgroups) nwg : vec3<u32>) {\n` +
      `  let o = wid.x + wid.y * nwg.x;\n  let live = o < ${totalAt};\n${head}` +
      decode('min(o, ' + totalAt + ' - 1u)', ['c', 'kz', 'ky', 'kx'], ['C', 'KD', 'KH', 'KW']) +
      `  var acc : f32 = 0.0;\n  for (var t = lid.x; t < ${u(DEPTHWISE_FIELDS.length + 1)}; t += ${WG}u) {\n` +
      `    var q = t;\n    let ox = i32(q % u32(OW)); q = q / u32(OW);\n    let oy = i32(q % u32(OH)); q = q / u32(OH);\n    let oz = i32(q % u32(OD)); let n = i32(q / u32(OD));\n` +
      `    let iz = oz * sd - pd + kz; let iy = oy * sh - ph + ky; let ix = ox * sw - pw + kx;\n` +
      `    if (iz >= 0 && iz < D && iy >= 0 && iy < H && ix >= 0 && ix < W) { acc += a0[${X}] * a1[${O}]; }\n  }\n` +
      `  part[lid.x] = acc;\n  workgroupBarrier();\n` +
      `  for (var h = ${WG / 2}u; h > 0u; h = h >> 1u) {\n    if (lid.x < h) { part[lid.x] = part[lid.x] + part[lid.x + h]; }\n    workgroupBarrier();\n  }\n` +
      `  if (lid.x == 0u && live) { out0[o] = part[0]; }\n}\n`;
  }
  return { name: `dwconv-${part}`, key: `dwconv|${part}`, code, inputs: 2, outputs: 1, params, workgroups: part === 'dw' ? groups1d(total) : groups1d(Math.ceil(total / WG)) };
}

// ---------------------------------------------------------------------------------------------
// Gathers: take and its transpose scatterAdd (ops.ts)

/** out[(o, j, k)] = a0[(o, a1[j], k)]: x viewed as [outer, n, inner], indices a1 (floats holding integers) of `count`. */
export function takeKernel(outer: number, n: number, inner: number, count: number): WgslKernel {
  const total = outer * count * inner;
  const { decl, params } = uniformBlock([total, n, inner, count]);
  const code = `${decl}${bindings(2, 1)}${uniformBinding(3)}@compute @workgroup_size(${WG})\nfn main(${FLAT_INDEX}) {\n` +
    `  let i = ${flat};\n  if (i >= ${u(0)}) { return; }\n  let n = ${u(1)};\n  let inner = ${u(2)};\n  let count = ${u(3)};\n` +
    `  let o = i / (count * inner);\n  let rest = i - o * count * inner;\n  let j = rest / inner;\n  let k = rest - j * inner;\n` +
    `  out0[i] = a0[(o * n + u32(a1[j])) * inner + k];\n}\n`;
  return { name: 'take', key: 'take', code, inputs: 2, outputs: 1, params, workgroups: groups1d(Math.ceil(total / WG)) };
}

/** The transpose of take: out[(o, s, k)] = sum over j with a1[j] == s of a0[(o, j, k)], in j order (the host loop's). */
export function scatterAddKernel(outer: number, size: number, inner: number, count: number): WgslKernel {
  const total = outer * size * inner;
  const { decl, params } = uniformBlock([total, size, inner, count]);
  const code = `${decl}${bindings(2, 1)}${uniformBinding(3)}@compute @workgroup_size(${WG})\nfn main(${FLAT_INDEX}) {\n` +
    `  let i = ${flat};\n  if (i >= ${u(0)}) { return; }\n  let size = ${u(1)};\n  let inner = ${u(2)};\n  let count = ${u(3)};\n` +
    `  let o = i / (size * inner);\n  let rest = i - o * size * inner;\n  let s = rest / inner;\n  let k = rest - s * inner;\n` +
    `  var acc : f32 = 0.0;\n  for (var j = 0u; j < count; j++) {\n    if (a1[j] == f32(s)) { acc += a0[(o * count + j) * inner + k]; }\n  }\n  out0[i] = acc;\n}\n`;
  return { name: 'scatterAdd', key: 'scatterAdd', code, inputs: 2, outputs: 1, params, workgroups: groups1d(Math.ceil(total / WG)) };
}

// ---------------------------------------------------------------------------------------------
// Fused elementwise groups (the description the jit hands every lowering; see the CPU one in kern's wasm-fusion)

// The reads and nodes are those of the CPU lowering's groups (wasm-fusion.ts); a WGSL group has no summed outputs.
export type { FusedNode, FusedRead };

export interface FusedGroup {
  readonly shape: readonly number[];
  readonly reads: readonly FusedRead[];
  readonly nodes: readonly FusedNode[];
  /** Node ids written out, each contiguous row-major over `shape`. */
  readonly outputs: readonly number[];
}

/** Merge adjacent dims that every read walks contiguously (outputs are contiguous); drop size-1 dims. */
export function coalesceDims(shape: readonly number[], reads: readonly FusedRead[]): { dims: number[]; strides: number[][] } {
  const dims: number[] = [];
  const strides: number[][] = reads.map(() => []);
  for (let d = 0; d < shape.length; d++) {
    if (shape[d] === 1) continue;
    const last = dims.length - 1;
    if (last >= 0 && reads.every((r, k) => strides[k][last] === r.strides[d] * shape[d])) {
      dims[last] *= shape[d];
      reads.forEach((r, k) => (strides[k][last] = r.strides[d]));
    } else {
      dims.push(shape[d]);
      reads.forEach((r, k) => strides[k].push(r.strides[d]));
    }
  }
  return { dims, strides };
}

/**
 * A fused group as one map kernel: every node a `let`, every output a store. `inPlace` (read k ->
 * output j): read k is output j's buffer, updated in place (mapKernel's inPlace; the read must be the
 * identity over the group's shape); `shared` (read k -> read k'): read k reads read k''s buffer at its own strides (mapKernel's shared).
 */
export function fusedKernel(name: string, g: FusedGroup, inPlace?: ReadonlyMap<number, number>, shared?: ReadonlyMap<number, number>): WgslKernel {
  const { dims, strides } = coalesceDims(g.shape, g.reads);
  const lets = g.nodes.map((n, i) => {
    if (n.op === 'input') {
      const input = (n as { input: number }).input;
      if (!(input >= 0 && input < g.reads.length)) throw new BackendError(`fused group '${name}': node ${i} reads input ${input} of ${g.reads.length}`);
      return `n${i} = x${input}`;
    }
    if (n.op === 'const') return `n${i} = ${(n as { value: number }).value}`;
    const { args, expr } = n as { args: readonly number[]; expr: string };
    const names: Record<string, string> = {};
    args.forEach((a, k) => {
      if (!(a >= 0 && a < i)) throw new BackendError(`fused group '${name}': node ${i} (${n.op}) uses node ${a}, not an earlier one`);
      names[`x${k}`] = `n${a}`;
    });
    return `n${i} = ${renameExpr(expr, names)}`;
  });
  for (const [k] of inPlace ?? []) {
    if (!isIdentityRead(g.shape, g.reads[k])) throw new BackendError(`fused group '${name}': read ${k} is updated in place, but it is not read at the output's own index`);
  }
  return mapKernel({ name, dims, strides, offsets: g.reads.map((r) => r.offset), lets, outputs: g.outputs.map((o) => `n${o}`), inPlace, shared });
}

/** Whether a read visits element i at coordinate i of `shape` (contiguous row-major, offset 0). */
export function isIdentityRead(shape: readonly number[], r: FusedRead): boolean {
  if (r.offset !== 0) return false;
  let size = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    if (shape[d] !== 1 && r.strides[d] !== size) return false;
    size *= shape[d];
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// Layout ops with data-dependent branches: concat and embed (pad, slice gradients)

/**
 * Concatenation along an axis, as blocks: output row o (of `row` values) is input 0's block o
 * (blocks[0] values), then input 1's block o, ... (ops.ts concat).
 */
export function concatKernel(blocks: readonly number[], row: number, total: number): WgslKernel {
  const n = blocks.length;
  const starts = blocks.map((_, k) => blocks.slice(0, k).reduce((a, b) => a + b, 0));
  const { decl, params } = uniformBlock([total, row, ...blocks, ...starts]);
  let body = `  let i = ${flat};\n  if (i >= ${u(0)}) { return; }\n  let o = i / ${u(1)};\n  let w = i - o * ${u(1)};\n  var v : f32 = 0.0;\n`;
  for (let k = 0; k < n; k++) {
    const read = `a${k}[o * ${u(2 + k)} + w - ${u(2 + n + k)}]`;
    body += k === 0 ? `  if (w < ${u(2 + n + 1)}) { v = ${read}; }\n` : k < n - 1 ? `  else if (w < ${u(2 + n + k + 1)}) { v = ${read}; }\n` : `  else { v = ${read}; }\n`;
  }
  body += '  out0[i] = v;\n';
  const code = `${decl}${bindings(n, 1)}${uniformBinding(n + 1)}@compute @workgroup_size(${WG})\nfn main(${FLAT_INDEX}) {\n${body}}\n`;
  return { name: 'concat', key: `concat|${n}`, code, inputs: n, outputs: 1, params, workgroups: groups1d(Math.ceil(total / WG)) };
}

/**
 * The input placed in a larger output at `start` with `step` along each axis, `fill` elsewhere (ops.ts
 * embed: padding, and the gradients of slices and strided slices).
 */
export function embedKernel(inShape: readonly number[], outShape: readonly number[], start: readonly number[], step: readonly number[], fill: number): WgslKernel {
  const rank = outShape.length;
  const total = outShape.reduce((a, b) => a * b, 1);
  const inStrides = inShape.map((_, d) => inShape.slice(d + 1).reduce((a, b) => a * b, 1));
  const { decl, params } = uniformBlock([total, f32Bits(fill), ...outShape, ...start, ...step, ...inShape, ...inStrides]);
  const at = (what: number, d: number) => u(2 + what * rank + d);
  let body = `  let i = ${flat};\n  if (i >= ${u(0)}) { return; }\n  var r = i;\n  var off = 0u;\n  var inside = true;\n`;
  for (let d = rank - 1; d >= 0; d--) {
    body += `  {\n    let c = i32(r % ${at(0, d)});\n    r = r / ${at(0, d)};\n    let v = c - i32(${at(1, d)});\n    let st = i32(${at(2, d)});\n` +
      `    let q = select(0, v / st, v >= 0);\n    if (v < 0 || q >= i32(${at(3, d)}) || v - q * st != 0) { inside = false; }\n    off += u32(q) * ${at(4, d)};\n  }\n`;
  }
  body += `  var x : f32 = bitcast<f32>(${u(1)});\n  if (inside) { x = a0[off]; }\n  out0[i] = x;\n`;
  const code = `${decl}${bindings(1, 1)}${uniformBinding(2)}@compute @workgroup_size(${WG})\nfn main(${FLAT_INDEX}) {\n${body}}\n`;
  return { name: 'embed', key: `embed|${rank}`, code, inputs: 1, outputs: 1, params, workgroups: groups1d(Math.ceil(total / WG)) };
}

/** A map description from fused.ts-style statements (`const u = ...;` lines) plus a result expression. */
export function mapFromStatements(name: string, total: number, inputs: number, block: string, result: string): MapDescription {
  return {
    name,
    dims: [total],
    strides: Array.from({ length: inputs }, () => [1]),
    offsets: new Array(inputs).fill(0),
    lets: splitStatements(block),
    outputs: [result],
  };
}
