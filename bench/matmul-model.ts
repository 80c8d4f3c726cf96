/**
 * Where a compiled training step's matrix products go, and what the tiling cost model expects of them
 * (src/backend/wgsl-kernels.ts `tilingCost`), computed without a GPU: per distinct product of the
 * DeviceTrainer plan, how often it runs, its GFLOP, the tiling and split-K the plan picks, and the
 * model's H200 time for it; beside the model's time for the round-2 choice (no split-K, 128x128 tiles
 * wherever 256 of them fill the device) that the second H200 run measured at 633 ms for REV_VIT_S b128.
 * The model is calibrated on 64x64/4x4's measured peak (18.8 TFLOP/s at full fill); a GPU run with
 * tuning (bench/gpu-check.sh) measures what it only estimates.
 *
 *   node --import tsx bench/matmul-model.ts [--cases vits:128,tiny:64] [--mode reversible|store]
 */
import * as E from 'fp-ts/lib/Either.js';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { productKey } from '../src/backend/matmul-tune.ts';
import { chooseTiling, splitK, TILE_LARGE, TILE_MEDIUM, TILE_SMALL, tilingCost, tilingName, type MatmulShape, type MatmulTiling } from '../src/backend/wgsl-kernels.ts';
import { parseConfig, type MViTConfig } from '../src/models/mvit/config.ts';
import { buildModel } from '../src/models/mvit/model.ts';
import { presetConfig } from '../src/models/mvit/presets.ts';
import { key } from '../src/random/index.ts';
import { lowerProgram } from '../src/tensor/plan.ts';
import { traceTrainStep } from '../src/train/device-step.ts';

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const option = (name: string, dflt: string) => {
  const i = args.indexOf(name);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : dflt;
};
const config = (e: E.Either<unknown, MViTConfig>): MViTConfig => {
  if (E.isLeft(e)) throw new Error(JSON.stringify(e.left));
  return { ...e.right, MODEL: { ...e.right.MODEL, DROPOUT_RATE: 0 }, MVIT: { ...e.right.MVIT, DROPOUT_RATE: 0, DROPPATH_RATE: 0 } };
};
const CONFIGS: Record<string, { name: string; cfg: () => MViTConfig }> = {
  tiny: { name: 'revmvit-tiny', cfg: () => config(parseConfig(JSON.parse(readFileSync(join(here, 'revmvit-tiny.json'), 'utf8')))) },
  vits: { name: 'REV_VIT_S', cfg: () => config(presetConfig('REV_VIT_S')) },
};
const mode = option('--mode', 'reversible') as 'reversible' | 'store';
/** H200: 64x64/4x4 ran at 18,588 GFLOP/s at N = 8192, where the model's fill is 0.988. */
const PEAK_FLOPS = 18.588e12 / 0.988;
const ms = (cost: number) => ((2 * cost) / PEAK_FLOPS) * 1e3;

/** Round 2's rule (what the H200 runs measured): the largest tiling with 256 tiles, no split-K. */
function round2Tiling(p: MatmulShape): MatmulTiling {
  const tiles = (t: MatmulTiling) => p.batch * Math.ceil(p.m / t.bm) * Math.ceil(p.n / t.bn);
  for (const t of [TILE_LARGE, TILE_MEDIUM]) if (tiles(t) >= 256) return t;
  return tiles(TILE_SMALL) >= 1024 ? TILE_MEDIUM : TILE_SMALL;
}

for (const c of option('--cases', 'vits:128,tiny:64').split(',')) {
  const [which, batch] = c.split(':');
  const known = CONFIGS[which];
  if (known === undefined || !(Number(batch) >= 1)) throw new Error(`--cases: '${c}' is not <${Object.keys(CONFIGS).join('|')}>:<batch>`);
  const model = buildModel(known.cfg());
  const t = await traceTrainStep(model, model.init(key(1)), { batch: Number(batch), mode }, { maxBindings: 16 });
  const products = new Map<string, { p: MatmulShape; count: number }>();
  lowerProgram(t.planned, {
    maxThreads: 256,
    matmulTiling: (p) => {
      const k = productKey(p);
      products.set(k, { p, count: (products.get(k)?.count ?? 0) + 1 });
      return undefined;
    },
  });
  console.log(`\n${known.name} b${batch} ${mode}: ${[...products.values()].reduce((n, x) => n + x.count, 0)} products, ${products.size} distinct (model times on the H200, ms for all runs of a product)`);
  console.log(`  ${'batch x m x k x n (trans)'.padEnd(36)} ${'runs'.padStart(4)} ${'GFLOP'.padStart(8)}   ${'now'.padEnd(22)} ${'ms'.padStart(7)}   ${'round 2'.padEnd(14)} ${'ms'.padStart(7)}`);
  let now = 0;
  let before = 0;
  let flops = 0;
  const rows = [...products.values()].map(({ p, count }) => {
    const tiling = chooseTiling(p, 256);
    const splits = splitK(p);
    const old = round2Tiling(p);
    return { p, count, tiling, splits, old, gflop: (2 * p.batch * p.m * p.k * p.n * count) / 1e9, now: ms(tilingCost(p, tiling, splits)) * count, before: ms(tilingCost(p, old, 1)) * count };
  });
  for (const r of rows.sort((a, b) => b.before - a.before)) {
    now += r.now;
    before += r.before;
    flops += r.gflop;
    const shape = `${r.p.batch} x ${r.p.m} x ${r.p.k} x ${r.p.n}${r.p.transA ? ' Aᵀ' : ''}${r.p.transB ? ' Bᵀ' : ''}`;
    const chosen = `${tilingName(r.tiling)}${r.splits > 1 ? `, ${r.splits} k ranges` : ''}`;
    console.log(`  ${shape.padEnd(36)} ${String(r.count).padStart(4)} ${r.gflop.toFixed(1).padStart(8)}   ${chosen.padEnd(22)} ${r.now.toFixed(1).padStart(7)}   ${tilingName(r.old).padEnd(14)} ${r.before.toFixed(1).padStart(7)}`);
  }
  console.log(`  total: ${flops.toFixed(0)} GFLOP; model: ${now.toFixed(0)} ms now, ${before.toFixed(0)} ms with round 2's choice (${(before / now).toFixed(2)}x)`);
}
process.exit(0);
