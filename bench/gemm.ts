/**
 * Hand-generated wasm SIMD GEMM (src/backend/wasm-gemm.ts) against the gpu.js rows4 kernel it replaces
 * on the webasm backend and the anchors (tfjs-wasm / XNNPACK, jax-js wasm), at the foundation-bench shapes.
 *
 *   npx tsx bench/gemm.ts              # ours, rows4, tfjs-wasm, jax-js: wall-clock medians (anchors.ts helpers)
 *   npx tsx bench/gemm.ts --variants   # + the register-tiling / code-generation variants we tried
 *   npx tsx bench/gemm.ts --cpu-time   # + the same four timed by process CPU time (user + system)
 *   npx tsx bench/gemm.ts --kernel     # only the microkernel loop (compute(), packed data), every variant, CPU time
 *
 * Our times include everything a caller pays: copying A and B into wasm memory, packing, the kernel and
 * copying C out into a fresh Float32Array. Anchor times include dataSync() of the result (inputs are
 * created once). All single-threaded. `--cpu-time` exists because wall-clock medians are unreliable
 * when other processes share the 2 cores: a call that is descheduled is charged the wait, and long
 * calls are descheduled more often. CPU time skips the waits (it still sees cache sharing).
 */
import { createRequire } from 'node:module';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { setWasmPaths } from '@tensorflow/tfjs-backend-wasm';
import { init as jaxInit, numpy as np } from '@jax-js/jax';
import { withBackend } from '../src/backend/backend.ts';
import { matmulReference, matmulRows4Variant, type MatmulProblem } from '../src/backend/matmul.ts';
import {
  gemmModuleBytes, wasmGemm, wasmGemmConfig, wasmGemmWith, wasmRelaxedSimdAvailable, type WasmGemmConfig,
} from '../src/backend/wasm-gemm.ts';
import {
  MATMUL_CASES, adaptiveMedianMs, anchorTimings, formatRows, matmulRow, seededArray, type MatmulCase, type Row,
} from './anchors.ts';

const OURS = 'wasm-gemm';
const ROWS4 = 'gpu.js rows4';
const args = new Set(process.argv.slice(2));

type Gemm = (p: MatmulProblem, a: Float32Array, b: Float32Array) => Float32Array;

const problemOf = (c: MatmulCase): MatmulProblem => ({ batch: c.batch, m: c.m, k: c.k, n: c.n, transA: false, transB: false });
const inputsOf = (c: MatmulCase): [Float32Array, Float32Array] =>
  [seededArray(c.batch * c.m * c.k, 1), seededArray(c.batch * c.k * c.n, 2)];

const rows4: Gemm = (p, a, b) => withBackend('webasm', () => matmulRows4Variant(p, a, b, {}));

/** Like adaptiveMedianMs, but the median of process CPU time (user + system) per call. */
function cpuMedianMs(fn: () => unknown): number {
  const cpu = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1000; };
  let t0 = cpu();
  fn();
  const once = cpu() - t0;
  const [minRuns, minMs, warmup] = once > 100 ? [3, 0, 0] : [7, 300, 2];
  for (let i = 0; i < warmup; i++) fn();
  const times: number[] = [];
  const start = cpu();
  while (times.length < minRuns || cpu() - start < minMs) {
    t0 = cpu();
    fn();
    times.push(cpu() - t0);
  }
  times.sort((x, y) => x - y);
  return times[times.length >> 1];
}

type Timer = (fn: () => unknown) => number;

function timeOurs(impls: readonly [string, Gemm][], time: Timer): Row[] {
  const rows: Row[] = [];
  for (const c of MATMUL_CASES) {
    const p = problemOf(c);
    const [a, b] = inputsOf(c);
    for (const [name, gemm] of impls) rows.push(matmulRow(c, name, time(() => gemm(p, a, b))));
  }
  return rows;
}

/** A one-off correctness check of what we time (the full reference at 197x96x288). */
function sanityCheck(): void {
  const c = MATMUL_CASES[0];
  const p = problemOf(c);
  const [a, b] = inputsOf(c);
  const ref = matmulReference(p, a, b);
  for (const [name, gemm] of [[OURS, wasmGemm], [ROWS4, rows4]] as const) {
    const got = gemm(p, a, b);
    let scale = 0;
    let err = 0;
    for (let i = 0; i < ref.length; i++) {
      scale = Math.max(scale, Math.abs(ref[i]));
      err = Math.max(err, Math.abs(got[i] - ref[i]));
    }
    if (!(err <= 1e-5 * scale)) throw new Error(`${name}: relative error ${err / scale} at ${c.label}`);
  }
}

const isAnchor = (impl: string): boolean => impl.startsWith('tfjs-wasm') || impl.startsWith('jax-js');

/** Per shape: ours vs the best form of each anchor (tfjs-wasm and jax-js: batched call or per-batch 2D). */
function summary(rows: readonly Row[], title: string): string {
  const lines = [title, 'shape                  ours GF/s  rows4 GF/s  tfjs-wasm GF/s  jax-js GF/s  ours/tfjs  ours/jax  ours/rows4'];
  let met = true;
  for (const c of MATMUL_CASES) {
    const at = (pred: (impl: string) => boolean) =>
      Math.max(...rows.filter((r) => r.shape === c.label && pred(r.impl)).map((r) => r.gflops ?? 0));
    const ours = at((i) => i === OURS);
    const r4 = at((i) => i === ROWS4);
    const tfjs = at((i) => i.startsWith('tfjs-wasm'));
    const jax = at((i) => i.startsWith('jax-js'));
    met &&= ours >= tfjs && ours >= jax;
    lines.push([
      c.label.padEnd(22), ours.toFixed(1).padStart(9), r4.toFixed(1).padStart(11), tfjs.toFixed(1).padStart(15),
      jax.toFixed(1).padStart(12), (ours / tfjs).toFixed(2).padStart(10), (ours / jax).toFixed(2).padStart(9),
      (ours / r4).toFixed(2).padStart(11),
    ].join(' '));
  }
  lines.push(`target (ours >= tfjs-wasm and >= jax-js at every shape): ${met ? 'met' : 'NOT met'}`);
  return lines.join('\n');
}

// ---------------------------------------------------------------------------------------------
// CPU-time anchors (--cpu-time): the same calls as anchors.ts, timed with cpuMedianMs

async function cpuTimeAnchors(): Promise<Row[]> {
  const rows: Row[] = [];
  const require = createRequire(import.meta.url);
  setWasmPaths(path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm')) + path.sep);
  if (!(await tf.setBackend('wasm'))) throw new Error('tfjs wasm backend failed to initialise');
  await tf.ready();
  for (const c of MATMUL_CASES) {
    const [aData, bData] = inputsOf(c);
    const as = Array.from({ length: c.batch }, (_, z) => tf.tensor2d(aData.subarray(z * c.m * c.k, (z + 1) * c.m * c.k), [c.m, c.k]));
    const bs = Array.from({ length: c.batch }, (_, z) => tf.tensor2d(bData.subarray(z * c.k * c.n, (z + 1) * c.k * c.n), [c.k, c.n]));
    const ms = cpuMedianMs(() => {
      const out = c.batch === 1 ? tf.matMul(as[0], bs[0]) : tf.tidy(() => tf.stack(as.map((x, z) => tf.matMul(x, bs[z]))));
      out.dataSync();
      out.dispose();
    });
    rows.push(matmulRow(c, c.batch === 1 ? 'tfjs-wasm' : 'tfjs-wasm per-batch 2D', ms));
    tf.dispose([...as, ...bs]);
  }
  const devices = await jaxInit('wasm');
  if (!devices.includes('wasm')) return rows;
  for (const c of MATMUL_CASES) {
    const [aData, bData] = inputsOf(c);
    const as = Array.from({ length: c.batch }, (_, z) => np.array(aData.slice(z * c.m * c.k, (z + 1) * c.m * c.k)).reshape([c.m, c.k]));
    const bs = Array.from({ length: c.batch }, (_, z) => np.array(bData.slice(z * c.k * c.n, (z + 1) * c.k * c.n)).reshape([c.k, c.n]));
    const ms = cpuMedianMs(() => (c.batch === 1
      ? np.matmul(as[0].ref, bs[0].ref)
      : np.stack(as.map((x, z) => np.matmul(x.ref, bs[z].ref)))).dataSync());
    rows.push(matmulRow(c, c.batch === 1 ? 'jax-js wasm' : 'jax-js wasm per-batch 2D', ms));
    for (const x of [...as, ...bs]) x.dispose();
  }
  return rows;
}

// ---------------------------------------------------------------------------------------------

const VARIANTS: readonly [string, WasmGemmConfig][] = [
  ['4x8 unroll 2', { mr: 4, nr: 8, unroll: 2 }],
  ['4x8 unroll 4', { mr: 4, nr: 8, unroll: 4 }],
  ['4x8 ordering stores every 2 rows', { mr: 4, nr: 8, unroll: 1, fence: 2 }],
  ['3x12 ordering store per row', { mr: 3, nr: 12, unroll: 1, fence: 1 }],
  ['3x12', { mr: 3, nr: 12, unroll: 1 }],
  ['5x8', { mr: 5, nr: 8, unroll: 1 }],
  ['6x8', { mr: 6, nr: 8, unroll: 1 }],
  ['4x12', { mr: 4, nr: 12, unroll: 1 }],
  ['2x16', { mr: 2, nr: 16, unroll: 1 }],
  ['4x12 B reloaded per use', { mr: 4, nr: 12, unroll: 1, reloadB: true }],
];

/**
 * The compute() export alone (packed operands already in wasm memory, C stored row-major in wasm
 * memory): what the register tiling and code generation reach without copies, packing or allocation.
 * One batch entry per shape; CPU-time medians of repeated calls.
 */
function kernelOnly(configs: readonly [string, WasmGemmConfig][]): void {
  interface Compute { memory: WebAssembly.Memory; compute(...args: number[]): void }
  const MB = 2 ** 20;
  const header = ['shape (one batch entry)', ...configs.map(([name]) => name)];
  const lines: string[][] = [];
  const instances = configs.map(([, cfg]) => {
    const ex = new WebAssembly.Instance(new WebAssembly.Module(gemmModuleBytes(cfg)), {}).exports as unknown as Compute;
    ex.memory.grow((40 * MB) / 65536);
    new Float32Array(ex.memory.buffer).set(seededArray((40 * MB) / 4, 3));
    return ex;
  });
  for (const c of MATMUL_CASES) {
    const line = [`${c.m}x${c.k} @ ${c.k}x${c.n}`];
    for (const ex of instances) {
      // packed A at 0, packed B at 8 MB, C at 16 MB, scratch at 32 MB
      const ms = cpuMedianMs(() => ex.compute(0, 8 * MB, 16 * MB, c.m, c.n, c.k, 32 * MB));
      line.push((2 * c.m * c.k * c.n / ms / 1e6).toFixed(1));
    }
    lines.push(line);
  }
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i].length)));
  console.log('compute() alone, GFLOP/s (CPU time)');
  console.log([header, ...lines].map((l) => l.map((x, i) => x.padEnd(widths[i])).join('  ')).join('\n'));
}

if (args.has('--kernel')) {
  const configs: [string, WasmGemmConfig][] = [['4x8 (default)', wasmGemmConfig()], ...VARIANTS];
  if (wasmRelaxedSimdAvailable()) {
    configs.push(['4x8 fma', { mr: 4, nr: 8, unroll: 1, fma: true }], ['3x12 fma, ordering store per row', { mr: 3, nr: 12, unroll: 1, fence: 1, fma: true }]);
  }
  kernelOnly(configs);
  process.exit(0);
}

sanityCheck();
const config = wasmGemmConfig();
console.log(`wasm-gemm: ${config.mr}x${config.nr} tile, unroll ${config.unroll}, ${config.fma ? 'relaxed_madd (FMA)' : 'f32x4.mul + f32x4.add'}` +
  `${wasmRelaxedSimdAvailable() ? '' : ' (relaxed SIMD unavailable in this engine)'}; Node ${process.version}\n`);

const impls: [string, Gemm][] = [[OURS, wasmGemm], [ROWS4, rows4]];
if (args.has('--variants')) for (const [name, cfg] of VARIANTS) impls.push([`wasm-gemm ${name}`, wasmGemmWith(cfg)]);

// Ours before and after the anchors: the reported time is the mean of the two passes (drift check).
const before = timeOurs(impls, adaptiveMedianMs);
const anchors = (await anchorTimings(['matmul'])).filter((r) => isAnchor(r.impl));
const after = timeOurs(impls, adaptiveMedianMs);
const ours = before.map((r, i) => {
  const ms = (r.ms + after[i].ms) / 2;
  return { ...r, ms, gflops: (r.gflops ?? 0) * r.ms / ms, note: `passes ${r.ms.toFixed(2)} / ${after[i].ms.toFixed(2)} ms` };
});
const wall = [...ours, ...anchors];
const byShape = MATMUL_CASES.flatMap((c) => wall.filter((r) => r.shape === c.label));
console.log('Wall clock (median of warm runs, ms; ratio column = ours ms / this ms, <1: ours faster)');
console.log(formatRows(byShape, OURS));
console.log();
console.log(summary(wall, 'Wall clock, best form of each anchor:'));

if (args.has('--cpu-time')) {
  const cpuRows = [...timeOurs([[OURS, wasmGemm], [ROWS4, rows4]], cpuMedianMs), ...(await cpuTimeAnchors())];
  console.log();
  console.log('CPU time (median per call, ms)');
  console.log(formatRows(MATMUL_CASES.flatMap((c) => cpuRows.filter((r) => r.shape === c.label)), OURS));
  console.log();
  console.log(summary(cpuRows, 'CPU time, best form of each anchor:'));
}
