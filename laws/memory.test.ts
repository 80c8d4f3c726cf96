/**
 * The memory report (src/backend/memory.ts measureMemory, src/autodiff/tape.ts residualBytes) against
 * byte counts worked out by hand. Every tensor holds float32: n values = 4n bytes. Primals (the
 * arguments of vjp) are views of the caller's buffers and are never counted as residuals; views
 * (reshape, stopGradient) share their buffer and count once.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fc from 'fast-check';
import { withBackend } from '../src/backend/backend.ts';
import * as R from '../src/index.ts';
import type { Tensor } from '../src/index.ts';
import { assertProperty, BACKENDS, rand, seedArb, shapeArb, sizeOf } from './helpers.ts';

const RUNS = { numRuns: 15 };

/** Run a property body on each backend. */
const onBackends = (fn: () => void) => {
  for (const b of BACKENDS) withBackend(b, fn);
};

// --- residualBytes --------------------------------------------------------------------------------

test('residuals of sum(exp(x) * x): exp saves its output (4n), mul its inputs (exp(x) already counted, x a primal), sum nothing: 4n', () => {
  assertProperty(
    fc.property(shapeArb(0, 4), seedArb, (shape, seed) => {
      const n = sizeOf(shape);
      onBackends(() => {
        const [, pb] = R.vjp((x: Tensor) => R.sum(R.mul(R.exp(x), x)), rand(shape, seed));
        assert.is(pb.residualBytes, 4 * n);
      });
    }),
    RUNS,
  );
});

test('residuals of sum(x + y) and of reshapes/permutes of primals: add, sum, reshape and permute save nothing: 0', () => {
  assertProperty(
    fc.property(shapeArb(0, 4), seedArb, (shape, seed) => {
      onBackends(() => {
        const [, pb] = R.vjp((x: Tensor, y: Tensor) => R.sum(R.add(x, y)), rand(shape, seed), rand(shape, seed + 1));
        assert.is(pb.residualBytes, 0, 'add');
        const [, pb2] = R.vjp((x: Tensor) => R.sum(R.permute(R.reshape(x, [sizeOf(shape)]), [0])), rand(shape, seed));
        assert.is(pb2.residualBytes, 0, 'reshape/permute');
        // mul of two primals saves both inputs, but they are primals: 0.
        const [, pb3] = R.vjp((x: Tensor, y: Tensor) => R.sum(R.mul(x, y)), rand(shape, seed), rand(shape, seed + 1));
        assert.is(pb3.residualBytes, 0, 'mul of primals');
      });
    }),
    RUNS,
  );
});

test('residuals of sum(tanh(x * 2)): the number 2 becomes a 4-byte scalar tensor saved by mul, tanh saves its output: 4n + 4', () => {
  assertProperty(
    fc.property(shapeArb(0, 4), seedArb, (shape, seed) => {
      const n = sizeOf(shape);
      onBackends(() => {
        const [, pb] = R.vjp((x: Tensor) => R.sum(R.tanh(R.mul(x, 2))), rand(shape, seed));
        assert.is(pb.residualBytes, 4 * n + 4);
      });
    }),
    RUNS,
  );
});

test('residuals are counted per buffer: mul(reshape(e), e) with e = exp(exp(x)) saves e once: 4n (exp 1) + 4n (exp 2) = 8n', () => {
  assertProperty(
    fc.property(shapeArb(1, 4), seedArb, (shape, seed) => {
      const n = sizeOf(shape);
      onBackends(() => {
        const [, pb] = R.vjp((x: Tensor) => {
          const e = R.exp(R.exp(x));
          return R.sum(R.mul(R.reshape(e, [n]), R.reshape(e, [n])));
        }, rand(shape, seed));
        assert.is(pb.residualBytes, 8 * n);
      });
    }),
    RUNS,
  );
});

test('residuals of max(exp(x)) and of matmul(tanh(A), B): max saves input (counted by exp) and its 4-byte output; matmul saves tanh(A) (counted) and B (primal)', () => {
  assertProperty(
    fc.property(fc.integer({ min: 1, max: 4 }), fc.integer({ min: 1, max: 4 }), fc.integer({ min: 1, max: 4 }), seedArb, (m, k, n, seed) => {
      onBackends(() => {
        const [, pb] = R.vjp((x: Tensor) => R.max(R.exp(x)), rand([m, k], seed));
        assert.is(pb.residualBytes, 4 * m * k + 4, 'max');
        const [, pb2] = R.vjp((a: Tensor, b: Tensor) => R.sum(R.matmul(R.tanh(a), b)), rand([m, k], seed), rand([k, n], seed + 1));
        assert.is(pb2.residualBytes, 4 * m * k, 'matmul');
      });
    }),
    RUNS,
  );
});

// --- measureMemory --------------------------------------------------------------------------------

/*
 * Live-range model (src/backend/memory.ts): a buffer is live from its allocation to its last read, as a
 * reference-counting runtime would free it. An op reads its inputs *while* it writes its output, so for
 * y = op(x) both x and y are live at the same time: an input's life must extend over the allocation of
 * the output of the op that last reads it. Hand-computed cases (x allocated outside the region, n floats):
 *
 *  1. chain of k >= 2 unary ops y1 = exp(x), y2 = tanh(y1), ...: at op j, y_{j-1} (read) and y_j
 *     (written) are live; y_{j-2} is dead. Peak = 2 buffers = 8n. allocated = 4nk. Nothing escapes
 *     unless declared: liveAtEnd = 0; declaring y_k escaping: liveAtEnd = 4n.
 *  2. a single op y = exp(x) on a buffer from outside: only y is counted: peak 4n.
 *  3. diamond a = exp(x), b = tanh(x), c = a + b: while c is written a, b and c are live: peak 12n.
 *  4. grad of sum(exp(x)) (vjp + pullback in the region): exp writes e (4n); sum writes s (4 bytes,
 *     never read again); the pullback seeds ones (4 bytes), broadcasts it to g (4n) while e is still
 *     held as a residual, then writes exp's gradient g * e (4n) while reading g and e: peak 12n.
 */

// Regression (src/tensor/exec.ts execute + src/backend/memory.ts peakFromLog): execute used to log the
// reads of the inputs before the output Storage was constructed, and peakFromLog frees a buffer right
// after its last read, so an op's inputs were already dead when its output was allocated and every peak
// was under-reported by the inputs of the peak op (the chain gave 4n, the diamond 8n, grad of
// sum(exp(x)) 8n). A buffer's life now extends over the allocation made by the op that last reads it.
test('measureMemory: a chain of k unary ops on n floats peaks at two live buffers (8n)', () => {
  assertProperty(
    fc.property(shapeArb(1, 4), fc.integer({ min: 2, max: 6 }), seedArb, (shape, k, seed) => {
      const n = sizeOf(shape);
      onBackends(() => {
        const x = rand(shape, seed);
        const ops = [R.exp, R.tanh, R.neg, R.abs, R.erf, R.relu];
        const report = R.measureMemory(() => ops.slice(0, k).reduce((t, f) => f(t), x));
        assert.is(report.allocatedBytes, 4 * n * k, 'allocated');
        assert.is(report.liveAtEndBytes, 0, 'live at end');
        assert.is(report.peakBytes, 8 * n, 'peak');
        const escaping = R.measureMemory(() => ops.slice(0, k).reduce((t, f) => f(t), x), (y) => [y.storage]);
        assert.is(escaping.liveAtEndBytes, 4 * n, 'escaping result');
        assert.is(escaping.peakBytes, 8 * n, 'escaping peak');
      });
    }),
    RUNS,
  );
});

test('measureMemory: one op on an outside buffer counts only its output (4n)', () => {
  assertProperty(
    fc.property(shapeArb(0, 4), seedArb, (shape, seed) => {
      const n = sizeOf(shape);
      onBackends(() => {
        const x = rand(shape, seed);
        const report = R.measureMemory(() => R.exp(x), (y) => [y.storage]);
        assert.is(report.allocatedBytes, 4 * n);
        assert.is(report.peakBytes, 4 * n);
        assert.is(report.liveAtEndBytes, 4 * n);
        // Views allocate nothing.
        const views = R.measureMemory(() => R.reshape(R.stopGradient(x), [n]));
        assert.is(views.allocatedBytes, 0);
        assert.is(views.peakBytes, 0);
      });
    }),
    RUNS,
  );
});

test('measureMemory: a diamond exp(x) + tanh(x) peaks at three buffers (12n)', () => {
  assertProperty(
    fc.property(shapeArb(1, 4), seedArb, (shape, seed) => {
      const n = sizeOf(shape);
      onBackends(() => {
        const x = rand(shape, seed);
        const report = R.measureMemory(() => R.add(R.exp(x), R.tanh(x)));
        assert.is(report.allocatedBytes, 12 * n, 'allocated');
        assert.is(report.peakBytes, 12 * n, 'peak');
      });
    }),
    RUNS,
  );
});

test('measureMemory: grad of sum(exp(x)) peaks at 12n (residual, broadcast cotangent and gradient)', () => {
  assertProperty(
    // n >= 2: for n = 1 broadcastTo([1..1] -> [1..1]) is the identity and allocates nothing.
    fc.property(shapeArb(1, 4).filter((s) => sizeOf(s) >= 2), seedArb, (shape, seed) => {
      const n = sizeOf(shape);
      onBackends(() => {
        const x = rand(shape, seed);
        const report = R.measureMemory(() => R.grad((t: Tensor) => R.sum(R.exp(t)))(x) as Tensor, (g) => [g.storage]);
        // e (4n) + s (4) + ones (4) + g (4n) + g*e (4n).
        assert.is(report.allocatedBytes, 12 * n + 8, 'allocated');
        assert.is(report.liveAtEndBytes, 4 * n, 'the gradient escapes');
        assert.is(report.peakBytes, 12 * n, 'peak');
      });
    }),
    RUNS,
  );
});

test.run();
