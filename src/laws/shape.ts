/**
 * shapeErrorLaw: a function of tensors accepts the shapes it should (returning the shapes an oracle
 * says) and rejects mismatched ones with a typed error whose message names the offending shape.
 * Mismatches are made from accepted shapes by one change: an axis grown or shrunk, an axis added or
 * dropped, on one input.
 */
import fc from 'fast-check';
import { leaves } from '../autodiff/pytree.ts';
import type { BackendName } from '../backend/backend.ts';
import { uniform } from '../random/index.ts';
import { foldIn, key as makeKey } from '../random/keys.ts';
import { RevgradError, ShapeError } from '../tensor/errors.ts';
import { fmt, sameShape, type Shape } from '../tensor/shape.ts';
import type { Tensor } from '../tensor/tensor.ts';
import { backendOf, drive, failed, makeLaw, measured, type Body, type Law, type Outcome } from './core.ts';

type ErrorClass = abstract new (...args: never[]) => Error;

export interface ShapeErrorLawOptions {
  /** Input shapes the function accepts. */
  readonly shapes: fc.Arbitrary<Shape[]>;
  /**
   * The oracle: the output shape(s) for these input shapes, or null where they do not fit. Without it
   * every changed shape must be rejected (right for functions with fixed sizes; give `expect` where
   * some changes are fine, e.g. under broadcasting).
   */
  readonly expect?: (shapes: readonly Shape[]) => Shape | readonly Shape[] | null;
  /** Error classes that count as typed (default ShapeError). */
  readonly errors?: readonly ErrorClass[];
  /** Strings the error message must contain (default: the changed input's shape, written [2, 3]). */
  readonly mentions?: (shapes: readonly Shape[], changed: number) => readonly string[];
  readonly backend?: BackendName;
  readonly runs?: number;
}

export interface Mutation {
  readonly input: number;
  readonly kind: 'grow' | 'shrink' | 'addAxis' | 'dropAxis';
  readonly axis: number;
  readonly by: number;
}

export interface ShapeCase {
  readonly shapes: Shape[];
  readonly mutation: Mutation;
  readonly changed: Shape[];
}

/** Apply one change to one input's shape (never a no-op). */
export function mutate(shapes: readonly Shape[], m: Mutation): Shape[] {
  return shapes.map((s, i) => {
    if (i !== m.input) return s;
    const rank = s.length;
    const a = rank === 0 ? 0 : ((m.axis % rank) + rank) % rank;
    if (rank === 0 || m.kind === 'addAxis') return [...s.slice(0, a), 2 + m.by, ...s.slice(a)];
    if (m.kind === 'dropAxis') return s.filter((_, j) => j !== a);
    const d = s[a];
    const next = m.kind === 'shrink' && d - m.by >= 1 ? d - m.by : d + m.by;
    return s.map((v, j) => (j === a ? next : v));
  });
}

const mutationArb = (count: number): fc.Arbitrary<Mutation> =>
  fc.record({
    input: fc.integer({ min: 0, max: Math.max(0, count - 1) }),
    kind: fc.constantFrom<Mutation['kind']>('grow', 'shrink', 'addAxis', 'dropAxis'),
    axis: fc.integer({ min: 0, max: 5 }),
    by: fc.integer({ min: 1, max: 2 }),
  });

const shapesText = (ss: readonly Shape[]) => ss.map(fmt).join(', ');

/** Outputs' shapes of whatever f returned (a tensor, an array or a tree of tensors). */
const outShapes = (v: unknown): Shape[] => leaves(v).map((t) => t.shape);

export function shapeErrorLaw(f: (...xs: Tensor[]) => unknown, o: ShapeErrorLawOptions): Law<ShapeCase> {
  const errors = o.errors ?? [ShapeError];
  const arbitrary = o.shapes.chain((shapes) =>
    mutationArb(shapes.length).map((mutation): ShapeCase => ({ shapes, mutation, changed: mutate(shapes, mutation) })),
  );
  const name = `shapeErrorLaw(${f.name || 'f'})`;
  const expected = (ss: readonly Shape[], original: boolean): readonly Shape[] | null | 'any' => {
    if (o.expect === undefined) return original ? 'any' : null;
    const e = o.expect(ss);
    if (e === null) return null;
    return e.length > 0 && Array.isArray(e[0]) ? (e as readonly Shape[]) : [e as Shape];
  };
  // One call: null when it behaved, else what was wrong.
  const call = (ss: readonly Shape[], want: readonly Shape[] | null | 'any', changed: number): string | null => {
    const inputs = ss.map((s, i) => uniform(foldIn(makeKey(0), i), s, -1, 1));
    let out: unknown;
    try {
      out = f(...inputs);
    } catch (e) {
      if (want !== null) return `rejected input shapes ${shapesText(ss)}, which fit, with ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`;
      if (!errors.some((cls) => e instanceof cls)) {
        const kind = e instanceof RevgradError ? e.name : e instanceof Error ? `an untyped ${e.name}` : `a thrown ${typeof e}`;
        return `rejected input shapes ${shapesText(ss)} with ${kind} (${e instanceof Error ? e.message : String(e)}), expected ${errors.map((c) => c.name).join(' or ')}`;
      }
      const mentions = o.mentions ? o.mentions(ss, changed) : [fmt(ss[changed])];
      const missing = mentions.filter((m) => !(e as Error).message.includes(m));
      if (missing.length > 0) return `rejected input shapes ${shapesText(ss)} with a message that does not mention ${missing.map((m) => JSON.stringify(m)).join(', ')}: "${(e as Error).message}"`;
      return null;
    }
    const got = outShapes(out);
    if (want === null) return `accepted mismatched input shapes ${shapesText(ss)} (input ${changed} changed) and returned ${shapesText(got)}; expected ${errors.map((c) => c.name).join(' or ')}`;
    if (want !== 'any' && (got.length !== want.length || got.some((g, i) => !sameShape(g, want[i])))) {
      return `returned shape(s) ${shapesText(got)} for input shapes ${shapesText(ss)}, expected ${shapesText(want)}`;
    }
    return null;
  };
  function* body(c: ShapeCase): Body<Outcome> {
    const original = call(c.shapes, expected(c.shapes, true), c.mutation.input);
    if (original !== null) return failed(original);
    const changed = call(c.changed, expected(c.changed, false), c.mutation.input);
    if (changed !== null) return failed(changed);
    return measured(0, `${shapesText(c.shapes)} accepted; ${shapesText(c.changed)} ${o.expect?.(c.changed) === null || o.expect === undefined ? 'rejected' : 'accepted'}`);
  }
  return makeLaw(name, arbitrary, (c) => drive(body(c), backendOf(o.backend)), { runs: o.runs ?? 50 });
}
