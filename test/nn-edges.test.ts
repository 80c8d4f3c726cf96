/**
 * Edges of the nn layers that the golden fixtures do not reach (issue 18, mutation gaps): the
 * TwoStreamFusion mode parser against a table derived from PySlowFast's parsing and Python's float(),
 * the fusions, the head's activations, patch embedding's grid check, the MLP's dropout rate and the
 * pooling modes, each against plain-JS references or exact error messages.
 */
import * as E from 'fp-ts/lib/Either.js';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { closeValues as close, throwsExactly } from '../laws/helpers.ts';
import {
  attentionPool, classifierHead, mlp, parseFusionMode, patchEmbed, twoStreamFusion,
  type FusionMode, type MlpParams,
} from '../src/nn/index.ts';
import { key, normal } from '../src/random/index.ts';
import { ArgumentError, ShapeError } from '../src/tensor/errors.ts';
import { tensor, type Tensor } from '../src/tensor/tensor.ts';

const data = (t: Tensor): number[] => Array.from(t.dataSync());
const rand = (shape: number[], seed: number): Tensor => normal(key(seed), shape);

// ---------------------------------------------------------------------------------------------
// parseFusionMode

const KNOWN =
  'known modes: add, max, min, avg, concat, concat_linear, concat_linear_<m>, concat_linear_<m>_<drop>, each optionally with the prefix "ln+"';
const cl = (ratio: number, drop: number, ln = false): FusionMode => ({ kind: 'concat_linear', ratio, drop, ln });
const unknown = (mode: string, ln = false) =>
  `unknown fusion mode ${JSON.stringify(mode)}: TwoStreamFusion raises NotImplementedError${ln ? '; the "ln+" prefix is only understood before concat_linear' : ''} (${KNOWN})`;
const badForm = (mode: string) =>
  `fusion mode ${JSON.stringify(mode)} does not have the form concat_linear[_<m>[_<drop>]]: TwoStreamFusion raises NotImplementedError for any other number of "_"-separated parts (${KNOWN})`;
const notNumber = (mode: string, part: string) => `fusion mode ${JSON.stringify(mode)}: ${JSON.stringify(part)} is not a plain decimal number (such as 2, 0.5 or 1e-1)`;
const badRatio = (mode: string, got: string) => `fusion mode ${JSON.stringify(mode)}: the hidden-width multiplier must be > 0, got ${got}`;
const badDrop = (mode: string, got: string) => `fusion mode ${JSON.stringify(mode)}: the dropout must be in [0, 1] (nn.Dropout raises ValueError), got ${got}`;

/**
 * mode -> the parsed mode, or the exact error. In PySlowFast: mode.split("_") of length 2/3/4 gives
 * (m, drop) = (1, 0) / (float(p3), 0) / (float(p3), float(p4)); "ln" before a "+" adds the LayerNorm.
 * The numbers are what Python's float() makes of them.
 */
const ACCEPTED: ReadonlyArray<readonly [string, FusionMode]> = [
  ['add', { kind: 'add' }],
  ['max', { kind: 'max' }],
  ['min', { kind: 'min' }],
  ['avg', { kind: 'avg' }],
  ['concat', { kind: 'concat' }],
  ['concat_linear', cl(1, 0)],
  ['ln+concat_linear', cl(1, 0, true)],
  ['ln+concat_linear_3_0.25', cl(3, 0.25, true)],
  ['concat_linear_2', cl(2, 0)],
  ['concat_linear_10', cl(10, 0)], // float('10'): more than one integer digit
  ['concat_linear_0.25', cl(0.25, 0)], // float('0.25'): more than one fraction digit
  ['concat_linear_1.5', cl(1.5, 0)],
  ['concat_linear_5.', cl(5, 0)], // float('5.') == 5.0: no fraction digits
  ['concat_linear_.5', cl(0.5, 0)], // float('.5') == 0.5: no integer digits
  ['concat_linear_.25', cl(0.25, 0)],
  ['concat_linear_+2', cl(2, 0)], // float('+2') == 2.0
  ['concat_linear_1e3', cl(1000, 0)], // float('1e3'): an unsigned exponent
  ['concat_linear_1E+1', cl(10, 0)],
  ['concat_linear_2_1e-3', cl(2, 0.001)], // float('1e-3'): a negative exponent
  ['concat_linear_2_5e-02', cl(2, 0.05)], // two exponent digits
  ['concat_linear_2_0.1', cl(2, 0.1)],
  ['concat_linear_2_0', cl(2, 0)],
  ['concat_linear_2_1', cl(2, 1)], // nn.Dropout(p=1) is allowed (0 <= p <= 1)
  ['concat_linear_1_0', cl(1, 0)], // Python: '1_0' is split on "_" before float() sees it: m=1, drop=0
];

const REJECTED: ReadonlyArray<readonly [string, string]> = [
  ['sum', unknown('sum')],
  ['', unknown('')],
  ['concatlinear', unknown('concatlinear')],
  ['ln+concat', unknown('ln+concat', true)], // the spec's example: NotImplementedError
  ['ln+avg', unknown('ln+avg', true)],
  ['avgln+', unknown('avgln+')], // "ln+" only counts as a prefix
  // Stricter than PySlowFast ("contains concat_linear") only on nonsense around the name:
  ['xconcat_linear', unknown('xconcat_linear')],
  ['concat_linear\n', unknown('concat_linear\n')],
  ['concat_linearx2', badForm('concat_linearx2')],
  ['concat_linear_1_0_0', badForm('concat_linear_1_0_0')], // 5 parts: NotImplementedError
  ['concat_linear_2_0.1_3', badForm('concat_linear_2_0.1_3')],
  ['concat_linear_abc', notNumber('concat_linear_abc', 'abc')],
  ['concat_linear_x', notNumber('concat_linear_x', 'x')],
  ['concat_linear_1x', notNumber('concat_linear_1x', '1x')], // float('1x') raises: the regex is anchored at the end
  ['concat_linear_x1', notNumber('concat_linear_x1', 'x1')], // ... and at the start
  ['concat_linear_2_.', notNumber('concat_linear_2_.', '.')],
  ['concat_linear_2_e3', notNumber('concat_linear_2_e3', 'e3')],
  ['concat_linear_2_1e', notNumber('concat_linear_2_1e', '1e')],
  ['concat_linear_2_1.5.', notNumber('concat_linear_2_1.5.', '1.5.')],
  ['concat_linear_2_0.1x', notNumber('concat_linear_2_0.1x', '0.1x')],
  ['concat_linear_', notNumber('concat_linear_', '')],
  // Python's float() accepts these, but they make no MLP: a NaN or infinite width (int() raises),
  // a NaN dropout; surrounding blanks are not part of a mode name. Rejected: not a plain decimal.
  ['concat_linear_nan', notNumber('concat_linear_nan', 'nan')],
  ['concat_linear_inf', notNumber('concat_linear_inf', 'inf')],
  ['concat_linear_ 2', notNumber('concat_linear_ 2', ' 2')],
  ['concat_linear_0', badRatio('concat_linear_0', '0')],
  ['concat_linear_-1', badRatio('concat_linear_-1', '-1')],
  ['concat_linear_2_-0.1', badDrop('concat_linear_2_-0.1', '-0.1')],
  ['concat_linear_2_1.5', badDrop('concat_linear_2_1.5', '1.5')],
  ['concat_linear_2_1.0001', badDrop('concat_linear_2_1.0001', '1.0001')],
];

test('parseFusionMode: the accepted modes parse to exactly what PySlowFast builds', () => {
  for (const [mode, want] of ACCEPTED) {
    const got = parseFusionMode(mode);
    assert.ok(E.isRight(got), `${JSON.stringify(mode)} rejected: ${E.isLeft(got) ? got.left : ''}`);
    assert.equal(got.right, want, JSON.stringify(mode));
  }
});

test('parseFusionMode: the rejected modes, each with its exact error', () => {
  for (const [mode, message] of REJECTED) {
    const got = parseFusionMode(mode);
    assert.ok(E.isLeft(got), `${JSON.stringify(mode)} accepted`);
    assert.is(got.left, message, JSON.stringify(mode));
  }
});

// ---------------------------------------------------------------------------------------------
// twoStreamFusion

const [B, N, C] = [2, 3, 4];
const x = rand([B, N, 2 * C], 11);
const X = data(x);

/** Applies `op` to the two halves of each row of X [B*N, 2C], by plain loops. */
const halves = (op: (a: number, b: number) => number): number[] => {
  const out: number[] = [];
  for (let r = 0; r < B * N; r++) for (let c = 0; c < C; c++) out.push(op(X[r * 2 * C + c]!, X[r * 2 * C + C + c]!));
  return out;
};

test('twoStreamFusion: add, max, min and avg of the two halves (plain loops), concat is the identity', () => {
  const fuse = (mode: string) => {
    const parsed = parseFusionMode(mode);
    assert.ok(E.isRight(parsed));
    return data(twoStreamFusion(parsed.right)(undefined, x, key(0), { train: true }));
  };
  const f32 = (v: number) => Math.fround(v);
  close(fuse('add'), halves((a, b) => f32(a + b)), 1e-6, 'add');
  assert.equal(fuse('max'), halves(Math.max), 'max');
  assert.equal(fuse('min'), halves(Math.min), 'min');
  close(fuse('avg'), halves((a, b) => (a + b) / 2), 1e-6, 'avg');
  assert.equal(fuse('concat'), X, 'concat');
});

/** erf to ~1e-7 (Numerical Recipes erfc), for the exact GELU of nn.GELU. */
const erf = (z: number): number => {
  const t = 1 / (1 + 0.5 * Math.abs(z));
  const y = t * Math.exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 +
    t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))));
  return z >= 0 ? 1 - y : y - 1;
};
const gelu = (v: number) => 0.5 * v * (1 + erf(v / Math.SQRT2));
const dense = (v: readonly number[], W: readonly number[], b: readonly number[]): number[] =>
  b.map((bo, o) => v.reduce((s, vi, i) => s + vi * W[o * v.length + i]!, bo));

const D = 2 * C;
const H = 2 * D; // concat_linear_2
const fuseFn: MlpParams = {
  fc1: { weight: rand([H, D], 21), bias: rand([H], 22) },
  fc2: { weight: rand([D, H], 23), bias: rand([D], 24) },
};
const norm = { weight: rand([D], 25), bias: rand([D], 26) };
const [W1, b1, W2, b2, gamma, beta] = [fuseFn.fc1.weight, fuseFn.fc1.bias!, fuseFn.fc2.weight, fuseFn.fc2.bias!, norm.weight, norm.bias].map(data);

/** Mlp(pre(x)) + x per token, by plain loops. */
const concatLinear = (pre: (row: number[]) => number[]): number[] => {
  const out: number[] = [];
  for (let r = 0; r < B * N; r++) {
    const row = X.slice(r * D, (r + 1) * D);
    const y = dense(dense(pre(row), W1!, b1!).map(gelu), W2!, b2!);
    out.push(...y.map((v, i) => v + row[i]!));
  }
  return out;
};
const layerNorm1e5 = (row: number[]): number[] => {
  const mean = row.reduce((s, v) => s + v, 0) / row.length;
  const variance = row.reduce((s, v) => s + (v - mean) ** 2, 0) / row.length;
  return row.map((v, i) => ((v - mean) / Math.sqrt(variance + 1e-5)) * gamma![i]! + beta![i]!);
};

test('twoStreamFusion concat_linear: Mlp(x) + x (plain loops)', () => {
  const out = data(twoStreamFusion(cl(2, 0.5))({ fuse_fn: fuseFn }, x, key(3), { train: false }));
  close(out, concatLinear((row) => row), 1e-4, 'concat_linear_2_0.5, eval');
});

test('twoStreamFusion ln+concat_linear: Mlp(LayerNorm_eps=1e-5(x)) + x (plain loops)', () => {
  const out = data(twoStreamFusion(cl(2, 0, true))({ fuse_fn: [norm, fuseFn] }, x, key(3), { train: true }));
  close(out, concatLinear(layerNorm1e5), 1e-4, 'ln+concat_linear_2');
});

test("twoStreamFusion concat_linear_<m>_<drop>: a training pass applies the MLP's dropout <drop>", () => {
  const big = rand([4, 16, D], 31);
  const B4 = data(big);
  const out = data(twoStreamFusion(cl(2, 0.5))({ fuse_fn: fuseFn }, big, key(5), { train: true }));
  // The dropout after fc2 zeroes about half of Mlp(x): there the output is x itself.
  const kept = out.filter((v, i) => v === B4[i]).length;
  assert.ok(kept > 0.3 * out.length && kept < 0.7 * out.length, `${kept} of ${out.length} outputs equal x`);
  // An evaluation pass has no dropout: no output equals x.
  const evaluated = data(twoStreamFusion(cl(2, 0.5))({ fuse_fn: fuseFn }, big, key(5), { train: false }));
  assert.is(evaluated.filter((v, i) => v === B4[i]).length, 0);
  // concat_linear_2_1 (PySlowFast accepts a fusion dropout of 1): training drops the whole MLP, x itself.
  const all = parseFusionMode('concat_linear_2_1');
  assert.ok(E.isRight(all));
  assert.equal(data(twoStreamFusion(all.right)({ fuse_fn: fuseFn }, big, key(5), { train: true })), B4);
});

// ---------------------------------------------------------------------------------------------
// classifierHead

test('classifierHead: softmax and sigmoid of the logits in evaluation, raw logits in training (plain JS)', () => {
  const projection = { weight: rand([5, 6], 41), bias: rand([5], 42) };
  const feats = rand([3, 6], 43);
  const [F, W, b] = [feats, projection.weight, projection.bias].map(data);
  const logits = [0, 1, 2].map((r) => dense(F!.slice(r * 6, r * 6 + 6), W!, b!));
  const softmax = logits.flatMap((row) => {
    const m = Math.max(...row);
    const e = row.map((v) => Math.exp(v - m));
    const s = e.reduce((a, v) => a + v, 0);
    return e.map((v) => v / s);
  });
  const head = (act: 'softmax' | 'sigmoid' | 'none', train: boolean) => data(classifierHead(act)({ projection }, feats, { train }));
  close(head('softmax', false), softmax, 1e-5, 'softmax');
  close(head('sigmoid', false), logits.flat().map((v) => 1 / (1 + Math.exp(-v))), 1e-5, 'sigmoid');
  close(head('none', false), logits.flat(), 1e-5, 'none');
  for (const act of ['softmax', 'sigmoid', 'none'] as const) close(head(act, true), logits.flat(), 1e-5, `${act}, train`);
});

// ---------------------------------------------------------------------------------------------
// patchEmbed

test('patchEmbed: a conv grid other than the spec grid is a ShapeError naming both', () => {
  const p = { proj: { weight: rand([4, 3, 1, 2, 2], 51), bias: rand([4], 52) } };
  const frames = rand([1, 3, 2, 4, 4], 53);
  const embed = (grid: [number, number, number]) => patchEmbed({ stride: [1, 2, 2], padding: [0, 0, 0], twoD: false, grid })(p, frames);
  assert.equal(embed([2, 2, 2]).shape, [1, 8, 4]);
  throwsExactly(() => embed([2, 3, 3]), ShapeError, 'patchEmbed: the conv produced the grid [2, 2, 2], expected [2, 3, 3]');
  const image = rand([1, 3, 4, 4], 54);
  const p2 = { proj: { weight: rand([4, 3, 2, 2], 55), bias: rand([4], 56) } };
  const embed2 = (grid: [number, number, number]) => patchEmbed({ stride: [2, 2], padding: [0, 0], twoD: true, grid })(p2, image);
  assert.equal(embed2([1, 2, 2]).shape, [1, 4, 4]);
  throwsExactly(() => embed2([2, 2, 2]), ShapeError, 'patchEmbed: the conv produced the grid [1, 2, 2], expected [2, 2, 2]');
});

// ---------------------------------------------------------------------------------------------
// mlp

test('mlp: a dropout rate outside [0, 1] is an ArgumentError, with or without a key', () => {
  const p: MlpParams = { fc1: { weight: rand([6, 3], 61) }, fc2: { weight: rand([3, 6], 62) } };
  const input = rand([2, 3], 63);
  for (const drop of [-0.1, 1.5, Number.NaN]) {
    for (const k of [key(1), undefined]) {
      for (const train of [true, false]) {
        throwsExactly(() => mlp(p, input, k, { drop, train }), ArgumentError, `mlp: rate must be in [0, 1], got ${drop}`);
      }
    }
  }
  // Rate 0 with a key: no dropout, the plain MLP.
  assert.equal(data(mlp(p, input, key(1), { drop: 0 })), data(mlp(p, input)));
  // Rate 1 (nn.Dropout(1)): a training pass drops everything; evaluation is the plain MLP.
  assert.ok(data(mlp(p, input, key(1), { drop: 1 })).every((v) => v === 0));
  assert.equal(data(mlp(p, input, key(1), { drop: 1, train: false })), data(mlp(p, input)));
});

// ---------------------------------------------------------------------------------------------
// attentionPool

/** Tokens [1, 1, (cls +) T*H*W, Cp] on the grid [1, 2, 2], pooled by a 1x2x2 window to one token. */
const Cp = 3;
const tokens = (cls: boolean, seed: number) => rand([1, 1, (cls ? 1 : 0) + 4, Cp], seed);
const POOL = { kernel: [1, 2, 2] as [number, number, number], stride: [1, 2, 2] as [number, number, number], padding: [0, 0, 0] as [number, number, number] };
const column = (T: readonly number[], from: number, c: number) => [0, 1, 2, 3].map((i) => T[(from + i) * Cp + c]!);

test('attentionPool: avg and max over the window, the cls token carried through unpooled (plain loops)', () => {
  for (const hasCls of [false, true]) {
    const t = tokens(hasCls, hasCls ? 71 : 72);
    const T = data(t);
    const first = hasCls ? 1 : 0;
    const cls = hasCls ? T.slice(0, Cp) : [];
    for (const mode of ['avg', 'max'] as const) {
      const [out, grid] = attentionPool({ mode, pool: POOL, thw: [1, 2, 2], hasCls, normEps: 1e-6 })({}, t);
      assert.equal(grid, [1, 1, 1]);
      assert.equal(out.shape, [1, 1, first + 1, Cp]);
      const reduce = mode === 'avg' ? (v: number[]) => v.reduce((a, b) => a + b, 0) / 4 : (v: number[]) => Math.max(...v);
      const want = [...cls, ...[0, 1, 2].map((c) => reduce(column(T, first, c)))];
      close(data(out), want, 1e-6, `${mode}, cls ${hasCls}`);
    }
  }
});

test("attentionPool: 'conv_unshared' is a conv mode: its depthwise conv, then its LayerNorm", () => {
  const t = tokens(true, 73);
  const T = data(t);
  const weight = rand([Cp, 1, 1, 2, 2], 74);
  const W = data(weight);
  const normP = { weight: tensor([1, 2, 3], [3]), bias: tensor([0.5, 0, -0.5], [3]) };
  const [out, grid] = attentionPool({ mode: 'conv_unshared', pool: POOL, thw: [1, 2, 2], hasCls: true, normEps: 1e-6 })({ weight, norm: normP }, t);
  assert.equal(grid, [1, 1, 1]);
  const conv = [0, 1, 2].map((c) => column(T, 1, c).reduce((s, v, i) => s + v * W[c * 4 + i]!, 0));
  const ln = (row: number[]) => {
    const mean = row.reduce((a, b) => a + b, 0) / row.length;
    const variance = row.reduce((a, b) => a + (b - mean) ** 2, 0) / row.length;
    return row.map((v, i) => ((v - mean) / Math.sqrt(variance + 1e-6)) * [1, 2, 3][i]! + [0.5, 0, -0.5][i]!);
  };
  close(data(out), [...ln(T.slice(0, Cp)), ...ln(conv)], 1e-4, 'conv_unshared');
  throwsExactly(
    () => attentionPool({ mode: 'conv_unshared', pool: POOL, thw: [1, 2, 2], hasCls: true, normEps: 1e-6 })({}, t),
    ArgumentError,
    "attentionPool: 'conv_unshared' pooling needs a conv weight",
  );
});

test.run();
