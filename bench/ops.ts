/**
 * Op benchmark (`npm run bench`): ours through the public tensor API on the webasm backend, beside
 * TensorFlow.js (wasm, cpu) and jax-js measured in the same run, at the transformer shapes of the
 * foundation issue. Prints ms, GFLOP/s for matmuls, and each anchor's time over ours (>1: we are faster).
 * Usage: node --import tsx bench/ops.ts [--ours]
 */
import { gelu, layerNorm, matmul, ones, softmax, tensor, zeros } from '../src/index.ts';
import { adaptiveMedianMs, anchorTimings, formatRows, MATMUL_CASES, matmulRow, ROW_OP_SHAPE, seededArray, type Row } from './anchors.ts';

const OURS = 'revgrad webasm';

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
  const w = ones([d]);
  const bias = zeros([d]);
  const shape = `${n}x${d}`;
  rows.push({ op: 'softmax', shape, impl: OURS, ms: adaptiveMedianMs(() => softmax(x).dataSync()), gflops: null });
  rows.push({ op: 'layerNorm', shape, impl: OURS, ms: adaptiveMedianMs(() => layerNorm(x, w, bias, 1e-5).dataSync()), gflops: null });
  rows.push({ op: 'gelu', shape, impl: OURS, ms: adaptiveMedianMs(() => gelu(x).dataSync()), gflops: null, note: 'erf form' });
  return rows;
}

const rows = ourRows();
if (!process.argv.includes('--ours')) rows.push(...(await anchorTimings()));
const order = [...MATMUL_CASES.map((c) => c.label), `${ROW_OP_SHAPE[0]}x${ROW_OP_SHAPE[1]}`];
const sorted = order.flatMap((shape) => ['matmul', 'softmax', 'layerNorm', 'gelu'].flatMap((op) => rows.filter((r) => r.shape === shape && r.op === op)));
console.log(formatRows(sorted, OURS));
