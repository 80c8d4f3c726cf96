/**
 * The training loop's guards (issue 16): a step whose loss or gradients are not finite is never applied
 * ('stop' saves the last good state and says what went non-finite; 'skip' goes on), a checkpoint is
 * never written from a non-finite state, and an interrupt between two ops stops the run with the last
 * completed step saved, from which a resumed run ends exactly where an uninterrupted one does.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  adamw,
  customVjp,
  flattenWithPaths,
  full,
  jit,
  InterruptedError,
  mul,
  newInterruptFlag,
  nn,
  random,
  requestInterrupt,
  tensor,
  train,
  watchInterrupts,
  type Batch,
  type LoopRecord,
  type NonFiniteRecord,
  type Tensor,
  type TrainableModel,
  type TrainState,
} from '../src/index.ts';

type Linear = nn.LinearParams;
const init = (): Linear => ({ weight: random.normal(random.key(1), [2, 2]), bias: tensor([0, 0]) });
const model: TrainableModel<Linear> = { apply: (p, x) => nn.linear(p, x) };

function batchAt(step: number, size = 8): Batch {
  const pts = random.uniform(random.foldIn(random.key(2), step), [size, 2], -1, 1).dataSync();
  const labels = Int32Array.from({ length: size }, (_, i) => (pts[2 * i]! > pts[2 * i + 1]! ? 1 : 0));
  return { x: tensor(pts, [size, 2]), labels };
}

/** Batch `bad` (0-based) holds a NaN: its loss is NaN. */
const withNaNBatch = (bad: number) => (s: number) => (s === bad ? { ...batchAt(s), x: tensor(new Float32Array(16).fill(NaN), [8, 2]) } : batchAt(s));

const flat = async (p: unknown) => Promise.all(flattenWithPaths(p).map(async ([n, t]) => [n, Array.from(await t.data())] as const));
const base = { model, params: init(), optimizer: adamw({ lr: 0.05 }), key: random.key(9) };

test("onNonFinite 'stop' (the default): the NaN step is not applied, the run stops, the last good state is saved", async () => {
  const saved: TrainState<Linear, 'm' | 'v'>[] = [];
  const records: LoopRecord[] = [];
  const r = await train({ ...base, data: withNaNBatch(3), steps: 6, checkpoint: { every: 2, save: (s) => void saved.push(s) }, onRecord: (x) => records.push(x) });
  assert.is(r.stopped, 'nonfinite');
  assert.is(r.step, 3);
  assert.is(r.optState.step, 3);
  const bad = records.find((x) => x.type === 'nonfinite') as NonFiniteRecord;
  assert.ok(bad !== undefined);
  assert.is(bad.step, 4);
  assert.is(bad.what, 'loss');
  assert.is(bad.action, 'stopped');
  assert.ok(Number.isNaN(bad.loss));
  // The state is that of a run of 3 clean steps, and that is what the last checkpoint holds.
  const three = await train({ ...base, data: withNaNBatch(3), steps: 3 });
  assert.equal(await flat(r.params), await flat(three.params));
  assert.equal(saved.map((s) => s.step), [2, 3]);
  assert.is(r.lastCheckpoint, 3);
  assert.equal(await flat(saved[1]!.params), await flat(three.params));
});

test("onNonFinite 'skip': the NaN batch is skipped (no update, no optimizer step) and the run goes on", async () => {
  const records: LoopRecord[] = [];
  const r = await train({ ...base, data: withNaNBatch(2), steps: 6, onNonFinite: 'skip', onRecord: (x) => records.push(x) });
  assert.is(r.stopped, undefined);
  assert.is(r.step, 6);
  assert.is(r.optState.step, 5);
  assert.equal(records.filter((x) => x.type === 'nonfinite').map((x) => [x.step, (x as NonFiniteRecord).action]), [[3, 'skipped']]);
  assert.equal(records.filter((x) => x.type === 'train').map((x) => x.step), [1, 2, 4, 5, 6]);
  for (const [, v] of await flat(r.params)) assert.ok(v.every(Number.isFinite));
});

test('a finite loss with a non-finite gradient is caught, and the gradient computed first in the backward pass is named', async () => {
  // An op that passes values through but whose gradient is NaN: the loss stays finite.
  // Applied to the logits, its NaN cotangent reaches the bias (the last op: first in the backward pass) and the weight.
  const poison = customVjp((x: Tensor) => [x, null], () => [mul(full([8, 2], NaN), 1)]);
  const poisoned: TrainableModel<Linear> = { apply: (p, x) => poison(nn.linear(p, x)) };
  const records: LoopRecord[] = [];
  const r = await train({ ...base, model: poisoned, data: (s: number) => batchAt(s), steps: 3, onRecord: (x) => records.push(x) });
  const bad = records.find((x) => x.type === 'nonfinite') as NonFiniteRecord;
  assert.is(r.stopped, 'nonfinite');
  assert.is(bad.step, 1);
  assert.is(bad.what, 'gradients');
  assert.ok(Number.isFinite(bad.loss));
  assert.equal(bad.tensors.map((t) => [t.name, t.nonFinite]), [['weight', 4], ['bias', 2]]);
  assert.is(bad.firstInBackward, 'bias');
});

test('parameters an update made non-finite are named, and never checkpointed', async () => {
  // lr 1e38: the first update sends the weights to infinity; the next step finds them.
  const saved: number[] = [];
  const records: LoopRecord[] = [];
  const r = await train({
    ...base,
    optimizer: adamw({ lr: 3e38, weightDecay: 0 }),
    data: (s: number) => batchAt(s),
    steps: 4,
    onNonFinite: 'skip',
    checkpoint: { every: 1, save: (s) => void saved.push(s.step) },
    onRecord: (x) => records.push(x),
  });
  const bad = records.find((x) => x.type === 'nonfinite') as NonFiniteRecord;
  assert.is(bad.what, 'parameters');
  assert.is(bad.action, 'stopped'); // skipping cannot help when the params themselves are broken
  assert.ok(bad.tensors.some((t) => t.name === 'weight'));
  assert.is(r.stopped, 'nonfinite');
  assert.ok(!saved.includes(r.step), `a non-finite state was saved (steps saved: ${saved})`);
});

test('an interrupt between two ops stops the run mid-step; resuming from the saved state ends exactly like the uninterrupted run', async () => {
  const flag = newInterruptFlag();
  const saved: TrainState<Linear, 'm' | 'v'>[] = [];
  let ops = 0;
  watchInterrupts(flag);
  try {
    // The source of batch 3 requests the interrupt: the next op (in step 4's forward pass) throws.
    const data = (s: number) => {
      if (s === 3) requestInterrupt(flag);
      ops++;
      return batchAt(s);
    };
    const r = await train({ ...base, data, steps: 6, checkpoint: { every: 0, save: (s) => void saved.push(s) } });
    assert.is(r.stopped, 'interrupted');
    assert.is(r.step, 3);
    assert.equal(saved.map((s) => s.step), [3]);
    assert.is(ops, 4);
  } finally {
    watchInterrupts(null);
  }
  const resumed = await train({ ...base, data: (s: number) => batchAt(s), steps: 6, resume: saved[0] });
  const uninterrupted = await train({ ...base, data: (s: number) => batchAt(s), steps: 6 });
  assert.equal(await flat(resumed.params), await flat(uninterrupted.params));
  assert.equal(await flat(resumed.optState), await flat(uninterrupted.optState));
});

test('a replayed (jitted) program polls the interrupt flag too: a requested interrupt stops the replay, and the next call computes the same numbers', async () => {
  const f = jit((p: Linear, x: Tensor) => mul(nn.linear(p, x), 2));
  const p = init();
  const x = batchAt(0).x;
  const want = Array.from(await f(p, x).data()); // traced and run
  const flag = newInterruptFlag();
  watchInterrupts(flag);
  try {
    requestInterrupt(flag);
    assert.throws(() => f(p, x), (e: unknown) => e instanceof InterruptedError);
  } finally {
    watchInterrupts(null);
  }
  assert.equal(Array.from(await f(p, x).data()), want);
  assert.is(f.stats.traces, 1);
});

test.run();
