/**
 * reversible(F, G): the additive coupling
 *     Y1 = X1 + F(X2),   Y2 = X2 + G(Y1)
 * its inverse
 *     X2 = Y2 - G(Y1),   X1 = Y1 - F(X2)
 * and a backward pass that rebuilds each block's inputs from its outputs instead of storing them
 * (PySlowFast's RevBackProp, derived for any F and G):
 *     dX1 = dY1 + J_G(Y1)ᵀ dY2,   dX2 = dY2 + J_F(X2)ᵀ dX1.
 * Under `grad`/`vjp` a reversible sequence keeps only its final outputs, so training memory does not
 * grow with depth. F and G are pure `(params, x, key) => y`; the block splits its key between them,
 * so the backward pass replays dropout and drop-path masks exactly.
 */
import { customVjp, untraced, vjp } from '../autodiff/tape.ts';
import { split, type Key } from '../random/index.ts';
import { ArgumentError, ShapeError } from '../tensor/errors.ts';
import { abs, add, chunk, concat, max, sub } from '../tensor/ops.ts';
import { fmt, sameShape } from '../tensor/shape.ts';
import type { Tensor } from '../tensor/tensor.ts';

export type Branch<P> = (params: P, x: Tensor, key: Key) => Tensor;
export type Pair = readonly [Tensor, Tensor];
export type Mode = 'reversible' | 'store';

export interface BlockParams<PF, PG> {
  readonly F: PF;
  readonly G: PG;
}

export interface BlockOptions {
  /**
   * How F and G get their keys from the block key: 'split' (default) gives each its own key;
   * 'shared' passes the block key to both, so branches that derive masks the same way get the same
   * mask (PySlowFast reuses one drop-path mask for F and G).
   */
  readonly keys?: 'split' | 'shared';
  /** Keep this block's outputs during the forward pass: the backward pass uses them instead of the rebuilt ones (bounds drift). */
  readonly buffer?: boolean;
}

/**
 * A reversible block. F and G are declared as methods so that a block with concrete parameter types is
 * also a `ReversibleBlock<unknown, unknown>` (`AnyBlock`): sequences and stacks of mixed blocks.
 */
export interface ReversibleBlock<PF, PG> {
  readonly kind: 'reversible';
  F(params: PF, x: Tensor, key: Key): Tensor;
  G(params: PG, x: Tensor, key: Key): Tensor;
  readonly options: Required<BlockOptions>;
  /** [X1, X2] -> [Y1, Y2]. */
  forward(params: BlockParams<PF, PG>, xs: Pair, key: Key): [Tensor, Tensor];
  /** [Y1, Y2] -> [X1, X2], with the same params and key as the forward pass. */
  inverse(params: BlockParams<PF, PG>, ys: Pair, key: Key): [Tensor, Tensor];
}

function branchKeys(options: Required<BlockOptions>, key: Key): [Key, Key] {
  if (options.keys === 'shared') return [key, key];
  const [kF, kG] = split(key, 2);
  return [kF, kG];
}

function checkPair(op: string, xs: Pair): void {
  if (!Array.isArray(xs) || xs.length !== 2) throw new ArgumentError(op, 'expected a pair [x1, x2] of tensors');
  if (!sameShape(xs[0].shape, xs[1].shape)) {
    throw new ShapeError(op, `the two streams must have the same shape, got ${fmt(xs[0].shape)} and ${fmt(xs[1].shape)}`);
  }
}

function checkBranch(op: string, which: string, x: Tensor, y: Tensor): Tensor {
  if (!sameShape(x.shape, y.shape)) {
    throw new ShapeError(op, `${which} must return a tensor shaped like its input ${fmt(x.shape)}, got ${fmt(y.shape)}`);
  }
  return y;
}

export function reversible<PF, PG>(F: Branch<PF>, G: Branch<PG>, opts: BlockOptions = {}): ReversibleBlock<PF, PG> {
  const options: Required<BlockOptions> = { keys: opts.keys ?? 'split', buffer: opts.buffer ?? false };
  return {
    kind: 'reversible',
    F,
    G,
    options,
    forward(params, xs, key) {
      checkPair('reversible.forward', xs);
      const [kF, kG] = branchKeys(options, key);
      const [x1, x2] = xs;
      const y1 = add(x1, checkBranch('reversible.forward', 'F', x2, F(params.F, x2, kF)));
      const y2 = add(x2, checkBranch('reversible.forward', 'G', y1, G(params.G, y1, kG)));
      return [y1, y2];
    },
    inverse(params, ys, key) {
      checkPair('reversible.inverse', ys);
      const [kF, kG] = branchKeys(options, key);
      const [y1, y2] = ys;
      const x2 = sub(y2, checkBranch('reversible.inverse', 'G', y1, G(params.G, y1, kG)));
      const x1 = sub(y1, checkBranch('reversible.inverse', 'F', x2, F(params.F, x2, kF)));
      return [x1, x2];
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Sequences

/** Any reversible block, whatever its branches' parameter types (what sequences and stacks take). */
export type AnyBlock = ReversibleBlock<unknown, unknown>;

/** The params of a block: `{ F, G }` of its branches' parameter types. */
export type BlockParamsOf<B> = B extends ReversibleBlock<infer PF, infer PG> ? BlockParams<PF, PG> : never;

/** The params of a list of blocks, position by position (an array of blocks gives an array of params). */
export type SequenceParams<Bs extends readonly AnyBlock[]> = { readonly [K in keyof Bs]: BlockParamsOf<Bs[K]> };

export interface SequenceOptions {
  readonly mode?: Mode;
}

/** Per-block keys: the sequence key split once per block. */
const blockKeys = (key: Key, n: number): Key[] => (n === 0 ? [] : split(key, n));

/**
 * A sequence of reversible blocks, itself reversible: its inverse runs the inverses in reverse order.
 * `Ps` are the blocks' params (`SequenceParams` of the blocks given to `sequence`).
 */
export interface ReversibleSequence<Ps extends readonly unknown[] = readonly BlockParams<unknown, unknown>[]> {
  readonly blocks: readonly AnyBlock[];
  forward(params: Ps, xs: Pair, key: Key, opts?: SequenceOptions): [Tensor, Tensor];
  inverse(params: Ps, ys: Pair, key: Key): [Tensor, Tensor];
  /** Per-block reconstruction error of rebuilding inputs from outputs (what the backward pass does). */
  drift(params: Ps, xs: Pair, key: Key): DriftEntry[];
  /** The same three with one key per block given explicitly (used by stacks). */
  forwardWithKeys(params: Ps, xs: Pair, keys: readonly Key[], opts?: SequenceOptions): [Tensor, Tensor];
  inverseWithKeys(params: Ps, ys: Pair, keys: readonly Key[]): [Tensor, Tensor];
  driftWithKeys(params: Ps, xs: Pair, keys: readonly Key[]): DriftEntry[];
}

export interface DriftEntry {
  readonly block: number;
  /** max |X1_rebuilt - X1| and max |X2_rebuilt - X2| over the block's inputs (scalar tensors). */
  readonly x1: Tensor;
  readonly x2: Tensor;
}

/**
 * One block of the backward pass (Trax's reverse_and_grad, derived): rebuild [X1, X2] from [Y1, Y2]
 * and pull [dY1, dY2] back through G, then F, with the forward pass's keys.
 */
function reverseAndGrad(
  b: AnyBlock,
  p: BlockParams<unknown, unknown>,
  key: Key,
  [y1, y2]: Pair,
  [dy1, dy2]: Pair,
): { xs: Pair; dxs: Pair; grads: BlockParams<unknown, unknown> } {
  const [kF, kG] = branchKeys(b.options, key);
  // G step: rebuild X2 and pull dY2 back through G.
  const [gOut, pullG] = vjp((pg: unknown, y: Tensor) => b.G(pg, y, kG), p.G, y1);
  const [dPG, dY1fromG] = pullG(dy2);
  const x2 = sub(y2, gOut);
  const g1 = add(dy1, dY1fromG);
  // F step: rebuild X1 and pull dX1 back through F.
  const [fOut, pullF] = vjp((pf: unknown, x: Tensor) => b.F(pf, x, kF), p.F, x2);
  const [dPF, dX2fromF] = pullF(g1);
  const x1 = sub(y1, fOut);
  return { xs: [x1, x2], dxs: [g1, add(dy2, dX2fromF)], grads: { F: dPF, G: dPG } };
}

export function sequence<Bs extends readonly AnyBlock[]>(blockList: Bs): ReversibleSequence<SequenceParams<Bs>> {
  // Inside, a block's params are opaque values handed to its own F and G.
  type Params = BlockParams<unknown, unknown>;
  const blocks: readonly AnyBlock[] = blockList;
  const n = blocks.length;
  const checkParams = (op: string, params: readonly unknown[]) => {
    if (!Array.isArray(params) || params.length !== n) {
      throw new ArgumentError(op, `expected ${n} block parameter sets, got ${Array.isArray(params) ? params.length : typeof params}`);
    }
  };

  const plainForward = (params: readonly Params[], xs: Pair, keys: readonly Key[]): [Tensor, Tensor] => {
    let cur: [Tensor, Tensor] = [xs[0], xs[1]];
    blocks.forEach((b, i) => (cur = b.forward(params[i], cur, keys[i])));
    return cur;
  };

  // The memory-saving path: a custom VJP whose forward keeps only the outputs (and buffered blocks' outputs).
  const reversibleForward = customVjp(
    (params: readonly Params[], xs: Pair, keys: readonly Key[]) => {
      const buffered: (Pair | null)[] = [];
      let cur: [Tensor, Tensor] = [xs[0], xs[1]];
      blocks.forEach((b, i) => {
        cur = b.forward(params[i], cur, keys[i]);
        // (The last block's entry is never read: its outputs are the sequence's, kept in `ys`.)
        buffered.push(b.options.buffer ? cur : null);
      });
      return [cur, { ys: cur, buffered, params, keys }] as const;
    },
    (res, dys: Pair) => {
      let ys: Pair = res.ys;
      let gs: Pair = dys;
      const grads: BlockParams<unknown, unknown>[] = [];
      for (let i = n - 1; i >= 0; i--) {
        const step = reverseAndGrad(blocks[i], res.params[i], res.keys[i], ys, gs);
        grads.push(step.grads);
        gs = step.dxs;
        // Continue from the exact outputs of the previous block where they were buffered (none before block 0).
        ys = res.buffered[i - 1] ?? step.xs;
      }
      return [grads.reverse(), gs, null];
    },
  );

  const forwardWithKeys = (params: readonly Params[], xs: Pair, keys: readonly Key[], opts: SequenceOptions = {}): [Tensor, Tensor] => {
    checkParams('sequence.forward', params);
    checkPair('sequence.forward', xs);
    const mode = opts.mode ?? 'reversible';
    if (mode === 'store') return plainForward(params, xs, keys);
    if (mode !== 'reversible') throw new ArgumentError('sequence.forward', `mode must be 'reversible' or 'store', got '${String(mode)}'`);
    return reversibleForward(params, xs, keys) as [Tensor, Tensor];
  };
  const inverseWithKeys = (params: readonly Params[], ys: Pair, keys: readonly Key[]): [Tensor, Tensor] => {
    checkParams('sequence.inverse', params);
    checkPair('sequence.inverse', ys);
    let cur: [Tensor, Tensor] = [ys[0], ys[1]];
    for (let i = n - 1; i >= 0; i--) cur = blocks[i].inverse(params[i], cur, keys[i]);
    return cur;
  };
  const driftWithKeys = (params: readonly Params[], xs: Pair, keys: readonly Key[]): DriftEntry[] => {
    checkParams('sequence.drift', params);
    return untraced(() => {
      const inputs: Pair[] = [];
      let cur: [Tensor, Tensor] = [xs[0], xs[1]];
      blocks.forEach((b, i) => {
        inputs.push(cur);
        cur = b.forward(params[i], cur, keys[i]);
      });
      const report: DriftEntry[] = [];
      for (let i = n - 1; i >= 0; i--) {
        cur = blocks[i].inverse(params[i], cur, keys[i]);
        report.unshift({ block: i, x1: max(abs(sub(cur[0], inputs[i][0]))), x2: max(abs(sub(cur[1], inputs[i][1]))) });
        if (i > 0 && blocks[i - 1].options.buffer) cur = [inputs[i][0], inputs[i][1]]; // as the backward pass: restart from buffered outputs
      }
      return report;
    });
  };
  return {
    blocks,
    forward: (params, xs, key, opts) => forwardWithKeys(params, xs, blockKeys(key, n), opts),
    inverse: (params, ys, key) => inverseWithKeys(params, ys, blockKeys(key, n)),
    drift: (params, xs, key) => driftWithKeys(params, xs, blockKeys(key, n)),
    forwardWithKeys,
    inverseWithKeys,
    driftWithKeys,
  };
}

// ---------------------------------------------------------------------------------------------
// Stacks mixing non-reversible stages and reversible runs (the Rev-MViT layout)

/** A non-reversible layer with ordinary autodiff: it consumes the two streams as one tensor [..., 2C]. */
export interface Stage<P> {
  readonly kind: 'stage';
  /** A method, so that any stage is also a `Stage<unknown>` (see ReversibleBlock). */
  apply(params: P, x: Tensor, key: Key): Tensor;
}

export const stage = <P>(apply: (params: P, x: Tensor, key: Key) => Tensor): Stage<P> => ({ kind: 'stage', apply });

/** A layer of a stack: a reversible block or a stage, whatever its parameter types. */
export type Layer = AnyBlock | Stage<unknown>;

/** The params of a layer: `{ F, G }` for a block, the stage's own for a stage. */
export type LayerParams<L> = L extends Stage<infer P> ? P : BlockParamsOf<L>;

/** The params of a list of layers, position by position. */
export type StackParams<Ls extends readonly Layer[]> = { readonly [K in keyof Ls]: LayerParams<Ls[K]> };

/** A maximal run of reversible blocks, or one stage, starting at layer `start`. */
export interface StackGroup {
  readonly start: number;
  readonly run: ReversibleSequence | null;
  readonly stage: Stage<unknown> | null;
  readonly length: number;
}

/** How a stack walk runs one reversible run: its params, input pair and keys (from layer `start` on) to its output pair. */
export type RunStep = (run: ReversibleSequence, params: readonly BlockParams<unknown, unknown>[], xs: Pair, keys: readonly Key[], start: number) => Pair;

/** What `stack` returns; `Ps` are the layers' params (`StackParams` of the layers given). */
export interface ReversibleStack<Ps extends readonly unknown[] = readonly unknown[]> {
  readonly layers: readonly Layer[];
  readonly groups: readonly StackGroup[];
  /** x [..., C] -> [..., 2C'] (the last group's two streams concatenated). */
  forward(params: Ps, x: Tensor, key: Key, opts?: SequenceOptions): Tensor;
  /** Per-block reconstruction errors of every reversible run, with layer indices. */
  drift(params: Ps, x: Tensor, key: Key): DriftEntry[];
  /** The stack's one loop with `step` running each reversible run (for per-block work: recording, probing). */
  walk(params: Ps, x: Tensor, key: Key, step: RunStep): Tensor;
  /** Split a [..., 2C] tensor into the two streams (the inverse of the final concat). */
  streams(h: Tensor): [Tensor, Tensor];
}

/**
 * A layer list as Rev-MViT builds it: every maximal run of reversible blocks starts from [x, x] and
 * ends as concat([Y1, Y2], -1); a stage takes that [..., 2C] tensor and returns the next single
 * stream. Params and keys are per layer (keys split from the one key given).
 */
export function stack<Ls extends readonly Layer[]>(layers: Ls): ReversibleStack<StackParams<Ls>> {
  const groups: StackGroup[] = [];
  for (let i = 0; i < layers.length; ) {
    const l = layers[i];
    if (l.kind === 'stage') {
      groups.push({ start: i, run: null, stage: l, length: 1 });
      i++;
    } else {
      let j = i;
      while (j < layers.length && layers[j].kind === 'reversible') j++;
      groups.push({ start: i, run: sequence(layers.slice(i, j) as AnyBlock[]), stage: null, length: j - i });
      i = j;
    }
  }
  /** The one loop over the layers: stages applied in turn, each reversible run by `step`. */
  const walk = (op: string, params: readonly unknown[], x: Tensor, key: Key, step: RunStep): Tensor => {
    if (!Array.isArray(params) || params.length !== layers.length) {
      throw new ArgumentError(op, `expected ${layers.length} layer parameter sets, got ${Array.isArray(params) ? params.length : typeof params}`);
    }
    const keys = blockKeys(key, layers.length);
    let h = x;
    for (const g of groups) {
      if (g.stage !== null) {
        h = g.stage.apply(params[g.start], h, keys[g.start]);
      } else {
        const runParams = params.slice(g.start, g.start + g.length) as readonly BlockParams<unknown, unknown>[];
        const [y1, y2] = step(g.run!, runParams, [h, h], keys.slice(g.start, g.start + g.length), g.start);
        h = concat([y1, y2], -1);
      }
    }
    return h;
  };

  return {
    layers,
    groups,
    forward: (params: readonly unknown[], x: Tensor, key: Key, opts: SequenceOptions = {}): Tensor =>
      walk('stack.forward', params, x, key, (run, p, xs, keys) => run.forwardWithKeys(p, xs, keys, opts)),
    drift(params: readonly unknown[], x: Tensor, key: Key): DriftEntry[] {
      const report: DriftEntry[] = [];
      untraced(() =>
        walk('stack.drift', params, x, key, (run, p, xs, keys, start) => {
          for (const e of run.driftWithKeys(p, xs, keys)) report.push({ ...e, block: start + e.block });
          return run.forwardWithKeys(p, xs, keys);
        }),
      );
      return report;
    },
    walk: (params: readonly unknown[], x: Tensor, key: Key, step: RunStep): Tensor => walk('stack.walk', params, x, key, step),
    /** Split a [..., 2C] tensor into the two streams (the inverse of the final concat). */
    streams: (h: Tensor): [Tensor, Tensor] => chunk(h, 2, -1) as [Tensor, Tensor],
  };
}

