/** Every golden PySlowFast fixture, on webasm and cpu, in reversible and store mode. */
import { readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as E from 'fp-ts/lib/Either.js';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { getBackend, setBackend, type BackendName } from '../src/backend/backend.ts';
import { checkFixture, formatReport } from '../src/models/mvit/fixture-check.ts';

const dir = join(dirname(fileURLToPath(import.meta.url)), 'fixtures');
const files = readdirSync(dir).filter((f) => f.endsWith('.safetensors')).sort();

test('the fixture set is present', () => {
  assert.ok(files.length >= 6, `expected the 6 shared fixtures in ${dir}, found ${files.length}`);
});

for (const backend of ['webasm', 'cpu'] as BackendName[]) {
  for (const file of files) {
    test(`${file} matches PySlowFast on ${backend}`, async () => {
      // checkFixture is asynchronous (it reads with `await t.data()`), so the backend is set around the await.
      const previous = getBackend();
      setBackend(backend);
      const result = await checkFixture(join(dir, file)).finally(() => setBackend(previous));
      if (E.isLeft(result)) assert.unreachable(result.left);
      else assert.ok(result.right.ok, formatReport(result.right));
      if (E.isRight(result)) {
        const groups = new Set(result.right.comparisons.map((c) => c.group));
        for (const g of ['rev_out', 'activations', 'grad (reversible)', 'grad (store)', 'block']) assert.ok(groups.has(g), `${file}: no '${g}' comparisons`);
      }
    });
  }
}

test.run();
