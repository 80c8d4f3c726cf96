/**
 * MultiScaleAttention's less travelled paths against a plain-JS float64 reference written from the
 * spec (shared/reference/rev-mvit-spec.md §3.2), independent of src/nn: relative-position tables
 * whose length differs from 2·max(q, k) − 1 (F.interpolate linear, align_corners=False), the rel-pos
 * index when q and k sizes differ, the cls token, residual pooling, POOL_FIRST with 'conv' and
 * 'conv_unshared', avg/max pooling, and projection dropout.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { multiScaleAttention, type AttentionParams, type MultiScaleAttentionSpec, type PoolSpec } from '../src/nn/index.ts';
import { foldIn, key, normal, uniform } from '../src/random/index.ts';
import { tensor, type Tensor } from '../src/tensor/tensor.ts';
import { ArgumentError } from '../src/tensor/errors.ts';
import { throwsExactly } from '../laws/helpers.ts';

type Mat = number[][]; // [tokens][channels]
const arr = (t: Tensor): number[] => Array.from(t.dataSync(), Number);
const dot = (a: readonly number[], b: readonly number[]): number => a.reduce((s, ai, i) => s + ai * b[i]!, 0);
const rows = (flat: readonly number[], n: number, c: number, offset = 0): Mat =>
  Array.from({ length: n }, (_, i) => flat.slice(offset + i * c, offset + (i + 1) * c));

/** PyTorch upsample_linear1d, align_corners=False, size given: table [L][C] -> [d][C]. */
function refInterp(table: Mat, d: number): Mat {
  const L = table.length;
  const scale = L / d; // area_pixel_compute_scale: input_size / output_size
  return Array.from({ length: d }, (_, i) => {
    const real = Math.max(scale * (i + 0.5) - 0.5, 0); // area_pixel_compute_source_index, negative clamped
    const i0 = Math.min(Math.floor(real), L - 1);
    const offset = i0 < L - 1 ? 1 : 0;
    const l1 = Math.min(Math.max(real - i0, 0), 1);
    return table[i0]!.map((v, c) => (1 - l1) * v + l1 * table[i0 + offset]![c]!);
  });
}

/** get_rel_pos: the table rows Rq[i][j] for q and k positions along one axis. */
function refRelRows(table: Mat, q: number, k: number): (i: number, j: number) => number[] {
  const maxDist = 2 * Math.max(q, k) - 1;
  const R = table.length === maxDist ? table : refInterp(table, maxDist);
  const qRatio = Math.max(k / q, 1);
  const kRatio = Math.max(q / k, 1);
  return (i, j) => R[Math.trunc(i * qRatio - j * kRatio + (k - 1) * kRatio)]!;
}

type Grid = [number, number, number];
interface RefPool { weight?: number[]; normW?: number[]; normB?: number[] }

/** attention_pool on one head's tokens [L][C] (cls first if hasCls): pool the grid, keep cls, then LN (conv modes). */
function refPool(tokens: Mat, hasCls: boolean, thw: Grid, mode: string, pool: PoolSpec, p: RefPool, eps: number): [Mat, Grid] {
  const body = hasCls ? tokens.slice(1) : tokens;
  const C = body[0]!.length;
  const [T, H, W] = thw;
  const [kt, kh, kw] = pool.kernel;
  const out = ([T, H, W] as const).map((n, a) => Math.floor((n + 2 * pool.padding[a]! - pool.kernel[a]!) / pool.stride[a]!) + 1) as Grid;
  const pooled: Mat = [];
  for (let to = 0; to < out[0]; to++)
    for (let ho = 0; ho < out[1]; ho++)
      for (let wo = 0; wo < out[2]; wo++) {
        const row: number[] = [];
        for (let c = 0; c < C; c++) {
          let acc = mode === 'max' ? -Infinity : 0;
          for (let a = 0; a < kt; a++)
            for (let b = 0; b < kh; b++)
              for (let e = 0; e < kw; e++) {
                const [t, h, w] = [to * pool.stride[0] - pool.padding[0] + a, ho * pool.stride[1] - pool.padding[1] + b, wo * pool.stride[2] - pool.padding[2] + e];
                if (t < 0 || t >= T || h < 0 || h >= H || w < 0 || w >= W) continue; // zero padding (max: ignored)
                const v = body[(t * H + h) * W + w]![c]!;
                if (mode === 'max') acc = Math.max(acc, v);
                else if (mode === 'avg') acc += v;
                else acc += p.weight![((c * kt + a) * kh + b) * kw + e]! * v;
              }
          row.push(mode === 'avg' ? acc / (kt * kh * kw) : acc); // count_include_pad=True
        }
        pooled.push(row);
      }
  let res = hasCls ? [tokens[0]!, ...pooled] : pooled;
  if ((mode === 'conv' || mode === 'conv_unshared') && p.normW) {
    res = res.map((r) => {
      const mean = r.reduce((s, v) => s + v, 0) / C;
      const variance = r.reduce((s, v) => s + (v - mean) ** 2, 0) / C;
      return r.map((v, c) => ((v - mean) / Math.sqrt(variance + eps)) * p.normW![c]! + p.normB![c]!);
    });
  }
  return [res, out];
}

const refLinear = (X: Mat, lin: { weight: number[]; bias: number[] }, out: number): Mat =>
  X.map((r) => Array.from({ length: out }, (_, o) => r.reduce((s, v, i) => s + v * lin.weight[o * r.length + i]!, lin.bias[o]!)));
const splitHeads = (X: Mat, h: number): Mat[] => {
  const d = X[0]!.length / h;
  return Array.from({ length: h }, (_, y) => X.map((r) => r.slice(y * d, (y + 1) * d)));
};
const joinHeads = (hs: Mat[]): Mat => hs[0]!.map((_, i) => hs.flatMap((m) => m[i]!));

type RefParams = Record<string, number[]>;
const lin = (P: RefParams, name: string) => ({ weight: P[`${name}.weight`]!, bias: P[`${name}.bias`]! });
const poolParams = (P: RefParams, x: string): RefPool => ({ weight: P[`pool_${x}.weight`], normW: P[`norm_${x}.weight`], normB: P[`norm_${x}.bias`] });

/** MultiScaleAttention.forward in float64 plain loops: x [B*N*Din] -> [B*Nq*Dout] (no dropout). */
function refAttention(spec: MultiScaleAttentionSpec, P: RefParams, X: number[], B: number, Din: number): number[] {
  const { heads: h, dimOut: D, hasCls, thw, mode } = spec;
  const dh = D / h;
  const N = X.length / (B * Din);
  const sp = hasCls ? 1 : 0;
  const result: number[] = [];
  for (let b = 0; b < B; b++) {
    const xb = rows(X, N, Din, b * N * Din);
    let q: Mat[], k: Mat[], v: Mat[];
    if (spec.poolFirst) {
      q = k = v = splitHeads(xb, mode === 'conv_unshared' ? 1 : h);
    } else if (!spec.separateQkv) {
      const qkv = refLinear(xb, lin(P, 'qkv'), 3 * D);
      [q, k, v] = [0, 1, 2].map((s) => splitHeads(qkv.map((r) => r.slice(s * D, (s + 1) * D)), h)) as [Mat[], Mat[], Mat[]];
    } else {
      [q, k, v] = ['q', 'k', 'v'].map((n) => splitHeads(refLinear(xb, lin(P, n), D), h)) as [Mat[], Mat[], Mat[]];
    }
    let qGrid: Grid = thw;
    let kGrid: Grid = thw;
    if (spec.poolQ) q = q.map((m) => { const [o, g] = refPool(m, hasCls, thw, mode, spec.poolQ!, poolParams(P, 'q'), spec.normEps); qGrid = g; return o; });
    if (spec.poolKV) {
      k = k.map((m) => { const [o, g] = refPool(m, hasCls, thw, mode, spec.poolKV!, poolParams(P, 'k'), spec.normEps); kGrid = g; return o; });
      v = v.map((m) => refPool(m, hasCls, thw, mode, spec.poolKV!, poolParams(P, 'v'), spec.normEps)[0]);
    }
    if (spec.poolFirst) [q, k, v] = ([[q, 'q'], [k, 'k'], [v, 'v']] as const).map(([t, n]) => splitHeads(refLinear(joinHeads(t), lin(P, n), D), h)) as [Mat[], Mat[], Mat[]];
    const [qt, qh, qw] = qGrid;
    const [kt, kh, kw] = kGrid;
    const table = (name: string) => rows(P[name]!, P[name]!.length / dh, dh);
    const Rh = spec.relPosSpatial ? refRelRows(table('rel_pos_h'), qh, kh) : null;
    const Rw = spec.relPosSpatial ? refRelRows(table('rel_pos_w'), qw, kw) : null;
    const Rt = spec.relPosTemporal ? refRelRows(table('rel_pos_t'), qt, kt) : null;
    const outHeads = q.map((qy, y) =>
      qy.map((qi, i) => {
        const logits = k[y]!.map((kj, j) => {
          let s = dot(qi, kj) / Math.sqrt(dh);
          if (i >= sp && j >= sp) {
            const [a, c] = [i - sp, j - sp];
            const [ti, hi, wi] = [Math.floor(a / (qh * qw)), Math.floor(a / qw) % qh, a % qw];
            const [tj, hj, wj] = [Math.floor(c / (kh * kw)), Math.floor(c / kw) % kh, c % kw];
            if (Rh && Rw) s += dot(qi, Rh(hi, hj)) + dot(qi, Rw(wi, wj));
            if (Rt) s += dot(qi, Rt(ti, tj));
          }
          return s;
        });
        const top = Math.max(...logits);
        const e = logits.map((l) => Math.exp(l - top));
        const total = e.reduce((s, x) => s + x, 0);
        const o = Array.from({ length: dh }, (_, c) => e.reduce((s, ej, j) => s + (ej / total) * v[y]![j]![c]!, 0));
        return spec.residualPooling && i >= sp ? o.map((x, c) => x + qi[c]!) : o;
      }),
    );
    result.push(...refLinear(joinHeads(outHeads), lin(P, 'proj'), D).flat());
  }
  return result;
}

/** Random parameters for `shapes`, as the tensor tree multiScaleAttention takes and as flat arrays. */
function makeParams(shapes: Record<string, number[]>, seed: number): { p: AttentionParams; P: RefParams } {
  const tree: Record<string, unknown> = {};
  const P: RefParams = {};
  Object.entries(shapes).forEach(([name, shape], n) => {
    let t = normal(key(seed + n), shape);
    if (name.startsWith('rel_pos')) t = tensor(arr(t).map((x) => 0.5 * x), shape); // keep the softmax away from one-hot
    P[name] = arr(t);
    const [mod, leaf] = name.split('.');
    if (leaf === undefined) tree[mod!] = t;
    else ((tree[mod!] ??= {}) as Record<string, Tensor>)[leaf] = t;
  });
  return { p: tree as unknown as AttentionParams, P };
}

function assertClose(got: ArrayLike<number>, expected: readonly number[], what: string, tol = 2e-4): void {
  assert.is(got.length, expected.length, `${what}: length`);
  for (let i = 0; i < expected.length; i++) {
    const e = expected[i]!;
    assert.ok(Math.abs(got[i]! - e) <= tol * Math.max(1, Math.abs(e)), `${what} [${i}]: ${got[i]} vs ${e}`);
  }
}

const base = {
  heads: 2, dimOut: 8, hasCls: false, mode: 'conv', poolFirst: false, separateQkv: false,
  relPosSpatial: false, relPosTemporal: false, residualPooling: false, dropRate: 0, normEps: 1e-6,
} as const;
const convNorm = (x: string, C: number, k: number[]): Record<string, number[]> => ({
  [`pool_${x}.weight`]: [C, 1, ...k], [`norm_${x}.weight`]: [C], [`norm_${x}.bias`]: [C],
});

/** Run the layer and the reference on the same input; returns both. */
function run(spec: MultiScaleAttentionSpec, shapes: Record<string, number[]>, B: number, Din: number, seed: number, train = false) {
  const N = spec.thw[0] * spec.thw[1] * spec.thw[2] + (spec.hasCls ? 1 : 0);
  const { p, P } = makeParams(shapes, seed);
  const x = normal(key(seed + 100), [B, N, Din]);
  const out = multiScaleAttention(spec)(p, x, key(seed + 200), { train });
  return { out, got: out.dataSync(), expected: refAttention(spec, P, arr(x), B, Din) };
}

test('reference sanity: linear interpolation of a rel-pos table by hand (align_corners=False)', () => {
  const t3: Mat = [[1, 10], [2, 20], [4, 40]];
  // 3 -> 5, scale 0.6: sources 0 (clamped), 0.4, 1, 1.6, 2.2 (clamped to the last row)
  const up = [[1, 10], [1.4, 14], [2, 20], [3.2, 32], [4, 40]];
  refInterp(t3, 5).forEach((r, i) => r.forEach((v, c) => assert.ok(Math.abs(v - up[i]![c]!) < 1e-12, `up ${i} ${c}: ${v}`)));
  // 5 -> 3, scale 5/3: sources 1/3, 2, 11/3
  const t5: Mat = [[0], [3], [6], [9], [12]];
  assert.equal(refInterp(t5, 3).map((r) => Math.round(r[0]! * 1e9) / 1e9), [1, 6, 11]);
});

test('rel-pos spatial+temporal with a cls token, q pooled harder than kv, tables interpolated up and down, residual pooling', () => {
  const dh = 4;
  const spec: MultiScaleAttentionSpec = {
    ...base, hasCls: true, thw: [2, 4, 4], relPosSpatial: true, relPosTemporal: true, residualPooling: true,
    poolQ: { kernel: [3, 3, 3], stride: [2, 2, 2], padding: [1, 1, 1] }, // q grid [1, 2, 2]
    poolKV: { kernel: [1, 3, 3], stride: [1, 1, 1], padding: [0, 1, 1] }, // kv grid [2, 4, 4]
  };
  // needed lengths: h, w: 2·4−1 = 7; t: 2·2−1 = 3. Given: h 4 (upsampled), w 10 (downsampled), t 2 (upsampled).
  const shapes = {
    'qkv.weight': [24, 8], 'qkv.bias': [24], 'proj.weight': [8, 8], 'proj.bias': [8],
    ...convNorm('q', dh, [3, 3, 3]), ...convNorm('k', dh, [1, 3, 3]), ...convNorm('v', dh, [1, 3, 3]),
    rel_pos_h: [4, dh], rel_pos_w: [10, dh], rel_pos_t: [2, dh],
  };
  const { out, got, expected } = run(spec, shapes, 2, 8, 10);
  assert.equal(out.shape, [2, 5, 8]);
  assertClose(got, expected, 'cls, q pooled');
});

test('rel-pos with kv pooled harder than q (index ratio on the key side), no cls, residual pooling, downsampled tables', () => {
  const dh = 4;
  const spec: MultiScaleAttentionSpec = {
    ...base, thw: [2, 4, 4], relPosSpatial: true, relPosTemporal: true, residualPooling: true, separateQkv: true,
    poolQ: { kernel: [1, 3, 3], stride: [1, 1, 1], padding: [0, 1, 1] }, // q grid [2, 4, 4]
    poolKV: { kernel: [3, 3, 3], stride: [2, 2, 2], padding: [1, 1, 1] }, // kv grid [1, 2, 2]
  };
  const shapes = {
    'q.weight': [8, 6], 'q.bias': [8], 'k.weight': [8, 6], 'k.bias': [8], 'v.weight': [8, 6], 'v.bias': [8],
    'proj.weight': [8, 8], 'proj.bias': [8],
    ...convNorm('q', dh, [1, 3, 3]), ...convNorm('k', dh, [3, 3, 3]), ...convNorm('v', dh, [3, 3, 3]),
    rel_pos_h: [9, dh], rel_pos_w: [11, dh], rel_pos_t: [5, dh],
  };
  const { got, expected } = run(spec, shapes, 1, 6, 30);
  assertClose(got, expected, 'no cls, kv pooled');
});

test('rel-pos tables of exactly the needed length are used as they are; cls with rel-pos but no residual pooling', () => {
  const dh = 4;
  const spec: MultiScaleAttentionSpec = {
    ...base, hasCls: true, thw: [1, 4, 4], relPosSpatial: true,
    poolKV: { kernel: [1, 3, 3], stride: [1, 2, 2], padding: [0, 1, 1] }, // kv grid [1, 2, 2]; q [1, 4, 4]
  };
  const shapes = {
    'qkv.weight': [24, 8], 'qkv.bias': [24], 'proj.weight': [8, 8], 'proj.bias': [8],
    ...convNorm('k', dh, [1, 3, 3]), ...convNorm('v', dh, [1, 3, 3]), rel_pos_h: [7, dh], rel_pos_w: [7, dh],
  };
  const { got, expected } = run(spec, shapes, 1, 8, 50);
  assertClose(got, expected, 'exact tables');
});

test('q and k on the same grid use every table row, including the last interpolated one (cls, no pooling)', () => {
  const dh = 4;
  const spec: MultiScaleAttentionSpec = { ...base, hasCls: true, thw: [2, 3, 3], relPosSpatial: true, relPosTemporal: true };
  // needed: h, w 2·3−1 = 5, t 2·2−1 = 3; given h 3 (up: the last row is the clamped source 2.2), w 8 (down), t 2 (up)
  const shapes = { 'qkv.weight': [24, 8], 'qkv.bias': [24], 'proj.weight': [8, 8], 'proj.bias': [8], rel_pos_h: [3, dh], rel_pos_w: [8, dh], rel_pos_t: [2, dh] };
  const { got, expected } = run(spec, shapes, 1, 8, 60);
  assertClose(got, expected, 'same grid');
});

for (const mode of ['avg', 'max'] as const) {
  test(`${mode} pooling (no norm), cls token and residual pooling`, () => {
    const spec: MultiScaleAttentionSpec = {
      ...base, mode, hasCls: true, thw: [2, 4, 4], residualPooling: true, relPosSpatial: true,
      poolQ: { kernel: [1, 3, 3], stride: [1, 2, 2], padding: [0, 1, 1] },
      poolKV: { kernel: [1, 3, 3], stride: [1, 2, 2], padding: [0, 1, 1] },
    };
    const shapes = { 'qkv.weight': [24, 8], 'qkv.bias': [24], 'proj.weight': [8, 8], 'proj.bias': [8], rel_pos_h: [3, 4], rel_pos_w: [5, 4] };
    const { got, expected } = run(spec, shapes, 2, 8, 70);
    assertClose(got, expected, mode);
  });
}

for (const mode of ['conv', 'conv_unshared'] as const) {
  test(`poolFirst with '${mode}': the input is pooled (${mode === 'conv' ? 'per head' : 'all channels at once'}), then projected`, () => {
    const Din = 6;
    const C = mode === 'conv' ? Din / 2 : Din;
    const spec: MultiScaleAttentionSpec = {
      ...base, mode, poolFirst: true, hasCls: true, thw: [1, 4, 4], residualPooling: true,
      poolQ: { kernel: [1, 3, 3], stride: [1, 2, 2], padding: [0, 1, 1] },
      poolKV: { kernel: [1, 3, 3], stride: [1, 1, 1], padding: [0, 1, 1] },
    };
    const shapes = {
      'q.weight': [8, Din], 'q.bias': [8], 'k.weight': [8, Din], 'k.bias': [8], 'v.weight': [8, Din], 'v.bias': [8],
      'proj.weight': [8, 8], 'proj.bias': [8],
      ...convNorm('q', C, [1, 3, 3]), ...convNorm('k', C, [1, 3, 3]), ...convNorm('v', C, [1, 3, 3]),
    };
    const { out, got, expected } = run(spec, shapes, 2, Din, 90);
    assert.equal(out.shape, [2, 5, 8]);
    assertClose(got, expected, mode);
  });
}

test('projection dropout: eval is the plain output; training is dropout with key foldIn(key, 0) after proj', () => {
  const spec: MultiScaleAttentionSpec = { ...base, thw: [1, 2, 3], dropRate: 0.4 };
  const shapes = { 'qkv.weight': [24, 8], 'qkv.bias': [24], 'proj.weight': [8, 8], 'proj.bias': [8] };
  const ev = run(spec, shapes, 2, 8, 110, false);
  assertClose(ev.got, ev.expected, 'eval');
  const tr = run(spec, shapes, 2, 8, 110, true);
  const u = arr(uniform(foldIn(key(110 + 200), 0), tr.out.shape));
  const dropped = tr.expected.map((e, i) => (u[i]! >= 0.4 ? e / 0.6 : 0));
  assert.ok(dropped.some((d) => d === 0) && dropped.some((d) => d !== 0), 'the mask drops some and keeps some');
  assertClose(tr.got, dropped, 'train');
  // rate 0: training is the plain output too
  const zero = run({ ...spec, dropRate: 0 }, shapes, 2, 8, 110, true);
  assertClose(zero.got, ev.expected, 'rate 0');
  // a rate outside [0, 1] is an error when the attention is built, not a dropout silently skipped
  for (const bad of [-0.1, 1.5, Number.NaN]) {
    throwsExactly(() => multiScaleAttention({ ...spec, dropRate: bad }), ArgumentError, `multiScaleAttention: rate must be in [0, 1], got ${bad}`);
  }
});

test.run();
