/**
 * einsum for the contractions that reduce to the primitives: permutes, sums over axes, broadcasts and
 * batched matmuls (as numpy.einsum / torch.einsum, which also contract pairwise in the end). Each operand's
 * letters that no later operand and no output uses are summed out first; then operands are contracted left to
 * right as one batched matmul each. Diagonals (a letter repeated within one operand, "ii->i") are not
 * contractions and raise a typed error.
 */
import { ArgumentError, ShapeError } from './errors.ts';
import { matmul } from './matmul.ts';
import { broadcastTo, permute, reshape, sum } from './ops.ts';
import { fmt, MAX_RANK } from './shape.ts';
import { assertTensor, type Tensor } from './tensor.ts';

const LETTER = /^[a-zA-Z]$/;

interface Term {
  /** One letter per axis, ellipsis axes included (as reserved characters). */
  readonly letters: string[];
}

/** Parse "ab,bc->ac" (or implicit "ab,bc"), expanding "..." to as many reserved letters as each operand needs. */
function parse(spec: string, operands: readonly Tensor[]): { inputs: Term[]; output: string[] } {
  const op = 'einsum';
  if (typeof spec !== 'string') throw new ArgumentError(op, `the subscripts must be a string such as 'ij,jk->ik', got ${typeof spec}`);
  const clean = spec.replace(/\s+/g, '');
  const arrow = clean.split('->');
  if (arrow.length > 2) throw new ArgumentError(op, `'${spec}' has more than one '->'`);
  const lhs = arrow[0].split(',');
  if (lhs.length !== operands.length) {
    throw new ArgumentError(op, `'${spec}' names ${lhs.length} operand(s), but ${operands.length} tensor(s) were given`);
  }
  // Ellipsis axes get characters that are not letters, so they never clash with the user's.
  const ellipsisRank = Math.max(0, ...lhs.map((s, i) => (s.includes('...') ? operands[i].rank - (s.length - 3) : 0)));
  const ellipsis = Array.from({ length: ellipsisRank }, (_, k) => String.fromCharCode(0x3b1 + k)); // α, β, ...
  const expand = (s: string, where: string, rank?: number): string[] => {
    const parts = s.split('...');
    if (parts.length > 2) throw new ArgumentError(op, `${where} '${s}' has more than one '...'`);
    for (const ch of parts.join('')) if (!LETTER.test(ch)) throw new ArgumentError(op, `${where} '${s}' has '${ch}'; subscripts are letters a-z, A-Z and one '...'`);
    if (parts.length === 1) return [...s];
    const k = rank === undefined ? ellipsisRank : rank - (s.length - 3);
    if (k < 0) throw new ShapeError(op, `${where} '${s}' has more letters than the operand's rank ${rank}`);
    return [...parts[0], ...ellipsis.slice(ellipsisRank - k), ...parts[1]];
  };
  const inputs = lhs.map((s, i) => {
    const letters = expand(s, `operand ${i}`, operands[i].rank);
    if (letters.length !== operands[i].rank) {
      throw new ShapeError(op, `operand ${i} has shape ${fmt(operands[i].shape)} (rank ${operands[i].rank}) but subscripts '${s}' name ${letters.length} axes`);
    }
    const seen = new Set<string>();
    for (const l of letters) {
      if (seen.has(l)) throw new ArgumentError(op, `operand ${i} repeats '${l}' in '${s}': diagonals and traces are not contractions, take them with other ops`);
      seen.add(l);
    }
    return { letters };
  });
  let output: string[];
  if (arrow.length === 2) {
    output = expand(arrow[1], 'the output');
    const seen = new Set<string>();
    for (const l of output) {
      if (seen.has(l)) throw new ArgumentError(op, `the output '${arrow[1]}' repeats '${l}'`);
      if (!inputs.some((t) => t.letters.includes(l))) throw new ArgumentError(op, `the output letter '${l}' appears in no operand of '${spec}'`);
      seen.add(l);
    }
  } else {
    // NumPy's implicit output: ellipsis axes first, then the letters used exactly once, in alphabetical order.
    const counts = new Map<string, number>();
    for (const t of inputs) for (const l of t.letters) counts.set(l, (counts.get(l) ?? 0) + 1);
    output = [...ellipsis, ...[...counts].filter(([l, n]) => n === 1 && LETTER.test(l)).map(([l]) => l).sort()];
  }
  return { inputs, output };
}

/** The size of every letter; sizes must agree, except that ellipsis axes broadcast (size 1 against n). */
function letterSizes(inputs: readonly Term[], operands: readonly Tensor[]): Map<string, number> {
  const sizes = new Map<string, number>();
  inputs.forEach((t, i) => t.letters.forEach((l, a) => {
    const n = operands[i].shape[a];
    const prev = sizes.get(l);
    if (prev === undefined || prev === n) sizes.set(l, n);
    else if (!LETTER.test(l) && (n === 1 || prev === 1)) sizes.set(l, Math.max(n, prev));
    else throw new ShapeError('einsum', `${LETTER.test(l) ? `'${l}'` : 'an ellipsis axis'} has size ${prev} in an earlier operand and ${n} in operand ${i} (shape ${fmt(operands[i].shape)})`);
  }));
  return sizes;
}

/** An operand with its axes named. */
interface Labelled {
  readonly t: Tensor;
  readonly letters: string[];
}

/** Sum out the letters not in `needed`, keeping the order of the others. */
function sumOut(x: Labelled, needed: ReadonlySet<string>): Labelled {
  const axes = x.letters.flatMap((l, a) => (needed.has(l) ? [] : [a]));
  return axes.length === 0 ? x : { t: sum(x.t, axes), letters: x.letters.filter((l) => needed.has(l)) };
}

/** x with its axes in the given order. */
function arrange(x: Labelled, order: readonly string[]): Tensor {
  const perm = order.map((l) => x.letters.indexOf(l));
  return perm.every((p, i) => p === i) ? x.t : permute(x.t, perm);
}

/** Broadcast size-1 ellipsis axes of x to the sizes every operand agrees on. */
function broadcastLetters(x: Labelled, sizes: ReadonlyMap<string, number>): Labelled {
  const target = x.letters.map((l) => sizes.get(l)!);
  return target.some((n, a) => n !== x.t.shape[a]) ? { t: broadcastTo(x.t, target), letters: x.letters } : x;
}

const product = (letters: readonly string[], sizes: ReadonlyMap<string, number>): number => letters.reduce((n, l) => n * sizes.get(l)!, 1);

/** a ⊗ b contracted over their shared letters not in `keep`, as one batched matmul [B, M, K] x [B, K, N]. */
function contract(a: Labelled, b: Labelled, keep: ReadonlySet<string>, sizes: ReadonlyMap<string, number>): Labelled {
  const inB = new Set(b.letters);
  const inA = new Set(a.letters);
  const batch = a.letters.filter((l) => inB.has(l) && keep.has(l));
  const contracted = a.letters.filter((l) => inB.has(l) && !keep.has(l));
  const freeA = a.letters.filter((l) => !inB.has(l));
  const freeB = b.letters.filter((l) => !inA.has(l));
  const [nb, m, k, n] = [product(batch, sizes), product(freeA, sizes), product(contracted, sizes), product(freeB, sizes)];
  const c = matmul(reshape(arrange(a, [...batch, ...freeA, ...contracted]), [nb, m, k]), reshape(arrange(b, [...batch, ...contracted, ...freeB]), [nb, k, n]));
  const letters = [...batch, ...freeA, ...freeB];
  if (letters.length > MAX_RANK) throw new ShapeError('einsum', `an intermediate result would have ${letters.length} axes, above the maximum rank ${MAX_RANK}`);
  return { t: reshape(c, letters.map((l) => sizes.get(l)!)), letters };
}

/**
 * Einstein summation over one or more operands, e.g. `einsum('bij,bjk->bik', a, b)` (batched matmul),
 * `einsum('ij->ji', a)` (transpose), `einsum('ij->', a)` (sum), `einsum('...ij,jk', a, w)`. Without '->' the
 * output is NumPy's: ellipsis axes, then the letters used once, alphabetically. Differentiable through the
 * ops it reduces to (sum, permute, reshape, broadcastTo, matmul).
 */
export function einsum(subscripts: string, ...operands: Tensor[]): Tensor {
  const op = 'einsum';
  if (operands.length === 0) throw new ArgumentError(op, 'expected at least one operand');
  operands.forEach((t, i) => assertTensor(op, t, `operand ${i}`));
  const { inputs, output } = parse(subscripts, operands);
  const sizes = letterSizes(inputs, operands);
  const ops: Labelled[] = inputs.map((t, i) => broadcastLetters({ t: operands[i], letters: t.letters }, sizes));
  // Letters still needed after operand i: the output's and those of later operands.
  const neededAfter = (i: number): Set<string> => new Set([...output, ...inputs.slice(i + 1).flatMap((t) => t.letters)]);
  let acc = sumOut(ops[0], neededAfter(0));
  for (let i = 1; i < ops.length; i++) {
    const keep = neededAfter(i);
    // Letters only the new operand has and nobody needs are summed out before the contraction.
    acc = contract(acc, sumOut(ops[i], new Set([...keep, ...acc.letters])), keep, sizes);
  }
  return arrange(acc, output);
}
