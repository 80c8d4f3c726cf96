/**
 * Laws of a user's reversible block or sequence (src/reversible): the inverse undoes the forward pass,
 * reversible-mode gradients equal store-mode gradients, the same key gives the same bits (and random
 * branches use their key), and the bytes kept for backward do not grow with depth.
 */
import fc from 'fast-check';
import { flattenWithPaths } from '../autodiff/pytree.ts';
import { valueAndGrad, vjp } from '../autodiff/tape.ts';
import type { BackendName } from '../backend/backend.ts';
import { measureMemory } from '../backend/memory.ts';
import { normal } from '../random/index.ts';
import { foldIn, split, type Key } from '../random/keys.ts';
import { sequence, type AnyBlock, type BlockParams, type Mode, type Pair, type ReversibleSequence } from '../reversible/index.ts';
import { ArgumentError } from '../tensor/errors.ts';
import { add, mul, sum } from '../tensor/ops.ts';
import { fmt, type Shape } from '../tensor/shape.ts';
import type { Tensor } from '../tensor/tensor.ts';
import { distinctKeys, isArbitrary, key as keyArb, tensors, type TensorOptions } from './arbitraries.ts';
import { backendOf, drive, failed, makeLaw, measured, type Body, type Law, type Outcome } from './core.ts';
import { at, EPS32, exact, firstBitDifference, maxAbs, num, worstDiff } from './numeric.ts';

/** A block `reversible(F, G)` or a `sequence([...])` of them. */
export type Reversible = AnyBlock | ReversibleSequence;

/**
 * Parameters: a fixed tree, an arbitrary of trees, or an init function of a key and the stream shape
 * (for a sequence, the array of per-block `{ F, G }` trees; for a block, one `{ F, G }` tree).
 */
export type ParamsSpec<P> = P | fc.Arbitrary<P> | ((key: Key, shape: Shape) => P);

/** A generated architecture: a block or sequence with its own parameters (for laws over families of blocks). */
export interface Family<P> {
  readonly subject: Reversible;
  readonly params: ParamsSpec<P>;
}

/** What a reversible law checks: one block or sequence, or an arbitrary of them with their parameters. */
export type Subject<P> = Reversible | fc.Arbitrary<Family<P>>;

export interface ReversibleLawOptions<P> {
  /** Parameters of a fixed subject (a family carries its own). */
  readonly params?: ParamsSpec<P>;
  /** The two streams: a shape (fixed or generated) and value range, or an arbitrary of pairs. */
  readonly input: (TensorOptions & { readonly shape: Shape | fc.Arbitrary<Shape> }) | fc.Arbitrary<Pair>;
  /** Default: the backend current when the law is checked. */
  readonly backend?: BackendName;
  /** Default number of generated cases for check()/assert(). */
  readonly runs?: number;
}

/** One generated case: parameters, the two input streams, the key, and a second pair and key for the laws that need them. */
export interface ReversibleCase<P> {
  /** The generated block or sequence (laws over a family only). */
  readonly subject?: Reversible;
  readonly params: P;
  readonly x: Pair;
  readonly key: Key;
}

// ---------------------------------------------------------------------------------------------
// A block and a sequence seen alike: blocks with their params and keys

interface Chain {
  readonly label: string;
  readonly blocks: readonly AnyBlock[];
  readonly blockParams: (p: unknown) => readonly BlockParams<unknown, unknown>[];
  readonly blockKeys: (k: Key) => readonly Key[];
  readonly forward: (p: unknown, xs: Pair, k: Key, mode?: Mode) => [Tensor, Tensor];
  readonly inverse: (p: unknown, ys: Pair, k: Key) => [Tensor, Tensor];
  /** Parameter leaf path -> "block i, path" for reports. */
  readonly where: (path: string) => string;
}

function chainOf(subject: Reversible): Chain {
  if ('blocks' in subject) {
    const n = subject.blocks.length;
    return {
      label: `a sequence of ${n} block${n === 1 ? '' : 's'}`,
      blocks: subject.blocks,
      blockParams: (p) => p as BlockParams<unknown, unknown>[],
      blockKeys: (k) => (n === 0 ? [] : split(k, n)),
      forward: (p, xs, k, mode) => subject.forward(p as BlockParams<unknown, unknown>[], xs, k, { mode }),
      inverse: (p, ys, k) => subject.inverse(p as BlockParams<unknown, unknown>[], ys, k),
      where: (path) => {
        const [i, ...rest] = path.split('.');
        return `block ${i}, params ${rest.join('.')}`;
      },
    };
  }
  const one = sequence([subject]);
  return {
    label: 'a block',
    blocks: [subject],
    blockParams: (p) => [p as BlockParams<unknown, unknown>],
    blockKeys: (k) => [k],
    // Under vjp the one-block sequence is what makes 'reversible' mode rebuild instead of store.
    forward: (p, xs, k, mode) => (mode === undefined ? subject.forward(p as BlockParams<unknown, unknown>, xs, k) : one.forwardWithKeys([p as BlockParams<unknown, unknown>], xs, [k], { mode })),
    inverse: (p, ys, k) => subject.inverse(p as BlockParams<unknown, unknown>, ys, k),
    where: (path) => `params ${path}`,
  };
}

function paramsArb<P>(spec: ParamsSpec<P>, s: Shape): fc.Arbitrary<P> {
  if (isArbitrary<P>(spec)) return spec;
  if (typeof spec === 'function') {
    const init = spec as (key: Key, shape: Shape) => P;
    return keyArb().map((k) => {
      const p = init(k, s);
      if (p !== null && typeof p === 'object') {
        const leaves = flattenWithPaths(p).map(([path, t]) => `${path}: ${fmt(t.shape)}`).join(', ');
        Object.defineProperty(p, fc.toStringMethod, { value: () => `init(key [${k[0]}, ${k[1]}], ${fmt(s)}) { ${leaves} }`, enumerable: false });
      }
      return p;
    });
  }
  return fc.constant(spec);
}

function streamsArb(input: ReversibleLawOptions<unknown>['input']): fc.Arbitrary<Pair> {
  return isArbitrary<Pair>(input) ? input : tensors(2, input).map(([a, b]) => [a, b] as const);
}

/** Cases: (the generated subject,) the streams (their shape may be generated), params for that shape, keys. */
function caseArb<P, E extends object>(subject: Subject<P>, o: ReversibleLawOptions<P>, extra: (x: Pair) => { [K in keyof E]: fc.Arbitrary<E[K]> }): fc.Arbitrary<ReversibleCase<P> & E> {
  const rest = (params: ParamsSpec<P>, head: object) =>
    streamsArb(o.input).chain((x) => fc.record({ ...head, params: paramsArb(params, x[0].shape), x: fc.constant(x), key: keyArb(), ...extra(x) } as never));
  if (!isArbitrary<Family<P>>(subject)) {
    if (o.params === undefined) throw new ArgumentError('reversible law', 'give `params` (a tree, an arbitrary of trees, or an init function (key, shape) => params)');
    return rest(o.params, {}) as fc.Arbitrary<ReversibleCase<P> & E>;
  }
  return subject.chain((fam) => {
    if (!fc.hasToStringMethod(fam.subject)) {
      const n = 'blocks' in fam.subject ? fam.subject.blocks.length : 1;
      Object.defineProperty(fam.subject, fc.toStringMethod, { value: () => ('blocks' in fam.subject ? `sequence of ${n} blocks` : 'block'), enumerable: false });
    }
    return rest(fam.params, { subject: fc.constant(fam.subject) });
  }) as fc.Arbitrary<ReversibleCase<P> & E>;
}

/** The chain of the case's subject (generated) or of the fixed one. */
function chainFor(fixed: Chain | null, c: ReversibleCase<unknown>): Chain {
  if (c.subject === undefined) return fixed!;
  let ch = chains.get(c.subject);
  if (ch === undefined) chains.set(c.subject, (ch = chainOf(c.subject)));
  return ch;
}
const chains = new WeakMap<Reversible, Chain>();
const fixedChain = (subject: Subject<unknown>): Chain | null => (isArbitrary(subject) ? null : chainOf(subject));
const labelOf = (subject: Subject<unknown>): string => (isArbitrary(subject) ? 'generated blocks' : chainOf(subject).label);

/** max |t| over a list of tensors, from their data. */
const maxOf = (ds: readonly Float32Array[]): number => Math.max(0, ...ds.map(maxAbs));

/** The worst element of a pair comparison, named x1/x2 with coordinates. */
function pairWorst(got: readonly Float32Array[], want: readonly Float32Array[], shape: Shape, names: readonly [string, string]) {
  const w = [worstDiff(got[0], want[0]), worstDiff(got[1], want[1])];
  const k = w[1].diff > w[0].diff ? 1 : 0;
  return { diff: w[k].diff, perStream: [w[0].diff, w[1].diff], text: `${at(names[k], shape, w[k].index)}: got ${exact(w[k].got)}, want ${exact(w[k].want)}` };
}

const ratioOf = (err: number, tol: number): number => (err === 0 ? 0 : err / tol);

// ---------------------------------------------------------------------------------------------
// inverseLaw

export interface InverseLawOptions<P> extends ReversibleLawOptions<P> {
  /**
   * Tolerance in float32 ulps per block, of the largest stream magnitude met on the way:
   * ‖Δ‖∞ <= ulps · 2^-23 · depth · max|state|. Default 64: an additive coupling loses about one ulp
   * per block, amplified by how sensitive F and G are to their inputs.
   */
  readonly ulps?: number;
}

/**
 * inverse(forward(x)) = x and forward(inverse(y)) = y, for generated inputs, parameters and keys.
 * A failure names the block whose own round trip breaks, the stream (x1 wrong alone: F; x2: G) and the
 * worst element.
 */
export function inverseLaw<P>(subject: Subject<P>, o: InverseLawOptions<P>): Law<ReversibleCase<P> & { readonly y: Pair }> {
  const fixed = fixedChain(subject);
  const ulps = o.ulps ?? 64;
  // A second pair of the same shape: drawn like x, or x's streams swapped when the pairs come from an arbitrary.
  const other = (x: Pair): fc.Arbitrary<Pair> =>
    isArbitrary(o.input) ? fc.constant([x[1], x[0]] as const) : tensors(2, { ...o.input, shape: x[0].shape }).map(([a, b]) => [a, b] as const);
  const arbitrary = caseArb(subject, o, (x) => ({ y: other(x) }));
  function* body(c: ReversibleCase<P> & { readonly y: Pair }): Body<Outcome> {
    const chain = chainFor(fixed, c);
    const D = Math.max(1, chain.blocks.length);
    const ps = chain.blockParams(c.params);
    const ks = chain.blockKeys(c.key);
    const shape = c.x[0].shape;
    // As the user calls it: the whole subject, forward then inverse, and inverse then forward.
    const y = chain.forward(c.params, c.x, c.key);
    const back = chain.inverse(c.params, y, c.key);
    const xo = chain.inverse(c.params, c.y, c.key);
    const again = chain.forward(c.params, xo, c.key);
    // Every block's states on both paths: they set the tolerance and locate a failure.
    const states: Pair[] = [c.x];
    chain.blocks.forEach((b, i) => states.push(b.forward(ps[i], states[i], ks[i])));
    const invStates: Pair[] = [c.y];
    for (let i = chain.blocks.length - 1; i >= 0; i--) invStates.push(chain.blocks[i].inverse(ps[i], invStates[invStates.length - 1], ks[i]));
    const d = yield [...c.x, ...y, ...back, ...c.y, ...xo, ...again, ...states.flat(), ...invStates.flat()];
    const [x1, x2, y1, y2, b1, b2, o1, o2, xo1, xo2, a1, a2] = d;
    const rest = d.slice(12);
    const scale1 = Math.max(maxOf([x1, x2, y1, y2]), maxOf(rest.slice(0, 2 * states.length)));
    const scale2 = Math.max(maxOf([o1, o2, xo1, xo2]), maxOf(rest.slice(2 * states.length)));
    const tol1 = ulps * EPS32 * D * scale1;
    const tol2 = ulps * EPS32 * D * scale2;
    const w1 = pairWorst([b1, b2], [x1, x2], shape, ['x1', 'x2']);
    const w2 = pairWorst([a1, a2], [o1, o2], shape, ['y1', 'y2']);
    const r1 = ratioOf(w1.diff, tol1);
    const r2 = ratioOf(w2.diff, tol2);
    const tolText = (tol: number, scale: number) => `tol ${num(tol)} = ${ulps} ulps × ${D} block${D === 1 ? '' : 's'} × max|state| ${num(scale)}`;
    if (r1 <= 1 && r2 <= 1) {
      return r1 >= r2
        ? measured(r1, `inverse(forward(x)) − x: ‖Δ‖∞ ${num(w1.diff)}, ${tolText(tol1, scale1)}; worst ${w1.text}`)
        : measured(r2, `forward(inverse(y)) − y: ‖Δ‖∞ ${num(w2.diff)}, ${tolText(tol2, scale2)}; worst ${w2.text}`);
    }
    const first = r1 > 1;
    const head = first
      ? `inverse(forward(x)) ≠ x for ${chain.label}: ‖Δ‖∞ ${num(w1.diff)} > ${tolText(tol1, scale1)}; worst element ${w1.text.replace('got', 'rebuilt').replace('want', 'true')}`
      : `forward(inverse(y)) ≠ y for ${chain.label}: ‖Δ‖∞ ${num(w2.diff)} > ${tolText(tol2, scale2)}; worst element ${w2.text}`;
    // Locate the block: each block's own round trip from its exact forward states.
    const rebuilt = chain.blocks.map((b, i) => b.inverse(ps[i], states[i + 1], ks[i]));
    const r = yield rebuilt.flat();
    let blame = '';
    for (let i = 0; i < chain.blocks.length; i++) {
      const got = [r[2 * i], r[2 * i + 1]];
      const want = [d[12 + 2 * i], d[12 + 2 * i + 1]];
      const scale = Math.max(maxOf(want), maxOf([d[12 + 2 * i + 2], d[12 + 2 * i + 3]]));
      const w = pairWorst(got, want, shape, ['x1', 'x2']);
      if (ratioOf(w.diff, ulps * EPS32 * scale) > 1) {
        const who =
          w.perStream[1] > ulps * EPS32 * scale
            ? 'x2 = Y2 − G(Y1) is wrong: G returned something else in the inverse than in the forward pass'
            : 'x2 is right but x1 = Y1 − F(X2) is not: F returned something else in the inverse than in the forward pass';
        blame = `; block ${i} alone does not invert (‖Δ‖∞ ${num(w.diff)}, worst ${w.text}): ${who} (does it read anything besides (params, x, key)?)`;
        break;
      }
    }
    if (blame === '') {
      // No block fails alone: either the subject is not a function of its arguments, or error builds up.
      const yAgain = chain.forward(c.params, c.x, c.key);
      const again2 = yield yAgain;
      const i = Math.max(firstBitDifference(again2[0], d[2]), firstBitDifference(again2[1], d[3]));
      blame = i >= 0
        ? '; two forward passes with the same params, inputs and key gave different outputs: a branch reads state besides (params, x, key) (a counter, Math.random, a global?)'
        : '; every block inverts alone: the error builds up across blocks (a branch too sensitive to its input for float32, or a sequence that does not use its blocks\' keys consistently)';
    }
    return { ok: false, ratio: Math.max(r1, r2), detail: head + blame, conclusive: true };
  }
  const backend = o.backend;
  return makeLaw(`inverseLaw(${labelOf(subject)})`, arbitrary, (c) => drive(body(c), backendOf(backend)), { runs: o.runs ?? 25 });
}

// ---------------------------------------------------------------------------------------------
// reversibleGradLaw

export interface GradLawOptions<P> extends ReversibleLawOptions<P> {
  /** Relative tolerance per leaf (default 1e-4). */
  readonly rtol?: number;
  /**
   * Leaves smaller than this fraction of the largest gradient entry (default 1e-2) are compared
   * against it instead of their own size: gradients that are zero by cancellation are rounding noise
   * in both modes.
   */
  readonly floor?: number;
}

/**
 * Gradients of <forward(x), ct> in 'reversible' mode (rebuilt activations) equal those in 'store' mode
 * (stored activations), for the inputs and every parameter leaf: ‖g_rev − g_store‖∞ <= rtol ·
 * max(‖g_rev‖∞, ‖g_store‖∞, floor · max over all leaves). The forward values must be bitwise equal.
 */
export function reversibleGradLaw<P>(subject: Subject<P>, o: GradLawOptions<P>): Law<ReversibleCase<P> & { readonly cotangentKey: Key }> {
  const fixed = fixedChain(subject);
  const rtol = o.rtol ?? 1e-4;
  const floor = o.floor ?? 1e-2;
  const arbitrary = caseArb(subject, o, () => ({ cotangentKey: keyArb() }));
  function* body(c: ReversibleCase<P> & { readonly cotangentKey: Key }): Body<Outcome> {
    const chain = chainFor(fixed, c);
    const shape = c.x[0].shape;
    const [k1, k2] = split(c.cotangentKey);
    const ct: [Tensor, Tensor] = [normal(k1, shape), normal(k2, shape)];
    const run = (mode: Mode) => {
      const f = (p: P, a: Tensor, b: Tensor) => chain.forward(p, [a, b], c.key, mode);
      const [out, pullback] = vjp(f, c.params, c.x[0], c.x[1]);
      const [gp, g1, g2] = pullback(ct);
      const named: [string, Tensor][] = [...flattenWithPaths(gp).map(([p, t]): [string, Tensor] => [chain.where(p), t]), ['input x1', g1], ['input x2', g2]];
      return { out, named };
    };
    const rev = run('reversible');
    const sto = run('store');
    const n = rev.named.length;
    const d = yield [...rev.out, ...sto.out, ...rev.named.map(([, t]) => t), ...sto.named.map(([, t]) => t)];
    for (let s = 0; s < 2; s++) {
      const i = firstBitDifference(d[s], d[2 + s]);
      if (i >= 0) {
        return failed(`forward values differ between 'reversible' and 'store' mode at ${at(`y${s + 1}`, shape, i)}: ${d[s][i]} vs ${d[2 + s][i]} (the two modes run the same ops: is a branch not a pure function of (params, x, key)?)`);
      }
    }
    const gr = d.slice(4, 4 + n);
    const gs = d.slice(4 + n);
    const overall = maxOf(gs);
    let worst = { ratio: -1, text: '' };
    for (let i = 0; i < n; i++) {
      const w = worstDiff(gr[i], gs[i]);
      const scale = Math.max(maxAbs(gr[i]), maxAbs(gs[i]), floor * overall);
      const ratio = ratioOf(w.diff, rtol * scale);
      if (ratio > worst.ratio) {
        const t = rev.named[i][1];
        const elem = w.index >= 0 ? at('', t.shape, w.index) : '';
        worst = { ratio, text: `${rev.named[i][0]}${elem}: reversible ${exact(w.got)}, store ${exact(w.want)}, ‖Δ‖∞ ${num(w.diff)} vs tol ${num(rtol * scale)} (${rtol} × ${num(scale)})` };
      }
    }
    if (worst.ratio <= 1) return measured(worst.ratio, `worst leaf ${worst.text}`);
    return measured(
      worst.ratio,
      `reversible-mode gradients ≠ store-mode gradients for ${chain.label}: ${worst.text}. The backward pass rebuilt other activations than the forward pass computed: is a branch not a pure function of (params, x, key), or too sensitive for float32 reconstruction?`,
    );
  }
  return makeLaw(`reversibleGradLaw(${labelOf(subject)})`, arbitrary, (c) => drive(body(c), backendOf(o.backend)), { runs: o.runs ?? 15 });
}

// ---------------------------------------------------------------------------------------------
// determinismLaw

export interface DeterminismLawOptions<P> extends ReversibleLawOptions<P> {
  /**
   * Which branches draw random numbers from their key (dropout, drop-path): each must then give more
   * than one distinct output over `keys` different keys. true = both; default: neither.
   */
  readonly random?: boolean | { readonly F?: boolean; readonly G?: boolean };
  /** Different keys tried per random branch (default 8). Use inputs with enough elements for masks to differ. */
  readonly keys?: number;
}

/**
 * The same key gives bitwise the same outputs (forward and inverse, called twice), and, for random
 * branches, different keys give different outputs: a branch that ignores its key (a fixed mask) or
 * reads hidden state (a counter, Math.random) is caught.
 */
export function determinismLaw<P>(subject: Subject<P>, o: DeterminismLawOptions<P>): Law<ReversibleCase<P> & { readonly others: Key[] }> {
  const fixed = fixedChain(subject);
  const random = o.random === true ? { F: true, G: true } : o.random === false || o.random === undefined ? { F: false, G: false } : { F: o.random.F ?? false, G: o.random.G ?? false };
  const count = Math.max(2, o.keys ?? 8);
  const arbitrary = caseArb(subject, o, () => ({ others: distinctKeys(count) }));
  function* body(c: ReversibleCase<P> & { readonly others: Key[] }): Body<Outcome> {
    const chain = chainFor(fixed, c);
    const shape = c.x[0].shape;
    const ya = chain.forward(c.params, c.x, c.key);
    const yb = chain.forward(c.params, c.x, c.key);
    const xa = chain.inverse(c.params, ya, c.key);
    const xb = chain.inverse(c.params, ya, c.key);
    const d = yield [...ya, ...yb, ...xa, ...xb];
    const names = ['forward y1', 'forward y2', 'inverse x1', 'inverse x2'];
    for (let s = 0; s < 4; s++) {
      const base = s < 2 ? s : s + 2;
      const i = firstBitDifference(d[base], d[base + 2]);
      if (i >= 0) {
        return failed(`${chain.label}: two calls with the same key differ at ${names[s]}${at('', shape, i)}: ${d[base][i]} vs ${d[base + 2][i]} (a branch reads state other than (params, x, key): a counter, Math.random, a global?)`);
      }
    }
    // Random branches: outputs over several keys, at the inputs each branch sees in the forward pass.
    const ps = chain.blockParams(c.params);
    const ks = chain.blockKeys(c.key);
    const probes: { label: string; outs: Tensor[] }[] = [];
    let cur: Pair = c.x;
    chain.blocks.forEach((b, i) => {
      const next = b.forward(ps[i], cur, ks[i]);
      if (random.F) probes.push({ label: `block ${i} F`, outs: c.others.map((k) => b.F(ps[i].F, cur[1], k)) });
      if (random.G) probes.push({ label: `block ${i} G`, outs: c.others.map((k) => b.G(ps[i].G, next[0], k)) });
      cur = next;
    });
    const r = yield probes.flatMap((p) => p.outs);
    let j = 0;
    for (const p of probes) {
      const outs = r.slice(j, j + p.outs.length);
      j += p.outs.length;
      if (outs.every((v) => firstBitDifference(v, outs[0]) < 0)) {
        return failed(`${p.label} gave bitwise the same output for ${count} different keys (${c.others.map((k) => `[${k[0]}, ${k[1]}]`).slice(0, 3).join(', ')}, ...): it ignores its key (a fixed mask?), or it is not random (then leave it out of \`random\`), or its input ${fmt(shape)} is too small for masks to differ`);
      }
    }
    return measured(0, `same key, same bits${probes.length > 0 ? `; ${probes.map((p) => p.label).join(', ')} vary with the key` : ''}`);
  }
  return makeLaw(`determinismLaw(${labelOf(subject)})`, arbitrary, (c) => drive(body(c), backendOf(o.backend)), { runs: o.runs ?? 10 });
}

// ---------------------------------------------------------------------------------------------
// memoryFlatLaw

export interface MemoryLawOptions<P> {
  /** Parameters of one block (for a fixed block): a tree, or an init function of a key and the stream shape (block i gets foldIn(key, i)). */
  readonly params?: P | ((key: Key, shape: Shape) => P);
  readonly input: TensorOptions & { readonly shape: Shape | fc.Arbitrary<Shape> };
  /** Depths measured (default [1, 2, 4, 8]). */
  readonly depths?: readonly number[];
  /**
   * Also measure store mode: true (default) requires it to keep more as depth grows (so the measurement
   * can tell the modes apart); 'linear' requires exactly the same bytes more per block.
   */
  readonly store?: boolean | 'linear';
  readonly backend?: BackendName;
  readonly runs?: number;
}

/** A generated block with its parameters, for a memory law over a family of blocks. */
export interface BlockFamily<P> {
  readonly block: AnyBlock;
  readonly params: P | ((key: Key, shape: Shape) => P);
}

export interface MemoryCase<P> {
  readonly family?: BlockFamily<P>;
  readonly x: Pair;
  readonly key: Key;
}

interface Bytes {
  readonly residual: number;
  readonly peak: number;
}

/**
 * A sequence of `depth` copies of `block` keeps the same bytes for the backward pass at every depth in
 * 'reversible' mode (pullback.residualBytes, exact), and its peak live bytes during forward + backward
 * are the same for every depth >= 2 (depth 1 may peak lower); store mode keeps more as depth grows.
 */
export function memoryFlatLaw<P>(block: AnyBlock | fc.Arbitrary<BlockFamily<P>>, o: MemoryLawOptions<P>): Law<MemoryCase<P>> {
  const depths = [...(o.depths ?? [1, 2, 4, 8])].sort((a, b) => a - b);
  let arbitrary: fc.Arbitrary<MemoryCase<P>>;
  if (isArbitrary<BlockFamily<P>>(block)) {
    arbitrary = fc.record({ family: block, x: streamsArb(o.input), key: keyArb() });
  } else {
    if (o.params === undefined) throw new ArgumentError('memoryFlatLaw', 'give `params` (a tree or an init function (key, shape) => params)');
    arbitrary = fc.record({ x: streamsArb(o.input), key: keyArb() });
  }
  function* body(c: MemoryCase<P>): Body<Outcome> {
    const shape = c.x[0].shape;
    const b = c.family?.block ?? (block as AnyBlock);
    const init = c.family?.params ?? o.params!;
    const paramsOf = (D: number) => Array.from({ length: D }, (_, i) => (typeof init === 'function' ? (init as (k: Key, s: Shape) => P)(foldIn(c.key, i), shape) : init));
    const measure = (D: number, mode: Mode): Bytes => {
      const seq = sequence(Array.from({ length: D }, () => b));
      const params = paramsOf(D) as BlockParams<unknown, unknown>[];
      const loss = (p: typeof params, x1: Tensor, x2: Tensor) => {
        const [y1, y2] = seq.forward(p, [x1, x2], c.key, { mode });
        return sum(mul(y1, add(y2, 1)));
      };
      const residual = vjp(loss, params, c.x[0], c.x[1])[1].residualBytes;
      const peak = measureMemory(() => valueAndGrad(loss, [0, 1, 2])(params, c.x[0], c.x[1])).peakBytes;
      return { residual, peak };
    };
    const rev = depths.map((D) => measure(D, 'reversible'));
    const sto = o.store === false ? null : depths.map((D) => measure(D, 'store'));
    const table = `depths ${depths.join(', ')}: reversible residual bytes ${rev.map((r) => r.residual).join(', ')}, peak ${rev.map((r) => r.peak).join(', ')}` +
      (sto === null ? '' : `; store residual bytes ${sto.map((r) => r.residual).join(', ')}`);
    const problems: string[] = [];
    if (rev.some((r) => r.residual !== rev[0].residual)) problems.push('reversible-mode residual bytes change with depth (a buffered block, or a branch whose outputs escape into the tape?)');
    const ref = rev.length > 1 ? rev[1].peak : rev[0].peak;
    if (rev.slice(1).some((r) => r.peak !== ref) || rev[0].peak > ref) problems.push('reversible-mode peak bytes change with depth');
    if (sto !== null && sto.length > 1 && !(sto[sto.length - 1].residual > sto[0].residual)) problems.push('store mode does not keep more with depth, so this measurement cannot tell the modes apart (a block with nothing to save?)');
    if (sto !== null && o.store === 'linear' && sto.length > 1) {
      const perBlock = (sto[1].residual - sto[0].residual) / (depths[1] - depths[0]);
      if (sto.some((r, i) => r.residual !== sto[0].residual + (depths[i] - depths[0]) * perBlock)) problems.push('store-mode residual bytes are not exactly linear in depth');
    }
    return problems.length === 0
      ? { ok: true, ratio: 0, detail: table, conclusive: true }
      : { ok: false, ratio: Infinity, detail: `${problems.join('; ')}: ${table}`, conclusive: true };
  }
  return makeLaw('memoryFlatLaw', arbitrary, (c) => drive(body(c), backendOf(o.backend)), { runs: o.runs ?? 3 });
}
