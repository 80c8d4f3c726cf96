/**
 * Ctrl-C as users press it: `revgrad train` as a child process gets SIGINT while a step computes. The
 * first signal stops the run between two ops (the step in flight is dropped, the last completed one is
 * saved) and the run resumes to the same bytes as an uninterrupted one; a second signal quits at once.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as E from 'fp-ts/lib/Either.js';
import { loadCheckpoint } from '../src/train/checkpoint.ts';
import { TINY_CONFIG } from './hostile/inputs.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const CLI = join(ROOT, 'src/cli/main.ts');
const DIR = mkdtempSync(join(tmpdir(), 'revgrad-signals-'));
// 40 reversible blocks of the tiny model: a step takes long enough (~1 s) to be interrupted in flight.
const cfg = join(DIR, 'deep.json');
writeFileSync(cfg, JSON.stringify({ ...TINY_CONFIG, MVIT: { ...TINY_CONFIG.MVIT, DEPTH: 40 } }));

function start(out: string, extra: string[] = [], steps = 3) {
  const args = ['--import', 'tsx', CLI, 'train', '--config', cfg, '--out', out, '--steps', String(steps), '--batch', '2', '--eval-every', '0', '--eval-clips', '2', '--drift-every', '0', '--ckpt-every', '0', '--no-report', '--seed', '4', ...extra];
  const child = spawn(process.execPath, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => (stdout += d));
  child.stderr!.on('data', (d) => (stderr += d));
  const done = new Promise<{ code: number | null; stdout: string; stderr: string }>((res) => child.on('exit', (code) => res({ code, stdout, stderr })));
  return { child, done };
}

const trainSteps = (out: string) =>
  existsSync(join(out, 'metrics.jsonl')) ? readFileSync(join(out, 'metrics.jsonl'), 'utf8').split('\n').filter((l) => l.includes('"type":"train"')).length : 0;

async function waitFor(cond: () => boolean, ms = 120_000): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('SIGINT during a step stops it between two ops, saves the step before, and --resume ends with the uninterrupted bytes', async () => {
  const full = join(DIR, 'full');
  const cut = join(DIR, 'cut');
  const a = start(full);
  const b = start(cut);
  // Step 1 is written: step 2 is computing now.
  await waitFor(() => trainSteps(cut) >= 1);
  b.child.kill('SIGINT');
  const stopped = await b.done;
  assert.is(stopped.code, 130, stopped.stderr);
  assert.is(trainSteps(cut), 1, 'the step in flight was finished instead of stopped');
  assert.match(stopped.stdout, `stopped at step 1/3; ${join(cut, 'checkpoint.safetensors')} holds the last good state (step 1). Continue with: revgrad train --out ${cut} --resume`);
  const ck = loadCheckpoint(join(cut, 'checkpoint.safetensors'));
  assert.ok(E.isRight(ck) && ck.right.meta.step === 1);
  const resumed = await start(cut, ['--resume']).done;
  assert.is(resumed.code, 0, resumed.stderr);
  const uninterrupted = await a.done;
  assert.is(uninterrupted.code, 0, uninterrupted.stderr);
  assert.ok(Buffer.compare(readFileSync(join(full, 'checkpoint.safetensors')), readFileSync(join(cut, 'checkpoint.safetensors'))) === 0, 'the resumed run ends elsewhere');
});

test('a second SIGINT quits at once, with the exit status of an interrupt and no stack trace', async () => {
  const out = join(DIR, 'twice');
  const r = start(out, [], 1000);
  await waitFor(() => trainSteps(out) >= 1);
  r.child.kill('SIGINT');
  r.child.kill('SIGINT');
  const done = await r.done;
  assert.is(done.code, 130, done.stderr);
  assert.not.match(done.stderr, /^\s+at /m);
});

test.after(() => rmSync(DIR, { recursive: true, force: true }));

test.run();
