/**
 * Laws of reverse mode (src/autodiff/tape.ts and the VJP rules in the primitives' declarations), on both backends:
 *  (a) every VJP rule agrees with central finite differences (float64 sums over float32 evaluations);
 *  (b) Taylor remainders of smooth ops shrink like h^2;
 *  (c) pullbacks are linear in the cotangent;
 *  (d) vjp of a composition is the composition of the pullbacks;
 *  (e) grad is additive and grad over pytrees keeps the structure;
 *  (f) customVjp gives the same gradients as autodiff, its residuals are counted, stopGradient blocks.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fc from 'fast-check';
import { withBackend } from '../src/backend/backend.ts';
import * as R from '../src/index.ts';
import type { Tensor } from '../src/index.ts';
import { assertClose, assertProperty, BACKENDS, checkVjp, maxAbs, OP_CASES, opLaw, rand, seedArb, shapeArb, sizeOf, uniform } from './helpers.ts';

const RUNS = { runs: 25 };

const leavesOf = (t: Tensor | Tensor[]): Tensor[] => (Array.isArray(t) ? t : [t]);

// --- (a) VJP vs central finite differences, every op (the kit's vjpLaw 'fd') ---------------------

for (const entry of OP_CASES.filter((e) => !e.noGradient)) {
  for (const backend of BACKENDS) {
    test(`(a) [${backend}] vjp of ${entry.name} agrees with central finite differences`, async () => {
      await opLaw(entry, ['fd'], { backend }).assert(RUNS);
    });
  }
}

// Regression: the 'dx' kernel of src/tensor/conv.ts used to paste the output-channel expression
// `gi * coutPerGroup + j` into `((co * Cg + ci) ...` without parentheses, so grouped convs with Cg > 1 got
// a wrong input gradient on 'cpu' and on webasm kernels (found by the property above; fixed in e230579).
test('(a) conv input gradient with groups = 2 and 2 channels per group (regression)', () => {
  for (const backend of BACKENDS) {
    withBackend(backend, () => {
      const x = R.tensor([1, 2, 3, 4], [1, 4, 1]);
      const w = R.tensor([1, 10, 100, 1000], [2, 2, 1]);
      const [, pullback] = R.vjp((a: Tensor, b: Tensor) => R.conv(a, b, { groups: 2 }), x, w);
      const [gx, gw] = pullback(R.ones([1, 2, 1]));
      // y0 = x0 w0 + x1 w1, y1 = x2 w2 + x3 w3: dy/dx = w, dy/dw = x.
      assert.equal(Array.from(gw.dataSync()), [1, 2, 3, 4], `${backend}: weight gradient`);
      assert.equal(Array.from(gx.dataSync()), [1, 10, 100, 1000], `${backend}: input gradient`);
    });
  }
});

const wrongSquare = R.customVjp((x: Tensor) => [R.mul(x, x), x] as [Tensor, Tensor], (x: Tensor, g: Tensor) => [R.mul(R.mul(g, x), 3)]);

test('(a) the finite-difference check catches a wrong VJP (a customVjp with backward 3x g for x^2)', async () => {
  for (const backend of BACKENDS) {
    const r = await checkVjp({ inputs: [rand([3, 2], 5, 0.5, 1.5)], f: (x) => wrongSquare(x) }, 11, { backend });
    assert.not.ok(r.ok, `${backend}: the wrong VJP passed (${r.detail})`);
    assert.match(r.detail, 'input 0 [3, 2]');
  }
});

// --- (b) Taylor test (the kit's vjpLaw 'taylor') ---------------------------------------------------

// Steps 0.12 ... 0.015 (|v| <= 1): large enough that the h^2 remainder at the smallest step (~2e-4 x
// curvature) stands above float32 round-off (~1e-7 relative) for most generated cases, small enough that
// the h^3 term moves the first ratio by < 20% for the curvatures generated (|f'''/f''| <= ~4). Cases where
// the h^3 term or round-off would dominate are inconclusive; each law needs 3 conclusive cases of 16.
const TAYLOR_HS = [0.12, 0.06, 0.03, 0.015];

for (const entry of OP_CASES.filter((e) => e.smooth)) {
  for (const backend of BACKENDS) {
    test(`(b) [${backend}] Taylor remainders of ${entry.name} shrink like h^2`, async () => {
      await opLaw(entry, ['taylor'], { backend, taylorSteps: TAYLOR_HS, minConclusive: 3 }).assert({ runs: 16 });
    });
  }
}

test('(b) the Taylor test catches a VJP that is off by a factor (ratio ~2 instead of ~4)', async () => {
  const wrong = R.customVjp((x: Tensor) => [R.exp(x), R.exp(x)] as [Tensor, Tensor], (y: Tensor, g: Tensor) => [R.mul(R.mul(g, y), 1.1)]);
  const r = await checkVjp({ inputs: [rand([4], 3)], f: (x) => wrong(x) }, 9, { checks: ['taylor'], taylorSteps: TAYLOR_HS });
  assert.ok(r.conclusive && !r.ok, r.detail);
  const ratios = /ratios ([^ ]+), ([^ ]+), ([^ ]+)$/.exec(r.detail);
  assert.ok(ratios !== null && Number(ratios[3]) < 2.5, r.detail);
});

// --- (c) linearity of pullbacks -----------------------------------------------------------------

for (const entry of OP_CASES) {
  test(`(c) pullback of ${entry.name} is linear: vjp(a u1 + b u2) = a vjp(u1) + b vjp(u2)`, () => {
    assertProperty(
      fc.property(entry.arb, seedArb, fc.double({ min: -2, max: 2, noNaN: true }), fc.double({ min: -2, max: 2, noNaN: true }), (p, seed, a, b) => {
        for (const backend of BACKENDS) {
          withBackend(backend, () => {
            const c = entry.build(p);
            const [y, pullback] = R.vjp(c.f, ...c.inputs);
            const ys = leavesOf(y);
            const u1 = ys.map((t, k) => R.tensor(uniform(t.size, seed + k), [...t.shape]));
            const u2 = ys.map((t, k) => R.tensor(uniform(t.size, seed + 50 + k), [...t.shape]));
            const mix = u1.map((t, k) => R.add(R.mul(t, a), R.mul(u2[k], b)));
            const pb = (us: Tensor[]) => pullback((Array.isArray(y) ? us : us[0]) as never) as Tensor[];
            const g1 = pb(u1);
            const g2 = pb(u2);
            const g = pb(mix);
            for (const i of c.wrt ?? c.inputs.map((_, k) => k)) {
              const want = R.add(R.mul(g1[i], a), R.mul(g2[i], b));
              // float32: each side rounds a few times; relative to the size of the two parts.
              const scale = maxAbs(g1[i].dataSync()) * Math.abs(a) + maxAbs(g2[i].dataSync()) * Math.abs(b);
              assertClose(g[i], want, 0, 1e-5 * scale + 1e-6, `${entry.name} on ${backend}, input ${i}`);
            }
          });
        }
      }),
      { numRuns: 6 },
    );
  });
}

// --- (d) chain rule: vjp of f∘g = g's pullback after f's --------------------------------------

/** Shape-preserving maps defined on all of R (so any composition is smooth where we evaluate it). */
const STAGES: readonly { name: string; f: (x: Tensor) => Tensor }[] = [
  { name: 'tanh', f: R.tanh },
  { name: 'exp(x/2)', f: (x) => R.exp(R.mul(x, 0.5)) },
  { name: 'gelu', f: R.gelu },
  { name: 'softmax', f: (x) => R.softmax(x, -1) },
  { name: 'x*x', f: (x) => R.mul(x, x) },
  { name: 'erf', f: R.erf },
  { name: 'x - mean(x)', f: (x) => R.sub(x, R.mean(x, -1, true)) },
  { name: 'flip via permute+reshape', f: (x) => R.reshape(R.permute(x, [...x.shape.keys()].reverse()), [...x.shape]) },
];

test('(d) vjp of a composition equals the composition of the vjps', () => {
  assertProperty(
    fc.property(
      fc.array(fc.integer({ min: 0, max: STAGES.length - 1 }), { minLength: 2, maxLength: 4 }),
      fc.integer({ min: 1, max: 4 }).chain((n) => fc.array(fc.constant(n), { minLength: 2, maxLength: 2 })),
      seedArb,
      (stages, shape, seed) => {
        for (const backend of BACKENDS) {
          withBackend(backend, () => {
            const fs = stages.map((i) => STAGES[i].f);
            const x = rand(shape, seed);
            const whole = (t: Tensor) => fs.reduce((acc, f) => f(acc), t);
            const [y, pullback] = R.vjp(whole, x);
            const u = R.tensor(uniform(y.size, seed + 1), [...y.shape]);
            const [gWhole] = pullback(u);
            // One vjp per stage, pulled back in reverse order.
            const pullbacks: ((g: Tensor) => Tensor)[] = [];
            let t = x;
            for (const f of fs) {
              const [next, pb] = R.vjp(f, t);
              pullbacks.push((g) => pb(g)[0]);
              t = next;
            }
            assertClose(t, y, 0, 0, `${backend}: forward values`);
            const gChained = pullbacks.reduceRight((g, pb) => pb(g), u);
            assertClose(gChained, gWhole, 1e-6, 1e-7, `${backend}: ${stages.map((i) => STAGES[i].name).join(' ∘ ')}`);
          });
        }
      },
    ),
    { numRuns: 15 },
  );
});

// --- (e) additivity and pytrees -----------------------------------------------------------------

test('(e) grad(f + g) = grad f + grad g', () => {
  assertProperty(
    fc.property(shapeArb(0, 3), seedArb, (shape, seed) => {
      for (const backend of BACKENDS) {
        withBackend(backend, () => {
          const w = rand(shape, seed + 1);
          const f = (x: Tensor) => R.sum(R.mul(R.tanh(x), w));
          const g = (x: Tensor) => R.sum(R.exp(R.mul(x, x)));
          const x = rand(shape, seed);
          const both = R.grad((t: Tensor) => R.add(f(t), g(t)))(x) as Tensor;
          const sum = R.add(R.grad(f)(x) as Tensor, R.grad(g)(x) as Tensor);
          assertClose(both, sum, 1e-6, 1e-6, backend);
        });
      }
    }),
    { numRuns: 15 },
  );
});

test('(e) grad over pytree arguments returns trees of the same structure, with the right values', async () => {
  await assertProperty(
    fc.asyncProperty(shapeArb(1, 3), fc.integer({ min: 1, max: 3 }), seedArb, async (shape, layers, seed) => {
      for (const backend of BACKENDS) {
        const params = {
          scale: rand(shape, seed),
          layers: Array.from({ length: layers }, (_, i) => ({ w: rand(shape, seed + 10 * i + 1), b: [rand([], seed + 10 * i + 2)] })),
        };
        const x = rand(shape, seed + 99);
        type P = typeof params;
        const loss = (p: P, input: Tensor) => {
          let h = R.mul(input, p.scale);
          for (const l of p.layers) h = R.tanh(R.add(R.mul(h, l.w), l.b[0]));
          return R.sum(R.mul(h, h));
        };
        const pLeaves = R.flattenWithPaths(params);
        const lossOfLeaf = (k: number) => (t: Tensor) => loss(R.unflattenLike(params, pLeaves.map(([, l], j) => (j === k ? t : l))), x);
        withBackend(backend, () => {
          const [g, gx] = R.grad(loss, [0, 1])(params, x) as [P, Tensor];
          assert.equal(Object.keys(g), ['scale', 'layers']);
          assert.is(g.layers.length, layers);
          const gLeaves = R.flattenWithPaths(g);
          assert.equal(gLeaves.map(([path, t]) => `${path}:${t.shape}`), pLeaves.map(([path, t]) => `${path}:${t.shape}`));
          assert.equal(gx.shape, x.shape);
          // Each leaf of the tree gradient equals the gradient of the loss in that leaf alone ...
          pLeaves.forEach(([path], k) => {
            const [, pb] = R.vjp(lossOfLeaf(k), pLeaves[k][1]);
            assertClose(gLeaves[k][1], pb()[0], 1e-6, 1e-7, `${backend} ${path}`);
          });
        });
        // ... which agrees with finite differences.
        for (const [k, [path, leaf]] of pLeaves.entries()) {
          const r = await checkVjp({ inputs: [leaf], f: lossOfLeaf(k) }, seed + k, { backend });
          assert.ok(r.ok, `${backend} ${path}: ${r.detail}`);
        }
      }
    }),
    { numRuns: 8 },
  );
});

test('(e) a primal passed twice gets the sum of both uses; unused primals get zeros', () => {
  for (const backend of BACKENDS) {
    withBackend(backend, () => {
      const x = R.tensor([1, -2, 3]);
      const unused = R.tensor([5, 6]);
      const [gx, gx2, gu] = R.grad((a: Tensor, b: Tensor, c: Tensor) => R.sum(R.mul(a, b)), [0, 1, 2])(x, x, unused) as Tensor[];
      assert.equal(Array.from(gx.dataSync()), [1, -2, 3]);
      assert.equal(Array.from(gx2.dataSync()), [1, -2, 3]);
      assert.equal(Array.from(gu.dataSync()), [0, 0]);
      const g = R.grad((a: Tensor) => R.sum(R.mul(a, a)))(x) as Tensor;
      assert.equal(Array.from(g.dataSync()), [2, -4, 6]);
    });
  }
});

// --- (f) customVjp and stopGradient --------------------------------------------------------------

const customSquare = R.customVjp(
  (x: Tensor) => [R.mul(x, x), x] as [Tensor, Tensor],
  (x: Tensor, g: Tensor) => [R.mul(R.mul(g, x), 2)],
);

test('(f) customVjp square gives the same gradients as autodiff of x*x', () => {
  assertProperty(
    fc.property(shapeArb(0, 4), seedArb, (shape, seed) => {
      for (const backend of BACKENDS) {
        withBackend(backend, () => {
          const x = rand(shape, seed);
          const w = rand(shape, seed + 1);
          const viaCustom = R.grad((t: Tensor) => R.sum(R.mul(R.tanh(customSquare(R.exp(t))), w)))(x) as Tensor;
          const viaAuto = R.grad((t: Tensor) => R.sum(R.mul(R.tanh(R.mul(R.exp(t), R.exp(t))), w)))(x) as Tensor;
          assertClose(viaCustom, viaAuto, 1e-5, 1e-7, backend);
          // Untraced (no vjp around it), customVjp is just its forward.
          assertClose(customSquare(x), R.mul(x, x), 0, 0, `${backend} forward`);
        });
      }
    }),
    { numRuns: 15 },
  );
});

test('(f) customVjp residuals are counted in pullback.residualBytes', () => {
  assertProperty(
    fc.property(shapeArb(0, 4), seedArb, (shape, seed) => {
      const n = sizeOf(shape);
      for (const backend of BACKENDS) {
        withBackend(backend, () => {
          const x = rand(shape, seed);
          // The residual 2x is a new buffer of n floats; sum saves nothing: 4n bytes.
          const twice = R.customVjp(
            (t: Tensor) => [R.mul(t, t), R.mul(t, 2)] as [Tensor, Tensor],
            (t2: Tensor, g: Tensor) => [R.mul(g, t2)],
          );
          const [, pb] = R.vjp((t: Tensor) => R.sum(twice(t)), x);
          assert.is(pb.residualBytes, 4 * n, `${backend}: custom residual`);
          // A residual that is the primal itself is not counted (primals are excluded): 0 bytes.
          const [, pbSquare] = R.vjp((t: Tensor) => R.sum(customSquare(t)), x);
          assert.is(pbSquare.residualBytes, 0, `${backend}: primal residual`);
          // Forward ops inside customVjp are not recorded: nothing else is saved.
          const [out, pb2] = R.vjp((t: Tensor) => R.sum(twice(R.exp(t))), x);
          // exp saves its output (4n) and the custom op its residual 2·exp(x) (4n).
          assert.is(pb2.residualBytes, 8 * n, `${backend}: exp + custom residual`);
          assert.ok(Number.isFinite(out.itemSync()));
          const [g] = pb(); // d/dx sum(x^2) via the residual 2x
          assertClose(g, R.mul(x, 2), 0, 0, backend);
        });
      }
    }),
    { numRuns: 10 },
  );
});

test('(f) stopGradient blocks gradients', () => {
  assertProperty(
    fc.property(shapeArb(0, 4), seedArb, (shape, seed) => {
      for (const backend of BACKENDS) {
        withBackend(backend, () => {
          const x = rand(shape, seed);
          // d/dx sum(sg(x) * x) = sg(x) = x (not 2x).
          const g = R.grad((t: Tensor) => R.sum(R.mul(R.stopGradient(t), t)))(x) as Tensor;
          assertClose(g, x, 0, 0, `${backend}: sg(x) * x`);
          // Nothing flows through a stopped branch: zeros.
          const g0 = R.grad((t: Tensor) => R.sum(R.exp(R.stopGradient(R.tanh(t)))))(x) as Tensor;
          assert.equal(Array.from(g0.dataSync()), new Array(x.size).fill(0), `${backend}: stopped branch`);
          // Pytrees: every leaf is stopped, values unchanged.
          const tree = { a: x, b: [x] };
          const stopped = R.stopGradient(tree);
          assertClose(stopped.b[0], x, 0, 0, `${backend}: tree values`);
          const gt = R.grad((t: Tensor) => R.sum(R.add(R.stopGradient({ a: t }).a, t)))(x) as Tensor;
          assertClose(gt, R.onesLike(x), 0, 0, `${backend}: tree`);
        });
      }
    }),
    { numRuns: 10 },
  );
});

// --- grad of grad --------------------------------------------------------------------------

// Second derivatives compose from the same rules: the Hessian-vector product <grad(x -> <grad f(x), v>), d>
// must match the central difference of <grad f(x), v> along d. Smooth functions only (every op's Hessian-vector
// products, layerNorm and max pooling included, are checked in laws/higher-order.test.ts).
const CONV_W = rand([3, 3, 2], 99);
const SECOND_ORDER: Record<string, (x: Tensor) => Tensor> = {
  'tanh * exp': (x) => R.sum(R.mul(R.tanh(x), R.exp(R.mul(x, 0.5)))),
  'matmul': (x) => R.sum(R.square(R.matmul(x, R.transpose(x)))),
  'conv': (x) => R.sum(R.square(R.conv(R.reshape(x, [1, 3, 4]), CONV_W, { padding: 1 }))),
  'softmax': (x) => R.sum(R.mul(R.softmax(x), x)),
  'gelu': (x) => R.sum(R.mul(R.gelu(x), x)),
};

for (const [name, f] of Object.entries(SECOND_ORDER)) {
  test(`grad of grad of ${name} matches finite differences of the gradient`, () => {
    for (const backend of BACKENDS) {
      withBackend(backend, () => {
        for (const seed of [1, 2, 3]) {
          const x = rand([3, 4], seed);
          const v = rand([3, 4], seed + 10);
          const d = rand([3, 4], seed + 20);
          const gv = (y: Tensor) => R.sum(R.mul(R.grad(f)(y), v));
          const analytic = R.sum(R.mul(R.grad(gv)(x), d)).itemSync();
          const h = 1e-2;
          const numeric = (gv(R.add(x, R.mul(d, h))).itemSync() - gv(R.sub(x, R.mul(d, h))).itemSync()) / (2 * h);
          assert.ok(Math.abs(analytic - numeric) <= 2e-3 * Math.max(1, Math.abs(numeric)), `${backend} seed ${seed}: ${analytic} vs ${numeric}`);
        }
      });
    }
  });
}

test.run();
