/**
 * Steady state of training: run N AdamW steps of bench-revmvit-tiny (batch 8, reversible) and print
 * RSS, heap, external/ArrayBuffer memory, the wasm memories of the generated kernels and of the GEMM
 * (KiB: they grow to the largest call and are reused) and kernels compiled every 25 steps. Flat numbers
 * after the first steps mean no leak and no recompilation.
 * Usage: node --import tsx bench/steady.ts [N=200]
 */
import { readFileSync } from 'node:fs';
import * as E from 'fp-ts/lib/Either.js';
import { kernelCacheStats } from '../src/backend/backend.ts';
import { wasmGemmMemoryBytes } from '../src/backend/wasm-gemm.ts';
import { kernelMemoryBytes } from '../src/backend/wasm-memory.ts';
import { valueAndGrad } from '../src/autodiff/tape.ts';
import { formatProblems, parseConfig } from '../src/models/mvit/config.ts';
import { buildModel } from '../src/models/mvit/model.ts';
import { key, normal, randint } from '../src/random/index.ts';
import { crossEntropy } from '../src/train/loss.ts';
import { ADAMW_DEFAULTS, adamwInit, adamwUpdate } from '../src/train/optim.ts';

const cfg = parseConfig(JSON.parse(readFileSync(new URL('./revmvit-tiny.json', import.meta.url), 'utf8')));
if (E.isLeft(cfg)) throw new Error(formatProblems(cfg.left));
const model = buildModel(cfg.right);
let params = model.init(key(0));
let state = adamwInit(params);
const x = normal(key(1), [8, 1, 8, 32, 32]);
const y = randint(key(2), 8, 0, 40);
const steps = Number(process.argv[2] ?? 200);
const mib = (b: number) => (b / 2 ** 20).toFixed(0).padStart(5);
const kib = (b: number) => (b / 1024).toFixed(0).padStart(8);
console.log(' step   rss  heap   ext  bufs  kernels  wasm KiB  gemm KiB');
for (let i = 0; i < steps; i++) {
  const [, grads] = valueAndGrad((p: typeof params) => crossEntropy(model.apply(p, x, key(3 + i), { train: true }), y))(params);
  ({ params, state } = adamwUpdate(params, grads, state, ADAMW_DEFAULTS, model.noDecay));
  if (i % 25 === 0 || i === steps - 1) {
    const m = process.memoryUsage();
    console.log(`${String(i + 1).padStart(5)} ${mib(m.rss)} ${mib(m.heapUsed)} ${mib(m.external)} ${mib(m.arrayBuffers)} ${String(kernelCacheStats().compiled).padStart(8)}  ${kib(kernelMemoryBytes())}  ${kib(wasmGemmMemoryBytes())}`);
  }
}
