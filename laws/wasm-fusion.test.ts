/**
 * Laws of the fused elementwise groups (src/backend/wasm-fusion.ts): a random expression DAG over
 * broadcast, permuted and offset reads, with plain and summed outputs, evaluated as one fused pass
 * equals the same ops applied one by one in eager mode (the reference).
 *
 * - Host loop (fallback): every node rounded to float32 like each eager op's output, so it gives the
 *   bits of eager's host loops exactly; sums agree to float64 rounding (a different summation order),
 *   1e-6 of sum|terms|.
 * - Wasm SIMD: bit-identical to eager with its default wasm fast paths (the same per-op forms), and to
 *   eager's host loops for the ops that are exactly rounded in float32 (arithmetic, sqrt, min/max,
 *   comparisons, where, neg/abs/relu/sign); exp, log, tanh, erf and rsqrt are within a few float32 ulps
 *   of the host loops' Math.* results, so DAGs containing them are compared with a tolerance that grows
 *   with the number of such nodes.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fc from 'fast-check';
import { withBackend } from '../src/backend/backend.ts';
import { compileFused, WASM_ELEMENTWISE, type FusedGroup, type FusedNode, type FusedOutput } from '../src/backend/wasm-fusion.ts';
import { kernelMemoryBytes as kernelBytes, setWasmKernels } from '../src/backend/wasm-memory.ts';
import * as R from '../src/index.ts';
import type { Tensor } from '../src/index.ts';
import { BINARY, UNARY } from '../src/tensor/ops.ts';
import { assertProperty, rng, seedArb, sizeOf, uniform } from './helpers.ts';

const EXACT_UNARY = ['neg', 'abs', 'sqrt', 'relu', 'sign'] as const;
const APPROX_UNARY = ['exp', 'log', 'tanh', 'erf', 'rsqrt'] as const;
const BINARIES = ['add', 'sub', 'mul', 'div', 'maximum', 'minimum', 'greater', 'greaterEqual', 'less', 'lessEqual', 'equal', 'notEqual'] as const;
type NodeOp = (typeof EXACT_UNARY)[number] | (typeof APPROX_UNARY)[number] | (typeof BINARIES)[number] | 'where';

const exprOf = (op: NodeOp): string => (op === 'where' ? '(x0 != 0 ? x1 : x2)' : (UNARY as Record<string, { elementwise?: { expr: (a: void) => string } }>)[op]?.elementwise?.expr() ?? (BINARY as Record<string, { elementwise?: { expr: (a: void) => string } }>)[op].elementwise!.expr());

interface InputSpec {
  /** The input's own shape: the group shape with some dims 1 (broadcast). */
  shape: number[];
  /** Storage order: the data is laid out as permute(shape, perm). */
  perm: number[];
  /** Elements before the data in its buffer. */
  pad: number;
}

interface Case {
  shape: number[];
  inputs: InputSpec[];
  nodes: ({ op: 'input'; input: number } | { op: 'const'; value: number } | { op: NodeOp; args: number[] })[];
  outputs: { node: number; sumAxes: number[] | null }[];
  seed: number;
}

function caseArb(ops: readonly NodeOp[]): fc.Arbitrary<Case> {
  const shapeArb = fc.oneof(
    { weight: 6, arbitrary: fc.array(fc.integer({ min: 1, max: 7 }), { minLength: 0, maxLength: 4 }) },
    // Long rows: several staging chunks along the outer dim, remainders in the inner one.
    { weight: 1, arbitrary: fc.constantFrom([20003], [3, 9001], [5, 2, 2051]).map((s) => [...s]) },
  );
  return shapeArb.chain((shape) => {
    const rank = shape.length;
    const input = fc.record({
      ones: fc.array(fc.boolean(), { minLength: rank, maxLength: rank }),
      perm: fc.shuffledSubarray([...Array(rank).keys()], { minLength: rank, maxLength: rank }),
      pad: fc.integer({ min: 0, max: 3 }),
    }).map(({ ones, perm, pad }) => ({ shape: shape.map((d, i) => (ones[i] ? 1 : d)), perm, pad }));
    return fc.record({
      inputs: fc.array(input, { minLength: 1, maxLength: 3 }),
      ops: fc.array(fc.record({ op: fc.constantFrom(...ops), a: fc.nat(), b: fc.nat(), c: fc.nat() }), { minLength: 1, maxLength: 6 }),
      consts: fc.array(fc.constantFrom(0, 0.5, -1.5, 2, -0), { maxLength: 2 }),
      outs: fc.array(fc.record({ pick: fc.nat(), sum: fc.option(fc.array(fc.boolean(), { minLength: rank, maxLength: rank }), { nil: null }) }), { minLength: 1, maxLength: 3 }),
      seed: seedArb,
    }).map(({ inputs, ops: drawn, consts, outs, seed }) => {
      const nodes: Case['nodes'] = [
        ...inputs.map((_, k) => ({ op: 'input' as const, input: k })),
        ...consts.map((value) => ({ op: 'const' as const, value })),
      ];
      for (const { op, a, b, c } of drawn) {
        const n = nodes.length;
        const arity = op === 'where' ? 3 : (BINARIES as readonly string[]).includes(op) ? 2 : 1;
        nodes.push({ op, args: [a % n, b % n, c % n].slice(0, arity) });
      }
      const outputs = outs.map(({ pick, sum }) => ({
        node: nodes.length - 1 - (pick % Math.min(3, nodes.length)),
        sumAxes: sum === null ? null : sum.flatMap((on, i) => (on ? [i] : [])),
      }));
      return { shape, inputs, nodes, outputs, seed };
    });
  });
}

/** Input k's buffer and its read description. */
function layout(c: Case, k: number): { data: Float32Array; read: { strides: number[]; offset: number } } {
  const { shape, perm, pad } = c.inputs[k];
  const stored = perm.map((d) => shape[d]);
  const n = sizeOf(shape);
  // log/sqrt/rsqrt see negative values too: NaN must agree as well.
  const data = new Float32Array(pad + n + 2);
  data.set(uniform(n, c.seed + 31 * k, -2, 2), pad);
  const storedStrides = stored.map((_, i) => sizeOf(stored.slice(i + 1)));
  const strides = shape.map((d, i) => (d === 1 ? 0 : storedStrides[perm.indexOf(i)]));
  return { data, read: { strides, offset: pad } };
}

function toGroup(c: Case, reads: FusedGroup['reads']): FusedGroup {
  const nodes: FusedNode[] = c.nodes.map((n) => (n.op === 'input' || n.op === 'const' ? n : { op: n.op, args: n.args, expr: exprOf(n.op) }));
  const outputs: FusedOutput[] = c.outputs.map((o) => (o.sumAxes === null ? o.node : { node: o.node, sumAxes: o.sumAxes }));
  return { shape: c.shape, reads, nodes, outputs };
}

/**
 * The reference: each node as an eager op on the webasm backend, outputs broadcast/summed. `wasm`: the
 * eager fast paths run the wasm kernels (as by default) or the TypeScript host loops.
 */
function eager(c: Case, buffers: readonly Float32Array[], wasm: boolean): Float32Array[] {
  const previous = setWasmKernels(wasm);
  try {
    return eagerOps(c, buffers);
  } finally {
    setWasmKernels(previous);
  }
}

function eagerOps(c: Case, buffers: readonly Float32Array[]): Float32Array[] {
  return withBackend('webasm', () => {
    const values: (Tensor | number)[] = [];
    for (const n of c.nodes) {
      if (n.op === 'input') {
        const { shape, perm, pad } = c.inputs[n.input];
        const stored = R.tensor(buffers[n.input].slice(pad, pad + sizeOf(shape)), perm.map((d) => shape[d]));
        values.push(R.permute(stored, perm.map((_, i) => perm.indexOf(i))));
      } else if (n.op === 'const') values.push(n.value);
      else {
        const xs = n.args.map((a) => values[a]);
        const t = (v: Tensor | number) => (typeof v === 'number' ? R.scalar(v) : v);
        if (n.op === 'where') values.push(R.where(t(xs[0]), t(xs[1]), t(xs[2])));
        else if ((BINARIES as readonly string[]).includes(n.op)) values.push((R as unknown as Record<string, (a: Tensor, b: Tensor) => Tensor>)[n.op](t(xs[0]), t(xs[1])));
        else values.push((R as unknown as Record<string, (a: Tensor) => Tensor>)[n.op](t(xs[0])));
      }
    }
    return c.outputs.map(({ node, sumAxes }) => {
      const v = values[node];
      const full = R.broadcastTo(typeof v === 'number' ? R.scalar(v) : v, c.shape);
      return Float32Array.from((sumAxes === null ? full : R.sum(full, sumAxes)).dataSync());
    });
  });
}

function fused(c: Case, wasm: boolean): { outs: Float32Array[]; buffers: Float32Array[] } {
  const lay = c.inputs.map((_, k) => layout(c, k));
  const fn = compileFused(toGroup(c, lay.map((l) => l.read)));
  const outs = c.outputs.map((o) => new Float32Array(sizeOf(o.sumAxes === null ? c.shape : c.shape.filter((_, a) => !o.sumAxes!.includes(a)))));
  const previous = setWasmKernels(wasm);
  try {
    fn(lay.map((l) => l.data), outs);
  } finally {
    setWasmKernels(previous);
  }
  return { outs, buffers: lay.map((l) => l.data) };
}

/** Sum of |terms| of a summed output, from the eager node value (the scale of its rounding error). */
function compare(got: Float32Array[], want: Float32Array[], c: Case, rel: number, what: string): void {
  got.forEach((g, k) => {
    const w = want[k];
    assert.is(g.length, w.length, `${what}: output ${k} length`);
    const summed = c.outputs[k].sumAxes !== null;
    const terms = summed ? sizeOf(c.shape) / Math.max(1, w.length) : 1;
    let scale = 0;
    for (let i = 0; i < w.length; i++) if (Number.isFinite(w[i])) scale = Math.max(scale, Math.abs(w[i]));
    for (let i = 0; i < g.length; i++) {
      if (Object.is(g[i], w[i]) || (Number.isNaN(g[i]) && Number.isNaN(w[i]))) continue;
      const tol = rel * Math.abs(w[i]) + (summed ? 1e-6 * terms * Math.max(1, scale) : 0);
      if (!(Math.abs(g[i] - w[i]) <= tol) || (rel === 0 && !summed && !(g[i] === w[i]))) {
        throw new Error(`${what}: output ${k} (${summed ? `sum over ${c.outputs[k].sumAxes}` : 'plain'}) element ${i}: ${g[i]} vs eager ${w[i]} (tol ${tol})`);
      }
    }
  });
}

const EXACT_OPS: readonly NodeOp[] = [...EXACT_UNARY, ...BINARIES, 'where'];
const ALL_OPS: readonly NodeOp[] = [...EXACT_OPS, ...APPROX_UNARY];

test('fused groups, host loop: equal to the unfused eager ops on host loops (bits; sums to float64 rounding)', () => {
  assertProperty(
    fc.property(caseArb(ALL_OPS), (c) => {
      const { outs, buffers } = fused(c, false);
      compare(outs, eager(c, buffers, false), c, 0, 'host loop');
    }),
    { numRuns: 60 },
  );
});

test('fused groups, wasm SIMD: bit-identical to the unfused eager ops (which take the same wasm forms)', () => {
  assertProperty(
    fc.property(caseArb(ALL_OPS), (c) => {
      const { outs, buffers } = fused(c, true);
      compare(outs, eager(c, buffers, true), c, 0, 'wasm');
    }),
    { numRuns: 80 },
  );
});

test('fused groups, wasm SIMD: bit-identical to eager host loops for exactly rounded ops', () => {
  assertProperty(
    fc.property(caseArb(EXACT_OPS), (c) => {
      const { outs, buffers } = fused(c, true);
      compare(outs, eager(c, buffers, false), c, 0, 'wasm');
    }),
    { numRuns: 40 },
  );
});

test('fused groups, wasm SIMD with exp/log/tanh/erf/rsqrt: within a few float32 ulps per transcendental node of Math.* (eager host loops)', () => {
  assertProperty(
    fc.property(caseArb(ALL_OPS), (c) => {
      const { outs, buffers } = fused(c, true);
      const approx = c.nodes.filter((n) => (APPROX_UNARY as readonly string[]).includes(n.op)).length;
      // 2 ulps (2.4e-7) per approximate node, amplified at most ~4x through the following exact ops
      // (inputs are O(1)); comparisons of such values can flip, so those cases are skipped.
      if (approx > 0 && c.nodes.some((n) => ['greater', 'greaterEqual', 'less', 'lessEqual', 'equal', 'notEqual', 'where', 'sign', 'relu', 'maximum', 'minimum'].includes(n.op))) return;
      compare(outs, eager(c, buffers, false), c, 1e-6 * Math.max(1, approx) * 4, 'wasm');
    }),
    { numRuns: 80 },
  );
});

test('the wasm forms are bound to the registry\'s expressions (a changed expression falls back, never computes the old op)', () => {
  for (const [name, { expr }] of Object.entries(WASM_ELEMENTWISE)) {
    if (name === 'where') continue;
    const prim = (UNARY as Record<string, { elementwise?: { expr: (a: void) => string } }>)[name] ?? (BINARY as Record<string, { elementwise?: { expr: (a: void) => string } }>)[name];
    assert.ok(prim !== undefined, `${name} is a registry primitive`);
    assert.is(prim.elementwise!.expr(), expr, `${name}'s expression`);
  }
  // A node whose expression differs from the known one runs the host loop (the result follows expr).
  const x = Float32Array.from([1, 2, 3, 4, 5]);
  const out = new Float32Array(5);
  compileFused({ shape: [5], reads: [{ strides: [1], offset: 0 }], nodes: [{ op: 'input', input: 0 }, { op: 'add', args: [0, 0], expr: 'x0 * x1' }], outputs: [1] })([x], [out]);
  assert.equal(Array.from(out), [1, 4, 9, 16, 25]);
});

test('fused groups: bad descriptions and buffers are typed errors naming the problem', () => {
  const ok = { shape: [3], reads: [{ strides: [1], offset: 0 }], nodes: [{ op: 'input', input: 0 }] as FusedNode[], outputs: [0] };
  assert.throws(() => compileFused({ ...ok, nodes: [{ op: 'input', input: 1 }] }), /node 0 reads input 1/);
  assert.throws(() => compileFused({ ...ok, nodes: [{ op: 'input', input: 0 }, { op: 'neg', args: [1], expr: '-x0' }] }), /earlier node/);
  assert.throws(() => compileFused({ ...ok, outputs: [{ node: 0, sumAxes: [1] }] }), /sumAxes/);
  assert.throws(() => compileFused(ok)([new Float32Array(2)], [new Float32Array(3)]), /input 0 \(2 elements\) is read at elements 0..2/);
  assert.throws(() => compileFused(ok)([new Float32Array(3)], [new Float32Array(4)]), /output 0 has 4 elements, expected 3/);
});

test('fused groups: the shared wasm memory does not grow after the first call of a size', () => {
  const r = rng(1);
  const n = 50000;
  const x = Float32Array.from({ length: n }, () => r());
  const fn = compileFused({ shape: [n], reads: [{ strides: [1], offset: 0 }], nodes: [{ op: 'input', input: 0 }, { op: 'exp', args: [0], expr: 'Math.exp(x0)' }], outputs: [1, { node: 1, sumAxes: [0] }] });
  const outs = [new Float32Array(n), new Float32Array(1)];
  fn([x], outs);
  const before = kernelBytes();
  for (let i = 0; i < 20; i++) fn([x], outs);
  assert.is(kernelBytes(), before);
});

test.run();
