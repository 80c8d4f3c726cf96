/**
 * One async contract: outside the tensor layer, src reads tensor data only through `await t.data()` /
 * `await t.item()`, so every command and helper also runs on the asynchronous webgpu backend (where
 * `dataSync()` throws while a result is still on the GPU). test/webgpu-cli.test.ts runs the commands
 * there; this test keeps new synchronous reads from creeping into paths it does not reach.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';

const SRC = resolve(dirname(fileURLToPath(import.meta.url)), '..', 'src');
const files = (dir: string): string[] =>
  readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? files(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : []));

/** The public synchronous reads (they throw on webgpu while a result is on the GPU). */
const SYNC_READ = /\.(dataSync|itemSync)\s*\(/;
/** The storage's host buffer: only the executors (the tensor layer and the jit's lowerings) touch it. */
const HOST_BUFFER = /\.storage\.host\b/;
const EXECUTORS = ['tensor/', 'jit/'];

test('no synchronous tensor reads in src outside src/tensor/', () => {
  const offenders: string[] = [];
  for (const f of files(SRC)) {
    const rel = relative(SRC, f);
    if (rel === 'tensor/tensor.ts') continue;
    const executor = EXECUTORS.some((d) => rel.startsWith(d));
    readFileSync(f, 'utf8').split('\n').forEach((line, i) => {
      const code = line.replace(/\/\/.*$/, '');
      if (/^\s*\*/.test(code)) return;
      if (SYNC_READ.test(code) || (!executor && HOST_BUFFER.test(code))) offenders.push(`src/${rel}:${i + 1}: ${line.trim()}`);
    });
  }
  assert.equal(offenders, [], `read with 'await t.data()' instead:\n${offenders.join('\n')}`);
});

test.run();
