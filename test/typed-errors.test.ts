/**
 * Everything src/ throws is a RevgradError (src/tensor/errors.ts): no plain `new Error(...)` (or TypeError,
 * RangeError, ...) and no error class outside the family, so callers can catch revgrad's errors by type and
 * every message names its op, field or file.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { repo } from './doc-blocks.ts';

const files = (dir: string): string[] =>
  readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? files(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : []));

/** Offending lines of `source`: built-in error constructors, and error classes extending a built-in error. */
function untypedErrors(source: string): string[] {
  return source
    .split('\n')
    .filter((line) => /\bnew (Error|TypeError|RangeError|SyntaxError|ReferenceError|EvalError|URIError)\(/.test(line) || /\bextends (Error|TypeError|RangeError)\b/.test(line))
    .filter((line) => !/^\s*(\/\/|\*)/.test(line));
}

test('the scan finds a plain Error and an error class outside the family (checks the check)', () => {
  assert.equal(untypedErrors("if (x) throw new Error('boom');\nclass MyError extends Error {}\n// new Error( in a comment\nthrow new ShapeError('op', 'm');").length, 2);
});

test('src/ raises only RevgradErrors', () => {
  const src = join(repo, 'src');
  const offences = files(src).flatMap((f) => {
    const lines = untypedErrors(readFileSync(f, 'utf8'));
    // errors.ts defines the root of the family on Error itself.
    return lines.filter((l) => !(f.endsWith(join('tensor', 'errors.ts')) && /class RevgradError extends Error/.test(l))).map((l) => `${relative(repo, f)}: ${l.trim()}`);
  });
  assert.equal(offences, [], offences.join('\n'));
});

test.run();
