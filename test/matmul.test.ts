import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fc from 'fast-check';
import { gpuFor, kernelCacheStats, withBackend, type BackendName } from '../src/backend/backend.ts';
import { matmulKernelRun, setWasmGemm, type MatmulProblem } from '../src/backend/matmul.ts';
import { checkGemm, matmulProblem, TRANSPOSES } from './matmul-helpers.ts';

const BACKENDS: BackendName[] = ['webasm', 'cpu'];

function checkProblem(backend: BackendName, p: MatmulProblem, seed: number): void {
  checkGemm((q, a, b) => withBackend(backend, () => matmulKernelRun(q, a, b)), p, seed, backend);
}


for (const backend of BACKENDS) {
  test(`${backend}: tiny and edge shapes, all transposes`, () => {
    const shapes = [
      [1, 1, 1, 1], [1, 1, 5, 1], [1, 3, 1, 5], [1, 5, 7, 3], [1, 4, 4, 4], [1, 6, 2, 9], [3, 1, 1, 1], [2, 7, 1, 13],
    ];
    for (const [batch, m, k, n] of shapes) {
      for (const [transA, transB] of TRANSPOSES) checkProblem(backend, { batch, m, k, n, transA, transB }, m * 31 + k);
    }
  });

  test(`${backend}: odd sizes, batch and odd K (unroll tail)`, () => {
    for (const [transA, transB] of TRANSPOSES) {
      checkProblem(backend, { batch: 3, m: 37, k: 19, n: 29, transA, transB }, 11);
      checkProblem(backend, { batch: 1, m: 50, k: 64, n: 33, transA, transB }, 12);
    }
    // a transformer-sized product (ViT-S qkv projection, one head group)
    checkProblem(backend, { batch: 1, m: 197, k: 96, n: 288, transA: false, transB: true }, 13);
  });

  test(`${backend}: random problems`, () => {
    const problem = matmulProblem(24, 40, 24);
    fc.assert(fc.property(problem, fc.integer({ min: 1, max: 1e6 }), (p, seed) => checkProblem(backend, p, seed)), {
      numRuns: 40,
      seed: 42,
    });
  });

  test(`${backend}: K = 1024 stays within rtol 1e-5`, () => {
    checkProblem(backend, { batch: 1, m: 9, k: 1024, n: 10, transA: false, transB: true }, 5);
  });

  test(`${backend}: empty problems`, () => {
    const none = withBackend(backend, () =>
      matmulKernelRun({ batch: 2, m: 0, k: 3, n: 4, transA: false, transB: false }, new Float32Array(0), new Float32Array(24)));
    assert.is(none.length, 0);
    const zeros = withBackend(backend, () =>
      matmulKernelRun({ batch: 1, m: 2, k: 0, n: 3, transA: false, transB: false }, new Float32Array(0), new Float32Array(0)));
    assert.equal(Array.from(zeros), [0, 0, 0, 0, 0, 0]);
  });
}

test('a repeated problem reuses its compiled gpu.js kernel (a cache hit, nothing compiled) and is right both times', () => {
  const p: MatmulProblem = { batch: 2, m: 9, k: 12, n: 6, transA: true, transB: false };
  const previous = setWasmGemm(false); // the gpu.js rows4 kernel on webasm, not the wasm GEMM
  try {
    for (const backend of BACKENDS) {
      const gemm = (q: MatmulProblem, a: Float32Array, b: Float32Array) => withBackend(backend, () => matmulKernelRun(q, a, b));
      checkGemm(gemm, p, 3, `${backend}, first call`);
      const before = kernelCacheStats();
      checkGemm(gemm, p, 4, `${backend}, second call`);
      const after = kernelCacheStats();
      assert.is(after.compiled, before.compiled, `${backend}: the second call compiled a kernel`);
      assert.ok(after.hits > before.hits, `${backend}: the second call did not hit the kernel cache`);
    }
  } finally {
    setWasmGemm(previous);
  }
});

test('webasm matmuls on the gpu.js path run as wasm kernels (no silent fallback to cpu)', () => {
  const previous = setWasmGemm(false);
  try {
    checkProblem('webasm', { batch: 2, m: 5, k: 3, n: 7, transA: true, transB: true }, 9);
  } finally {
    setWasmGemm(previous);
  }
  // `kernels` is public at runtime but missing from gpu.js's typings.
  const kernels = (gpuFor('webasm') as unknown as { kernels: object[] }).kernels;
  const kinds = new Set(kernels.map((k) => k.constructor.name));
  assert.equal([...kinds], ['WebAssemblyKernel']);
});

test('rejects inputs whose length does not match the problem', () => {
  const p: MatmulProblem = { batch: 1, m: 2, k: 2, n: 2, transA: false, transB: false };
  assert.throws(() => matmulKernelRun(p, new Float32Array(3), new Float32Array(4)), /a has 3 elements/);
});

test.run();
