/**
 * Laws and known answers for the threefry PRNG (src/random/threefry.ts, src/random/keys.ts).
 * Known answers come from Random123's kat_vectors and from values printed by JAX itself.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fc from 'fast-check';
import { assertProperty } from './helpers.ts';
import { threefry2x32 } from '../src/random/threefry.ts';
import {
  bernoulli,
  erf,
  erfinv,
  erfinvFloat32,
  foldIn,
  key,
  normal,
  permutation,
  randint,
  randomBits,
  split,
  truncatedNormal,
  uniform,
  type Key,
} from '../src/random/keys.ts';

const uint32 = fc.integer({ min: 0, max: 0xffffffff });
const anyKey: fc.Arbitrary<Key> = fc.tuple(uint32, uint32);
const RUNS = { numRuns: 40 };
const STAT_RUNS = { numRuns: 10 };

const mean = (xs: ArrayLike<number>): number => Array.from(xs).reduce((a, b) => a + b, 0) / xs.length;
const variance = (xs: ArrayLike<number>): number => {
  const m = mean(xs);
  return Array.from(xs).reduce((a, b) => a + (b - m) * (b - m), 0) / xs.length;
};
const keyText = (k: Key): string => `${k[0]},${k[1]}`;

// --- known answers ---------------------------------------------------------------------------

test('threefry2x32-20 matches the Random123 known-answer vectors', () => {
  assert.equal(threefry2x32([0, 0], [0, 0]), [0x6b200159, 0x99ba4efe]);
  assert.equal(threefry2x32([0xffffffff, 0xffffffff], [0xffffffff, 0xffffffff]), [0x1cb996fc, 0xbb002be7]);
  assert.equal(threefry2x32([0x13198a2e, 0x03707344], [0x243f6a88, 0x85a308d3]), [0xc4923a9c, 0x483df7a0]);
});

test('key matches JAX PRNGKey and rejects seeds it cannot represent', () => {
  assert.equal(key(0), [0, 0]);
  assert.equal(key(42), [0, 42]);
  assert.equal(key(0xffffffff), [0, 0xffffffff]);
  assert.equal(key(2 ** 32 + 5), [1, 5]);
  assert.equal(key(Number.MAX_SAFE_INTEGER), [0x1fffff, 0xffffffff]);
  assert.throws(() => key(-1), /non-negative safe integer/);
  assert.throws(() => key(1.5), /non-negative safe integer/);
  assert.throws(() => key(2 ** 53), /non-negative safe integer/);
  assert.throws(() => key(Number.NaN), /non-negative safe integer/);
});

test('split(key(0)) equals jax.random.split(PRNGKey(0)) (legacy threefry layout)', () => {
  assert.equal(split(key(0)), [
    [4146024105, 967050713],
    [2718843009, 1272950319],
  ]);
});

test('foldIn encrypts the counter block (0, data), as JAX threefry_fold_in does', () => {
  assert.equal(foldIn([1, 2], 7), threefry2x32([1, 2], [0, 7]));
  assert.equal(foldIn(key(0), 0), [0x6b200159, 0x99ba4efe]);
});

test('uniform and normal reproduce values printed by JAX for PRNGKey(0)', () => {
  // jax.random.uniform(PRNGKey(0)) and jax.random.normal(PRNGKey(0)) in JAX's random docs.
  assert.is(uniform(key(0), 1)[0], 0.41845703125);
  assert.is(normal(key(0), 1)[0], Math.fround(-0.20584226));
  // jax.random.normal(PRNGKey(0), (10,)) from the JAX quickstart; each printed value is the
  // shortest decimal of a float32, so rounding it back must give exactly our float32.
  const quickstart = [
    -0.3721109, 0.26423115, -0.18252768, -0.7368197, -0.44030377, -0.1521442, -0.67135346, -0.5908641,
    0.73168886, 0.5673026,
  ];
  assert.equal(Array.from(normal(key(0), 10)), quickstart.map(Math.fround));
});

test('erf matches reference values', () => {
  const cases: [number, number][] = [
    [0, 0],
    [0.5, 0.5204998778130465],
    [1, 0.8427007929497149],
    [2, 0.9953222650189527],
    [-2.5, -0.9995930479825550],
    [3, 0.9999779095030014],
  ];
  for (const [x, expected] of cases) assert.ok(Math.abs(erf(x) - expected) < 1e-14, `erf(${x}) = ${erf(x)}`);
  // 1 - erf(x) must keep its relative accuracy in the continued-fraction branch.
  assert.ok(Math.abs((1 - erf(4)) / 1.541725790028002e-8 - 1) < 1e-6);
  assert.is(erf(Infinity), 1);
  assert.is(erf(-Infinity), -1);
});

test('erfinv matches reference values and inverts erf', () => {
  const cases: [number, number][] = [
    [0.5, 0.4769362762044699],
    [0.9, 1.1630871536766743],
    [0.999, 2.326753765513525],
    [-0.3, -0.2724627147267544],
  ];
  for (const [u, expected] of cases) {
    assert.ok(Math.abs(erfinv(u) - expected) < 1e-13, `erfinv(${u}) = ${erfinv(u)}`);
  }
  // The float32 evaluation rounds its input first, so it is compared at that rounded input.
  assertProperty(
    fc.property(fc.double({ min: -0.9999999, max: 0.9999999, noNaN: true }), (u) => {
      const exact = erfinv(Math.fround(u));
      return Math.abs(erfinvFloat32(u) - exact) <= 1e-6 * Math.abs(exact) + 1e-30;
    }),
    { numRuns: 500 },
  );
  assert.is(erfinv(1), Infinity);
  assert.is(erfinv(-1), -Infinity);
  assert.ok(Number.isNaN(erfinv(1.5)));
  assertProperty(
    fc.property(fc.double({ min: -0.999999, max: 0.999999, noNaN: true }), (u) => {
      return Math.abs(erf(erfinv(u)) - u) < 1e-14;
    }),
    { numRuns: 200 },
  );
});

// --- structural laws -------------------------------------------------------------------------

test('randomBits(k, n) is the known-answer Threefry block on counter pairs (i, i + ⌈n/2⌉), JAX\'s legacy layout', () => {
  assertProperty(
    fc.property(anyKey, fc.integer({ min: 0, max: 65 }), (k, n) => {
      // jax._src.prng threefry_random_bits: counters 0..n-1 padded with a 0 to even length, cut in two
      // halves (x0, x1), one block per pair; the words come out as [all first words, all second words].
      const half = Math.ceil(n / 2);
      const want = new Uint32Array(2 * half);
      for (let i = 0; i < half; i++) {
        const [a, b] = threefry2x32(k, [i, half + i < n ? half + i : 0]);
        want[i] = a;
        want[half + i] = b;
      }
      assert.equal(Array.from(randomBits(k, n)), Array.from(want.subarray(0, n)));
    }),
    RUNS,
  );
});

test('uniform(k, n) puts the top 23 bits of each word into the mantissa of a float in [1, 2), minus 1 (JAX)', () => {
  assertProperty(
    fc.property(anyKey, fc.integer({ min: 0, max: 64 }), (k, n) => {
      const bits = randomBits(k, n);
      const f = new Float32Array(new Uint32Array(Array.from(bits, (b) => (b >>> 9) | 0x3f800000)).buffer);
      assert.equal(Array.from(uniform(k, n)), Array.from(f, (v) => Math.fround(v - 1)));
    }),
    RUNS,
  );
});

test('different keys give different bits', () => {
  assertProperty(
    fc.property(anyKey, anyKey, (a, b) => {
      fc.pre(keyText(a) !== keyText(b));
      assert.not.equal(randomBits(a, 4), randomBits(b, 4));
    }),
    RUNS,
  );
});

test('split children are pairwise distinct and distinct from the parent', () => {
  assertProperty(
    fc.property(anyKey, fc.integer({ min: 1, max: 16 }), (k, n) => {
      const children = split(k, n);
      assert.is(children.length, n);
      const seen = new Set([keyText(k), ...children.map(keyText)]);
      assert.is(seen.size, n + 1);
    }),
    RUNS,
  );
});

test('foldIn with different data gives different keys', () => {
  assertProperty(
    fc.property(anyKey, uint32, uint32, (k, d1, d2) => {
      fc.pre(d1 !== d2);
      assert.is.not(keyText(foldIn(k, d1)), keyText(foldIn(k, d2)));
      assert.is.not(keyText(foldIn(k, d1)), keyText(k));
    }),
    RUNS,
  );
});

test('key functions reject malformed keys and counts', () => {
  assert.throws(() => split([0, -1] as unknown as Key), /expected a key/);
  assert.throws(() => split(key(0), 0), /positive integer/);
  assert.throws(() => foldIn(key(0), 2 ** 32), /data must be/);
  assert.throws(() => randomBits([1.5, 0], 3), /expected a key/);
  assert.throws(() => randomBits(key(0), -1), /non-negative integer/);
});

// --- distributions ---------------------------------------------------------------------------

test('uniform lies in [0, 1) with mean within 5 sigma of 1/2', () => {
  assertProperty(
    fc.property(anyKey, (k) => {
      const n = 4096;
      const u = uniform(k, n);
      assert.ok(u.every((v) => v >= 0 && v < 1));
      const sigma = Math.sqrt(1 / 12 / n);
      assert.ok(Math.abs(mean(u) - 0.5) < 5 * sigma, `mean ${mean(u)}`);
    }),
    STAT_RUNS,
  );
});

test('uniform with bounds stays in [lo, hi)', () => {
  assertProperty(
    fc.property(anyKey, fc.integer({ min: -1000, max: 1000 }), fc.integer({ min: 1, max: 500 }), (k, lo, width) => {
      const hi = lo + width;
      assert.ok(uniform(k, 256, lo, hi).every((v) => v >= lo && v < hi));
    }),
    RUNS,
  );
});

test('uniform never returns hi even where float32 rounding would reach it', () => {
  // Near 1000 the float32 spacing is 2^-14, so u > 1 - 2^-15 would round u + 1000 up to 1001.
  const u = uniform(key(1), 1 << 17, 1000, 1001);
  const justBelow = 1001 - 2 ** -14;
  assert.ok(u.every((v) => v >= 1000 && v < 1001));
  assert.ok(u.some((v) => v === justBelow), 'expected some draws to be pulled back below hi');
});

test('normal has mean ~0 and variance ~1 for n = 8192', () => {
  assertProperty(
    fc.property(anyKey, (k) => {
      const n = 8192;
      const z = normal(k, n);
      assert.ok(z.every(Number.isFinite));
      assert.ok(Math.abs(mean(z)) < 5 / Math.sqrt(n), `mean ${mean(z)}`);
      assert.ok(Math.abs(variance(z) - 1) < 5 * Math.sqrt(2 / n), `variance ${variance(z)}`);
    }),
    STAT_RUNS,
  );
});

test('truncatedNormal stays strictly inside (lower, upper)', () => {
  assertProperty(
    fc.property(
      anyKey,
      fc.double({ min: -4, max: 3, noNaN: true }),
      fc.double({ min: 0.01, max: 4, noNaN: true }),
      (k, lower, width) => {
        const upper = lower + width;
        const lo32 = Math.fround(lower);
        const hi32 = Math.fround(upper);
        assert.ok(truncatedNormal(k, 512, lower, upper).every((v) => v > lo32 && v < hi32));
      },
    ),
    RUNS,
  );
  const z = truncatedNormal(key(3), 8192);
  assert.ok(z.every((v) => v > -2 && v < 2));
  // Variance of a standard normal truncated to (-2, 2).
  assert.ok(Math.abs(variance(z) - 0.7737413) < 0.05, `variance ${variance(z)}`);
});

test('bernoulli rate is within 5 sigma of p', () => {
  assertProperty(
    fc.property(anyKey, fc.double({ min: 0, max: 1, noNaN: true }), (k, p) => {
      const n = 4096;
      const draws = bernoulli(k, n, p);
      assert.ok(draws.every((b) => b === 0 || b === 1));
      const sigma = Math.sqrt((p * (1 - p)) / n);
      assert.ok(Math.abs(mean(draws) - p) <= 5 * sigma + 1e-12, `rate ${mean(draws)} for p ${p}`);
    }),
    STAT_RUNS,
  );
  assert.ok(bernoulli(key(0), 100, 0).every((b) => b === 0));
  assert.ok(bernoulli(key(0), 100, 1).every((b) => b === 1));
});

test('permutation is a permutation of 0..n-1', () => {
  assertProperty(
    fc.property(anyKey, fc.integer({ min: 0, max: 300 }), (k, n) => {
      const sorted = Array.from(permutation(k, n)).sort((a, b) => a - b);
      assert.equal(sorted, Array.from({ length: n }, (_, i) => i));
    }),
    RUNS,
  );
});

test('permutation puts each element in each slot about equally often', () => {
  // 3000 shuffles of 4 items: each of the 16 (item, slot) cells expects 750 hits.
  const counts = new Array<number>(16).fill(0);
  for (let t = 0; t < 3000; t++) permutation(foldIn(key(5), t), 4).forEach((item, slot) => counts[item * 4 + slot]!++);
  const sigma = Math.sqrt(3000 * (1 / 4) * (3 / 4));
  assert.ok(counts.every((c) => Math.abs(c - 750) < 5 * sigma), JSON.stringify(counts));
});

test('randint lies in [lo, hi), covers it evenly, and extends its prefix', () => {
  assertProperty(
    fc.property(anyKey, fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }), fc.integer({ min: 1, max: 2 ** 32 }), (k, lo, width) => {
      const hi = Math.min(lo + width, 2 ** 31);
      const r = randint(k, 200, lo, hi);
      assert.ok(r.every((v) => v >= lo && v < hi));
      assert.equal(randint(k, 50, lo, hi), r.slice(0, 50));
    }),
    RUNS,
  );
  // A range of 3 does not divide 2^32, so a biased reduction would show up in large samples.
  const n = 30000;
  const r = randint(key(9), n, -1, 2);
  const sigma = Math.sqrt(n * (1 / 3) * (2 / 3));
  for (const v of [-1, 0, 1]) {
    const count = r.filter((x) => x === v).length;
    assert.ok(Math.abs(count - n / 3) < 5 * sigma, `value ${v} drawn ${count} times`);
  }
  assert.throws(() => randint(key(0), 1, 3, 3), /lo < hi/);
  assert.throws(() => randint(key(0), 1, 0, 2 ** 31 + 1), /lo < hi/);
});

test.run();
