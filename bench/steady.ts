/**
 * Steady state of training: run N AdamW steps of bench-revmvit-tiny (batch 8, reversible; the jitted
 * step `revgrad train` runs, or eager with --no-jit) and print RSS, heap, external/ArrayBuffer memory, the
 * wasm memories of the generated kernels and of the GEMM (KiB: they grow to the largest call and are
 * reused) and kernels compiled every 25 steps. Flat numbers after the first steps mean no leak and no
 * recompilation.
 * Usage: node --import tsx bench/steady.ts [N=200] [--no-jit]
 */
import { readFileSync } from 'node:fs';
import * as E from 'fp-ts/lib/Either.js';
import { kernelCacheStats } from '../src/backend/backend.ts';
import { wasmGemmMemoryBytes } from '../src/backend/wasm-gemm.ts';
import { kernelMemoryBytes } from '../src/backend/wasm-memory.ts';
import { formatProblems, parseConfig } from '../src/models/mvit/config.ts';
import { buildModel } from '../src/models/mvit/model.ts';
import { key, normal, randint } from '../src/random/index.ts';
import { tensor } from '../src/tensor/tensor.ts';
import { adamw } from '../src/train/optim.ts';
import { makeTrainStep } from '../src/train/step.ts';

const cfg = parseConfig(JSON.parse(readFileSync(new URL('./revmvit-tiny.json', import.meta.url), 'utf8')));
if (E.isLeft(cfg)) throw new Error(formatProblems(cfg.left));
const model = buildModel(cfg.right);
const optimizer = adamw({ noDecay: (n) => model.noDecay(n) });
let params = model.init(key(0));
let optState = optimizer.init(params);
const x = normal(key(1), [8, 1, 8, 32, 32]);
const y = tensor(Float32Array.from(randint(key(2), 8, 0, 40)), [8]);
const steps = Number(process.argv.slice(2).find((a) => /^\d+$/.test(a)) ?? 200);
const step = makeTrainStep(model, optimizer, { mode: 'reversible', jit: !process.argv.includes('--no-jit') });
const mib = (b: number) => (b / 2 ** 20).toFixed(0).padStart(5);
const kib = (b: number) => (b / 1024).toFixed(0).padStart(8);
console.log(' step   rss  heap   ext  bufs  kernels  wasm KiB  gemm KiB');
for (let i = 0; i < steps; i++) {
  ({ params, optState } = step(params, optState, x, y, key(3 + i)));
  if (i % 25 === 0 || i === steps - 1) {
    const m = process.memoryUsage();
    console.log(`${String(i + 1).padStart(5)} ${mib(m.rss)} ${mib(m.heapUsed)} ${mib(m.external)} ${mib(m.arrayBuffers)} ${String(kernelCacheStats().compiled).padStart(8)}  ${kib(kernelMemoryBytes())}  ${kib(wasmGemmMemoryBytes())}`);
  }
}
