/**
 * The SIMD DSL's exp for non-positive arguments (softmax's exp(x - max)), checked lane by lane against
 * float64 Math.exp: a dense grid over the whole float32 normal range [-87.33, 0], random points, and
 * the special values softmax relies on (0, -Infinity from masks, NaN rows). Independent of the ops
 * that use it, so an error in its polynomial or its 2^n scale shows here with the failing argument.
 */
import fc from 'fast-check';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ModuleBuilder, wasmSimdAvailable } from '../src/backend/wasm-builder.ts';
import { wasmRelaxedSimdAvailable } from '../src/backend/wasm-gemm.ts';
import { Simd } from '../src/backend/wasm-simd.ts';

/** (ptr, n): replaces n floats at ptr (n a multiple of 4) by expNonPositive of each. */
function expModule(fma: boolean): (xs: Float32Array) => Float32Array {
  const mod = new ModuleBuilder().importMemory('env', 'memory', 1);
  const f = mod.func('run', ['i32', 'i32']);
  const s = new Simd(f, fma);
  f.block((done) => {
    f.get(1).op('i32.eqz').brIf(done);
    f.loop((top) => {
      s.store(0, s.expNonPositive(s.load(0)));
      f.get(0).i32(16).op('i32.add').set(0);
      f.get(1).i32(4).op('i32.sub').tee(1).brIf(top);
    });
  });
  s.hoistConstants();
  const memory = new WebAssembly.Memory({ initial: 32 });
  const run = new WebAssembly.Instance(new WebAssembly.Module(mod.toBytes()), { env: { memory } }).exports.run as (p: number, n: number) => void;
  return (xs) => {
    const heap = new Float32Array(memory.buffer);
    heap.set(xs);
    run(0, xs.length);
    return heap.slice(0, xs.length);
  };
}

const ULP_1 = 2 ** -23;
/** Relative error in ulps of the float32 result (ulp at the true value's binade). */
const ulps = (got: number, want: number): number => Math.abs(got - want) / (2 ** Math.floor(Math.log2(want)) * ULP_1);

const available = wasmSimdAvailable();
if (!available) console.log('wasm-simd-math: skipped, this engine has no WebAssembly SIMD');

for (const fma of [false, true]) {
  test(`expNonPositive (${fma ? 'relaxed madd' : 'mul + add'}): within 3 ulps of exp on [-87.33, 0], 0 below, specials kept`, () => {
    if (!available) return;
    // Relaxed SIMD is behind a flag in some engines (Node 20): the kernels then use mul + add.
    if (fma && !wasmRelaxedSimdAvailable()) return console.log('wasm-simd-math: skipped the relaxed-madd form, this engine has no relaxed SIMD (the kernels use mul + add here)');
    const exp = expModule(fma);
    const grid = new Float32Array(4 * 65536).map((_, i) => -87.33 * (i / (4 * 65536 - 1)));
    const got = exp(grid);
    let worst = 0;
    let at = 0;
    grid.forEach((x, i) => {
      const u = ulps(got[i], Math.exp(x));
      if (u > worst) [worst, at] = [u, x];
    });
    assert.ok(worst <= 3, `worst ${worst.toFixed(2)} ulps at x = ${at}`);
    fc.assert(fc.property(fc.float({ min: Math.fround(-87.33), max: 0, noNaN: true }), (x) => {
      const [y] = exp(new Float32Array([x, 0, 0, 0]));
      return ulps(y, Math.exp(x)) <= 3;
    }));
    const special = exp(new Float32Array([0, -0, -Infinity, NaN, -87.4, -100, -1e30, -87.3]));
    assert.equal(Array.from(special.subarray(0, 3)), [1, 1, 0]);
    assert.ok(Number.isNaN(special[3]), 'NaN stays NaN');
    assert.equal(Array.from(special.subarray(4, 7)), [0, 0, 0], 'below the normal range: 0');
    assert.ok(ulps(special[7], Math.exp(Math.fround(-87.3))) <= 3, `exp(-87.3) = ${special[7]}`);
  });
}

test.run();
