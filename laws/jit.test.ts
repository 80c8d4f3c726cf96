/**
 * Laws of jit (src/jit/): a traced, lowered and replayed program computes what eager mode computes.
 *  (a) for every op case of the VJP laws, jit(f) equals f and jit(pullback) equals the eager pullback,
 *      on both lowerings ('cpu': fused loops and planned buffers; 'interpret': equation by equation);
 *  (b) generated elementwise/broadcast/reduction/view programs: jit equals eager, the outputs of one call
 *      survive the next call (reused buffers never alias a live value), and intermediate values that
 *      are returned are returned intact;
 *  (c) randomness: keys are inputs, so a replay with a new key draws new masks, the ones eager mode
 *      draws from that key, without retracing;
 *  (d) a changed shape (or static argument) retraces; the same signature replays;
 *  (e) a Rev-MViT training step (loss and every parameter gradient; reversible and store; dropout and
 *      drop path on) equals eager mode;
 *  (f) what jit cannot trace raises a TraceError; jit inside grad runs eagerly and differentiates.
 * Tolerance: rel <= 1e-6 of the largest magnitude of the reference (the lowerings are bit-identical in
 * practice: every fused node rounds to float32 as an eager op does).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fc from 'fast-check';
import * as R from '../src/index.ts';
import type { Tensor } from '../src/index.ts';
import { flattenWithPaths } from '../src/autodiff/pytree.ts';
import { jit, type Lowering } from '../src/jit/index.ts';
import { formatProblems, parseConfig } from '../src/models/mvit/config.ts';
import { buildModel } from '../src/models/mvit/model.ts';
import * as K from '../src/random/keys.ts';
import { TraceError } from '../src/tensor/errors.ts';
import { primitiveByName } from '../src/tensor/primitive.ts';
import { crossEntropy } from '../src/train/loss.ts';
import { adamw, clipGradNorm, sgd, type Optimizer } from '../src/train/optim.ts';
import { makeTrainStep } from '../src/train/step.ts';
import { assertClose, assertProperty, OP_CASES, rand, seedArb, shapeArb } from './helpers.ts';

const RTOL = 1e-6;
const LOWERINGS: readonly Lowering[] = ['cpu', 'interpret'];
const leavesOf = (t: Tensor | Tensor[]): Tensor[] => (Array.isArray(t) ? t : [t]);
const close = (got: Tensor, want: Tensor, what: string) => assertClose(got, want, RTOL, 0, what);

// --- (a) every op case ------------------------------------------------------------------------

for (const entry of OP_CASES) {
  test(`(a) jit of ${entry.name} and of its pullback equal eager mode`, () => {
    assertProperty(
      fc.property(entry.arb, seedArb, (p, seed) => {
        const c = entry.build(p);
        const outs = leavesOf(c.f(...c.inputs));
        const cts = outs.map((o, i) => rand(o.shape, seed + i));
        const pull = (...xs: Tensor[]) => R.vjp((...ys: Tensor[]) => c.f(...ys), ...xs)[1](Array.isArray(c.f(...xs)) ? cts : cts[0]);
        const grads = pull(...c.inputs);
        for (const lowering of LOWERINGS) {
          const jf = jit((...xs: Tensor[]) => c.f(...xs), { lowering });
          leavesOf(jf(...c.inputs)).forEach((o, i) => close(o, outs[i], `${entry.name} (${lowering}) output ${i}`));
          const jg = jit(pull, { lowering });
          jg(...c.inputs).forEach((g, i) => close(g, grads[i], `${entry.name} (${lowering}) gradient ${i}`));
        }
      }),
      { numRuns: 8 },
    );
  });
}

// --- (b) generated programs -------------------------------------------------------------------

type Step =
  | { op: 'unary'; f: 'neg' | 'exp' | 'tanh' | 'abs' | 'relu' | 'erf'; a: number }
  | { op: 'binary'; f: 'add' | 'sub' | 'mul' | 'maximum' | 'minimum' | 'greater'; a: number; b: number }
  | { op: 'scalar'; f: 'mul' | 'add'; a: number; c: number }
  | { op: 'where'; a: number; b: number; c: number }
  | { op: 'sum'; a: number; keep: boolean }
  | { op: 'transpose'; a: number }
  | { op: 'reshape'; a: number };

const stepArb: fc.Arbitrary<Step> = fc.oneof(
  fc.record({ op: fc.constant('unary' as const), f: fc.constantFrom('neg' as const, 'exp' as const, 'tanh' as const, 'abs' as const, 'relu' as const, 'erf' as const), a: fc.nat() }),
  fc.record({ op: fc.constant('binary' as const), f: fc.constantFrom('add' as const, 'sub' as const, 'mul' as const, 'maximum' as const, 'minimum' as const, 'greater' as const), a: fc.nat(), b: fc.nat() }),
  fc.record({ op: fc.constant('scalar' as const), f: fc.constantFrom('mul' as const, 'add' as const), a: fc.nat(), c: fc.double({ min: -2, max: 2, noNaN: true }) }),
  fc.record({ op: fc.constant('where' as const), a: fc.nat(), b: fc.nat(), c: fc.nat() }),
  fc.record({ op: fc.constant('sum' as const), a: fc.nat(), keep: fc.boolean() }),
  fc.record({ op: fc.constant('transpose' as const), a: fc.nat() }),
  fc.record({ op: fc.constant('reshape' as const), a: fc.nat() }),
);

/**
 * Run the steps on a pool of values (starting with the inputs), each step reading earlier values
 * (picked modulo the pool) and adding its result; binary steps broadcast when the shapes allow and fall
 * back to the first operand alone otherwise. Returns some values (also intermediate ones).
 */
function program(steps: readonly Step[], picks: readonly number[]) {
  return (...inputs: Tensor[]): Tensor[] => {
    const pool: Tensor[] = [...inputs];
    const at = (i: number) => pool[i % pool.length];
    const fits = (x: Tensor, y: Tensor) => {
      try {
        R.add(R.zeros(x.shape), R.zeros(y.shape));
        return true;
      } catch {
        return false;
      }
    };
    for (const s of steps) {
      const a = at(s.a);
      let r: Tensor;
      switch (s.op) {
        case 'unary':
          r = R[s.f](a);
          break;
        case 'binary':
          r = fits(a, at(s.b)) ? R[s.f](a, at(s.b)) : R.neg(a);
          break;
        case 'scalar':
          r = R[s.f](a, s.c);
          break;
        case 'where':
          r = fits(a, at(s.b)) && fits(R.add(a, at(s.b)), at(s.c)) ? R.where(R.greater(a, 0), at(s.b), at(s.c)) : R.tanh(a);
          break;
        case 'sum':
          r = a.rank === 0 ? R.exp(a) : R.sum(a, -1, s.keep);
          break;
        case 'transpose':
          r = a.rank < 2 ? R.neg(a) : R.transpose(a);
          break;
        case 'reshape':
          r = R.reshape(a, [-1]);
          break;
      }
      pool.push(r);
    }
    return [pool[pool.length - 1], ...picks.map((p) => pool[p % pool.length])];
  };
}

const programArb = fc.record({
  shapes: fc.tuple(shapeArb(1, 3), shapeArb(0, 2)),
  steps: fc.array(stepArb, { minLength: 1, maxLength: 24 }),
  picks: fc.array(fc.nat(), { maxLength: 3 }),
  seed: seedArb,
});

test('(b) generated elementwise/broadcast/reduction/view programs: jit equals eager, and outputs survive the next call', () => {
  assertProperty(
    fc.property(programArb, ({ shapes, steps, picks, seed }) => {
      // The second input broadcasts against the first's trailing axes.
      const s0 = shapes[0];
      const s1 = s0.slice(s0.length - Math.min(shapes[1].length, s0.length));
      const f = program(steps, picks);
      const x1 = [rand(s0, seed, -2, 2), rand(s1, seed + 1, -2, 2)];
      const x2 = [rand(s0, seed + 2, -2, 2), rand(s1, seed + 3, -2, 2)];
      const want1 = f(...x1);
      const want2 = f(...x2);
      for (const lowering of LOWERINGS) {
        const jf = jit(f, { lowering });
        const got1 = jf(...x1);
        const kept = got1.map((t) => t.dataSync());
        const got2 = jf(...x2);
        got1.forEach((t, i) => close(t, want1[i], `${lowering}: call 1, output ${i}`));
        got2.forEach((t, i) => close(t, want2[i], `${lowering}: call 2, output ${i}`));
        got1.forEach((t, i) => assert.equal(Array.from(t.dataSync()), Array.from(kept[i]), `${lowering}: output ${i} of call 1 changed by call 2`));
        assert.is(jf.stats.traces, 1);
      }
    }),
    { numRuns: 100 },
  );
});

test('(b) returned values are separate buffers per call; inputs returned as they are stay the inputs', () => {
  const f = jit((x: Tensor, y: Tensor) => ({ s: R.add(x, y), x, r: R.reshape(y, [-1]), e: R.exp(R.mul(x, 2)) }));
  const x = rand([3, 4], 1);
  const y = rand([3, 4], 2);
  const a = f(x, y);
  const b = f(y, x);
  assert.is(a.x, x);
  assert.ok(a.s.storage !== b.s.storage && a.e.storage !== b.e.storage, 'fresh output buffers on every call');
  close(a.s, R.add(x, y), 's');
  close(a.e, R.exp(R.mul(x, 2)), 'e');
  assert.equal([...a.r.shape], [12]);
  assert.equal(Array.from(a.r.dataSync()), Array.from(y.dataSync()));
});

// --- (c) keys ---------------------------------------------------------------------------------

test('(c) a replay with a new key draws new masks, the ones eager mode draws from it (one trace)', () => {
  const f = (x: Tensor, k: R.random.Key) => {
    const [k1, k2] = R.random.split(k);
    const h = R.nn.dropout(R.random.foldIn(k1, 7), 0.3, x, { train: true });
    return R.add(R.nn.dropPath(k2, 0.5, h, { train: true }), R.random.normal(R.random.foldIn(k, 1), x.shape));
  };
  const x = R.add(rand([6, 5], 3), 2);
  for (const lowering of LOWERINGS) {
    const jf = jit(f, { lowering });
    const seen = new Set<string>();
    for (const seed of [0, 1, 2, 3]) {
      const k = R.random.key(seed);
      const got = jf(x, k);
      assert.equal(Array.from(got.dataSync()), Array.from(f(x, k).dataSync()), `${lowering}: key ${seed}`);
      seen.add(Array.from(got.dataSync()).join(','));
    }
    assert.is(seen.size, 4, `${lowering}: different keys give different draws`);
    assert.is(jf.stats.traces, 1, `${lowering}: keys are inputs, not part of the signature`);
  }
});

test('(c) keys derived inside the program can be returned', () => {
  const f = jit((k: R.random.Key) => ({ next: R.random.split(R.random.foldIn(k, 3), 3)[2], u: R.random.uniform(k, [2]) }));
  const k = R.random.key(9);
  const got = f(k);
  assert.equal([...got.next], [...K.split(K.foldIn(k, 3), 3)[2]]);
  assert.ok(R.random.isBrandedKey(got.next), 'a returned key is a key (usable as the next call\'s input)');
  assert.equal(Array.from(got.u.dataSync()), Array.from(K.uniform(k, 2)));
});

// --- (d) signatures ---------------------------------------------------------------------------

test('(d) a changed shape or static argument retraces; a seen signature replays', () => {
  const f = jit((x: Tensor, scale: number) => R.sum(R.mul(x, scale), -1));
  const a = rand([2, 3], 1);
  const b = rand([4, 3], 2);
  close(f(a, 2), R.sum(R.mul(a, 2), -1), 'a');
  close(f(b, 2), R.sum(R.mul(b, 2), -1), 'b');
  close(f(a, 3), R.sum(R.mul(a, 3), -1), 'a, scale 3');
  close(f(a, 2), R.sum(R.mul(a, 2), -1), 'a again');
  assert.equal(f.stats, { traces: 3, replays: 4, inlined: 0 });
});

// --- (e) Rev-MViT training step ---------------------------------------------------------------

const MVIT = {
  DATA: { NUM_FRAMES: 4, TRAIN_CROP_SIZE: 16, TEST_CROP_SIZE: 16, INPUT_CHANNEL_NUM: [1] },
  MODEL: { NUM_CLASSES: 5, DROPOUT_RATE: 0.2, HEAD_ACT: 'softmax' },
  MVIT: {
    PATCH_2D: false, PATCH_KERNEL: [3, 3, 3], PATCH_STRIDE: [2, 2, 2], PATCH_PADDING: [1, 1, 1],
    EMBED_DIM: 8, NUM_HEADS: 1, DEPTH: 4, MLP_RATIO: 2.0, QKV_BIAS: true, SEPARATE_QKV: false, MODE: 'conv',
    CLS_EMBED_ON: false, USE_ABS_POS: true, SEP_POS_EMBED: true,
    DIM_MUL: [[1, 2.0]], HEAD_MUL: [[1, 2.0]], POOL_Q_STRIDE: [[1, 1, 2, 2]],
    POOL_KVQ_KERNEL: [3, 3, 3], POOL_KV_STRIDE_ADAPTIVE: [1, 4, 4],
    REL_POS_SPATIAL: true, REL_POS_TEMPORAL: true, RESIDUAL_POOLING: true, USE_MEAN_POOLING: false,
    DROPOUT_RATE: 0.1, DROPPATH_RATE: 0.2,
    REV: { ENABLE: true, BUFFER_LAYERS: [1], RES_PATH: 'conv', PRE_Q_FUSION: 'concat_linear_2', RESPATH_FUSE: 'concat' },
  },
};

test('(e) a Rev-MViT training step (loss and every gradient, reversible and store) equals eager mode', () => {
  const parsed = parseConfig(MVIT);
  if (parsed._tag === 'Left') return assert.unreachable(formatProblems(parsed.left));
  const model = buildModel(parsed.right);
  const params = model.init(R.random.key(1));
  const x = R.random.normal(R.random.key(2), [2, 1, 4, 16, 16]);
  const target = R.random.uniform(R.random.key(3), [2, 5]);
  for (const mode of ['reversible', 'store'] as const) {
    const step = (p: typeof params, clip: Tensor, k: R.random.Key) =>
      R.valueAndGrad((q: typeof params) => R.sum(R.mul(R.logSoftmax(model.apply(q, clip, k, { train: true, mode })), target)))(p);
    const jstep = jit(step);
    for (const seed of [4, 5]) {
      const [loss, grads] = step(params, x, R.random.key(seed));
      const [jloss, jgrads] = jstep(params, x, R.random.key(seed));
      close(jloss, loss, `${mode}: loss`);
      const want = new Map(flattenWithPaths(grads));
      let largest = 0;
      for (const [, g] of want) for (const v of g.dataSync()) largest = Math.max(largest, Math.abs(v));
      for (const [name, g] of flattenWithPaths(jgrads)) assertClose(g, want.get(name)!, 0, RTOL * largest, `${mode}: gradient of ${name}`);
    }
    assert.is(jstep.stats.traces, 1);
  }
});

test('(e) the training step (loss, clipping, AdamW or SGD; src/train/step.ts): jitted steps equal eager steps, one program for every step', () => {
  const parsed = parseConfig(MVIT);
  if (parsed._tag === 'Left') return assert.unreachable(formatProblems(parsed.left));
  const model = buildModel(parsed.right);
  const noDecay = (n: string) => n.endsWith('bias');
  const schedule = (s: number) => 1e-3 * (s + 1);
  const optimizers: Optimizer<string>[] = [
    adamw({ lr: schedule, weightDecay: 0.05, noDecay }),
    sgd({ lr: schedule, momentum: 0.9, dampening: 0.1, weightDecay: 1e-4, noDecay }),
    sgd({ lr: schedule, momentum: 0.9, nesterov: true, noDecay }),
  ];
  for (const optimizer of optimizers) {
    const opts = { mode: 'reversible' as const, loss: (o: Tensor, l: Tensor) => crossEntropy(o, l, 0.1), clipNorm: 0.5 };
    const eager = makeTrainStep(model, optimizer, { ...opts, jit: false });
    const jitted = makeTrainStep(model, optimizer, opts);
    const params = model.init(R.random.key(1));
    let a = { params, optState: optimizer.init(params) };
    let b = a;
    for (let s = 0; s < 3; s++) {
      const what = `${optimizer.name} ${JSON.stringify(optimizer.hyper)} step ${s}`;
      const x = R.random.normal(R.random.key(10 + s), [2, 1, 4, 16, 16]);
      const labels = R.tensor([s % 5, (s + 3) % 5]);
      const k = R.random.key(20 + s);
      const ra = eager(a.params, a.optState, x, labels, k);
      const rb = jitted(b.params, b.optState, x, labels, k);
      close(rb.loss, ra.loss, `${what}: loss`);
      close(rb.gradNorm, ra.gradNorm, `${what}: gradient norm`);
      const want = new Map(flattenWithPaths({ p: ra.params, o: ra.optState }));
      for (const [name, t] of flattenWithPaths({ p: rb.params, o: rb.optState })) close(t, want.get(name)!, `${what}: ${name}`);
      assert.is(rb.optState.step, s + 1);
      // The eager step is the optimizer's own update.
      const grads = R.grad((q: typeof params) => crossEntropy(model.apply(q, x, k, { train: true }), labels, 0.1))(a.params);
      const clipped = clipGradNorm(grads, 0.5);
      const own = optimizer.update(clipped.grads, a.optState, a.params);
      for (const [name, t] of flattenWithPaths(own.params)) close(t, new Map(flattenWithPaths(ra.params)).get(name)!, `${what}: update() vs the step, ${name}`);
      a = ra;
      b = rb;
    }
    assert.ok(jitted.peakBytes()! > 0, 'the jitted step reports its planned memory');
  }
});

// --- (f) what cannot be traced ----------------------------------------------------------------

test('(f) data-dependent host reads raise a TraceError naming the problem', () => {
  const x = rand([3], 1);
  const isTraceError = (e: unknown) => e instanceof TraceError && /jit:/.test((e as Error).message);
  assert.throws(() => jit((t: Tensor) => R.mul(t, t.dataSync()[0]))(x), isTraceError);
  assert.throws(() => jit((t: Tensor) => (R.sum(t).itemSync() > 0 ? t : R.neg(t)))(x), isTraceError);
  assert.throws(() => jit((t: Tensor, k: R.random.Key) => R.mul(t, R.tensor(K.uniform(k, 3))))(x, R.random.key(0)), isTraceError);
  assert.throws(() => jit((t: Tensor, labels: Int32Array) => R.mul(t, labels[0]))(x, new Int32Array(3)), isTraceError);
});

test('(f) jit inside grad runs eagerly, so the gradient flows through it', () => {
  const jf = jit((t: Tensor) => R.sum(R.mul(R.tanh(t), t)));
  const x = rand([4], 2);
  const g = R.grad(jf)(x) as Tensor;
  close(g, R.grad((t: Tensor) => R.sum(R.mul(R.tanh(t), t)))(x) as Tensor, 'gradient');
  assert.is(jf.stats.inlined, 1);
});

test('a program is plain data: every equation names a registered primitive, attrs survive JSON', () => {
  const f = jit((x: Tensor, k: R.random.Key) => R.softmax(R.add(R.matmul(x, R.transpose(x)), R.random.uniform(k, [3, 3]))));
  const prog = f.program(rand([3, 2], 1), R.random.key(0));
  for (const e of prog.eqns) {
    assert.is(primitiveByName(e.prim.name), e.prim);
    assert.equal(JSON.parse(JSON.stringify(e.attrs ?? null)), e.attrs ?? null);
    assert.ok(e.inputs.every((id) => id < e.output) && e.shape.length >= 0);
  }
  assert.ok(prog.eqns.some((e) => e.prim.name === 'randomUniform'), 'the draw is an equation of the program');
  assert.equal([...prog.outputs[0].shape], [3, 3]);
});

test.run();
