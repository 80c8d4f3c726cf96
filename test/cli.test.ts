/** The `revgrad` command as users run it: a child process, its exit status and its messages. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { seededBytes } from '../laws/seed.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const CLI = join(ROOT, 'src/cli/main.ts');
const DIR = mkdtempSync(join(tmpdir(), 'revgrad-cli-'));

function revgrad(...args: string[]): { code: number | null; out: string; err: string } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', CLI, ...args], { cwd: ROOT, encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

const TINY = {
  DATA: { NUM_FRAMES: 2, TRAIN_CROP_SIZE: 16, TEST_CROP_SIZE: 16, INPUT_CHANNEL_NUM: [1] },
  MODEL: { NUM_CLASSES: 40, DROPOUT_RATE: 0.0 },
  MVIT: {
    PATCH_KERNEL: [1, 4, 4], PATCH_STRIDE: [1, 4, 4], PATCH_PADDING: [0, 0, 0], EMBED_DIM: 8, NUM_HEADS: 1, DEPTH: 2,
    DROPPATH_RATE: 0.0, CLS_EMBED_ON: false, DIM_MUL: [], HEAD_MUL: [], POOL_Q_STRIDE: [], POOL_KV_STRIDE: [],
    POOL_KV_STRIDE_ADAPTIVE: null, REL_POS_SPATIAL: false, REL_POS_TEMPORAL: false,
    REV: { ENABLE: true, RESPATH_FUSE: 'concat', BUFFER_LAYERS: [], PRE_Q_FUSION: 'concat' },
  },
};
const tinyPath = join(DIR, 'tiny.json');
writeFileSync(tinyPath, JSON.stringify(TINY));
const quickTrain = ['--config', tinyPath, '--steps', '3', '--batch', '2', '--eval-clips', '4', '--no-report', '--quiet'];

test('--help of revgrad and of every command exits 0 and describes the flags', () => {
  const top = revgrad('--help');
  assert.is(top.code, 0);
  for (const c of ['train', 'eval', 'memory', 'check', 'check-fixture']) assert.match(top.out, new RegExp(`\\b${c}\\b`));
  const flags: Record<string, string[]> = {
    train: ['--preset', '--config', '--steps', '--batch', '--lr', '--seed', '--mode', '--out', '--resume', '--force', '--eval-every', '--drift-every', '--ckpt-every'],
    eval: ['--checkpoint', '--clips', '--batches'],
    memory: ['--extra', '--json'],
    check: ['--preset', '--config', '--tol'],
    'check-fixture': ['FILE', '--json'],
  };
  for (const [cmd, fs] of Object.entries(flags)) {
    const r = revgrad(cmd, '--help');
    assert.is(r.code, 0, `${cmd} --help: ${r.err}`);
    assert.match(r.out, `revgrad ${cmd}`);
    for (const f of fs) assert.ok(r.out.includes(f), `${cmd} --help lacks ${f}`);
  }
});

test('unknown command and unknown flag: exit 2 with a suggestion', () => {
  const cmd = revgrad('trian');
  assert.is(cmd.code, 2);
  assert.match(cmd.err, "unknown command 'trian'");
  const r = revgrad('train', '--stepz', '3');
  assert.is(r.code, 2);
  assert.match(r.err, 'unknown flag --stepz');
  assert.match(r.err, 'did you mean --steps?');
});

test('bad numbers and choices: every problem is listed, exit 2', () => {
  const r = revgrad('train', '--steps', 'abc', '--lr', '-1', '--batch', '2.5', '--mode', 'fast', '--seed');
  assert.is(r.code, 2);
  assert.match(r.err, '5 usage errors');
  assert.match(r.err, '--steps: expected a positive integer, got "abc"');
  assert.match(r.err, '--lr: expected a number > 0, got "-1"');
  assert.match(r.err, '--batch: expected a positive integer, got "2.5"');
  assert.match(r.err, '--mode: expected one of reversible, store, got "fast"');
  assert.match(r.err, '--seed needs a value');
});

test('missing files: exit 1 naming the file', () => {
  const a = revgrad('eval', '--checkpoint', join(DIR, 'nope.safetensors'));
  assert.is(a.code, 1);
  assert.match(a.err, 'nope.safetensors: no such file');
  const b = revgrad('train', '--config', join(DIR, 'missing.json'), '--out', join(DIR, 'x'));
  assert.is(b.code, 1);
  assert.match(b.err, 'missing.json: no such file');
  const c = revgrad('check-fixture', join(DIR, 'none.safetensors'));
  assert.is(c.code, 1);
  assert.match(c.err, 'none.safetensors: no such file');
  const d = revgrad('eval');
  assert.is(d.code, 2);
  assert.match(d.err, '--checkpoint FILE is required');
});

test('corrupt checkpoint (random bytes): exit 1 with the reason, for eval and for --resume', () => {
  const bad = join(DIR, 'corrupt.safetensors');
  writeFileSync(bad, seededBytes(4096, 1));
  const r = revgrad('eval', '--checkpoint', bad);
  assert.is(r.code, 1);
  assert.match(r.err, 'corrupt.safetensors');
  assert.match(r.err, /header|truncated|JSON/);
  const runDir = join(DIR, 'corrupt-run');
  mkdirSync(runDir);
  writeFileSync(join(runDir, 'checkpoint.safetensors'), seededBytes(64, 2));
  const s = revgrad('train', '--out', runDir, '--resume');
  assert.is(s.code, 1);
  assert.match(s.err, 'checkpoint.safetensors');
  assert.match(s.err, 'not a readable safetensors');
});

test('a config with several problems: all are listed with their paths, exit 1', () => {
  const cfg = join(DIR, 'bad.json');
  writeFileSync(
    cfg,
    JSON.stringify({ MODEL: { HEAD_ACT: 'tanh' }, MVIT: { EMBED_DIM: 'wide', DEPTH: -2, PATCH_KERNEL: [3, 7] } }),
  );
  const r = revgrad('train', '--config', cfg, '--out', join(DIR, 'bad-run'));
  assert.is(r.code, 1);
  assert.match(r.err, /\d+ config problems/);
  for (const path of ['MODEL.HEAD_ACT', 'MVIT.EMBED_DIM', 'MVIT.DEPTH']) assert.ok(r.err.includes(path), `no problem reported at ${path}:\n${r.err}`);
  assert.not.ok(existsSync(join(DIR, 'bad-run')), 'nothing is created for a bad config');
  const notJson = join(DIR, 'notjson.json');
  writeFileSync(notJson, '{ "MVIT": ');
  const j = revgrad('check', '--config', notJson);
  assert.is(j.code, 1);
  assert.match(j.err, 'not valid JSON');
  const preset = revgrad('memory', '--preset', 'REV_NOPE');
  assert.is(preset.code, 1);
  assert.match(preset.err, 'unknown preset "REV_NOPE"');
  const wrongTask = revgrad('train', '--preset', 'REV_VIT_TINY', '--out', join(DIR, 'vit'));
  assert.is(wrongTask.code, 1);
  assert.match(wrongTask.err, 'MODEL.NUM_CLASSES: is 10, but the Moving-MNIST task has 40 classes');
});

test('train refuses to overwrite a run without --force; --force replaces it; eval reads it', () => {
  const out = join(DIR, 'run');
  const first = revgrad('train', ...quickTrain, '--out', out);
  assert.is(first.code, 0, first.err);
  const before = readFileSync(join(out, 'checkpoint.safetensors'));
  const again = revgrad('train', ...quickTrain, '--out', out, '--seed', '5');
  assert.is(again.code, 1);
  assert.match(again.err, 'already holds a run');
  assert.match(again.err, '--force');
  assert.ok(Buffer.compare(before, readFileSync(join(out, 'checkpoint.safetensors'))) === 0, 'the checkpoint was touched');
  const both = revgrad('train', ...quickTrain, '--out', out, '--force', '--resume');
  assert.is(both.code, 2);
  const changed = revgrad('train', '--out', out, '--resume', '--steps', '9');
  assert.is(changed.code, 1);
  assert.match(changed.err, '--steps 9 differs from the checkpoint\'s 3');
  const forced = revgrad('train', ...quickTrain, '--out', out, '--seed', '5', '--force');
  assert.is(forced.code, 0, forced.err);
  assert.ok(Buffer.compare(before, readFileSync(join(out, 'checkpoint.safetensors'))) !== 0, 'the checkpoint was not replaced');
  // eval in a fresh process, on the clips the training run evaluated at its last step (its seed, 4 clips
  // in one batch), must reproduce that evaluation from metrics.jsonl: same accuracy, same loss.
  const ev = revgrad('eval', '--checkpoint', join(out, 'checkpoint.safetensors'), '--clips', '4', '--batch', '4', '--json');
  assert.is(ev.code, 0, ev.err);
  const res = JSON.parse(ev.out) as { clips: number; accuracy: number; loss: number; step: number };
  const records = readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { type: string; step: number; testAcc: number; testLoss: number; clips: number });
  const trained = records.filter((r) => r.type === 'eval').at(-1);
  assert.ok(trained !== undefined && trained.step === 3, `no final evaluation in metrics.jsonl: ${JSON.stringify(records.map((r) => r.type))}`);
  assert.equal([res.step, res.clips], [3, trained!.clips]);
  assert.is(res.accuracy, trained!.testAcc);
  assert.ok(Math.abs(res.loss - trained!.testLoss) <= 1e-6 * Math.abs(trained!.testLoss), `eval loss ${res.loss}, training's ${trained!.testLoss}`);
});

test('check passes on a tiny config; memory --json shows reversible retaining less than store', () => {
  const c = revgrad('check', '--config', tinyPath);
  assert.is(c.code, 0, c.out + c.err);
  assert.match(c.out, 'Inverse error per reversible block');
  assert.match(c.out, 'PASS');
  // The default preset pools K, so norm_k.bias has an analytically zero gradient (round-off only).
  const d = revgrad('check');
  assert.is(d.code, 0, d.out + d.err);
  const m = revgrad('memory', '--config', tinyPath, '--extra', '0,4', '--json');
  assert.is(m.code, 0, m.err);
  const rows = (JSON.parse(m.out) as { rows: { depth: number; retained: { reversible: number; store: number } }[] }).rows;
  assert.equal(rows.map((r) => r.depth), [2, 6]);
  for (const r of rows) assert.ok(r.retained.reversible < r.retained.store, JSON.stringify(r));
  // Store mode's retained bytes grow with depth much faster than reversible mode's.
  const growth = (k: 'reversible' | 'store') => rows[1].retained[k] - rows[0].retained[k];
  assert.ok(growth('store') > 4 * Math.max(growth('reversible'), 1), JSON.stringify(rows));
});

test('check-fixture: a PySlowFast fixture passes (exit 0); random bytes are refused (exit 1)', () => {
  // The fixture is part of the repo (test/fixtures/MANIFEST.md): missing, it is an error, not a skip.
  const fixture = join(ROOT, 'test/fixtures/revvit_2d_stack_cls.safetensors');
  assert.ok(existsSync(fixture), `${fixture} is missing from the checkout`);
  const r = revgrad('check-fixture', fixture);
  assert.is(r.code, 0, r.out + r.err);
  assert.match(r.out, 'PASS');
  const bad = join(DIR, 'fixture-corrupt.safetensors');
  writeFileSync(bad, seededBytes(256, 3));
  const b = revgrad('check-fixture', bad);
  assert.is(b.code, 1);
  assert.match(b.err, 'fixture-corrupt.safetensors');
});

test('--version prints the package version', () => {
  const r = revgrad('--version');
  assert.is(r.code, 0, r.err);
  assert.is(r.out.trim(), `revgrad ${(JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version}`);
});

// The installed bin (dist/cli/main.js under plain node, from the packed tarball) is in test/consumer.test.ts.

test.after(() => rmSync(DIR, { recursive: true, force: true }));

test.run();
