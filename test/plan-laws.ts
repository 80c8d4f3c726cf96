/**
 * Laws of webgpu device plans, written once for Node (test/webgpu-plan.test.ts, Dawn over Mesa
 * llvmpipe) and the browser page (test/browser/laws-page.ts, Chromium's SwiftShader WebGPU):
 *  - matmul: the tiled WGSL matmul, for generated shapes, transposes, batches, every tiling, whole and
 *    split into k ranges, equals float64 products within float32 rounding and the gpu.js matmul kernel
 *    (the reference) within 1e-5, with the same bits on every tiling; a plan tuned on the device equals
 *    the untuned plan bit for bit;
 *  - ops: every OP_CASES entry (forward and VJP) traced by jit and replayed as a device plan
 *    (WGSL kernels where the op has one, its gpu.js kernel otherwise) equals eager webasm within
 *    1e-5 · max|webasm|, the backend laws' tolerance;
 *  - step: a small Rev-MViT AdamW training step compiled for the device (DeviceTrainer) equals the
 *    library's eager step over four steps; after a warm-up step each step makes at most 4 submissions,
 *    exactly 1 readback and creates no pipeline and no buffer.
 *
 * Nothing here uses Node APIs.
 */
import fc from 'fast-check';
import * as E from 'fp-ts/lib/Either.js';
import { getBackend, setBackend, withBackend } from '../src/backend/backend.ts';
import { counterDelta, webgpuCounters, webgpuDevice, type WebGPUCounters } from '../src/backend/webgpu-device.ts';
import { DevicePlan } from '../src/backend/webgpu-plan.ts';
import { TUNE_MIN_FLOP, type TunedProduct } from '../src/backend/matmul-tune.ts';
import { fusedKernel, matmulKernel, matmulSplitSum, splitK, tilingName, tilingsFor, tilingThreads, type FusedGroup, type FusedNode, type MatmulShape, type MatmulTiling } from '../src/backend/wgsl-kernels.ts';
import { flattenWithPaths } from '../src/autodiff/pytree.ts';
import * as R from '../src/index.ts';
import type { Tensor } from '../src/index.ts';
import { formatProblems, parseConfig } from '../src/models/mvit/config.ts';
import { buildModel } from '../src/models/mvit/model.ts';
import { foldIn, key, normal, split } from '../src/random/index.ts';
import { DeviceProgram, type CompileOptions } from '../src/tensor/plan.ts';
import { sizeOf } from '../src/tensor/shape.ts';
import { programFromTrace } from '../src/jit/webgpu.ts';
import { jit } from '../src/jit/index.ts';
import { DeviceTrainer } from '../src/train/device-step.ts';
import { crossEntropy } from '../src/train/loss.ts';
import { ADAMW_DEFAULTS, adamwInit, adamwUpdate, clipGradNorm } from '../src/train/optim.ts';
import { OP_CASES, sameArrayBits, uniform, type OpCase } from '../laws/helpers.ts';

export interface PlanLawResult {
  readonly group: 'plan';
  readonly name: string;
  readonly ok: boolean;
  readonly detail: string;
  readonly ms: number;
}

const now = (): number => (typeof performance !== 'undefined' ? performance.now() : Date.now());

async function law(name: string, body: () => Promise<string>): Promise<PlanLawResult> {
  const t0 = now();
  try {
    return { group: 'plan', name, ok: true, detail: await body(), ms: now() - t0 };
  } catch (e) {
    return { group: 'plan', name, ok: false, detail: (e instanceof Error ? e.message : String(e)).slice(0, 3000), ms: now() - t0 };
  }
}

function fail(msg: string): never {
  throw new Error(msg);
}

/** The largest |got - want| over max(max|want|, 1e-30): the backend laws' measure. */
function relDiff(got: Float32Array, want: ArrayLike<number>): number {
  if (got.length !== want.length) return Infinity;
  let scale = 1e-30;
  let d = 0;
  for (let i = 0; i < want.length; i++) scale = Math.max(scale, Math.abs(want[i]));
  for (let i = 0; i < want.length; i++) {
    const e = Math.abs(got[i] - want[i]);
    if (!(e <= d) && !(Number.isNaN(got[i]) && Number.isNaN(want[i]))) d = Number.isNaN(e) ? Infinity : e;
  }
  return d / scale;
}

/** One run of a jit-traced function as a device plan: its outputs, and the plan's dispatches, tuned products and gpu.js ops. */
interface PlanRun {
  readonly got: Float32Array[];
  readonly dispatchNames: readonly string[];
  readonly tuned: readonly TunedProduct[];
  readonly gpujsOps: ReadonlyMap<string, number>;
}

/** `f` traced by jit, compiled as one device plan (`options`: DeviceProgram's), run once on `inputs`, and released. */
async function runAsPlan(f: (xs: Tensor[]) => Tensor[], inputs: readonly Tensor[], label: string, options?: CompileOptions): Promise<PlanRun> {
  const traced = jit(f, { lowering: 'interpret' }).program([...inputs]);
  const program = await DeviceProgram.compile((await programFromTrace(traced, { label })).program, [], options);
  try {
    const got = await program.run(inputs.map((t) => t.dataSync()));
    return { got, dispatchNames: program.dispatchNames, tuned: program.tuned, gpujsOps: program.gpujsOps };
  } finally {
    program.destroy();
  }
}

// ---------------------------------------------------------------------------------------------
// Tiled matmul

/** C = op(A) @ op(B) per batch entry in float64. */
function matmulFloat64(c: MatmulShape, a: Float32Array, b: Float32Array): Float64Array {
  const ref = new Float64Array(c.batch * c.m * c.n);
  for (let z = 0; z < c.batch; z++) {
    for (let i = 0; i < c.m; i++) {
      for (let j = 0; j < c.n; j++) {
        let s = 0;
        for (let t = 0; t < c.k; t++) s += a[z * c.m * c.k + (c.transA ? t * c.m + i : i * c.k + t)] * b[z * c.k * c.n + (c.transB ? j * c.k + t : t * c.n + j)];
        ref[(z * c.m + i) * c.n + j] = s;
      }
    }
  }
  return ref;
}

/** One product as a plan of its own: matmulKernel with `splits` k ranges (and their sum when split). */
async function runProduct(c: MatmulShape, tiling: MatmulTiling, splits: number, a: Float32Array, b: Float32Array): Promise<Float32Array> {
  const out = c.batch * c.m * c.n;
  const split = splits > 1;
  const plan = await DevicePlan.compile({
    buffers: [a.length, b.length, out, ...(split ? [out * splits] : [])],
    steps: split
      ? [
        { kind: 'wgsl', kernel: matmulKernel(c, tiling, splits), inputs: [0, 1], outputs: [3] },
        { kind: 'wgsl', kernel: matmulSplitSum(c, splits), inputs: [3], outputs: [2] },
      ]
      : [{ kind: 'wgsl', kernel: matmulKernel(c, tiling), inputs: [0, 1], outputs: [2] }],
    reads: [2],
    label: `matmul ${tilingName(tiling)} in ${splits} k ranges`,
  });
  try {
    plan.write(0, a);
    plan.write(1, b);
    return (await plan.run())[0];
  } finally {
    plan.destroy();
  }
}

/**
 * Generated products on every tiling the device allows, whole and split into k ranges (split-K),
 * against float64 and the gpu.js kernel; and for one split count, every tiling gives the same bits.
 */
export async function matmulLaw(samples = 8): Promise<PlanLawResult> {
  return law('tiled WGSL matmul, whole and split-K, = float64 and the gpu.js kernel; the same bits on every tiling', async () => {
    const { device } = await webgpuDevice();
    const tilings = tilingsFor(device.limits.maxComputeInvocationsPerWorkgroup);
    const dim = fc.integer({ min: 1, max: 150 });
    const cases = fc.sample(
      fc.record({ batch: fc.integer({ min: 1, max: 3 }), m: dim, k: fc.integer({ min: 0, max: 150 }), n: dim, transA: fc.boolean(), transB: fc.boolean(), splits: fc.integer({ min: 2, max: 5 }), seed: fc.integer({ min: 1, max: 1e6 }) }),
      { seed: 20261129, numRuns: samples },
    );
    let worst = 0;
    let worstGpujs = 0;
    let ran = 0;
    for (const c of cases) {
      const a = uniform(c.batch * c.m * c.k, c.seed);
      const b = uniform(c.batch * c.k * c.n, c.seed + 1);
      const ref = matmulFloat64(c, a, b);
      // The reference kernel: eager matmul on webgpu runs the gpu.js kernel.
      const ta = R.tensor(a, c.transA ? [c.batch, c.k, c.m] : [c.batch, c.m, c.k]);
      const tb = R.tensor(b, c.transB ? [c.batch, c.n, c.k] : [c.batch, c.k, c.n]);
      const gpujs = await withBackend('webgpu', () => R.matmul(ta, tb, { transA: c.transA, transB: c.transB })).data();
      // float32 accumulation of k terms of magnitude <= 1: error bound ~ k * 2^-24 * sum|a||b| <= k^2 * 6e-8.
      const bound = Math.max(1, c.k) * Math.max(1, c.k) * 1.2e-7 + 1e-7;
      for (const splits of [1, c.splits]) {
        let first: Float32Array | null = null;
        for (const tiling of tilings) {
          const what = `${tilingName(tiling)} tiling in ${splits} k range(s), ${JSON.stringify(c)}`;
          const got = await runProduct(c, tiling, splits, a, b);
          for (let i = 0; i < ref.length; i++) {
            const e = Math.abs(got[i] - ref[i]);
            if (!(e <= bound)) fail(`${what}: element ${i} is ${got[i]}, float64 ${ref[i]} (error ${e} > ${bound})`);
            worst = Math.max(worst, e / bound);
          }
          const dg = relDiff(got, gpujs);
          if (!(dg <= 1e-5)) fail(`${what}: differs from the gpu.js kernel by ${dg} of max|C|`);
          worstGpujs = Math.max(worstGpujs, dg);
          // Tuning picks among tilings by speed alone: they must agree to the bit.
          if (first === null) first = got;
          else if (!sameArrayBits(got, first)) fail(`${what}: not the same bits as the ${tilingName(tilings[0])} tiling`);
          ran++;
        }
      }
    }
    return `${ran} products (${cases.length} shapes x whole and split-K x tilings up to ${tilings[0] === undefined ? 0 : tilingThreads(tilings[0])} threads): worst error ${(worst * 100).toFixed(1)}% of the float32 bound, ${worstGpujs.toExponential(1)} of max|C| from the gpu.js kernel, the same bits on every tiling`;
  });
}

/**
 * A program whose weight-gradient-like product (long k, one output tile) runs split-K, compiled with
 * tuning (every tiling timed on this device) and without: the same bits, a tuned tiling per product.
 */
export async function tunedPlanLaw(): Promise<PlanLawResult> {
  return law('a plan tuned on the device (split-K product included) = the untuned plan, bit for bit', async () => {
    const { device } = await webgpuDevice();
    const tilings = tilingsFor(device.limits.maxComputeInvocationsPerWorkgroup);
    // Weight-gradient-like products of 67 MFLOP (over TUNE_MIN_FLOP), each split-K.
    const [m, k, n] = [64, 2048, 256];
    const f = ([x, w]: Tensor[]) => [R.matmul(x, w, { transA: true }), R.tanh(R.matmul(w, x, { transA: true }))];
    const inputs = [R.tensor(uniform(k * m, 11), [k, m]), R.tensor(uniform(k * n, 12), [k, n])];
    if (2 * m * k * n < TUNE_MIN_FLOP) fail(`the [${m} x ${k}] @ [${k} x ${n}] product is under TUNE_MIN_FLOP: the law no longer covers tuning`);
    if (splitK({ batch: 1, m, k, n, transA: true, transB: false }) < 2) fail(`the [${m} x ${k}] @ [${k} x ${n}] product is not split: the law no longer covers split-K`);
    const want = withBackend('webasm', () => f(inputs)).map((t) => t.dataSync());
    const untuned = await runAsPlan(f, inputs, 'untuned', { tune: false });
    if (untuned.tuned.length !== 0) fail('tune: false timed products');
    const tuned = await runAsPlan(f, inputs, 'tuned', { tune: true });
    const tunedCount = tuned.tuned.length;
    if (tunedCount !== 2) fail(`expected the 2 distinct products tuned, got ${tunedCount}`);
    for (const t of tuned.tuned) {
      if (t.times.length !== tilings.length || !t.times.every((x) => Number.isFinite(x.ms) && x.ms >= 0)) fail(`product ${JSON.stringify(t.problem)}: timed ${JSON.stringify(t.times)}, expected each of the ${tilings.length} tilings once`);
      if (t.times.some((x) => x.ms < t.times.find((y) => y.tiling === t.tiling)!.ms)) fail(`product ${JSON.stringify(t.problem)}: kept ${tilingName(t.tiling)}, not the fastest of ${JSON.stringify(t.times)}`);
    }
    tuned.got.forEach((got, i) => {
      if (!sameArrayBits(got, untuned.got[i])) fail(`result ${i}: the tuned plan's bits differ from the untuned plan's`);
      // Sums of 2048 terms in another order than webasm's GEMM (split-K): float32 rounding of k terms.
      const d = relDiff(got, want[i]);
      if (!(d <= 1e-4)) fail(`result ${i}: ${d.toExponential(2)} of max|webasm| off`);
    });
    return `${tunedCount} products tuned over ${tilings.length} tilings; results equal the untuned plan's bits and webasm`;
  });
}

// ---------------------------------------------------------------------------------------------
// Fused elementwise groups

/** Ops a generated group draws from: the ops.ts expressions, with inputs kept in their domains. */
const GROUP_OPS: readonly [string, number, string][] = [
  ['add', 2, 'x0 + x1'], ['sub', 2, 'x0 - x1'], ['mul', 2, 'x0 * x1'], ['maximum', 2, 'Math.max(x0, x1)'],
  ['neg', 1, '-x0'], ['tanh', 1, 'Math.tanh(x0)'], ['abs', 1, 'Math.abs(x0)'], ['sqrtAbs', 1, 'Math.sqrt(Math.abs(x0))'],
  ['greater', 2, '(x0 > x1 ? 1 : 0)'], ['where', 3, '(x0 != 0 ? x1 : x2)'], ['expHalf', 1, 'Math.exp(0.5 * Math.tanh(x0))'],
];

/**
 * Generated groups (broadcast reads, offsets, constants, chains of GROUP_OPS, two outputs) as one WGSL
 * kernel equal the same expressions evaluated in float64 on the host, within 1e-5 of max|result|.
 */
export async function fusedLaw(samples = 6): Promise<PlanLawResult> {
  return law('fused elementwise groups as one WGSL kernel = host evaluation', async () => {
    const arb = fc.record({
      shape: fc.array(fc.integer({ min: 1, max: 5 }), { minLength: 1, maxLength: 3 }),
      inputs: fc.integer({ min: 1, max: 3 }),
      broadcast: fc.array(fc.array(fc.boolean(), { minLength: 3, maxLength: 3 }), { minLength: 3, maxLength: 3 }),
      offsets: fc.array(fc.integer({ min: 0, max: 3 }), { minLength: 3, maxLength: 3 }),
      ops: fc.array(fc.record({ op: fc.integer({ min: 0, max: GROUP_OPS.length - 1 }), args: fc.array(fc.nat(), { minLength: 3, maxLength: 3 }) }), { minLength: 1, maxLength: 8 }),
      constant: fc.double({ min: -2, max: 2, noNaN: true }),
      seed: fc.integer({ min: 1, max: 1e6 }),
    });
    let worst = 0;
    const cases = fc.sample(arb, { seed: 20261130, numRuns: samples });
    for (const c of cases) {
      const total = c.shape.reduce((a, b) => a * b, 1);
      const reads = Array.from({ length: c.inputs }, (_, k) => {
        // Row-major strides over the dims this input has (broadcast dims get 0), after an offset.
        const strides = new Array<number>(c.shape.length).fill(0);
        let size = 1;
        for (let d = c.shape.length - 1; d >= 0; d--) {
          if (!c.broadcast[k][d]) {
            strides[d] = size;
            size *= c.shape[d];
          }
        }
        return { strides, offset: c.offsets[k], size: size + c.offsets[k] };
      });
      const nodes: FusedNode[] = [...reads.map((_, k) => ({ op: 'input' as const, input: k })), { op: 'const' as const, value: c.constant }];
      for (const o of c.ops) {
        const [op, arity, expr] = GROUP_OPS[o.op];
        nodes.push({ op, args: o.args.slice(0, arity).map((a) => a % nodes.length), expr });
      }
      const group: FusedGroup = { shape: c.shape, reads, nodes, outputs: [nodes.length - 1, Math.floor(nodes.length / 2)] };
      const data = reads.map((r, k) => uniform(r.size, c.seed + k, -2, 2));
      // Host: every coordinate, every node in float64.
      const want = group.outputs.map(() => new Float64Array(total));
      const fns = nodes.map((n) => ('expr' in n ? (new Function('x0', 'x1', 'x2', `return ${n.expr};`) as (...x: number[]) => number) : null));
      for (let i = 0; i < total; i++) {
        let r = i;
        const coord = new Array<number>(c.shape.length);
        for (let d = c.shape.length - 1; d >= 0; d--) {
          coord[d] = r % c.shape[d];
          r = Math.floor(r / c.shape[d]);
        }
        const v: number[] = [];
        nodes.forEach((n, j) => {
          if (n.op === 'input') {
            const rd = reads[(n as { input: number }).input];
            v[j] = data[(n as { input: number }).input][rd.offset + coord.reduce((a, x, d) => a + x * rd.strides[d], 0)];
          } else if (n.op === 'const') v[j] = Math.fround((n as { value: number }).value);
          else v[j] = fns[j]!(...(n as { args: readonly number[] }).args.map((a) => v[a]));
        });
        group.outputs.forEach((o, k) => (want[k][i] = v[o]));
      }
      const plan = await DevicePlan.compile({
        buffers: [...reads.map((r) => r.size), total, total],
        steps: [{ kind: 'wgsl', kernel: fusedKernel('generated', group), inputs: reads.map((_, k) => k), outputs: [reads.length, reads.length + 1] }],
        reads: [reads.length, reads.length + 1],
      });
      try {
        data.forEach((d, k) => plan.write(k, d));
        const got = await plan.run();
        want.forEach((w, k) => {
          const d = relDiff(got[k], w);
          if (!(d <= 1e-5)) fail(`${JSON.stringify(group)}: output ${k} is ${d.toExponential(2)} of max|host| off`);
          worst = Math.max(worst, d);
        });
      } finally {
        plan.destroy();
      }
    }
    return `${cases.length} generated groups equal to float64 host evaluation (worst ${worst.toExponential(1)} of max|result|)`;
  });
}

/**
 * A value read at two strides inside one fused group (x as a row and as a column of one broadcast sum,
 * and once more at its own shape) and a value read twice by one WGSL op (matmul(a, a)): jit on the
 * device equals eager webasm. (Plans bind every storage buffer writable, and WebGPU refuses two
 * writable bindings of the same bytes in one dispatch: the kernel must bind such a value once.)
 */
export async function sharedReadLaw(samples = 4): Promise<PlanLawResult> {
  return law('one value read twice by a kernel (fused group at two strides, matmul(a, a)) = eager webasm', async () => {
    const cases = fc.sample(fc.record({ n: fc.integer({ min: 1, max: 40 }), seed: fc.integer({ min: 1, max: 1e6 }) }), { seed: 20261201, numRuns: samples });
    let worst = 0;
    for (const c of cases) {
      const f = ([x, a]: Tensor[]) => [R.mul(R.add(R.reshape(x, [1, c.n]), R.reshape(x, [c.n, 1])), R.tanh(x)), R.matmul(a, a)];
      const inputs = [R.tensor(uniform(c.n, c.seed), [c.n]), R.tensor(uniform(c.n * c.n, c.seed + 1), [c.n, c.n])];
      const want = withBackend('webasm', () => f(inputs)).map((t) => t.dataSync());
      const { got } = await runAsPlan(f, inputs, 'shared reads');
      want.forEach((w, k) => {
        const d = relDiff(got[k], w);
        if (!(d <= 1e-5)) fail(`n = ${c.n}, result ${k}: ${d.toExponential(2)} of max|webasm| off`);
        worst = Math.max(worst, d);
      });
    }
    return `${cases.length} cases equal to webasm (worst ${worst.toExponential(1)} of max|webasm|)`;
  });
}

// ---------------------------------------------------------------------------------------------
// Every op in a plan

/** laws/ops.test.ts `evaluate`: outputs, then input cotangents for a fixed output cotangent. */
function evaluate(c: OpCase, seed: number): Tensor[] {
  const [y, pullback] = R.vjp(c.f, ...c.inputs);
  const ys = Array.isArray(y) ? y : [y];
  const cts = ys.map((t, k) => R.tensor(uniform(t.size, seed + k), [...t.shape]));
  const grads = pullback((Array.isArray(y) ? cts : cts[0]) as never) as Tensor[];
  const wrt = c.wrt ?? c.inputs.map((_, i) => i);
  return [...ys, ...wrt.map((i) => grads[i])];
}

export interface PlanOpLawOptions {
  readonly samples?: number;
  readonly seed?: number;
  readonly only?: readonly string[];
}

/** Each OP_CASES entry's forward and VJP as a device plan, against eager webasm. */
export async function planOpLaws(opts: PlanOpLawOptions = {}): Promise<PlanLawResult[]> {
  const results: PlanLawResult[] = [];
  for (const entry of OP_CASES) {
    if (opts.only !== undefined && !opts.only.includes(entry.name)) continue;
    results.push(
      await law(`op ${entry.name}`, async () => {
        const params = fc.sample(entry.arb, { seed: opts.seed ?? 20261127, numRuns: opts.samples ?? 2 });
        let worst = 0;
        const gpujs = new Set<string>();
        for (let s = 0; s < params.length; s++) {
          const c = withBackend('webasm', () => entry.build(params[s]));
          const wanted = withBackend('webasm', () => evaluate(c, 1000 + s));
          const want = wanted.map((t) => t.dataSync());
          const { got, gpujsOps } = await runAsPlan((ins) => evaluate({ ...c, inputs: ins }, 1000 + s), c.inputs, `op ${entry.name}`);
          gpujsOps.forEach((_, k) => gpujs.add(k));
          want.forEach((w, k) => {
            const d = relDiff(got[k], w);
            if (!(d <= 1e-5)) fail(`case ${s}, result ${k} (outputs, then input cotangents) [${wanted[k].shape}]: ${d.toExponential(2)} of max|webasm| off`);
            worst = Math.max(worst, d);
          });
        }
        return `${params.length} cases equal to webasm (worst ${worst.toExponential(1)} of max|webasm|)${gpujs.size > 0 ? `; gpu.js kernels for ${[...gpujs].join(', ')}` : ''}`;
      }),
    );
  }
  return results;
}

/**
 * Special values through WGSL elementwise kernels: every pair of NaN, ±Infinity, ±0 and ordinary values
 * through maximum, minimum and arithmetic, fused into one kernel, equals eager webasm (zeros compared by
 * value; NaN where eager gives NaN: WGSL's own max and min may drop a NaN operand).
 */
export async function specialValuesLaw(): Promise<PlanLawResult> {
  return law('NaN, ±Infinity and ±0 through fused WGSL maps (maximum, minimum, arithmetic) = eager webasm', async () => {
    const special = [Number.NaN, Infinity, -Infinity, 0, -0, 1, -2.5, 3e38];
    const a = Float32Array.from(special.flatMap((v) => special.map(() => v)));
    const b = Float32Array.from(special.flatMap(() => special));
    const f = ([x, y]: Tensor[]) => [R.maximum(x, y), R.minimum(x, y), R.add(R.mul(x, y), R.maximum(R.neg(x), 0)), R.div(R.sub(x, y), R.abs(y))];
    const inputs = [R.tensor(a, [a.length]), R.tensor(b, [b.length])];
    const want = withBackend('webasm', () => f(inputs)).map((t) => t.dataSync());
    const { got } = await runAsPlan(f, inputs, 'special values');
    want.forEach((w, k) => {
      for (let i = 0; i < w.length; i++) {
        const same = Number.isNaN(w[i]) ? Number.isNaN(got[k][i]) : got[k][i] === w[i];
        if (!same) fail(`result ${k} at (${a[i]}, ${b[i]}): ${got[k][i]}, eager webasm ${w[i]}`);
      }
    });
    return `${a.length} pairs through 4 results: NaN, infinities and values as eager webasm`;
  });
}

/**
 * Reductions on every WGSL path against float64: over leading axes (consecutive outputs read consecutive
 * addresses: bias gradients), long ones in parts per thread and a second pass, short ones a thread per
 * output; over the last axis (a workgroup per output when long). Sums within float32 rounding of the
 * terms, maxima exact, a NaN anywhere in a reduction giving NaN.
 */
export async function reduceLaw(samples = 4): Promise<PlanLawResult> {
  return law('reductions (sum, max, NaN) on every path, long columns in parts = float64', async () => {
    // Short and long extents, so every case covers two paths; each runs sum, max and max with a NaN over both.
    const extent = fc.oneof(fc.integer({ min: 2, max: 40 }), fc.integer({ min: 64, max: 2500 }));
    const cases = fc.sample(fc.record({ outer: fc.integer({ min: 1, max: 3 }), rows: extent, cols: extent, seed: fc.integer({ min: 1, max: 1e6 }) }), { seed: 20261130, numRuns: samples });
    let worst = 0;
    let parts = 0;
    let runs = 0;
    for (const c of cases) {
      for (const [kind, nan] of [['sum', false], ['max', false], ['max', true]] as const) {
        for (const columns of [true, false]) {
          const shape = [c.outer, c.rows, c.cols];
          const x = uniform(sizeOf(shape), c.seed);
          if (nan) x[c.seed % x.length] = Number.NaN;
          const outs = columns ? c.cols : c.outer * c.rows;
          const want = new Float64Array(outs).fill(kind === 'sum' ? 0 : -Infinity);
          const scale = new Float64Array(outs);
          for (let i = 0; i < x.length; i++) {
            const o = columns ? i % c.cols : Math.floor(i / c.cols);
            want[o] = kind === 'sum' ? want[o] + x[i] : Number.isNaN(x[i]) || Number.isNaN(want[o]) ? Number.NaN : Math.max(want[o], x[i]);
            scale[o] += Math.abs(x[i]);
          }
          const axes = columns ? [0, 1] : [2];
          const f = ([t]: Tensor[]) => [kind === 'sum' ? R.sum(t, axes) : R.max(t, axes)];
          const run = await runAsPlan(f, [R.tensor(x, shape)], 'reduce');
          parts += run.dispatchNames.filter((n) => n.startsWith('reduce-')).length - 1;
          const [got] = run.got;
          runs++;
          for (let o = 0; o < outs; o++) {
            const what = `${kind} over the ${columns ? 'columns' : 'rows'} of [${shape}]${nan ? ' with a NaN' : ''}, output ${o}: ${got[o]}, float64 ${want[o]}`;
            if (Number.isNaN(want[o]) || Number.isNaN(got[o])) {
              if (!(Number.isNaN(want[o]) && Number.isNaN(got[o]))) fail(what);
              continue;
            }
            const e = Math.abs(got[o] - want[o]);
            const terms = columns ? c.outer * c.rows : c.cols;
            const bound = kind === 'sum' ? terms * 1.2e-7 * scale[o] + 1e-6 : Math.abs(Math.fround(want[o]) - want[o]);
            if (!(e <= bound)) fail(`${what} (error ${e} > ${bound})`);
            if (kind === 'sum') worst = Math.max(worst, e / bound);
          }
        }
      }
    }
    if (parts === 0) fail('no reduction ran in parts: the law no longer covers the column path');
    return `${runs} reductions (${parts} in parts and a second pass): maxima exact, NaN kept, worst sum error ${worst.toExponential(1)} of the float32 bound`;
  });
}

/**
 * Dense convolutions (groups 1, at least 8 taps per output channel: the im2col + matmul passes, with
 * split-K where B·P is long) as plan steps, forward and both gradients, against eager webasm.
 */
export async function denseConvLaw(samples = 4): Promise<PlanLawResult> {
  return law('dense convolutions as im2col + tiled matmul passes (forward, dx, dw) = eager webasm', async () => {
    const cases = fc.sample(
      fc.record({
        spatial: fc.integer({ min: 1, max: 3 }),
        batch: fc.integer({ min: 1, max: 3 }),
        cin: fc.integer({ min: 1, max: 3 }),
        cout: fc.integer({ min: 1, max: 5 }),
        kernel: fc.array(fc.integer({ min: 2, max: 3 }), { minLength: 3, maxLength: 3 }),
        extra: fc.array(fc.integer({ min: 0, max: 9 }), { minLength: 3, maxLength: 3 }),
        stride: fc.array(fc.integer({ min: 1, max: 3 }), { minLength: 3, maxLength: 3 }),
        padding: fc.array(fc.integer({ min: 0, max: 1 }), { minLength: 3, maxLength: 3 }),
        seed: fc.integer({ min: 1, max: 1e6 }),
      }),
      { seed: 20261130, numRuns: samples },
    );
    let worst = 0;
    let passes = 0;
    for (const c of cases) {
      const kernel = c.kernel.slice(0, c.spatial);
      // At least 8 taps (cin x kernel): what takes the matmul path.
      const cin = Math.max(c.cin, Math.ceil(8 / kernel.reduce((a, b) => a * b, 1)));
      const x = [c.batch, cin, ...kernel.map((k, i) => k + c.extra[i])];
      const w = [c.cout, cin, ...kernel];
      const opts = { stride: c.stride.slice(0, c.spatial), padding: c.padding.slice(0, c.spatial) };
      const opCase: OpCase = { inputs: [R.tensor(uniform(sizeOf(x), c.seed), x), R.tensor(uniform(sizeOf(w), c.seed + 1), w)], f: (a: Tensor, b: Tensor) => R.conv(a, b, opts) };
      const want = withBackend('webasm', () => evaluate(opCase, c.seed + 2)).map((t) => t.dataSync());
      const run = await runAsPlan((ins) => evaluate({ ...opCase, inputs: ins }, c.seed + 2), opCase.inputs, 'dense conv');
      passes += run.dispatchNames.filter((n) => n === 'conv-im2col').length;
      want.forEach((v, k) => {
        const d = relDiff(run.got[k], v);
        if (!(d <= 1e-5)) fail(`x [${x}], w [${w}], ${JSON.stringify(opts)}: result ${k} (y, dx, dw) is ${d.toExponential(2)} of max|webasm| off`);
        worst = Math.max(worst, d);
      });
    }
    if (passes < 2 * cases.length) fail(`only ${passes} im2col passes in ${cases.length} cases: the dense convolutions did not take the matmul path (forward and dw each run one)`);
    return `${cases.length} convolutions (forward, dx, dw), ${passes} im2col passes, equal to webasm (worst ${worst.toExponential(1)} of max|webasm|)`;
  });
}

// ---------------------------------------------------------------------------------------------
// A training step

/** The small video Rev-MViT of the shared fixtures (revmvit_video_conv_avg_full): pooling, relative positions, conv patches. */
export const SMALL_REVMVIT = {
  DATA: { NUM_FRAMES: 4, TRAIN_CROP_SIZE: 16, TEST_CROP_SIZE: 16, INPUT_CHANNEL_NUM: [3] },
  MODEL: { NUM_CLASSES: 10, DROPOUT_RATE: 0.0, HEAD_ACT: 'softmax' },
  MVIT: {
    PATCH_2D: false, PATCH_KERNEL: [3, 3, 3], PATCH_STRIDE: [2, 2, 2], PATCH_PADDING: [1, 1, 1],
    EMBED_DIM: 8, NUM_HEADS: 1, DEPTH: 5, MLP_RATIO: 4.0, QKV_BIAS: false, SEPARATE_QKV: false, MODE: 'conv',
    CLS_EMBED_ON: false, USE_ABS_POS: true, SEP_POS_EMBED: true,
    DIM_MUL: [[1, 2.0], [3, 2.0]], HEAD_MUL: [[1, 2.0], [3, 2.0]], POOL_Q_STRIDE: [[1, 1, 2, 2], [3, 1, 2, 2]],
    POOL_KVQ_KERNEL: [3, 3, 3], POOL_KV_STRIDE_ADAPTIVE: [1, 4, 4],
    REL_POS_SPATIAL: true, REL_POS_TEMPORAL: true, RESIDUAL_POOLING: true, USE_MEAN_POOLING: false,
    DROPOUT_RATE: 0.0, DROPPATH_RATE: 0.0,
    REV: { ENABLE: true, BUFFER_LAYERS: [1, 3], RES_PATH: 'conv', PRE_Q_FUSION: 'avg', RESPATH_FUSE: 'concat' },
  },
};

export interface StepLawReport extends PlanLawResult {
  /** Device work per steady-state step (the mean of the measured steps). */
  readonly perStep?: WebGPUCounters;
  readonly losses?: readonly number[];
  /** Ops of the compiled step that ran their gpu.js kernel (no WGSL form), with counts. */
  readonly gpujsOps?: readonly (readonly [string, number])[];
}

/**
 * A Rev-MViT AdamW step compiled for the device (DeviceTrainer: traced by jit, replayed) against
 * the library's eager step (valueAndGrad, crossEntropy with label smoothing, clipGradNorm, adamwUpdate
 * on webasm, as the training loop runs them) over `steps + 1` batches
 * with a changing learning rate: equal losses and parameters; after the warm-up step each step makes at
 * most 4 submissions, exactly 1 readback, and creates no pipeline and no buffer.
 */
export async function stepLaw(opts: { batch?: number; steps?: number; config?: object; mode?: 'reversible' | 'store'; dropout?: boolean } = {}): Promise<StepLawReport> {
  const batch = opts.batch ?? 2;
  const steps = opts.steps ?? 3;
  const mode = opts.mode ?? 'reversible';
  const base = (opts.config ?? SMALL_REVMVIT) as typeof SMALL_REVMVIT;
  // With dropout and drop path the masks come from the step's key: the same on the host and the device.
  const config = opts.dropout === true ? { ...base, MODEL: { ...base.MODEL, DROPOUT_RATE: 0.3 }, MVIT: { ...base.MVIT, DROPOUT_RATE: 0.1, DROPPATH_RATE: 0.2 } } : base;
  let perStep: WebGPUCounters | undefined;
  let losses: number[] | undefined;
  let gpujs: (readonly [string, number])[] | undefined;
  const result = await law(`${mode} AdamW training step${opts.dropout === true ? ' with dropout and drop path' : ''} replayed on the device (b${batch}, ${steps} steps)`, async () => {
    const parsed = parseConfig(config);
    if (E.isLeft(parsed)) fail(formatProblems(parsed.left));
    const cfg = parsed.right;
    const model = buildModel(cfg);
    const classes = cfg.MODEL.NUM_CLASSES;
    const [kInit, kData, kStep] = split(key(2026), 3);
    const shape = [batch, cfg.DATA.INPUT_CHANNEL_NUM[0], cfg.DATA.NUM_FRAMES, cfg.DATA.TRAIN_CROP_SIZE, cfg.DATA.TRAIN_CROP_SIZE];
    const batches = Array.from({ length: steps + 1 }, (_, s) => ({
      x: withBackend('webasm', () => normal(foldIn(kData, s), shape)),
      labels: Array.from({ length: batch }, (_, i) => (i * 7 + s * 3) % classes),
      lr: 2e-3 * (1 - s / (2 * (steps + 1))),
    }));
    const p0 = withBackend('webasm', () => model.init(kInit));
    const hyper = { ...ADAMW_DEFAULTS, weightDecay: 0.05 };
    // Eager webasm: the library's step.
    const wantLoss: number[] = [];
    let p = p0;
    // Largest |gradient| per parameter over the steps: a parameter whose gradient is zero up to rounding
    // (a key-norm bias under softmax) takes AdamW steps on rounding noise, which no two backends share.
    let gradMax: number[] = [];
    withBackend('webasm', () => {
      let st = adamwInit(p);
      for (const [s, b] of batches.entries()) {
        const [loss, grads0] = R.valueAndGrad((q: typeof p) => crossEntropy(model.apply(q, b.x, foldIn(kStep, s + 1), { train: true, mode }), b.labels, 0.1))(p);
        const grads = clipGradNorm(grads0, 0.5).grads;
        const gm = flattenWithPaths(grads).map(([, g]) => g.dataSync().reduce((a, v) => Math.max(a, Math.abs(v)), 0));
        gradMax = gm.map((v, i) => Math.max(v, gradMax[i] ?? 0));
        wantLoss.push(loss.dataSync()[0]);
        const next = adamwUpdate(p, grads, st, { ...hyper, lr: b.lr }, model.noDecay);
        p = next.params;
        st = next.state;
      }
    });
    const trainer = await DeviceTrainer.create(model, p0, { batch, mode, hyper, key: kStep, labelSmoothing: 0.1, clip: 0.5 });
    try {
      const got: number[] = [];
      const run = async (s: number) => (await trainer.step(batches[s].x.dataSync(), batches[s].labels, { lr: batches[s].lr })).loss;
      got.push(await run(0)); // warm-up: the first run may still allocate (a readback staging buffer)
      const before = webgpuCounters();
      for (let s = 1; s <= steps; s++) got.push(await run(s));
      const total = counterDelta(before, webgpuCounters());
      perStep = Object.fromEntries(Object.entries(total).map(([k, v]) => [k, v / steps])) as unknown as WebGPUCounters;
      losses = got;
      if (total.submits > 4 * steps) fail(`${total.submits} submissions in ${steps} steps (at most 4 per step)`);
      if (total.readbacks !== steps) fail(`${total.readbacks} readbacks in ${steps} steps (1 per step)`);
      if (total.pipelines !== 0) fail(`${total.pipelines} pipelines created after the warm-up`);
      if (total.buffers !== 0) fail(`${total.buffers} buffers created after the warm-up`);
      got.forEach((l, s) => {
        if (!(Math.abs(l - wantLoss[s]) <= 1e-5 * Math.max(1, Math.abs(wantLoss[s])))) fail(`step ${s}: loss ${l}, eager webasm ${wantLoss[s]}`);
      });
      const want = flattenWithPaths(p);
      const have = flattenWithPaths(await trainer.params());
      let worst = 0;
      const noiseFloor = 1e-5 * Math.max(...gradMax);
      const noise = want.filter((_, i) => gradMax[i] <= noiseFloor).map(([name]) => name);
      for (let i = 0; i < want.length; i++) {
        if (gradMax[i] <= noiseFloor) continue;
        const d = relDiff(await have[i][1].data(), want[i][1].dataSync());
        // AdamW divides by sqrt(v): a parameter with small gradients moves by ~lr whatever their size, so
        // float32 rounding differences of its gradient show up at ~1e-4 of the parameter after a few steps.
        if (!(d <= 1e-3)) fail(`parameter ${want[i][0]} after ${steps + 1} steps: ${d.toExponential(2)} of its max off eager webasm`);
        worst = Math.max(worst, d);
      }
      const { dispatches, gpujsOps } = trainer.stats;
      gpujs = [...gpujsOps];
      return `${dispatches} dispatches; per step ${total.submits / steps} submission(s), ${total.readbacks / steps} readback(s), ` +
        `${total.pipelines} new pipelines, ${total.buffers} new buffers, ${(total.uploadBytes / steps / 1024).toFixed(1)} KiB uploaded; losses ${got.map((l) => l.toFixed(4)).join(' ')} = eager webasm; ` +
        `parameters within ${worst.toExponential(1)}${noise.length > 0 ? ` (not compared: ${noise.length} with gradients at rounding level, ${noise.slice(0, 2).join(', ')}${noise.length > 2 ? ', ...' : ''})` : ''}; gpu.js kernels for ${[...gpujsOps].map(([k, n]) => `${k} x${n}`).join(', ') || 'none'}`;
    } finally {
      trainer.destroy();
    }
  });
  return { ...result, perStep, losses, gpujsOps: gpujs };
}

/**
 * `jit(step)` on the webgpu backend (src/jit/webgpu.ts): a Rev-MViT training step (one-hot targets, SGD
 * with weight decay) fed its own parameters, against the same function eagerly on webasm over `steps + 1`
 * batches: equal losses and parameters; after the first call each call makes at most 4 submissions,
 * exactly 1 readback (the loss), creates no pipeline and no buffer, and uploads only the batch.
 */
export async function jitStepLaw(opts: { batch?: number; steps?: number } = {}): Promise<StepLawReport> {
  const batch = opts.batch ?? 2;
  const steps = opts.steps ?? 3;
  let perStep: WebGPUCounters | undefined;
  let losses: number[] | undefined;
  const result = await law(`jit(step) on webgpu: a Rev-MViT step replayed with its parameters on the device (b${batch}, ${steps} steps)`, async () => {
    const parsed = parseConfig(SMALL_REVMVIT);
    if (E.isLeft(parsed)) fail(formatProblems(parsed.left));
    const cfg = parsed.right;
    const model = buildModel(cfg);
    const classes = cfg.MODEL.NUM_CLASSES;
    const [kInit, kData, kStep] = split(key(2027), 3);
    const shape = [batch, cfg.DATA.INPUT_CHANNEL_NUM[0], cfg.DATA.NUM_FRAMES, cfg.DATA.TRAIN_CROP_SIZE, cfg.DATA.TRAIN_CROP_SIZE];
    const batches = Array.from({ length: steps + 1 }, (_, s) =>
      withBackend('webasm', () => {
        const t = new Float32Array(batch * classes);
        for (let i = 0; i < batch; i++) t[i * classes + ((i * 5 + s) % classes)] = 1;
        return { x: normal(foldIn(kData, s), shape), t: R.tensor(t, [batch, classes]) };
      }),
    );
    const stepFn = (p: ReturnType<typeof model.init>, x: Tensor, t: Tensor) => {
      const [loss, grads] = R.valueAndGrad((q: typeof p) => R.mul(R.neg(R.sum(R.mul(R.logSoftmax(model.apply(q, x, kStep, { train: true }), -1), t))), 1 / batch))(p);
      return { loss, params: R.zipTrees([p, grads], ([w, g]) => R.sub(R.mul(w, 1 - 1e-4), R.mul(g, 0.05))) };
    };
    const p0 = withBackend('webasm', () => model.init(kInit));
    const want: number[] = [];
    let pe = p0;
    withBackend('webasm', () => {
      for (const b of batches) {
        const r = stepFn(pe, b.x, b.t);
        want.push(r.loss.dataSync()[0]);
        pe = r.params;
      }
    });
    const step = withBackend('webgpu', () => jit(stepFn));
    let p = p0;
    const got: number[] = [];
    let total: WebGPUCounters | undefined;
    await withBackendAsync('webgpu', async () => {
      for (let s = 0; s <= steps; s++) {
        const before = webgpuCounters();
        const r = step(p, batches[s].x, batches[s].t);
        p = r.params;
        got.push(await r.loss.item());
        if (s === 1) total = counterDelta(before, webgpuCounters());
        else if (s > 1) total = Object.fromEntries(Object.entries(counterDelta(before, webgpuCounters())).map(([k, v]) => [k, v + (total as unknown as Record<string, number>)[k]])) as unknown as WebGPUCounters;
      }
    });
    const t = total!;
    perStep = Object.fromEntries(Object.entries(t).map(([k, v]) => [k, v / steps])) as unknown as WebGPUCounters;
    losses = got;
    if (t.submits > 4 * steps) fail(`${t.submits} submissions in ${steps} steps (at most 4 per step)`);
    if (t.readbacks !== steps) fail(`${t.readbacks} readbacks in ${steps} steps (1 per step: the loss)`);
    if (t.pipelines !== 0) fail(`${t.pipelines} pipelines created after the first call`);
    if (t.buffers !== 0) fail(`${t.buffers} buffers created after the first call`);
    const batchBytes = (shape.reduce((a, b) => a * b, 1) + batch * classes) * 4;
    if (t.uploadBytes > steps * batchBytes) fail(`${t.uploadBytes} bytes uploaded in ${steps} steps; the batches are ${batchBytes} bytes each (the parameters must stay on the device)`);
    got.forEach((l, s) => {
      if (!(Math.abs(l - want[s]) <= 1e-5 * Math.max(1, Math.abs(want[s])))) fail(`step ${s}: loss ${l}, eager webasm ${want[s]}`);
    });
    const a = flattenWithPaths(p);
    const b = flattenWithPaths(pe);
    let worst = 0;
    for (let i = 0; i < a.length; i++) {
      const d = relDiff(await a[i][1].data(), b[i][1].dataSync());
      if (!(d <= 1e-4)) fail(`parameter ${b[i][0]}: ${d.toExponential(2)} of its max off eager webasm`);
      worst = Math.max(worst, d);
    }
    return `per step ${t.submits / steps} submissions, ${t.readbacks / steps} readback, ${t.pipelines} new pipelines, ${t.buffers} new buffers, ${(t.uploadBytes / steps / 1024).toFixed(1)} KiB uploaded (the batch); ` +
      `losses ${got.map((l) => l.toFixed(4)).join(' ')} = eager webasm; parameters within ${worst.toExponential(1)}`;
  });
  return { ...result, perStep, losses };
}

/** `fn` with `backend` current while it runs (across its awaits), restoring the previous one after. */
async function withBackendAsync<A>(backend: 'webgpu', fn: () => Promise<A>): Promise<A> {
  const previous = getBackend();
  setBackend(backend);
  try {
    return await fn();
  } finally {
    setBackend(previous);
  }
}
