/**
 * Gradients at ties follow PyTorch (docs/api.md, "Ties"): a max or min reduction splits the cotangent
 * evenly among the tied extremes (torch.amax / torch.amin, and torch.max(x) / torch.min(x) without a
 * dim); maximum(a, b) and minimum(a, b) give each input half where a = b (torch.maximum / torch.minimum);
 * max pooling sends each window's cotangent to its first maximum (torch.nn.functional.max_pool3d).
 *
 * Checked two ways: against gradients PyTorch 1.13 computed (test/fixtures/ties-torch.json, made by
 * test/fixtures/make-ties.py), and, for generated tensors full of ties (the kit's `duplicates`), against
 * the convention written out here in float64.
 */
import { readFileSync } from 'node:fs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fc from 'fast-check';
import * as R from '../src/index.ts';
import type { Tensor } from '../src/index.ts';
import { arb } from '../src/laws/index.ts';
import { assertProperty, MODES } from './helpers.ts';

interface TorchCase {
  readonly name: string;
  readonly reduce?: 'max' | 'min';
  readonly axes?: number[] | null;
  readonly keepdims?: boolean;
  readonly binary?: 'maximum' | 'minimum';
  readonly pool?: { kernel: number[]; stride: number[]; padding: number[] };
  readonly inputs: unknown[];
  readonly shapes: number[][];
  readonly cotangent: unknown;
  readonly output: number[];
  readonly outputShape: number[];
  readonly grads: number[][];
}

const fixture = JSON.parse(readFileSync(new URL('../test/fixtures/ties-torch.json', import.meta.url), 'utf8')) as { torch: string; cases: TorchCase[] };

/** min as a reduction: the library's own when it has one, else -max(-x) (its documented equivalent). */
const minReduce = (x: Tensor, axes?: number | number[], keepdims = false): Tensor => {
  const own = (R as unknown as { min?: (x: Tensor, axes?: number | number[], keepdims?: boolean) => Tensor }).min;
  return own !== undefined ? own(x, axes, keepdims) : R.neg(R.max(R.neg(x), axes, keepdims));
};

const flat = (v: unknown): number[] => (Array.isArray(v) ? v.flatMap(flat) : [v as number]);

function apply(c: TorchCase, inputs: Tensor[]): Tensor {
  if (c.binary !== undefined) return R[c.binary](inputs[0], inputs[1]);
  if (c.pool !== undefined) return R.maxPool3d(inputs[0], c.pool.kernel, c.pool.stride, c.pool.padding);
  const axes = c.axes ?? undefined;
  return c.reduce === 'max' ? R.max(inputs[0], axes, c.keepdims) : minReduce(inputs[0], axes, c.keepdims);
}

test(`the fixture holds PyTorch's tie gradients (torch ${fixture.torch}) for every op`, () => {
  const kinds = new Set(fixture.cases.map((c) => c.binary ?? c.reduce ?? (c.pool ? 'maxPool3d' : undefined)));
  assert.equal([...kinds].sort(), ['max', 'maxPool3d', 'maximum', 'min', 'minimum']);
});

for (const c of fixture.cases) {
  test(`ties as PyTorch: ${c.name}`, () => {
    for (const mode of MODES) {
      mode.run(() => {
        const inputs = c.inputs.map((x, i) => R.tensor(flat(x), c.shapes[i]));
        const [out, pullback] = R.vjp((...xs: Tensor[]) => apply(c, xs), ...inputs);
        assert.equal([...out.shape], c.outputShape, `${mode.name}: output shape`);
        assert.equal(Array.from(out.dataSync()), c.output.map(Math.fround), `${mode.name}: output`);
        const grads = pullback(R.tensor(flat(c.cotangent), c.outputShape)) as Tensor[];
        grads.forEach((g, i) => {
          const got = Array.from(g.dataSync());
          c.grads[i].forEach((want, j) => assert.ok(Math.abs(got[j] - want) <= 1e-6 * Math.max(1, Math.abs(want)), `${mode.name}: gradient ${i}[${j}] = ${got[j]}, PyTorch ${want} (all: ${got})`));
        });
      });
    }
  });
}

// --- generated ties ------------------------------------------------------------------------------

/** float64 reference of the convention for a max/min reduction over `axes` (keepdims shape kept). */
function reductionGrad(x: Float32Array, shape: number[], axes: number[], g: Float32Array, kind: 'max' | 'min'): Float64Array {
  const strides = shape.map((_, d) => shape.slice(d + 1).reduce((a, b) => a * b, 1));
  const outIndex = (i: number) => {
    let o = 0;
    let os = 1;
    for (let d = shape.length - 1; d >= 0; d--) {
      const c = Math.floor(i / strides[d]) % shape[d];
      if (!axes.includes(d)) {
        o += c * os;
        os *= shape[d];
      }
    }
    return o;
  };
  const best = new Map<number, number>();
  const count = new Map<number, number>();
  x.forEach((v, i) => {
    const o = outIndex(i);
    const b = best.get(o);
    if (b === undefined || (kind === 'max' ? v > b : v < b)) {
      best.set(o, v);
      count.set(o, 1);
    } else if (v === b) count.set(o, count.get(o)! + 1);
  });
  return Float64Array.from(x, (v, i) => (v === best.get(outIndex(i)) ? g[outIndex(i)] / count.get(outIndex(i))! : 0));
}

test('max and min reductions over generated tensors with ties: the cotangent split evenly among tied extremes', () => {
  assertProperty(
    fc.property(
      arb.shape({ minRank: 1, maxRank: 3 }).chain((shape) =>
        fc.record({ x: arb.tensor({ shape, duplicates: true, min: -2, max: 2 }), axes: fc.subarray([...shape.keys()], { minLength: 1 }), g: arb.seed() }),
      ),
      fc.constantFrom<'max' | 'min'>('max', 'min'),
      ({ x, axes, g }, kind) => {
        const outShape = x.shape.map((d, i) => (axes.includes(i) ? 1 : d));
        const gs = Float32Array.from({ length: outShape.reduce((a, b) => a * b, 1) }, (_, i) => ((g + 7 * i) % 11) - 5);
        const want = reductionGrad(x.dataSync(), [...x.shape], axes, gs, kind);
        for (const mode of MODES) {
          const got = mode.run(() => {
            const [, pullback] = R.vjp((t: Tensor) => (kind === 'max' ? R.max(t, axes, true) : minReduce(t, axes, true)), x);
            return (pullback(R.tensor(gs, outShape))[0] as Tensor).dataSync();
          });
          want.forEach((w, i) => assert.ok(Math.abs(got[i] - w) <= 1e-6 * Math.max(1, Math.abs(w)), `${mode.name} ${kind} over ${axes} of ${x}: gradient[${i}] = ${got[i]}, convention ${w}`));
        }
      },
    ),
    { numRuns: 40 },
  );
});

test('maximum and minimum with broadcasting over generated ties: each input gets half where they are equal', () => {
  assertProperty(
    fc.property(arb.broadcastShapes(2), fc.constantFrom<'maximum' | 'minimum'>('maximum', 'minimum'), arb.seed(), (s, op, seed) => {
      // Values from {-1, 0, 1}: many ties between a and b.
      const ints = (shape: number[], k: number) => R.tensor(Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, (_, i) => ((seed * 31 + 7 * i + 13 * k) % 3) - 1), shape);
      const a = ints(s.shapes[0], 0);
      const b = ints(s.shapes[1], 1);
      const outSize = s.out.reduce((p, q) => p * q, 1);
      const g = Float32Array.from({ length: outSize }, (_, i) => i + 1);
      // Reference: broadcast both, share g by the convention, sum back over broadcast axes.
      const ab = R.broadcastTo(a, s.out).dataSync();
      const bb = R.broadcastTo(b, s.out).dataSync();
      const wins = (u: number, v: number) => (op === 'maximum' ? u > v : u < v);
      const ga = R.sumTo(R.tensor(Float32Array.from(g, (gi, i) => (wins(ab[i], bb[i]) ? gi : ab[i] === bb[i] ? gi / 2 : 0)), s.out), s.shapes[0]).dataSync();
      const gb = R.sumTo(R.tensor(Float32Array.from(g, (gi, i) => (wins(bb[i], ab[i]) ? gi : ab[i] === bb[i] ? gi / 2 : 0)), s.out), s.shapes[1]).dataSync();
      for (const mode of MODES) {
        const [gotA, gotB] = mode.run(() => {
          const [, pullback] = R.vjp((u: Tensor, v: Tensor) => R[op](u, v), a, b);
          return (pullback(R.tensor(g, s.out)) as Tensor[]).map((t) => Array.from(t.dataSync()));
        });
        assert.equal(gotA, Array.from(ga), `${mode.name} ${op}: gradient of a ${s.shapes[0]} vs b ${s.shapes[1]}`);
        assert.equal(gotB, Array.from(gb), `${mode.name} ${op}: gradient of b`);
      }
    }),
    { numRuns: 40 },
  );
});

test.run();
