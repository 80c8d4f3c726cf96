/**
 * The three ways every op can run agree: the host fast paths (webasm backend), the gpu.js webasm
 * kernels (webasm with setFastPaths(false)) and the gpu.js cpu kernels (the reference). Forward values
 * and VJPs (which exercise the gradient kernels: convTranspose, convWeightGrad, maxPoolGrad,
 * avgPoolGrad, scatterAdd, embed, ...) are compared for generated shapes. Then a few ops are checked
 * against independent float64 references written here.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fc from 'fast-check';
import { withBackend } from '../src/backend/backend.ts';
import * as R from '../src/index.ts';
import type { Tensor } from '../src/index.ts';
import { setWasmKernels, CHUNK_FLOATS } from '../src/backend/wasm-memory.ts';
import { setPoisonedOutputs } from '../src/tensor/exec.ts';
import { setWasmFma, wasmRelaxedSimdAvailable } from '../src/backend/wasm-gemm.ts';
import { gelu, geluGrad, layerNormAffine, normalizeGrad, normalizeLast, softmaxGrad, softmaxLast } from '../src/tensor/fused.ts';
import { assertProperty, broadcastShapesArb, distinct, rand, maxAbs, MODES, OP_CASES, rng, seedArb, shapeArb, sizeOf, uniform, type OpCase } from './helpers.ts';

const leavesOf = (t: Tensor | Tensor[]): Tensor[] => (Array.isArray(t) ? t : [t]);

/**
 * Ops that are sums of products of their inputs with positive coefficients (or copies; not sub or neg,
 * whose absolute-value evaluation is not Σ|terms|): for these the float32 error of any
 * summation order is bounded by γ_n · Σ|terms| (n terms, γ_n = n·2^-24 / (1 - n·2^-24)), and Σ|terms| of
 * every output element is the op itself evaluated at |inputs| (and, for the VJP, at |cotangent|).
 */
const MULTILINEAR = new Set(['add', 'mul', 'sum', 'mean', 'broadcastTo', 'reshape', 'permute', 'transpose', 'slice', 'embed', 'concat', 'split', 'chunk', 'stack', 'take', 'scatterAdd', 'matmul', 'conv', 'depthwiseConv3d', 'avgPool3d', 'cumsum', 'einsum']);

/**
 * |got - want| <= 1e-5 · max|want| + floor + γ_n · scale_i elementwise. The reference accumulates in
 * float64 (gpu.js cpu kernels are JavaScript); host loops and wasm kernels accumulate in float32. For a
 * multilinear op, `scale` (the op at absolute values) bounds each element's accumulated rounding,
 * wherever cancellation makes the result small (a [1, 2] @ [2, 1] product of 3.7e-4 from terms of 0.3
 * rounds at ~1e-8, far above 1e-5 of the result); n is the largest input size, at least the number of
 * terms of any output element. Other ops: the forward floor (1e-30) only lets exact zeros match -0; the
 * VJP floor is 1e-6, for gradients that are small differences of O(1) terms (layerNorm over 2 values:
 * the output is ±1 whatever x is, so dx is ~1e-4, left over from terms of size |u| / std ~ 1, rounded at
 * ~1e-7). Generated inputs and cotangents are O(1); real kernel bugs show up as O(1e-2) differences.
 */
function agree(got: readonly Tensor[], want: readonly Tensor[], what: string, floor = 1e-30, scale: readonly Tensor[] | null = null, n = 1): void {
  assert.is(got.length, want.length, `${what}: number of outputs`);
  const gamma = (n * 2 ** -24) / (1 - n * 2 ** -24);
  got.forEach((g, k) => {
    assert.equal([...g.shape], [...want[k].shape], `${what}: shape of output ${k}`);
    const a = g.dataSync();
    const b = want[k].dataSync();
    const s = scale === null ? null : scale[k].dataSync();
    const base = 1e-5 * maxAbs(b) + floor;
    for (let i = 0; i < a.length; i++) {
      const tol = s === null ? base : base + gamma * Math.abs(s[i]); // |.|: neg at |inputs| is -|x|
      if (!(Math.abs(a[i] - b[i]) <= tol) && !(Number.isNaN(a[i]) && Number.isNaN(b[i]))) {
        throw new Error(`${what}: output ${k} element ${i} of [${g.shape}]: ${a[i]} vs reference ${b[i]} (tol ${tol}${s === null ? '' : `, Σ|terms| ${s[i]}`})`);
      }
    }
  });
}

/**
 * Forward outputs and input cotangents (for a fixed random output cotangent) of a case in one mode;
 * with `abs`, of |inputs| at |cotangent| (the error scale of a multilinear op).
 */
function evaluate(c: OpCase, seed: number, abs = false): { out: Tensor[]; grads: Tensor[] } {
  const inputs = abs ? c.inputs.map((t) => R.abs(t)) : c.inputs;
  const [y, pullback] = R.vjp(c.f, ...inputs);
  const ys = leavesOf(y);
  const cts = ys.map((t, k) => R.tensor(uniform(t.size, seed + k).map((v) => (abs ? Math.abs(v) : v)), [...t.shape]));
  const grads = pullback((Array.isArray(y) ? cts : cts[0]) as never) as Tensor[];
  const wrt = c.wrt ?? c.inputs.map((_, i) => i);
  return { out: ys, grads: wrt.map((i) => grads[i]) };
}

for (const entry of OP_CASES) {
  test(`${entry.name}: fast paths, webasm kernels and cpu kernels agree (values and VJP)`, () => {
    assertProperty(
      fc.property(entry.arb, seedArb, (p, seed) => {
        const [ref, ...others] = [MODES[2], MODES[0], MODES[1]];
        const want = ref.run(() => evaluate(entry.build(p), seed));
        const linear = MULTILINEAR.has(entry.name);
        const scale = linear ? ref.run(() => evaluate(entry.build(p), seed, true)) : null;
        const c = entry.build(p);
        // einsum multiplies operands: an output element (or gradient element) sums at most Π sizes terms.
        const n = Math.max(1, ...c.inputs.map((t) => t.size), ...want.out.map((t) => t.size), entry.name === 'einsum' ? c.inputs.reduce((a, t) => a * t.size, 1) : 1);
        for (const mode of others) {
          const got = mode.run(() => evaluate(entry.build(p), seed));
          agree(got.out, want.out, `${entry.name} forward, ${mode.name} vs ${ref.name}`, 1e-30, scale?.out ?? null, n);
          agree(got.grads, want.grads, `${entry.name} vjp, ${mode.name} vs ${ref.name}`, linear ? 1e-30 : 1e-6, scale?.grads ?? null, n);
        }
      }),
      { numRuns: 25 },
    );
  });
}

// Regression: kernel cache keys used to leave out the input buffer sizes, and gpu.js's webasm kernels
// fix each argument's size on the first call, so a second slice with the same read pattern over an
// input of another size threw `argument "a0" changed size ...; use dynamicArguments` (found by the
// cross-mode properties above; cache keys include sizes since 6c95595).
test('webasm kernels: two slices with the same read pattern over inputs of different sizes (regression)', () => {
  R.clearKernelCache();
  for (const mode of MODES) {
    mode.run(() => {
      assert.equal(Array.from(R.slice(R.tensor([1, 2, 3]), [0], [1]).dataSync()), [1], `${mode.name}: first`);
      assert.equal(Array.from(R.slice(R.tensor([7]), [0], [1]).dataSync()), [7], `${mode.name}: second`);
    });
  }
});

// Regression (src/tensor/exec.ts execute once short-circuited only an empty *output*): an op with an
// empty input but a non-empty output (the gradient of an empty slice is an embed of a [0] tensor; pad of
// a [0] tensor; sum over an empty axis) passed a zero-length Float32Array to the gpu.js webasm kernel,
// which crashed inside gpu.js (TypeError from gpu.js/src/utils.js getDimensions) instead of returning the
// fill value / zeros as 'cpu' and the fast paths do.
test('webasm kernels: ops with an empty input and a non-empty output (regression)', () => {
  for (const mode of MODES) {
    mode.run(() => {
      assert.equal(Array.from(R.embed(R.zeros([0]), [1], [0], [1]).dataSync()), [0], `${mode.name}: embed`);
      assert.equal(Array.from(R.pad(R.zeros([0]), [[1, 1]], 2).dataSync()), [2, 2], `${mode.name}: pad`);
      assert.equal(Array.from(R.sum(R.zeros([0, 2]), 0).dataSync()), [0, 0], `${mode.name}: sum over an empty axis`);
    });
  }
});

/** Non-differentiable elementwise ops, with many ties (values from a small integer set). */
const COMPARISONS = ['greater', 'greaterEqual', 'less', 'lessEqual', 'equal', 'notEqual'] as const;

test('sign and comparisons agree across modes (with ties)', () => {
  assertProperty(
    fc.property(broadcastShapesArb(2), seedArb, (s, seed) => {
      const ints = (shape: number[], k: number) => R.tensor(uniform(sizeOf(shape), seed + k, -2, 2).map(Math.round), shape);
      const run = () => {
        const a = ints(s.shapes[0], 0);
        const b = ints(s.shapes[1], 1);
        return [R.sign(a), ...COMPARISONS.map((name) => R[name](a, b))];
      };
      const want = MODES[2].run(run);
      for (const mode of MODES.slice(0, 2)) agree(mode.run(run), want, `sign/comparisons, ${mode.name}`);
      // Exact semantics on the reference: results are 0/1 and match JavaScript's comparisons.
      const a = ints(s.shapes[0], 0);
      const b = ints(s.shapes[1], 1);
      const ab = R.broadcastTo(a, s.out).dataSync();
      const bb = R.broadcastTo(b, s.out).dataSync();
      const js = { greater: (x: number, y: number) => x > y, greaterEqual: (x: number, y: number) => x >= y, less: (x: number, y: number) => x < y, lessEqual: (x: number, y: number) => x <= y, equal: (x: number, y: number) => x === y, notEqual: (x: number, y: number) => x !== y };
      COMPARISONS.forEach((name, k) => {
        const got = Array.from(want[k + 1].dataSync());
        assert.equal(got, Array.from(ab, (x, i) => (js[name](x, bb[i]) ? 1 : 0)), name);
      });
    }),
    { numRuns: 25 },
  );
});

// --- float64 references --------------------------------------------------------------------------

const ERF_KNOWN: readonly [number, number][] = [
  [0.5, 0.5204998778130465],
  [1, 0.8427007929497149],
  [2, 0.9953222650189527],
];

/** erf by its Maclaurin series in float64 (converges for all x; |x| <= 3 loses < 5 digits of 16). */
function erfSeries(x: number): number {
  let term = x;
  let total = x;
  for (let n = 1; n < 200; n++) {
    term *= (-x * x) / n;
    const add = term / (2 * n + 1);
    total += add;
    if (Math.abs(add) < 1e-17 * Math.abs(total)) break;
  }
  return (2 / Math.sqrt(Math.PI)) * total;
}

test('erf: the float64 series reproduces the known values (checks the reference itself)', () => {
  for (const [x, want] of ERF_KNOWN) assert.ok(Math.abs(erfSeries(x) - want) < 1e-14, `series erf(${x})`);
});

test('erf agrees with known values and with a float64 series to float32 accuracy, in every mode', () => {
  const xs = [...ERF_KNOWN.map(([x]) => x), ...ERF_KNOWN.map(([x]) => -x), 0, 1e-3, -0.25, 0.75, 1.5, 2.5, -3, 3, 5, -6];
  for (const mode of MODES) {
    const got = mode.run(() => R.erf(R.tensor(xs)).dataSync());
    xs.forEach((x, i) => {
      const want = Math.abs(x) > 4 ? Math.sign(x) : erfSeries(x);
      // float32 has ulp 6e-8 near 1; the polynomial is accurate to a few ulps.
      assert.ok(Math.abs(got[i] - want) <= 3e-7, `${mode.name}: erf(${x}) = ${got[i]}, want ${want}`);
    });
    ERF_KNOWN.forEach(([x, want], i) => assert.ok(Math.abs(got[i] - want) <= 3e-7, `${mode.name}: erf(${x})`));
  }
});

/** Row-major index helpers for the references. */
const idx = (shape: readonly number[], coords: readonly number[]) => coords.reduce((o, c, d) => o * shape[d] + c, 0);

function* coordsOf(shape: readonly number[]): Generator<number[]> {
  const n = sizeOf(shape);
  for (let i = 0; i < n; i++) {
    const c = new Array(shape.length);
    let r = i;
    for (let d = shape.length - 1; d >= 0; d--) {
      c[d] = r % shape[d];
      r = Math.floor(r / shape[d]);
    }
    yield c;
  }
}

/** |got - want| <= rtol * max|want| + atol with a float64 reference. */
function near(got: Float32Array, want: Float64Array | number[], rtol: number, what: string, atol = 0): void {
  assert.is(got.length, want.length, `${what}: length`);
  const tol = rtol * maxAbs(want) + atol;
  for (let i = 0; i < got.length; i++) {
    assert.ok(Math.abs(got[i] - want[i]) <= tol, `${what}: element ${i}: ${got[i]} vs ${want[i]} (tol ${tol})`);
  }
}

test('sum over random axes matches a float64 reference', () => {
  assertProperty(
    fc.property(
      shapeArb(0, 4).chain((shape) => fc.record({ shape: fc.constant(shape), axes: fc.subarray([...shape.keys()]), keepdims: fc.boolean(), seed: seedArb })),
      ({ shape, axes, keepdims, seed }) => {
        const data = uniform(sizeOf(shape), seed, -10, 10);
        const kept = shape.map((d, i) => (axes.includes(i) ? 1 : d));
        const want = new Float64Array(sizeOf(kept));
        for (const c of coordsOf(shape)) want[idx(kept, c.map((v, i) => (axes.includes(i) ? 0 : v)))] += data[idx(shape, c)];
        for (const mode of MODES) {
          const got = mode.run(() => R.sum(R.tensor(data, shape), axes, keepdims));
          assert.equal([...got.shape], keepdims ? kept : shape.filter((_, i) => !axes.includes(i)), `${mode.name}: shape`);
          // Cancellation: error relative to the sum of |terms| (<= 256 * 10), not to the result.
          near(got.dataSync(), want, 0, `${mode.name}: sum`, 1e-6 * 256 * 10);
        }
      },
    ),
    { numRuns: 25 },
  );
});

test('matmul (with batch broadcasting and transposes) matches a float64 reference', () => {
  assertProperty(
    fc.property(
      fc.record({ batch: fc.integer({ min: 1, max: 3 }), m: fc.integer({ min: 1, max: 5 }), k: fc.integer({ min: 1, max: 9 }), n: fc.integer({ min: 1, max: 5 }), transA: fc.boolean(), transB: fc.boolean(), seed: seedArb }),
      ({ batch, m, k, n, transA, transB, seed }) => {
        const a = uniform(batch * m * k, seed);
        const b = uniform(k * n, seed + 1);
        const A = (z: number, i: number, j: number) => a[z * m * k + (transA ? j * m + i : i * k + j)];
        const B = (j: number, q: number) => b[transB ? q * k + j : j * n + q];
        const want = new Float64Array(batch * m * n);
        for (let z = 0; z < batch; z++) for (let i = 0; i < m; i++) for (let q = 0; q < n; q++) {
          let s = 0;
          for (let j = 0; j < k; j++) s += A(z, i, j) * B(j, q);
          want[(z * m + i) * n + q] = s;
        }
        for (const mode of MODES) {
          const got = mode.run(() =>
            R.matmul(R.tensor(a, [batch, ...(transA ? [k, m] : [m, k])]), R.tensor(b, transB ? [n, k] : [k, n]), { transA, transB }),
          );
          assert.equal([...got.shape], [batch, m, n]);
          near(got.dataSync(), want, 0, `${mode.name}: matmul`, 1e-6 * k);
        }
      },
    ),
    { numRuns: 25 },
  );
});

/** conv1d in float64: y[b, co, o] = Σ_ci,t x[b, g·Cg + ci, o·s − p + t] · w[co, ci, t], and its VJP at cotangent u. */
function conv1dRef(x: Float32Array, w: Float32Array, u: Float32Array, d: { b: number; groups: number; cg: number; cpg: number; k: number; L: number; stride: number; pad: number }) {
  const { b, groups, cg, cpg, k, L, stride, pad } = d;
  const cin = cg * groups;
  const cout = cpg * groups;
  const outL = Math.floor((L + 2 * pad - k) / stride) + 1;
  const y = new Float64Array(b * cout * outL);
  const dx = new Float64Array(x.length);
  const dw = new Float64Array(w.length);
  for (let bi = 0; bi < b; bi++) for (let co = 0; co < cout; co++) for (let o = 0; o < outL; o++) {
    const g = Math.floor(co / cpg);
    const yi = (bi * cout + co) * outL + o;
    for (let ci = 0; ci < cg; ci++) for (let t = 0; t < k; t++) {
      const i = o * stride - pad + t;
      if (i < 0 || i >= L) continue;
      const xi = (bi * cin + g * cg + ci) * L + i;
      const wi = (co * cg + ci) * k + t;
      y[yi] += x[xi] * w[wi];
      dx[xi] += u[yi] * w[wi];
      dw[wi] += u[yi] * x[xi];
    }
  }
  return { y, dx, dw, outL, cin, cout };
}

const conv1dArb = (dense: boolean) =>
  fc.record({
    b: fc.integer({ min: 1, max: 2 }),
    // Dense: groups 1 and Cin·K >= 8, the host's im2col + matmul path (src/tensor/conv.ts convViaMatmul).
    groups: dense ? fc.constant(1) : fc.integer({ min: 1, max: 3 }),
    cg: dense ? fc.integer({ min: 2, max: 4 }) : fc.integer({ min: 1, max: 2 }),
    cpg: fc.integer({ min: 1, max: 3 }),
    k: dense ? fc.integer({ min: 4, max: 5 }) : fc.integer({ min: 1, max: 3 }),
    extra: fc.integer({ min: 0, max: 4 }),
    stride: fc.integer({ min: 1, max: 3 }),
    pad: fc.integer({ min: 0, max: 2 }),
    seed: seedArb,
  });

for (const dense of [false, true]) {
  test(`conv1d (${dense ? 'dense, through im2col + matmul on webasm' : 'stride, padding, groups'}): forward and both gradients match a float64 reference`, () => {
    assertProperty(
      fc.property(conv1dArb(dense), ({ b, groups, cg, cpg, k, extra, stride, pad, seed }) => {
        const L = k + extra;
        const cin = cg * groups;
        const x = uniform(b * cin * L, seed);
        const w = uniform(cpg * groups * cg * k, seed + 1);
        const outL = Math.floor((L + 2 * pad - k) / stride) + 1;
        const u = uniform(b * cpg * groups * outL, seed + 2);
        const ref = conv1dRef(x, w, u, { b, groups, cg, cpg, k, L, stride, pad });
        for (const mode of MODES) {
          const [y, gx, gw] = mode.run(() => {
            const [out, pullback] = R.vjp((a: Tensor, c: Tensor) => R.conv(a, c, { stride, padding: pad, groups }), R.tensor(x, [b, cin, L]), R.tensor(w, [ref.cout, cg, k]));
            assert.equal([...out.shape], [b, ref.cout, ref.outL]);
            const [da, dc] = pullback(R.tensor(u, [b, ref.cout, ref.outL])) as Tensor[];
            return [out.dataSync(), da.dataSync(), dc.dataSync()];
          });
          // float32 accumulation of at most Cg·K (forward, dx) or B·outL (dw) products of terms in [-1, 1].
          near(y, ref.y, 0, `${mode.name}: conv1d`, 1e-6 * cg * k);
          near(gx, ref.dx, 0, `${mode.name}: conv1d dx`, 1e-6 * cpg * k);
          near(gw, ref.dw, 0, `${mode.name}: conv1d dw`, 1e-6 * b * ref.outL);
        }
      }),
      { numRuns: 25 },
    );
  });
}

test('maxPool3d and avgPool3d match float64 references (avg counts padding, as PyTorch)', () => {
  assertProperty(
    fc.property(
      fc.record({ c: fc.integer({ min: 1, max: 2 }), dims: fc.array(fc.integer({ min: 1, max: 5 }), { minLength: 3, maxLength: 3 }), kernel: fc.array(fc.integer({ min: 1, max: 3 }), { minLength: 3, maxLength: 3 }), stride: fc.array(fc.integer({ min: 1, max: 2 }), { minLength: 3, maxLength: 3 }), padMask: fc.array(fc.boolean(), { minLength: 3, maxLength: 3 }), seed: seedArb }),
      ({ c, dims, kernel, stride, padMask, seed }) => {
        const k = kernel.map((v, i) => Math.min(v, dims[i]));
        const padding = k.map((v, i) => (padMask[i] ? Math.floor(v / 2) : 0));
        const shape = [c, ...dims];
        const x = uniform(sizeOf(shape), seed);
        const out = dims.map((n, i) => Math.floor((n + 2 * padding[i] - k[i]) / stride[i]) + 1);
        const wantMax = new Float64Array(c * sizeOf(out));
        const wantAvg = new Float64Array(c * sizeOf(out));
        for (const [ch, z, y, xx] of coordsOf([c, ...out])) {
          let best = -Infinity;
          let total = 0;
          for (const [a, b2, d] of coordsOf(k)) {
            const p = [z * stride[0] - padding[0] + a, y * stride[1] - padding[1] + b2, xx * stride[2] - padding[2] + d];
            if (p.some((v, i) => v < 0 || v >= dims[i])) continue;
            const v = x[idx(shape, [ch, ...p])];
            best = Math.max(best, v);
            total += v;
          }
          wantMax[idx([c, ...out], [ch, z, y, xx])] = best;
          wantAvg[idx([c, ...out], [ch, z, y, xx])] = total / sizeOf(k);
        }
        for (const mode of MODES) {
          const [mx, av] = mode.run(() => [R.maxPool3d(R.tensor(x, shape), k, stride, padding), R.avgPool3d(R.tensor(x, shape), k, stride, padding)]);
          assert.equal([...mx.shape], [c, ...out]);
          near(mx.dataSync(), wantMax, 0, `${mode.name}: maxPool3d`);
          near(av.dataSync(), wantAvg, 1e-6, `${mode.name}: avgPool3d`);
        }
      },
    ),
    { numRuns: 25 },
  );
});

test('softmax and layerNorm match float64 references', () => {
  assertProperty(
    fc.property(fc.record({ rows: fc.integer({ min: 1, max: 4 }), n: fc.integer({ min: 1, max: 8 }), seed: seedArb }), ({ rows, n, seed }) => {
      const x = uniform(rows * n, seed, -20, 20);
      const w = uniform(n, seed + 1);
      const b = uniform(n, seed + 2);
      const sm = new Float64Array(rows * n);
      const ln = new Float64Array(rows * n);
      let minStd = Infinity;
      for (let r = 0; r < rows; r++) {
        const row = Array.from(x.subarray(r * n, (r + 1) * n));
        const m = Math.max(...row);
        const z = row.reduce((s, v) => s + Math.exp(v - m), 0);
        const mu = row.reduce((s, v) => s + v, 0) / n;
        const variance = row.reduce((s, v) => s + (v - mu) ** 2, 0) / n;
        minStd = Math.min(minStd, Math.sqrt(variance + 1e-5));
        row.forEach((v, i) => {
          sm[r * n + i] = Math.exp(v - m) / z;
          ln[r * n + i] = ((v - mu) / Math.sqrt(variance + 1e-5)) * w[i] + b[i];
        });
      }
      for (const mode of MODES) {
        const [s, l] = mode.run(() => [R.softmax(R.tensor(x, [rows, n])), R.layerNorm(R.tensor(x, [rows, n]), R.tensor(w), R.tensor(b))]);
        near(s.dataSync(), sm, 1e-6, `${mode.name}: softmax`, 1e-7);
        // Normalised values are O(1); float32 mean/variance of values up to 20 lose ~1e-6 relative, and
        // x - mean (error ~20 * 2^-24 per rounding) is divided by the row's std: the absolute floor scales
        // with 20 / std, which matters for nearly constant rows.
        near(l.dataSync(), ln, 1e-5, `${mode.name}: layerNorm`, Math.max(1e-5, (8 * 20 * 2 ** -24) / minStd));
      }
    }),
    { numRuns: 25 },
  );
});

test('gelu matches 0.5 x (1 + erf(x / sqrt 2)) in float64', () => {
  const xs = Array.from({ length: 41 }, (_, i) => -4 + i * 0.2);
  for (const mode of MODES) {
    const got = mode.run(() => R.gelu(R.tensor(xs)).dataSync());
    near(got, xs.map((x) => 0.5 * x * (1 + erfSeries(x / Math.SQRT2))), 0, `${mode.name}: gelu`, 1e-6);
  }
});

test('every backend gives the float64 result whatever ran before it (no state leaks between backends)', () => {
  // sum(softmax(permute(x, [2, 0, 1]), axis 1), axes [0, 2]) for x [2, 3, 4], computed here in float64.
  const r = rng(3);
  const data = Float32Array.from({ length: 24 }, () => r());
  const x = R.tensor(data, [2, 3, 4]);
  const want = [0, 0];
  for (let c = 0; c < 4; c++) {
    for (let b = 0; b < 3; b++) {
      // permuted p[c, a, b] = x[a, b, c]; softmax over a (size 2), then summed over c and b, kept axis a.
      const e = [0, 1].map((a) => Math.exp(data[a * 12 + b * 4 + c]));
      [0, 1].forEach((a) => (want[a] += e[a] / (e[0] + e[1])));
    }
  }
  const run = () => Array.from(R.sum(R.softmax(R.permute(x, [2, 0, 1]), 1), [0, 2]).dataSync());
  for (const order of [['cpu', 'webasm', 'cpu'], ['webasm', 'cpu', 'webasm']] as const) {
    for (const backend of order) {
      const got = withBackend(backend, run);
      assert.is(got.length, 2);
      got.forEach((v, i) => assert.ok(Math.abs(v - want[i]) <= 1e-6 * 12, `${order.join(' -> ')}: ${backend} gave ${got}, float64 ${want}`));
    }
  }
});

test('depthwiseConv3d on channels-last equals conv with groups = C on channels-first', () => {
  assertProperty(
    fc.property(
      fc.record({ n: fc.integer({ min: 1, max: 2 }), c: fc.integer({ min: 1, max: 4 }), d: fc.integer({ min: 1, max: 4 }), hw: fc.integer({ min: 2, max: 6 }), k: fc.integer({ min: 1, max: 3 }), s: fc.integer({ min: 1, max: 2 }), seed: seedArb }),
      ({ n, c, d, hw, k, s, seed }) => {
        const kd = Math.min(k, d);
        const x = R.tensor(uniform(n * d * hw * hw * c, seed), [n, d, hw, hw, c]);
        const w = R.tensor(uniform(c * kd * k * k, seed + 1), [c, 1, kd, k, k]);
        const stride = [1, s, s];
        const padding = [Math.floor(kd / 2), Math.floor(k / 2), Math.floor(k / 2)];
        for (const mode of MODES) {
          const [ours, ref] = mode.run(() => [
            R.depthwiseConv3d(x, w, { stride, padding }),
            R.permute(R.conv(R.permute(x, [0, 4, 1, 2, 3]), w, { stride, padding, groups: c }), [0, 2, 3, 4, 1]),
          ]);
          near(ours.dataSync(), Float64Array.from(ref.dataSync()), 1e-6, `${mode.name}: depthwise vs grouped conv`, 1e-6);
        }
      },
    ),
    { numRuns: 15 },
  );
});

// --- generated wasm SIMD kernels ------------------------------------------------------------------

/**
 * The webasm fast paths run generated wasm SIMD (src/backend/wasm-rowops.ts and friends) unless
 * setWasmKernels(false) sends them to the TypeScript host loops. Both are compared with the cpu
 * kernels (float64 JavaScript). Row lengths 1..40 cover every remainder mod 4 (the partial-vector
 * path), one to several full vectors, and rows of length 1.
 */
const WASM_MODES: readonly { name: string; run: <A>(fn: () => A) => A }[] = [
  { name: 'webasm (wasm kernels)', run: (fn) => withBackend('webasm', fn) },
  { name: 'webasm (host loops)', run: (fn) => withBackend('webasm', () => withWasmKernels(false, fn)) },
  { name: 'webasm (wasm kernels, separate mul + add)', run: (fn) => withBackend('webasm', () => withoutFma(fn)) },
];

/** The kernels use fused multiply-add (relaxed SIMD) where the engine has it; this runs the other path. */
function withoutFma<A>(fn: () => A): A {
  const previous = setWasmFma(false);
  try {
    return fn();
  } finally {
    setWasmFma(previous);
  }
}

function withWasmKernels<A>(on: boolean, fn: () => A): A {
  const previous = setWasmKernels(on);
  try {
    return fn();
  } finally {
    setWasmKernels(previous);
  }
}

const ROW_KERNELS: readonly { name: string; two: boolean; run: (x: Tensor, g: Tensor) => Tensor }[] = [
  { name: 'softmax', two: false, run: (x) => softmaxLast(x) },
  { name: 'softmaxGrad', two: true, run: (x, g) => softmaxGrad(softmaxLast(x), g) },
  { name: 'normalize', two: false, run: (x) => normalizeLast(x, 1e-5) },
  { name: 'normalizeGrad', two: true, run: (x, g) => normalizeGrad(x, g, 1e-5) },
  { name: 'gelu', two: false, run: (x) => gelu(x) },
  { name: 'geluGrad', two: true, run: (x, g) => geluGrad(x, g) },
];

for (const k of ROW_KERNELS) {
  test(`${k.name}: wasm kernels, host loops and cpu kernels agree (rows of length 1..40)`, () => {
    assertProperty(
      fc.property(fc.record({ rows: fc.integer({ min: 1, max: 5 }), n: fc.integer({ min: 1, max: 40 }), seed: seedArb }), ({ rows, n, seed }) => {
        // Layer-norm rows of spread values (as the layerNorm op case): a near-constant row makes the
        // gradient a difference of terms ~1/std times larger than itself, which float32 kernels round.
        const xs = k.name.startsWith('normalize')
          ? Float32Array.from(Array.from({ length: rows }, (_, r) => Array.from(distinct(n, seed + r, 0.5))).flat())
          : uniform(rows * n, seed, -4, 4);
        const run = () => {
          const x = R.tensor(xs, [rows, n]);
          const g = R.tensor(uniform(rows * n, seed + 1), [rows, n]);
          return [k.run(x, g)];
        };
        const want = MODES[2].run(run);
        // The gradients are differences of O(1) terms (see `agree`): a 1e-6 floor.
        for (const mode of WASM_MODES) agree(mode.run(run), want, `${k.name} [${rows}, ${n}], ${mode.name}`, k.two ? 1e-6 : 1e-30);
      }),
      { numRuns: 40 },
    );
  });
}

test('relaxed SIMD (fused multiply-add) is on in Node: the engine has it or the V8 flag was switched on', () => {
  if (typeof process === 'object' && process.env.REVGRAD_RELAXED_SIMD !== '0') assert.ok(wasmRelaxedSimdAvailable());
});

test('row kernels: wasm and host loops agree on rows spanning several staging chunks and longer than one', () => {
  // CHUNK_FLOATS elements per staged chunk: 3 rows of 5001 per chunk, and a row of 20000 alone.
  for (const [rows, n] of [[7, 5001], [2, 20000], [CHUNK_FLOATS + 3, 1]] as const) {
    const run = () => {
      const x = R.tensor(uniform(rows * n, 17, -4, 4), [rows, n]);
      const g = R.tensor(uniform(rows * n, 18), [rows, n]);
      return ROW_KERNELS.map((k) => k.run(x, g));
    };
    agree(WASM_MODES[0].run(run), WASM_MODES[1].run(run), `row kernels [${rows}, ${n}]`, 1e-6);
  }
});

test('softmax: wasm kernels keep the host loops\' special values (-Infinity masks, NaN rows, huge logits)', () => {
  const rows = [
    [0, -Infinity, 1, -Infinity, 2],
    [NaN, 1, 2, 3, 4],
    [1e4, 1e4 - 1, -1e4, 0, 3],
    [100, 0, 1, -1, 2],  // e^(100 - the rest) overflows float32: the max must come from every lane
    [-Infinity, -Infinity, -Infinity, -Infinity, -Infinity],
    [Infinity, 0, 1, 2, 3],
  ];
  // Also inside rows of 23 (5 vectors: one unrolled group of 4 with an accumulator per vector, then a
  // leftover and a partial one), each special row placed at every offset, so each value meets every slot.
  const long = rows.flatMap((r) => Array.from({ length: 19 }, (_, at) => Array.from({ length: 23 }, (_, i) => (i >= at && i < at + 5 ? r[i - at] : (i % 7) - 3))));
  for (const [data, n] of [[rows, 5], [long, 23]] as const) {
    const run = () => Array.from(softmaxLast(R.tensor(data.flat(), [data.length, n])).dataSync());
    const want = WASM_MODES[1].run(run);
    const got = WASM_MODES[0].run(run);
    got.forEach((v, i) => assert.ok(Object.is(v, want[i]) || Math.abs(v - want[i]) <= 1e-7, `row length ${n}, element ${i}: ${v} vs host loop ${want[i]}`));
  }
});

test('depthwiseConv3d and its two gradients: wasm kernels, host loops and cpu kernels agree (C = 1..40, strides, padding)', () => {
  assertProperty(
    fc.property(
      fc.record({
        n: fc.integer({ min: 1, max: 2 }),
        c: fc.integer({ min: 1, max: 40 }),
        kernel: fc.tuple(fc.integer({ min: 1, max: 3 }), fc.integer({ min: 1, max: 3 }), fc.integer({ min: 1, max: 3 })),
        extra: fc.tuple(fc.integer({ min: 0, max: 3 }), fc.integer({ min: 0, max: 3 }), fc.integer({ min: 0, max: 3 })),
        stride: fc.tuple(fc.integer({ min: 1, max: 3 }), fc.integer({ min: 1, max: 3 }), fc.integer({ min: 1, max: 3 })),
        padding: fc.tuple(fc.integer({ min: 0, max: 1 }), fc.integer({ min: 0, max: 1 }), fc.integer({ min: 0, max: 1 })),
        seed: seedArb,
      }),
      ({ n, c, kernel, extra, stride, padding, seed }) => {
        const xs = [n, ...kernel.map((k, i) => k + extra[i]), c];
        const run = () => {
          const [y, pullback] = R.vjp((x: Tensor, w: Tensor) => R.depthwiseConv3d(x, w, { stride, padding }), rand(xs, seed), rand([c, 1, ...kernel], seed + 1));
          return [y, ...(pullback(rand([...y.shape], seed + 2)) as Tensor[])];
        };
        const want = MODES[2].run(run);
        for (const mode of WASM_MODES) agree(mode.run(run), want, `depthwise [${xs}] k ${kernel} s ${stride} p ${padding}, ${mode.name}`, 1e-6);
      },
    ),
    { numRuns: 30 },
  );
});

test('depthwiseConv3d input gradient: an infinite cotangent stays at its own positions in the wasm kernel (C = 3, partial vectors)', () => {
  // The partial vector's extra lanes hold the next position's channels; unmasked, inf * 0 there would
  // put NaN into a neighbour's gradient.
  const x = R.tensor(uniform(2 * 4 * 4 * 3, 5), [1, 2, 4, 4, 3]);
  const w = R.tensor(uniform(3 * 2 * 2 * 2, 6), [3, 1, 2, 2, 2]);
  const g = uniform(1 * 1 * 3 * 3 * 3, 7);
  g[4 * 3] = Infinity; // channel 0: the extra lane of position 3's partial vector
  const run = () => {
    const [, pullback] = R.vjp((a: Tensor) => R.depthwiseConv3d(a, w, { stride: [1, 1, 1], padding: [0, 0, 0] }), x);
    return Array.from((pullback(R.tensor(g, [1, 1, 3, 3, 3])) as Tensor[])[0].dataSync());
  };
  const want = WASM_MODES[1].run(run);
  const got = WASM_MODES[0].run(run);
  got.forEach((v, i) => assert.ok(Object.is(v, want[i]) || Math.abs(v - want[i]) <= 1e-6, `element ${i}: ${v} vs host loop ${want[i]}`));
});

/** float64 layer norm with weight and bias, and the weight and bias gradients for cotangent g. */
function layerNormAffineRef(x: Float32Array, w: Float32Array, b: Float32Array, g: Float32Array, n: number, eps: number) {
  const y = new Float64Array(x.length);
  const dw = new Float64Array(n);
  const db = new Float64Array(n);
  for (let base = 0; base < x.length; base += n) {
    const row = Array.from(x.subarray(base, base + n));
    const mu = row.reduce((a, v) => a + v, 0) / n;
    const sigma = Math.sqrt(row.reduce((a, v) => a + (v - mu) ** 2, 0) / n + eps);
    row.forEach((v, j) => {
      const xhat = (v - mu) / sigma;
      y[base + j] = xhat * w[j] + b[j];
      dw[j] += g[base + j] * xhat;
      db[j] += g[base + j];
    });
  }
  return [y, dw, db];
}

test('layerNorm with weight and bias (one fused op on host backends) equals float64, gives the bits of normalize * w + b and the same VJP', () => {
  const eps = 1e-5;
  assertProperty(
    fc.property(fc.record({ rows: fc.integer({ min: 1, max: 5 }), n: fc.integer({ min: 1, max: 40 }), seed: seedArb }), ({ rows, n, seed }) => {
      const xs = Float32Array.from(Array.from({ length: rows }, (_, r) => Array.from(distinct(n, seed + r, 0.5))).flat());
      const ws = uniform(n, seed + 1, 0.5, 1.5);
      const bs = uniform(n, seed + 2);
      const gs = uniform(rows * n, seed + 3);
      const ref = layerNormAffineRef(xs, ws, bs, gs, n, eps);
      const evalBoth = () => {
        const args = [R.tensor(xs, [rows, n]), R.tensor(ws), R.tensor(bs)] as const;
        const g = R.tensor(gs, [rows, n]);
        const [fused, pf] = R.vjp((a: Tensor, c: Tensor, d: Tensor) => layerNormAffine(a, c, d, eps), ...args);
        const [composite, pc] = R.vjp((a: Tensor, c: Tensor, d: Tensor) => R.add(R.mul(normalizeLast(a, eps), c), d), ...args);
        return { fused: [fused, ...(pf(g) as Tensor[])], composite: [composite, ...(pc(g) as Tensor[])] };
      };
      for (const mode of [...WASM_MODES, MODES[2]]) {
        const { fused, composite } = mode.run(evalBoth);
        // float64: y (terms |xhat w| + |b| <= ~4), dw and db (sums of `rows` terms of size <= ~2).
        [fused[0], fused[2], fused[3]].forEach((t, k) => {
          const got = t.dataSync();
          got.forEach((v, i) => assert.ok(Math.abs(v - ref[k][i]) <= 1e-5 * (k === 0 ? 4 : 2 * rows), `${mode.name} [${rows}, ${n}]: ${['y', 'dw', 'db'][k]}[${i}] = ${v}, float64 ${ref[k][i]}`));
        });
        if (mode !== MODES[2]) assert.equal(Array.from(fused[0].dataSync()), Array.from(composite[0].dataSync()), `${mode.name}: forward bits`);
        agree(fused, composite, `layerNorm fused vs composite [${rows}, ${n}], ${mode.name}`, 1e-6);
      }
    }),
    { numRuns: 30 },
  );
});

test('ops that claim to write every output element (fills: their outputs are uninitialized memory) do: NaN-poisoned outputs change nothing', () => {
  setPoisonedOutputs(true);
  try {
    for (const entry of OP_CASES) {
      assertProperty(
        fc.property(entry.arb, seedArb, (p, seed) => {
          const want = MODES[2].run(() => evaluate(entry.build(p), seed));
          const got = MODES[0].run(() => evaluate(entry.build(p), seed));
          agree(got.out, want.out, `${entry.name} forward, poisoned outputs`);
          agree(got.grads, want.grads, `${entry.name} vjp, poisoned outputs`, 1e-6);
        }),
        { numRuns: 5 },
      );
    }
  } finally {
    setPoisonedOutputs(false);
  }
});

test.run();
