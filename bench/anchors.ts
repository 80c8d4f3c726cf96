/**
 * Anchor timings: the same matmuls and row ops in tfjs (wasm and cpu backends) and @jax-js/jax (wasm),
 * so our numbers can be printed next to theirs in one run.
 *
 *   npx tsx bench/anchors.ts            # all anchors
 *   import { anchorTimings } from './anchors.ts'   # from bench/ops.ts
 *
 * Every timing is the median of warm runs and includes reading the result back to a Float32Array
 * (dataSync), as our kernels return host arrays. Inputs are created once, outside the timed region.
 * All anchors run single-threaded here: tfjs-wasm reports 1 thread in Node, and jax-js only starts
 * its worker pool when a global `Worker` exists, which Node 20 lacks.
 */
import { createRequire } from 'node:module';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { setWasmPaths } from '@tensorflow/tfjs-backend-wasm';
import { grad, init as jaxInit, jit, nn, numpy as np } from '@jax-js/jax';
import { randomArray } from '../test/matmul-helpers.ts';

export interface Row {
  op: string;
  shape: string;
  impl: string;
  ms: number;
  /** GFLOP/s for matmuls (2*batch*m*k*n / time), null for row ops. */
  gflops: number | null;
  note?: string;
}

export interface MatmulCase {
  label: string;
  batch: number;
  m: number;
  k: number;
  n: number;
}

/** Transformer-block matmul shapes (ViT-S/MViT stage sizes). */
export const MATMUL_CASES: readonly MatmulCase[] = [
  { label: '197x96 @ 96x288', batch: 1, m: 197, k: 96, n: 288 },
  { label: '3136x96 @ 96x384', batch: 1, m: 3136, k: 96, n: 384 },
  { label: '784x192 @ 192x768', batch: 1, m: 784, k: 192, n: 768 },
  { label: '4 x (785x48 @ 48x785)', batch: 4, m: 785, k: 48, n: 785 },
];

/** Rows x features for softmax, layerNorm and gelu (all along the last axis). */
export const ROW_OP_SHAPE = [3136, 384] as const;
const rowOpLabel = `${ROW_OP_SHAPE[0]}x${ROW_OP_SHAPE[1]}`;

export const matmulFlops = (c: MatmulCase): number => 2 * c.batch * c.m * c.k * c.n;

export interface TimingOptions {
  /** Keep running until both the run count and the total time are reached. */
  minRuns?: number;
  minMs?: number;
  warmup?: number;
}

/**
 * The clock of every timing here: wall time, or (`useCpuTime(true)`, the benches' `--cpu-time`) the
 * process's user + system CPU time, which other jobs on a shared machine disturb far less (they
 * deschedule us, which wall time counts and CPU time does not). CPU time sums all threads (GC helpers
 * included) and Linux accounts it in scheduler ticks (~4 ms), so with it each sample is the mean of as
 * many calls as fill SAMPLE_MS of wall time.
 */
let cpuClock = false;
const cpuNow = (): number => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};
const SAMPLE_MS = 60;

export function useCpuTime(on: boolean): void {
  cpuClock = on;
}

/**
 * The statistic of the timed samples: the median, or (`useMinimum(true)`, the benches' `--min`) the
 * fastest, which on a machine shared with other jobs is the best estimate of the undisturbed time (others
 * only ever add to a sample). Applied alike to ours and every anchor.
 */
let pick = (sorted: number[]): number => sorted[sorted.length >> 1];

export function useMinimum(on: boolean): void {
  pick = on ? (sorted) => sorted[0] : (sorted) => sorted[sorted.length >> 1];
}

/** One sample in ms: a single call's wall time, or the mean CPU time of the calls filling SAMPLE_MS. */
function sample(fn: () => unknown): number {
  if (!cpuClock) {
    const t0 = performance.now();
    fn();
    return performance.now() - t0;
  }
  const w0 = performance.now();
  const c0 = cpuNow();
  let calls = 0;
  do {
    fn();
    calls++;
  } while (performance.now() - w0 < SAMPLE_MS);
  return (cpuNow() - c0) / calls;
}

/**
 * Median (or minimum, see useMinimum) time in ms of `fn` after `warmup` untimed calls, and at least
 * WARM_MS of untimed calls when `warmup` > 0: V8 compiles WebAssembly with its baseline compiler first
 * and tiers hot functions up later (our softmax took 8.7, 5.6, then 3.9 ms over its first 60 calls), so a
 * couple of calls do not reach the steady state. Ours and every anchor get the same warm-up.
 */
const WARM_MS = 500;
export function medianMs(fn: () => unknown, { minRuns = 5, minMs = 300, warmup = 2 }: TimingOptions = {}): number {
  const w0 = performance.now();
  for (let i = 0; i < warmup || (warmup > 0 && performance.now() - w0 < WARM_MS); i++) fn();
  const times: number[] = [];
  const start = performance.now();
  while (times.length < minRuns || performance.now() - start < minMs) times.push(sample(fn));
  times.sort((x, y) => x - y);
  return pick(times);
}

/** Slow implementations (hundreds of ms per call) get fewer runs to keep a bench under 2 minutes. */
export function adaptiveMedianMs(fn: () => unknown): number {
  const t0 = performance.now();
  fn();
  const once = performance.now() - t0;
  return once > 100 ? medianMs(fn, { minRuns: 3, minMs: 0, warmup: 0 }) : medianMs(fn);
}

/** Deterministic values in [-1, 1) (the tests' xorshift, so benches and tests draw the same data). */
export const seededArray = randomArray;

export const matmulRow = (c: MatmulCase, impl: string, ms: number, note?: string): Row => ({
  op: 'matmul', shape: c.label, impl, ms, gflops: matmulFlops(c) / ms / 1e6, note,
});

// ---------------------------------------------------------------------------------------------
// tfjs (functional API: chained tensor methods need a separate side-effect import)

let wasmPathsSet = false;

async function useTfBackend(name: 'wasm' | 'cpu'): Promise<void> {
  if (name === 'wasm' && !wasmPathsSet) {
    // In Node the wasm binaries load from the package's dist folder on disk.
    const require = createRequire(import.meta.url);
    const dist = path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm'));
    setWasmPaths(dist + path.sep);
    wasmPathsSet = true;
  }
  if (!(await tf.setBackend(name))) throw new Error(`tfjs backend '${name}' failed to initialise`);
  await tf.ready();
}

function timeTf(make: () => tf.Tensor): number {
  return adaptiveMedianMs(() => {
    const out = make();
    out.dataSync();
    out.dispose();
  });
}

function tfMatmulRows(backend: 'wasm' | 'cpu'): Row[] {
  const impl = `tfjs-${backend}`;
  const rows: Row[] = [];
  for (const c of MATMUL_CASES) {
    const a = tf.tensor(seededArray(c.batch * c.m * c.k, 1), [c.batch, c.m, c.k]);
    const b = tf.tensor(seededArray(c.batch * c.k * c.n, 2), [c.batch, c.k, c.n]);
    if (c.batch === 1) {
      const a2 = tf.reshape(a, [c.m, c.k]) as tf.Tensor2D;
      const b2 = tf.reshape(b, [c.k, c.n]) as tf.Tensor2D;
      rows.push(matmulRow(c, impl, timeTf(() => tf.matMul(a2, b2))));
      tf.dispose([a2, b2]);
    } else {
      rows.push(matmulRow(c, impl, timeTf(() => tf.matMul(a as tf.Tensor3D, b as tf.Tensor3D)), 'one batched matMul'));
      // tfjs-wasm only sends 2D matmuls to XNNPACK, so a per-batch loop is its fast path.
      const as = tf.unstack(a) as tf.Tensor2D[];
      const bs = tf.unstack(b) as tf.Tensor2D[];
      rows.push(matmulRow(c, `${impl} per-batch 2D`, timeTf(() => tf.tidy(() => tf.stack(as.map((x, i) => tf.matMul(x, bs[i])))))));
      tf.dispose([...as, ...bs]);
    }
    tf.dispose([a, b]);
  }
  return rows;
}

function tfLayerNorm(x: tf.Tensor2D, gamma: tf.Tensor1D, beta: tf.Tensor1D): tf.Tensor {
  return tf.tidy(() => {
    const { mean, variance } = tf.moments(x, -1, true);
    return tf.add(tf.mul(tf.mul(tf.sub(x, mean), tf.rsqrt(tf.add(variance, 1e-5))), gamma), beta);
  });
}

/** GELU, tanh approximation, composed from ops (tfjs-core has no gelu op). */
function tfGelu(x: tf.Tensor): tf.Tensor {
  return tf.tidy(() => {
    const inner = tf.mul(tf.add(x, tf.mul(tf.pow(x, 3), 0.044715)), Math.sqrt(2 / Math.PI));
    return tf.mul(tf.mul(x, 0.5), tf.add(tf.tanh(inner), 1));
  });
}

/*
 * Gradient anchors for tfjs: its Node bundle of tfjs-core registers no gradients (the `@tensorflow/tfjs`
 * umbrella does, and tfjs-core's ESM files cannot be imported by Node), so tf.grad is unavailable here.
 * These compose forward + backward from tfjs ops: for softmax exactly the ops of tfjs's Softmax_grad;
 * for layerNorm and GELU the closed-form input gradients, fewer ops than tf.grad would run through the
 * composed forward, so the anchor is if anything faster than tfjs's own gradient.
 */
function tfSoftmaxVjp(x: tf.Tensor, dy: tf.Tensor): tf.Tensor {
  return tf.tidy(() => {
    const y = tf.softmax(x);
    const dyTimesY = tf.mul(dy, y);
    return tf.sub(dyTimesY, tf.mul(tf.sum(dyTimesY, -1, true), y));
  });
}

function tfLayerNormVjp(x: tf.Tensor2D, dy: tf.Tensor, gamma: tf.Tensor1D): tf.Tensor {
  return tf.tidy(() => {
    const { mean, variance } = tf.moments(x, -1, true);
    const rstd = tf.rsqrt(tf.add(variance, 1e-5));
    const xhat = tf.mul(tf.sub(x, mean), rstd);
    const dxhat = tf.mul(dy, gamma);
    return tf.mul(rstd, tf.sub(tf.sub(dxhat, tf.mean(dxhat, -1, true)), tf.mul(xhat, tf.mean(tf.mul(dxhat, xhat), -1, true))));
  });
}

function tfGeluVjp(x: tf.Tensor, dy: tf.Tensor): tf.Tensor {
  return tf.tidy(() => {
    const c = Math.sqrt(2 / Math.PI);
    const x2 = tf.square(x);
    const t = tf.tanh(tf.mul(tf.mul(x, tf.add(tf.mul(x2, 0.044715), 1)), c));
    const dt = tf.mul(tf.sub(1, tf.square(t)), tf.mul(tf.add(tf.mul(x2, 3 * 0.044715), 1), c));
    return tf.mul(dy, tf.add(tf.mul(tf.add(t, 1), 0.5), tf.mul(tf.mul(x, 0.5), dt)));
  });
}

function tfRowOpRows(backend: 'wasm' | 'cpu'): Row[] {
  const impl = `tfjs-${backend}`;
  const [r, c] = ROW_OP_SHAPE;
  const x = tf.tensor2d(seededArray(r * c, 3), [r, c]);
  const gamma = tf.tensor1d(seededArray(c, 4));
  const beta = tf.tensor1d(seededArray(c, 5));
  const g = tf.tensor2d(seededArray(r * c, 6), [r, c]);
  const rows: Row[] = [
    { op: 'softmax', shape: rowOpLabel, impl, ms: timeTf(() => tf.softmax(x)), gflops: null },
    { op: 'layerNorm', shape: rowOpLabel, impl, ms: timeTf(() => tfLayerNorm(x, gamma, beta)), gflops: null, note: 'moments + ops, with gamma/beta' },
    { op: 'gelu', shape: rowOpLabel, impl, ms: timeTf(() => tfGelu(x)), gflops: null, note: 'tanh form, composed' },
    { op: 'softmax grad', shape: rowOpLabel, impl, ms: timeTf(() => tfSoftmaxVjp(x, g)), gflops: null, note: 'fwd + bwd composed (as tfjs Softmax_grad)' },
    { op: 'layerNorm grad', shape: rowOpLabel, impl, ms: timeTf(() => tfLayerNormVjp(x, g, gamma)), gflops: null, note: 'fwd + bwd composed (closed form)' },
    { op: 'gelu grad', shape: rowOpLabel, impl, ms: timeTf(() => tfGeluVjp(x, g)), gflops: null, note: 'fwd + bwd composed (tanh form)' },
  ];
  tf.dispose([x, g, gamma, beta]);
  return rows;
}

async function tfRows(ops: Set<AnchorOp>): Promise<Row[]> {
  const rows: Row[] = [];
  for (const backend of ['wasm', 'cpu'] as const) {
    await useTfBackend(backend);
    if (ops.has('matmul')) rows.push(...tfMatmulRows(backend));
    if (ops.has('rowops')) rows.push(...tfRowOpRows(backend));
  }
  return rows;
}

// ---------------------------------------------------------------------------------------------
// jax-js (arrays are reference counted: `.ref` keeps an input alive, dataSync consumes the result)

function timeJax(make: () => np.Array): number {
  return adaptiveMedianMs(() => make().dataSync());
}

function jaxMatmulRows(): Row[] {
  const rows: Row[] = [];
  for (const c of MATMUL_CASES) {
    const aData = seededArray(c.batch * c.m * c.k, 1);
    const bData = seededArray(c.batch * c.k * c.n, 2);
    const a = np.array(aData).reshape(c.batch === 1 ? [c.m, c.k] : [c.batch, c.m, c.k]);
    const b = np.array(bData).reshape(c.batch === 1 ? [c.k, c.n] : [c.batch, c.k, c.n]);
    rows.push(matmulRow(c, 'jax-js wasm', timeJax(() => np.matmul(a.ref, b.ref)), c.batch > 1 ? 'one batched matmul' : undefined));
    a.dispose();
    b.dispose();
    if (c.batch > 1) rows.push(jaxPerBatchRow(c, aData, bData));
  }
  return rows;
}

/** The batched case as one 2D matmul per batch entry, stacked (jax-js's batched matmul is slow here). */
function jaxPerBatchRow(c: MatmulCase, aData: Float32Array, bData: Float32Array): Row {
  const slice = (data: Float32Array, z: number, rows: number, cols: number) =>
    np.array(data.slice(z * rows * cols, (z + 1) * rows * cols)).reshape([rows, cols]);
  const as = Array.from({ length: c.batch }, (_, z) => slice(aData, z, c.m, c.k));
  const bs = Array.from({ length: c.batch }, (_, z) => slice(bData, z, c.k, c.n));
  const ms = timeJax(() => np.stack(as.map((x, z) => np.matmul(x.ref, bs[z].ref))));
  for (const x of [...as, ...bs]) x.dispose();
  return matmulRow(c, 'jax-js wasm per-batch 2D', ms);
}

function jaxRowOpRows(): Row[] {
  const [r, c] = ROW_OP_SHAPE;
  const x = np.array(seededArray(r * c, 3)).reshape([r, c]);
  const gamma = np.array(seededArray(c, 4));
  const beta = np.array(seededArray(c, 5));
  const dy = np.array(seededArray(r * c, 6)).reshape([r, c]);
  const softmaxF = (v: np.Array) => nn.softmax(v, -1);
  const layerNormF = (v: np.Array, g: np.Array, bb: np.Array) => nn.standardize(v, -1).mul(g).add(bb);
  const geluF = (v: np.Array) => nn.gelu(v, { approximate: true });
  const softmax = jit(softmaxF);
  const layerNorm = jit(layerNormF);
  const gelu = jit(geluF);
  // Gradient rows: jit(grad(sum(f(x) * dy))) = the input gradient for cotangent dy, forward included.
  const softmaxGrad = jit(grad((v: np.Array, d: np.Array) => softmaxF(v).mul(d).sum()));
  const layerNormGrad = jit(grad((v: np.Array, d: np.Array, g: np.Array, bb: np.Array) => layerNormF(v, g, bb).mul(d).sum()));
  const geluGrad = jit(grad((v: np.Array, d: np.Array) => geluF(v).mul(d).sum()));
  const impl = 'jax-js wasm';
  const rows: Row[] = [
    { op: 'softmax', shape: rowOpLabel, impl, ms: timeJax(() => softmax(x.ref)), gflops: null, note: 'jit(nn.softmax)' },
    { op: 'layerNorm', shape: rowOpLabel, impl, ms: timeJax(() => layerNorm(x.ref, gamma.ref, beta.ref)), gflops: null, note: 'jit(nn.standardize * gamma + beta)' },
    { op: 'gelu', shape: rowOpLabel, impl, ms: timeJax(() => gelu(x.ref)), gflops: null, note: 'jit(nn.gelu approximate)' },
    { op: 'softmax grad', shape: rowOpLabel, impl, ms: timeJax(() => softmaxGrad(x.ref, dy.ref)), gflops: null, note: 'jit(grad(sum(f(x) * dy)))' },
    { op: 'layerNorm grad', shape: rowOpLabel, impl, ms: timeJax(() => layerNormGrad(x.ref, dy.ref, gamma.ref, beta.ref)), gflops: null, note: 'jit(grad(sum(f(x) * dy)))' },
    { op: 'gelu grad', shape: rowOpLabel, impl, ms: timeJax(() => geluGrad(x.ref, dy.ref)), gflops: null, note: 'jit(grad(sum(f(x) * dy)))' },
  ];
  x.dispose();
  dy.dispose();
  gamma.dispose();
  beta.dispose();
  return rows;
}

async function jaxRows(ops: Set<AnchorOp>): Promise<Row[]> {
  const devices = await jaxInit('wasm');
  if (!devices.includes('wasm')) {
    return [{ op: 'all', shape: '-', impl: 'jax-js wasm', ms: NaN, gflops: null, note: `wasm device unavailable (got ${devices.join(', ')})` }];
  }
  const rows: Row[] = [];
  if (ops.has('matmul')) rows.push(...jaxMatmulRows());
  if (ops.has('rowops')) rows.push(...jaxRowOpRows());
  return rows;
}

// ---------------------------------------------------------------------------------------------

export type AnchorOp = 'matmul' | 'rowops';

/** Timings for every anchor library; `ops` picks matmuls, row ops (softmax, layerNorm, gelu) or both. */
export async function anchorTimings(ops: readonly AnchorOp[] = ['matmul', 'rowops']): Promise<Row[]> {
  const wanted = new Set(ops);
  return [...(await tfRows(wanted)), ...(await jaxRows(wanted))];
}

/** A plain-text table; with `baselineImpl` (ours), adds ours ms / this row's ms (>1: ours is that many times slower). */
export function formatRows(rows: readonly Row[], baselineImpl?: string): string {
  const base = new Map<string, number>();
  if (baselineImpl !== undefined) {
    for (const r of rows) if (r.impl === baselineImpl) base.set(`${r.op}|${r.shape}`, r.ms);
  }
  const header = ['op', 'shape', 'impl', 'ms', 'GFLOP/s', baselineImpl ? `${baselineImpl} ms / this ms` : '', 'note'];
  const lines = rows.map((r) => {
    const b = base.get(`${r.op}|${r.shape}`);
    return [
      r.op, r.shape, r.impl, r.ms.toFixed(2), r.gflops === null ? '' : r.gflops.toFixed(2),
      b === undefined ? '' : (b / r.ms).toFixed(2), r.note ?? '',
    ];
  });
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i].length)));
  return [header, ...lines].map((l) => l.map((cell, i) => cell.padEnd(widths[i])).join('  ').trimEnd()).join('\n');
}

const runAlone = process.argv[1] !== undefined && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href;
if (runAlone) {
  const rows = await anchorTimings();
  console.log(formatRows(rows));
}
