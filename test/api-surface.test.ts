/**
 * docs/api.md covers the whole public surface: every name exported by the package's entries ('revgrad':
 * src/index.ts, 'revgrad/node': src/node.ts), values and types, and the members of the `random` and `nn`
 * namespaces, appears in it in backticks. A new export without documentation fails here.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import ts from 'typescript';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { repo } from './doc-blocks.ts';

const ENTRIES = { revgrad: 'src/index.ts', 'revgrad/node': 'src/node.ts' };

/** Exported names of each entry (and of its namespace exports, as `ns.name`). */
function publicNames(): Map<string, string[]> {
  const base = ts.getParsedCommandLineOfConfigFile(join(repo, 'tsconfig.json'), {}, { ...ts.sys, onUnRecoverableConfigFileDiagnostic: () => {} })!;
  const files = Object.values(ENTRIES).map((f) => join(repo, f));
  const program = ts.createProgram({ rootNames: files, options: { ...base.options, noEmit: true } });
  const checker = program.getTypeChecker();
  const out = new Map<string, string[]>();
  for (const [entry, file] of Object.entries(ENTRIES)) {
    const symbol = checker.getSymbolAtLocation(program.getSourceFile(join(repo, file))!)!;
    const names: string[] = [];
    for (const s of checker.getExportsOfModule(symbol)) {
      names.push(s.name);
      const target = s.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(s) : s;
      if (target.flags & ts.SymbolFlags.ValueModule) for (const m of checker.getExportsOfModule(target)) names.push(`${s.name}.${m.name}`);
    }
    out.set(entry, names);
  }
  return out;
}

test('docs/api.md names every export of revgrad and revgrad/node', () => {
  const doc = readFileSync(join(repo, 'docs', 'api.md'), 'utf8');
  // Every identifier that appears inside a backtick span.
  const spans = [...doc.matchAll(/`([^`\n]+)`/g)].map((m) => m[1]!);
  const mentioned = new Set(spans.flatMap((s) => (s.match(/[A-Za-z_$][\w$]*(?:\.[A-Za-z_$][\w$]*)?/g) ?? []).flatMap((id) => [id, ...id.split('.')])));
  const missing: string[] = [];
  for (const [entry, names] of publicNames()) {
    for (const n of names) {
      const short = n.includes('.') ? n.split('.')[1]! : n;
      if (!mentioned.has(n) && !mentioned.has(short)) missing.push(`${entry}: ${n}`);
    }
  }
  assert.equal(missing, [], `not in docs/api.md:\n${missing.join('\n')}`);
});

test('internals stay out of the public surface', () => {
  const names = new Set(publicNames().get('revgrad'));
  // The op tables, expression helpers and coercions of src/tensor/ops.ts; the optimizers' fused passes.
  for (const internal of ['UNARY', 'BINARY', 'erfExpr', 'unary', 'binary', 'toTensor', 'elementwiseImpl', 'elementwise', 'adamwUpdate', 'fromBuffer', 'Storage']) {
    assert.not.ok(names.has(internal), `'${internal}' is exported by revgrad`);
  }
});

test.run();
