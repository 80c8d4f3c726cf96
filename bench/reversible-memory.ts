/**
 * Memory of a depth-D reversible sequence in 'reversible' vs 'store' mode, with the library's own
 * accounting (nothing estimated):
 *   residual bytes = pullback.residualBytes of vjp(loss): bytes of the buffers kept for the backward
 *                    pass (unique buffers, the primals - params and inputs - excluded);
 *   peak bytes     = measureMemory(() => valueAndGrad(loss)(...)).peakBytes: peak live bytes of all
 *                    buffers allocated during forward + backward (each freed at its last use).
 *
 *   node --import tsx bench/reversible-memory.ts [--json] [--backend=webasm|cpu] [--update-docs]
 *
 * --update-docs rewrites the table between the memory-table markers in docs/reversible.md (webasm);
 * test/docs-reversible.test.ts fails when that table no longer matches what this measures.
 *
 * Each block: F = drop-path(dropout(attention(x))), G = drop-path(MLP(x)) on x [B, T, C].
 */
import { add, div, matmul, measureMemory, mul, softmax, sum, valueAndGrad, vjp, withBackend, type BackendName, type Tensor } from '../src/index.ts';
import { foldIn, key, normal, split, type Key } from '../src/random/index.ts';
import { dropout, dropPath, linear, mlp, type LinearParams } from '../src/nn/index.ts';
import { reversible, sequence, type Branch } from '../src/reversible/index.ts';
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const SHAPE = [2, 16, 32] as const; // [B, T, C]
export const DEPTHS = [1, 2, 4, 8, 16, 32] as const;
const [, , C] = SHAPE;
const TRAIN = { train: true };

const lin = (k: Key, out: number, inp: number): LinearParams => {
  const [kw, kb] = split(k);
  return { weight: mul(normal(kw, [out, inp]), 1 / Math.sqrt(inp)), bias: mul(normal(kb, [out]), 0.1) };
};

interface AttnParams {
  readonly q: LinearParams;
  readonly k: LinearParams;
  readonly v: LinearParams;
  readonly o: LinearParams;
}
const attention: Branch<AttnParams> = (p, x, k) => {
  const scores = div(matmul(linear(p.q, x), linear(p.k, x), { transB: true }), Math.sqrt(C));
  const attn = dropout(foldIn(k, 0), 0.1, softmax(scores, -1), TRAIN);
  return dropPath(foldIn(k, 1), 0.1, linear(p.o, matmul(attn, linear(p.v, x))), TRAIN);
};
const ffn: Branch<{ fc1: LinearParams; fc2: LinearParams }> = (p, x, k) => dropPath(foldIn(k, 1), 0.1, mlp(p, x, foldIn(k, 0), { drop: 0.1 }), TRAIN);

function blockParams(k: Key) {
  const ks = split(k, 6);
  return { F: { q: lin(ks[0], C, C), k: lin(ks[1], C, C), v: lin(ks[2], C, C), o: lin(ks[3], C, C) }, G: { fc1: lin(ks[4], 2 * C, C), fc2: lin(ks[5], C, 2 * C) } };
}

export interface Row {
  readonly depth: number;
  readonly reversible: { readonly residualBytes: number; readonly peakBytes: number };
  readonly store: { readonly residualBytes: number; readonly peakBytes: number };
}

export function measure(depth: number): Row {
  const seq = sequence(Array.from({ length: depth }, () => reversible(attention, ffn)));
  const params = split(key(1), depth).map(blockParams);
  const x1 = normal(key(2), SHAPE);
  const x2 = normal(key(3), SHAPE);
  const one = (mode: 'reversible' | 'store') => {
    const loss = (P: typeof params, a: Tensor, b: Tensor) => {
      const [y1, y2] = seq.forward(P, [a, b], key(4), { mode });
      return sum(mul(y1, add(y2, 1)));
    };
    const residualBytes = vjp(loss, params, x1, x2)[1].residualBytes;
    const peakBytes = measureMemory(() => valueAndGrad(loss, [0, 1, 2])(params, x1, x2)).peakBytes;
    return { residualBytes, peakBytes };
  };
  return { depth, reversible: one('reversible'), store: one('store') };
}


export function table(rows: readonly Row[]): string {
  const head = '| depth | residual bytes, reversible | residual bytes, store | store / reversible | peak bytes, reversible | peak bytes, store | store / reversible |';
  const rule = '|---:|---:|---:|---:|---:|---:|---:|';
  const lines = rows.map(
    (r) =>
      `| ${r.depth} | ${r.reversible.residualBytes} | ${r.store.residualBytes} | ${(r.store.residualBytes / r.reversible.residualBytes).toFixed(1)}x | ${r.reversible.peakBytes} | ${r.store.peakBytes} | ${(r.store.peakBytes / r.reversible.peakBytes).toFixed(1)}x |`,
  );
  return [head, rule, ...lines].join('\n');
}

export const DOCS = fileURLToPath(new URL('../docs/reversible.md', import.meta.url));
export const TABLE_MARKERS = /(<!-- memory-table:start -->\n)([\s\S]*?)(\n<!-- memory-table:end -->)/;

const isMain = import.meta.url === `file://${process.argv[1]}` || process.argv[1]?.endsWith('reversible-memory.ts');
if (isMain) {
  const json = process.argv.includes('--json');
  const backendArg = process.argv.find((a) => a.startsWith('--backend='));
  const backend = (backendArg?.slice('--backend='.length) ?? 'webasm') as BackendName;
  const rows = withBackend(backend, () => DEPTHS.map(measure));
  if (process.argv.includes('--update-docs')) {
    if (backend !== 'webasm') throw new Error('--update-docs: the docs table is measured on webasm');
    const doc = readFileSync(DOCS, 'utf8');
    if (!TABLE_MARKERS.test(doc)) throw new Error(`${DOCS}: memory-table markers not found`);
    writeFileSync(DOCS, doc.replace(TABLE_MARKERS, (_m, a: string, _t: string, b: string) => `${a}${table(rows)}${b}`));
    console.log(`updated the memory table in ${DOCS}`);
  }
  if (json) {
    console.log(JSON.stringify({ backend, shape: SHAPE, rows }, null, 2));
  } else {
    console.log(`reversible sequence memory, x1, x2: [${SHAPE.join(', ')}] float32, F = attention, G = MLP (2C hidden), dropout and drop-path 0.1, backend ${backend}`);
    console.log(table(rows));
  }
}
