/**
 * Laws of reversible(F, G) and reversible sequences (src/reversible/index.ts), checked with fast-check
 * on both the 'webasm' and the 'cpu' backends, for generated stochastic branches: linear, MLP-like and
 * attention-like (softmax) F and G, each with dropout and drop-path at rates > 0.
 *
 * Stated tolerances:
 * - inverse: ‖inverse(forward(x)) − x‖∞ ≤ INV_TOL · D · (1 + ‖x‖∞ + ‖y‖∞) for a depth-D sequence
 *   (float32 additive coupling loses about one ulp of the larger of x and y per block, and the
 *   branches here are scaled to be about 1-Lipschitz); same bound for forward(inverse(y)) − y.
 * - gradients: for every input and parameter leaf, ‖g_rev − g_store‖∞ ≤ 1e-4 · max(‖g_rev‖∞, ‖g_store‖∞, 1e-2 · ‖g_all‖∞),
 *   where ‖g_all‖∞ is the largest gradient entry over all leaves: every leaf within 1e-4 relative,
 *   and leaves under 1% of the largest gradient within 1e-6 · ‖g_all‖∞ absolute. That floor (about
 *   8 float32 ulps of the largest gradient) is for leaves whose gradient is zero or nearly so by
 *   cancellation, e.g. the key bias of attention (softmax ignores a per-query shift): there both
 *   modes return rounding noise, measured up to ~1.3e-7 · ‖g_all‖∞ with inputs of magnitude 10.
 * - determinism, composition: bitwise equality.
 * - memory: exact byte counts from the library's own accounting (pullback.residualBytes, measureMemory).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fc from 'fast-check';
import {
  abs,
  add,
  div,
  leaves,
  matmul,
  max,
  measureMemory,
  mul,
  ones,
  softmax,
  sub,
  sum,
  tanh,
  valueAndGrad,
  vjp,
  withBackend,
  type BackendName,
  type Tensor,
} from '../src/index.ts';
import { foldIn, normal, split, type Key } from '../src/random/index.ts';
import { dropout, dropPath, linear, mlp, type LinearParams } from '../src/nn/index.ts';
import { reversible, sequence, type AnyBlock, type BlockParams, type Branch, type Pair } from '../src/reversible/index.ts';

const BACKENDS: readonly BackendName[] = ['webasm', 'cpu'];
const INV_TOL = 1e-5;
const GRAD_RTOL = 1e-4;
const TRAIN = { train: true };
/** LAW_RUNS_SCALE=10 multiplies every numRuns (for soak runs; the default keeps the file at a few seconds). */
const SCALE = Math.max(1, Number(process.env.LAW_RUNS_SCALE ?? '1') || 1);
const runs = (n: number) => ({ numRuns: n * SCALE });

// ---------------------------------------------------------------------------------------------
// Generated branches

type Kind = 'linear' | 'mlp' | 'attention';
interface BranchSpec {
  readonly kind: Kind;
  /** dropout rate (> 0) */
  readonly drop: number;
  /** drop-path rate (> 0) */
  readonly path: number;
}
interface BlockSpec {
  readonly F: BranchSpec;
  readonly G: BranchSpec;
  readonly keys: 'split' | 'shared';
  readonly buffer: boolean;
}

/** A linear layer with weights ~ N(0, gain²/fanIn), so the branch stays about 1-Lipschitz. */
function linearParams(k: Key, out: number, inp: number, gain = 0.8): LinearParams {
  const [kw, kb] = split(k);
  return { weight: mul(normal(kw, [out, inp]), gain / Math.sqrt(inp)), bias: mul(normal(kb, [out]), 0.1) };
}

function branchParams(spec: BranchSpec, C: number, k: Key): unknown {
  const ks = split(k, 4);
  switch (spec.kind) {
    case 'linear':
      return linearParams(ks[0], C, C);
    case 'mlp':
      return { fc1: linearParams(ks[0], 2 * C, C), fc2: linearParams(ks[1], C, 2 * C) };
    case 'attention':
      return { q: linearParams(ks[0], C, C), k: linearParams(ks[1], C, C), v: linearParams(ks[2], C, C), o: linearParams(ks[3], C, C) };
  }
}

/** A stochastic branch (params, x [B, T, C], key) -> [B, T, C]; its key is used through foldIn only. */
function branch(spec: BranchSpec): Branch<any> {
  return (p, x, k) => {
    let h: Tensor;
    switch (spec.kind) {
      case 'linear':
        h = dropout(foldIn(k, 0), spec.drop, tanh(linear(p, x)), TRAIN);
        break;
      case 'mlp':
        h = mlp(p, x, foldIn(k, 0), { drop: spec.drop });
        break;
      case 'attention': {
        const C = x.shape[x.shape.length - 1];
        const scores = div(matmul(linear(p.q, x), linear(p.k, x), { transB: true }), Math.sqrt(C));
        const attn = dropout(foldIn(k, 0), spec.drop, softmax(scores, -1), TRAIN);
        h = linear(p.o, matmul(attn, linear(p.v, x)));
        break;
      }
    }
    return dropPath(foldIn(k, 1), spec.path, h, TRAIN);
  };
}

const blockOf = (s: BlockSpec): AnyBlock => reversible(branch(s.F), branch(s.G), { keys: s.keys, buffer: s.buffer });
const blockParams = (s: BlockSpec, C: number, k: Key): BlockParams<any, any> => {
  const [kF, kG] = split(k);
  return { F: branchParams(s.F, C, kF), G: branchParams(s.G, C, kG) };
};

const rate = fc.integer({ min: 5, max: 50 }).map((r) => r / 100);
const branchSpec: fc.Arbitrary<BranchSpec> = fc.record({
  kind: fc.constantFrom<Kind>('linear', 'mlp', 'attention'),
  drop: rate,
  path: rate,
});
const blockSpec: fc.Arbitrary<BlockSpec> = fc.record({
  F: branchSpec,
  G: branchSpec,
  keys: fc.constantFrom<'split' | 'shared'>('split', 'shared'),
  buffer: fc.boolean(),
});
const uint32 = fc.integer({ min: 0, max: 0xffffffff });
const anyKey: fc.Arbitrary<Key> = fc.tuple(uint32, uint32);
const shape3 = fc.tuple(fc.integer({ min: 1, max: 3 }), fc.integer({ min: 1, max: 4 }), fc.integer({ min: 2, max: 6 }));

interface Case {
  readonly blocks: readonly BlockSpec[];
  readonly shape: readonly [number, number, number];
  readonly paramKey: Key;
  readonly dataKey: Key;
  readonly fwdKey: Key;
  /** magnitude of the inputs */
  readonly scale: number;
}
const caseArb = (maxDepth: number): fc.Arbitrary<Case> =>
  fc.record({
    blocks: fc.array(blockSpec, { minLength: 1, maxLength: maxDepth }),
    shape: shape3,
    paramKey: anyKey,
    dataKey: anyKey,
    fwdKey: anyKey,
    scale: fc.constantFrom(0.1, 1, 10),
  });

function build(c: Case) {
  const C = c.shape[2];
  const seq = sequence(c.blocks.map(blockOf));
  const pk = split(c.paramKey, c.blocks.length);
  const params = c.blocks.map((b, i) => blockParams(b, C, pk[i]));
  const [k1, k2, k3, k4] = split(c.dataKey, 4);
  const pair = (ka: Key, kb: Key): Pair => [mul(normal(ka, c.shape), c.scale), mul(normal(kb, c.shape), c.scale)];
  return { seq, params, xs: pair(k1, k2), other: pair(k3, k4) };
}

// ---------------------------------------------------------------------------------------------
// Helpers

const maxAbs = (t: Tensor): number => max(abs(t)).itemSync();
const maxAbsDiff = (a: Tensor, b: Tensor): number => maxAbs(sub(a, b));
const pairMax = (p: Pair): number => Math.max(maxAbs(p[0]), maxAbs(p[1]));
const pairDiff = (a: Pair, b: Pair): number => Math.max(maxAbsDiff(a[0], b[0]), maxAbsDiff(a[1], b[1]));
const bits = (t: Tensor): number[] => Array.from(new Uint32Array(Float32Array.from(t.dataSync()).buffer));
const sameBits = (a: Tensor, b: Tensor): boolean => {
  const x = bits(a);
  const y = bits(b);
  return x.length === y.length && x.every((v, i) => v === y[i]);
};

function perBackend(name: string, body: () => void): void {
  for (const backend of BACKENDS) test(`[${backend}] ${name}`, () => withBackend(backend, body));
}

// ---------------------------------------------------------------------------------------------
// Inverse

perBackend('inverse(forward(x)) = x for stochastic linear / MLP / attention branches', () => {
  fc.assert(
    fc.property(caseArb(3), (c) => {
      const { seq, params, xs } = build(c);
      const ys = seq.forward(params, xs, c.fwdKey);
      const back = seq.inverse(params, ys, c.fwdKey);
      const tol = INV_TOL * c.blocks.length * (1 + pairMax(xs) + pairMax(ys));
      const err = pairDiff(back, xs);
      assert.ok(err <= tol, `‖inverse(forward(x)) − x‖∞ = ${err} > ${tol}`);
    }),
    runs(50),
  );
});

perBackend('forward(inverse(y)) = y', () => {
  fc.assert(
    fc.property(caseArb(3), (c) => {
      const { seq, params, other: ys } = build(c);
      const xs = seq.inverse(params, ys, c.fwdKey);
      const again = seq.forward(params, xs, c.fwdKey);
      const tol = INV_TOL * c.blocks.length * (1 + pairMax(xs) + pairMax(ys));
      const err = pairDiff(again, ys);
      assert.ok(err <= tol, `‖forward(inverse(y)) − y‖∞ = ${err} > ${tol}`);
    }),
    runs(50),
  );
});

// ---------------------------------------------------------------------------------------------
// Gradients

perBackend("gradients in 'reversible' mode equal 'store' mode (inputs and every parameter, stochastic F and G)", () => {
  fc.assert(
    fc.property(caseArb(3), anyKey, (c, ctKey) => {
      const { seq, params, xs } = build(c);
      const [kc1, kc2] = split(ctKey);
      const ct: Pair = [normal(kc1, c.shape), normal(kc2, c.shape)];
      const run = (mode: 'reversible' | 'store') => {
        const f = (P: typeof params, x1: Tensor, x2: Tensor) => seq.forward(P, [x1, x2], c.fwdKey, { mode });
        const [out, pullback] = vjp(f, params, xs[0], xs[1]);
        return { out, grads: pullback(ct as [Tensor, Tensor]) };
      };
      const rev = run('reversible');
      const sto = run('store');
      // The forward values do not depend on the mode at all.
      assert.ok(sameBits(rev.out[0], sto.out[0]) && sameBits(rev.out[1], sto.out[1]), 'forward values differ between modes');
      const a = leaves(rev.grads);
      const b = leaves(sto.grads);
      assert.is(a.length, b.length);
      assert.ok(a.length >= 2 + 2 * c.blocks.length);
      const overall = Math.max(...b.map(maxAbs));
      assert.ok(overall > 0);
      a.forEach((g, i) => {
        assert.equal(g.shape, b[i].shape);
        const d = maxAbsDiff(g, b[i]);
        const scale = Math.max(maxAbs(g), maxAbs(b[i]), 1e-2 * overall);
        assert.ok(d <= GRAD_RTOL * scale, `gradient leaf ${i}: ‖Δ‖∞ = ${d} > ${GRAD_RTOL} · ${scale}`);
      });
    }),
    runs(40),
  );
});

// ---------------------------------------------------------------------------------------------
// Determinism and key use

/**
 * A block whose F and G multiply by dropout masks of a known rate and record them (masks are read
 * off as dropout(k, p, 1)). The masks are observable, the rest of the block is ordinary.
 */
function recordingBlock(p: number, log: { F: Tensor[]; G: Tensor[] }, keys: 'split' | 'shared' = 'split'): AnyBlock {
  const rec = (which: 'F' | 'G'): Branch<LinearParams> => (params, x, k) => {
    const mask = dropout(k, p, ones(x.shape), TRAIN);
    log[which].push(mask);
    return mul(tanh(linear(params, x)), mask);
  };
  return reversible(rec('F'), rec('G'), { keys });
}
// 64+ elements and p in [0.25, 0.5]: two independent masks agree with probability ≤ 0.625^64 < 1e-13.
const maskShape = fc.tuple(fc.integer({ min: 2, max: 3 }), fc.integer({ min: 4, max: 5 }), fc.integer({ min: 8, max: 8 }));
const maskRate = fc.integer({ min: 25, max: 50 }).map((r) => r / 100);

perBackend('forward with the same key is bitwise identical across runs (fresh blocks, fresh params)', () => {
  fc.assert(
    fc.property(caseArb(3), (c) => {
      const first = (() => {
        const { seq, params, xs } = build(c);
        return seq.forward(params, xs, c.fwdKey);
      })();
      const second = (() => {
        const { seq, params, xs } = build(c);
        return seq.forward(params, xs, c.fwdKey);
      })();
      assert.ok(sameBits(first[0], second[0]) && sameBits(first[1], second[1]));
    }),
    runs(15),
  );
});

perBackend('different keys give different masks; F and G (and different blocks) get different masks from one key', () => {
  fc.assert(
    fc.property(maskShape, maskRate, anyKey, anyKey, anyKey, (shape, p, ka, kb, pk) => {
      fc.pre(ka[0] !== kb[0] || ka[1] !== kb[1]);
      const log = { F: [] as Tensor[], G: [] as Tensor[] };
      const block = recordingBlock(p, log);
      const seq = sequence([block, block]);
      const C = shape[2];
      const [p0, p1, p2, p3, kx] = split(pk, 5);
      const params = [
        { F: linearParams(p0, C, C), G: linearParams(p1, C, C) },
        { F: linearParams(p2, C, C), G: linearParams(p3, C, C) },
      ];
      const [kx1, kx2] = split(kx);
      const xs: Pair = [normal(kx1, shape), normal(kx2, shape)];
      seq.forward(params, xs, ka);
      seq.forward(params, xs, kb);
      const [fa0, fa1, fb0, fb1] = log.F;
      const [ga0, ga1, gb0] = log.G;
      assert.is(log.F.length, 4);
      // different keys -> different masks
      assert.not.ok(sameBits(fa0, fb0), 'F masks equal for different keys');
      assert.not.ok(sameBits(ga0, gb0), 'G masks equal for different keys');
      assert.not.ok(sameBits(fa1, fb1), 'block-1 F masks equal for different keys');
      // one block key -> different masks for F and G; different blocks -> different masks
      assert.not.ok(sameBits(fa0, ga0), 'F and G got the same mask from one block key');
      assert.not.ok(sameBits(fa0, fa1), 'blocks 0 and 1 got the same F mask');
      assert.not.ok(sameBits(ga0, ga1), 'blocks 0 and 1 got the same G mask');
      // same key -> same masks, also when replayed by the inverse
      seq.inverse(params, seq.forward(params, xs, ka), ka);
      const replayF = log.F.slice(4);
      assert.is(replayF.length, 4); // forward: blocks 0, 1; inverse: blocks 1, 0
      assert.ok(sameBits(replayF[0], fa0) && sameBits(replayF[1], fa1));
      assert.ok(sameBits(replayF[2], fa1) && sameBits(replayF[3], fa0));
    }),
    runs(15),
  );
});

test('masks depend only on the key: identical on webasm and cpu', () => {
  fc.assert(
    fc.property(maskShape, maskRate, anyKey, (shape, p, k) => {
      const masks = BACKENDS.map((b) => withBackend(b, () => dropout(k, p, ones(shape), TRAIN)));
      assert.ok(sameBits(masks[0], masks[1]));
      const paths = BACKENDS.map((b) => withBackend(b, () => dropPath(k, p, ones(shape), TRAIN)));
      assert.ok(sameBits(paths[0], paths[1]));
    }),
    runs(40),
  );
});

// ---------------------------------------------------------------------------------------------
// Composition

perBackend('inverse of a sequence = the reversed sequence of block inverses (bitwise)', () => {
  fc.assert(
    fc.property(caseArb(4), (c) => {
      const { seq, params, other: ys } = build(c);
      const n = c.blocks.length;
      const keys = split(c.fwdKey, n);
      const whole = seq.inverse(params, ys, c.fwdKey);
      let cur: Pair = ys;
      for (let i = n - 1; i >= 0; i--) cur = seq.blocks[i].inverse(params[i], cur, keys[i]);
      assert.ok(sameBits(whole[0], cur[0]) && sameBits(whole[1], cur[1]), 'per-block composition');
      // and split anywhere: inverse(A ++ B) = inverse(A) ∘ inverse(B), forward(A ++ B) = forward(B) ∘ forward(A)
      for (let cut = 0; cut <= n; cut++) {
        const A = sequence(seq.blocks.slice(0, cut));
        const B = sequence(seq.blocks.slice(cut));
        const inv = A.inverseWithKeys(params.slice(0, cut), B.inverseWithKeys(params.slice(cut), ys, keys.slice(cut)), keys.slice(0, cut));
        assert.ok(sameBits(whole[0], inv[0]) && sameBits(whole[1], inv[1]), `inverse split at ${cut}`);
        const fwd = B.forwardWithKeys(params.slice(cut), A.forwardWithKeys(params.slice(0, cut), ys, keys.slice(0, cut)), keys.slice(cut));
        const direct = seq.forward(params, ys, c.fwdKey);
        assert.ok(sameBits(direct[0], fwd[0]) && sameBits(direct[1], fwd[1]), `forward split at ${cut}`);
      }
    }),
    runs(15),
  );
});

// ---------------------------------------------------------------------------------------------
// Memory

const DEPTHS = [1, 2, 4, 8, 16, 32];

perBackend("bytes kept for backward: constant in depth (1..32) in 'reversible' mode, linear in 'store' mode", () => {
  fc.assert(
    fc.property(branchSpec, branchSpec, fc.integer({ min: 2, max: 4 }), anyKey, (sF, sG, C, k) => {
      const shape = [1, 2, C];
      const spec: BlockSpec = { F: sF, G: sG, keys: 'split', buffer: false };
      const measure = (D: number, mode: 'reversible' | 'store') => {
        const seq = sequence(Array.from({ length: D }, () => blockOf(spec)));
        const pk = split(k, D + 2);
        const params = Array.from({ length: D }, (_, i) => blockParams(spec, C, pk[i]));
        const x1 = normal(pk[D], shape);
        const x2 = normal(pk[D + 1], shape);
        const loss = (P: typeof params, a: Tensor, b: Tensor) => {
          const [y1, y2] = seq.forward(P, [a, b], k, { mode });
          return sum(mul(y1, add(y2, 1)));
        };
        const residual = vjp(loss, params, x1, x2)[1].residualBytes;
        const peak = measureMemory(() => valueAndGrad(loss, [0, 1, 2])(params, x1, x2)).peakBytes;
        return { residual, peak };
      };
      const rev = DEPTHS.map((D) => measure(D, 'reversible'));
      const sto = DEPTHS.map((D) => measure(D, 'store'));
      for (const m of rev) assert.is(m.residual, rev[0].residual, `reversible residual bytes ${rev.map((r) => r.residual)}`);
      // Peak: identical for every depth from 2 on. Depth 1 may peak a little lower: its only block is
      // also the first, so nothing overlaps rebuilding a previous block's inputs in its backward pass.
      for (const m of rev.slice(1)) assert.is(m.peak, rev[1].peak, `reversible peak bytes ${rev.map((r) => r.peak)}`);
      assert.ok(rev[0].peak <= rev[1].peak, `reversible peak bytes ${rev.map((r) => r.peak)}`);
      // store: exactly affine in D with a positive per-block cost, so depth 32 keeps 32 blocks' worth.
      const perBlock = sto[1].residual - sto[0].residual;
      assert.ok(perBlock > 0);
      DEPTHS.forEach((D, i) => assert.is(sto[i].residual, sto[0].residual + (D - 1) * perBlock, `store residual bytes ${sto.map((s) => s.residual)}`));
      assert.ok(sto[DEPTHS.length - 1].residual > 16 * rev[0].residual);
      assert.ok(sto[DEPTHS.length - 1].peak > 8 * rev[0].peak);
    }),
    runs(4),
  );
});

test.run();
