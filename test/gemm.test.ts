import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fc from 'fast-check';
import { withBackend } from '../src/backend/backend.ts';
import { matmulRows4Variant, type MatmulProblem } from '../src/backend/matmul.ts';
import { sleb, uleb, wasmSimdAvailable } from '../src/backend/wasm-builder.ts';
import { execFileSync } from 'node:child_process';
import { checkGemm, matmulProblem, problemInputs, relativeError, TRANSPOSES, type Gemm } from './matmul-helpers.ts';
import {
  setWasmGemmRetainedBytes, wasmGemm, wasmGemmConfig, wasmGemmMemoryBytes, wasmGemmWith, wasmRelaxedSimdAvailable,
  type WasmGemmConfig,
} from '../src/backend/wasm-gemm.ts';

const check = (gemm: Gemm, p: MatmulProblem, seed: number, what = 'wasmGemm'): void => checkGemm(gemm, p, seed, what);
const inputs = problemInputs;


test('LEB128 encoders', () => {
  assert.equal(uleb(0), [0]);
  assert.equal(uleb(127), [0x7f]);
  assert.equal(uleb(128), [0x80, 0x01]);
  assert.equal(uleb(624485), [0xe5, 0x8e, 0x26]);
  assert.equal(sleb(0), [0]);
  assert.equal(sleb(-1), [0x7f]);
  assert.equal(sleb(63), [0x3f]);
  assert.equal(sleb(64), [0xc0, 0x00]);
  assert.equal(sleb(-64), [0x40]);
  assert.equal(sleb(-65), [0xbf, 0x7f]);
  assert.equal(sleb(-123456), [0xc0, 0xbb, 0x78]);
});

test('SIMD is available in this Node', () => {
  assert.ok(wasmSimdAvailable());
});

test('tiny and edge shapes, all transposes', () => {
  // 1x1x1, K = 1, M and N below / not multiples of the 4x8 tile, K odd, batch > 1
  const shapes = [
    [1, 1, 1, 1], [1, 1, 5, 1], [1, 3, 1, 5], [1, 5, 7, 3], [1, 4, 4, 8], [1, 6, 2, 9], [3, 1, 1, 1],
    [2, 7, 1, 13], [1, 4, 1, 8], [1, 8, 3, 16], [2, 9, 17, 17], [1, 1, 33, 40], [1, 33, 2, 1],
  ];
  for (const [batch, m, k, n] of shapes) {
    for (const [transA, transB] of TRANSPOSES) check(wasmGemm, { batch, m, k, n, transA, transB }, m * 31 + k);
  }
});

test('odd sizes, batch, transformer shapes', () => {
  for (const [transA, transB] of TRANSPOSES) {
    check(wasmGemm, { batch: 3, m: 37, k: 19, n: 29, transA, transB }, 11);
    check(wasmGemm, { batch: 1, m: 50, k: 64, n: 33, transA, transB }, 12);
  }
  check(wasmGemm, { batch: 1, m: 197, k: 96, n: 288, transA: false, transB: false }, 13);
  check(wasmGemm, { batch: 1, m: 197, k: 96, n: 288, transA: false, transB: true }, 14);
  check(wasmGemm, { batch: 2, m: 85, k: 48, n: 85, transA: false, transB: true }, 15);
});

test('K = 1024 stays within rtol 1e-5', () => {
  for (const [transA, transB] of TRANSPOSES) check(wasmGemm, { batch: 1, m: 9, k: 1024, n: 10, transA, transB }, 5);
  check(wasmGemm, { batch: 2, m: 13, k: 1023, n: 17, transA: true, transB: false }, 6);
});

test('random problems (fast-check)', () => {
  const problem = matmulProblem(40, 70, 40);
  fc.assert(fc.property(problem, fc.integer({ min: 1, max: 1e6 }), (p, seed) => check(wasmGemm, p, seed)), {
    numRuns: 150,
    seed: 7,
  });
});

test('other register tilings and code-generation options are correct too', () => {
  const configs: WasmGemmConfig[] = [
    { mr: 3, nr: 12, unroll: 1, fence: 1 }, { mr: 5, nr: 8, unroll: 2 }, { mr: 6, nr: 8, unroll: 3, fence: 2 },
    { mr: 4, nr: 12, unroll: 2, reloadB: true }, { mr: 2, nr: 16, unroll: 4 }, { mr: 1, nr: 4, unroll: 1 },
  ];
  const shapes = [[1, 1, 1, 1], [2, 7, 5, 13], [1, 31, 9, 26], [1, 13, 4, 4]];
  for (const config of configs) {
    const gemm = wasmGemmWith(config);
    for (const [batch, m, k, n] of shapes) {
      for (const [transA, transB] of TRANSPOSES) check(gemm, { batch, m, k, n, transA, transB }, m + n, JSON.stringify(config));
    }
  }
});

test('fused multiply-add variant (relaxed SIMD) is correct where the engine has it', () => {
  if (wasmRelaxedSimdAvailable()) {
    const gemm = wasmGemmWith({ ...wasmGemmConfig(), fma: true });
    for (const [transA, transB] of TRANSPOSES) check(gemm, { batch: 2, m: 37, k: 19, n: 29, transA, transB }, 21, 'fma');
    return;
  }
  // Node 20 has relaxed SIMD behind a V8 flag: check the FMA code path in a child process with it.
  const script = `
    import { wasmGemmWith, wasmGemmConfig, wasmRelaxedSimdAvailable } from './src/backend/wasm-gemm.ts';
    import { matmulReference } from './src/backend/matmul.ts';
    if (!wasmRelaxedSimdAvailable()) { process.stdout.write('unavailable'); process.exit(0); }
    if (!wasmGemmConfig().fma) throw new Error('wasmGemm does not pick FMA');
    const gemm = wasmGemmWith({ mr: 4, nr: 8, unroll: 1, fma: true });
    let worst = 0;
    for (const [batch, m, k, n] of [[1, 1, 1, 1], [2, 37, 19, 29], [1, 9, 1024, 10], [1, 64, 96, 50]]) {
      for (const transA of [false, true]) for (const transB of [false, true]) {
        const p = { batch, m, k, n, transA, transB };
        const a = Float32Array.from({ length: batch * m * k }, (_, i) => Math.sin(i * 1.3 + 1));
        const b = Float32Array.from({ length: batch * k * n }, (_, i) => Math.cos(i * 0.7));
        const got = gemm(p, a, b), ref = matmulReference(p, a, b);
        let scale = 0, err = 0;
        for (let i = 0; i < ref.length; i++) { scale = Math.max(scale, Math.abs(ref[i])); err = Math.max(err, Math.abs(got[i] - ref[i])); }
        worst = Math.max(worst, scale === 0 ? err : err / scale);
      }
    }
    process.stdout.write(String(worst));`;
  let out: string;
  try {
    out = execFileSync(process.execPath, ['--experimental-wasm-relaxed-simd', '--import', 'tsx', '--input-type=module', '-e', script], {
      cwd: new URL('..', import.meta.url).pathname, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'],
    }).trim();
  } catch (e) {
    const stderr = String((e as { stderr?: unknown }).stderr ?? '');
    // Every Node >= 20 (package.json engines) has relaxed SIMD, by default or behind this flag: a Node
    // without either cannot run the FMA path we ship, which is a failure, not a skip.
    if (/bad option|unknown option/i.test(stderr)) assert.unreachable(`Node ${process.version} knows neither relaxed SIMD nor --experimental-wasm-relaxed-simd: the FMA GEMM path is unchecked`);
    throw e;
  }
  assert.ok(out !== 'unavailable', `relaxed SIMD is unavailable in Node ${process.version} even with --experimental-wasm-relaxed-simd: the FMA GEMM path is unchecked`);
  assert.ok(Number(out) <= 1e-5, `fma relative error ${JSON.stringify(out)}`);
});

test('agrees with the gpu.js rows4 kernel', () => {
  const rows4: Gemm = (p, a, b) => withBackend('webasm', () => matmulRows4Variant(p, a, b, {}));
  const problems: MatmulProblem[] = [
    { batch: 1, m: 23, k: 17, n: 31, transA: false, transB: false },
    { batch: 2, m: 9, k: 40, n: 12, transA: true, transB: true },
    { batch: 1, m: 64, k: 96, n: 50, transA: false, transB: true },
  ];
  for (const [i, p] of problems.entries()) {
    const [a, b] = inputs(p, 100 + i);
    const ours = wasmGemm(p, a, b);
    const theirs = rows4(p, a, b);
    const err = relativeError(ours, theirs);
    assert.ok(err <= 1e-5, `${JSON.stringify(p)}: wasmGemm vs rows4 relative difference ${err}`);
  }
});

test('empty problems and K = 0', () => {
  assert.is(wasmGemm({ batch: 2, m: 0, k: 3, n: 4, transA: false, transB: false }, new Float32Array(0), new Float32Array(24)).length, 0);
  const zeros = wasmGemm({ batch: 1, m: 2, k: 0, n: 3, transA: false, transB: false }, new Float32Array(0), new Float32Array(0));
  assert.equal(Array.from(zeros), [0, 0, 0, 0, 0, 0]);
});

test('memory is reused: bounded by the largest problem, results stay independent', () => {
  const big: MatmulProblem = { batch: 1, m: 300, k: 64, n: 200, transA: false, transB: false };
  const small: MatmulProblem = { batch: 2, m: 5, k: 3, n: 7, transA: true, transB: false };
  const [sa, sb] = inputs(small, 1);
  const first = wasmGemm(small, sa, sb);
  check(wasmGemm, big, 2);
  const grown = wasmGemmMemoryBytes(wasmGemmConfig());
  for (let i = 0; i < 5; i++) check(wasmGemm, big, 3 + i);
  assert.is(wasmGemmMemoryBytes(wasmGemmConfig()), grown, 'no growth on repeated problems');
  // The returned array is a copy: later calls do not change it.
  const again = wasmGemm(small, sa, sb);
  assert.equal(Array.from(again), Array.from(first));
  assert.is(again.buffer.byteLength, again.byteLength, 'owns its buffer (not a view of wasm memory)');
});

test('a problem above the retained limit runs, then its memory is released', () => {
  const previous = setWasmGemmRetainedBytes(1 << 20);
  try {
    check(wasmGemm, { batch: 1, m: 300, k: 200, n: 300, transA: false, transB: true }, 9); // ~1.4 MB of wasm memory
    assert.ok(wasmGemmMemoryBytes() <= 1 << 20, `kept ${wasmGemmMemoryBytes()} bytes`);
    check(wasmGemm, { batch: 2, m: 7, k: 5, n: 11, transA: false, transB: false }, 10);
  } finally {
    setWasmGemmRetainedBytes(previous);
  }
});

test('rejects inputs whose length does not match the problem', () => {
  const p: MatmulProblem = { batch: 1, m: 2, k: 2, n: 2, transA: false, transB: false };
  assert.throws(() => wasmGemm(p, new Float32Array(3), new Float32Array(4)), /a has 3 elements/);
  assert.throws(() => wasmGemmWith({ mr: 4, nr: 6, unroll: 1 }), /nr must be a multiple of 4 in 4..32, got 6/);
});

test.run();
