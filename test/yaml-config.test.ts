/**
 * PySlowFast YAML configs: the four published REV configs, _BASE_ inheritance, yacs's literal decoding
 * and type checks, the SOLVER/MIXUP mapping to training settings, and YAML written for PySlowFast.
 */
import { spawnSync } from 'node:child_process';
import * as E from 'fp-ts/lib/Either.js';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parseConfig, type ConfigProblem } from '../src/models/mvit/config.ts';
import { paramCount, paramSpecs } from '../src/models/mvit/params-spec.ts';
import { PRESET_NAMES, presetConfig } from '../src/models/mvit/presets.ts';
import { floatText, parseSlowFastYamlText, pythonLiteral, readSlowFastTree, readYamlConfig, slowFastYaml } from '../src/models/mvit/yaml-config.ts';
import { settingsFromSlowFast, slowFastFromSettings } from '../src/train/solver.ts';
import type { TrainSettings } from '../src/train/settings.ts';

const DIR = 'test/fixtures/pyslowfast';
const ok = <A>(e: E.Either<ConfigProblem[], A>): A => {
  if (E.isLeft(e)) throw new Error(e.left.map((p) => `${p.path}: ${p.message}`).join('\n'));
  return e.right;
};
const problems = <A>(e: E.Either<ConfigProblem[] | string[], A>): string[] => {
  if (E.isRight(e)) throw new Error('expected problems');
  return e.left.map((p) => (typeof p === 'string' ? p : `${p.path}: ${p.message}`));
};

/** Files in memory, for readYamlConfig's readText. */
const memory = (files: Record<string, string>) => (path: string) => {
  if (!Object.hasOwn(files, path)) throw new Error(`ENOENT: no such file '${path}'`);
  return files[path]!;
};

test("the published ImageNet configs build PySlowFast's models with the published parameter counts", () => {
  const published: Record<string, number> = { REV_VIT_S: 22_434_664, REV_VIT_B: 87_335_656, REV_MVIT_B_16_CONV: 39_689_320 };
  for (const [name, count] of Object.entries(published)) {
    const { cfg } = ok(readYamlConfig(`${DIR}/${name}.yaml`));
    assert.is(paramCount(paramSpecs(cfg)), count, name);
    assert.equal(cfg, ok(presetConfig(name)), `${name}: the YAML and the preset written from it agree`);
  }
});

test('the published Kinetics config fails only on its cls token, and builds the 34.96M model with it off via _BASE_', () => {
  const found = problems(readYamlConfig(`${DIR}/REV_MVIT_B_16x4_CONV.yaml`));
  assert.is(found.length, 1);
  assert.match(found[0]!, /^MVIT\.CLS_EMBED_ON: must be false: MViT\.__init__ asserts `not cls_embed_on`.*_BASE_: REV_MVIT_B_16x4_CONV\.yaml/);
  const { cfg, files } = ok(readYamlConfig(`${DIR}/REV_MVIT_B_16x4_CONV_NO_CLS.yaml`));
  assert.equal(files, [`${DIR}/REV_MVIT_B_16x4_CONV_NO_CLS.yaml`, `${DIR}/REV_MVIT_B_16x4_CONV.yaml`]);
  assert.is(paramCount(paramSpecs(cfg)), 34_963_120);
  assert.equal(cfg, ok(presetConfig('REV_MVIT_B_16x4_CONV')));
  // (3, 7, 7) in that file is a Python tuple in a YAML string: yacs literal_eval makes it a list.
  assert.equal(cfg.MVIT.PATCH_KERNEL, [3, 7, 7]);
});

test("yacs's literal decoding: tuples, exponent floats, None, True; other strings stay strings", () => {
  assert.equal(pythonLiteral('(3, 7, 7)'), { type: 'tuple', value: [3, 7, 7] });
  assert.equal(pythonLiteral('(1,)'), { type: 'tuple', value: [1] });
  assert.equal(pythonLiteral('(5)'), { type: 'int', value: 5 });
  assert.equal(pythonLiteral('1e-8'), { type: 'float', value: 1e-8 });
  assert.equal(pythonLiteral('-0.5'), { type: 'float', value: -0.5 });
  assert.equal(pythonLiteral('0x10'), { type: 'int', value: 16 });
  assert.equal(pythonLiteral('None'), { type: 'none', value: null });
  assert.equal(pythonLiteral("[1, 'a', [2.0]]"), { type: 'list', value: [1, 'a', [2]] });
  for (const text of ['conv', 'rand-m7-mstd0.5-inc1', '.', 'inf', '007', '1 2', "'open", '(1, 2']) assert.is(pythonLiteral(text), undefined, text);
});

test("a value of another type than PySlowFast's default is refused as yacs refuses it", () => {
  const read = (text: string) => readYamlConfig('c.yaml', { readText: memory({ 'c.yaml': text }) });
  const found = problems(read('MVIT:\n  MLP_RATIO: 4\n  DEPTH: 16.0\n  QKV_BIAS: 1\n  PATCH_KERNEL: (3, 7, 7)\n'));
  assert.is(found.length, 3);
  assert.match(found[0]!, /MVIT\.MLP_RATIO: PySlowFast's config merge raises ValueError: Type mismatch \(<class 'float'> vs\. <class 'int'>\).*write 4\.0/);
  assert.match(found[1]!, /MVIT\.DEPTH: .*Type mismatch \(<class 'int'> vs\. <class 'float'>\)/);
  assert.match(found[2]!, /MVIT\.QKV_BIAS: .*\(<class 'bool'> vs\. <class 'int'>\)/);
  // A tuple where the default is a list is fine (yacs converts), and None fits a None default.
  const fine = readSlowFastTree('c.yaml', { readText: memory({ 'c.yaml': 'MVIT:\n  POOL_KVQ_KERNEL: (1, 3, 3)\n  POOL_KV_STRIDE_ADAPTIVE: None\n' }) });
  assert.equal(ok(fine).tree, { MVIT: { POOL_KVQ_KERNEL: [1, 3, 3], POOL_KV_STRIDE_ADAPTIVE: null } });
});

test('_BASE_: relative to the including file, merged section by section; cycles, missing files and bad inheritance are problems', () => {
  const files = {
    'cfgs/base/model.yaml': 'MVIT:\n  DEPTH: 3\n  EMBED_DIM: 32\nSOLVER:\n  BASE_LR: 0.5\n  MAX_EPOCH: 10\n',
    'cfgs/child.yaml': '_BASE_: base/model.yaml\nMVIT:\n  DEPTH: 5\nSOLVER:\n  BASE_LR: 0.25\n',
    'cfgs/a.yaml': '_BASE_: b.yaml\n',
    'cfgs/b.yaml': '_BASE_: a.yaml\n',
    'cfgs/lost.yaml': '_BASE_: nowhere.yaml\n',
    'cfgs/clash.yaml': '_BASE_: base/model.yaml\nSOLVER:\n  MAX_EPOCH:\n    X: 1\n',
    'cfgs/flat.yaml': '_BASE_: child.yaml\nSOLVER: 3\n',
    'cfgs/dup.yaml': 'MVIT:\n  DEPTH: 3\n  DEPTH: 4\n',
  };
  const read = (path: string) => readSlowFastTree(path, { readText: memory(files) });
  const { tree } = ok(read('cfgs/child.yaml'));
  assert.equal(tree.MVIT, { DEPTH: 5, EMBED_DIM: 32 });
  assert.equal(tree.SOLVER, { BASE_LR: 0.25, MAX_EPOCH: 10 });
  assert.match(problems(read('cfgs/a.yaml'))[0]!, /_BASE_ files include each other \(cfgs\/a\.yaml -> cfgs\/b\.yaml -> cfgs\/a\.yaml\)/);
  assert.match(problems(read('cfgs/lost.yaml'))[0]!, /cfgs\/nowhere\.yaml \(the _BASE_ of cfgs\/lost\.yaml\): cannot read/);
  assert.match(problems(read('cfgs/clash.yaml'))[0]!, /SOLVER\.MAX_EPOCH: .*Cannot inherit key 'MAX_EPOCH' from base!/);
  // fvcore lets a value replace a base section; yacs then refuses it against the default section.
  assert.match(problems(read('cfgs/flat.yaml'))[0]!, /^SOLVER: .*Type mismatch \(<class 'CfgNode'> vs\. <class 'int'>\)/);
  assert.match(problems(read('cfgs/dup.yaml'))[0]!, /cfgs\/dup\.yaml:3:3: YAML error: Map keys must be unique/);
});

test('SOLVER and MIXUP drive the trainer; what it does not use is named', () => {
  const base = ok(readSlowFastTree('test/fixtures/yaml/base_vit_mnist.yaml')).tree;
  const a = settingsFromSlowFast(base, 200);
  if (E.isLeft(a)) return assert.unreachable(a.left.join('\n'));
  assert.equal(a.right.settings, {
    seed: 3,
    schedule: { baseLr: 0.004, totalSteps: 200, warmupSteps: 50, warmupStartLr: 1e-5, endLr: 1e-5, cosineAfterWarmup: true },
    optimizer: { name: 'adamw', beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.05 },
    clipNorm: 0.5,
    labelSmoothing: 0.2,
    zeroWd1dParam: true,
  });
  assert.equal(a.right.ignored, ['MIXUP.ALPHA', 'TRAIN', 'NUM_GPUS']);

  const sgd = ok(readSlowFastTree('test/fixtures/yaml/sgd_vit_mnist.yaml')).tree;
  const b = settingsFromSlowFast(sgd, 200);
  if (E.isLeft(b)) return assert.unreachable(b.left.join('\n'));
  assert.equal(b.right.settings.optimizer, { name: 'sgd', beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.05, momentum: 0.9, dampening: 0, nesterov: true });
  assert.is(b.right.settings.labelSmoothing, 0, 'MIXUP off: PySlowFast does not smooth labels');
  assert.is(b.right.settings.zeroWd1dParam, false);
  assert.equal(b.right.ignored, ['SOLVER.LAYER_DECAY', 'SOLVER.BETAS (sgd)', 'MIXUP.ALPHA', 'TRAIN', 'NUM_GPUS']);

  const bad = settingsFromSlowFast({ SOLVER: { LR_POLICY: 'steps_with_relative_lrs', OPTIMIZING_METHOD: 'lars', BASE_LR: 0.1, COSINE_END_LR: 0.2 } }, 10);
  const found = problems(bad);
  assert.match(found[0]!, /LR_POLICY: revgrad's trainer has only "cosine"/);
  assert.match(found[1]!, /OPTIMIZING_METHOD: .*got "lars"/);
  assert.match(found[2]!, /COSINE_END_LR: must be below BASE_LR \(0\.1\)/);
});

test('the SOLVER written for a run reads back as the same settings (warmup as a fraction of the run)', () => {
  const settings: TrainSettings = {
    seed: 5,
    steps: 900,
    batchSize: 16,
    mode: 'reversible',
    schedule: { baseLr: 0.002, totalSteps: 900, warmupSteps: 50, warmupStartLr: 2e-5, endLr: 2e-5, cosineAfterWarmup: true },
    optimizer: { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.05 },
    clipNorm: 1,
    labelSmoothing: 0.1,
  };
  const tree = slowFastFromSettings(settings, 300);
  const back = settingsFromSlowFast(tree, 900);
  if (E.isLeft(back)) return assert.unreachable(back.left.join('\n'));
  assert.equal(back.right.settings, {
    seed: 5,
    schedule: settings.schedule,
    optimizer: { name: 'adamw', ...settings.optimizer },
    clipNorm: 1,
    labelSmoothing: 0.1,
    zeroWd1dParam: true,
  });
  assert.is((tree.SOLVER as Record<string, unknown>).WARMUP_EPOCHS, (50 / 900) * 300);
});

test('YAML written for PySlowFast reads back as the same config for every preset, floats as floats', () => {
  for (const name of PRESET_NAMES) {
    const cfg = ok(presetConfig(name));
    const text = slowFastYaml(cfg, { SOLVER: { BASE_LR: 1e-8, MAX_EPOCH: 30, WARMUP_EPOCHS: 3 } });
    const tree = ok(parseSlowFastYamlText(text, name));
    assert.equal(ok(parseConfig(tree)), cfg, name);
    assert.match(text, /\n  MLP_RATIO: 4\.0\n/);
    assert.match(text, /\n  BASE_LR: 1\.0e-8\n/);
    assert.match(text, /\n  WARMUP_EPOCHS: 3\.0\n/);
    assert.match(text, /\n  MODEL_NAME: "MViT"\n/);
  }
  assert.equal([floatText(2), floatText(0.05), floatText(1e-6), floatText(1.5e21)], ['2.0', '0.05', '0.000001', '1.5e+21']);
});

const PYTHON = '/usr/bin/python3';
const hasPyYaml = spawnSync(PYTHON, ['-c', 'import yaml'], { encoding: 'utf8', timeout: 30_000 }).status === 0;
if (!hasPyYaml) console.log(`  [skipped] PyYAML check: ${PYTHON} has no yaml module (python3-yaml)`);

(hasPyYaml ? test : test.skip)("PyYAML's safe_load reads the written YAML with PySlowFast's types (floats as float, ints as int, tuples as lists)", () => {
  const cfg = ok(presetConfig('REV_MVIT_B_16_CONV'));
  const text = slowFastYaml(cfg, slowFastFromSettings(
    {
      seed: 0, steps: 10, batchSize: 2, mode: 'reversible', clipNorm: null, labelSmoothing: 0,
      schedule: { baseLr: 1e-3, totalSteps: 10, warmupSteps: 1, warmupStartLr: 1e-6, endLr: 1e-6, cosineAfterWarmup: true },
      optimizer: { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.05 },
    },
    300,
  ));
  const r = spawnSync(
    PYTHON,
    ['-c', 'import sys, yaml, json; d = yaml.safe_load(sys.stdin.read()); print(json.dumps({k: type(v).__name__ for s in ("MVIT", "SOLVER", "DATA", "MODEL") for k, v in ((s + "." + k, v) for k, v in d[s].items())}))'],
    { input: text, encoding: 'utf8', timeout: 30_000 },
  );
  assert.is(r.status, 0, r.stderr);
  const types = JSON.parse(r.stdout) as Record<string, string>;
  for (const [path, type] of Object.entries({
    'MVIT.MLP_RATIO': 'float', 'MVIT.DROPPATH_RATE': 'float', 'MVIT.DEPTH': 'int', 'MVIT.POOL_KVQ_KERNEL': 'list', 'MVIT.QKV_BIAS': 'bool',
    'MVIT.POOL_KV_STRIDE_ADAPTIVE': 'list', 'MVIT.MODE': 'str', 'SOLVER.BASE_LR': 'float', 'SOLVER.WARMUP_START_LR': 'float',
    'SOLVER.WARMUP_EPOCHS': 'float', 'SOLVER.MAX_EPOCH': 'int', 'SOLVER.CLIP_GRAD_L2NORM': 'NoneType', 'SOLVER.BETAS': 'list',
    'MODEL.DROPOUT_RATE': 'float', 'MODEL.NUM_CLASSES': 'int', 'DATA.TRAIN_CROP_SIZE': 'int',
  })) {
    assert.is(types[path], type, path);
  }
});

test.run();
