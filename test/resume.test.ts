/**
 * Kill -9 mid-training, resume, and get the same weights bit for bit as an uninterrupted run: the CLI
 * is spawned as a child process on a tiny Rev-MViT config.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as E from 'fp-ts/lib/Either.js';
import { readSafetensorsFile } from '../src/io/safetensors-file.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const CLI = join(ROOT, 'src/cli/main.ts');

/** A Rev-MViT small enough to train a step in a few ms: 2 frames of 16x16, width 8, two reversible blocks. */
export const TINY_CONFIG = {
  DATA: { NUM_FRAMES: 2, TRAIN_CROP_SIZE: 16, TEST_CROP_SIZE: 16, INPUT_CHANNEL_NUM: [1] },
  MODEL: { NUM_CLASSES: 40, DROPOUT_RATE: 0.0 },
  MVIT: {
    PATCH_KERNEL: [1, 4, 4],
    PATCH_STRIDE: [1, 4, 4],
    PATCH_PADDING: [0, 0, 0],
    EMBED_DIM: 8,
    NUM_HEADS: 1,
    DEPTH: 2,
    DROPPATH_RATE: 0.1,
    CLS_EMBED_ON: false,
    DIM_MUL: [],
    HEAD_MUL: [],
    POOL_Q_STRIDE: [],
    POOL_KV_STRIDE: [],
    POOL_KV_STRIDE_ADAPTIVE: null,
    REL_POS_SPATIAL: false,
    REL_POS_TEMPORAL: false,
    REV: { ENABLE: true, RESPATH_FUSE: 'concat', BUFFER_LAYERS: [], PRE_Q_FUSION: 'concat' },
  },
};

const STEPS = 40;

function trainArgs(cfg: string, out: string, extra: string[] = []): string[] {
  return ['--import', 'tsx', CLI, 'train', '--config', cfg, '--out', out, '--steps', String(STEPS), '--batch', '4', '--ckpt-every', '5',
    '--eval-every', '20', '--eval-clips', '8', '--drift-every', '10', '--no-report', '--quiet', '--seed', '7', ...extra];
}

function run(args: string[]): { child: ChildProcess; done: Promise<{ code: number | null; signal: string | null; stderr: string }> } {
  const child = spawn(process.execPath, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  child.stdout!.resume();
  const done = new Promise<{ code: number | null; signal: string | null; stderr: string }>((res) =>
    child.on('exit', (code, signal) => res({ code, signal, stderr })),
  );
  return { child, done };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('SIGKILL after a checkpoint, --resume, and the final checkpoint equals the uninterrupted run byte for byte', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'revgrad-resume-'));
  try {
    const cfg = join(dir, 'tiny.json');
    writeFileSync(cfg, JSON.stringify(TINY_CONFIG));
    const full = join(dir, 'full');
    const killed = join(dir, 'killed');
    // The uninterrupted run goes alongside the one that will be killed.
    const a = run(trainArgs(cfg, full));
    const b = run(trainArgs(cfg, killed));
    const metrics = join(killed, 'metrics.jsonl');
    const t0 = Date.now();
    let killedAt = -1;
    while (Date.now() - t0 < 60_000) {
      if (existsSync(metrics)) {
        const ck = readFileSync(metrics, 'utf8').split('\n').filter((l) => l.includes('"type":"checkpoint"'));
        if (ck.length > 0) {
          b.child.kill('SIGKILL');
          killedAt = (JSON.parse(ck[ck.length - 1]) as { step: number }).step;
          break;
        }
      }
      await sleep(20);
    }
    const killedResult = await b.done;
    assert.is(killedResult.signal, 'SIGKILL', `the run was not killed (exit ${killedResult.code}): ${killedResult.stderr}`);
    assert.ok(killedAt >= 5 && killedAt < STEPS, `killed after the checkpoint of step ${killedAt}`);
    const partial = readSafetensorsFile(join(killed, 'checkpoint.safetensors'));
    assert.ok(E.isRight(partial));
    const partialStep = E.isRight(partial) ? Number(partial.right.metadata.step) : -1;
    assert.ok(partialStep >= 5 && partialStep < STEPS, `the killed run's checkpoint is at step ${partialStep}`);

    // Without --resume or --force, the directory is not touched.
    const refused = await run(trainArgs(cfg, killed)).done;
    assert.is(refused.code, 1);
    assert.match(refused.stderr, /already holds a run/);

    const resumed = await run(trainArgs(cfg, killed, ['--resume'])).done;
    assert.is(resumed.code, 0, resumed.stderr);
    const fullResult = await a.done;
    assert.is(fullResult.code, 0, fullResult.stderr);

    const bytesFull = readFileSync(join(full, 'checkpoint.safetensors'));
    const bytesResumed = readFileSync(join(killed, 'checkpoint.safetensors'));
    const fa = readSafetensorsFile(join(full, 'checkpoint.safetensors'));
    const fb = readSafetensorsFile(join(killed, 'checkpoint.safetensors'));
    assert.ok(E.isRight(fa) && E.isRight(fb));
    if (E.isRight(fa) && E.isRight(fb)) {
      assert.is(fa.right.metadata.step, String(STEPS));
      // Params and optimizer state, tensor by tensor, bit for bit.
      const names = [...fa.right.tensors.keys()];
      assert.equal([...fb.right.tensors.keys()], names);
      assert.ok(names.some((n) => n.startsWith('optim.m.')) && names.some((n) => n === 'head.projection.weight'));
      for (const n of names) {
        const x = new Uint8Array(fa.right.tensors.get(n)!.data.buffer);
        const y = new Uint8Array(fb.right.tensors.get(n)!.data.buffer);
        assert.ok(Buffer.compare(x, y) === 0, `tensor ${n} differs`);
      }
      // The parameters did change during training (the comparison is not vacuous).
      assert.not.equal(
        Array.from(fa.right.tensors.get('head.projection.weight')!.data),
        Array.from(E.isRight(partial) ? partial.right.tensors.get('head.projection.weight')!.data : []),
      );
    }
    // And the whole files (metadata included) are identical.
    assert.ok(Buffer.compare(bytesFull, bytesResumed) === 0, 'checkpoint files differ');
    // The resumed run's metrics hold each step once.
    const steps = readFileSync(join(killed, 'metrics.jsonl'), 'utf8')
      .split('\n')
      .filter((l) => l.includes('"type":"train"'))
      .map((l) => (JSON.parse(l) as { step: number }).step);
    assert.equal(steps, Array.from({ length: STEPS }, (_, i) => i + 1));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
