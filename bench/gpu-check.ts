/**
 * The GPU check, our side (run by bench/gpu-check.sh; dev-only). On the webgpu backend:
 *  1. matmul GFLOP/s at N = 1024..8192: the tiled WGSL kernel on device-resident operands (each tiling
 *     the device allows; what a training step's products cost) and the gpu.js kernel with upload and
 *     readback (what an eager `await matmul(a, b).data()` costs), each checked against float64;
 *  2. the compiled training step (DeviceTrainer: forward, backward, AdamW as one submission): Rev-MViT
 *     tiny (bench/revmvit-tiny.json) at batch 8 and 64, REV_VIT_S at batch 32 and 128, reversible and
 *     store: median step time, first step, compile time, device memory of the plan, dispatches,
 *     submissions and readbacks per step;
 *  3. device-plan correctness on this GPU (test/plan-laws.ts): tiled matmul, fused groups, every op as a
 *     plan step, the compiled AdamW step and jit(step) against the eager step, with their submission and
 *     readback counts;
 *  4. eager correctness (test/backend-laws.ts: every primitive vs webasm, reversible laws, golden fixtures)
 *     and the eager step of the tiny model, for the before/after (when the budget allows);
 *  5. the merged configs of the training cases, for bench/torch_revmvit.py (the PyTorch side).
 *
 * Results go to OUT/ours.json (written after every section, so a timeout keeps what finished).
 * Exit status: 0 all checks passed, 1 a correctness check failed, 2 no WebGPU adapter, 3 the adapter is
 * software (no GPU here: use --dry, which runs every section with tiny sizes on it).
 *
 * Flags: --dry, --allow-software, --out DIR, --cases FILE (write the torch cases there; default
 * OUT/torch-cases.json), --fixtures DIR, --tiny-config FILE, --budget-s S (skip the remaining optional
 * sections past it; default 330), --skip-laws, --skip-train, --only-matmul, --probe (report the adapter and exit).
 */
import { readFileSync, writeFileSync, mkdirSync, existsSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as E from 'fp-ts/lib/Either.js';
import { setBackend, setKernelCacheCapacity } from '../src/backend/backend.ts';
import { counterDelta, webgpuCounters, webgpuDevice } from '../src/backend/webgpu-device.ts';
import { DevicePlan } from '../src/backend/webgpu-plan.ts';
import { describeAdapter, initWebGPU } from '../src/backend/webgpu-node.ts';
import { chooseTiling, matmulKernel, splitK, tilingName, tilingsFor } from '../src/backend/wgsl-kernels.ts';
import { TUNE_MIN_FLOP, type TunedProduct } from '../src/backend/matmul-tune.ts';
import * as R from '../src/index.ts';
import type { Tensor } from '../src/index.ts';
import { decodeSafetensors } from '../src/io/safetensors.ts';
import { parseConfig, type MViTConfig } from '../src/models/mvit/config.ts';
import { buildModel } from '../src/models/mvit/model.ts';
import { presetConfig } from '../src/models/mvit/presets.ts';
import { foldIn, key, split } from '../src/random/index.ts';
import { DeviceTrainer } from '../src/train/device-step.ts';
import { crossEntropy } from '../src/train/loss.ts';
import { ADAMW_DEFAULTS, adamwInit, adamwUpdate } from '../src/train/optim.ts';
import { fixtureLaw, opLaws, reversibleLaws, type LawResult } from '../test/backend-laws.ts';
import { denseConvLaw, reduceLaw, specialValuesLaw, fusedLaw, jitStepLaw, matmulLaw, planOpLaws, stepLaw, tunedPlanLaw, type PlanLawResult } from '../test/plan-laws.ts';

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const flag = (name: string) => args.includes(name);
const option = (name: string, dflt: string) => {
  const i = args.indexOf(name);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : dflt;
};
const DRY = flag('--dry');
const OUT = option('--out', join(here, '..', 'runs', 'gpu-check'));
const CASES_FILE = option('--cases', join(OUT, 'torch-cases.json'));
const FIXTURES = option('--fixtures', join(here, '..', 'test', 'fixtures'));
const TINY_CONFIG = option('--tiny-config', join(here, 'revmvit-tiny.json'));
const BUDGET_MS = Number(option('--budget-s', '330')) * 1000;
mkdirSync(OUT, { recursive: true });

const T0 = performance.now();
const elapsed = () => performance.now() - T0;
const log = (s: string) => console.log(s);
const ms = (t: number) => `${t.toFixed(t < 10 ? 2 : 0)} ms`;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** Everything ours measured; rewritten to OUT/ours.json after every section. */
const results: Record<string, unknown> = { dry: DRY, started: new Date().toISOString() };
const save = () => writeFileSync(join(OUT, 'ours.json'), JSON.stringify(results, null, 1));

async function main(): Promise<number> {
  const status = await initWebGPU();
  if (!status.ok) {
    log(`FATAL: no WebGPU adapter: ${status.reason}`);
    return 2;
  }
  log(`adapter: ${describeAdapter(status.adapter)}${DRY ? '  [dry run: tiny sizes]' : ''}`);
  results.adapter = status.adapter;
  results.software = status.software;
  if (flag('--probe')) return status.software && !DRY && !flag('--allow-software') ? 3 : 0;
  if (status.software && !DRY && !flag('--allow-software')) {
    log(`FATAL: the adapter is software (${describeAdapter(status.adapter)}): there is no GPU here, and these sizes would take hours on it. ` +
      `'bash bench/gpu-check.sh dry' runs every section with tiny sizes on this adapter.`);
    return 3;
  }
  const { device } = await webgpuDevice();
  results.limits = {
    maxComputeInvocationsPerWorkgroup: device.limits.maxComputeInvocationsPerWorkgroup,
    maxComputeWorkgroupStorageSize: device.limits.maxComputeWorkgroupStorageSize,
    maxStorageBufferBindingSize: device.limits.maxStorageBufferBindingSize,
    maxBufferSize: device.limits.maxBufferSize,
  };
  // A training step of the tiny Rev-MViT uses ~600 distinct kernels on the eager path.
  setKernelCacheCapacity(4096);
  let failures = 0;
  save();

  await matmulBench();
  if (flag('--only-matmul')) return 0;
  const cases = trainCases();
  mkdirSync(dirname(CASES_FILE), { recursive: true });
  writeFileSync(CASES_FILE, JSON.stringify({ dry: DRY, cases: cases.map(exportCase) }, null, 1));
  if (!flag('--skip-train')) await planTrainBench(cases);
  if (!flag('--skip-laws')) {
    failures += await planLaws();
    if (elapsed() < BUDGET_MS) failures += await eagerLaws();
    else log(`\n(eager laws skipped: ${(elapsed() / 1000).toFixed(0)} s used of the ${BUDGET_MS / 1000} s budget)`);
  }
  if (!flag('--skip-train') && elapsed() < BUDGET_MS) await eagerStepBench(cases[0]);
  results.failures = failures;
  results.seconds = elapsed() / 1000;
  save();
  log(failures === 0 ? '\nours: all correctness checks passed' : `\nours: ${failures} correctness check(s) FAILED`);
  return failures === 0 ? 0 : 1;
}

// ---------------------------------------------------------------------------------------------
// 1. Matmul

function seeded(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = (s / 4294967296) * 2 - 1;
  }
  return out;
}

/** Max error on 64 sampled entries relative to the output's scale sqrt(N/9) (entries of A, B uniform in [-1, 1]). */
function sampledError(a: Float32Array, b: Float32Array, c: Float32Array, n: number): number {
  let worst = 0;
  for (let s = 0; s < 64; s++) {
    const i = (s * 7919) % n;
    const j = (s * 104729 + 13) % n;
    let ref = 0;
    for (let k = 0; k < n; k++) ref += a[i * n + k] * b[k * n + j];
    worst = Math.max(worst, Math.abs(c[i * n + j] - ref) / Math.sqrt(n / 9));
  }
  return worst;
}

interface MatmulRow {
  kernel: string;
  n: number;
  ms: number;
  gflops: number;
  maxRelErr: number;
  transfers: boolean;
}

async function matmulBench(): Promise<void> {
  log('\n== matmul C = A @ B, fp32, N x N ==');
  const { device } = await webgpuDevice();
  const sizes = DRY ? [64, 256] : [1024, 2048, 4096, 8192];
  const rows: MatmulRow[] = [];
  results.matmul = rows;
  const maxThreads = device.limits.maxComputeInvocationsPerWorkgroup;
  log(`   tiled WGSL kernel, operands resident on the device (as inside a training step); reps per submission, timed to queue completion`);
  for (const n of sizes) {
    const a = seeded(n * n, 1 + n);
    const b = seeded(n * n, 2 + n);
    const problem = { batch: 1, m: n, k: n, n, transA: false, transB: false };
    const auto = chooseTiling(problem, maxThreads);
    for (const tiling of tilingsFor(maxThreads)) {
      const name = `wgsl ${tilingName(tiling)}`;
      const reps = DRY ? 2 : n >= 8192 ? 3 : n >= 4096 ? 8 : 20;
      const kernel = matmulKernel(problem, tiling);
      let plan: DevicePlan | null = null;
      try {
        plan = await DevicePlan.compile({
          buffers: [n * n, n * n, n * n],
          steps: Array.from({ length: reps }, () => ({ kind: 'wgsl' as const, kernel, inputs: [0, 1], outputs: [2] })),
          reads: [],
          label: `matmul ${n}`,
        });
        plan.write(0, a);
        plan.write(1, b);
        await plan.run();
        await device.queue.onSubmittedWorkDone(); // warm-up (and the shader's first-use compile)
        const times: number[] = [];
        for (let r = 0; r < (DRY ? 1 : 3); r++) {
          const t0 = performance.now();
          await plan.run();
          await device.queue.onSubmittedWorkDone();
          times.push((performance.now() - t0) / reps);
        }
        const c = await plan.read(2);
        const t = median(times);
        const err = sampledError(a, b, c, n);
        const row = { kernel: `${name}${tiling === auto ? ' (model)' : ''}`, n, ms: t, gflops: (2 * n ** 3) / (t * 1e6), maxRelErr: err, transfers: false };
        rows.push(row);
        log(`  ${row.kernel.padEnd(28)} N=${String(n).padStart(5)}: ${ms(t).padStart(9)}  ${row.gflops.toFixed(0).padStart(7)} GFLOP/s  (max error ${err.toExponential(1)} of the output scale${err > 1e-4 ? ' FAIL' : ''})`);
      } catch (e) {
        log(`  ${name} N=${n}: FAILED: ${(e as Error).message.slice(0, 300)}`);
      } finally {
        plan?.destroy();
      }
    }
    save();
  }
  log(`   gpu.js kernel (the reference), with upload and readback: await matmul(a, b).data() on the eager webgpu backend`);
  setBackend('webgpu');
  for (const n of sizes.filter((x) => x <= 4096)) {
    const a = seeded(n * n, 1 + n);
    const b = seeded(n * n, 2 + n);
    const ta = R.tensor(a, [n, n]);
    const tb = R.tensor(b, [n, n]);
    try {
      const out = await R.matmul(ta, tb).data();
      const reps = DRY ? 1 : n >= 4096 ? 2 : 4;
      const t0 = performance.now();
      for (let r = 0; r < reps; r++) await R.matmul(ta, tb).data();
      const t = (performance.now() - t0) / reps;
      const err = sampledError(a, b, out, n);
      const row = { kernel: 'gpu.js plain (eager)', n, ms: t, gflops: (2 * n ** 3) / (t * 1e6), maxRelErr: err, transfers: true };
      rows.push(row);
      log(`  ${row.kernel.padEnd(28)} N=${String(n).padStart(5)}: ${ms(t).padStart(9)}  ${row.gflops.toFixed(0).padStart(7)} GFLOP/s  (max error ${err.toExponential(1)}${err > 1e-4 ? ' FAIL' : ''})`);
    } catch (e) {
      log(`  gpu.js plain N=${n}: FAILED: ${(e as Error).message.slice(0, 300)}`);
    }
  }
  setBackend('webasm');
  save();
}

// ---------------------------------------------------------------------------------------------
// 2. Plan correctness on this device

async function planLaws(): Promise<number> {
  log('\n== device plans on this GPU: tiled matmul, fused groups, every op as a plan step, the compiled AdamW step = eager ==');
  const t0 = performance.now();
  const all: PlanLawResult[] = [await matmulLaw(DRY ? 3 : 8), await tunedPlanLaw(), await denseConvLaw(DRY ? 3 : 8), await reduceLaw(DRY ? 2 : 4), await specialValuesLaw(), await fusedLaw(DRY ? 3 : 8), ...(await planOpLaws({ samples: 1 }))];
  for (const mode of ['reversible', 'store'] as const) all.push(await stepLaw({ mode }));
  all.push(await jitStepLaw());
  for (const r of all) if (!r.ok || !r.name.startsWith('op ')) log(`  ${r.ok ? 'ok  ' : 'FAIL'} ${r.name} (${ms(r.ms)}): ${r.detail}`);
  const ops = all.filter((r) => r.name.startsWith('op '));
  log(`  ops as plan steps: ${ops.filter((r) => r.ok).length}/${ops.length} equal to webasm; ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  results.planLaws = all.map((r) => ({ name: r.name, ok: r.ok, detail: r.detail, ms: r.ms }));
  save();
  return all.filter((r) => !r.ok).length;
}

// ---------------------------------------------------------------------------------------------
// 3. The compiled training step

interface TrainCase {
  name: string;
  cfg: MViTConfig;
  batch: number;
  steps: number;
  /** After timing the reversible step: its device time by kernel (DeviceTrainer.profile). */
  profile?: boolean;
}

function configOrThrow(e: E.Either<unknown, MViTConfig>, what: string): MViTConfig {
  if (E.isLeft(e)) throw new Error(`${what}: ${JSON.stringify(e.left)}`);
  return e.right;
}

/** No dropout or drop path: the compiled step is deterministic (and bench/torch_revmvit.py has neither). */
function deterministic(cfg: MViTConfig): MViTConfig {
  return { ...cfg, MODEL: { ...cfg.MODEL, DROPOUT_RATE: 0 }, MVIT: { ...cfg.MVIT, DROPOUT_RATE: 0, DROPPATH_RATE: 0 } };
}

function trainCases(): TrainCase[] {
  const tiny = deterministic(configOrThrow(parseConfig(JSON.parse(readFileSync(TINY_CONFIG, 'utf8'))), TINY_CONFIG));
  const vitS = deterministic(configOrThrow(presetConfig('REV_VIT_S'), 'REV_VIT_S'));
  if (DRY) {
    const vitTiny = deterministic(configOrThrow(presetConfig('REV_VIT_TINY'), 'REV_VIT_TINY'));
    return [
      { name: 'revmvit-tiny', cfg: tiny, batch: 2, steps: 2 },
      { name: 'REV_VIT_TINY', cfg: vitTiny, batch: 1, steps: 1, profile: true },
    ];
  }
  return [
    { name: 'revmvit-tiny', cfg: tiny, batch: 8, steps: 10 },
    { name: 'revmvit-tiny', cfg: tiny, batch: 64, steps: 5, profile: true },
    { name: 'REV_VIT_S', cfg: vitS, batch: 32, steps: 5 },
    { name: 'REV_VIT_S', cfg: vitS, batch: 128, steps: 3, profile: true },
  ];
}

function inputShape(cfg: MViTConfig, batch: number): number[] {
  const c = cfg.DATA.INPUT_CHANNEL_NUM[0];
  const s = cfg.DATA.TRAIN_CROP_SIZE;
  return cfg.MVIT.PATCH_2D ? [batch, c, s, s] : [batch, c, cfg.DATA.NUM_FRAMES, s, s];
}

interface TrainRow {
  engine: 'plan' | 'eager';
  name: string;
  batch: number;
  mode: string;
  params: number;
  msPerStep: number;
  minMs: number;
  firstStepMs: number;
  compileMs: number;
  deviceMiB: number;
  /** The plan's buffers by what they hold (MiB), and the arena's lower bound (the most bytes live at one node). */
  memoryMiB: Record<string, number>;
  arenaLowerMiB: number;
  dispatches: number;
  submitsPerStep: number;
  readbacksPerStep: number;
  uploadKiBPerStep: number;
  losses: number[];
  /** The same step compiled without tuning (profiled cases): ms per step. */
  untunedMsPerStep?: number;
  /** The products the compile timed (profiled cases): every tiling's ms, the pick and the cost model's choice. */
  tuned?: { shape: string; splits: number; pick: string; model: string; times: Record<string, number> }[];
  /** Device time by kernel (profiled cases): the top kernels and the fused elementwise groups together. */
  profile?: { name: string; dispatches: number; ms: number }[];
}

async function planTrainBench(cases: TrainCase[]): Promise<void> {
  log('\n== the compiled AdamW training step (DeviceTrainer: forward, backward, AdamW in one submission; synthetic data, fp32) ==');
  const rows: TrainRow[] = [];
  results.train = rows;
  for (const c of cases) {
    const model = buildModel(c.cfg);
    const nParams = model.specs.reduce((n, s) => n + s.shape.reduce((a, b) => a * b, 1), 0);
    const [kInit, , kStep] = split(key(2026), 3);
    const shape = inputShape(c.cfg, c.batch);
    const x = seeded(shape.reduce((a, b) => a * b, 1), 7);
    const labels = Array.from({ length: c.batch }, (_, i) => (i * 7) % c.cfg.MODEL.NUM_CLASSES);
    const params = model.init(kInit);
    for (const mode of ['reversible', 'store'] as const) {
      if (elapsed() > BUDGET_MS) {
        log(`  ${c.name} b${c.batch} ${mode}: skipped (time budget)`);
        continue;
      }
      let trainer: DeviceTrainer | null = null;
      try {
        const t0 = performance.now();
        trainer = await DeviceTrainer.create(model, params, { batch: c.batch, mode, key: kStep, tune: true });
        const compileMs = performance.now() - t0;
        const t1 = performance.now();
        const losses = [(await trainer.step(x, labels)).loss];
        const firstStepMs = performance.now() - t1;
        const before = webgpuCounters();
        const times: number[] = [];
        for (let i = 0; i < c.steps; i++) {
          const t = performance.now();
          losses.push((await trainer.step(x, labels)).loss);
          times.push(performance.now() - t);
        }
        const d = counterDelta(before, webgpuCounters());
        const { dispatches, deviceBytes, gpujsOps, memory } = trainer.stats;
        const MiB = (b: number) => Math.round((b / 2 ** 20) * 10) / 10;
        const row: TrainRow = {
          engine: 'plan', name: c.name, batch: c.batch, mode, params: nParams,
          msPerStep: median(times), minMs: Math.min(...times), firstStepMs, compileMs,
          deviceMiB: deviceBytes / 2 ** 20, memoryMiB: Object.fromEntries(memory.categories.map(([k, v]) => [k, MiB(v)])), arenaLowerMiB: MiB(memory.arenaPeakBytes), dispatches,
          submitsPerStep: d.submits / c.steps, readbacksPerStep: d.readbacks / c.steps, uploadKiBPerStep: d.uploadBytes / c.steps / 1024,
          losses,
        };
        rows.push(row);
        log(`  ${c.name.padEnd(13)} b${String(c.batch).padEnd(4)} ${mode.padEnd(10)} ${ms(row.msPerStep).padStart(9)}/step (min ${ms(row.minMs)})  ` +
          `device ${row.deviceMiB.toFixed(0)} MiB (state ${MiB(memory.categories.filter(([k]) => k === 'parameters' || k === 'AdamW moments').reduce((a, [, v]) => a + v, 0))}, arena ${MiB(memory.arenas.reduce((a, b) => a + b, 0))}, its lower bound ${row.arenaLowerMiB}); ${dispatches} dispatches, ${row.submitsPerStep} submit, ${row.readbacksPerStep} readback per step; ` +
          `compile ${ms(compileMs)}, first step ${ms(firstStepMs)}; loss ${losses[0].toFixed(4)} -> ${losses[losses.length - 1].toFixed(4)}` +
          `${gpujsOps.size > 0 ? `; gpu.js kernels: ${[...gpujsOps].map(([k, n]) => `${k} x${n}`).join(', ')}` : ''}`);
        if (c.profile === true && mode === 'reversible') row.tuned = logTuned(trainer.stats.tuned);
        if (c.profile === true && mode === 'reversible' && elapsed() < BUDGET_MS) row.profile = await profileStep(trainer);
        if (c.profile === true && mode === 'reversible' && elapsed() < BUDGET_MS) {
          // What tuning buys: the same step with the cost model's tilings (no vec4 candidates).
          trainer.destroy();
          trainer = await DeviceTrainer.create(model, params, { batch: c.batch, mode, key: kStep, tune: false });
          await trainer.step(x, labels);
          const untuned: number[] = [];
          for (let i = 0; i < c.steps; i++) {
            const t = performance.now();
            await trainer.step(x, labels);
            untuned.push(performance.now() - t);
          }
          row.untunedMsPerStep = median(untuned);
          log(`    without tuning (the cost model's tilings): ${ms(row.untunedMsPerStep)}/step, against ${ms(row.msPerStep)} tuned`);
        }
      } catch (e) {
        log(`  ${c.name} b${c.batch} ${mode}: FAILED: ${(e as Error).message.slice(0, 500)}`);
      } finally {
        trainer?.destroy();
      }
      save();
    }
  }
}

/** The products the compile timed (DeviceProgram tuning): per product, every tiling's time and the pick beside the cost model's. */
function logTuned(tuned: readonly TunedProduct[]): TrainRow['tuned'] {
  if (tuned.length === 0) {
    log(`    matmul tuning: no product of ${TUNE_MIN_FLOP / 1e6} MFLOP or more to time`);
    return [];
  }
  log(`    matmul tuning: ${tuned.length} distinct products, each tiling timed once per product (ms per product):`);
  return tuned.map((t) => {
    const { batch, m, k, n, transA, transB } = t.problem;
    const shape = `${batch} x ${m} x ${k} x ${n}${transA ? ' At' : ''}${transB ? ' Bt' : ''}`;
    const model = tilingName(chooseTiling(t.problem, 256));
    const splits = splitK(t.problem);
    log(`      ${shape.padEnd(30)} ${splits > 1 ? `${splits} k ranges` : 'whole'.padEnd(11)}  ${t.times.map((x) => `${tilingName(x.tiling)} ${x.ms.toFixed(3)}`).join('  ')}  -> ${tilingName(t.tiling)} (model: ${model})`);
    return { shape, splits, pick: tilingName(t.tiling), model, times: Object.fromEntries(t.times.map((x) => [tilingName(x.tiling), x.ms])) };
  });
}

/**
 * Where the step's device time goes: each kernel's dispatches replayed together (DeviceTrainer.profile;
 * spends the trainer). Fused elementwise groups (one name per chain) are summed as one line.
 */
async function profileStep(trainer: DeviceTrainer): Promise<{ name: string; dispatches: number; ms: number }[]> {
  const t0 = performance.now();
  const all = await trainer.profile(2);
  const fused = all.filter((k) => k.name.startsWith('fused '));
  const rows = [
    ...all.filter((k) => !k.name.startsWith('fused ')),
    { name: `fused elementwise groups (${fused.length} kinds)`, dispatches: fused.reduce((n, k) => n + k.dispatches, 0), ms: fused.reduce((n, k) => n + k.ms, 0) },
  ].sort((a, b) => b.ms - a.ms);
  const total = rows.reduce((n, k) => n + k.ms, 0);
  log(`    device time by kernel (each kernel's dispatches replayed together; sum ${ms(total)}, profiled in ${ms(performance.now() - t0)}):`);
  for (const k of rows.slice(0, 14)) log(`      ${k.name.slice(0, 48).padEnd(48)} ${String(k.dispatches).padStart(5)} dispatches ${ms(k.ms).padStart(10)} ${((100 * k.ms) / Math.max(total, 1e-9)).toFixed(1).padStart(5)} %`);
  if (rows.length > 14) log(`      (${rows.length - 14} more kernels: ${ms(rows.slice(14).reduce((n, k) => n + k.ms, 0))})`);
  return rows;
}

// ---------------------------------------------------------------------------------------------
// 4. Eager correctness and the eager step (before/after)

async function eagerLaws(): Promise<number> {
  log('\n== eager webgpu correctness (gpu.js kernels): every primitive vs webasm and finite differences, reversible laws, fixtures ==');
  const t0 = performance.now();
  const all: LawResult[] = [...(await opLaws('webgpu', { samples: 1 })), ...(await reversibleLaws('webgpu'))];
  for (const name of ['revvit_2d_full', 'revmvit_video_conv_concatlinear2_full']) {
    const file = join(FIXTURES, `${name}.safetensors`);
    if (!existsSync(file)) {
      log(`  (fixture ${file} missing; skipped)`);
      continue;
    }
    all.push(await fixtureLaw('webgpu', name, new Uint8Array(readFileSync(file)), { decodeSafetensors: decodeSafetensors as never, parseConfig: parseConfig as never, buildModel }));
  }
  const bad = all.filter((r) => !r.ok);
  for (const r of all) if (!r.ok || r.group !== 'ops') log(`  ${r.ok ? 'ok  ' : 'FAIL'} ${r.group}/${r.name} (${ms(r.ms)}): ${r.detail}`);
  log(`  ops: ${all.filter((r) => r.group === 'ops' && r.ok).length}/${all.filter((r) => r.group === 'ops').length} primitives pass; ${bad.length} failure(s); ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  results.eagerLaws = all.map((r) => ({ group: r.group, name: r.name, ok: r.ok, detail: r.detail, ms: r.ms }));
  save();
  return bad.length;
}

async function eagerStepBench(c: TrainCase): Promise<void> {
  log('\n== for comparison: the same step eagerly on webgpu (a gpu.js kernel per op, awaited) ==');
  setBackend('webgpu');
  try {
    const model = buildModel(c.cfg);
    const [kInit, , kStep] = split(key(2026), 3);
    const x = R.tensor(seeded(inputShape(c.cfg, c.batch).reduce((a, b) => a * b, 1), 7), inputShape(c.cfg, c.batch));
    const labels = Array.from({ length: c.batch }, (_, i) => (i * 7) % c.cfg.MODEL.NUM_CLASSES);
    let params = model.init(kInit);
    let state = adamwInit(params);
    const step = async () => {
      const [loss, grads] = R.valueAndGrad((p: typeof params) => crossEntropy(model.apply(p, x, foldIn(kStep, 0), { train: true, mode: 'reversible' }), labels))(params);
      const next = adamwUpdate(params, grads, state, ADAMW_DEFAULTS, model.noDecay);
      params = next.params;
      state = next.state;
      await Promise.all(R.leaves(params).map((t: Tensor) => t.data()));
      return loss.item();
    };
    const t0 = performance.now();
    await step();
    const first = performance.now() - t0;
    const before = webgpuCounters();
    const t1 = performance.now();
    const n = DRY ? 1 : 2;
    for (let i = 0; i < n; i++) await step();
    const per = (performance.now() - t1) / n;
    const d = counterDelta(before, webgpuCounters());
    results.eagerStep = { name: c.name, batch: c.batch, mode: 'reversible', msPerStep: per, firstStepMs: first, submitsPerStep: d.submits / n, readbacksPerStep: d.readbacks / n, dispatchesPerStep: d.dispatches / n };
    log(`  eager ${c.name} b${c.batch} reversible: ${ms(per)}/step (first ${ms(first)}); ${d.submits / n} submissions, ${d.readbacks / n} readbacks, ${d.dispatches / n} dispatches per step`);
  } catch (e) {
    log(`  eager step: FAILED: ${(e as Error).message.slice(0, 300)}`);
  } finally {
    setBackend('webasm');
  }
  save();
}

// ---------------------------------------------------------------------------------------------
// 5. Export for PyTorch

function exportModel(cfg: MViTConfig) {
  const model = buildModel(cfg);
  return { config: cfg, geometry: model.geometry, specs: model.specs.map((s) => ({ name: s.name, shape: s.shape })) };
}

const exportCase = (c: TrainCase) => ({ name: c.name, batch: c.batch, steps: c.steps, input: inputShape(c.cfg, c.batch), ...exportModel(c.cfg) });


main().then(
  (code) => process.exit(code),
  (e) => {
    console.error(e);
    results.error = e instanceof Error ? `${e.message}\n${e.stack ?? ''}` : String(e);
    save();
    process.exit(1);
  },
);
