/**
 * Example-based tests of src/reversible/index.ts: stacks mixing stages and reversible runs, the
 * `buffer` and `keys` block options, and the error messages. The general laws (inverse, gradients,
 * determinism, composition, memory) are in laws/reversible.test.ts.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  abs,
  ArgumentError,
  concat,
  leaves,
  max,
  mul,
  ones,
  ShapeError,
  sub,
  tanh,
  vjp,
  withBackend,
  type Tensor,
} from '../src/index.ts';
import { key, normal, split, type Key } from '../src/random/index.ts';
import { dropout, dropPath, linear, type LinearParams } from '../src/nn/index.ts';
import { reversible, sequence, stack, stage, type AnyBlock, type Branch, type Pair, type StackParams } from '../src/reversible/index.ts';
import { BACKENDS, sameBits } from '../laws/helpers.ts';

const TRAIN = { train: true };

const lin = (k: Key, out: number, inp: number, gain = 0.8): LinearParams => {
  const [kw, kb] = split(k);
  return { weight: mul(normal(kw, [out, inp]), gain / Math.sqrt(inp)), bias: mul(normal(kb, [out]), 0.1) };
};
/** tanh(linear) with dropout and drop-path: a small stochastic branch. */
const branch: Branch<LinearParams> = (p, x, k) => {
  const [kd, kp] = split(k);
  return dropPath(kp, 0.2, dropout(kd, 0.1, tanh(linear(p, x)), TRAIN), TRAIN);
};
const blockParams = (k: Key, C: number) => {
  const [a, b] = split(k);
  return { F: lin(a, C, C), G: lin(b, C, C) };
};

const maxAbs = (t: Tensor): number => max(abs(t)).itemSync();
/** Largest leaf-relative difference between two gradient trees (leaves under 1% of the largest are compared against 1% of it). */
function gradGap(a: unknown, b: unknown): number {
  const la = leaves(a);
  const lb = leaves(b);
  assert.is(la.length, lb.length);
  const overall = Math.max(...lb.map(maxAbs));
  let worst = 0;
  la.forEach((g, i) => {
    assert.equal(g.shape, lb[i].shape);
    const scale = Math.max(maxAbs(g), maxAbs(lb[i]), 1e-2 * overall);
    worst = Math.max(worst, maxAbs(sub(g, lb[i])) / scale);
  });
  return worst;
}

function perBackend(name: string, body: () => void): void {
  for (const b of BACKENDS) test(`[${b}] ${name}`, () => withBackend(b, body));
}

// ---------------------------------------------------------------------------------------------
// Stacks: stages and reversible runs

const C = 4;
const C2 = 6;
/** A stage: [..., 2C] -> [..., C'] (what Rev-MViT's pooling/projection stages do to the channels). */
const proj = stage((p: LinearParams, x: Tensor, k: Key) => dropout(k, 0.1, linear(p, x), TRAIN));
const layers = [reversible(branch, branch), reversible(branch, branch), proj, reversible(branch, branch), reversible(branch, branch, { keys: 'shared' })];
/** The layers' params, typed position by position (StackParams) as stack() expects them. */
type LayersParams = StackParams<typeof layers>;
const stackParams = (k: Key): LayersParams => {
  const ks = split(k, layers.length);
  return [blockParams(ks[0], C), blockParams(ks[1], C), lin(ks[2], C2, 2 * C), blockParams(ks[3], C2), blockParams(ks[4], C2)];
};

perBackend('stack: runs start from [x, x], end in concat([Y1, Y2], -1), stages map [..., 2C] to the next stream', () => {
  const net = stack(layers);
  assert.equal(
    net.groups.map((g) => [g.start, g.length, g.stage === null ? 'run' : 'stage']),
    [
      [0, 2, 'run'],
      [2, 1, 'stage'],
      [3, 2, 'run'],
    ],
  );
  const P = stackParams(key(1));
  const x = normal(key(2), [2, 3, C]);
  const k = key(3);
  const out = net.forward(P, x, k);
  assert.equal(out.shape, [2, 3, 2 * C2]);

  // The same thing by hand: one key per layer, split from k.
  const ks = split(k, layers.length);
  const run1 = sequence(layers.slice(0, 2) as AnyBlock[]);
  const run2 = sequence(layers.slice(3) as AnyBlock[]);
  const [a1, a2] = run1.forwardWithKeys(P.slice(0, 2) as any, [x, x], ks.slice(0, 2));
  const h = proj.apply(P[2] as LinearParams, concat([a1, a2], -1), ks[2]);
  const [b1, b2] = run2.forwardWithKeys(P.slice(3) as any, [h, h], ks.slice(3));
  assert.ok(sameBits(out, concat([b1, b2], -1)));

  // streams() undoes the final concat, and inverting the last run gives back [h, h].
  const [s1, s2] = net.streams(out);
  assert.ok(sameBits(s1, b1) && sameBits(s2, b2));
  const [r1, r2] = run2.inverseWithKeys(P.slice(3) as any, [s1, s2], ks.slice(3));
  assert.ok(maxAbs(sub(r1, h)) < 1e-5 && maxAbs(sub(r2, h)) < 1e-5);

  // The drift report names layers by their index in the stack.
  const report = net.drift(P, x, k);
  assert.equal(report.map((e) => e.block), [0, 1, 3, 4]);
  for (const e of report) assert.ok(e.x1.itemSync() < 1e-5 && e.x2.itemSync() < 1e-5);
});

perBackend("stack: 'reversible' and 'store' modes give the same value and gradients (params and x)", () => {
  const net = stack(layers);
  const P = stackParams(key(4));
  const x = normal(key(5), [2, 3, C]);
  const ct = normal(key(6), [2, 3, 2 * C2]);
  const run = (mode: 'reversible' | 'store') => {
    const [out, pb] = vjp((p: LayersParams, xx: Tensor) => net.forward(p, xx, key(7), { mode }), P, x);
    return { out, grads: pb(ct), residual: pb.residualBytes };
  };
  const rev = run('reversible');
  const sto = run('store');
  assert.ok(sameBits(rev.out, sto.out));
  const gap = gradGap(rev.grads, sto.grads);
  assert.ok(gap < 1e-5, `gradient gap ${gap}`);
  // x feeds both streams of the first run: its gradient is the sum of both streams' cotangents, not zero.
  assert.ok(maxAbs((rev.grads as [unknown, Tensor])[1]) > 0);
  assert.ok(rev.residual < sto.residual, `residual bytes ${rev.residual} vs ${sto.residual}`);
});

// ---------------------------------------------------------------------------------------------
// buffer

test('empty: a sequence or stack of no blocks is the identity, forward, inverse and backward', () => {
  const xs: Pair = [normal(key(70), [2, 3, C]), normal(key(71), [2, 3, C])];
  const ct: Pair = [normal(key(72), [2, 3, C]), normal(key(73), [2, 3, C])];
  const seq = sequence([]);
  for (const mode of ['reversible', 'store'] as const) {
    const [y1, y2] = seq.forward([], xs, key(74), { mode });
    assert.ok(sameBits(y1, xs[0]) && sameBits(y2, xs[1]), mode);
    const [, pb] = vjp((a: Tensor, b: Tensor) => seq.forward([], [a, b], key(74), { mode }), xs[0], xs[1]);
    const [g1, g2] = pb(ct as [Tensor, Tensor]);
    assert.ok(sameBits(g1, ct[0]) && sameBits(g2, ct[1]), `${mode}: the cotangents pass through`);
  }
  const [x1, x2] = seq.inverse([], xs, key(74));
  assert.ok(sameBits(x1, xs[0]) && sameBits(x2, xs[1]));
  assert.equal(seq.drift([], xs, key(74)), []);
  assert.ok(sameBits(stack([]).forward([], xs[0], key(74)), xs[0]));
});

perBackend('buffer: the same gradients as without buffers and as store mode', () => {
  const D = 4;
  const P = Array.from(split(key(10), D), (k) => blockParams(k, C));
  const xs: Pair = [normal(key(11), [2, 3, C]), normal(key(12), [2, 3, C])];
  const ct: Pair = [normal(key(13), [2, 3, C]), normal(key(14), [2, 3, C])];
  const grads = (buffer: (i: number) => boolean, mode: 'reversible' | 'store') => {
    const seq = sequence(Array.from({ length: D }, (_, i) => reversible(branch, branch, { buffer: buffer(i) })));
    const [, pb] = vjp((p: unknown[], a: Tensor, b: Tensor) => seq.forward(p as any, [a, b], key(15), { mode }), P, xs[0], xs[1]);
    return { grads: pb(ct as [Tensor, Tensor]), residual: pb.residualBytes };
  };
  const store = grads(() => false, 'store');
  const none = grads(() => false, 'reversible');
  const some = grads((i) => i === 1 || i === 2, 'reversible');
  const all = grads(() => true, 'reversible');
  for (const g of [none, some, all]) assert.ok(gradGap(g.grads, store.grads) < 1e-5, `gap ${gradGap(g.grads, store.grads)}`);
  // Each buffered block (except the last, whose outputs are kept anyway) keeps its two outputs.
  const pairBytes = 2 * 2 * 3 * C * 4;
  assert.is(some.residual, none.residual + 2 * pairBytes);
  assert.is(all.residual, none.residual + (D - 1) * pairBytes);
  // Unbuffered is the default: blocks made without options keep nothing but the sequence's outputs.
  const plain = sequence(Array.from({ length: D }, () => reversible(branch, branch)));
  const [, pb] = vjp((p: unknown[], a: Tensor, b: Tensor) => plain.forward(p as any, [a, b], key(15)), P, xs[0], xs[1]);
  assert.is(pb.residualBytes, none.residual);
});

/**
 * A sequence built to drift: block 1's F is huge (weights ~1e4), so Y1 = X1 + F(X2) rounds X1 away
 * and rebuilding X1 = Y1 − F(X2) is off by ~ulp(1e4). Block 0's G records every input it sees.
 */
function driftingSequence(buffer0: boolean) {
  const seen: Tensor[] = [];
  const recordingG: Branch<LinearParams> = (p, x, k) => {
    seen.push(x);
    return branch(p, x, k);
  };
  const huge: Branch<LinearParams> = (p, x) => linear(p, x);
  const seq = sequence([reversible(branch, recordingG, { buffer: buffer0 }), reversible(huge, branch)]);
  const P = [blockParams(key(20), C), { F: lin(key(21), C, C, 3e4), G: lin(key(22), C, C) }];
  return { seq, P, seen };
}

perBackend('buffer: zero drift at a buffered boundary (the backward pass resumes from the exact outputs)', () => {
  const xs: Pair = [normal(key(23), [2, 3, C]), normal(key(24), [2, 3, C])];
  const ct: Pair = [normal(key(25), [2, 3, C]), normal(key(26), [2, 3, C])];
  const k = key(27);
  const runOf = (buffer0: boolean, mode: 'reversible' | 'store') => {
    const { seq, P, seen } = driftingSequence(buffer0);
    const [, pb] = vjp((p: unknown[], a: Tensor, b: Tensor) => seq.forward(p as any, [a, b], k, { mode }), P, xs[0], xs[1]);
    const grads = pb(ct as [Tensor, Tensor]);
    // seen[0]: block 0's Y1 in the forward pass; the last entry: the Y1 its backward pass used.
    return { grads, forwardY1: seen[0], backwardY1: seen[seen.length - 1], seq, P };
  };
  const store = runOf(false, 'store');
  const unbuffered = runOf(false, 'reversible');
  const buffered = runOf(true, 'reversible');

  // Without the buffer block 0's outputs are rebuilt from block 1's and carry its drift ...
  const rebuiltError = maxAbs(sub(unbuffered.backwardY1, unbuffered.forwardY1));
  assert.ok(rebuiltError > 1e-4, `expected drift, got ${rebuiltError}`);
  // ... with it the backward pass starts block 0 from exactly the outputs of the forward pass.
  assert.ok(sameBits(buffered.backwardY1, buffered.forwardY1));

  // Block 0's parameter gradients: exact (up to rounding) with the buffer, off without it.
  const block0 = (g: unknown) => (g as [unknown[]])[0][0];
  const gapBuffered = gradGap(block0(buffered.grads), block0(store.grads));
  const gapUnbuffered = gradGap(block0(unbuffered.grads), block0(store.grads));
  assert.ok(gapBuffered < 1e-5, `buffered gap ${gapBuffered}`);
  assert.ok(gapUnbuffered > 100 * gapBuffered, `unbuffered gap ${gapUnbuffered} vs buffered ${gapBuffered}`);

  // The drift report shows the same thing: block 1 rebuilds its inputs badly; block 0, rebuilt from
  // exact (buffered) outputs, only carries its own reconstruction error.
  const reportBuffered = buffered.seq.drift(buffered.P as any, xs, k);
  const reportUnbuffered = unbuffered.seq.drift(unbuffered.P as any, xs, k);
  assert.ok(reportBuffered[1].x1.itemSync() > 1e-4);
  assert.ok(reportUnbuffered[0].x1.itemSync() > 1e-4);
  const alone = sequence([buffered.seq.blocks[0]]).driftWithKeys([buffered.P[0]] as any, xs, [split(k, 2)[0]]);
  assert.ok(sameBits(reportBuffered[0].x1, alone[0].x1) && sameBits(reportBuffered[0].x2, alone[0].x2));
  assert.ok(reportBuffered[0].x1.itemSync() < 1e-5 && reportBuffered[0].x2.itemSync() < 1e-5);
});

// ---------------------------------------------------------------------------------------------
// keys

test("keys: 'shared' gives F and G the same drop-path mask, 'split' different ones", () => {
  const masks = (keys: 'split' | 'shared', k: Key) => {
    const seen: Tensor[] = [];
    const f: Branch<LinearParams> = (p, x, kk) => {
      seen.push(dropPath(kk, 0.5, ones(x.shape), TRAIN));
      return mul(tanh(linear(p, x)), seen[seen.length - 1]);
    };
    const block = reversible(f, f, { keys });
    const x = normal(key(30), [64, 1, C]);
    block.forward(blockParams(key(31), C), [x, x], k);
    assert.is(seen.length, 2);
    return seen;
  };
  for (const s of [40, 41, 42]) {
    const [sf, sg] = masks('shared', key(s));
    assert.ok(sameBits(sf, sg), 'shared: F and G masks differ');
    // drop-path at p = 0.5 keeps a sample at 1 / (1 - p) = 2 or drops it to 0; 64 samples see both.
    const values = new Set(sf.dataSync());
    assert.equal([...values].sort(), [0, 2], `mask values ${[...values]}`);
    const [pf, pg] = masks('split', key(s));
    assert.not.ok(sameBits(pf, pg), 'split: F and G got the same mask');
  }
});

// ---------------------------------------------------------------------------------------------
// Errors

const x4 = normal(key(50), [2, 3, C]);
const x5 = normal(key(51), [2, 3, C + 1]);

test('error: F or G that changes the shape', () => {
  const widen: Branch<LinearParams> = (p, x) => linear(p, x);
  const wideParams = { F: lin(key(52), C + 1, C), G: lin(key(53), C, C) };
  const badF = reversible(widen, branch);
  assert.throws(() => badF.forward(wideParams, [x4, x4], key(0)), (e: unknown) => e instanceof ShapeError && /^reversible\.forward: F must return a tensor shaped like its input \[2, 3, 4\], got \[2, 3, 5\]/.test((e as Error).message));
  const badG = reversible(branch, widen);
  const gParams = { F: lin(key(52), C, C), G: lin(key(53), C + 1, C) };
  assert.throws(() => badG.forward(gParams, [x4, x4], key(0)), /^reversible\.forward: G must return a tensor shaped like its input \[2, 3, 4\], got \[2, 3, 5\]/);
  // Also inside a sequence, in both modes and under differentiation.
  for (const mode of ['reversible', 'store'] as const) {
    const seq = sequence([badF]);
    assert.throws(() => seq.forward([wideParams], [x4, x4], key(0), { mode }), /reversible\.forward: F must return/);
    assert.throws(() => vjp((p: unknown[]) => seq.forward(p as any, [x4, x4], key(0), { mode }), [wideParams]), /reversible\.forward: F must return/);
  }
  // The inverse checks too (a [B, T, 1] output would otherwise broadcast silently).
  const narrow: Branch<LinearParams> = (p, x) => linear(p, x);
  const narrowParams = { F: lin(key(54), C, C), G: lin(key(55), 1, C) };
  assert.throws(() => reversible(branch, narrow).inverse(narrowParams, [x4, x4], key(0)), /reversible\.inverse: G must return a tensor shaped like its input \[2, 3, 4\], got \[2, 3, 1\]/);
  const narrowF = { F: lin(key(54), 1, C), G: lin(key(55), C, C) };
  assert.throws(() => reversible(narrow, branch).inverse(narrowF, [x4, x4], key(0)), /reversible\.inverse: F must return a tensor shaped like its input \[2, 3, 4\], got \[2, 3, 1\]/);
});

test('error: the two streams of a pair must have the same shape', () => {
  const block = reversible(branch, branch);
  const P = blockParams(key(56), C);
  const message = /^reversible\.forward: the two streams must have the same shape, got \[2, 3, 4\] and \[2, 3, 5\]/;
  assert.throws(() => block.forward(P, [x4, x5], key(0)), (e: unknown) => e instanceof ShapeError && message.test((e as Error).message));
  assert.throws(() => block.inverse(P, [x4, x5], key(0)), /reversible\.inverse: the two streams/);
  const seq = sequence([block]);
  assert.throws(() => seq.forward([P], [x4, x5], key(0)), /sequence\.forward: the two streams/);
  assert.throws(() => seq.forward([P], [x4, x5], key(0), { mode: 'store' }), /sequence\.forward: the two streams/);
  assert.throws(() => seq.inverse([P], [x4, x5], key(0)), /sequence\.inverse: the two streams/);
  assert.throws(() => block.forward(P, [x4] as unknown as Pair, key(0)), (e: unknown) => e instanceof ArgumentError && /expected a pair \[x1, x2\]/.test((e as Error).message));
});

test('error: wrong number of parameter sets', () => {
  const P = blockParams(key(57), C);
  const seq = sequence([reversible(branch, branch), reversible(branch, branch)]);
  const three = [P, P, P];
  assert.throws(() => seq.forward(three, [x4, x4], key(0)), (e: unknown) => e instanceof ArgumentError && /sequence\.forward: expected 2 block parameter sets, got 3/.test((e as Error).message));
  assert.throws(() => seq.forward([P], [x4, x4], key(0), { mode: 'store' }), /expected 2 block parameter sets, got 1/);
  assert.throws(() => seq.inverse(three, [x4, x4], key(0)), /sequence\.inverse: expected 2 block parameter sets, got 3/);
  assert.throws(() => seq.drift([P], [x4, x4], key(0)), /sequence\.drift: expected 2 block parameter sets, got 1/);
  assert.throws(() => seq.forward(P as unknown as [], [x4, x4], key(0)), /expected 2 block parameter sets, got object/);
  const net = stack(layers);
  assert.throws(() => net.forward(stackParams(key(58)).slice(1), x4, key(0)), /stack\.forward: expected 5 layer parameter sets, got 4/);
  assert.throws(() => net.drift(stackParams(key(58)).slice(1), x4, key(0)), /^stack\.drift: expected 5 layer parameter sets, got 4/);
  assert.throws(() => net.walk(stackParams(key(58)).slice(1), x4, key(0), (run, p, xs, keys) => run.forwardWithKeys(p, xs, keys)), /^stack\.walk: expected 5 layer parameter sets, got 4/);
});

test('error: bad mode', () => {
  const P = blockParams(key(59), C);
  const seq = sequence([reversible(branch, branch)]);
  const bad = { mode: 'checkpoint' } as unknown as { mode: 'store' };
  assert.throws(() => seq.forward([P], [x4, x4], key(0), bad), (e: unknown) => e instanceof ArgumentError && /sequence\.forward: mode must be 'reversible' or 'store', got 'checkpoint'/.test((e as Error).message));
  assert.throws(() => vjp((p: unknown[]) => seq.forward(p as any, [x4, x4], key(0), bad), [P]), /mode must be 'reversible' or 'store', got 'checkpoint'/);
  assert.throws(() => stack(layers).forward(stackParams(key(60)), x4, key(0), bad), /mode must be 'reversible' or 'store', got 'checkpoint'/);
});

test.run();
