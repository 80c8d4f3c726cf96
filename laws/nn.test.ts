/**
 * Layers against independent references (src/nn, src/tensor/composite.ts):
 *  - dropout and drop-path: the exact output on a fixed key, from the documented rule (keep where the
 *    key's uniform draw U >= p, scale kept values by 1/(1-p)) evaluated here in float64 and rounded once;
 *    and, over many keys, the kept fraction (1-p) and the mean (the input) within 5 sigma of a binomial;
 *  - layerNorm with rows of small variance (where eps matters) against a float64 reference with eps
 *    inside the square root, forward and gradient, in every mode (wasm row ops, host loops, gpu.js webasm
 *    kernels, gpu.js cpu kernels).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fc from 'fast-check';
import { withBackend } from '../src/backend/backend.ts';
import { setWasmKernels } from '../src/backend/wasm-memory.ts';
import * as R from '../src/index.ts';
import type { Tensor } from '../src/index.ts';
import { dropout, dropPath, layerNorm, mlp } from '../src/nn/index.ts';
import { foldIn, key, uniform as uniformKeyed } from '../src/random/index.ts';
import { arb } from '../src/laws/index.ts';
import { assertProperty, MODES, rng } from './helpers.ts';

const TRAIN = { train: true };
const anyKey = arb.key();
const rate = fc.integer({ min: 1, max: 90 }).map((r) => r / 100);

/** The modes plus webasm with the wasm row ops off (TypeScript host loops). */
const ALL_MODES = [
  ...MODES,
  {
    name: 'webasm (host loops)',
    run: <A>(fn: () => A): A => {
      const previous = setWasmKernels(false);
      try {
        return withBackend('webasm', fn);
      } finally {
        setWasmKernels(previous);
      }
    },
  },
];

// --- dropout and drop-path: exact values ---------------------------------------------------------

test('dropout(k, p, x) keeps x_i · 1/(1-p) where the uniform draw U_i of k is >= p and zeroes the rest, exactly, in every mode', () => {
  assertProperty(
    fc.property(anyKey, rate, arb.tensor({ shape: arb.shape({ minRank: 1, maxRank: 3, maxDim: 5 }), min: -3, max: 3 }), (k, p, x) => {
      const u = uniformKeyed(k, [x.size]).dataSync();
      const xs = x.dataSync();
      const scale = Math.fround(1 / (1 - p));
      const want = Float32Array.from(xs, (v, i) => (u[i] >= p ? v * scale : 0));
      for (const mode of MODES) {
        const got = mode.run(() => dropout(k, p, x, TRAIN));
        assert.equal([...got.shape], [...x.shape]);
        assert.equal(Array.from(got.dataSync()), Array.from(want), `${mode.name}: p ${p}`);
      }
    }),
    { numRuns: 40 },
  );
});

test('dropPath(k, p, x) keeps whole samples (axis 0) as x / (1-p) where the per-sample draw U_b of k is >= p, exactly', () => {
  assertProperty(
    fc.property(anyKey, rate, arb.tensor({ shape: arb.shape({ minRank: 1, maxRank: 4 }), min: -3, max: 3 }), (k, p, x) => {
      const B = x.shape[0];
      const u = uniformKeyed(k, [B]).dataSync();
      const xs = x.dataSync();
      const per = x.size / B;
      const denom = Math.fround(1 - p);
      const want = Float32Array.from(xs, (v, i) => (u[Math.floor(i / per)] >= p ? v / denom : 0));
      for (const mode of MODES) {
        const got = mode.run(() => dropPath(k, p, x, TRAIN));
        assert.equal(Array.from(got.dataSync()), Array.from(want), `${mode.name}: p ${p}`);
      }
    }),
    { numRuns: 40 },
  );
});

test('dropout and dropPath are the identity in eval mode and at p = 0; dropout takes rates in [0, 1], dropPath in [0, 1)', () => {
  const x = R.tensor([1, -2, 3, 4], [2, 2]);
  for (const [f, bads] of [[dropout, [-0.1, 1.5, Number.NaN]], [dropPath, [-0.1, 1, 1.5, Number.NaN]]] as const) {
    assert.is(f(key(1), 0.5, x, { train: false }), x);
    assert.is(f(key(1), 0, x, TRAIN), x);
    for (const bad of bads) assert.throws(() => f(key(1), bad, x, TRAIN), (e: unknown) => e instanceof R.ArgumentError);
  }
});

test('dropout at p = 1 drops everything, as PyTorch: zeros (NaN stays NaN: x * 0), a zero gradient, the identity in eval mode', () => {
  const x = R.tensor([1, -2, 3, Number.NaN], [2, 2]);
  assert.equal(Array.from(dropout(key(1), 1, x, TRAIN).dataSync()), [0, -0, 0, Number.NaN]);
  assert.is(dropout(key(1), 1, x, { train: false }), x);
  const g = R.grad((v: R.Tensor) => R.sum(dropout(key(2), 1, v, TRAIN)))(R.tensor([1, 2, 3], [3]));
  assert.equal(Array.from(g.dataSync()), [0, 0, 0]);
});

test('dropout and dropPath name themselves and the rate in the error', () => {
  const x = R.tensor([1, 2], [2]);
  for (const [name, f, range] of [['dropout', dropout, '[0, 1]'], ['dropPath', dropPath, '[0, 1)']] as const) {
    assert.throws(() => f(key(1), 1.5, x, TRAIN), (e: unknown) => e instanceof R.ArgumentError && e.message === `${name}: rate must be in ${range}, got 1.5`);
    assert.throws(() => f(key(1), '0.5' as unknown as number, x, TRAIN), (e: unknown) => e instanceof R.ArgumentError && e.message.startsWith(`${name}: rate`));
  }
});

test('mlp(p, x, key, { drop }) = fc2(gelu(fc1 x)) with dropout (keys foldIn(key, 0) and foldIn(key, 1)) after gelu and after fc2, in training by default', () => {
  const lin = (k: number, o: number, i: number) => ({ weight: R.mul(R.random.normal(key(k), [o, i]), 0.5), bias: R.random.normal(key(k + 100), [o]) });
  const p = { fc1: lin(1, 6, 4), fc2: lin(2, 4, 6) };
  const x = R.random.normal(key(3), [3, 4]);
  const k = key(9);
  const drop = 0.25;
  // The documented rule, written out: keep where the key's uniform draw is >= p, scale by 1/(1-p).
  const mask = (kk: R.random.Key, t: Tensor) => R.tensor(Array.from(uniformKeyed(kk, [t.size]).dataSync(), (u) => (u >= drop ? 1 / (1 - drop) : 0)), [...t.shape]);
  const h = R.gelu(R.add(R.matmul(x, p.fc1.weight, { transB: true }), p.fc1.bias));
  const hd = R.mul(h, mask(foldIn(k, 0), h));
  const y = R.add(R.matmul(hd, p.fc2.weight, { transB: true }), p.fc2.bias);
  const want = R.mul(y, mask(foldIn(k, 1), y)).dataSync();
  const plain = R.add(R.matmul(h, p.fc2.weight, { transB: true }), p.fc2.bias).dataSync();
  const close = (got: Tensor, ref: Float32Array, what: string) => {
    const g = got.dataSync();
    for (let i = 0; i < g.length; i++) assert.ok(Math.abs(g[i] - ref[i]) <= 1e-5 * (1 + Math.abs(ref[i])), `${what}: element ${i}: ${g[i]} vs ${ref[i]}`);
  };
  close(mlp(p, x, k, { drop }), want, 'training (default)');
  close(mlp(p, x, k, { drop, train: true }), want, 'training');
  close(mlp(p, x, k, { drop, train: false }), plain, 'eval');
  close(mlp(p, x, undefined, { drop, train: false }), plain, 'eval without a key');
  close(mlp(p, x, k), plain, 'no dropout');
  close(mlp(p, x), plain, 'no dropout, no key');
  assert.throws(() => mlp(p, x, undefined, { drop }), (e: unknown) => e instanceof R.ArgumentError && /needs a key/.test(e.message));
  assert.ok(Array.from(want).some((v, i) => Math.abs(v - plain[i]) > 1e-3), 'the masks change the output');
});

// --- dropout and drop-path: statistics over many keys ----------------------------------------------

/** |observed - expected| within 5 standard deviations. */
const within5 = (observed: number, expected: number, sd: number, what: string) =>
  assert.ok(Math.abs(observed - expected) <= 5 * sd, `${what}: ${observed} vs ${expected} ± 5 × ${sd}`);

test('dropout over 64 keys x 256 elements: kept fraction 1-p and mean 1 (for x = 1) within 5 sigma', () => {
  for (const p of [0.1, 0.3, 0.5, 0.8]) {
    const n = 64 * 256;
    let kept = 0;
    let total = 0;
    for (let j = 0; j < 64; j++) {
      const y = dropout(foldIn(key(11), j), p, R.ones([256]), TRAIN).dataSync();
      for (const v of y) {
        if (v !== 0) kept++;
        total += v;
      }
    }
    within5(kept / n, 1 - p, Math.sqrt((p * (1 - p)) / n), `dropout p ${p}: kept fraction`);
    // Each output is 1/(1-p) with probability 1-p, else 0: mean 1, variance p/(1-p).
    within5(total / n, 1, Math.sqrt(p / (1 - p) / n), `dropout p ${p}: mean`);
  }
});

test('dropPath over 64 keys x 64 samples: kept fraction 1-p and mean 1 (for x = 1), one decision per sample', () => {
  for (const p of [0.1, 0.3, 0.5]) {
    const n = 64 * 64;
    let kept = 0;
    let total = 0;
    for (let j = 0; j < 64; j++) {
      const y = dropPath(foldIn(key(12), j), p, R.ones([64, 3, 2]), TRAIN).dataSync();
      for (let b = 0; b < 64; b++) {
        const row = y.subarray(b * 6, b * 6 + 6);
        assert.ok(row.every((v) => v === row[0]), 'a sample is kept or dropped as a whole');
        if (row[0] !== 0) kept++;
        total += row[0];
      }
    }
    within5(kept / n, 1 - p, Math.sqrt((p * (1 - p)) / n), `dropPath p ${p}: kept fraction`);
    within5(total / n, 1, Math.sqrt(p / (1 - p) / n), `dropPath p ${p}: mean`);
  }
});

// --- layerNorm with small variance --------------------------------------------------------------

/** Rows c + d·u with u uniform in [-1, 1): d sets the standard deviation (d/√3), c the offset. */
function rowsOf(n: number, seed: number, specs: readonly { d: number; c: number }[]): Float32Array {
  const r = rng(seed);
  const out = new Float32Array(specs.length * n);
  specs.forEach(({ d, c }, i) => {
    for (let j = 0; j < n; j++) out[i * n + j] = c + d * (2 * r() - 1);
  });
  return out;
}

/**
 * float64 LayerNorm of the (float32) data, y = (x - mu) / sqrt(var + eps) · w + b, its VJP at g, and per
 * row the size of the terms each result is made of (|xhat·w| + |b| forward, |g·w| / sigma backward).
 */
function layerNormRef(x: Float32Array, n: number, w: Float32Array, b: Float32Array, g: Float32Array, eps: number) {
  const y = new Float64Array(x.length);
  const dx = new Float64Array(x.length);
  const fwdScale: number[] = [];
  const gradScale: number[] = [];
  for (let r = 0; r < x.length / n; r++) {
    const row = Array.from(x.subarray(r * n, r * n + n));
    const mu = row.reduce((a, v) => a + v, 0) / n;
    const variance = row.reduce((a, v) => a + (v - mu) ** 2, 0) / n;
    const sigma = Math.sqrt(variance + eps);
    const xhat = row.map((v) => (v - mu) / sigma);
    // dL/dxhat = g · w; dx = (dxhat - mean(dxhat) - xhat · mean(dxhat · xhat)) / sigma.
    const dxhat = xhat.map((_, j) => g[r * n + j] * w[j]);
    const m1 = dxhat.reduce((a, v) => a + v, 0) / n;
    const m2 = dxhat.reduce((a, v, j) => a + v * xhat[j], 0) / n;
    xhat.forEach((h, j) => {
      y[r * n + j] = h * w[j] + b[j];
      dx[r * n + j] = (dxhat[j] - m1 - h * m2) / sigma;
    });
    fwdScale.push(Math.max(...xhat.map((h, j) => Math.abs(h * w[j]) + Math.abs(b[j]))));
    gradScale.push(Math.max(...dxhat.map(Math.abs)) / sigma);
  }
  return { y, dx, fwdScale, gradScale };
}

// Rows centred on 0 with standard deviations from far below sqrt(eps) to far above it (where eps outside
// the square root is off by 3x to 100x), and rows with an offset of 1 where float32 can still resolve them.
const ROWS = [
  ...[1e-4, 1e-3, 3e-3, 1e-2, 1e-1, 1].map((d) => ({ d, c: 0, tol: 2e-5 })),
  // The float32 mean of n values near 1 is off by up to ~n · 2^-24; relative to a deviation of d/√3.
  ...[1e-2, 1e-1].map((d) => ({ d, c: 1, tol: 1e-3 })),
];

test('layerNorm on rows of small variance (std 6e-5 .. 0.6, offsets 0 and 1) matches float64 with eps inside the sqrt, forward and gradient, in every mode', () => {
  assertProperty(
    fc.property(fc.integer({ min: 2, max: 24 }), fc.constantFrom(1e-6, 1e-5, 1e-3), arb.seed(), (n, eps, seed) => {
      const rows = ROWS.length;
      const x = rowsOf(n, seed, ROWS);
      const r = rng(seed + 1);
      const w = Float32Array.from({ length: n }, () => 0.5 + r());
      const b = Float32Array.from({ length: n }, () => r() - 0.5);
      const g = Float32Array.from({ length: rows * n }, () => 2 * r() - 1);
      const ref = layerNormRef(x, n, w, b, g, eps);
      for (const mode of ALL_MODES) {
        const [y, dx] = mode.run(() => {
          const [out, pullback] = R.vjp((t: Tensor) => layerNorm({ weight: R.tensor(w), bias: R.tensor(b) }, t, eps), R.tensor(x, [rows, n]));
          return [out.dataSync(), (pullback(R.tensor(g, [rows, n]))[0] as Tensor).dataSync()];
        });
        ROWS.forEach(({ d, c, tol }, row) => {
          for (const [what, got, want, scale] of [['forward', y, ref.y, ref.fwdScale[row]], ['gradient', dx, ref.dx, ref.gradScale[row]]] as const) {
            let err = 0;
            for (let j = row * n; j < (row + 1) * n; j++) err = Math.max(err, Math.abs(got[j] - want[j]));
            assert.ok(err <= tol * scale, `${mode.name}, ${what}, row ${row} (spread ${d}, offset ${c}, eps ${eps}, n ${n}): error ${err} > ${tol} × ${scale}`);
          }
        });
      }
    }),
    { numRuns: 12 },
  );
});

test('layerNorm of a constant row is 0 (the variance is eps alone) and its gradient (g - mean(g)) / sqrt(eps)', () => {
  for (const mode of ALL_MODES) {
    const [y, dx] = mode.run(() => {
      const [out, pullback] = R.vjp((t: Tensor) => R.layerNorm(t, null, null, 1e-5), R.full([2, 5], 3));
      return [out.dataSync(), (pullback(R.tensor(Float32Array.from({ length: 10 }, (_, i) => (i % 5) - 4), [2, 5]))[0] as Tensor).dataSync()];
    });
    assert.ok(y.every((v) => v === 0), `${mode.name}: ${y}`);
    // Per row g = [-4, -3, -2, -1, 0], mean -2: dx = [-2, -1, 0, 1, 2] / sqrt(1e-5).
    Array.from(dx).forEach((v, i) => assert.ok(Math.abs(v - ((i % 5) - 2) / Math.sqrt(1e-5)) <= 1e-5 * 633, `${mode.name}: dx[${i}] = ${v}`));
  }
});

test.run();
