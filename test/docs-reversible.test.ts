/**
 * docs/reversible.md cannot rot: every ```ts runnable block in it is written to a temporary file
 * (relative imports rewritten to absolute paths from docs/) and run in a fresh `node --import tsx`
 * process, which must exit 0 and print what the docs say it prints; and the memory table between the
 * memory-table markers must equal what bench/reversible-memory.ts measures now.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { DEPTHS, measure, table, TABLE_MARKERS } from '../bench/reversible-memory.ts';
import { withBackend } from '../src/index.ts';
import { absolutizeImports, repo, runBlock, runnableBlocks } from './doc-blocks.ts';

const docsDir = join(repo, 'docs');
const doc = readFileSync(join(docsDir, 'reversible.md'), 'utf8');

/** The plain ``` block right after "It prints": the documented output of the runnable example. */
function documentedOutput(markdown: string): string[] {
  const m = /It prints[^\n]*\n+```\n([\s\S]*?)^```/m.exec(markdown);
  assert.ok(m !== null, 'docs/reversible.md: no "It prints" output block');
  return m![1].trimEnd().split('\n');
}

const masked = (line: string) => line.replace(/-?\d+(\.\d+)?(e[+-]?\d+)?/g, '#');

test('helpers: runnable blocks are found and relative imports rewritten', () => {
  const md = 'a\n```ts\nnot me\n```\n```ts runnable\nimport { x } from "../src/a.ts";\nconst y = 1;\n```\n';
  assert.equal(runnableBlocks(md), ['import { x } from "../src/a.ts";\nconst y = 1;\n']);
  assert.is(absolutizeImports("import a from './b.ts'; import 'node:fs'", '/r/docs'), "import a from '/r/docs/b.ts'; import 'node:fs'");
});

test('docs/reversible.md: the runnable example runs and prints what the docs show', () => {
  const blocks = runnableBlocks(doc);
  assert.is(blocks.length, 1, 'expected one ```ts runnable block');
  const { status, stdout, stderr } = runBlock(blocks[0], docsDir);
  assert.is(status, 0, `example failed (exit ${status}):\n${stderr}`);
  const printed = stdout.trimEnd().split('\n');
  const documented = documentedOutput(doc);
  // The same lines. Numbers may move with kernel and VJP-rule changes; the example asserts its own claims.
  assert.equal(printed.map(masked), documented.map(masked));
});

test('docs/reversible.md: the memory table is what bench/reversible-memory.ts measures', () => {
  const m = TABLE_MARKERS.exec(doc);
  assert.ok(m !== null, 'memory table markers not found');
  const rows = withBackend('webasm', () => DEPTHS.map(measure));
  // On a mismatch (e.g. after a VJP rule keeps fewer residuals): node --import tsx bench/reversible-memory.ts --update-docs
  assert.fixture(m![2], table(rows), 'docs table is stale: run node --import tsx bench/reversible-memory.ts --update-docs');
  // What the docs claim about the table: reversible columns constant in depth, store residuals exactly linear in it.
  const perBlock = rows[1].store.residualBytes - rows[0].store.residualBytes;
  assert.ok(perBlock > 0);
  for (const r of rows) {
    assert.is(r.reversible.residualBytes, rows[0].reversible.residualBytes);
    assert.is(r.reversible.peakBytes, rows[0].reversible.peakBytes);
    assert.is(r.store.residualBytes, rows[0].store.residualBytes + (r.depth - 1) * perBlock);
  }
  assert.equal(DEPTHS, [1, 2, 4, 8, 16, 32]);
  assert.match(doc, 'node --import tsx bench/reversible-memory.ts');
});

test.run();
