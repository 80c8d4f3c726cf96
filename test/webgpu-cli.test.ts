/**
 * The `revgrad` command on the asynchronous webgpu backend (Dawn over EGL; in CI Mesa's llvmpipe):
 * train with checkpoints, SIGKILL + --resume to the same bytes as an uninterrupted run, eval, check,
 * check-fixture on a shared PySlowFast fixture, and memory. Every read of tensor data in these commands
 * goes through `await t.data()`; a synchronous read would throw "still pending on the asynchronous
 * 'webgpu' backend" and fail the command.
 *
 * Each run must report that it really ran on webgpu (REVGRAD_VERBOSE=1 prints the selection), so a silent
 * fallback to webasm cannot pass. Skips, with the reason printed, where WebGPU is not available in Node.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as E from 'fp-ts/lib/Either.js';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { describeAdapter, initWebGPU } from '../src/backend/webgpu-node.ts';
import { readSafetensorsFile } from '../src/io/safetensors-file.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const CLI = join(ROOT, 'src/cli/main.ts');
const FIXTURE = join(ROOT, 'test/fixtures/revvit_2d_full.safetensors');

/** Two frames of 16x16, width 8, two reversible blocks: a step takes ~0.2 s on llvmpipe. */
const TINY = {
  DATA: { NUM_FRAMES: 2, TRAIN_CROP_SIZE: 16, TEST_CROP_SIZE: 16, INPUT_CHANNEL_NUM: [1] },
  MODEL: { NUM_CLASSES: 40, DROPOUT_RATE: 0.0 },
  MVIT: {
    PATCH_KERNEL: [1, 4, 4], PATCH_STRIDE: [1, 4, 4], PATCH_PADDING: [0, 0, 0], EMBED_DIM: 8, NUM_HEADS: 1, DEPTH: 2,
    DROPPATH_RATE: 0.1, CLS_EMBED_ON: false, DIM_MUL: [], HEAD_MUL: [], POOL_Q_STRIDE: [], POOL_KV_STRIDE: [],
    POOL_KV_STRIDE_ADAPTIVE: null, REL_POS_SPATIAL: false, REL_POS_TEMPORAL: false,
    REV: { ENABLE: true, RESPATH_FUSE: 'concat', BUFFER_LAYERS: [], PRE_Q_FUSION: 'concat' },
  },
};
const STEPS = 6;

interface Done {
  readonly code: number | null;
  readonly signal: string | null;
  readonly stdout: string;
  readonly stderr: string;
}

function revgrad(args: readonly string[]): { child: ChildProcess; done: Promise<Done> } {
  const env = { ...process.env, REVGRAD_BACKEND: 'webgpu', REVGRAD_VERBOSE: '1', NO_COLOR: '1' };
  const child = spawn(process.execPath, ['--import', 'tsx', CLI, ...args], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => (stdout += d));
  child.stderr!.on('data', (d) => (stderr += d));
  const done = new Promise<Done>((res) => child.on('exit', (code, signal) => res({ code, signal, stdout, stderr })));
  return { child, done };
}

const ran = async (args: readonly string[]): Promise<Done> => {
  const r = await revgrad(args).done;
  assert.match(r.stderr, /revgrad: backend webgpu \(/, `did not run on webgpu:\n${r.stderr}`);
  return r;
};

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const status = await initWebGPU();
if (!status.ok) {
  console.log(`webgpu-cli.test.ts: SKIPPED, no WebGPU in Node: ${status.reason}`);
  test.skip('revgrad on webgpu (no adapter)', () => {});
} else {
  console.log(`webgpu-cli.test.ts: adapter ${describeAdapter(status.adapter)}`);
  const dir = mkdtempSync(join(tmpdir(), 'revgrad-webgpu-cli-'));
  const cfg = join(dir, 'tiny.json');
  writeFileSync(cfg, JSON.stringify(TINY));
  const trainArgs = (out: string, extra: string[] = []) =>
    ['train', '--config', cfg, '--out', out, '--steps', String(STEPS), '--batch', '2', '--ckpt-every', '1', '--eval-every', '3', '--eval-clips', '4', '--drift-every', '3', '--no-report', '--quiet', '--seed', '5', ...extra];
  const full = join(dir, 'full');

  test('train on webgpu: checkpoints every step; SIGKILL, --resume, and the final checkpoint equals the uninterrupted run', async () => {
    const killed = join(dir, 'killed');
    const a = revgrad(trainArgs(full));
    const b = revgrad(trainArgs(killed));
    const metrics = join(killed, 'metrics.jsonl');
    const t0 = Date.now();
    while (Date.now() - t0 < 120_000) {
      if (existsSync(metrics) && readFileSync(metrics, 'utf8').includes('"type":"checkpoint"')) {
        b.child.kill('SIGKILL');
        break;
      }
      await sleep(10);
    }
    const killedResult = await b.done;
    assert.is(killedResult.signal, 'SIGKILL', `the run was not killed (exit ${killedResult.code}): ${killedResult.stderr}`);
    const partial = readSafetensorsFile(join(killed, 'checkpoint.safetensors'));
    if (E.isLeft(partial)) return assert.unreachable(partial.left.message);
    const partialStep = Number(partial.right.metadata.step);
    assert.ok(partialStep >= 1 && partialStep < STEPS, `the killed run's checkpoint is at step ${partialStep}`);

    const resumed = await ran(trainArgs(killed, ['--resume']));
    assert.is(resumed.code, 0, resumed.stderr);
    const fullResult = await a.done;
    assert.is(fullResult.code, 0, fullResult.stderr);
    assert.match(fullResult.stderr, /revgrad: backend webgpu \(/);
    const bytesFull = readFileSync(join(full, 'checkpoint.safetensors'));
    const bytesResumed = readFileSync(join(killed, 'checkpoint.safetensors'));
    const fa = readSafetensorsFile(join(full, 'checkpoint.safetensors'));
    if (E.isLeft(fa)) return assert.unreachable(fa.left.message);
    assert.is(fa.right.metadata.step, String(STEPS));
    assert.ok([...fa.right.tensors.keys()].some((n) => n.startsWith('optim.v.')), 'the checkpoint holds the optimizer state');
    // Training moved the weights since the partial checkpoint (the comparison below is not vacuous).
    assert.not.equal(Array.from(fa.right.tensors.get('head.projection.weight')!.data), Array.from(partial.right.tensors.get('head.projection.weight')!.data));
    assert.ok(Buffer.compare(bytesFull, bytesResumed) === 0, 'the resumed run ends with other bytes than the uninterrupted one');
    const records = readFileSync(join(full, 'metrics.jsonl'), 'utf8').split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as { type: string; step: number; loss?: number });
    const train = records.filter((r) => r.type === 'train');
    assert.equal(train.map((r) => r.step), [1, 2, 3, 4, 5, 6]);
    assert.ok(train.every((r) => Number.isFinite(r.loss)), 'finite losses');
    assert.equal(records.filter((r) => r.type === 'eval').map((r) => r.step), [3, 6]);
  });

  test('eval of the webgpu checkpoint on webgpu', async () => {
    const r = await ran(['eval', '--checkpoint', join(full, 'checkpoint.safetensors'), '--clips', '4', '--batch', '2', '--json']);
    assert.is(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { step: number; clips: number; accuracy: number; loss: number };
    assert.is(out.step, STEPS);
    assert.is(out.clips, 4);
    assert.ok(out.accuracy >= 0 && out.accuracy <= 1 && Number.isFinite(out.loss), r.stdout);
  });

  test('check on webgpu: inverse error and reversible vs store gradients', async () => {
    const r = await ran(['check', '--config', cfg, '--batch', '1', '--json']);
    assert.is(r.code, 0, `${r.stderr}\n${r.stdout}`);
    const out = JSON.parse(r.stdout) as { ok: boolean; inverseError: { blocks: unknown[] }; gradients: { params: number }; loss: { reversible: number; store: number } };
    assert.ok(out.ok);
    assert.is(out.inverseError.blocks.length, 2);
    assert.ok(out.gradients.params > 20);
    assert.ok(Number.isFinite(out.loss.reversible) && Math.abs(out.loss.reversible - out.loss.store) < 1e-5, JSON.stringify(out.loss));
  });

  test('check-fixture on webgpu: a shared PySlowFast fixture passes', async () => {
    const r = await ran(['check-fixture', FIXTURE, '--json']);
    assert.is(r.code, 0, `${r.stderr}\n${r.stdout.slice(0, 2000)}`);
    const out = JSON.parse(r.stdout) as { ok: boolean; backend: string; comparisons: unknown[] };
    assert.is(out.backend, 'webgpu');
    assert.ok(out.ok && out.comparisons.length > 100, `${out.comparisons.length} comparisons`);
  });

  test('memory on webgpu: reversible retains less than store', async () => {
    const r = await ran(['memory', '--config', cfg, '--extra', '0,1', '--batch', '1', '--json']);
    assert.is(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { rows: { retained: { reversible: number; store: number } }[] };
    assert.is(out.rows.length, 2);
    for (const row of out.rows) assert.ok(row.retained.reversible > 0 && row.retained.reversible < row.retained.store, JSON.stringify(row));
  });

  test.after(() => rmSync(dir, { recursive: true, force: true }));
}

test.run();
