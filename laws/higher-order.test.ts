/**
 * Laws of higher-order autodiff (src/autodiff/tape.ts jvp, hvp, customVjp at several levels), on both backends:
 *  (a) jvp of every op case agrees with central finite differences, and with the pullback: <u, J t> = <Jᵀ u, t>;
 *  (b) hvp of every op case (through s(x) = <w, f(x)²> / 2, so linear ops have curvature too) agrees with
 *      central differences of the gradient, and Hessians are symmetric: <H t1, t2> = <t1, H t2>;
 *  (c) customVjp at second order: JAX semantics (the rule at the level that differentiates the op, forward as
 *      ordinary code for enclosing levels): Hessian-vector products through custom ops equal plain autodiff's
 *      and finite differences, while a single level keeps only the residuals;
 *  (d) jvp and hvp through reversible sequences (attention, layerNorm, GELU branches; custom VJP) equal the
 *      store-mode (plain autodiff) values and finite differences, and through a small Rev-MViT with max-pooling
 *      attention (maxPool's and layerNorm's second-order rules).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fc from 'fast-check';
import * as E from 'fp-ts/lib/Either.js';
import { withBackend } from '../src/backend/backend.ts';
import * as R from '../src/index.ts';
import type { Tensor } from '../src/index.ts';
import { formatProblems, parseConfig } from '../src/models/mvit/config.ts';
import { buildModel } from '../src/models/mvit/model.ts';
import { dropout, layerNorm, linear, type LinearParams, type NormParams } from '../src/nn/index.ts';
import { foldIn, key, normal, split, type Key } from '../src/random/index.ts';
import { reversible, sequence, type BlockParams, type Pair } from '../src/reversible/index.ts';
import { assertClose, assertProperty, BACKENDS, dot, EPS32, maxAbs, OP_CASES, rand, seedArb, shapeArb, uniform, type OpCase } from './helpers.ts';
import { jit } from '../src/jit/index.ts';

const leavesOf = (t: Tensor | Tensor[]): Tensor[] => (Array.isArray(t) ? t : [t]);
const f64 = (t: Tensor): Float64Array => Float64Array.from(t.dataSync());
/** Σ over matching leaves of <a, b>, in float64. */
const treeDot = (a: unknown, b: unknown): number => {
  const la = R.leaves(a);
  const lb = R.leaves(b);
  return la.reduce((s, t, i) => s + dot(f64(t), f64(lb[i])), 0);
};
const sumAbsProducts = (a: unknown, b: unknown): number => {
  const la = R.leaves(a);
  const lb = R.leaves(b);
  let s = 0;
  la.forEach((t, i) => {
    const x = t.dataSync();
    const y = lb[i].dataSync();
    for (let j = 0; j < x.length; j++) s += Math.abs(x[j] * y[j]);
  });
  return s;
};

/**
 * A central-difference pair around the case's inputs: x ± h v on the differentiable inputs, and the
 * tangent t = ((x + h v) - (x - h v)) / 2h computed from the two float32 inputs, so the difference
 * quotient carries no input-rounding error (as laws/helpers.ts checkVjp). Other inputs get t = 0.
 */
function fdPair(c: OpCase, seed: number, h: number) {
  const wrt = new Set(c.wrt ?? c.inputs.map((_, i) => i));
  const plus: Tensor[] = [];
  const minus: Tensor[] = [];
  const tangents: Tensor[] = [];
  c.inputs.forEach((x, i) => {
    if (!wrt.has(i)) {
      plus.push(x);
      minus.push(x);
      tangents.push(R.zerosLike(x));
      return;
    }
    const v = uniform(x.size, seed + 7 + 13 * i);
    const xs = x.dataSync();
    const xp = Float32Array.from(xs, (xi, j) => xi + h * v[j]);
    const xm = Float32Array.from(xs, (xi, j) => xi - h * v[j]);
    plus.push(R.tensor(xp, [...x.shape]));
    minus.push(R.tensor(xm, [...x.shape]));
    tangents.push(R.tensor(Float32Array.from(xp, (p, j) => (p - xm[j]) / (2 * h)), [...x.shape]));
  });
  return { plus, minus, tangents };
}

// --- (a) jvp ----------------------------------------------------------------------------------------

/**
 * <u, J t> against <u, f(x + h v) - f(x - h v)> / 2h. Tolerance as checkVjp: 2e-3 of the sum of |terms|
 * (central-difference truncation, h = 1e-2) plus 64 ulps of |f(x ± hv)| weighted by |u|, divided by 2h.
 */
function checkJvp(c: OpCase, seed: number): void {
  const h = 1e-2;
  const { plus, minus, tangents } = fdPair(c, seed, h);
  const [y, jt] = R.jvp(c.f, c.inputs, tangents);
  const ys = leavesOf(y);
  const jts = leavesOf(jt);
  assert.equal(jts.map((t) => t.shape.join(',')), ys.map((t) => t.shape.join(',')), 'tangent output shapes');
  const us = ys.map((t, k) => uniform(t.size, seed + 101 * k));
  const fp = leavesOf(c.f(...plus));
  const fm = leavesOf(c.f(...minus));
  let analytic = 0;
  let absAnalytic = 0;
  let numeric = 0;
  let absNumeric = 0;
  let round = 0;
  ys.forEach((_, k) => {
    const [j, a, b, u] = [jts[k].dataSync(), fp[k].dataSync(), fm[k].dataSync(), us[k]];
    for (let i = 0; i < u.length; i++) {
      analytic += u[i] * j[i];
      absAnalytic += Math.abs(u[i] * j[i]);
      numeric += (u[i] * (a[i] - b[i])) / (2 * h);
      absNumeric += Math.abs((u[i] * (a[i] - b[i])) / (2 * h));
      round += (Math.abs(u[i]) * (Math.abs(a[i]) + Math.abs(b[i]))) / (2 * h);
    }
  });
  const tol = 2e-3 * Math.max(absAnalytic, absNumeric) + 64 * EPS32 * round + 1e-30;
  if (!(Math.abs(analytic - numeric) <= tol)) throw new Error(`<u, J t> = ${analytic}, finite difference ${numeric}, tol ${tol}`);
  // The transpose identity: <u, J t> = <Jᵀ u, t>, both from the library, equal up to float32 rounding.
  const [, pullback] = R.vjp(c.f, ...c.inputs);
  const cts = us.map((u, k) => R.tensor(u, [...ys[k].shape]));
  const jtu = pullback((Array.isArray(y) ? cts : cts[0]) as never);
  const viaVjp = treeDot(jtu, tangents);
  // Relative to the products' sizes, with a floor of 1e-6 |u| |t| where J is ~0 and its entries round-off
  // (layerNorm over 2 values: the output is ±1 whatever x is).
  const norm = (ts: unknown) => Math.sqrt(treeDot(ts, ts));
  const scale = sumAbsProducts(jtu, tangents) + absAnalytic;
  if (!(Math.abs(viaVjp - analytic) <= 1e-5 * scale + 1e-6 * norm(cts) * norm(tangents) + 1e-30)) throw new Error(`<u, J t> = ${analytic} but <Jᵀu, t> = ${viaVjp}`);
}

for (const entry of OP_CASES) {
  test(`(a) jvp of ${entry.name} agrees with finite differences and with its pullback`, () => {
    assertProperty(
      fc.property(entry.arb, seedArb, (p, seed) => {
        for (const backend of BACKENDS) {
          withBackend(backend, () => {
            try {
              checkJvp(entry.build(p), seed);
            } catch (e) {
              throw new Error(`${entry.name} on ${backend}: ${(e as Error).message}`);
            }
          });
        }
      }),
      { numRuns: 6 },
    );
  });
}

test('(a) the jvp check catches a wrong rule (a customVjp whose backward is 1.1x the derivative)', () => {
  const wrong = R.customVjp((x: Tensor) => [R.tanh(x), R.tanh(x)] as [Tensor, Tensor], (y: Tensor, g: Tensor) => [R.mul(R.mul(g, R.sub(1, R.mul(y, y))), 1.1)]);
  assert.throws(() => checkJvp({ inputs: [rand([3, 4], 5)], f: (x) => wrong(x) }, 3), /finite difference/);
});

test('(a) jvp over pytrees: tangents shaped like the primals, outputs shaped like f\'s output; mismatches are typed errors', () => {
  const p = { w: rand([3, 2], 1), b: [rand([2], 2)] };
  const x = rand([4, 3], 3);
  const f = (q: typeof p, a: Tensor) => ({ y: R.tanh(R.add(R.matmul(a, q.w), q.b[0])), s: R.sum(a) });
  const t = { w: rand([3, 2], 4), b: [rand([2], 5)] };
  const tx = rand([4, 3], 6);
  const [out, tout] = R.jvp(f, [p, x], [t, tx]);
  assert.equal(Object.keys(tout), ['y', 's']);
  assert.equal(tout.y.shape, out.y.shape);
  assert.equal(tout.s.shape, []);
  // d sum(a) along tx is sum(tx): exact up to rounding.
  assertClose(tout.s, R.sum(tx), 1e-6, 1e-6, 'd sum(a)');
  assert.throws(() => R.jvp(f, [p, x], [t] as never), (e: unknown) => e instanceof R.ArgumentError && /1 tangents/.test((e as Error).message));
  assert.throws(() => R.jvp(f, [p, x], [{ w: t.w }, tx] as never), (e: unknown) => e instanceof R.ArgumentError && /structure/.test((e as Error).message));
  assert.throws(() => R.jvp(f, [p, x], [t, rand([3, 4], 7)]), (e: unknown) => e instanceof R.ShapeError && /tangent 1 has shape \[3, 4\], its primal \[4, 3\]/.test((e as Error).message));
});

// --- (b) hvp ----------------------------------------------------------------------------------------

/** s(x) = <w, f(x)²> / 2: curved even where f is linear, so every rule is differentiated in x and in g. */
function scalarOf(c: OpCase, seed: number): (...xs: Tensor[]) => Tensor {
  const ys = leavesOf(c.f(...c.inputs));
  const ws = ys.map((t, k) => R.tensor(uniform(t.size, seed + 31 * k), [...t.shape]));
  return (...xs) => leavesOf(c.f(...xs)).reduce<Tensor>((acc, t, k) => R.add(acc, R.mul(R.sum(R.mul(R.square(t), ws[k])), 0.5)), R.scalar(0));
}

/**
 * <z, H t> against central differences of the gradient along t, Richardson-extrapolated from steps h and 2h
 * ((4 D(h) - D(2h)) / 3 cancels the h² term, which dominates where H is small next to the third derivative:
 * mul of two small scalars). The 2h pair steps along the same v; its tangent differs from t by rounding only.
 */
function checkHvp(c: OpCase, seed: number, fd = true): void {
  const h = 1e-2;
  const s = scalarOf(c, seed);
  const { plus, minus, tangents } = fdPair(c, seed, h);
  const far = fdPair(c, seed, 2 * h);
  const hv = R.hvp(s, c.inputs, tangents);
  const gradAll = (xs: Tensor[]) => {
    const [, pb] = R.vjp(s, ...xs);
    return pb();
  };
  const [gp, gm, gp2, gm2] = [plus, minus, far.plus, far.minus].map(gradAll);
  const wrt = c.wrt ?? c.inputs.map((_, i) => i);
  let analytic = 0;
  let absAnalytic = 0;
  let numeric = 0;
  let absNumeric = 0;
  let round = 0;
  for (const i of wrt) {
    const z = uniform(c.inputs[i].size, seed + 57 * i);
    const [a, b, a2, b2, v] = [gp[i], gm[i], gp2[i], gm2[i], hv[i]].map((t) => t.dataSync());
    for (let j = 0; j < z.length; j++) {
      const d = (4 * (a[j] - b[j])) / (2 * h) / 3 - (a2[j] - b2[j]) / (4 * h) / 3;
      analytic += z[j] * v[j];
      absAnalytic += Math.abs(z[j] * v[j]);
      numeric += z[j] * d;
      absNumeric += Math.abs(z[j] * d);
      round += Math.abs(z[j]) * ((4 * (Math.abs(a[j]) + Math.abs(b[j]))) / (2 * h) + (Math.abs(a2[j]) + Math.abs(b2[j])) / (4 * h)) / 3;
    }
  }
  const tol = 3e-3 * Math.max(absAnalytic, absNumeric) + 64 * EPS32 * round + 1e-30;
  if (fd && !(Math.abs(analytic - numeric) <= tol)) throw new Error(`<z, H t> = ${analytic}, finite difference of the gradient ${numeric}, tol ${tol}`);
  // Symmetry: <H t1, t2> = <t1, H t2> for a second tangent t2.
  const t2 = fdPair(c, seed + 1000, h).tangents;
  const h2 = R.hvp(s, c.inputs, t2);
  const lhs = treeDot(hv, t2);
  const rhs = treeDot(tangents, h2);
  // Relative to the products' sizes, with a floor of 1e-6 |t1| |t2| where H is ~0 and its entries round-off
  // (sqrt(x)² = x: the two products are ~1e-13 and not proportional).
  const norm = (ts: unknown) => Math.sqrt(treeDot(ts, ts));
  const scale = sumAbsProducts(hv, t2) + sumAbsProducts(tangents, h2);
  if (!(Math.abs(lhs - rhs) <= 2e-5 * scale + 1e-6 * norm(tangents) * norm(t2) + 1e-30)) throw new Error(`<H t1, t2> = ${lhs} but <t1, H t2> = ${rhs}`);
}

for (const entry of OP_CASES) {
  test(`(b) hvp through ${entry.name} agrees with finite differences of the gradient; H is symmetric`, () => {
    assertProperty(
      fc.property(entry.arb, seedArb, (p, seed) => {
        for (const backend of BACKENDS) {
          withBackend(backend, () => {
            try {
              // layerNorm over 2 values is ±d/sqrt(d² + eps): its x-gradient is a cancellation of terms ~1/std down
              // to ~1e-4 of them, whose float32 round-off the difference quotient magnifies 1/2h = 50 times above
              // the Hessian itself. Those cases check symmetry only (and n = 3, 4 the finite differences).
              checkHvp(entry.build(p), seed, !(entry.name === 'layerNorm' && p.n === 2 && !p.affine));
            } catch (e) {
              throw new Error(`${entry.name} on ${backend}: ${(e as Error).message}`);
            }
          });
        }
      }),
      { numRuns: 4 },
    );
  });
}

test('(b) the hvp check catches a wrong second derivative (exp as a customVjp whose residual is cut from enclosing levels)', () => {
  // First derivatives are right; the residual e^x is a constant to the enclosing level, so H misses a term.
  const frozen = R.customVjp((x: Tensor) => [R.exp(x), R.untraced(() => R.exp(x))] as [Tensor, Tensor], (y: Tensor, g: Tensor) => [R.mul(g, y)]);
  assert.throws(() => checkHvp({ inputs: [rand([5], 2)], f: (x) => frozen(x) }, 4), /finite difference/);
});

// --- (c) customVjp at second order ----------------------------------------------------------------

const sigmoid = (x: Tensor) => R.div(1, R.add(1, R.exp(R.neg(x))));
/** softplus with sigmoid(x), computed inside forward, as its residual. */
const softplus = R.customVjp(
  (x: Tensor) => [R.log(R.add(1, R.exp(x))), sigmoid(x)] as [Tensor, Tensor],
  (s: Tensor, g: Tensor) => [R.mul(g, s)],
);
/** Two arguments, two outputs, residuals that are nonlinear in both: (a e^b, a²), residuals e^b and a. */
const pairOp = R.customVjp(
  (a: Tensor, b: Tensor) => {
    const eb = R.exp(b);
    return [[R.mul(a, eb), R.mul(a, a)], { eb, a }] as [[Tensor, Tensor], { eb: Tensor; a: Tensor }];
  },
  (r: { eb: Tensor; a: Tensor }, [g1, g2]: [Tensor, Tensor]) => [R.add(R.mul(g1, r.eb), R.mul(R.mul(g2, r.a), 2)), R.mul(R.mul(g1, r.a), r.eb)],
);
/** A custom op whose forward calls another custom op (the levels nest inside forward too). */
const nested = R.customVjp(
  (x: Tensor) => {
    const y = softplus(R.mul(x, 2));
    return [R.mul(y, y), { x, y }] as [Tensor, { x: Tensor; y: Tensor }];
  },
  (r: { x: Tensor; y: Tensor }, g: Tensor) => [R.mul(R.mul(g, R.mul(r.y, 4)), sigmoid(R.mul(r.x, 2)))],
);
const plainSoftplus = (x: Tensor) => R.log(R.add(1, R.exp(x)));

const CUSTOM: Record<string, { custom: (x: Tensor, y: Tensor) => Tensor; plain: (x: Tensor, y: Tensor) => Tensor }> = {
  softplus: { custom: (x, y) => R.sum(R.mul(softplus(x), y)), plain: (x, y) => R.sum(R.mul(plainSoftplus(x), y)) },
  'pair (two args, two outputs)': {
    custom: (x, y) => {
      const [p, q] = pairOp(R.tanh(x), y);
      return R.sum(R.add(R.mul(p, y), R.tanh(q)));
    },
    plain: (x, y) => {
      const a = R.tanh(x);
      return R.sum(R.add(R.mul(R.mul(a, R.exp(y)), y), R.tanh(R.mul(a, a))));
    },
  },
  'nested custom ops': { custom: (x, y) => R.sum(R.mul(nested(x), y)), plain: (x, y) => R.sum(R.mul(R.square(plainSoftplus(R.mul(x, 2))), y)) },
};

test('(c) the reported case: grad of grad of softplus (residual sigmoid(x) from forward) is sigmoid\'(x)', () => {
  for (const backend of BACKENDS) {
    withBackend(backend, () => {
      const x = R.tensor([-2, 0, 3]);
      const g2 = R.grad((t: Tensor) => R.sum(R.grad((u: Tensor) => R.sum(softplus(u)))(t) as Tensor))(x) as Tensor;
      const want = [-2, 0, 3].map((v) => Math.exp(-v) / (1 + Math.exp(-v)) ** 2); // 0.105, 0.25, 0.045
      assertClose(g2, R.tensor(want), 1e-6, 1e-7, backend);
    });
  }
});

for (const [name, ops] of Object.entries(CUSTOM)) {
  test(`(c) hvp through customVjp (${name}) equals plain autodiff and finite differences, in both arguments`, () => {
    assertProperty(
      fc.property(shapeArb(0, 3), seedArb, (shape, seed) => {
        for (const backend of BACKENDS) {
          withBackend(backend, () => {
            const x = rand(shape, seed);
            const y = rand(shape, seed + 1, 0.5, 1.5);
            const tx = rand(shape, seed + 2);
            const ty = rand(shape, seed + 3);
            const viaCustom = R.hvp(ops.custom, [x, y], [tx, ty]);
            const viaPlain = R.hvp(ops.plain, [x, y], [tx, ty]);
            viaCustom.forEach((t, i) => assertClose(t, viaPlain[i], 2e-5, 1e-6, `${backend}: argument ${i}`));
            // ... and both equal the central difference of the gradient along (tx, ty).
            checkHvpAgainstFd(ops.custom, [x, y], [tx, ty], viaCustom, `${backend} ${name}`);
          });
        }
      }),
      { numRuns: 8 },
    );
  });
}

/**
 * H t against central differences of the gradient along t, Richardson-extrapolated from steps h and 2h
 * ((4 D(h) - D(2h)) / 3 cancels the h² term: softplus(2x)² has fourth derivatives 16x its second).
 */
function checkHvpAgainstFd(f: (...xs: Tensor[]) => Tensor, xs: Tensor[], ts: Tensor[], hv: Tensor[], what: string): void {
  const h = 1e-2;
  const at = (step: number) => {
    const [, pb] = R.vjp(f, ...xs.map((x, i) => R.add(x, R.mul(ts[i], step))));
    return pb();
  };
  const [g1p, g1m, g2p, g2m] = [at(h), at(-h), at(2 * h), at(-2 * h)];
  hv.forEach((v, i) => {
    const d1 = R.div(R.sub(g1p[i], g1m[i]), 2 * h);
    const d2 = R.div(R.sub(g2p[i], g2m[i]), 4 * h);
    const fd = R.div(R.sub(R.mul(d1, 4), d2), 3);
    assertClose(v, fd, 5e-3, 1e-7, `${what}: argument ${i} against finite differences`);
  });
}

test('(c) one level keeps only the residuals; an enclosing level sees forward as ordinary code', () => {
  for (const backend of BACKENDS) {
    withBackend(backend, () => {
      const x = rand([4, 5], 3);
      // One level: the node keeps sigmoid(x) (80 bytes); log/exp/add inside forward are not recorded.
      const [, pb] = R.vjp((t: Tensor) => R.sum(softplus(t)), x);
      assert.is(pb.residualBytes, 4 * 20, `${backend}: single level`);
      // Two levels: the outer trace records forward's ops (it differentiates through them), so it keeps more.
      const [, outer] = R.vjp((t: Tensor) => R.sum(R.grad((u: Tensor) => R.sum(softplus(u)))(t) as Tensor), x);
      assert.ok(outer.residualBytes > 4 * 20, `${backend}: outer level keeps ${outer.residualBytes} bytes`);
    });
  }
});

test('(c) inside a custom op\'s forward at a single level nothing records, so a jitted function there runs as a program', () => {
  const inner = jit((x: Tensor) => R.tanh(R.mul(x, 2)));
  const op = R.customVjp((x: Tensor) => [inner(x), x] as [Tensor, Tensor], (x: Tensor, g: Tensor) => [R.mul(g, R.mul(R.sub(1, R.square(R.tanh(R.mul(x, 2)))), 2))]);
  const x = rand([3, 4], 7);
  const g = R.grad((t: Tensor) => R.sum(op(R.exp(t))))(x);
  assert.is(inner.stats.replays, 1, 'forward ran the compiled program');
  assert.is(inner.stats.inlined, 0);
  assertClose(g, R.grad((t: Tensor) => R.sum(R.tanh(R.mul(R.exp(t), 2))))(x), 1e-5, 1e-7, 'gradient');
  // At second order the enclosing level records forward, so the jitted function runs eagerly there.
  R.grad((t: Tensor) => R.sum(R.grad((u: Tensor) => R.sum(op(u)))(t)))(x);
  assert.is(inner.stats.inlined, 1);
});

test('(c) the hvp law fails if enclosing levels do not see forward (the old behaviour: second derivative 0)', () => {
  // untraced(forward) reproduces the old semantics: the residual is a constant for every level.
  const frozen = R.customVjp(
    (x: Tensor) => R.untraced(() => [R.log(R.add(1, R.exp(x))), sigmoid(x)] as [Tensor, Tensor]),
    (s: Tensor, g: Tensor) => [R.mul(g, s)],
  );
  const x = rand([3], 5);
  const t = rand([3], 6);
  const [hv] = R.hvp((u: Tensor) => R.sum(frozen(u)), [x], [t]);
  assert.equal(Array.from(hv.dataSync()), [0, 0, 0]);
  assert.throws(() => checkHvpAgainstFd((u: Tensor) => R.sum(frozen(u)), [x], [t], [hv], 'frozen'), /against finite differences/);
});

// --- (d) through reversible sequences and a Rev-MViT ---------------------------------------------

const TRAIN = { train: true };
const lin = (k: Key, out: number, inp: number, gain = 0.7): LinearParams => {
  const [kw, kb] = split(k);
  return { weight: R.mul(normal(kw, [out, inp]), gain / Math.sqrt(inp)), bias: R.mul(normal(kb, [out]), 0.1) };
};
const norm = (k: Key, c: number): NormParams => ({ weight: R.add(1, R.mul(normal(k, [c]), 0.1)), bias: R.mul(normal(foldIn(k, 1), [c]), 0.1) });

interface AttnP { norm: NormParams; q: LinearParams; k: LinearParams; v: LinearParams; o: LinearParams }
interface MlpP { norm: NormParams; fc1: LinearParams; fc2: LinearParams }

/** F: pre-norm attention with dropout on the weights (a fixed mask per key); G: pre-norm GELU MLP. */
const attention = (p: AttnP, x: Tensor, k: Key) => {
  const h = layerNorm(p.norm, x);
  const scores = R.div(R.matmul(linear(p.q, h), linear(p.k, h), { transB: true }), Math.sqrt(x.shape[x.rank - 1]));
  return linear(p.o, R.matmul(dropout(k, 0.2, R.softmax(scores, -1), TRAIN), linear(p.v, h)));
};
const mlpBranch = (p: MlpP, x: Tensor) => linear(p.fc2, R.gelu(linear(p.fc1, layerNorm(p.norm, x))));

function revSetup(C: number, depth: number) {
  const blocks = Array.from({ length: depth }, (_, i) => reversible(attention, mlpBranch, { buffer: i === 1 }));
  const ks = split(key(17), depth);
  const params: BlockParams<AttnP, MlpP>[] = ks.map((k) => {
    const [a, b, c, d, e, f, g, h] = split(k, 8);
    return { F: { norm: norm(a, C), q: lin(b, C, C), k: lin(c, C, C), v: lin(d, C, C), o: lin(e, C, C) }, G: { norm: norm(f, C), fc1: lin(g, 2 * C, C), fc2: lin(h, C, 2 * C) } };
  });
  return { seq: sequence(blocks), params };
}

test('(d) jvp and hvp through a reversible sequence (attention + layerNorm + GELU) equal store mode and finite differences', () => {
  const C = 6;
  const { seq, params } = revSetup(C, 3);
  const fk = key(5);
  for (const backend of BACKENDS) {
    withBackend(backend, () => {
      const [k1, k2, k3, k4] = split(key(9), 4);
      const xs: Pair = [normal(k1, [2, 3, C]), normal(k2, [2, 3, C])];
      const ts: Pair = [normal(k3, [2, 3, C]), normal(k4, [2, 3, C])];
      const w = normal(key(13), [2, 3, C]);
      const run = (mode: 'reversible' | 'store') => (p: typeof params, x: Pair) => seq.forward(p, x, fk, { mode });
      const tp = R.mapTree(params, (t) => R.mul(normal(foldIn(key(21), t.size), [...t.shape]), 0.5));
      // jvp w.r.t. params and inputs at once.
      const [yRev, jRev] = R.jvp(run('reversible'), [params, xs], [tp, ts]);
      const [yStore, jStore] = R.jvp(run('store'), [params, xs], [tp, ts]);
      yRev.forEach((y, i) => assertClose(y, yStore[i], 1e-5, 1e-6, `${backend}: outputs`));
      jRev.forEach((t, i) => assertClose(t, jStore[i], 1e-4, 1e-5, `${backend}: jvp reversible vs store, stream ${i}`));
      const h = 1e-2;
      const shift = (s: number) => run('store')(R.zipTrees([params, tp], ([p, t]) => R.add(p, R.mul(t, s * h))), [R.add(xs[0], R.mul(ts[0], s * h)), R.add(xs[1], R.mul(ts[1], s * h))]);
      const [fp, fm] = [shift(1), shift(-1)];
      jRev.forEach((t, i) => assertClose(t, R.div(R.sub(fp[i], fm[i]), 2 * h), 5e-3, 5e-4, `${backend}: jvp vs finite differences, stream ${i}`));
      // hvp of a scalar loss w.r.t. the inputs, reversible (custom VJP at the inner level) vs store.
      const loss = (mode: 'reversible' | 'store') => (x1: Tensor, x2: Tensor) => {
        const [y1, y2] = run(mode)(params, [x1, x2]);
        return R.sum(R.mul(R.tanh(R.add(y1, y2)), w));
      };
      const hRev = R.hvp(loss('reversible'), [xs[0], xs[1]], [ts[0], ts[1]]);
      const hStore = R.hvp(loss('store'), [xs[0], xs[1]], [ts[0], ts[1]]);
      hRev.forEach((t, i) => assertClose(t, hStore[i], 1e-4, 1e-5, `${backend}: hvp reversible vs store, input ${i}`));
      checkHvpAgainstFd(loss('reversible'), [xs[0], xs[1]], [ts[0], ts[1]], hRev, `${backend} reversible`);
    });
  }
});

/** The small video Rev-MViT of test/mvit-variants.test.ts, with max-pooling attention, two blocks. */
const MVIT_MAX = {
  DATA: { NUM_FRAMES: 4, TRAIN_CROP_SIZE: 8, TEST_CROP_SIZE: 8, INPUT_CHANNEL_NUM: [3] },
  MODEL: { NUM_CLASSES: 5, DROPOUT_RATE: 0.0, HEAD_ACT: 'softmax' },
  MVIT: {
    PATCH_2D: false, PATCH_KERNEL: [3, 3, 3], PATCH_STRIDE: [2, 2, 2], PATCH_PADDING: [1, 1, 1],
    EMBED_DIM: 8, NUM_HEADS: 1, DEPTH: 2, MLP_RATIO: 2.0, QKV_BIAS: true, SEPARATE_QKV: false, MODE: 'max',
    CLS_EMBED_ON: false, USE_ABS_POS: true, SEP_POS_EMBED: true,
    DIM_MUL: [], HEAD_MUL: [], POOL_Q_STRIDE: [],
    POOL_KVQ_KERNEL: [3, 3, 3], POOL_KV_STRIDE_ADAPTIVE: [1, 2, 2],
    REL_POS_SPATIAL: false, REL_POS_TEMPORAL: false, RESIDUAL_POOLING: true, USE_MEAN_POOLING: false,
    DROPOUT_RATE: 0.0, DROPPATH_RATE: 0.0,
    REV: { ENABLE: true, BUFFER_LAYERS: [], RES_PATH: 'conv', PRE_Q_FUSION: 'avg', RESPATH_FUSE: 'concat' },
  },
};

test('(d) hvp w.r.t. the input of a Rev-MViT with max-pooling attention (patch conv, layerNorm, attention, GELU): reversible = store = finite differences', () => {
  const parsed = parseConfig(MVIT_MAX);
  if (E.isLeft(parsed)) return assert.unreachable(formatProblems(parsed.left));
  const model = buildModel(parsed.right);
  const params = model.init(key(0));
  const [kx, kt, kw] = split(key(3), 3);
  const x = normal(kx, [1, 3, 4, 8, 8]);
  const t = normal(kt, [1, 3, 4, 8, 8]);
  const w = normal(kw, [1, 5]);
  const loss = (mode: 'reversible' | 'store') => (input: Tensor) =>
    R.sum(R.mul(model.apply(params, input, key(1), { train: true, mode }) as Tensor, w));
  const [hRev] = R.hvp(loss('reversible'), [x], [t]);
  const [hStore] = R.hvp(loss('store'), [x], [t]);
  assertClose(hRev, hStore, 1e-4, 1e-6, 'reversible vs store');
  assert.ok(maxAbs(hRev.dataSync()) > 1e-4, 'the Hessian-vector product is not trivially zero');
  checkHvpAgainstFd(loss('reversible'), [x], [t], [hRev], 'Rev-MViT');
});

test.run();
