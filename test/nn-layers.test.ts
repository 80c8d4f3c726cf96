/** The nn layers on their own: the conventions (eps, keys) and attention against a plain-JS reference. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { attentionPool, layerNorm, mlp, multiScaleAttention, type AttentionParams } from '../src/nn/index.ts';
import { foldIn, key, normal } from '../src/random/index.ts';
import { ArgumentError } from '../src/tensor/errors.ts';
import { tensor, type Tensor } from '../src/tensor/tensor.ts';

const data = (t: Tensor): Float32Array => t.dataSync();

test('nn.layerNorm defaults to PyTorch eps 1e-5, like the layerNorm op', () => {
  // Rows with variance ~1e-6, where eps 1e-5 and 1e-6 give clearly different results.
  const rows = [[0.001, -0.001, 0.002, 0], [0, 0.0005, -0.0015, 0.001]];
  const x = tensor(rows.flat(), [2, 4]);
  const p = { weight: tensor([1, 2, 0.5, -1], [4]), bias: tensor([0.1, 0, -0.2, 0.3], [4]) };
  const out = data(layerNorm(p, x));
  rows.forEach((row, r) => {
    const mean = row.reduce((a, b) => a + b, 0) / row.length;
    const variance = row.reduce((a, b) => a + (b - mean) ** 2, 0) / row.length;
    row.forEach((v, i) => {
      const expected = ((v - mean) / Math.sqrt(variance + 1e-5)) * [1, 2, 0.5, -1][i]! + [0.1, 0, -0.2, 0.3][i]!;
      assert.ok(Math.abs(out[r * 4 + i]! - expected) < 1e-5, `row ${r} col ${i}: ${out[r * 4 + i]} vs ${expected}`);
    });
  });
});

test('mlp: dropout in a training pass without a key is an ArgumentError, not a skipped dropout', () => {
  const lin = (o: number, i: number, seed: number) => ({ weight: normal(key(seed), [o, i]), bias: normal(key(seed + 1), [o]) });
  const p = { fc1: lin(6, 3, 1), fc2: lin(3, 6, 3) };
  const x = normal(key(5), [2, 3]);
  assert.throws(() => mlp(p, x, undefined, { drop: 0.5 }), (e: unknown) => e instanceof ArgumentError && /mlp.*needs a key/.test((e as Error).message));
  // No dropout, or an evaluation pass: no key needed, and the same values as without dropout.
  const plain = data(mlp(p, x));
  assert.equal(data(mlp(p, x, undefined, { drop: 0.5, train: false })), plain);
  // With a key the dropout happens: some hidden units are dropped, so the output differs.
  assert.not.equal(data(mlp(p, x, foldIn(key(7), 0), { drop: 0.5 })), plain);
});

test('attentionPool: a conv mode without its weight is an ArgumentError', () => {
  const pool = attentionPool({ mode: 'conv', pool: { kernel: [1, 3, 3], stride: [1, 2, 2], padding: [0, 1, 1] }, thw: [1, 4, 4], hasCls: false, normEps: 1e-6 });
  assert.throws(() => pool({}, normal(key(1), [1, 1, 16, 4])), (e: unknown) => e instanceof ArgumentError && /conv weight/.test((e as Error).message));
});

test('multiScaleAttention without pooling is multi-head self-attention (plain-JS reference)', () => {
  const [B, N, D, H] = [2, 5, 8, 2];
  const d = D / H;
  const rand = (shape: number[], seed: number) => normal(key(seed), shape);
  const p: AttentionParams = { qkv: { weight: rand([3 * D, D], 1), bias: rand([3 * D], 2) }, proj: { weight: rand([D, D], 3), bias: rand([D], 4) } };
  const x = rand([B, N, D], 5);
  const attention = multiScaleAttention({
    heads: H, dimOut: D, thw: [1, 1, N], hasCls: false, mode: 'conv', poolFirst: false, separateQkv: false,
    relPosSpatial: false, relPosTemporal: false, residualPooling: false, dropRate: 0, normEps: 1e-6,
  });
  const out = data(attention(p, x, key(0), { train: true }));

  const [X, Wqkv, bqkv, Wp, bp] = [x, p.qkv!.weight, p.qkv!.bias!, p.proj.weight, p.proj.bias!].map(data);
  const linear = (v: number[], W: Float32Array, b: Float32Array, outDim: number, inDim: number) =>
    Array.from({ length: outDim }, (_, o) => v.reduce((s, vi, i) => s + vi * W[o * inDim + i]!, b[o]!));
  for (let b = 0; b < B; b++) {
    const qkv = Array.from({ length: N }, (_, n) => linear(Array.from(X.subarray((b * N + n) * D, (b * N + n + 1) * D)), Wqkv, bqkv, 3 * D, D));
    const heads = Array.from({ length: N }, () => new Array<number>(D).fill(0));
    for (let h = 0; h < H; h++) {
      for (let i = 0; i < N; i++) {
        const scores = Array.from({ length: N }, (_, j) => {
          let s = 0;
          for (let c = 0; c < d; c++) s += qkv[i]![h * d + c]! * qkv[j]![D + h * d + c]!;
          return s / Math.sqrt(d);
        });
        const top = Math.max(...scores);
        const w = scores.map((s) => Math.exp(s - top));
        const total = w.reduce((a, v) => a + v, 0);
        for (let c = 0; c < d; c++) heads[i]![h * d + c] = w.reduce((s, wj, j) => s + (wj / total) * qkv[j]![2 * D + h * d + c]!, 0);
      }
    }
    for (let n = 0; n < N; n++) {
      const expected = linear(heads[n]!, Wp, bp, D, D);
      expected.forEach((e, c) => {
        const got = out[(b * N + n) * D + c]!;
        assert.ok(Math.abs(got - e) <= 1e-4 * Math.max(1, Math.abs(e)), `[${b}, ${n}, ${c}]: ${got} vs ${e}`);
      });
    }
  }
});

test.run();
