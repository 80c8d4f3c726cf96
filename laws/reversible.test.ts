/**
 * Laws of reversible(F, G) and reversible sequences (src/reversible/index.ts), on the 'webasm' and the
 * 'cpu' backends, for generated families of stochastic blocks: linear, MLP-like and attention-like
 * (softmax) F and G, each with dropout and drop-path at rates > 0, 'split' or 'shared' keys, buffered or
 * not. The inverse, gradient, determinism and memory laws are the kit's (src/laws, `revgrad/laws`), run
 * with its default tolerances:
 * - inverse: ‖inverse(forward(x)) − x‖∞ ≤ 64 ulps · D · max|state| for a depth-D sequence (and the same
 *   for forward(inverse(y)) − y), where max|state| is the largest stream value met on the way;
 * - gradients: for every input and parameter leaf, ‖g_rev − g_store‖∞ ≤ 1e-4 · max(‖g_rev‖∞, ‖g_store‖∞,
 *   1e-2 · ‖g_all‖∞), ‖g_all‖∞ the largest gradient entry over all leaves. The floor (about 8 float32
 *   ulps of the largest gradient) is for leaves whose gradient is zero or nearly so by cancellation,
 *   e.g. the key bias of attention (softmax ignores a per-query shift): there both modes return
 *   rounding noise, measured up to ~1.3e-7 · ‖g_all‖∞ with inputs of magnitude 10;
 * - determinism: bitwise; forward equals the coupling computed by hand from the documented key
 *   derivation (bitwise);
 * - memory: exact byte counts from the library's own accounting (pullback.residualBytes, measureMemory).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fc from 'fast-check';
import { div, matmul, mul, ones, softmax, tanh, tensor, withBackend, type BackendName, type Tensor } from '../src/index.ts';
import { foldIn, normal, split, type Key } from '../src/random/index.ts';
import { dropout, dropPath, linear, mlp, type LinearParams } from '../src/nn/index.ts';
import { reversible, sequence, type AnyBlock, type BlockParams, type Branch, type Pair } from '../src/reversible/index.ts';
import { arb, assertProperty, determinismLaw, inverseLaw, memoryFlatLaw, reversibleGradLaw, type Family } from '../src/laws/index.ts';
import { BACKENDS, sameBits } from './helpers.ts';

const TRAIN = { train: true };
/** LAW_RUNS_SCALE=10 multiplies every numRuns (for soak runs; the default keeps the file at a few seconds). */
const SCALE = Math.max(1, Number(process.env.LAW_RUNS_SCALE ?? '1') || 1);
const runs = (n: number) => ({ runs: n * SCALE });
const numRuns = (n: number) => ({ numRuns: n * SCALE });
/** LAW_VERBOSE=1 prints each kit law's report (its worst case). */
const show = (r: { text: string }) => void (process.env.LAW_VERBOSE ? console.log(r.text) : undefined);

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
// Families of generated blocks for the kit's laws

const specText = (s: BlockSpec) =>
  `${s.F.kind}(drop ${s.F.drop}, path ${s.F.path}) / ${s.G.kind}(drop ${s.G.drop}, path ${s.G.path}), keys ${s.keys}${s.buffer ? ', buffer' : ''}`;

/** Sequences of 1..maxDepth generated blocks, printed by their specs, with params for any [B, T, C]. */
const family = (maxDepth: number): fc.Arbitrary<Family<BlockParams<any, any>[]>> =>
  fc.array(blockSpec, { minLength: 1, maxLength: maxDepth }).map((specs) => {
    const subject = sequence(specs.map(blockOf));
    Object.defineProperty(subject, fc.toStringMethod, { value: () => `sequence [${specs.map(specText).join('; ')}]` });
    return { subject, params: (k: Key, s: readonly number[]) => split(k, specs.length).map((pk, i) => blockParams(specs[i], s[2], pk)) };
  });

/** Both streams of one generated [B, T, C] shape, uniform in [-m, m] for a magnitude m of 0.1, 1 or 10. */
const streams = (shape: fc.Arbitrary<readonly number[]>) =>
  fc.constantFrom(0.1, 1, 10).chain((m) => arb.tensors(2, { shape, min: -m, max: m })).map(([a, b]): Pair => [a, b]);

// ---------------------------------------------------------------------------------------------
// Helpers


function perBackend(name: string, body: (backend: BackendName) => void | Promise<void>): void {
  for (const backend of BACKENDS) test(`[${backend}] ${name}`, () => (withBackend(backend, () => body(backend))));
}

// ---------------------------------------------------------------------------------------------
// Inverse, gradients, determinism, memory: the kit's laws over the generated families

perBackend('inverse(forward(x)) = x and forward(inverse(y)) = y for stochastic linear / MLP / attention branches', async (backend) => {
  await inverseLaw(family(3), { input: streams(shape3), backend }).assert(runs(50)).then(show);
});

perBackend("gradients in 'reversible' mode equal 'store' mode (inputs and every parameter, stochastic F and G)", async (backend) => {
  await reversibleGradLaw(family(3), { input: streams(shape3), backend }).assert(runs(40)).then(show);
});

// 64+ elements, so masks drawn with different keys differ (rates >= 0.05: all-kept has probability < 0.04 per key).
const maskShape = fc.tuple(fc.integer({ min: 2, max: 3 }), fc.integer({ min: 4, max: 5 }), fc.integer({ min: 8, max: 8 }));

perBackend('the same key gives the same bits (forward and inverse); every branch varies with its key', async (backend) => {
  await determinismLaw(family(3), { input: streams(maskShape), backend, random: true }).assert(runs(10)).then(show);
});

perBackend('forward of a sequence is the coupling Y1 = X1 + F(X2), Y2 = X2 + G(Y1) with the documented keys (bitwise)', () => {
  assertProperty(
    fc.property(caseArb(3), (c) => {
      const { seq, params, xs } = build(c);
      const [y1, y2] = seq.forward(params, xs, c.fwdKey);
      // docs/reversible.md: keys = split(key, D); block i gives [kF, kG] = split(keys[i], 2) ('split') or keys[i] to both ('shared').
      const blockKeys = split(c.fwdKey, c.blocks.length);
      // float32 addition is correctly rounded: the float64 sum stored into a Float32Array is the same bits.
      const plus = (u: Tensor, v: Tensor) => {
        const q = v.dataSync();
        return tensor(Float32Array.from(u.dataSync(), (p, j) => p + q[j]), u.shape);
      };
      let [a, b] = xs;
      c.blocks.forEach((spec, i) => {
        const [kF, kG] = spec.keys === 'shared' ? [blockKeys[i], blockKeys[i]] : split(blockKeys[i], 2);
        a = plus(a, branch(spec.F)(params[i].F, b, kF));
        b = plus(b, branch(spec.G)(params[i].G, a, kG));
      });
      assert.ok(sameBits(y1, a), 'Y1 differs from the hand-computed coupling');
      assert.ok(sameBits(y2, b), 'Y2 differs from the hand-computed coupling');
    }),
    numRuns(15),
  );
});

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
const maskRate = fc.integer({ min: 25, max: 50 }).map((r) => r / 100);

perBackend('different keys give different masks; F and G (and different blocks) get different masks from one key; the inverse replays them', () => {
  assertProperty(
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
    numRuns(15),
  );
});

perBackend("'shared' keys give F and G of a block the same mask, as PySlowFast's shared drop-path", () => {
  assertProperty(
    fc.property(maskShape, maskRate, anyKey, anyKey, (shape, p, k, pk) => {
      const log = { F: [] as Tensor[], G: [] as Tensor[] };
      const C = shape[2];
      const [p0, p1, kx] = split(pk, 3);
      const [kx1, kx2] = split(kx);
      recordingBlock(p, log, 'shared').forward({ F: linearParams(p0, C, C), G: linearParams(p1, C, C) }, [normal(kx1, shape), normal(kx2, shape)], k);
      assert.ok(sameBits(log.F[0], log.G[0]));
      // ... and exactly the mask dropout draws from the block key itself.
      assert.ok(sameBits(log.F[0], dropout(k, p, ones(shape), TRAIN)));
    }),
    numRuns(10),
  );
});

// ---------------------------------------------------------------------------------------------
// Composition

perBackend('inverse of a sequence = the reversed sequence of block inverses (bitwise)', () => {
  assertProperty(
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
    numRuns(15),
  );
});

// ---------------------------------------------------------------------------------------------
// Memory

/** One generated unbuffered block (buffered blocks keep their outputs by design). */
const blockFamily = fc.tuple(branchSpec, branchSpec).map(([F, G]) => {
  const spec: BlockSpec = { F, G, keys: 'split', buffer: false };
  const block = blockOf(spec);
  Object.defineProperty(block, fc.toStringMethod, { value: () => `block ${specText(spec)}` });
  return { block, params: (k: Key, s: readonly number[]) => blockParams(spec, s[2], k) };
});

perBackend("bytes kept for backward: constant in depth (1..32) in 'reversible' mode, exactly linear in 'store' mode", async (backend) => {
  const input = { shape: fc.integer({ min: 2, max: 4 }).map((C) => [1, 2, C]) };
  await memoryFlatLaw(blockFamily, { input, depths: [1, 2, 4, 8, 16, 32], store: 'linear', backend }).assert(runs(4)).then(show);
});

test.run();
