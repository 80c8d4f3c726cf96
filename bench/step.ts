/**
 * One AdamW training step of bench-revmvit-tiny (bench/revmvit-tiny.json, the PySlowFast config the
 * speed targets are stated on): ours in reversible and store mode on the current backend, and PyTorch
 * (bench/torch_revmvit.py, our own small PyTorch version of the model; Debian's python3-torch) in the
 * same run when /usr/bin/python3 has torch. Prints medians, first-step time, the ratios, and RSS/heap
 * growth over the timed steps (steady state: no growth expected).
 * Usage: node --import tsx bench/step.ts [--batch 8] [--steps 10] [--config bench/revmvit-tiny.json] [--no-torch]
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as E from 'fp-ts/lib/Either.js';
import { getBackend, kernelCacheStats } from '../src/backend/backend.ts';
import { valueAndGrad } from '../src/autodiff/tape.ts';
import { formatProblems, parseConfig } from '../src/models/mvit/config.ts';
import { buildModel } from '../src/models/mvit/model.ts';
import { key, normal, randint } from '../src/random/index.ts';
import type { Mode } from '../src/reversible/index.ts';
import { crossEntropy } from '../src/train/loss.ts';
import { ADAMW_DEFAULTS, adamwInit, adamwUpdate } from '../src/train/optim.ts';

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
const labels = randint(key(2), batch, 0, cfg.MODEL.NUM_CLASSES);

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

function timeMode(mode: Mode) {
  let params = model.init(key(0));
  let state = adamwInit(params);
  const times: number[] = [];
  let rss0 = 0;
  for (let i = 0; i < steps + 1; i++) {
    if (i === 1) rss0 = process.memoryUsage().rss;
    const t0 = performance.now();
    const [loss, grads] = valueAndGrad((p: typeof params) => crossEntropy(model.apply(p, x, key(3 + i), { train: true, mode }), labels))(params);
    ({ params, state } = adamwUpdate(params, grads, state, ADAMW_DEFAULTS, model.noDecay));
    loss.dataSync();
    times.push(performance.now() - t0);
  }
  return { first: times[0], median: median(times.slice(1)), rssGrowthMb: (process.memoryUsage().rss - rss0) / 2 ** 20 };
}

const rev = timeMode('reversible');
const store = timeMode('store');
console.log(`bench-revmvit-tiny, batch ${batch}, ${steps} timed steps, backend ${getBackend()}`);
console.log(`| impl | step ms (median) | first step ms | RSS growth over the timed steps |`);
console.log(`|---|---|---|---|`);
console.log(`| revgrad reversible | ${rev.median.toFixed(0)} | ${rev.first.toFixed(0)} | ${rev.rssGrowthMb.toFixed(1)} MB |`);
console.log(`| revgrad store | ${store.median.toFixed(0)} | ${store.first.toFixed(0)} | ${store.rssGrowthMb.toFixed(1)} MB |`);
console.log(`reversible / store: ${(rev.median / store.median).toFixed(2)} (one extra forward in theory: 1.33)`);
console.log(`kernels compiled: ${kernelCacheStats().compiled}`);

if (!process.argv.includes('--no-torch')) {
  const r = spawnSync('/usr/bin/python3', [join(here, 'torch_revmvit.py'), configPath, '--batch', String(batch), '--threads', '1', '--steps', String(steps)], { encoding: 'utf8' });
  if (r.status !== 0) {
    console.log(`PyTorch: not measured (${(r.stderr || r.error?.message || '').trim().split('\n').pop()})`);
  } else {
    const t = JSON.parse(r.stdout.trim().split('\n').pop()!);
    console.log(`| PyTorch ${t.threads} thread, store (autograd) | ${t.store_ms.toFixed(0)} | | |`);
    console.log(`| PyTorch ${t.threads} thread, reversible | ${t.reversible_ms.toFixed(0)} | | |`);
    console.log(`ours reversible / PyTorch autograd: ${(rev.median / t.store_ms).toFixed(2)}; ours store / PyTorch autograd: ${(store.median / t.store_ms).toFixed(2)} (target <= 3)`);
  }
}
