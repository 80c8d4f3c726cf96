/**
 * The all-cores training step: bench-revmvit-tiny (bench/revmvit-tiny.json) AdamW steps with the batch's
 * gradient as the sum of fixed shards (src/train/shards.ts), computed in this process and on 2..N worker
 * threads (src/train/parallel.ts), beside PyTorch (bench/torch_revmvit.py, Debian's python3-torch) at
 * each thread count from 1 to the machine's cores, in the same run. Prints step medians and ours on all
 * cores over PyTorch at its best thread count.
 * Usage: node --import tsx bench/parallel.ts [--batch 16] [--shards 4] [--steps 10] [--no-torch]
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { availableParallelism, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as E from 'fp-ts/lib/Either.js';
import { formatProblems, parseConfig } from '../src/models/mvit/config.ts';
import { buildModel } from '../src/models/mvit/model.ts';
import { foldIn, key, normal, randint } from '../src/random/index.ts';
import { crossEntropy } from '../src/train/loss.ts';
import { train, type Batch } from '../src/train/loop.ts';
import { adamw } from '../src/train/optim.ts';
import { startDataParallel } from '../src/train/parallel.ts';
import { inProcessShards, type GradientFn } from '../src/train/shards.ts';
import type { Tensor } from '../src/tensor/tensor.ts';

const here = dirname(fileURLToPath(import.meta.url));
const arg = (name: string, dflt: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : dflt;
};
const batch = Number(arg('batch', '16'));
const shards = Number(arg('shards', '4'));
const steps = Number(arg('steps', '10'));
const cores = availableParallelism();
const configPath = join(here, 'revmvit-tiny.json');
const parsed = parseConfig(JSON.parse(readFileSync(configPath, 'utf8')));
if (E.isLeft(parsed)) throw new Error(formatProblems(parsed.left, configPath));
const cfg = parsed.right;
const model = buildModel(cfg);
const d = cfg.DATA;
const shape = [batch, d.INPUT_CHANNEL_NUM[0], d.NUM_FRAMES, d.TRAIN_CROP_SIZE, d.TRAIN_CROP_SIZE];
const data = (s: number): Batch => ({ x: normal(foldIn(key(1), s), shape), labels: Array.from(randint(foldIn(key(2), s), batch, 0, cfg.MODEL.NUM_CLASSES)) });
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** Median ms of the timed steps (the first, warm-up step is left out). */
async function time(gradients: GradientFn<ReturnType<typeof model.init>> | undefined): Promise<number> {
  const result = await train({ model, params: model.init(key(0)), optimizer: adamw({ lr: 1e-3 }), data, steps: steps + 1, key: key(3), gradients });
  return median(result.records.flatMap((r) => (r.type === 'train' && r.step > 1 ? [r.stepMs] : [])));
}

const cpuModel = /model name\s*:\s*(.*)/.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? 'unknown';
console.log(`bench-revmvit-tiny, batch ${batch}, ${shards} shards, ${steps} timed steps; ${cores} cores (${cpuModel}); load average ${loadavg().map((l) => l.toFixed(1)).join(' ')}`);
console.log('| impl | step ms (median) |');
console.log('|---|---|');
const rows: [string, number][] = [];
const say = (name: string, ms: number) => {
  rows.push([name, ms]);
  console.log(`| ${name} | ${ms.toFixed(0)} |`);
};
say('revgrad, one gradient of the batch, 1 thread', await time(undefined));
const spec = { mode: 'reversible' as const, loss: (out: Tensor, labels: ArrayLike<number>) => crossEntropy(out, labels) };
say(`revgrad, ${shards} shards in process, 1 thread`, await time(inProcessShards(model, spec, shards)));
const factory = { module: new URL('../src/models/mvit/model.ts', import.meta.url).href, exportName: 'buildModel', args: [cfg] };
let allCores = NaN;
for (let w = 2; w <= Math.min(cores, shards); w *= 2) {
  const pool = await startDataParallel(model.init(key(0)), { workers: w, shards, model: factory, mode: 'reversible', labelSmoothing: 0 });
  try {
    const ms = await time(pool.gradients);
    say(`revgrad, ${shards} shards on ${w} workers`, ms);
    if (w === Math.min(cores, shards) || w * 2 > Math.min(cores, shards)) allCores = ms;
  } finally {
    await pool.close();
  }
}

if (!process.argv.includes('--no-torch')) {
  let best = Infinity;
  let bestThreads = 0;
  for (let t = 1; t <= cores; t++) {
    const r = spawnSync('/usr/bin/python3', [join(here, 'torch_revmvit.py'), configPath, '--batch', String(batch), '--threads', String(t), '--steps', String(steps), '--modes', 'store'], { encoding: 'utf8' });
    if (r.status !== 0) {
      console.log(`PyTorch: not measured (${(r.stderr || r.error?.message || '').trim().split('\n').pop()})`);
      break;
    }
    const ms = JSON.parse(r.stdout.trim().split('\n').pop()!).store_ms as number;
    console.log(`| PyTorch ${t} thread${t > 1 ? 's' : ''}, autograd | ${ms.toFixed(0)} |`);
    if (ms < best) [best, bestThreads] = [ms, t];
  }
  if (Number.isFinite(best) && Number.isFinite(allCores)) {
    console.log(`ours on all cores (reversible) / PyTorch at its best thread count (${bestThreads}): ${(allCores / best).toFixed(2)} (target <= 1.0)`);
  }
}
