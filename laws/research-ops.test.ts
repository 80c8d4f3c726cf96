/**
 * The ops a researcher reaches for (issue 11 item 7) against independent float64 references and at the
 * edges where naive forms fail. Their finite-difference, Taylor, linearity, cross-mode and backend laws run
 * with every other op through OP_CASES (laws/helpers.ts); here:
 *  - sigmoid, softplus, logSumExp stay finite and accurate at ±1000 and in the far tails (relative error
 *    against float64 values), with finite gradients there;
 *  - sin, cos, cumsum, argmax/argmin, oneHot, clip, min match float64 references in every mode;
 *  - einsum matches a float64 reference that loops over every letter assignment, for generated specs;
 *  - bad arguments raise typed errors naming the op and the problem.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fc from 'fast-check';
import { withBackend } from '../src/backend/backend.ts';
import * as R from '../src/index.ts';
import type { Tensor } from '../src/index.ts';
import { assertProperty, axisArb, BACKENDS, dimArb, distinct, maxAbs, MODES, OP_CASES, seedArb, shapeArb, sizeOf, uniform } from './helpers.ts';

/** |got - want| <= rtol |want| + atol elementwise (want in float64). */
function near(got: Tensor, want: ArrayLike<number>, rtol: number, atol: number, what: string): void {
  const a = got.dataSync();
  assert.is(a.length, want.length, `${what}: length`);
  for (let i = 0; i < a.length; i++) {
    const ok = Math.abs(a[i] - want[i]) <= rtol * Math.abs(want[i]) + atol || (Number.isNaN(a[i]) && Number.isNaN(want[i])) || a[i] === want[i];
    if (!ok) throw new Error(`${what}: element ${i}: ${a[i]} vs ${want[i]}`);
  }
}

const EXTREMES = [-1000, -100, -88, -30, -17, -10, -1, -1e-3, 0, 1e-3, 1, 10, 17, 30, 88, 100, 1000];
const sigmoid64 = (x: number) => (x >= 0 ? 1 / (1 + Math.exp(-x)) : Math.exp(x) / (1 + Math.exp(x)));
const softplus64 = (x: number) => Math.max(x, 0) + Math.log1p(Math.exp(-Math.abs(x)));

test('sigmoid and softplus: float32-accurate values and finite, accurate gradients from -1000 to 1000', () => {
  for (const mode of MODES) {
    mode.run(() => {
      const x = R.tensor(EXTREMES);
      // A few ulps relative, also in the tails where the result is ~1e-13 (naive forms give 0 or NaN there).
      near(R.sigmoid(x), EXTREMES.map(sigmoid64), 4e-7, 1e-38, `${mode.name} sigmoid`);
      near(R.softplus(x), EXTREMES.map(softplus64), 4e-7, 1e-38, `${mode.name} softplus`);
      const gs = R.grad((t: Tensor) => R.sum(R.sigmoid(t)))(x);
      near(gs, EXTREMES.map((v) => sigmoid64(v) * sigmoid64(-v)), 1e-6, 1e-38, `${mode.name} sigmoid'`);
      const gp = R.grad((t: Tensor) => R.sum(R.softplus(t)))(x);
      near(gp, EXTREMES.map(sigmoid64), 1e-6, 1e-38, `${mode.name} softplus'`);
    });
  }
});

test('logSumExp: shifted by the max (no overflow at 1000, no underflow at -1000), -Infinity rows and empty axes as in PyTorch', () => {
  for (const mode of MODES) {
    mode.run(() => {
      const x = R.tensor([[1000, 1000, 999], [-1000, -1001, -1000], [0, 1, 2]]);
      const ref = [[1000, 1000, 999], [-1000, -1001, -1000], [0, 1, 2]].map((r) => {
        const m = Math.max(...r);
        return m + Math.log(r.reduce((s, v) => s + Math.exp(v - m), 0));
      });
      near(R.logSumExp(x, 1), ref, 2e-7, 1e-6, `${mode.name} rows`);
      assert.equal(R.logSumExp(x, 1, true).shape, [3, 1]);
      // Gradient = softmax of the row.
      const g = R.grad((t: Tensor) => R.sum(R.logSumExp(t, -1)))(x);
      near(g, R.softmax(x, -1).dataSync(), 1e-6, 1e-7, `${mode.name} gradient`);
      const ninf = R.logSumExp(R.tensor([[-Infinity, -Infinity], [0, -Infinity]]), -1);
      assert.equal(Array.from(ninf.dataSync()), [-Infinity, 0], `${mode.name} -Infinity rows`);
      const empty = R.logSumExp(R.zeros([2, 0]), 1);
      assert.equal([...empty.shape], [2]);
      assert.equal(Array.from(empty.dataSync()), [-Infinity, -Infinity]);
    });
  }
});

test('sin, cos, cumsum, argmax, argmin, min, clip and oneHot match float64 references in every mode', () => {
  assertProperty(
    fc.property(shapeArb(1, 4).chain((shape) => fc.record({ shape: fc.constant(shape), axis: axisArb(shape.length), seed: seedArb })), ({ shape, axis, seed }) => {
      const vals = Array.from(distinct(sizeOf(shape), seed));
      const ax = axis < 0 ? axis + shape.length : axis;
      const n = shape[ax];
      const inner = sizeOf(shape.slice(ax + 1));
      const outer = sizeOf(shape.slice(0, ax));
      const lane = (o: number, i: number) => Array.from({ length: n }, (_, k) => vals[o * n * inner + k * inner + i]);
      const cum: number[] = new Array(vals.length);
      const arg: number[] = [];
      const argLo: number[] = [];
      const mins: number[] = [];
      for (let o = 0; o < outer; o++) {
        for (let i = 0; i < inner; i++) {
          const l = lane(o, i);
          let s = 0;
          l.forEach((v, k) => (cum[o * n * inner + k * inner + i] = s += v));
          arg.push(l.indexOf(Math.max(...l)));
          argLo.push(l.indexOf(Math.min(...l)));
          mins.push(Math.min(...l));
        }
      }
      for (const mode of MODES) {
        mode.run(() => {
          const x = R.tensor(vals, shape);
          near(R.sin(x), vals.map(Math.sin), 2e-6, 2e-7, `${mode.name} sin`);
          near(R.cos(x), vals.map(Math.cos), 2e-6, 2e-7, `${mode.name} cos`);
          near(R.cumsum(x, axis), cum, 1e-5, 1e-5 * maxAbs(vals), `${mode.name} cumsum`);
          assert.equal(Array.from(R.argmax(x, axis).dataSync()), arg, `${mode.name} argmax`);
          assert.equal(Array.from(R.argmin(x, axis).dataSync()), argLo, `${mode.name} argmin`);
          near(R.min(x, axis), mins, 0, 0, `${mode.name} min`);
          near(R.clip(x, -0.3, 0.4), vals.map((v) => Math.min(Math.max(v, -0.3), 0.4)), 1e-7, 0, `${mode.name} clip`);
          const oh = R.oneHot(R.argmax(x, axis), n).dataSync();
          arg.forEach((a, r) => assert.equal(Array.from(oh.subarray(r * n, (r + 1) * n)), Array.from({ length: n }, (_, k) => (k === a ? 1 : 0)), `${mode.name} oneHot row ${r}`));
        });
      }
    }),
    { numRuns: 20 },
  );
});

test('cumsum: exclusive and reverse variants, and its gradient is the reverse cumsum', () => {
  for (const backend of BACKENDS) {
    withBackend(backend, () => {
      const x = R.tensor([[1, 2, 3, 4]]);
      assert.equal(Array.from(R.cumsum(x, 1).dataSync()), [1, 3, 6, 10]);
      assert.equal(Array.from(R.cumsum(x, 1, { exclusive: true }).dataSync()), [0, 1, 3, 6]);
      assert.equal(Array.from(R.cumsum(x, 1, { reverse: true }).dataSync()), [10, 9, 7, 4]);
      assert.equal(Array.from(R.cumsum(x, 1, { reverse: true, exclusive: true }).dataSync()), [9, 7, 4, 0]);
      assert.equal(Array.from(R.cumsum(x, 0).dataSync()), [1, 2, 3, 4]);
      const w = R.tensor([[1, 10, 100, 1000]]);
      const g = R.grad((t: Tensor) => R.sum(R.mul(R.cumsum(t, -1), w)))(x);
      assert.equal(Array.from(g.dataSync()), [1111, 1110, 1100, 1000]);
    });
  }
});

test('argmax/argmin: the first of tied extremes (PyTorch, NumPy), flattened without an axis, keepdims, no gradient', () => {
  for (const mode of MODES) {
    mode.run(() => {
      const x = R.tensor([[3, 1, 3], [0, 0, -1]]);
      assert.equal(Array.from(R.argmax(x, 1).dataSync()), [0, 0], mode.name);
      assert.equal(Array.from(R.argmin(x, 1).dataSync()), [1, 2], mode.name);
      assert.equal(Array.from(R.argmax(x, 0).dataSync()), [0, 0, 0], mode.name);
      assert.equal(Array.from(R.argmin(x).dataSync()), [5], mode.name);
      assert.equal(R.argmax(x).shape, []);
      assert.equal(R.argmax(x, 1, true).shape, [2, 1]);
      assert.equal(R.argmax(x, undefined, true).shape, [1, 1]);
    });
  }
  // The host loops and the cpu kernels also put NaN first (as torch.argmax).
  for (const mode of [MODES[0], MODES[2]]) {
    mode.run(() => assert.equal(Array.from(R.argmax(R.tensor([1, NaN, 5, NaN]), 0).dataSync()), [1], mode.name));
  }
  const g = R.grad((t: Tensor) => R.sum(R.mul(R.argmax(t, 0), t)))(R.tensor([1, 5, 2]));
  assert.equal(Array.from(g.dataSync()), [1, 1, 1], 'argmax is a constant to autodiff: d/dt sum(argmax(t) * t) = argmax(t)');
});

test('clip: bounds included in the gradient (as torch.clamp), one-sided, tensor bounds get the gradient where they win, lo > hi gives hi', () => {
  const x = R.tensor([-2, -1, 0, 1, 2]);
  const g = R.grad((t: Tensor) => R.sum(R.clip(t, -1, 1)))(x);
  assert.equal(Array.from(g.dataSync()), [0, 1, 1, 1, 0]);
  assert.equal(Array.from(R.clip(x, null, 0).dataSync()), [-2, -1, 0, 0, 0]);
  assert.equal(Array.from(R.clip(x, 0.5, null).dataSync()), [0.5, 0.5, 0.5, 1, 2]);
  assert.equal(Array.from(R.clip(x, 1, -1).dataSync()), [-1, -1, -1, -1, -1]);
  const lo = R.tensor([0, 0, 0, 0, 0]);
  const [gx, glo] = R.grad((t: Tensor, l: Tensor) => R.sum(R.clip(t, l, 1)), [0, 1])(x, lo);
  assert.equal(Array.from(gx.dataSync()), [0, 0, 1, 1, 0]);
  assert.equal(Array.from(glo.dataSync()), [1, 1, 0, 0, 0]);
});

// --- einsum ------------------------------------------------------------------------------------

/** float64 einsum by brute force over every assignment of the letters (no ellipsis). */
function einsum64(spec: string, xs: { data: ArrayLike<number>; shape: number[] }[]): { data: number[]; shape: number[] } {
  const [lhs, rhs] = spec.split('->');
  const terms = lhs.split(',');
  const size = new Map<string, number>();
  terms.forEach((t, i) => [...t].forEach((l, a) => size.set(l, xs[i].shape[a])));
  const out = rhs ?? [...new Set(terms.join(''))].filter((l) => terms.join('').split(l).length === 2).sort().join('');
  const letters = [...size.keys()];
  const outShape = [...out].map((l) => size.get(l)!);
  const data = new Array<number>(sizeOf(outShape)).fill(0);
  const offset = (term: string, shape: number[], at: Map<string, number>) => [...term].reduce((o, l, a) => o * shape[a] + at.get(l)!, 0);
  const walk = (k: number, at: Map<string, number>): void => {
    if (k === letters.length) {
      const prod = terms.reduce((p, t, i) => p * xs[i].data[offset(t, xs[i].shape, at)], 1);
      data[offset(out, outShape, at)] += prod;
      return;
    }
    for (let v = 0; v < size.get(letters[k])!; v++) walk(k + 1, new Map(at).set(letters[k], v));
  };
  walk(0, new Map());
  return { data, shape: outShape };
}

const EINSUM_REF_SPECS = ['ij,jk->ik', 'bij,bjk->bik', 'ij->ji', 'ijk->kj', 'ijk->', 'ij->i', 'i,i->', 'i,j->ij', 'ij,j->i', 'ij,jk', 'bhqd,bhkd->bhqk', 'ij,jk,kl->il', 'ijk,ikl->jl', 'ab,cb->ca', 'ij,kj->', 'ij,ij->ij', 'ijk,jk->ki'];

test('einsum matches a float64 brute-force reference, in every mode', () => {
  assertProperty(
    fc.property(fc.constantFrom(...EINSUM_REF_SPECS), fc.record(Object.fromEntries([...'abcdhijklq'].map((l) => [l, dimArb])) as Record<string, fc.Arbitrary<number>>), seedArb, (spec, sizes, seed) => {
      const shapes = spec.split('->')[0].split(',').map((t) => [...t].map((l) => sizes[l]));
      const datas = shapes.map((s, i) => uniform(sizeOf(s), seed + i));
      const want = einsum64(spec, shapes.map((shape, i) => ({ data: datas[i], shape })));
      for (const mode of MODES) {
        mode.run(() => {
          const got = R.einsum(spec, ...shapes.map((s, i) => R.tensor(datas[i], s)));
          assert.equal([...got.shape], want.shape, `${mode.name} ${spec}: shape`);
          near(got, want.data, 1e-5, 1e-6 * (1 + maxAbs(want.data)), `${mode.name} ${spec}`);
        });
      }
    }),
    { numRuns: 40 },
  );
});

test('einsum with an ellipsis broadcasts the batch axes (as numpy)', () => {
  const a = R.tensor(uniform(2 * 1 * 3 * 4, 1), [2, 1, 3, 4]);
  const b = R.tensor(uniform(5 * 4 * 2, 2), [5, 4, 2]);
  const got = R.einsum('...ij,...jk->...ik', a, b);
  assert.equal([...got.shape], [2, 5, 3, 2]);
  const want = R.matmul(a, b);
  near(got, want.dataSync(), 1e-6, 1e-6, 'vs matmul with batch broadcasting');
  // Implicit output: ellipsis axes, then the letters used once, alphabetically.
  assert.equal([...R.einsum('...ij,jk', a, R.ones([4, 6])).shape], [2, 1, 3, 6]);
  assert.equal([...R.einsum('ba', R.ones([2, 3])).shape], [3, 2]);
});

test('einsum: typed errors for diagonals, unknown or repeated output letters, size mismatches, bad subscripts and operand counts', () => {
  const a = R.ones([2, 2]);
  const b = R.ones([3, 2]);
  const fails = (fn: () => unknown, kind: abstract new (...args: never[]) => Error, pattern: RegExp) =>
    assert.throws(fn, (e: unknown) => e instanceof kind && pattern.test((e as Error).message), String(pattern));
  fails(() => R.einsum('ii->i', a), R.ArgumentError, /einsum: operand 0 repeats 'i'.*diagonals/);
  fails(() => R.einsum('ij->k', a), R.ArgumentError, /output letter 'k' appears in no operand/);
  fails(() => R.einsum('ij->ii', a), R.ArgumentError, /repeats 'i'/);
  fails(() => R.einsum('ij,jk->ik', a, b), R.ShapeError, /'j' has size 2 in an earlier operand and 3 in operand 1/);
  fails(() => R.einsum('ijk->i', a), R.ShapeError, /operand 0 has shape \[2, 2\] \(rank 2\) but subscripts 'ijk' name 3 axes/);
  fails(() => R.einsum('i1->i', a), R.ArgumentError, /subscripts are letters/);
  fails(() => R.einsum('ij,jk->ik', a), R.ArgumentError, /names 2 operand\(s\), but 1 tensor\(s\) were given/);
  fails(() => R.einsum('ij->i->j', a), R.ArgumentError, /more than one '->'/);
});

test('the new ops raise typed errors for bad arguments', () => {
  const x = R.ones([2, 3]);
  const fails = (fn: () => unknown, pattern: RegExp) => assert.throws(fn, (e: unknown) => e instanceof R.RevgradError && pattern.test((e as Error).message), String(pattern));
  fails(() => R.cumsum(x, 2), /cumsum: axis 2/);
  fails(() => R.argmax(R.zeros([2, 0]), 1), /argmax: .*empty/);
  fails(() => R.min(R.zeros([0])), /min: .*empty/);
  fails(() => R.oneHot(R.tensor([0, 3]), 3), /oneHot: index 3 is not an integer in \[0, 3\)/);
  fails(() => R.oneHot(R.tensor([0.5]), 3), /oneHot: index 0.5/);
  fails(() => R.oneHot(R.tensor([0]), 0), /oneHot: numClasses must be a positive integer/);
  fails(() => R.clip(x, null, null), /clip: at least one of lo and hi/);
  fails(() => R.clip(x, NaN, 1), /clip: lo is NaN/);
  fails(() => R.sigmoid('x' as never), /sigmoid/);
});

test('every new op is in OP_CASES, so the finite-difference, Taylor, linearity, cross-mode, jvp/hvp and backend laws cover it', () => {
  const names = OP_CASES.map((e) => e.name);
  for (const n of ['sin', 'cos', 'sigmoid', 'softplus', 'logSumExp', 'min', 'clip (number bounds)', 'clip (tensor bounds)', 'cumsum', 'argmax', 'argmin', 'oneHot', 'einsum']) {
    assert.ok(names.includes(n), n);
  }
});

test.run();
