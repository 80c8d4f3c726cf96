/**
 * Edges of the tensor samplers and of traced keys (src/random/index.ts, primitives.ts, traced.ts):
 * op names in shape errors, documented defaults, agreement with the Float32Array samplers of
 * src/random/keys.ts, key branding, and what split/foldIn/samplers record and raise under jit.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { throwsExactly } from '../laws/helpers.ts';
import * as R from '../src/index.ts';
import { jit } from '../src/index.ts';
import { ShapeError, TraceError } from '../src/tensor/errors.ts';
import * as K from '../src/random/keys.ts';
import type { Tensor } from '../src/tensor/tensor.ts';

const rnd = R.random;
const vals = (t: Tensor): number[] => Array.from(t.dataSync());
const READ_TEXT =
  'a traced key was read on the host while tracing; inside a jitted function derive keys with split/foldIn and draw with the tensor samplers (uniform, normal, bernoulli), not the Float32Array ones of random/keys.ts';


test('shape errors name the sampler', () => {
  const k = rnd.key(1);
  const bad = [2, -1];
  const msg = (op: string) => `${op}: shape [2, -1] has a dimension -1 that is not a non-negative integer`;
  throwsExactly(() => rnd.uniform(k, bad), ShapeError, msg('uniform'));
  throwsExactly(() => rnd.normal(k, bad), ShapeError, msg('normal'));
  throwsExactly(() => rnd.truncatedNormal(k, bad), ShapeError, msg('truncatedNormal'));
  throwsExactly(() => rnd.bernoulli(k, 0.5, bad), ShapeError, msg('bernoulli'));
});

test('tensor samplers equal the Float32Array samplers of keys.ts, with the shapes asked for', () => {
  const k = rnd.foldIn(rnd.key(42), 3);
  const u = rnd.uniform(k, [3, 4], -2.5, 7);
  assert.equal(u.shape, [3, 4]);
  assert.equal(vals(u), Array.from(K.uniform(k, 12, -2.5, 7)));
  const u01 = rnd.uniform(k, [5]);
  assert.equal(vals(u01), Array.from(K.uniform(k, 5, 0, 1)));
  const n = rnd.normal(k, [2, 3]);
  assert.equal(n.shape, [2, 3]);
  assert.equal(vals(n), Array.from(K.normal(k, 6)));
  const t = rnd.truncatedNormal(k, [4, 5], -0.5, 1.5);
  assert.equal(t.shape, [4, 5]);
  assert.equal(vals(t), Array.from(K.truncatedNormal(k, 20, -0.5, 1.5)));
  const b = rnd.bernoulli(k, 0.3, [4, 6]);
  assert.equal(b.shape, [4, 6]);
  assert.equal(vals(b), Array.from(K.bernoulli(k, 24, 0.3)));
});

test('truncatedNormal defaults to (-2, 2)', () => {
  const k = rnd.key(7);
  const n = 4000;
  const d = vals(rnd.truncatedNormal(k, [n]));
  assert.equal(d, vals(rnd.truncatedNormal(k, [n], -2, 2)));
  assert.equal(d, Array.from(K.truncatedNormal(k, n, -2, 2)));
  assert.ok(d.every((x) => x >= -2 && x <= 2), 'all within [-2, 2]');
  assert.ok(d.some((x) => x < -1.9), 'some below -1.9');
  assert.ok(d.some((x) => x > 1.9), 'some above 1.9');
});

test('isBrandedKey: library keys yes; plain arrays and objects no', () => {
  assert.is(rnd.isBrandedKey(rnd.key(3)), true);
  assert.is(rnd.isBrandedKey(rnd.split(rnd.key(3))[1]), true);
  assert.is(rnd.isBrandedKey(rnd.foldIn(rnd.key(3), 9)), true);
  assert.is(rnd.isBrandedKey([0, 3]), false);
  assert.is(rnd.isBrandedKey([...rnd.key(3)]), false);
  assert.is(rnd.isBrandedKey({ 0: 0, 1: 3, length: 2 }), false);
  assert.is(rnd.isBrandedKey(undefined), false);
  assert.is(rnd.isBrandedKey('key'), false);
});

for (const lowering of ['cpu', 'interpret'] as const) {
  test(`jit (${lowering}): split/foldIn and the samplers of a traced key equal eager mode`, () => {
    const f = (k: R.random.Key) => {
      const [a, b, c] = rnd.split(k, 3);
      const d = rnd.foldIn(b, 11);
      return {
        keys: [a, c, d],
        u: rnd.uniform(a, [2, 3], -1, 3),
        n: rnd.normal(d, [4]),
        t: rnd.truncatedNormal(c, [5]),
        b: rnd.bernoulli(rnd.foldIn(k, 2), 0.4, [6]),
      };
    };
    const jf = jit(f, { lowering });
    for (const seed of [0, 5]) {
      const k = rnd.key(seed);
      const e = f(k);
      const g = jf(k);
      g.keys.forEach((gk, i) => {
        assert.equal([...gk], [...e.keys[i]], `key ${i}`);
        assert.ok(rnd.isBrandedKey(gk));
      });
      for (const name of ['u', 'n', 't', 'b'] as const) {
        assert.equal(g[name].shape, e[name].shape, name);
        assert.equal(vals(g[name]), vals(e[name]), name);
      }
    }
    const prog = jf.program(rnd.key(0));
    const names = prog.eqns.map((q) => q.prim.name);
    for (const want of ['keySplit', 'keyFoldIn', 'randomUniform', 'randomNormal', 'randomTruncatedNormal', 'randomBernoulli']) {
      assert.ok(names.includes(want), `program records ${want}: ${names.join(',')}`);
    }
    for (const q of prog.eqns) if (q.prim.name.startsWith('key')) assert.equal(q.shape, [2]);
  });

  test(`jit (${lowering}): a closed-over (constant) key draws what eager mode draws`, () => {
    const k0 = rnd.key(123);
    const f = (x: Tensor) => R.add(x, rnd.uniform(k0, [4]));
    const jf = jit(f, { lowering });
    const x = R.tensor([1, 2, 3, 4], [4]);
    assert.equal(vals(jf(x)), vals(f(x)));
    const prog = jf.program(x);
    const eq = prog.eqns.find((q) => q.prim.name === 'randomUniform')!;
    assert.equal(eq.inShapes[0], [2]);
  });
}

test('jit: reading a traced key on the host raises the TraceError', () => {
  throwsExactly(() => jit((k: R.random.Key) => R.scalar(k[0]))(rnd.key(1)), TraceError, `jit: ${READ_TEXT}`);
  throwsExactly(() => jit((k: R.random.Key) => R.scalar(k[1]))(rnd.key(1)), TraceError, `jit: ${READ_TEXT}`);
});

test('jit: the host functions of keys.ts reject a traced key, naming themselves', () => {
  throwsExactly(() => jit((k: R.random.Key) => R.tensor(K.uniform(k, 2), [2]))(rnd.key(1)), TraceError, `jit: randomBits: ${READ_TEXT}`);
  throwsExactly(() => jit((k: R.random.Key) => R.scalar(K.split(k)[0][0]))(rnd.key(1)), TraceError, `jit: split: ${READ_TEXT}`);
  throwsExactly(() => jit((k: R.random.Key) => R.scalar(K.foldIn(k, 1)[0]))(rnd.key(1)), TraceError, `jit: foldIn: ${READ_TEXT}`);
});

test.run();
