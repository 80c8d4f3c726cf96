/**
 * Every ```ts block in README.md and docs/ typechecks (strict, against the sources, with 'revgrad' and
 * 'revgrad/node' meaning the package's entries), so the documented API cannot drift from the real one.
 * The `ts runnable` blocks also run: test/docs.test.ts and test/docs-reversible.test.ts.
 */
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import ts from 'typescript';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { absolutizeImports, repo, tsBlocks } from './doc-blocks.ts';

const files = [join(repo, 'README.md'), ...readdirSync(join(repo, 'docs')).filter((f) => f.endsWith('.md')).map((f) => join(repo, 'docs', f))];

test('every ts block of README.md and docs/ typechecks', () => {
  const dir = join(repo, '.docs-run-typecheck');
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir);
  try {
    const where = new Map<string, string>();
    for (const file of files) {
      tsBlocks(readFileSync(file, 'utf8')).forEach((b, i) => {
        const name = `${file.slice(repo.length + 1).replace(/[/.]/g, '_')}_${i + 1}.ts`;
        where.set(join(dir, name), `${file.slice(repo.length + 1)}:${b.line}`);
        // `export {}` makes every block a module (its own scope; top-level await allowed).
        writeFileSync(join(dir, name), `${absolutizeImports(b.code, join(file, '..'))}\nexport {};\n`);
      });
    }
    assert.ok(where.size >= 10, `found only ${where.size} ts blocks`);
    const base = ts.getParsedCommandLineOfConfigFile(join(repo, 'tsconfig.json'), {}, { ...ts.sys, onUnRecoverableConfigFileDiagnostic: () => {} })!;
    // Examples may leave a value unused; everything else is the project's strict settings.
    const program = ts.createProgram({ rootNames: [...where.keys()], options: { ...base.options, noUnusedLocals: false, noEmit: true } });
    const problems = ts.getPreEmitDiagnostics(program).map((d) => {
      const file = d.file?.fileName ?? '';
      const line = d.file !== undefined && d.start !== undefined ? d.file.getLineAndCharacterOfPosition(d.start).line : -1;
      const at = where.get(file);
      const origin = at === undefined ? file : `${at.split(':')[0]}:${Number(at.split(':')[1]) + line + 1}`;
      return `${origin}: ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`;
    });
    console.log(`  ${where.size} blocks typechecked`);
    assert.equal(problems, [], problems.join('\n'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
