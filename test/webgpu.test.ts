/**
 * The webgpu backend in Node (Dawn over EGL; in CI Mesa's llvmpipe): every primitive against webasm and
 * finite differences, the reversible laws, and one golden PySlowFast fixture (test/backend-laws.ts).
 *
 * Skips, with the reason printed, where the optional `webgpu` package or an EGL library is missing;
 * .ci/run installs both, so there it runs. WEBGPU_LAW_SAMPLES sets the generated cases per op (default 2).
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { describeAdapter, initWebGPU } from '../src/backend/webgpu-node.ts';
import { fixtureLaw, higherOrderLaws, opLaws, reversibleLaws, type LawResult } from './backend-laws.ts';

const status = await initWebGPU();
const samples = Math.max(1, Number(process.env.WEBGPU_LAW_SAMPLES ?? '2') || 2);
const fixture = join(dirname(fileURLToPath(import.meta.url)), 'fixtures', 'revvit_2d_full.safetensors');
const modelFile = join(dirname(fileURLToPath(import.meta.url)), '..', 'src', 'models', 'mvit', 'model.ts');

const report = (r: LawResult): string => `  [webgpu] ${r.ok ? 'ok  ' : 'FAIL'} ${r.group}/${r.name} (${r.ms.toFixed(0)} ms): ${r.detail}`;

if (!status.ok) {
  console.log(`webgpu.test.ts: SKIPPED, no WebGPU in Node: ${status.reason}`);
  test.skip('webgpu backend (no adapter)', () => {});
} else {
  console.log(`webgpu.test.ts: adapter ${describeAdapter(status.adapter)}`);

  test('every primitive on webgpu equals webasm and passes finite differences', async () => {
    const t0 = performance.now();
    const results = await opLaws('webgpu', { samples });
    results.forEach((r) => console.log(report(r)));
    console.log(`  [webgpu] ops: ${results.filter((r) => r.ok).length}/${results.length} in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    const bad = results.filter((r) => !r.ok);
    assert.ok(results.length >= 40, `expected the ~45 OP_CASES, got ${results.length}`);
    assert.is(bad.length, 0, bad.map(report).join('\n'));
  });

  test('reversible laws on webgpu: inverse, reversible = store gradients, key determinism, equal to webasm', async () => {
    const results = await reversibleLaws('webgpu');
    results.forEach((r) => console.log(report(r)));
    const bad = results.filter((r) => !r.ok);
    assert.is(bad.length, 0, bad.map(report).join('\n'));
  });

  test('jvp and hvp on webgpu (second-order rules, customVjp at two levels) equal webasm', async () => {
    const results = await higherOrderLaws('webgpu');
    results.forEach((r) => console.log(report(r)));
    const bad = results.filter((r) => !r.ok);
    assert.is(bad.length, 0, bad.map(report).join('\n'));
  });

  const haveModel = existsSync(modelFile) && existsSync(fixture);
  (haveModel ? test : test.skip)('golden fixture revvit_2d_full: logits and input gradient on webgpu', async () => {
    const [{ decodeSafetensors }, { parseConfig }, { buildModel }] = await Promise.all([
      import('../src/io/safetensors.ts'),
      import('../src/models/mvit/config.ts'),
      import('../src/models/mvit/model.ts'),
    ]);
    const r = await fixtureLaw('webgpu', 'revvit_2d_full', new Uint8Array(readFileSync(fixture)), {
      decodeSafetensors: decodeSafetensors as never,
      parseConfig: parseConfig as never,
      buildModel,
    });
    console.log(report(r));
    assert.ok(r.ok, report(r));
  });
}

test.run();
