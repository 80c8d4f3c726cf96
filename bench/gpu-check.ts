/**
 * The GPU check, our side (run by bench/gpu-check.sh; dev-only): on the webgpu backend,
 *  1. correctness on this device: every primitive against webasm and finite differences, the reversible
 *     laws, and golden fixture logits (test/backend-laws.ts);
 *  2. matmul GFLOP/s at N = 1024..8192 (upload, kernel and readback included: what `await t.data()` costs),
 *     for both GPU matmul kernels, each checked against float64 on sampled entries;
 *  3. AdamW training-step time on synthetic data: Rev-MViT tiny (/work/shared/bench-revmvit-tiny.json,
 *     copied to bench/revmvit-tiny.json) at batch 8 and 64, REV_VIT_S at batch 32, reversible and store;
 *  4. writes the merged configs, geometries and param specs of those models and of the fixtures to
 *     OUT/torch-cases.json, so bench/torch_revmvit.py builds the same models for the PyTorch numbers.
 *
 * --dry: tiny sizes on whatever adapter answers (llvmpipe here), to test the whole path without a GPU.
 * Flags: --dry, --out DIR, --fixtures DIR, --skip-laws, --skip-train, --only-matmul.
 */
import { readFileSync, readdirSync, writeFileSync, mkdirSync, existsSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as E from 'fp-ts/lib/Either.js';
import * as Backend from '../src/backend/backend.ts';
import { setBackend, kernelCacheStats, gpuFor } from '../src/backend/backend.ts';
import { setGpuMatmulVariant, type GpuMatmulVariant } from '../src/backend/matmul.ts';
import { describeAdapter, initWebGPU } from '../src/backend/webgpu-node.ts';
import * as R from '../src/index.ts';
import type { Tensor } from '../src/index.ts';
import { decodeSafetensors } from '../src/io/safetensors.ts';
import { parseConfig, type MViTConfig } from '../src/models/mvit/config.ts';
import { buildModel } from '../src/models/mvit/model.ts';
import { presetConfig } from '../src/models/mvit/presets.ts';
import { foldIn, key, normal, split } from '../src/random/index.ts';
import { crossEntropy } from '../src/train/loss.ts';
import { ADAMW_DEFAULTS, adamwInit, adamwUpdate } from '../src/train/optim.ts';
import { fixtureLaw, opLaws, reversibleLaws, type LawResult } from '../test/backend-laws.ts';

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const flag = (name: string) => args.includes(name);
const option = (name: string, dflt: string) => {
  const i = args.indexOf(name);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : dflt;
};
const DRY = flag('--dry');
const OUT = option('--out', join(here, '..', 'runs', 'gpu-check'));
const FIXTURES = option('--fixtures', join(here, '..', 'test', 'fixtures'));
const TINY_CONFIG = option('--tiny-config', join(here, 'revmvit-tiny.json'));
mkdirSync(OUT, { recursive: true });

const log = (s: string) => console.log(s);
const ms = (t: number) => `${t.toFixed(t < 10 ? 2 : 0)} ms`;

async function main(): Promise<number> {
  const status = await initWebGPU();
  if (!status.ok) {
    log(`FATAL: no WebGPU adapter: ${status.reason}`);
    return 2;
  }
  log(`adapter: ${describeAdapter(status.adapter)}${DRY ? '  [dry run: tiny sizes]' : ''}`);
  // A training step of the tiny Rev-MViT uses ~590 distinct kernels; a smaller kernel cache recompiles
  // shaders every step. Raise it where the backend layer lets us.
  const setCapacity = (Backend as Record<string, unknown>).setKernelCacheCapacity;
  if (typeof setCapacity === 'function') setCapacity(4096);
  else log('note: no setKernelCacheCapacity in src/backend/backend.ts; the default kernel cache may evict and recompile kernels every step');
  if (!DRY && status.software) log('WARNING: this adapter is software; the numbers below are not GPU numbers');
  let failures = 0;

  if (!flag('--skip-laws') && !flag('--only-matmul')) failures += await laws();
  if (!flag('--only-matmul')) await dispatchBench();
  const matmulRows = await matmulBench();
  writeFileSync(join(OUT, 'ours-matmul.json'), JSON.stringify(matmulRows, null, 1));
  const cases = trainCases();
  writeFileSync(join(OUT, 'torch-cases.json'), JSON.stringify({ dry: DRY, cases: cases.map(exportCase), fixtures: fixtureCases() }, null, 1));
  if (!flag('--skip-train') && !flag('--only-matmul')) {
    const rows = await trainBench(cases);
    writeFileSync(join(OUT, 'ours-train.json'), JSON.stringify(rows, null, 1));
  }
  log(failures === 0 ? 'ours: all correctness checks passed' : `ours: ${failures} correctness check(s) FAILED`);
  return failures === 0 ? 0 : 1;
}

// ---------------------------------------------------------------------------------------------
// 1. Correctness on this device

async function laws(): Promise<number> {
  log('\n== correctness on webgpu (vs webasm, finite differences, fixtures) ==');
  const t0 = performance.now();
  const results: LawResult[] = [...(await opLaws('webgpu', { samples: DRY ? 1 : 2 })), ...(await reversibleLaws('webgpu'))];
  for (const name of ['revvit_2d_full', 'revmvit_video_conv_concatlinear2_full']) {
    const file = join(FIXTURES, `${name}.safetensors`);
    if (!existsSync(file)) {
      log(`  (fixture ${file} missing; skipped)`);
      continue;
    }
    results.push(await fixtureLaw('webgpu', name, new Uint8Array(readFileSync(file)), { decodeSafetensors: decodeSafetensors as never, parseConfig: parseConfig as never, buildModel }));
  }
  const bad = results.filter((r) => !r.ok);
  for (const r of results) if (!r.ok || r.group !== 'ops') log(`  ${r.ok ? 'ok  ' : 'FAIL'} ${r.group}/${r.name} (${ms(r.ms)}): ${r.detail}`);
  log(`  ops: ${results.filter((r) => r.group === 'ops' && r.ok).length}/${results.filter((r) => r.group === 'ops').length} primitives pass; ${bad.length} failure(s); ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  for (const r of bad.filter((x) => x.group === 'ops')) log(`  FAIL ops/${r.name}: ${r.detail}`);
  return bad.length;
}

// ---------------------------------------------------------------------------------------------
// 1b. Dispatch: what keeping tensors on the device would save (measure before redesigning)

async function dispatchBench(): Promise<void> {
  log('\n== dispatch: a chain of elementwise kernels, per launch ==');
  log('   (a) our current path: await each kernel, upload its input and read its output back');
  log('   (b) gpu.js pipeline handles: the output stays on the GPU and feeds the next kernel; one readback at the end');
  const gpu = gpuFor('webgpu');
  const src = 'function (a) { return a[this.thread.x] * 1.0001 + 0.5; }';
  const n = DRY ? 20 : 50;
  for (const size of DRY ? [4096, 65536] : [4096, 1 << 20, 8 << 20]) {
    const plain = gpu.createKernel(src, { output: [size] }) as unknown as (x: unknown) => Promise<Float32Array>;
    const piped = gpu.createKernel(src, { output: [size], pipeline: true, immutable: true } as never) as unknown as (x: unknown) => Promise<{ toArray(): Promise<Float32Array>; delete(): void }>;
    let x: Float32Array = new Float32Array(size).fill(1);
    x = await plain(x);
    let t0 = performance.now();
    for (let i = 0; i < n; i++) x = await plain(x);
    const a = (performance.now() - t0) / n;
    let h = await piped(new Float32Array(size).fill(1));
    t0 = performance.now();
    for (let i = 0; i < n; i++) {
      const next = await piped(h);
      h.delete();
      h = next;
    }
    const last = await h.toArray();
    const b = (performance.now() - t0) / n;
    h.delete();
    log(`  ${String(size).padStart(8)} floats: (a) ${ms(a).padStart(9)}   (b) ${ms(b).padStart(9)}   ${(a / b).toFixed(1)}x  (check ${last[0].toFixed(3)} = ${x[0].toFixed(3)})`);
  }
}

// ---------------------------------------------------------------------------------------------
// 2. Matmul

function seeded(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = (s / 4294967296) * 2 - 1;
  }
  return out;
}

interface MatmulRow {
  variant: GpuMatmulVariant;
  n: number;
  ms: number;
  gflops: number;
  maxRelErr: number;
}

async function matmulBench(): Promise<MatmulRow[]> {
  log('\n== matmul C = A @ B, fp32, N x N (upload + kernel + readback) ==');
  const sizes = DRY ? [64, 128] : [1024, 2048, 4096, 8192];
  const rows: MatmulRow[] = [];
  setBackend('webgpu');
  for (const variant of ['plain', 'rows4'] as GpuMatmulVariant[]) {
    setGpuMatmulVariant(variant);
    for (const n of sizes) {
      const a = seeded(n * n, 1 + n);
      const b = seeded(n * n, 2 + n);
      const ta = R.tensor(a, [n, n]);
      const tb = R.tensor(b, [n, n]);
      let out: Float32Array;
      try {
        out = await R.matmul(ta, tb).data(); // compile + warm up
      } catch (e) {
        log(`  ${variant.padEnd(6)} N=${n}: FAILED: ${(e as Error).message.slice(0, 300)}`);
        continue;
      }
      // float64 reference on 64 sampled entries; error relative to the row-norm scale sqrt(N)/sqrt(3)
      let maxRel = 0;
      for (let s = 0; s < 64; s++) {
        const i = (s * 7919) % n;
        const j = (s * 104729 + 13) % n;
        let ref = 0;
        for (let k = 0; k < n; k++) ref += a[i * n + k] * b[k * n + j];
        maxRel = Math.max(maxRel, Math.abs(out[i * n + j] - ref) / Math.sqrt(n / 9));
      }
      const reps = DRY ? 2 : n >= 8192 ? 2 : n >= 4096 ? 3 : 5;
      const t0 = performance.now();
      for (let r = 0; r < reps; r++) await R.matmul(ta, tb).data();
      const t = (performance.now() - t0) / reps;
      const gflops = (2 * n ** 3) / (t * 1e6);
      rows.push({ variant, n, ms: t, gflops, maxRelErr: maxRel });
      log(`  ours ${variant.padEnd(6)} N=${String(n).padStart(5)}: ${ms(t).padStart(9)}  ${gflops.toFixed(1).padStart(8)} GFLOP/s  (max error ${maxRel.toExponential(1)} of the output scale${maxRel > 1e-4 ? ' FAIL' : ''})`);
    }
  }
  setGpuMatmulVariant('plain');
  setBackend('webasm');
  return rows;
}

// ---------------------------------------------------------------------------------------------
// 3. Training steps

interface TrainCase {
  name: string;
  cfg: MViTConfig;
  batch: number;
  steps: number;
}

function configOrThrow(e: E.Either<unknown, MViTConfig>, what: string): MViTConfig {
  if (E.isLeft(e)) throw new Error(`${what}: ${JSON.stringify(e.left)}`);
  return e.right;
}

function trainCases(): TrainCase[] {
  const tiny = configOrThrow(parseConfig(JSON.parse(readFileSync(TINY_CONFIG, 'utf8'))), TINY_CONFIG);
  const vitS = configOrThrow(presetConfig('REV_VIT_S'), 'REV_VIT_S');
  if (DRY) {
    const vitTiny = configOrThrow(presetConfig('REV_VIT_TINY'), 'REV_VIT_TINY');
    return [
      { name: 'revmvit-tiny', cfg: tiny, batch: 2, steps: 1 },
      { name: 'REV_VIT_TINY', cfg: vitTiny, batch: 2, steps: 1 },
    ];
  }
  return [
    { name: 'revmvit-tiny', cfg: tiny, batch: 8, steps: 3 },
    { name: 'revmvit-tiny', cfg: tiny, batch: 64, steps: 2 },
    { name: 'REV_VIT_S', cfg: vitS, batch: 32, steps: 2 },
  ];
}

function inputShape(cfg: MViTConfig, batch: number): number[] {
  const m = cfg.MVIT;
  const c = cfg.DATA.INPUT_CHANNEL_NUM[0];
  const s = cfg.DATA.TRAIN_CROP_SIZE;
  return m.PATCH_2D ? [batch, c, s, s] : [batch, c, cfg.DATA.NUM_FRAMES, s, s];
}

interface TrainRow {
  name: string;
  batch: number;
  mode: string;
  params: number;
  msPerStep: number;
  firstStepMs: number;
  loss: number;
  kernelsCompiled: number;
  launchesPerStep: number;
}

async function trainBench(cases: TrainCase[]): Promise<TrainRow[]> {
  log('\n== AdamW training step (synthetic data, fp32): forward, backward, update, all results read back ==');
  const rows: TrainRow[] = [];
  setBackend('webgpu');
  for (const c of cases) {
    const model = buildModel(c.cfg);
    const nParams = model.specs.reduce((n, s) => n + s.shape.reduce((a, b) => a * b, 1), 0);
    const [kInit, kData, kStep] = split(key(2026), 3);
    const x = normal(kData, inputShape(c.cfg, c.batch));
    const labels = Array.from({ length: c.batch }, (_, i) => (i * 7) % c.cfg.MODEL.NUM_CLASSES);
    for (const mode of ['reversible', 'store'] as const) {
      let params = model.init(kInit);
      let state = adamwInit(params);
      const step = async (i: number) => {
        const lossFn = (p: typeof params) => crossEntropy(model.apply(p, x, foldIn(kStep, i), { train: true, mode }), labels);
        const [loss, grads] = R.valueAndGrad(lossFn)(params);
        const next = adamwUpdate(params, grads, state, ADAMW_DEFAULTS, model.noDecay);
        params = next.params;
        state = next.state;
        await Promise.all(R.leaves(params).map((t: Tensor) => t.data()));
        return loss.item();
      };
      const compiled0 = kernelCacheStats().compiled;
      let first: number;
      let loss: number;
      try {
        const t0 = performance.now();
        loss = await step(0);
        first = performance.now() - t0;
      } catch (e) {
        log(`  ${c.name} b${c.batch} ${mode}: FAILED: ${(e as Error).message.slice(0, 400)}`);
        continue;
      }
      const launches0 = kernelCacheStats().hits + kernelCacheStats().compiled;
      const t1 = performance.now();
      for (let i = 1; i <= c.steps; i++) loss = await step(i);
      const per = (performance.now() - t1) / c.steps;
      const launches = (kernelCacheStats().hits + kernelCacheStats().compiled - launches0) / c.steps;
      const row = { name: c.name, batch: c.batch, mode, params: nParams, msPerStep: per, firstStepMs: first, loss, kernelsCompiled: kernelCacheStats().compiled - compiled0, launchesPerStep: launches };
      rows.push(row);
      log(`  ours ${c.name.padEnd(13)} b${String(c.batch).padEnd(3)} ${mode.padEnd(10)} ${ms(per).padStart(10)}/step  (${launches} kernel launches/step; first step ${ms(first)}, ${row.kernelsCompiled} kernels compiled; ${(nParams / 1e6).toFixed(2)}M params; loss ${loss.toFixed(4)})`);
    }
  }
  setBackend('webasm');
  return rows;
}

// ---------------------------------------------------------------------------------------------
// 4. Export for PyTorch

function exportModel(cfg: MViTConfig) {
  const model = buildModel(cfg);
  return { config: cfg, geometry: model.geometry, specs: model.specs.map((s) => ({ name: s.name, shape: s.shape })) };
}

const exportCase = (c: TrainCase) => ({ name: c.name, batch: c.batch, steps: c.steps, input: inputShape(c.cfg, c.batch), ...exportModel(c.cfg) });

function fixtureCases() {
  if (!existsSync(FIXTURES)) return [];
  return readdirSync(FIXTURES)
    .filter((f) => f.endsWith('_full.safetensors'))
    .sort()
    .flatMap((f) => {
      const file = decodeSafetensors(new Uint8Array(readFileSync(join(FIXTURES, f))), f);
      if (E.isLeft(file)) return [];
      const cfg = parseConfig(JSON.parse(file.right.metadata.config ?? 'null'), { target: 'model' });
      if (E.isLeft(cfg)) return [];
      return [{ file: f, ...exportModel(cfg.right) }];
    });
}

main().then(
  (code) => process.exit(code),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
