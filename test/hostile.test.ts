/**
 * Every `revgrad` subcommand on the hostile-input corpus (test/hostile/corpus, written by
 * test/hostile/generate.ts): each case must end with its documented exit status (1 runtime, 2 usage)
 * and a clean message: the `revgrad <command>:` line, no stack trace, no "internal error", bounded length.
 * The cases run in-process through `main` (fast); a few also as child processes, the way users run it.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { main } from '../src/cli/main.ts';
import type { CorpusCase } from './hostile/generate.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const CORPUS = join(ROOT, 'test/hostile/corpus');
const CASES = JSON.parse(readFileSync(join(CORPUS, 'manifest.json'), 'utf8')) as CorpusCase[];
const TMP = mkdtempSync(join(tmpdir(), 'revgrad-hostile-'));

/** A stack frame as V8 prints it ("    at fn (file:line:col)"). */
const STACK_FRAME = /^\s+at .*(:\d+:\d+\)?|\(native\))$/m;

function prepare(c: CorpusCase, i: number): string[] {
  const tmp = join(TMP, String(i));
  mkdirSync(tmp, { recursive: true });
  if (c.checkpoint !== undefined) {
    mkdirSync(join(tmp, 'run'), { recursive: true });
    copyFileSync(join(CORPUS, c.checkpoint), join(tmp, 'run', 'checkpoint.safetensors'));
  }
  return c.argv.map((a) => a.replaceAll('{corpus}', CORPUS).replaceAll('{tmp}', tmp));
}

async function runInProcess(argv: string[]): Promise<{ code: number; err: string }> {
  let err = '';
  const write = process.stdout.write;
  process.stdout.write = (() => true) as typeof process.stdout.write;
  try {
    const code = await main(argv, (s) => (err += s));
    return { code, err };
  } finally {
    process.stdout.write = write;
  }
}

function checkClean(c: CorpusCase, code: number | null, err: string): void {
  const what = `${c.name}: exit ${code}\n${err.slice(0, 2000)}`;
  assert.is(code, c.expect, what);
  assert.not.match(err, STACK_FRAME, `stack trace in ${what}`);
  assert.not.match(err, /internal error|RangeError|TypeError|SyntaxError|ReferenceError/, what);
  const lines = err.trimEnd().split('\n');
  assert.ok(lines.length <= 60, `${lines.length} lines: ${what}`);
  assert.match(lines[0]!, c.expect === 2 ? /^revgrad [\w-]+: (\d+ )?usage error|^revgrad: unknown command/ : /^revgrad [\w-]+: error/, what);
  assert.ok(err.endsWith('\n'), what);
}

test(`the corpus holds cases for every subcommand (${CASES.length} cases)`, () => {
  const commands = new Set(CASES.map((c) => c.argv[0]));
  for (const c of ['train', 'eval', 'check', 'memory', 'check-fixture']) assert.ok(commands.has(c), `no case for ${c}`);
  assert.ok(CASES.some((c) => c.checkpoint !== undefined), 'no --resume case');
  assert.ok(CASES.some((c) => c.expect === 2) && CASES.some((c) => c.expect === 1));
});

test('every hostile input ends in a clean error and the documented exit status (in-process)', async () => {
  for (const [i, c] of CASES.entries()) {
    const { code, err } = await runInProcess(prepare(c, i));
    checkClean(c, code, err);
  }
});

test('the same, as child processes, for a sample of the corpus', () => {
  // Arguments with NUL bytes cannot be passed to a process.
  const sample = CASES.filter((c, i) => i % 25 === 0 && !c.argv.some((a) => a.includes('\u0000')));
  for (const c of sample) {
    const argv = prepare(c, CASES.indexOf(c));
    const r = spawnSync(process.execPath, ['--import', 'tsx', join(ROOT, 'src/cli/main.ts'), ...argv], { cwd: ROOT, encoding: 'utf8', timeout: 120_000 });
    checkClean(c, r.status, r.stderr);
  }
});

test.after(() => rmSync(TMP, { recursive: true, force: true }));

test.run();
