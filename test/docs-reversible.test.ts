/**
 * docs/reversible.md cannot rot: every ```ts runnable block in it is written to a temporary file
 * (relative imports rewritten to absolute paths from docs/) and run in a fresh `node --import tsx`
 * process, which must exit 0 and print what the docs say it prints; and the memory table between the
 * memory-table markers must equal what bench/reversible-memory.ts measures now.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DEPTHS, measure, table, TABLE_MARKERS } from '../bench/reversible-memory.ts';
import { withBackend } from '../src/index.ts';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const docsDir = join(repo, 'docs');
const doc = readFileSync(join(docsDir, 'reversible.md'), 'utf8');

/** Fenced blocks whose info string is exactly `ts runnable`. */
export function runnableBlocks(markdown: string): string[] {
  const blocks: string[] = [];
  const fence = /^```ts runnable[ \t]*\n([\s\S]*?)^```[ \t]*$/gm;
  for (let m = fence.exec(markdown); m !== null; m = fence.exec(markdown)) blocks.push(m[1]);
  return blocks;
}

/** Relative module specifiers (`from '../src/x.ts'`, `import '../x.ts'`) made absolute, resolved from `base`. */
export function absolutizeImports(source: string, base: string): string {
  return source.replace(/(\bfrom\s+|\bimport\s+|\bimport\(\s*)(['"])(\.\.?\/[^'"]+)\2/g, (_all, lead: string, q: string, spec: string) => `${lead}${q}${resolve(base, spec)}${q}`);
}

function runBlock(source: string): { status: number | null; stdout: string; stderr: string } {
  const dir = mkdtempSync(join(tmpdir(), 'revgrad-docs-'));
  try {
    const file = join(dir, 'example.ts');
    writeFileSync(file, absolutizeImports(source, docsDir));
    const env: NodeJS.ProcessEnv = { ...process.env, NO_COLOR: '1' };
    delete env.FORCE_COLOR; // console.log would colour numbers
    const r = spawnSync(process.execPath, ['--import', 'tsx', file], { cwd: repo, env, encoding: 'utf8', timeout: 120_000 });
    return { status: r.status, stdout: r.stdout, stderr: r.stderr };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

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
  const { status, stdout, stderr } = runBlock(blocks[0]);
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
