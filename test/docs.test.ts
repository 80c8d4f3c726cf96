/** Every `ts runnable` example in README.md and docs/*.md runs and exits 0 (docs/reversible.md has its own test). */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { repo, runBlock, runnableBlocks } from './doc-blocks.ts';

const docs = [join(repo, 'README.md'), ...readdirSync(join(repo, 'docs')).filter((f) => f.endsWith('.md') && f !== 'reversible.md').map((f) => join(repo, 'docs', f))];

test('the README has a runnable quickstart', () => {
  assert.ok(runnableBlocks(readFileSync(join(repo, 'README.md'), 'utf8')).length >= 1);
});

for (const file of docs) {
  runnableBlocks(readFileSync(file, 'utf8')).forEach((block, i) => {
    test(`${file.slice(repo.length + 1)} example ${i + 1} runs`, () => {
      const r = runBlock(block, join(file, '..'));
      assert.is(r.status, 0, `exit ${r.status}\n${r.stderr}\n${r.stdout}`);
    });
  });
}

test.run();
