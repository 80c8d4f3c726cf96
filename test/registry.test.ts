/**
 * The op registry (src/tensor/primitive.ts): every primitive is one declaration; the tape reads its VJP
 * rule and what it saves from there, and a declaration without a rule does not compile.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as R from '../src/index.ts';
import { ArgumentError } from '../src/tensor/errors.ts';
import { apply, definePrimitive, NotDifferentiableError, primitiveByName, primitiveNames, type Primitive } from '../src/tensor/primitive.ts';
import { elementwiseImpl } from '../src/tensor/ops.ts';
import { elementwise } from '../src/tensor/elementwise.ts';

// Compile-time: a declaration without a VJP rule is a type error (tsc runs before the tests in `npm test`).
// Never called: it only has to type-check with the error expected.
export function missingRuleDoesNotCompile(): void {
  // @ts-expect-error -- `vjp` is required
  definePrimitive<void>({ name: 'noRule', shape: ([x]) => x, impl: (s, _, out) => elementwiseImpl('noRule', s, out, 'x0'), save: 'nothing' });
}

test('the registry holds every primitive the library uses, each with a rule and a save policy', () => {
  const names = primitiveNames();
  for (const expected of ['add', 'mul', 'exp', 'sum', 'max', 'reshape', 'permute', 'slice', 'embed', 'concat', 'take', 'scatterAdd', 'matmul',
    'conv', 'convTranspose', 'convWeightGrad', 'maxPool', 'avgPool', 'softmax', 'normalize', 'gelu', 'depthwiseConv3d', 'elementwise']) {
    assert.ok(names.includes(expected), `'${expected}' is registered`);
  }
  for (const name of names) {
    const p = primitiveByName(name)!;
    assert.is(p.name, name);
    assert.type(p.vjp, 'function', `${name}.vjp`);
    assert.ok(['nothing', 'inputs', 'output', 'both'].includes(p.save), `${name}.save`);
  }
});

test("a rule whose cotangent is shaped unlike its input is a ShapeError naming the primitive and both shapes", () => {
  const BAD = definePrimitive<void>({
    name: 'test.badRule',
    shape: ([x]) => x,
    impl: (s, _, out) => elementwiseImpl('test.badRule', s, out, 'x0'),
    save: 'nothing',
    vjp: (g) => [R.sum(g)],
  });
  assert.throws(
    () => R.grad((t: R.Tensor) => R.sum(apply(BAD, [t], undefined)))(R.tensor([1, 2, 3])),
    (e: unknown) => e instanceof R.ShapeError && (e as Error).message === "vjp: the rule of 'test.badRule' gave a cotangent of shape [] for an input of shape [3]",
  );
});

test('a name is declared once', () => {
  assert.throws(
    () => definePrimitive<void>({ name: 'add', shape: ([x]) => x, impl: (s, _, out) => elementwiseImpl('add', s, out, 'x0'), save: 'nothing', vjp: (g) => [g] }),
    (e: unknown) => e instanceof ArgumentError && /already declared/.test((e as Error).message),
  );
});

test('a new primitive works end to end: eager value, shape rule, and the tape uses its rule and save policy', () => {
  // cube(x) = x^3 with a rule that reads the saved input: d/dx = 3 x^2.
  let saved: readonly R.Tensor[] = [];
  const CUBE: Primitive<{ readonly k: number }> = definePrimitive<{ readonly k: number }>({
    name: 'test.scaledCube',
    shape: ([x]) => x,
    impl: (s, { k }, out) => elementwiseImpl('test.scaledCube', s, out, `${k} * x0 * x0 * x0`),
    save: 'inputs',
    vjp: (g, { x: [x], attrs: { k } }) => {
      saved = [x];
      return [R.mul(g, R.mul(R.mul(x, x), 3 * k))];
    },
  });
  const x = R.tensor([1, -2, 0.5]);
  const y = apply(CUBE, [x], { k: 2 });
  assert.equal(Array.from(y.dataSync()), [2, -16, 0.25]);
  const g = R.grad((t: R.Tensor) => R.sum(apply(CUBE, [t], { k: 2 })))(x) as R.Tensor;
  assert.equal(Array.from(g.dataSync()), [6, 24, 1.5]);
  assert.equal(Array.from(saved[0].dataSync()), [1, -2, 0.5], 'the rule read the input it saved');
});

test('a rule that is not implemented raises a typed error when the backward pass reaches it', () => {
  const x = R.tensor([[1, 2], [3, 4]]);
  // The optimizers' fused update is declared not differentiable: a gradient through it raises, naming it.
  const f = (t: R.Tensor) => R.sum(elementwise('test.axpy', 'x0 * 2 + x1', [t, 1]));
  assert.throws(() => R.grad(f)(x), (e: unknown) => e instanceof NotDifferentiableError && e instanceof R.AutodiffError && /elementwise/.test((e as Error).message));
});

test.run();
