/**
 * Device memory of the compiled AdamW training step (DeviceTrainer's plan), by category, for the
 * configurations and batch sizes of the GPU check (bench/gpu-check.ts): bench-revmvit-tiny at batch 8
 * and 64, REV_VIT_S at batch 32 and 128, reversible and store. The plan's buffers are a pure function of
 * the traced program, so this is computed without running it (no GPU needed: the numbers are the ones a
 * GPU run allocates, less the few KiB of uniforms and readback staging).
 *
 *   node --import tsx bench/plan-memory.ts [--cases tiny:8,tiny:64,vits:32,vits:128] [--modes reversible,store]
 *        [--torch runs/gpu-check/torch.json]   (PyTorch's peaks from a GPU check, printed beside ours)
 *
 * Categories: parameters and AdamW moments (held across steps), the batch and per-step inputs, constants,
 * the outputs read back, next-state copies (state not updated in place), the arena (activations,
 * gradients and temporaries, sharing bytes by lifetime) with its lower bound (the most bytes live at
 * once), and buffers of values gpu.js kernels touch.
 */
import { readFileSync, existsSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as E from 'fp-ts/lib/Either.js';
import { parseConfig, type MViTConfig } from '../src/models/mvit/config.ts';
import { buildModel } from '../src/models/mvit/model.ts';
import { presetConfig } from '../src/models/mvit/presets.ts';
import { key } from '../src/random/index.ts';
import { planMemory, type PlanMemory } from '../src/tensor/plan.ts';
import { traceTrainStep } from '../src/train/device-step.ts';

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const option = (name: string, dflt: string) => {
  const i = args.indexOf(name);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : dflt;
};

function config(e: E.Either<unknown, MViTConfig>, what: string): MViTConfig {
  if (E.isLeft(e)) throw new Error(`${what}: ${JSON.stringify(e.left)}`);
  // As the GPU check: no dropout or drop path.
  const cfg = e.right;
  return { ...cfg, MODEL: { ...cfg.MODEL, DROPOUT_RATE: 0 }, MVIT: { ...cfg.MVIT, DROPOUT_RATE: 0, DROPPATH_RATE: 0 } };
}

const CONFIGS: Record<string, { name: string; cfg: () => MViTConfig }> = {
  tiny: { name: 'revmvit-tiny', cfg: () => config(parseConfig(JSON.parse(readFileSync(join(here, 'revmvit-tiny.json'), 'utf8'))), 'bench/revmvit-tiny.json') },
  vits: { name: 'REV_VIT_S', cfg: () => config(presetConfig('REV_VIT_S'), 'REV_VIT_S') },
};

interface TorchTrain { name?: string; batch: number; params: number; peak_mb?: Record<string, number> }
const torchFile = option('--torch', '');
const torch: TorchTrain[] = torchFile !== '' && existsSync(torchFile) ? (JSON.parse(readFileSync(torchFile, 'utf8')) as { train?: TorchTrain[] }).train ?? [] : [];

const MiB = (b: number) => (b / 2 ** 20).toFixed(1).padStart(8);
const cases = option('--cases', 'tiny:8,tiny:64,vits:32,vits:128').split(',').map((c) => {
  const [which, batch] = c.split(':');
  const known = CONFIGS[which];
  if (known === undefined || !(Number(batch) >= 1)) throw new Error(`--cases: '${c}' is not <${Object.keys(CONFIGS).join('|')}>:<batch>`);
  return { ...known, batch: Number(batch) };
});
const modes = option('--modes', 'reversible,store').split(',') as ('reversible' | 'store')[];

const rows: { what: string; m: PlanMemory; torchMiB?: number }[] = [];
for (const c of cases) {
  const model = buildModel(c.cfg());
  const params = model.init(key(1));
  const nParams = model.specs.reduce((n, s) => n + s.shape.reduce((a, b) => a * b, 1), 0);
  for (const mode of modes) {
    // maxBindings 16 and 256 threads: what the GPU check's devices allow (the plan is the same on llvmpipe).
    const t = await traceTrainStep(model, params, { batch: c.batch, mode }, { maxBindings: 16 });
    const n = t.names.length;
    const m = planMemory(t.planned, { maxThreads: 256 }, (i) => (i < n ? 'parameters' : 'AdamW moments'));
    const peak = torch.find((r) => r.batch === c.batch && r.params === nParams)?.peak_mb?.[mode];
    rows.push({ what: `${c.name} b${c.batch} ${mode}`, m, torchMiB: peak });
    console.log(`\n${c.name} b${c.batch} ${mode}: ${MiB(m.totalBytes).trim()} MiB on the device${peak !== undefined ? ` (PyTorch's peak: ${peak.toFixed(1)} MiB, ratio ${(m.totalBytes / 2 ** 20 / peak).toFixed(2)})` : ''}; ${m.dispatches} dispatches`);
    for (const [what, bytes] of m.categories) console.log(`  ${what.padEnd(58)} ${MiB(bytes)} MiB`);
    console.log(`  ${'arena: lower bound (most bytes live at once)'.padEnd(58)} ${MiB(m.arenaPeakBytes)} MiB  (at node ${m.peakNode} of ${m.dispatches}; arena ${m.arenas.length} buffer(s))`);
    for (const [what, bytes] of m.livePeak) console.log(`    live at that node: ${what.padEnd(37)} ${MiB(bytes)} MiB`);
  }
}
console.log('\nsummary (MiB)');
for (const r of rows) console.log(`  ${r.what.padEnd(28)} ${MiB(r.m.totalBytes)}${r.torchMiB !== undefined ? `   PyTorch ${MiB(r.torchMiB * 2 ** 20)}   ${(r.m.totalBytes / 2 ** 20 / r.torchMiB).toFixed(2)}x` : ''}`);
process.exit(0);
