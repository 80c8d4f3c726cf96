/**
 * Every `ts runnable` example in README.md and docs/*.md runs, exits 0 and prints what the docs say it
 * prints (the block after "It prints", compared by test/doc-blocks.ts matchOutput: numbers to the digits
 * written, `#` for numbers that change from run to run). docs/reversible.md has its own test.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { matchOutput, repo, runBlock, runnableBlocks, runnableBlocksWithOutput } from './doc-blocks.ts';

const docs = [join(repo, 'README.md'), ...readdirSync(join(repo, 'docs')).filter((f) => f.endsWith('.md') && f !== 'reversible.md').map((f) => join(repo, 'docs', f))];

test('the README has a runnable quickstart', () => {
  assert.ok(runnableBlocks(readFileSync(join(repo, 'README.md'), 'utf8')).length >= 1);
});

test('matchOutput: numbers to the digits written, # and ... as wildcards, and it fails on a changed word or number', () => {
  assert.is(matchOutput(['loss 0.8990000486 at step 3'], ['loss 0.899 at step 3']), null);
  assert.is(matchOutput(['err 2.14e-6, seed 12345'], ['err 2.1e-6, seed #']), null);
  assert.is(matchOutput(['a', 'b', 'c', 'Total: 2'], ['...', 'Total: 2']), null);
  assert.is(matchOutput(['x2[0, 1]: got 0.5 (shrunk 3 times)'], ['x#[#, #]: got ... (shrunk # times)']), null);
  assert.ok(matchOutput(['loss 0.9 at step 3'], ['loss 0.899 at step 3']) !== null, 'a number off by more than its last digit');
  assert.ok(matchOutput(['loss 0.899 at step 4'], ['loss 0.899 at step 3']) !== null, 'an integer');
  assert.ok(matchOutput(['lost 0.899'], ['loss 0.899']) !== null, 'a word');
  assert.ok(matchOutput(['a', 'extra'], ['a']) !== null, 'an extra line');
});

for (const file of docs) {
  runnableBlocksWithOutput(readFileSync(file, 'utf8')).forEach((block, i) => {
    test(`${file.slice(repo.length + 1)} example ${i + 1} runs and prints what the docs show`, () => {
      const r = runBlock(block.source, join(file, '..'));
      assert.is(r.status, 0, `exit ${r.status}\n${r.stderr}\n${r.stdout}`);
      const printed = r.stdout.replace(/\n$/, '').split('\n').filter((l, k, all) => !(l === '' && k === all.length - 1));
      if (block.output === null) {
        assert.is(r.stdout.trim(), '', `the example prints output the docs do not show (add an "It prints" block after it):\n${r.stdout}`);
        return;
      }
      const problem = matchOutput(r.stdout.trim() === '' ? [] : printed, block.output);
      assert.ok(problem === null, problem ?? '');
    });
  });
}

test.run();
