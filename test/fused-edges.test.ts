/**
 * Edges of the fused row ops (src/tensor/fused.ts) and the composites around them (composite.ts) that the
 * op laws do not reach (issue 18, mutation gaps): exact error classes and messages naming the op and the
 * argument, empty last axes, softmax along other axes and layerNorm without its affine part, each on the
 * webasm and cpu backends against plain float64 loops.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { BACKENDS, throwsExactly } from '../laws/helpers.ts';
import { withBackend } from '../src/backend/backend.ts';
import { geluGrad, layerNormAffine, normalizeGrad, normalizeLast, softmaxGrad, softmaxLast } from '../src/tensor/fused.ts';
import { layerNorm, logSoftmax, softmax } from '../src/tensor/composite.ts';
import { ArgumentError, ShapeError } from '../src/tensor/errors.ts';
import { tensor, type Tensor } from '../src/tensor/tensor.ts';

const data = (t: Tensor): number[] => Array.from(t.dataSync());
const close = (got: readonly number[], want: readonly number[], tol: number, what: string): void => {
  assert.is(got.length, want.length, `${what}: length`);
  got.forEach((g, i) => assert.ok(Math.abs(g - want[i]!) <= tol * (1 + Math.abs(want[i]!)), `${what}[${i}]: ${g} vs ${want[i]}`));
};

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
  throwsExactly(() => layerNormAffine(a, tensor([1, 1, 1], [1, 3]), v3, 1e-5), ShapeError, 'layerNorm: weight and bias must have shape [3] for input [2, 3], got [1, 3] and [3]');
  throwsExactly(() => layerNormAffine(a, v3, tensor([1, 1, 1], [3, 1]), 1e-5), ShapeError, 'layerNorm: weight and bias must have shape [3] for input [2, 3], got [3] and [3, 1]');
});

test.run();
