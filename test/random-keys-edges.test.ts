/**
 * Edges of the Float32Array samplers of src/random/keys.ts that the JAX-value laws do not reach (issue 18,
 * mutation gaps): the exact errors of every validation, uniform's scaling against the unit draws, erf and
 * erfinv outside their domain, truncatedNormal's "no room" and "no mass" cases, bernoulli's strict
 * comparison, and randint / permutation against a BigInt reference of Lemire's method over the same word
 * stream (so a wrong 64-bit product, rejection threshold or stream block would show).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { throwsExactly } from '../laws/helpers.ts';
import * as K from '../src/random/keys.ts';
import { ArgumentError } from '../src/tensor/errors.ts';

const k = K.key(7);

test('keys: malformed keys and arguments are ArgumentErrors naming the function', () => {
  for (const [bad, text] of [[[1, 2, 3], '[1,2,3]'], [[1, -1], '[1,-1]'], [[2 ** 32, 0], '[4294967296,0]'], [[0, 0.5], '[0,0.5]'], ['ab', '"ab"']] as const) {
    throwsExactly(() => K.split(bad as unknown as K.Key), ArgumentError, `split: expected a key [uint32, uint32], got ${text}`);
  }
  throwsExactly(() => K.key(-1), ArgumentError, 'key: seed must be a non-negative safe integer (0 .. 2^53-1), got -1');
  throwsExactly(() => K.split(k, 0), ArgumentError, 'split: n must be a positive integer, got 0');
  throwsExactly(() => K.foldIn(k, 2 ** 32), ArgumentError, 'foldIn: data must be an integer in [0, 2^32), got 4294967296');
  throwsExactly(() => K.randomBits(k, -1), ArgumentError, 'randomBits: count must be a non-negative integer, got -1');
});

test('uniform: [lo, hi) must be finite and non-empty as float32; a scaled range is lo + u (hi - lo) of the unit draws', () => {
  for (const [lo, hi] of [[1, 1], [2, 1], [0, Infinity], [Number.NaN, 1], [-Infinity, 0], [1, 1 + 1e-9]]) {
    throwsExactly(() => K.uniform(k, 3, lo, hi), ArgumentError, `uniform: need finite lo < hi (as float32), got [${lo}, ${hi})`);
  }
  const u = K.uniform(k, 64);
  assert.equal(Array.from(K.uniform(k, 64, 0, 1)), Array.from(u));
  assert.equal(Array.from(K.uniform(k, 64, 0, 2)), Array.from(u, (v) => 2 * v));
  assert.equal(Array.from(K.uniform(k, 64, 0.5, 1)), Array.from(u, (v) => Math.fround(Math.fround(v * 0.5) + 0.5)));
});

test('erf and erfinv: NaN and arguments outside [-1, 1] give NaN, ±1 give ±Infinity, in both precisions', () => {
  assert.ok(Number.isNaN(K.erf(Number.NaN)));
  for (const f of [K.erfinv, K.erfinvFloat32]) {
    for (const bad of [Number.NaN, 1.5, -1.5, 1 + 2 ** -52, -1 - 2 ** -52]) assert.ok(Number.isNaN(f(bad)), `${f.name}(${bad})`);
    assert.is(f(1), Infinity);
    assert.is(f(-1), -Infinity);
    assert.ok(Math.abs(f(0.5) - 0.4769362762044699) < 1e-6, `${f.name}(0.5)`);
    assert.ok(Math.abs(f(-0.5) + 0.4769362762044699) < 1e-6, `${f.name}(-0.5)`);
  }
});

test('truncatedNormal: bounds with no float32 between them, or no float32 mass between them, are ArgumentErrors', () => {
  const above1 = new Float32Array(new Uint32Array([0x3f800001]).buffer)[0]!;
  for (const [lo, hi] of [[2, -2], [1, 1], [1, above1], [Number.NaN, 1]]) {
    throwsExactly(() => K.truncatedNormal(k, 3, lo, hi), ArgumentError, `truncatedNormal: need lower < upper with room between them, got (${lo}, ${hi})`);
  }
  throwsExactly(() => K.truncatedNormal(k, 3, 10, 11), ArgumentError, 'truncatedNormal: interval (10, 11) has no float32 probability mass');
  // a narrow interval that has room: every draw strictly inside
  const t = K.truncatedNormal(k, 256, 0.5, 0.5001);
  assert.ok(t.every((v) => v > 0.5 && v < 0.5001));
});

test('bernoulli: p outside [0, 1] is an ArgumentError; a draw equal to p is a 0 (uniform < p)', () => {
  for (const p of [-0.1, 1.5, Number.NaN]) throwsExactly(() => K.bernoulli(k, 3, p), ArgumentError, `bernoulli: p must be in [0, 1], got ${p}`);
  const u = K.uniform(k, 16);
  const at = u.findIndex((v) => v > 0);
  const b = K.bernoulli(k, 16, u[at]!);
  assert.is(b[at], 0);
  assert.equal(Array.from(b), Array.from(u, (v) => (v < u[at]! ? 1 : 0)));
});

/** Lemire's multiply-shift with rejection in BigInt, over the same word stream as keys.ts. */
function referenceBounded(key: K.Key): (range: number) => number {
  let block = 0;
  let words = K.randomBits(K.foldIn(key, 0), 1024);
  let at = 0;
  const next = (): bigint => {
    if (at === 1024) {
      words = K.randomBits(K.foldIn(key, ++block), 1024);
      at = 0;
    }
    return BigInt(words[at++]!);
  };
  return (range) => {
    const r = BigInt(range);
    const threshold = (2n ** 32n - r) % r;
    for (;;) {
      const product = next() * r;
      if ((product & 0xffffffffn) >= threshold) return Number(product >> 32n);
    }
  };
}

test('randint: equal to a BigInt reference of Lemire\'s method over the key\'s word stream (past one 1024-word block)', () => {
  for (const [lo, hi] of [[0, 3], [-5, 995], [-(2 ** 31), 5], [-(2 ** 31), 2 ** 31]]) {
    const bounded = referenceBounded(k);
    const want = Array.from({ length: 1500 }, () => lo + bounded(hi - lo));
    assert.equal(Array.from(K.randint(k, 1500, lo, hi)), want, `[${lo}, ${hi})`);
  }
  for (const [lo, hi] of [[0, 0], [0.5, 2], [-(2 ** 31) - 1, 0], [0, 2 ** 31 + 1]]) {
    throwsExactly(() => K.randint(k, 3, lo, hi), ArgumentError, `randint: need integers -2^31 <= lo < hi <= 2^31, got [${lo}, ${hi})`);
  }
  throwsExactly(() => K.randint([1, 2, 3] as unknown as K.Key, 3, 0, 1), ArgumentError, 'randint: expected a key [uint32, uint32], got [1,2,3]');
  throwsExactly(() => K.randint(k, -1, 0, 1), ArgumentError, 'randint: count must be a non-negative integer, got -1');
});

test('permutation: Fisher-Yates with the reference draws; n outside [0, 2^31] is an ArgumentError', () => {
  const n = 1200;
  const bounded = referenceBounded(k);
  const want = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = bounded(i + 1);
    [want[i], want[j]] = [want[j]!, want[i]!];
  }
  assert.equal(Array.from(K.permutation(k, n)), want);
  assert.equal(Array.from(K.permutation(k, 0)), []);
  for (const bad of [-1, 1.5, 2 ** 31 + 1]) throwsExactly(() => K.permutation(k, bad), ArgumentError, `permutation: n must be an integer in [0, 2^31], got ${bad}`);
  throwsExactly(() => K.permutation([1] as unknown as K.Key, 3), ArgumentError, 'permutation: expected a key [uint32, uint32], got [1]');
});

test.run();
