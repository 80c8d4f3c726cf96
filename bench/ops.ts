/**
 * Op benchmark (`npm run bench`): ours through the public tensor API on the webasm backend, beside
 * TensorFlow.js (wasm, cpu) and jax-js measured in the same run, at the transformer shapes of the
 * foundation issue. Prints ms, GFLOP/s for matmuls, and ours over each anchor's time (<1: we are faster).
 * The "grad" rows are forward + backward for a fixed output cotangent, input gradient only: ours
 * through vjp, tfjs through tf.grad(f)(x, dy), jax-js through jit(grad(sum(f(x) * dy))).
 * Usage: node --import tsx bench/ops.ts [--ours] [--cpu-time] [--min]
 *   --cpu-time: time everything by process CPU time (user + system) instead of wall time, for a
 *               machine shared with other jobs (they deschedule us; CPU time does not count that).
 *   --min:      report each implementation's fastest run instead of the median (more runs), the best
 *               estimate of undisturbed time when other jobs share the machine.
 */
import { readFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { gelu, layerNorm, matmul, ones, softmax, tensor, vjp, zeros, type Tensor } from '../src/index.ts';
import { adaptiveMedianMs, anchorTimings, formatRows, MATMUL_CASES, matmulRow, ROW_OP_SHAPE, seededArray, useCpuTime, useMinimum, type Row } from './anchors.ts';

const OURS = 'revgrad webasm';
const cpuTime = process.argv.includes('--cpu-time');
useCpuTime(cpuTime);
const minimum = process.argv.includes('--min');
useMinimum(minimum);

function ourRows(): Row[] {
  const rows: Row[] = [];
  for (const c of MATMUL_CASES) {
    const shapeA = c.batch === 1 ? [c.m, c.k] : [c.batch, c.m, c.k];
    const shapeB = c.batch === 1 ? [c.k, c.n] : [c.batch, c.k, c.n];
    const a = tensor(seededArray(c.batch * c.m * c.k, 1), shapeA);
    const b = tensor(seededArray(c.batch * c.k * c.n, 2), shapeB);
    rows.push(matmulRow(c, OURS, adaptiveMedianMs(() => matmul(a, b).dataSync())));
  }
  const [n, d] = ROW_OP_SHAPE;
  const x = tensor(seededArray(n * d, 3), [n, d]);
  const dy = tensor(seededArray(n * d, 6), [n, d]);
  const w = ones([d]);
  const bias = zeros([d]);
  const shape = `${n}x${d}`;
  const row = (op: string, f: () => Tensor, note?: string): Row => ({ op, shape, impl: OURS, ms: adaptiveMedianMs(() => f().dataSync()), gflops: null, note });
  const grad = (f: (v: Tensor) => Tensor) => () => {
    const [, pullback] = vjp(f, x);
    return (pullback(dy) as Tensor[])[0];
  };
  rows.push(row('softmax', () => softmax(x)));
  rows.push(row('layerNorm', () => layerNorm(x, w, bias, 1e-5)));
  rows.push(row('gelu', () => gelu(x), 'erf form'));
  rows.push(row('softmax grad', grad(softmax), 'vjp: fwd + bwd'));
  rows.push(row('layerNorm grad', grad((v) => layerNorm(v, w, bias, 1e-5)), 'vjp: fwd + bwd'));
  rows.push(row('gelu grad', grad(gelu), 'vjp: fwd + bwd, erf form'));
  return rows;
}

const cpuModel = (() => {
  try {
    return /model name\s*:\s*(.*)/.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? 'unknown';
  } catch {
    return 'unknown';
  }
})();
console.log(`CPU: ${cpuModel}; Node ${process.versions.node}; load average ${loadavg().map((l) => l.toFixed(1)).join(' ')}; timing: ${cpuTime ? 'process CPU time' : 'wall clock'}, ${minimum ? 'fastest run' : 'median run'}`);
const rows = ourRows();
if (!process.argv.includes('--ours')) rows.push(...(await anchorTimings()));
const order = [...MATMUL_CASES.map((c) => c.label), `${ROW_OP_SHAPE[0]}x${ROW_OP_SHAPE[1]}`];
const ops = ['matmul', 'softmax', 'layerNorm', 'gelu', 'softmax grad', 'layerNorm grad', 'gelu grad'];
const sorted = order.flatMap((shape) => ops.flatMap((op) => rows.filter((r) => r.shape === shape && r.op === op)));
console.log(formatRows(sorted, OURS));
