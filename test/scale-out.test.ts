/**
 * The scale-out round trip as a user runs it: `revgrad train --config X.yaml`, `revgrad export`,
 * `revgrad convert` both ways, and (where /usr/bin/python3 has torch) torch.load(weights_only=True) on
 * the export. Also the SGD path of the training loop that a YAML's OPTIMIZING_METHOD selects.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as E from 'fp-ts/lib/Either.js';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { valueAndGrad } from '../src/autodiff/tape.ts';
import { flattenWithPaths } from '../src/autodiff/pytree.ts';
import { PyDict } from '../src/io/pickle.ts';
import { decodePyth, encodePyth, pyDict, stateDictOf } from '../src/io/pyth.ts';
import { readPythFile } from '../src/io/pyth-file.ts';
import { readSafetensorsFile } from '../src/io/safetensors-file.ts';
import { buildModel } from '../src/models/mvit/model.ts';
import { readYamlConfig } from '../src/models/mvit/yaml-config.ts';
import { foldIn } from '../src/random/index.ts';
import { loadCheckpoint } from '../src/train/checkpoint.ts';
import { crossEntropy } from '../src/train/loss.ts';
import { movingMnistBatches } from '../src/data/moving-mnist.ts';
import { runKeys, runMovingMnist as train, type TrainSettings } from '../src/cli/train-run.ts';
import type { Tensor } from '../src/tensor/tensor.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const CLI = join(ROOT, 'src/cli/main.ts');
const YAML = join(ROOT, 'test/fixtures/yaml/base_vit_mnist.yaml');
const cli = (...args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', CLI, ...args], { cwd: ROOT, encoding: 'utf8', timeout: 120_000 });
const bits = (a: Float32Array) => Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length));

const PYTHON = '/usr/bin/python3';
const hasTorch = spawnSync(PYTHON, ['-c', 'import torch'], { timeout: 60_000 }).status === 0;
if (!hasTorch) console.log(`  [skipped] torch.load of the export: ${PYTHON} has no torch (apt-get install python3-torch)`);

test('train from a PySlowFast YAML, export to .pyth + YAML, convert back: same weights, same config, torch reads it', () => {
  const dir = mkdtempSync(join(tmpdir(), 'revgrad-scale-out-'));
  try {
    const run = join(dir, 'run');
    const trained = cli('train', '--config', YAML, '--steps', '3', '--batch', '2', '--eval-clips', '2', '--no-report', '--out', run);
    assert.is(trained.status, 0, trained.stderr);
    assert.match(trained.stdout, /base_vit_mnist\.yaml: not used by revgrad train: MIXUP\.ALPHA, TRAIN, NUM_GPUS\n/);
    assert.match(trained.stdout, /lr 0\.004, mode reversible, seed 3/);
    const checkpoint = join(run, 'checkpoint.safetensors');
    const ck = loadCheckpoint(checkpoint);
    if (E.isLeft(ck)) return assert.unreachable(ck.left.message);
    const training = ck.right.meta.training as unknown as TrainSettings;
    assert.equal(training.optimizer, { name: 'adamw', beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.05 });
    assert.equal([training.clipNorm, training.labelSmoothing, training.schedule.warmupSteps], [0.5, 0.2, 1]);

    const out = join(dir, 'model.pyth');
    const exported = cli('export', '--checkpoint', checkpoint, '--out', out);
    assert.is(exported.status, 0, exported.stderr);
    assert.ok(existsSync(join(dir, 'model.yaml')));
    assert.is(cli('export', '--checkpoint', checkpoint, '--out', out).status, 1, 'no overwrite without --force');

    // The .pyth: {epoch, model_state, cfg}, the weights bit for bit, the cfg the written YAML.
    const file = decodePyth(readFileSync(out), out);
    if (E.isLeft(file)) return assert.unreachable(file.left.message);
    const root = file.right.root as PyDict;
    assert.equal([...root.entries.keys()], ['epoch', 'model_state', 'cfg']);
    assert.is(root.get('cfg'), readFileSync(join(dir, 'model.yaml'), 'utf8'));
    const weights = stateDictOf(file.right);
    if (E.isLeft(weights)) return assert.unreachable(weights.left.message);
    assert.equal([...weights.right.keys()], [...ck.right.params.keys()]);
    for (const [name, a] of ck.right.params) assert.equal(bits(weights.right.get(name)!.data), bits(a.data), name);

    // The YAML: the same model; the run's schedule, optimizer and smoothing in PySlowFast's terms.
    const source = readYamlConfig(YAML);
    const back = readYamlConfig(join(dir, 'model.yaml'));
    if (E.isLeft(source) || E.isLeft(back)) return assert.unreachable('yaml');
    assert.equal(back.right.cfg, source.right.cfg);
    assert.equal(back.right.tree.SOLVER, {
      BASE_LR: 0.004, BASE_LR_SCALE_NUM_SHARDS: false, LR_POLICY: 'cosine', MAX_EPOCH: 100, WARMUP_EPOCHS: (1 / 3) * 100, WARMUP_START_LR: 1e-5,
      COSINE_END_LR: 1e-5, COSINE_AFTER_WARMUP: true, OPTIMIZING_METHOD: 'adamw', WEIGHT_DECAY: 0.05, ZERO_WD_1D_PARAM: true,
      CLIP_GRAD_L2NORM: 0.5, BETAS: [0.9, 0.95],
    });
    assert.equal(back.right.tree.MIXUP, { ENABLE: true, PROB: 0, LABEL_SMOOTH_VALUE: 0.2 });
    assert.equal(back.right.tree.TRAIN, { CHECKPOINT_FILE_PATH: 'model.pyth', CHECKPOINT_EPOCH_RESET: true });

    // Back from PySlowFast: eval reads the .pyth directly (its cfg is the config) ...
    const evaluated = cli('eval', '--checkpoint', out, '--clips', '2', '--batch', '2', '--json');
    assert.is(evaluated.status, 0, evaluated.stderr);
    assert.is(JSON.parse(evaluated.stdout).clips, 2);
    // ... and convert to safetensors keeps the weights and the config (eval needs no --config).
    const imported = join(dir, 'imported.safetensors');
    const converted = cli('convert', out, imported);
    assert.is(converted.status, 0, converted.stderr);
    const st = readSafetensorsFile(imported);
    if (E.isLeft(st)) return assert.unreachable(st.left.message);
    for (const [name, a] of ck.right.params) assert.equal(bits(st.right.tensors.get(name)!.data), bits(a.data), name);
    assert.equal(JSON.parse(st.right.metadata.config!).MVIT, source.right.cfg.MVIT);
    assert.is(st.right.metadata.epoch, '-1');

    if (hasTorch) {
      const r = spawnSync(PYTHON, ['-c', `
import sys, torch
ck = torch.load(sys.argv[1], weights_only=True)
ms = ck["model_state"]
assert type(ms).__name__ == "OrderedDict" and ck["epoch"] == -1 and ck["cfg"].startswith("# Exported by revgrad")
assert all(v.dtype == torch.float32 for v in ms.values())
print(len(ms), float(sum(v.double().sum() for v in ms.values())))`, out], { encoding: 'utf8', timeout: 120_000 });
      assert.is(r.status, 0, r.stderr);
      const [count, total] = r.stdout.trim().split(' ').map(Number);
      assert.is(count, ck.right.params.size);
      const ours = [...ck.right.params.values()].reduce((s, a) => s + a.data.reduce((t, x) => t + x, 0), 0);
      assert.ok(Math.abs(total! - ours) <= 1e-6 * Math.max(1, Math.abs(ours)), `${total} vs ${ours}`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

(hasTorch ? test : test.skip)("load_checkpoint's steps (PySlowFast) take what export and convert write (test path, and train path with CHECKPOINT_EPOCH_RESET)", () => {
  const dir = mkdtempSync(join(tmpdir(), 'revgrad-pyslowfast-'));
  try {
    const reference = 'test/fixtures/revmvit_video_conv_avg_full.pyth';
    const file = readPythFile(reference);
    const weights = E.isRight(file) ? stateDictOf(file.right) : file;
    if (E.isLeft(weights)) return assert.unreachable(weights.left.message);
    const state = pyDict(weights.right, true);
    // export's layout {epoch, model_state, cfg}, and convert's {model_state, cfg}.
    writeFileSync(join(dir, 'export.pyth'), encodePyth(pyDict([['epoch', -1], ['model_state', state], ['cfg', 'MODEL:\n  NUM_CLASSES: 10\n']])));
    writeFileSync(join(dir, 'convert.pyth'), encodePyth(pyDict([['model_state', state], ['cfg', 'MODEL:\n  NUM_CLASSES: 10\n']])));
    const r = spawnSync(PYTHON, ['test/fixtures/pyslowfast/load_like_pyslowfast.py', reference, join(dir, 'export.pyth'), join(dir, 'convert.pyth')], { cwd: ROOT, encoding: 'utf8', timeout: 120_000 });
    assert.is(r.status, 0, r.stderr);
    const lines = r.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));
    assert.equal(lines, [
      // Without the reset PySlowFast's train path wants the optimizer state that "epoch" implies: export's YAML sets the reset.
      { file: 'export.pyth', test_path_epoch: -1, weights_equal: true, train_reset_epoch: -1, train_reset_weights_equal: true, train_epoch: "KeyError 'optimizer_state'" },
      { file: 'convert.pyth', test_path_epoch: -1, weights_equal: true, train_reset_epoch: -1, train_reset_weights_equal: true, train_epoch: -1 },
    ]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('convert refuses what it cannot do, with the reason', () => {
  const same = cli('convert', 'a.pyth', 'b.pth');
  assert.is(same.status, 2);
  assert.match(same.stderr, /IN and OUT are both pyth/);
  const notTraining = cli('export', '--checkpoint', 'test/fixtures/revmvit_video_conv_avg_full.safetensors', '--out', join(tmpdir(), `revgrad-${process.pid}.pyth`));
  assert.is(notTraining.status, 1);
  assert.match(notTraining.stderr, /for weights alone use: revgrad convert/);
});

test("SGD from a YAML: the loop takes PySlowFast's SGD step, keeps one buffer, and resumes exactly", async () => {
  const yaml = readYamlConfig('test/fixtures/yaml/sgd_vit_mnist.yaml');
  if (E.isLeft(yaml)) return assert.unreachable(JSON.stringify(yaml.left));
  const cfg = yaml.right.cfg;
  const model = buildModel(cfg);
  const settings: TrainSettings = {
    seed: 1,
    steps: 3,
    batchSize: 2,
    mode: 'reversible',
    // Constant lr, no clipping, no decay: one step is exactly p - lr * g.
    schedule: { baseLr: 0.1, totalSteps: 3, warmupSteps: 0, warmupStartLr: 0.1, endLr: 0.1, cosineAfterWarmup: false },
    optimizer: { name: 'sgd', beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, momentum: 0.9, dampening: 0, nesterov: true },
    clipNorm: null,
    labelSmoothing: 0,
    zeroWd1dParam: false,
  };
  const monitoring = { evalEvery: 0, evalBatches: 1, evalBatchSize: 2, driftEvery: 0, ckptEvery: 1, headAct: 'softmax' as const };
  const batches = movingMnistBatches(cfg);
  const dir = mkdtempSync(join(tmpdir(), 'revgrad-sgd-'));
  try {
    const one = await train({ model, batches, settings: { ...settings, steps: 1 }, monitoring, config: cfg, outDir: null });
    const keys = runKeys(settings.seed);
    const p0 = model.init(keys.init);
    const { x, labels: y } = batches(foldIn(keys.data, 0), 'train', 2);
    const [, g] = valueAndGrad((q: typeof p0): Tensor => crossEntropy(model.apply(q, x, foldIn(keys.step, 0), { train: true }), y, 0))(p0);
    const gs = new Map(flattenWithPaths(g));
    for (const [name, p] of flattenWithPaths(p0)) {
      // Nesterov's first step: buf = g, d = g + 0.9 g; p - 0.1 d, in float32 as torch computes it.
      const gd = gs.get(name)!.dataSync();
      const [mu, lr] = [Math.fround(0.9), Math.fround(0.1)];
      const expected = p.dataSync().map((v, i) => Math.fround(v - Math.fround(Math.fround(gd[i]! + Math.fround(mu * gd[i]!)) * lr)));
      const got = new Map(flattenWithPaths(one.params)).get(name)!.dataSync();
      assert.equal(bits(got), bits(expected), name);
    }

    const straight = await train({ model, batches, settings, monitoring, config: cfg, outDir: join(dir, 'a') });
    let calls = 0;
    await train({ model, batches, settings, monitoring, config: cfg, outDir: join(dir, 'b'), shouldStop: () => ++calls >= 2 });
    const ck = loadCheckpoint(join(dir, 'b', 'checkpoint.safetensors'));
    if (E.isLeft(ck)) return assert.unreachable(ck.left.message);
    assert.is(ck.right.meta.step, 2);
    assert.ok(ck.right.optim !== null && [...ck.right.optim.keys()].join() === 'buf' && ck.right.optim.get('buf')!.size === model.specs.length, 'SGD stores its momentum only');
    const resumed = await train({ model, batches, settings, monitoring, config: cfg, outDir: join(dir, 'b'), resume: ck.right });
    const a = flattenWithPaths(straight.params);
    const b = new Map(flattenWithPaths(resumed.params));
    for (const [name, t] of a) assert.equal(bits(b.get(name)!.dataSync()), bits(t.dataSync()), name);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
