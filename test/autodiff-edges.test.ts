/**
 * Example-based tests of the edges of src/autodiff (tape.ts, pytree.ts) that the laws do not reach:
 * the error paths (their class and exact message), pytree paths and what counts as a plain object,
 * fromNamed's list rule, and the tape's bookkeeping observable from outside (which custom rules run,
 * where a nested custom op is recorded, what the residuals are). Found by mutation testing (issue 18).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { throwsExactly } from '../laws/helpers.ts';
import {
  ArgumentError,
  AutodiffError,
  add,
  customVjp,
  exp,
  flattenWithPaths,
  fromNamed,
  grad,
  jvp,
  mul,
  ShapeError,
  sum,
  Tensor,
  tensor,
  toNamed,
  unflattenLike,
  vjp,
  zipTrees,
} from '../src/index.ts';

const values = (t: unknown): number[] => {
  assert.ok(t instanceof Tensor, 'a tensor');
  return Array.from(t.dataSync());
};
/** Runs `fn`, expecting it to throw exactly `cls` with exactly `message`. */

// --- pytree: paths and plain objects ----------------------------------------------------------------

test('flattenWithPaths: top-level keys and indices have no dot, nested ones are joined with dots', () => {
  const a = tensor([1]);
  const b = tensor([2]);
  const c = tensor([3]);
  const d = tensor([4]);
  const paths = flattenWithPaths({ a, n: { b, l: [c, { d }] } }).map(([p]) => p);
  assert.equal(paths, ['a', 'n.b', 'n.l.0', 'n.l.1.d']);
  assert.equal(flattenWithPaths([a, [b, { c }]]).map(([p]) => p), ['0', '1.0', '1.1.c']);
  assert.equal(flattenWithPaths({ x: [[a]] }).map(([p]) => p), ['x.0.0']);
  // The tensors themselves, in order.
  const ts = flattenWithPaths({ a, n: { b, l: [c, { d }] } }).map(([, t]) => t);
  assert.ok(ts[0] === a && ts[1] === b && ts[2] === c && ts[3] === d);
});

test('flattenWithPaths: undefined, null, numbers and strings are leaves that are skipped', () => {
  const t = tensor([1, 2]);
  const flat = flattenWithPaths({ u: undefined, n: null, k: 3, s: 'x', l: [undefined, t] });
  assert.equal(flat.map(([p]) => p), ['l.1']);
  assert.ok(flat[0][1] === t);
});

test('pytrees: an object with a null prototype is a node, a class instance is a leaf', () => {
  const w = tensor([1]);
  const v = tensor([2]);
  const bare = Object.create(null) as Record<string, unknown>;
  bare.w = w;
  assert.equal(flattenWithPaths({ p: bare }).map(([p]) => p), ['p.w']);
  const rebuilt = unflattenLike({ p: bare }, [v]) as { p: Record<string, unknown> };
  assert.ok(rebuilt.p.w === v);

  class Holder {
    constructor(readonly w: Tensor) {}
  }
  const h = new Holder(w);
  assert.equal(flattenWithPaths({ h, v }).map(([p]) => p), ['v']);
  // unflattenLike keeps the instance itself (it is a leaf, not rebuilt).
  const out = unflattenLike({ h, v }, [w]);
  assert.ok(out.h === h && out.v === w);
});

test('toNamed: dotted path -> tensor, in flattening order', () => {
  const a = tensor([1]);
  const b = tensor([2]);
  const named = toNamed({ enc: { w: a }, layers: [b] });
  assert.instance(named, Map);
  assert.equal([...named.keys()], ['enc.w', 'layers.0']);
  assert.ok(named.get('enc.w') === a && named.get('layers.0') === b);
});

test('fromNamed: only keys 0..n-1 make a list; an empty record stays an empty object', () => {
  const a = tensor([1]);
  const b = tensor([2]);
  const listed = fromNamed({ 'l.0': a, 'l.1': b }) as { l: Tensor[] };
  assert.ok(Array.isArray(listed.l) && listed.l.length === 2 && listed.l[0] === a && listed.l[1] === b);
  // '0' and 'x': not a list.
  const mixed = fromNamed({ 'm.0': a, 'm.x': b }) as { m: Record<string, Tensor> };
  assert.not.ok(Array.isArray(mixed.m));
  assert.equal(Object.keys(mixed.m), ['0', 'x']);
  assert.ok(mixed.m['0'] === a && mixed.m.x === b);
  const empty = fromNamed(new Map());
  assert.not.ok(Array.isArray(empty));
  assert.equal(Object.keys(empty as object), []);
});

test('unflattenLike: too many or too few values is an ArgumentError naming both counts', () => {
  const t = tensor([1]);
  throwsExactly(() => unflattenLike({ a: t }, [t, t]), ArgumentError, 'unflattenLike: tree has 1 tensor leaves but 2 values were given');
  throwsExactly(() => unflattenLike([t, { b: t }], [t]), ArgumentError, 'unflattenLike: tree has 2 tensor leaves but 1 values were given');
});

test('zipTrees: trees with different leaf counts are an ArgumentError listing every count', () => {
  const t = tensor([1]);
  throwsExactly(() => zipTrees([{ a: t }, { a: t }, { a: t, b: t }], ([x]) => x), ArgumentError, 'zipTrees: trees have 1 vs 1 vs 2 leaves');
  throwsExactly(() => zipTrees([[t, t], [t]], ([x]) => x), ArgumentError, 'zipTrees: trees have 2 vs 1 leaves');
});

// --- jvp: the tangents' structure --------------------------------------------------------------------

test('jvp: tangents with other paths or another leaf count are an ArgumentError listing both', () => {
  const x = tensor([1, 2]);
  const y = tensor([3, 4]);
  const f = (p: Record<string, Tensor>) => sum(mul(p.a, p.a));
  throwsExactly(
    () => jvp(f, [{ a: x, b: y }], [{ a: x, c: y }]),
    ArgumentError,
    "jvp: tangents must have the primals' structure: tensor leaves 0.a, 0.b vs 0.a, 0.c",
  );
  throwsExactly(() => jvp(f, [{ a: x }], [{ a: x, b: y }]), ArgumentError, "jvp: tangents must have the primals' structure: tensor leaves 0.a vs 0.a, 0.b");
  throwsExactly(() => jvp(f, [{ a: x, b: y }], [{ a: x }]), ArgumentError, "jvp: tangents must have the primals' structure: tensor leaves 0.a, 0.b vs 0.a");
  // The same structure goes through: d/dt sum(a^2) along t = 2 a . t = 2 (1*3 + 2*4) = 22.
  const [, tangentOut] = jvp(f, [{ a: x }], [{ a: y }]);
  assert.equal(values(tangentOut), [22]);
});

// --- customVjp: the backward's contract ---------------------------------------------------------------

test('customVjp: a backward returning the wrong number of cotangents (or no array) is an AutodiffError', () => {
  const x = tensor([1, 2, 3]);
  const none = customVjp((a: Tensor) => [mul(a, 2), null], () => []);
  throwsExactly(() => grad((a: Tensor) => sum(none(a)))(x), AutodiffError, 'customVjp: backward must return one cotangent per argument (1), got 0');
  const two = customVjp((a: Tensor, b: Tensor) => [mul(a, b), null], (_r: null, g: Tensor) => [g]);
  throwsExactly(() => grad((a: Tensor) => sum(two(a, a)))(x), AutodiffError, 'customVjp: backward must return one cotangent per argument (2), got 1');
  const bare = customVjp((a: Tensor) => [mul(a, 2), null], (_r: null, g: Tensor) => g as unknown as unknown[]);
  throwsExactly(() => grad((a: Tensor) => sum(bare(a)))(x), AutodiffError, 'customVjp: backward must return one cotangent per argument (1), got object');
});

test('customVjp: a cotangent tree with fewer or more leaves than its argument is an AutodiffError naming both counts', () => {
  const x = tensor([1, 2, 3]);
  const pair = { a: x, b: tensor([4, 5, 6]) };
  const lossOf = (f: (p: { a: Tensor; b: Tensor }) => Tensor) => (p: { a: Tensor; b: Tensor }) => sum(f(p));
  const fewer = customVjp((p: { a: Tensor; b: Tensor }) => [mul(p.a, p.b), null], (_r: null, g: Tensor) => [{ a: g }]);
  throwsExactly(() => grad(lossOf(fewer))(pair), AutodiffError, "customVjp: backward's cotangent for argument 0 has 1 tensor leaves, the argument has 2");
  const more = customVjp((a: Tensor) => [mul(a, 2), null], (_r: null, g: Tensor) => [[g, g]]);
  throwsExactly(() => grad((a: Tensor) => sum(more(a)))(x), AutodiffError, "customVjp: backward's cotangent for argument 0 has 2 tensor leaves, the argument has 1");
});

test('customVjp: a cotangent shaped unlike its argument is a ShapeError from vjp naming the rule and both shapes', () => {
  const x = tensor([1, 2, 3]);
  const f = customVjp((a: Tensor) => [mul(a, 2), null], (_r: null, g: Tensor) => [sum(g)]);
  throwsExactly(() => grad((a: Tensor) => sum(f(a)))(x), ShapeError, "vjp: the rule of 'customVjp' gave a cotangent of shape [] for an input of shape [3]");
});

test('customVjp: a null or undefined cotangent stands for every leaf of its argument (the next argument keeps its own)', () => {
  const p = { u: tensor([1, 2]), v: tensor([3, 4]) };
  const y = tensor([5, 6]);
  for (const missing of [null, undefined]) {
    // out = u + v + y; the rule claims d/dy = 3 g and declares p not differentiable.
    const f = customVjp((q: { u: Tensor; v: Tensor }, b: Tensor) => [add(add(q.u, q.v), b), null], (_r: null, g: Tensor) => [missing, mul(g, 3)]);
    const [gp, gy] = grad((q: { u: Tensor; v: Tensor }, b: Tensor) => sum(f(q, b)), [0, 1])(p, y);
    assert.equal(values(gp.u), [0, 0], `${missing} p.u`);
    assert.equal(values(gp.v), [0, 0], `${missing} p.v`);
    assert.equal(values(gy), [3, 3], `${missing} y`);
  }
});

test('customVjp: the rule of an op the output does not depend on is never called', () => {
  let calls = 0;
  const f = customVjp(
    (a: Tensor) => [exp(a), null],
    (_r: null, g: Tensor) => {
      calls++;
      return [g];
    },
  );
  const x = tensor([1, 2]);
  const gx = grad((a: Tensor) => {
    f(a); // computed, unused
    return sum(mul(a, 5));
  })(x);
  assert.equal(values(gx), [5, 5]);
  assert.is(calls, 0);
  // Used, it is called once.
  grad((a: Tensor) => sum(f(a)))(x);
  assert.is(calls, 1);
});

test('customVjp inside a custom forward: only the outer op is recorded (one node, its residuals only), the inner rule is not called', () => {
  let innerCalls = 0;
  // inner: exp, with its own copy of exp(x) as the residual.
  const inner = customVjp(
    (a: Tensor) => [exp(a), exp(a)],
    (e: Tensor, g: Tensor) => {
      innerCalls++;
      return [mul(g, e)];
    },
  );
  // outer: the same function through inner, keeping a third, separate exp(x) buffer.
  const outer = customVjp(
    (a: Tensor) => [inner(a), exp(a)],
    (e: Tensor, g: Tensor) => [mul(g, e)],
  );
  const x = tensor([0, 1, 2]);
  const [out, pullback] = vjp((a: Tensor) => sum(outer(a)), x);
  // Residuals: outer's exp(x), 3 float32 = 12 bytes; inner's residual is not kept (its forward ran unrecorded).
  assert.is(pullback.residualBytes, 12);
  const [g] = pullback();
  const expected = [0, 1, 2].map(Math.exp);
  values(g).forEach((v, i) => assert.ok(Math.abs(v - expected[i]) < 1e-5 * expected[i], `d/dx ${i}`));
  assert.ok(Math.abs(values(out)[0] - expected.reduce((s, v) => s + v, 0)) < 1e-4);
  assert.is(innerCalls, 0);
});

test.run();
