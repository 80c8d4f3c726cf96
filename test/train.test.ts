import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import { flattenWithPaths, grad, reshape, tensor, type Tensor } from '../src/index.ts';
import { linear, type LinearParams } from '../src/nn/index.ts';
import { normal, split, type Key } from '../src/random/index.ts';
import { reversible, stack, type Mode } from '../src/reversible/index.ts';
import { gelu } from '../src/tensor/composite.ts';
import { mul } from '../src/tensor/ops.ts';
import { loadCheckpoint } from '../src/train/checkpoint.ts';
import { accuracy, crossEntropy } from '../src/train/loss.ts';
import type { TrainableModel } from '../src/train/loop.ts';
import { readMetrics } from '../src/train/metrics-file.ts';
import { adamwInit, adamwUpdate, clipGradNorm, sgdInit, sgdUpdate, type AdamWHyper } from '../src/train/optim.ts';
import { movingMnistBatches } from '../src/data/moving-mnist.ts';
import { runMovingMnist as train, type Monitoring, type TrainSettings } from '../src/cli/train-run.ts';
import type { Key as RandomKey } from '../src/random/index.ts';
import { learningRate, scheduleDefaults } from '../src/train/schedule.ts';
import { lineChart, niceTicks, renderReport } from '../src/train/report.ts';

const close = (actual: ArrayLike<number>, expected: readonly number[], tol: number, what: string) => {
  assert.is(actual.length, expected.length, `${what}: length`);
  expected.forEach((e, i) => {
    const a = actual[i];
    assert.ok(Math.abs(a - e) <= tol * Math.max(1, Math.abs(e)), `${what}[${i}]: ${a} vs ${e}`);
  });
};
const data = (t: Tensor) => t.dataSync();

// ---- optimizers ---------------------------------------------------------------------------------

test('AdamW: two steps on a 2-element param match the hand-computed PyTorch values', () => {
  // Step 1: p·(1 − lr·wd) = [0.999, −1.998]; m = 0.1·g, v = 0.001·g²; m̂/(√v̂ + ε) = sign(g), so
  // p = [0.999 − 0.1, −1.998 + 0.1] = [0.899, −1.898].
  // Step 2 (g = [0.2, 0.3]): m = [0.065, 0.021], v = [2.8975e-4, 9.999e-5], bc1 = 0.19, bc2 = 0.001999,
  // p = 0.999·p − (0.1/0.19)·m/(√(v/bc2) + ε) = [0.8082434839, −1.9455209911].
  const hyper: AdamWHyper = { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 };
  let params = { w: tensor([1, -2]) };
  let state = adamwInit(params);
  ({ params, state } = adamwUpdate(params, { w: tensor([0.5, -0.1]) }, state, hyper));
  close(data(params.w), [0.899, -1.898], 1e-6, 'step 1');
  close(data(state.m.w), [0.05, -0.01], 1e-7, 'm1');
  close(data(state.v.w), [0.00025, 0.00001], 1e-9, 'v1');
  ({ params, state } = adamwUpdate(params, { w: tensor([0.2, 0.3]) }, state, hyper));
  close(data(params.w), [0.8082434839, -1.9455209911], 1e-6, 'step 2');
  assert.is(state.step, 2);
});

test('AdamW: no weight decay on params where noDecay(name) holds', () => {
  const hyper: AdamWHyper = { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.5 };
  const params = { a: { weight: tensor([1]), bias: tensor([1]) } };
  const grads = { a: { weight: tensor([0]), bias: tensor([0]) } };
  const out = adamwUpdate(params, grads, adamwInit(params), hyper, (n) => n.endsWith('.bias'));
  close(data(out.params.a.weight), [0.95], 1e-7, 'decayed'); // 1·(1 − 0.1·0.5), zero gradient
  close(data(out.params.a.bias), [1], 0, 'not decayed');
});

test('AdamW: inputs are not mutated (pure)', () => {
  const params = { w: tensor([1, 2]) };
  const state = adamwInit(params);
  adamwUpdate(params, { w: tensor([1, 1]) }, state, { lr: 1, beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0.1 });
  close(data(params.w), [1, 2], 0, 'params');
  close(data(state.m.w), [0, 0], 0, 'm');
  assert.is(state.step, 0);
});

test('SGD with momentum and weight decay: PyTorch semantics by hand', () => {
  // d = g + 0.1·p; step 1: buf = d = [0.6, −0.3], p = [0.7, −1.85];
  // step 2: d = [0.27, 0.115], buf = 0.9·buf + d = [0.81, −0.155], p = [0.295, −1.7725].
  const hyper = { lr: 0.5, momentum: 0.9, dampening: 0, weightDecay: 0.1, nesterov: false };
  let params = { w: tensor([1, -2]) };
  let state = sgdInit(params);
  ({ params, state } = sgdUpdate(params, { w: tensor([0.5, -0.1]) }, state, hyper));
  close(data(params.w), [0.7, -1.85], 1e-6, 'step 1');
  ({ params, state } = sgdUpdate(params, { w: tensor([0.2, 0.3]) }, state, hyper));
  close(data(params.w), [0.295, -1.7725], 1e-6, 'step 2');
  // Nesterov, one step, no decay: buf = g, d = g + 0.9·g, p = 1 − 0.5·1.9·0.5 = 0.525.
  const n = sgdUpdate({ w: tensor([1]) }, { w: tensor([0.5]) }, sgdInit({ w: tensor([1]) }), { ...hyper, weightDecay: 0, nesterov: true });
  close(data(n.params.w), [0.525], 1e-6, 'nesterov');
});

test('clipGradNorm: global L2 norm, scale max/(norm + 1e-6), untouched below the limit', () => {
  const grads = { a: tensor([3, 4]), b: tensor([12]) }; // norm 13
  const clipped = clipGradNorm(grads, 6.5);
  assert.ok(Math.abs(clipped.norm.itemSync() - 13) < 1e-5);
  const c = 6.5 / (13 + 1e-6);
  close(data(clipped.grads.a), [3 * c, 4 * c], 1e-6, 'a');
  close(data(clipped.grads.b), [12 * c], 1e-6, 'b');
  const same = clipGradNorm(grads, 20);
  assert.equal(data(same.grads.a), data(grads.a)); // multiplied by exactly 1, as torch does
  assert.ok(Math.abs(same.norm.itemSync() - 13) < 1e-5);
});

// ---- schedule -----------------------------------------------------------------------------------

test('cosine schedule with linear warmup', () => {
  const s = { baseLr: 1, totalSteps: 110, warmupSteps: 10, warmupStartLr: 0, endLr: 0, cosineAfterWarmup: true };
  close([learningRate(s, 0), learningRate(s, 5), learningRate(s, 10), learningRate(s, 60), learningRate(s, 110)], [0, 0.5, 1, 0.5, 0], 1e-12, 'lr');
  // cos(π·25/100) = √2/2: lr = (1 + √2/2)/2
  close([learningRate(s, 35)], [(1 + Math.SQRT1_2) / 2], 1e-12, 'quarter');
  const d = scheduleDefaults(0.002, 100);
  assert.is(d.warmupSteps, 10);
  assert.ok(learningRate(d, 99) < learningRate(d, 50) && learningRate(d, 50) < learningRate(d, 10));
});

// ---- loss ---------------------------------------------------------------------------------------

/** F.cross_entropy(label_smoothing=ε) in float64: mean_i[(1 − ε)(−log p_iy) + ε·mean_k(−log p_ik)]. */
function ce64(logits: number[][], labels: number[], eps: number): { loss: number; grad: number[][] } {
  const B = logits.length;
  let loss = 0;
  const grad = logits.map((row, i) => {
    const m = Math.max(...row);
    const lse = m + Math.log(row.reduce((s, z) => s + Math.exp(z - m), 0));
    const lp = row.map((z) => z - lse);
    const K = row.length;
    loss += (1 - eps) * -lp[labels[i]] + (eps * -lp.reduce((a, b) => a + b, 0)) / K;
    return lp.map((l, k) => (Math.exp(l) - ((k === labels[i] ? 1 - eps : 0) + eps / K)) / B);
  });
  return { loss: loss / B, grad };
}

test('cross-entropy with label smoothing matches the float64 formula (value and gradient)', () => {
  const logits = [[2, -1, 0.5], [0.1, 0.2, 3]];
  const labels = [0, 1];
  // Hand value for ε = 0.1: 1.6054563806 (see ce64).
  close(data(crossEntropy(tensor(logits), labels, 0.1)), [1.6054563805893112], 1e-6, 'hand value');
  for (const eps of [0, 0.1, 0.3]) {
    const ref = ce64(logits, labels, eps);
    close(data(crossEntropy(tensor(logits), labels, eps)), [ref.loss], 1e-6, `loss ε=${eps}`);
    const g = grad((x: Tensor) => crossEntropy(x, labels, eps))(tensor(logits)) as Tensor;
    close(data(g), ref.grad.flat(), 1e-6, `grad ε=${eps}`);
  }
  // Larger random case.
  const raw = Array.from(normal([0, 7], [6, 40]).dataSync(), (v) => v * 3);
  const rows = Array.from({ length: 6 }, (_, i) => raw.slice(i * 40, i * 40 + 40));
  const ys = [0, 39, 7, 7, 12, 21];
  close(data(crossEntropy(tensor(rows), ys, 0.1)), [ce64(rows, ys, 0.1).loss], 1e-5, 'random');
  assert.throws(() => crossEntropy(tensor(logits), [0, 3]), /label 1 is 3/);
});

test('accuracy: first maximum wins', async () => {
  assert.is(await accuracy(tensor([[1, 3, 3], [5, 0, 1], [0, 0, 1]]), [1, 0, 1]), 2 / 3);
});

// ---- the loop, with a small stand-in model of the MViTModel interface ----------------------------

const FRAMES = 2;
const SIZE = 16;
const WIDTH = 16;
const fakeCfg = { DATA: { NUM_FRAMES: FRAMES, TRAIN_CROP_SIZE: SIZE, INPUT_CHANNEL_NUM: [1] }, MVIT: { PATCH_2D: false } };

type BranchP = { fc1: LinearParams; fc2: LinearParams };
const branch = (p: BranchP, x: Tensor) => linear(p.fc2, gelu(linear(p.fc1, x)));
const block = () => reversible(branch, branch);

function standIn(depth = 2) {
  const body = stack([block(), ...Array.from({ length: depth - 1 }, block)]);
  const initLinear = (k: Key, out: number, inp: number, scale = 1): LinearParams => ({
    weight: mul(normal(k, [out, inp]), scale / Math.sqrt(inp)),
    bias: tensor(new Float32Array(out)),
  });
  const model: TrainableModel<any> & { init(k: RandomKey): any; noDecay(name: string): boolean } = {
    init(k) {
      const ks = split(k, 2 + 4 * depth);
      return {
        embed: initLinear(ks[0], WIDTH, FRAMES * SIZE * SIZE),
        blocks: Array.from({ length: depth }, (_, i) => ({
          F: { fc1: initLinear(ks[2 + 4 * i], WIDTH, WIDTH), fc2: initLinear(ks[3 + 4 * i], WIDTH, WIDTH, 0.5) },
          G: { fc1: initLinear(ks[4 + 4 * i], WIDTH, WIDTH), fc2: initLinear(ks[5 + 4 * i], WIDTH, WIDTH, 0.5) },
        })),
        head: initLinear(ks[1], 40, 2 * WIDTH),
      };
    },
    apply(p, x, k, { mode }) {
      const h = linear(p.embed, reshape(x, [x.shape[0], -1]));
      return linear(p.head, body.forward(p.blocks, h, k, { mode: mode as Mode }));
    },
    drift(p, x, k) {
      return body.drift(p.blocks, linear(p.embed, reshape(x, [x.shape[0], -1])), k);
    },
    noDecay: (name) => name.endsWith('.bias'),
  };
  return model;
}

const monitoring: Monitoring = { evalEvery: 10, evalBatches: 2, evalBatchSize: 16, driftEvery: 5, ckptEvery: 0, headAct: 'none' };
const settings = (steps: number, extra: Partial<TrainSettings> = {}): TrainSettings => ({
  seed: 3,
  steps,
  batchSize: 16,
  mode: 'reversible',
  schedule: { ...scheduleDefaults(1e-2, steps), warmupSteps: 2 },
  optimizer: { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.05 },
  clipNorm: 1,
  labelSmoothing: 0.1,
  ...extra,
});

const tmp = () => mkdtempSync(join(tmpdir(), 'revgrad-train-'));

test('train: a stand-in model learns; metrics.jsonl holds train, eval, drift and checkpoint records', async () => {
  const dir = tmp();
  try {
    const model = standIn();
    const result = await train({ model, batches: movingMnistBatches(fakeCfg), settings: settings(100, { batchSize: 32 }), monitoring: { ...monitoring, evalEvery: 25, driftEvery: 20 }, config: fakeCfg, outDir: dir });
    const rs = readMetrics(join(dir, 'metrics.jsonl'));
    const trainRs = rs.filter((r) => r.type === 'train') as any[];
    assert.is(trainRs.length, 100);
    assert.equal(trainRs.map((r) => r.step), Array.from({ length: 100 }, (_, i) => i + 1));
    for (const r of trainRs) {
      assert.ok(Number.isFinite(r.loss) && r.peakBytes > 0 && r.clipsPerSec > 0 && r.lr > 0, JSON.stringify(r));
    }
    const first = trainRs.slice(0, 10).reduce((s, r) => s + r.loss, 0) / 10;
    const last = trainRs.slice(-10).reduce((s, r) => s + r.loss, 0) / 10;
    assert.ok(first > 3.4 && last < first - 0.15, `loss did not fall: ${first} -> ${last}`);
    const evals = rs.filter((r) => r.type === 'eval') as any[];
    assert.equal(evals.map((r) => r.step), [25, 50, 75, 100]);
    assert.ok(evals.every((r) => r.testLoss !== null && r.clips === 32));
    const drift = rs.filter((r) => r.type === 'drift') as any[];
    assert.equal(drift.map((r) => r.step), [20, 40, 60, 80, 100]);
    assert.is(drift[0].blocks.length, 2);
    assert.ok(drift.every((r) => r.max >= 0 && r.max < 1e-4), JSON.stringify(drift[0]));
    assert.equal((rs.filter((r) => r.type === "checkpoint") as any[]).map((r) => r.step), [100]);
    const ck = loadCheckpoint(join(dir, 'checkpoint.safetensors'));
    assert.ok(E.isRight(ck), E.isLeft(ck) ? ck.left.message : '');
    if (E.isRight(ck)) {
      assert.is(ck.right.meta.step, 100);
      assert.is(ck.right.meta.seed, 3);
      const names = flattenWithPaths(result.params).map(([n]) => n);
      assert.equal([...ck.right.params.keys()], names);
      assert.equal([...ck.right.optim!.get('m')!.keys()], names);
      assert.equal([...ck.right.optim!.keys()], ['m', 'v']);
      assert.ok(ck.right.metadata['optim.m.embed.weight'] === undefined);
      const w = flattenWithPaths(result.params)[0][1].dataSync();
      assert.equal(ck.right.params.get(names[0])!.data, w);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('train: deterministic, and stop + resume reproduces the uninterrupted run bit for bit', async () => {
  const model = standIn();
  const batches = movingMnistBatches(fakeCfg);
  const quiet: Monitoring = { ...monitoring, evalEvery: 0, driftEvery: 0, ckptEvery: 4 };
  const full = await train({ model, batches, settings: settings(10), monitoring: quiet, config: fakeCfg, outDir: null });
  const again = await train({ model, batches, settings: settings(10), monitoring: quiet, config: fakeCfg, outDir: null });
  const dir = tmp();
  try {
    let steps = 0;
    const stopped = await train({
      model, batches, settings: settings(10), monitoring: quiet, config: fakeCfg, outDir: dir,
      onRecord: (r) => { if (r.type === 'train') steps = r.step; },
      shouldStop: () => steps === 6,
    });
    assert.is(stopped.step, 6);
    const ck = loadCheckpoint(join(dir, 'checkpoint.safetensors'));
    assert.ok(E.isRight(ck));
    if (E.isLeft(ck)) return;
    assert.is(ck.right.meta.step, 6);
    const resumed = await train({ model, batches, settings: settings(10), monitoring: quiet, config: fakeCfg, outDir: dir, resume: ck.right });
    assert.is(resumed.step, 10);
    const flat = (p: unknown) => flattenWithPaths(p).map(([n, t]) => [n, Array.from(t.dataSync())]);
    assert.equal(flat(again.params), flat(full.params));
    assert.equal(flat(resumed.params), flat(full.params));
    assert.equal(flat(resumed.optState.v), flat(full.optState.v));
    const steps2 = (readMetrics(join(dir, 'metrics.jsonl')).filter((r) => r.type === 'train') as any[]).map((r) => r.step);
    assert.equal(steps2, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    // A different seed gives different weights.
    const other = await train({ model, batches, settings: settings(10, { seed: 4 }), monitoring: quiet, config: fakeCfg, outDir: null });
    assert.not.equal(flat(other.params), flat(full.params));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("train: 'store' and 'reversible' modes compute the same losses; reversible needs less peak memory", async () => {
  // Deep and with a large batch, so that activations, not the embedding's gradient, dominate the peak.
  const model = standIn(8);
  const batches = movingMnistBatches(fakeCfg);
  const quiet: Monitoring = { ...monitoring, evalEvery: 0, driftEvery: 0, ckptEvery: 0 };
  const rev = await train({ model, batches, settings: settings(3, { batchSize: 64 }), monitoring: quiet, config: fakeCfg, outDir: null });
  const sto = await train({ model, batches, settings: settings(3, { batchSize: 64, mode: 'store' }), monitoring: quiet, config: fakeCfg, outDir: null });
  const losses = (r: typeof rev) => (r.records.filter((x) => x.type === 'train') as any[]).map((x) => x.loss);
  close(losses(rev), losses(sto), 1e-4, 'losses');
  const peak = (r: typeof rev) => (r.records.find((x) => x.type === 'train') as any).peakBytes;
  assert.ok(peak(rev) < 0.8 * peak(sto), `peak reversible ${peak(rev)} vs store ${peak(sto)}`);
});

// ---- report ---------------------------------------------------------------------------------------

test('niceTicks: round steps covering the range', () => {
  assert.equal(niceTicks(0, 1, 5), [0, 0.2, 0.4, 0.6000000000000001, 0.8, 1]);
  assert.equal(niceTicks(3, 97, 4), [25, 50, 75]);
});

test('report: self-contained HTML with one SVG chart per curve and the data drawn', () => {
  const records = [
    ...Array.from({ length: 20 }, (_, i) => ({ type: 'train', step: i + 1, loss: 3.7 - i * 0.05, acc: i / 40, lr: 1e-3, peakBytes: 1e6 })),
    { type: 'eval', step: 10, testAcc: 0.1, testLoss: 3.2, clips: 64 },
    { type: 'eval', step: 20, testAcc: 0.2, testLoss: 2.9, clips: 64 },
    { type: 'drift', step: 10, max: 3e-7, blocks: [{ block: 0, x1: 1e-7, x2: 3e-7 }, { block: 2, x1: 2e-8, x2: 1e-8 }] },
    { type: 'drift', step: 20, max: 4e-7, blocks: [{ block: 0, x1: 4e-7, x2: 3e-7 }, { block: 2, x1: 2e-8, x2: 5e-8 }] },
  ];
  const memory = [0, 2, 4].map((e) => ({ depth: 6 + e, reversibleBlocks: 4 + e, retained: { reversible: 1e6, store: 2e6 * (1 + e) }, peak: { reversible: 3e6, store: 4e6 * (1 + e) } }));
  const html = renderReport({ title: 'run <x>', summary: [['steps', '20']], records, memory });
  assert.is((html.match(/<svg /g) ?? []).length, 5);
  assert.match(html, 'run &lt;x&gt;');
  for (const t of ['Loss', 'Accuracy', 'Learning rate', 'Memory vs depth', 'Reconstruction drift']) assert.ok(html.includes(`>${t}`), t);
  assert.ok(html.includes('layer 0') && html.includes('layer 2'));
  // Nothing external: no scripts, no links, no URLs but the SVG namespace.
  assert.not.match(html, /<script|<link|src=|url\(http|@import/);
  assert.equal([...new Set(html.match(/https?:\/\/[^"' )]+/g))], ['http://www.w3.org/2000/svg']);
  // A chart with no data says so instead of drawing garbage.
  assert.match(lineChart({ title: 't', xLabel: 'x', yLabel: 'y', series: [] }), 'no data');
});

test.run();
