/**
 * The public training toolkit as a user meets it (`import ... from 'revgrad'`): optax-style optimizers,
 * schedules, losses, clipping, and `train()` / `evaluate()` over the user's own model and batch source.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  adamw,
  ArgumentError,
  evaluate,
  flattenWithPaths,
  nn,
  random,
  sgd,
  tensor,
  train,
  warmupCosineSchedule,
  type Batch,
  type LoopRecord,
  type TrainableModel,
} from '../src/index.ts';
import { loadCheckpoint, restoreTrainState, saveCheckpoint } from '../src/train/checkpoint.ts';

const close = (actual: ArrayLike<number>, expected: readonly number[], tol: number, what: string) => {
  assert.is(actual.length, expected.length, `${what}: length`);
  expected.forEach((e, i) => assert.ok(Math.abs(actual[i] - e) <= tol * Math.max(1, Math.abs(e)), `${what}[${i}]: ${actual[i]} vs ${e}`));
};

test('adamw(): init/update pair gives the hand-computed PyTorch steps; a schedule is read at the state step', async () => {
  // The same two steps as train.test.ts's AdamW test (lr 0.1, wd 0.01), with the lr from a schedule.
  const lrs: number[] = [];
  const opt = adamw({ lr: (s) => (lrs.push(s), 0.1), weightDecay: 0.01 });
  let params = { w: tensor([1, -2]) };
  let state = opt.init(params);
  assert.is(state.step, 0);
  ({ params, state } = opt.update({ w: tensor([0.5, -0.1]) }, state, params));
  close(await params.w.data(), [0.899, -1.898], 1e-6, 'step 1');
  ({ params, state } = opt.update({ w: tensor([0.2, 0.3]) }, state, params));
  close(await params.w.data(), [0.8082434839, -1.9455209911], 1e-6, 'step 2');
  assert.equal(lrs, [0, 1]);
  assert.is(state.step, 2);
  assert.equal(opt.slots, ['m', 'v']);
  const cos = warmupCosineSchedule({ baseLr: 1, totalSteps: 110, warmupSteps: 10, warmupStartLr: 0, endLr: 0, cosineAfterWarmup: true });
  close([cos(0), cos(5), cos(10), cos(60), cos(110)], [0, 0.5, 1, 0.5, 0], 1e-12, 'schedule');
  assert.is(adamw({ lr: cos }).learningRate(60), cos(60));
});

test('sgd(): momentum and weight decay, PyTorch semantics; bad hyperparameters are typed errors', async () => {
  const opt = sgd({ lr: 0.5, momentum: 0.9, weightDecay: 0.1 });
  let params = { w: tensor([1, -2]) };
  let state = opt.init(params);
  ({ params, state } = opt.update({ w: tensor([0.5, -0.1]) }, state, params));
  close(await params.w.data(), [0.7, -1.85], 1e-6, 'step 1');
  ({ params, state } = opt.update({ w: tensor([0.2, 0.3]) }, state, params));
  close(await params.w.data(), [0.295, -1.7725], 1e-6, 'step 2');
  close(await state.buf.w.data(), [0.81, -0.155], 1e-6, 'momentum buffer');
  assert.throws(() => adamw({ lr: -1 }), (e: unknown) => e instanceof ArgumentError && /adamw: lr must be/.test(e.message));
  assert.throws(() => adamw({ beta1: 1.5 }), (e: unknown) => e instanceof ArgumentError && /beta1 must be a number in \[0, 1\]/.test(e.message));
  assert.throws(() => sgd({ nesterov: true, momentum: 0 }), (e: unknown) => e instanceof ArgumentError && /Nesterov/.test(e.message));
  assert.throws(() => opt.update({ v: tensor([1, 1]) } as never, state, params), /grads tensor 0 is 'v', the param is 'w'/);
});

// A user's own model: a linear classifier on 2-D points of 2 classes (x0 > x1 or not).
type Linear = nn.LinearParams;
const model: TrainableModel<Linear> = { apply: (p, x) => nn.linear(p, x) };
const init = (): Linear => ({ weight: random.normal(random.key(1), [2, 2]), bias: tensor([0, 0]) });

function batchAt(step: number, size = 16): Batch {
  const pts = random.uniform(random.foldIn(random.key(2), step), [size, 2], -1, 1).dataSync();
  const labels = Int32Array.from({ length: size }, (_, i) => (pts[2 * i] > pts[2 * i + 1] ? 1 : 0));
  return { x: tensor(pts, [size, 2]), labels };
}

async function* stream(n: number): AsyncGenerator<Batch> {
  for (let s = 0; s < n; s++) {
    await new Promise((r) => setTimeout(r, 0)); // a source that really is asynchronous
    yield batchAt(s);
  }
}

test('train(): a user model on a user async-iterable source learns; runs until the source ends; clipping is reported', async () => {
  const records: LoopRecord[] = [];
  const saved: number[] = [];
  const held = Array.from({ length: 4 }, (_, i) => batchAt(1000 + i, 32));
  const before = await evaluate(model, init(), held);
  const result = await train({
    model,
    params: init(),
    optimizer: sgd({ lr: 0.5, momentum: 0.9 }),
    data: stream(40),
    clipNorm: 1,
    eval: { every: 20, data: () => held },
    checkpoint: { every: 0, save: (s) => void saved.push(s.step) },
    onRecord: (r) => records.push(r),
  });
  assert.is(result.step, 40);
  assert.is(result.optState.step, 40);
  const trains = records.filter((r) => r.type === 'train');
  assert.equal(trains.map((r) => r.step), Array.from({ length: 40 }, (_, i) => i + 1));
  assert.ok(trains.every((r) => r.lr === 0.5 && r.gradNorm > 0 && r.peakBytes > 0));
  assert.equal(records.filter((r) => r.type === 'eval').map((r) => r.step), [20, 40]);
  assert.equal(saved, [40]); // every 0: once, at the end of the source
  const after = await evaluate(model, result.params, held);
  assert.is(after.clips, 128);
  assert.ok(after.testAcc > 0.9 && after.testAcc > before.testAcc, `accuracy ${before.testAcc} -> ${after.testAcc}`);
  assert.ok(after.testLoss! < before.testLoss!, `loss ${before.testLoss} -> ${after.testLoss}`);
});

test('train(): a function source with steps; resuming from a returned state equals the uninterrupted run bit for bit', async () => {
  const opts = { model, params: init(), optimizer: adamw({ lr: 0.05 }), data: (s: number) => batchAt(s), key: random.key(9) };
  const full = await train({ ...opts, steps: 6 });
  const half = await train({ ...opts, steps: 3 });
  assert.is(half.step, 3);
  const rest = await train({ ...opts, steps: 6, resume: half });
  assert.is(rest.step, 6);
  assert.is(rest.records.filter((r) => r.type === 'train').length, 3);
  const flat = async (p: unknown) => Promise.all(flattenWithPaths(p).map(async ([n, t]) => [n, Array.from(await t.data())]));
  assert.equal(await flat(rest.params), await flat(full.params));
  assert.equal(await flat(rest.optState), await flat(full.optState));
  assert.not.equal(await flat(half.params), await flat(full.params));
});

test('checkpoint files hold any optimizer state by slot: SGD state saved, loaded and restored exactly', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'revgrad-train-api-'));
  try {
    const opt = sgd({ lr: 0.1, momentum: 0.9 });
    const run = await train({ model, params: init(), optimizer: opt, data: (s: number) => batchAt(s), steps: 4 });
    const path = join(dir, 'ck.safetensors');
    const meta = { step: run.step, seed: 0, key: [0, 0] as const, config: null, optimizer: { name: opt.name }, training: {} };
    await saveCheckpoint(path, run.params, run.optState, meta);
    const ck = loadCheckpoint(path);
    if (E.isLeft(ck)) return assert.unreachable(ck.left.message);
    assert.equal([...ck.right.optim!.keys()], ['buf']);
    const back = restoreTrainState(ck.right, init(), opt);
    if (E.isLeft(back)) return assert.unreachable(back.left.join('\n'));
    assert.is(back.right.step, 4);
    assert.is(back.right.optState.step, 4);
    assert.equal(Array.from(await back.right.optState.buf.weight.data()), Array.from(await run.optState.buf.weight.data()));
    // The wrong optimizer for the file: every problem named.
    const wrong = restoreTrainState(ck.right, init(), adamw());
    assert.ok(E.isLeft(wrong));
    if (E.isLeft(wrong)) {
      assert.match(wrong.left.join('\n'), "no optimizer state 'optim.m.*'");
      assert.match(wrong.left.join('\n'), "'optim.buf.*' is not adamw's");
      assert.match(wrong.left.join('\n'), 'written by the sgd optimizer, not adamw');
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('train(): bad sources and options are typed errors naming the problem', async () => {
  const base = { model, params: init(), optimizer: sgd() };
  const fails = async (p: Promise<unknown>, re: RegExp) => {
    try {
      await p;
    } catch (e) {
      assert.ok(e instanceof ArgumentError, String(e));
      assert.match((e as Error).message, re);
      return;
    }
    assert.unreachable(`no error (expected ${re})`);
  };
  await fails(train({ ...base, data: (s: number) => batchAt(s) }), /a function batch source needs `steps`/);
  await fails(train({ ...base, data: 42 as never, steps: 1 }), /data must be an async iterable, an iterable or a function/);
  await fails(train({ ...base, data: [{ x: tensor([[1, 2]]) } as never], steps: 1 }), /batch 0 must be \{ x: Tensor, labels/);
  await fails(train({ ...base, data: [batchAt(0)], clipNorm: 0 }), /clipNorm must be positive/);
  await fails(train({ ...base, data: [batchAt(0)], driftEvery: 1 }), /driftEvery needs a model with a drift method/);
});

test.run();
