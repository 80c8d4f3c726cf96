/**
 * One AdamW training step of bench-revmvit-tiny (bench/revmvit-tiny.json, the PySlowFast config the
 * speed targets are stated on): ours in reversible and store mode on the current backend, jitted (the
 * step `revgrad train` runs: src/train/step.ts traced once and replayed) and eager, and PyTorch
 * (bench/torch_revmvit.py, our own small PyTorch version of the model; Debian's python3-torch) in the
 * same run when /usr/bin/python3 has torch. Prints medians, first-step time (the jitted one includes
 * tracing and lowering), the ratios, and RSS growth over the timed steps (steady state: none expected).
 * Usage: node --import tsx bench/step.ts [--batch 8] [--steps 10] [--config bench/revmvit-tiny.json] [--no-torch] [--no-eager] [--cpu-time]
 *   --cpu-time: time each step (ours and PyTorch's) by its process's CPU time (user + system, all threads:
 *               V8's GC and compiler threads count against us) instead of wall time, for a machine shared
 *               with other jobs (they deschedule us; CPU time does not count that). The ratios then compare
 *               the "fastest" columns too, the best estimate of an undisturbed step.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as E from 'fp-ts/lib/Either.js';
import { getBackend, kernelCacheStats } from '../src/backend/backend.ts';
import { formatProblems, parseConfig } from '../src/models/mvit/config.ts';
import { buildModel } from '../src/models/mvit/model.ts';
import { key, normal, randint } from '../src/random/index.ts';
import type { Mode } from '../src/reversible/index.ts';
import { tensor } from '../src/tensor/tensor.ts';
import { adamw } from '../src/train/optim.ts';
import { makeTrainStep } from '../src/train/step.ts';

const here = dirname(fileURLToPath(import.meta.url));
const arg = (name: string, dflt: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : dflt;
};
const batch = Number(arg('batch', '8'));
const steps = Number(arg('steps', '10'));
const configPath = arg('config', join(here, 'revmvit-tiny.json'));

const parsed = parseConfig(JSON.parse(readFileSync(configPath, 'utf8')));
if (E.isLeft(parsed)) throw new Error(formatProblems(parsed.left, configPath));
const cfg = parsed.right;
const model = buildModel(cfg);
const d = cfg.DATA;
const inputShape = [batch, d.INPUT_CHANNEL_NUM[0], ...(cfg.MVIT.PATCH_2D ? [] : [d.NUM_FRAMES]), d.TRAIN_CROP_SIZE, d.TRAIN_CROP_SIZE];
const x = normal(key(1), inputShape);
const labels = tensor(Float32Array.from(randint(key(2), batch, 0, cfg.MODEL.NUM_CLASSES)), [batch]);
const optimizer = adamw({ noDecay: (n) => model.noDecay(n) });

const cpuTime = process.argv.includes('--cpu-time');
const now = cpuTime
  ? () => {
      const u = process.cpuUsage();
      return (u.user + u.system) / 1000;
    }
  : () => performance.now();

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

function timeMode(mode: Mode, jit: boolean) {
  const step = makeTrainStep(model, optimizer, { mode, jit });
  let params = model.init(key(0));
  let optState = optimizer.init(params);
  const times: number[] = [];
  let rss0 = 0;
  for (let i = 0; i < steps + 1; i++) {
    if (i === 1) rss0 = process.memoryUsage().rss;
    const t0 = now();
    const r = step(params, optState, x, labels, key(3 + i));
    ({ params, optState } = r);
    r.loss.dataSync();
    times.push(now() - t0);
  }
  return { first: times[0], median: median(times.slice(1)), min: Math.min(...times.slice(1)), rssGrowthMb: (process.memoryUsage().rss - rss0) / 2 ** 20 };
}

const eager = !process.argv.includes('--no-eager');
const rows: [string, ReturnType<typeof timeMode>][] = [];
rows.push(['revgrad jit, reversible', timeMode('reversible', true)]);
rows.push(['revgrad jit, store', timeMode('store', true)]);
if (eager) rows.push(['revgrad eager, reversible', timeMode('reversible', false)], ['revgrad eager, store', timeMode('store', false)]);
const [rev, store] = [rows[0][1], rows[1][1]];
console.log(`bench-revmvit-tiny, batch ${batch}, ${steps} timed steps, backend ${getBackend()}; timing: ${cpuTime ? 'process CPU time' : 'wall clock'}; load average ${loadavg().map((l) => l.toFixed(1)).join(' ')}`);
console.log(`| impl | step ms (median) | fastest | first step ms | RSS growth over the timed steps |`);
console.log(`|---|---|---|---|---|`);
for (const [name, r] of rows) console.log(`| ${name} | ${r.median.toFixed(0)} | ${r.min.toFixed(0)} | ${r.first.toFixed(0)} | ${r.rssGrowthMb.toFixed(1)} MB |`);
console.log(`jit reversible / store: ${(rev.median / store.median).toFixed(2)} (target <= 1.35; one extra forward in theory: 1.33)`);
if (eager) console.log(`jit speedup over eager: reversible ${(rows[2][1].median / rev.median).toFixed(2)}x, store ${(rows[3][1].median / store.median).toFixed(2)}x`);
console.log(`kernels compiled: ${kernelCacheStats().compiled}`);

if (!process.argv.includes('--no-torch')) {
  const r = spawnSync('/usr/bin/python3', [join(here, 'torch_revmvit.py'), configPath, '--batch', String(batch), '--threads', '1', '--steps', String(steps), ...(cpuTime ? ['--cpu-time'] : [])], { encoding: 'utf8' });
  if (r.status !== 0) {
    console.log(`PyTorch: not measured (${(r.stderr || r.error?.message || '').trim().split('\n').pop()})`);
  } else {
    const t = JSON.parse(r.stdout.trim().split('\n').pop()!);
    console.log(`| PyTorch ${t.threads} thread, store (autograd) | ${t.store_ms.toFixed(0)} | ${t.store_min_ms.toFixed(0)} | | |`);
    console.log(`| PyTorch ${t.threads} thread, reversible | ${t.reversible_ms.toFixed(0)} | ${t.reversible_min_ms.toFixed(0)} | | |`);
    console.log(`ours (jit) reversible / PyTorch autograd: ${(rev.median / t.store_ms).toFixed(2)}; ours (jit) store / PyTorch autograd: ${(store.median / t.store_ms).toFixed(2)} (target <= 1.5, moonshot 1.0)`);
    console.log(`fastest steps: ours (jit) reversible / PyTorch autograd: ${(rev.min / t.store_min_ms).toFixed(2)}; ours (jit) store / PyTorch autograd: ${(store.min / t.store_min_ms).toFixed(2)}`);
  }
}
