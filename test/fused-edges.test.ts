/**
 * Edges of the fused row ops (src/tensor/fused.ts) and the composites around them (composite.ts) that the
 * op laws do not reach (issue 18, mutation gaps): exact error classes and messages naming the op and the
 * argument, empty last axes, softmax along other axes and layerNorm without its affine part, each on the
 * webasm and cpu backends against plain float64 loops.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { BACKENDS, closeValues as close, throwsExactly } from '../laws/helpers.ts';
import { withBackend } from '../src/backend/backend.ts';
import { setWasmKernels } from '../src/backend/wasm-memory.ts';
import { gelu, geluGrad, layerNormAffine, normalizeGrad, normalizeLast, softmaxGrad, softmaxLast } from '../src/tensor/fused.ts';
import { clip, layerNorm, logSoftmax, logSumExp, min, oneHot, softmax, softplus } from '../src/tensor/composite.ts';
import { ArgumentError, ShapeError } from '../src/tensor/errors.ts';
import { profileOps } from '../src/tensor/exec.ts';
import { primitiveByName } from '../src/tensor/primitive.ts';
import { ones, tensor, zeros, type Tensor } from '../src/tensor/tensor.ts';

const data = (t: Tensor): number[] => Array.from(t.dataSync());

// [2, 3, 4], distinct values
const X = Array.from({ length: 24 }, (_, i) => Math.sin(1.3 * i + 0.4) * 3);
const x = () => tensor(X, [2, 3, 4]);

/** softmax of the [2, 3, 4] array X along `axis`, in float64. */
function softmaxRef(axis: number): number[] {
  const dims = [2, 3, 4];
  const strides = [12, 4, 1];
  const out = new Array<number>(24);
  for (let i = 0; i < 24; i++) {
    const coord = dims.map((d, k) => Math.floor(i / strides[k]!) % d);
    const at = (j: number) => i + (j - coord[axis]!) * strides[axis]!;
    const line = Array.from({ length: dims[axis]! }, (_, j) => X[at(j)]!);
    const m = Math.max(...line);
    const s = line.reduce((acc, v) => acc + Math.exp(v - m), 0);
    out[i] = Math.exp(X[i]! - m) / s;
  }
  return out;
}

for (const backend of BACKENDS) {
  test(`[${backend}] softmax along every axis (the last fused, others moved last and back) = float64`, () => {
    withBackend(backend, () => {
      for (const axis of [0, 1, 2, -1, -2, -3]) close(data(softmax(x(), axis)), softmaxRef((axis + 3) % 3), 1e-6, `axis ${axis}`);
      close(data(softmax(x())), softmaxRef(2), 1e-6, 'default axis');
      close(data(logSoftmax(x(), 1)), softmaxRef(1).map(Math.log), 1e-6, 'logSoftmax axis 1');
      close(data(logSoftmax(x())), softmaxRef(2).map(Math.log), 1e-6, 'logSoftmax default axis');
    });
  });

  test(`[${backend}] layerNorm without weight, without bias, or with a broadcasting weight = float64`, () => {
    withBackend(backend, () => {
      const rows = [0, 1, 2, 3, 4, 5].map((r) => X.slice(4 * r, 4 * r + 4));
      const norm = rows.flatMap((row) => {
        const mean = row.reduce((a, v) => a + v, 0) / 4;
        const variance = row.reduce((a, v) => a + (v - mean) ** 2, 0) / 4;
        return row.map((v) => (v - mean) / Math.sqrt(variance + 1e-5));
      });
      const w = [0.5, -1, 2, 1.5];
      const b = [0.1, 0.2, -0.3, 0.4];
      close(data(layerNorm(x(), null, null)), norm, 1e-5, 'no affine');
      close(data(layerNorm(x(), tensor(w), null)), norm.map((v, i) => v * w[i % 4]!), 1e-5, 'weight only');
      close(data(layerNorm(x(), null, tensor(b))), norm.map((v, i) => v + b[i % 4]!), 1e-5, 'bias only');
      // A weight of shape [3, 1] is not a [C] vector: it broadcasts over the rows (the unfused path).
      const perRow = tensor([2, -1, 0.5], [3, 1]);
      close(data(layerNorm(x(), perRow, tensor(b))), norm.map((v, i) => v * [2, -1, 0.5][Math.floor(i / 4) % 3]! + b[i % 4]!), 1e-5, 'weight [3, 1]');
      close(data(layerNorm(x(), tensor(w), tensor(b), 0.5)), rows.flatMap((row) => {
        const mean = row.reduce((a, v) => a + v, 0) / 4;
        const variance = row.reduce((a, v) => a + (v - mean) ** 2, 0) / 4;
        return row.map((v, j) => ((v - mean) / Math.sqrt(variance + 0.5)) * w[j]! + b[j]!);
      }), 1e-5, 'eps 0.5');
    });
  });

  test(`[${backend}] an empty last axis: every row op gives an empty result of the input's shape`, () => {
    withBackend(backend, () => {
      const e = tensor([], [3, 0]);
      for (const [name, out] of [
        ['softmax', softmaxLast(e)], ['softmaxGrad', softmaxGrad(e, e)], ['normalize', normalizeLast(e, 1e-5)],
        ['normalizeGrad', normalizeGrad(e, e, 1e-5)], ['layerNorm', layerNormAffine(e, tensor([], [0]), tensor([], [0]), 1e-5)],
      ] as const) {
        assert.equal(out.shape, [3, 0], name);
        assert.equal(data(out), [], name);
      }
    });
  });
}

test('row ops on a scalar: a ShapeError naming the op and the shape', () => {
  const s = tensor(2);
  throwsExactly(() => softmaxLast(s), ShapeError, 'softmax: expected a tensor of rank >= 1, got shape []');
  throwsExactly(() => normalizeLast(s, 1e-5), ShapeError, 'normalize: expected a tensor of rank >= 1, got shape []');
  throwsExactly(() => softmaxGrad(s, s), ShapeError, 'softmaxGrad: expected a tensor of rank >= 1, got shape []');
  throwsExactly(() => layerNormAffine(s, tensor([1]), tensor([0]), 1e-5), ShapeError, 'layerNorm: expected a tensor of rank >= 1, got shape []');
});

test('the two-input row ops and geluGrad: differing shapes are a ShapeError naming both', () => {
  const a = tensor([1, 2, 3, 4], [2, 2]);
  const b = tensor([1, 2, 3, 4], [4]);
  throwsExactly(() => softmaxGrad(a, b), ShapeError, 'softmaxGrad: shapes [2, 2] and [4] differ');
  throwsExactly(() => normalizeGrad(a, b, 1e-5), ShapeError, 'normalizeGrad: shapes [2, 2] and [4] differ');
  throwsExactly(() => geluGrad(a, b), ShapeError, 'geluGrad: shapes [2, 2] and [4] differ');
});

test('non-tensor arguments: an ArgumentError naming the op and which argument', () => {
  const a = tensor([1, 2], [2]);
  const bad = [1, 2] as unknown as Tensor;
  throwsExactly(() => softmaxLast(bad), ArgumentError, 'softmax: input must be a Tensor, got array(2)');
  throwsExactly(() => softmaxGrad(a, bad), ArgumentError, 'softmaxGrad: cotangent must be a Tensor, got array(2)');
  throwsExactly(() => geluGrad(a, bad), ArgumentError, 'geluGrad: cotangent must be a Tensor, got array(2)');
  throwsExactly(() => geluGrad(bad, a), ArgumentError, 'geluGrad: argument must be a Tensor, got array(2)');
  throwsExactly(() => layerNormAffine(bad, a, a, 1e-5), ArgumentError, 'layerNorm: input must be a Tensor, got array(2)');
  throwsExactly(() => layerNormAffine(a, bad, a, 1e-5), ArgumentError, 'layerNorm: weight must be a Tensor, got array(2)');
  throwsExactly(() => layerNormAffine(a, a, bad, 1e-5), ArgumentError, 'layerNorm: bias must be a Tensor, got array(2)');
  throwsExactly(() => softmax(bad), ArgumentError, 'softmax: argument must be a Tensor, got array(2)');
  throwsExactly(() => layerNorm(bad, null, null), ArgumentError, 'layerNorm: input must be a Tensor, got array(2)');
});

test('layerNormAffine: a weight or bias not of shape [C] is a ShapeError naming all three shapes', () => {
  const a = tensor([1, 2, 3, 4, 5, 6], [2, 3]);
  const v3 = tensor([1, 1, 1]);
  throwsExactly(() => layerNormAffine(a, tensor([1, 1]), v3, 1e-5), ShapeError, 'layerNorm: weight and bias must have shape [3] for input [2, 3], got [2] and [3]');
  throwsExactly(() => layerNormAffine(a, v3, tensor([1, 1, 1, 1]), 1e-5), ShapeError, 'layerNorm: weight and bias must have shape [3] for input [2, 3], got [3] and [4]');
  throwsExactly(() => layerNormAffine(a, tensor([1, 1, 1], [3, 1]), v3, 1e-5), ShapeError, 'layerNorm: weight and bias must have shape [3] for input [2, 3], got [3, 1] and [3]');
  throwsExactly(() => layerNormAffine(a, v3, tensor([1, 1, 1], [3, 1]), 1e-5), ShapeError, 'layerNorm: weight and bias must have shape [3] for input [2, 3], got [3] and [3, 1]');
});

/** GELU and g * GELU'(x) in float64: Phi by erfc's series (|error| < 1e-15 here). */
const Phi = (v: number): number => {
  const z = -v / Math.SQRT2;
  // erfc(z) = 1 - erf(z), erf by its Taylor series (|z| <= 3 here)
  let term = z;
  let erf = z;
  for (let n = 1; n < 200; n++) {
    term *= (-z * z) / n;
    erf += term / (2 * n + 1);
  }
  return 0.5 * (1 - (2 / Math.sqrt(Math.PI)) * erf);
};
const geluRef = (v: number) => v * Phi(v);
const geluGradRef = (v: number, g: number) => g * (Phi(v) + (v * Math.exp(-0.5 * v * v)) / Math.sqrt(2 * Math.PI));

test('gelu and geluGrad = float64 on every backend, with and without the wasm kernels', () => {
  const v = [-3, -1.5, -0.2, 0, 0.3, 1, 2.5, 3];
  const g = [1, -2, 0.5, 3, -1, 2, 0.25, -0.75];
  for (const backend of BACKENDS) {
    for (const wasm of [true, false]) {
      const previous = setWasmKernels(wasm);
      try {
        withBackend(backend, () => {
          close(data(gelu(tensor(v))), v.map(geluRef), 1e-6, `${backend} gelu`);
          close(data(geluGrad(tensor(v), tensor(g))), v.map((t, i) => geluGradRef(t, g[i]!)), 1e-6, `${backend} geluGrad`);
        });
      } finally {
        setWasmKernels(previous);
      }
    }
  }
});

test('layerNorm host loop: rows with mean 1e4 and std ~1e-2 (the variance is a sum of squared deviations, not a cancellation) = float64', () => {
  const row = [10000, 10000.0107421875, 9999.990234375, 10000.001953125, 9999.9970703125, 10000.0048828125];
  const mean = row.reduce((a, v) => a + v, 0) / row.length;
  const variance = row.reduce((a, v) => a + (v - mean) ** 2, 0) / row.length;
  const want = row.map((v) => (v - mean) / Math.sqrt(variance + 1e-9));
  const previous = setWasmKernels(false);
  try {
    withBackend('webasm', () => {
      close(data(layerNormAffine(tensor(row, [1, 6]), ones([6]), zeros([6]), 1e-9)), want, 1e-5, 'layerNorm host loop');
      close(data(normalizeLast(tensor(row, [1, 6]), 1e-9)), want, 1e-5, 'normalize host loop');
    });
  } finally {
    setWasmKernels(previous);
  }
});

test('the fused ops are registered primitives under their names, and run (profileOps) as one op each', () => {
  for (const name of ['softmax', 'softmaxGrad', 'normalize', 'normalizeGrad', 'layerNorm', 'gelu', 'geluGrad']) assert.is(primitiveByName(name)?.name, name);
  for (const backend of BACKENDS) {
    withBackend(backend, () => {
      const w = tensor([0.5, -1, 2, 1.5]);
      const b = tensor([0.1, 0.2, -0.3, 0.4]);
      const names = (f: () => Tensor) => [...profileOps(() => f().dataSync()).ops.keys()].sort();
      // On the host backends layerNorm with [C] weight and bias is the single fused op.
      assert.equal(names(() => layerNorm(x(), w, b)), ['layerNorm'], `${backend}: fused layerNorm`);
      assert.equal(names(() => layerNorm(x(), tensor([2, -1, 0.5], [3, 1]), b)), ['add', 'mul', 'normalize'], `${backend}: unfused layerNorm`);
      assert.equal(names(() => layerNorm(x(), w, null)), ['mul', 'normalize'], `${backend}: weight only`);
      assert.equal(names(() => layerNorm(x(), tensor([2]), b)), ['add', 'mul', 'normalize'], `${backend}: a weight of length 1 broadcasts`);
      // rows of 4 with a [4, 1] weight: its first dim is C, but it is not a [C] vector
      assert.equal(names(() => layerNorm(tensor(X.slice(0, 16).concat(X.slice(0, 16)), [2, 4, 4]), tensor([1, 2, 3, 4], [4, 1]), b)), ['add', 'mul', 'normalize'], `${backend}: a [4, 1] weight broadcasts`);
      assert.equal(names(() => gelu(x())), ['gelu'], `${backend}: gelu`);
      assert.equal(names(() => geluGrad(x(), x())), ['geluGrad'], `${backend}: geluGrad`);
      assert.equal(names(() => softmax(x())), ['softmax'], `${backend}: softmax on the last axis, no transposes`);
    });
  }
});

test('composite ops: exact errors naming the op, the argument and the axis', () => {
  const a = tensor([1, 2, 3, 4, 5, 6], [2, 3]);
  const bad = [1, 2] as unknown as Tensor;
  throwsExactly(() => softmax(a, 5), ShapeError, 'softmax: axis 5 is out of range for rank 2');
  throwsExactly(() => softplus(bad), ArgumentError, 'softplus: argument must be a Tensor, got array(2)');
  throwsExactly(() => gelu(bad), ArgumentError, 'gelu: argument must be a Tensor, got array(2)');
  throwsExactly(() => logSumExp(bad), ArgumentError, 'logSumExp: argument must be a Tensor, got array(2)');
  throwsExactly(() => logSumExp(a, 5), ShapeError, 'logSumExp: axis 5 is out of range for rank 2');
  throwsExactly(() => min(bad), ArgumentError, 'min: argument must be a Tensor, got array(2)');
  throwsExactly(() => min(a, 5), ShapeError, 'min: axis 5 is out of range for rank 2');
  throwsExactly(() => clip(a, undefined as never, undefined as never), ArgumentError, 'clip: at least one of lo and hi must be given');
  throwsExactly(() => clip(a, null, Number.NaN), ArgumentError, 'clip: hi is NaN');
  throwsExactly(() => oneHot(bad, 3), ArgumentError, 'oneHot: indices must be a Tensor, got array(2)');
  throwsExactly(() => oneHot(tensor([0, 1]), 2.5), ArgumentError, 'oneHot: numClasses must be a positive integer, got number 2.5');
  throwsExactly(() => oneHot(tensor([0, -1]), 3), ShapeError, 'oneHot: index -1 is not an integer in [0, 3)');
  throwsExactly(() => oneHot(zeros([1, 1, 1, 1, 1, 1]), 3), ShapeError, 'oneHot: rank 7 of shape [1, 1, 1, 1, 1, 1, 3] exceeds the maximum rank 6');
});

test('composite ops: undefined bounds count as missing, logSumExp over axes of which one is empty is -Infinity, min drops its axes by default', () => {
  const a = tensor([1, 5, -2, 4, 0, 3], [2, 3]);
  assert.equal(data(clip(a, undefined as never, 2)), [1, 2, -2, 2, 0, 2]);
  assert.equal(data(clip(a, 0, undefined as never)), [1, 5, 0, 4, 0, 3]);
  const lse = logSumExp(zeros([2, 0]), [0, 1]);
  assert.equal(lse.shape, []);
  assert.equal(data(lse), [-Infinity]);
  assert.equal(min(a, 1).shape, [2]);
  assert.equal(data(min(a, 1)), [-2, 0]);
});

test.run();
