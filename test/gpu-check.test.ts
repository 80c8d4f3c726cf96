/**
 * The non-GPU parts of the GPU check (bench/gpu-check.sh): the summary's ratios and target marks on
 * synthetic results, and that bench/gpu-check.ts refuses clearly where there is no GPU (a software
 * adapter here, or no WebGPU at all) instead of running GPU sizes on a CPU rasteriser.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { summarize, table } from '../bench/gpu-summary.ts';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');

test('summary: ratios beside torch, the issue targets marked met or missed, missing numbers marked', () => {
  const lines = summarize(
    {
      matmul: [
        { kernel: 'wgsl a', n: 4096, gflops: 12000, transfers: false, maxRelErr: 1e-6 },
        { kernel: 'wgsl b', n: 4096, gflops: 20000, transfers: false, maxRelErr: 1e-6 },
        { kernel: 'wgsl wrong', n: 4096, gflops: 90000, transfers: false, maxRelErr: 1e-2 },
        { kernel: 'gpu.js', n: 4096, gflops: 50000, transfers: true, maxRelErr: 1e-6 },
        { kernel: 'wgsl a', n: 1024, gflops: 1000, transfers: false, maxRelErr: 1e-6 },
      ],
      train: [
        { engine: 'plan', name: 'revmvit-tiny', batch: 64, mode: 'reversible', msPerStep: 150, deviceMiB: 500, submitsPerStep: 1, readbacksPerStep: 1 },
        { engine: 'plan', name: 'REV_VIT_S', batch: 128, mode: 'reversible', msPerStep: 500, deviceMiB: 9000, submitsPerStep: 1, readbacksPerStep: 1, untunedMsPerStep: 700 },
        { engine: 'eager', name: 'revmvit-tiny', batch: 8, mode: 'reversible', msPerStep: 900, deviceMiB: 0, submitsPerStep: 3000, readbacksPerStep: 200 },
      ],
    },
    {
      matmul: [{ n: 4096, gflops: 50000 }, { n: 1024, gflops: 20000 }],
      train: [
        { name: 'revmvit-tiny', batch: 64, store_ms: 42, reversible_ms: 59, peak_mb: { store: 800, reversible: 400 } },
        { name: 'REV_VIT_S', batch: 128, reversible_ms: 200, peak_mb: { reversible: 10000 } },
      ],
    },
  );
  const at = (what: string) => lines.find((l) => l.what.startsWith(what))!;
  // Best correct device-resident kernel: 20000 of 50000 (the wrong and the with-transfers ones do not count).
  assert.is(at('matmul N=4096').ours, 20000);
  assert.is(at('matmul N=4096').ratio, 0.4);
  assert.is(at('matmul N=4096').met, true);
  assert.is(at('matmul N=1024').target, undefined);
  assert.is(at('revmvit-tiny b64 reversible step').ratio, 150 / 59);
  assert.is(at('revmvit-tiny b64 reversible step').met, true);
  assert.is(at('revmvit-tiny b64 reversible device').ratio, 500 / 400);
  assert.is(at('revmvit-tiny b64 reversible device').met, false);
  assert.is(at('REV_VIT_S b128 reversible step').ratio, 2.5);
  assert.is(at('REV_VIT_S b128 reversible step').met, false);
  assert.is(at('REV_VIT_S b128 reversible device').met, true);
  // The untuned step: a line beside torch with no target of its own; only where the check measured it.
  assert.is(at('REV_VIT_S b128 reversible step ms, untuned').ratio, 3.5);
  assert.is(at('REV_VIT_S b128 reversible step ms, untuned').target, undefined);
  assert.is(lines.filter((l) => l.what.endsWith('untuned')).length, 1);
  assert.not.ok(lines.some((l) => l.what.includes('b8')), 'eager rows are not compared');
  const text = table(lines);
  assert.match(text, /MISSED/);
  assert.match(text, /MET/);
  // Missing torch numbers: no ratio, target "not measured".
  const alone = summarize({ train: [{ engine: 'plan', name: 'REV_VIT_S', batch: 128, mode: 'reversible', msPerStep: 1, deviceMiB: 1, submitsPerStep: 1, readbacksPerStep: 1 }] }, {});
  assert.is(alone[0].ratio, null);
  assert.is(alone[0].met, null);
  assert.match(table(alone), /not measured/);
});

test('gpu-check.ts without a GPU: exits 2 (no WebGPU) or 3 (software adapter) with a FATAL line, before any work', () => {
  const out = mkdtempSync(join(tmpdir(), 'revgrad-gpu-check-'));
  try {
    const r = spawnSync(process.execPath, ['--import', 'tsx', join(ROOT, 'bench', 'gpu-check.ts'), '--out', out], { cwd: ROOT, encoding: 'utf8', timeout: 120_000 });
    const text = `${r.stdout}\n${r.stderr}`;
    assert.ok(r.status === 2 || r.status === 3, `exit status ${r.status}:\n${text}`);
    assert.match(text, /FATAL: /);
    if (r.status === 3) assert.match(text, /software/);
    assert.not.match(text, /== matmul/, 'it must stop before the benchmarks');
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

test.run();
