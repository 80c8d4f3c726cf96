/**
 * How device plans run matrix products, decided without a GPU: the tiling cost model (chooseTiling),
 * split-K (splitK, and its lowering to two dispatches through a scratch range), and the tuner's
 * choice given measured times (tuneMatmuls with an injected timer). test/plan-laws.ts runs the
 * kernels themselves on a device.
 */
import fc from 'fast-check';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { TUNE_MIN_FLOP, tuneMatmuls, type TimeProduct } from '../src/backend/matmul-tune.ts';
import { chooseTiling, matmulKernel, splitK, tilingCost, TILE_LARGE, TILE_LARGE_VEC4, TILE_MEDIUM, TILE_SMALL, TILINGS, tilingName, tilingSharedBytes, tilingsFor, tilingThreads, type MatmulShape, type MatmulTiling } from '../src/backend/wgsl-kernels.ts';
import * as R from '../src/index.ts';
import { BackendError } from '../src/tensor/errors.ts';
import { jit } from '../src/jit/index.ts';
import { programFromTrace } from '../src/jit/webgpu.ts';
import { lowerProgram } from '../src/tensor/plan.ts';
import { uniform } from '../laws/helpers.ts';

const square = (n: number): MatmulShape => ({ batch: 1, m: n, k: n, n, transA: false, transB: false });
const tiles = (p: MatmulShape, t: MatmulTiling) => p.batch * Math.ceil(p.m / t.bm) * Math.ceil(p.n / t.bn);
const shapes = fc.record({
  batch: fc.integer({ min: 1, max: 800 }),
  m: fc.integer({ min: 1, max: 30_000 }),
  k: fc.integer({ min: 0, max: 70_000 }),
  n: fc.integer({ min: 1, max: 30_000 }),
  transA: fc.boolean(),
  transB: fc.boolean(),
});

test('every tiling fits WebGPU\'s default 16 KiB of workgroup memory, so only the invocation limit decides which a device runs', () => {
  for (const t of TILINGS) assert.ok(tilingSharedBytes(t) <= 16_384, `${tilingName(t)}: ${tilingSharedBytes(t)} bytes`);
  const code = matmulKernel(square(64), TILE_LARGE_VEC4).code;
  assert.match(code, `var<workgroup> As : array<vec4<f32>, ${tilingSharedBytes(TILE_LARGE_VEC4) / 2 / 16}>`);
});

test('the cost model picks the tiling measured fastest on the H200 at N = 1024, 4096 and 8192 (docs/benchmarks.md)', () => {
  // Second H200 run: 64x64/4x4 was fastest at 1024 (10,272 GFLOP/s against 8,235 and 5,407), 4096 and 8192.
  for (const n of [1024, 4096, 8192]) assert.is(tilingName(chooseTiling(square(n), 1024)), tilingName(TILE_MEDIUM), `N = ${n}`);
});

test('the cost model\'s rates of 64x64/4x4 and 32x32/4x2 are within 6 % of the H200\'s at every N (relative to 64x64 at 8192)', () => {
  // GFLOP/s of [128x128, 64x64, 32x32] measured in the second H200 run (docs/benchmarks.md).
  const measured: Record<number, number[]> = { 1024: [5407, 10272, 8235], 2048: [16614, 14881, 10393], 4096: [16080, 17927, 11147], 8192: [16014, 18588, 11302] };
  const rate = (n: number, t: MatmulTiling) => (2 * n ** 3) / tilingCost(square(n), t, 1);
  const unit = rate(8192, TILE_MEDIUM) / measured[8192][1];
  for (const [n, row] of Object.entries(measured)) {
    [TILE_MEDIUM, TILE_SMALL].forEach((t) => {
      const ratio = rate(Number(n), t) / unit / row[t === TILE_MEDIUM ? 1 : 2];
      assert.ok(Math.abs(ratio - 1) <= 0.06, `${tilingName(t)} at N = ${n}: model / measured = ${ratio.toFixed(3)}`);
    });
  }
});

test('Rev-ViT-S products: attention on 64x64 tiles (not 128x128, which pads 196 x 64 to 256 x 128), weight gradients split-K', () => {
  const attention: MatmulShape[] = [
    { batch: 768, m: 196, k: 64, n: 196, transA: false, transB: true },
    { batch: 768, m: 196, k: 196, n: 64, transA: false, transB: false },
    { batch: 768, m: 196, k: 196, n: 64, transA: true, transB: false },
  ];
  for (const p of attention) {
    assert.is(tilingName(chooseTiling(p, 1024)), tilingName(TILE_MEDIUM), JSON.stringify(p));
    assert.is(splitK(p), 1, `${JSON.stringify(p)}: 12,288 tiles fill the device`);
  }
  // 384 x 384 from 25,088 tokens: 36 tiles, so 32 k ranges (1,152 workgroups) of 784.
  const grad = { batch: 1, m: 384, k: 25_088, n: 384, transA: true, transB: false };
  assert.is(splitK(grad), 32);
  assert.is(splitK({ ...grad, n: 1536 }), 8);
});

test('chooseTiling: a fitted tiling within the device\'s invocations, the only one at 128, an error below', () => {
  fc.assert(
    fc.property(shapes, fc.constantFrom(128, 256, 1024), (p, maxThreads) => {
      const t = chooseTiling(p, maxThreads);
      // Only tilings with measured rates: the vec4 ones are for tuning until a GPU run has timed them.
      return tilingThreads(t) <= maxThreads && tilingsFor(maxThreads).includes(t) && t.vec === undefined;
    }),
    { numRuns: 300 },
  );
  assert.is(chooseTiling(square(4096), 128), TILE_SMALL);
  assert.equal(tilingsFor(256), [...TILINGS]);
  assert.equal(tilingsFor(128), [TILE_SMALL]);
  assert.throws(() => chooseTiling(square(64), 64), (e: unknown) => e instanceof BackendError && /no tiling fits in 64 invocations/.test(e.message));
});

test('splitK: a power of two, the fewest k ranges that fill the device, each range at least 256 long, within a dispatch', () => {
  fc.assert(
    fc.property(shapes, (p) => {
      const s = splitK(p);
      const t = tiles(p, TILE_MEDIUM);
      if (!Number.isInteger(Math.log2(s)) || p.batch * s > 65_535) return false;
      if (s === 1) return t >= 1024 || p.k / 2 < 256 || p.batch * 2 > 65_535;
      // Split only as far as needed, and never into ranges shorter than 256.
      return t * (s / 2) < 1024 && p.k / s >= 256;
    }),
    { numRuns: 500 },
  );
  assert.is(splitK(square(4096)), 1);
  assert.is(splitK({ batch: 1, m: 8, k: 2048, n: 3, transA: true, transB: false }), 8);
  assert.is(splitK({ batch: 1, m: 8, k: 511, n: 3, transA: true, transB: false }), 1);
});

test('tuneMatmuls keeps the fastest tiling per distinct product, timing each (product, tiling) once, only tilings the device allows', async () => {
  const calls: string[] = [];
  // A made-up device on which 32x32 wins small products and 128x128 large ones.
  const time: TimeProduct = async (p, t) => {
    calls.push(`${p.m}|${tilingName(t)}`);
    return p.m < 1000 ? t.bm : 1000 / t.bm;
  };
  const small = { batch: 2, m: 400, k: 400, n: 400, transA: false, transB: false };
  const large = square(2048);
  const tuned = await tuneMatmuls([small, large, { ...small }, large], 256, time);
  assert.is(tuned.size, 2);
  assert.equal([...tuned.values()].map((t) => tilingName(t.tiling)), [tilingName(TILE_SMALL), tilingName(TILE_LARGE)]);
  assert.equal([...tuned.values()][0].times.map((x) => x.ms), TILINGS.map((t) => t.bm));
  assert.is(calls.length, 2 * TILINGS.length, `each distinct product x tiling once: ${calls.join(', ')}`);
  // A tiling that fails counts as infinitely slow; a product none of whose tilings ran is left out.
  const failing: TimeProduct = async (p, t) => {
    if (p.m > 1000 || t === TILE_SMALL) throw new Error('over the binding size');
    return t.bm;
  };
  const partly = await tuneMatmuls([small, large], 256, failing);
  assert.equal([...partly.keys()], ['2|400|400|400|false|false']);
  assert.is([...partly.values()][0].tiling, TILINGS.find((t) => t.bm === 64), 'the first of the fastest');
  assert.is([...partly.values()][0].times.find((x) => x.tiling === TILE_SMALL)?.ms, Infinity);
  // Launch-latency-bound products are left to the cost model.
  const tiny = { batch: 1, m: 100, k: 100, n: 2400, transA: false, transB: false };
  assert.ok(2 * 100 * 100 * 2400 < TUNE_MIN_FLOP && 2 * 100 * 100 * 2600 >= TUNE_MIN_FLOP);
  assert.equal([...(await tuneMatmuls([tiny, { ...tiny, n: 2600 }], 256, time)).keys()], ['1|100|100|2600|false|false']);
  const narrow = await tuneMatmuls([large], 128, time);
  assert.equal([...narrow.values()][0].times.map((x) => tilingName(x.tiling)), [tilingName(TILE_SMALL)]);
});

test('lowering: a split-K product is two dispatches through a scratch range live at its node only; a whole one is one', async () => {
  const f = ([x, w, y]: R.Tensor[]) => [R.matmul(x, w, { transA: true }), R.matmul(x, y)];
  const inputs = [R.tensor(uniform(2048 * 8, 1), [2048, 8]), R.tensor(uniform(2048 * 3, 2), [2048, 3]), R.tensor(uniform(8 * 5, 3), [8, 5])];
  const traced = jit(f, { lowering: 'interpret' }).program(inputs);
  const { program } = await programFromTrace(traced, { label: 'split', maxBindings: 16 });
  const low = lowerProgram(program, { maxThreads: 256 });
  const names = low.spec.steps.map((s) => (s.kind === 'wgsl' ? s.kernel.name : s.kind));
  assert.equal(names, ['matmul', 'matmul-split-sum', 'matmul'], names.join(', '));
  const [first, sum] = low.spec.steps;
  assert.ok(first.kind === 'wgsl' && sum.kind === 'wgsl');
  const scratch = first.outputs[0];
  assert.equal(sum.inputs, [scratch]);
  // 8 k ranges of the [8, 3] product; the scratch is nobody's value and lives at node 0 only.
  assert.is(low.spec.buffers[scratch], 8 * 8 * 3);
  assert.ok(!low.slotOf.includes(scratch));
  assert.equal([low.lives[scratch].start, low.lives[scratch].end], [0, 0]);
  assert.equal(first.kernel.workgroups, [1, 1, 8]);
});

test.run();
