/**
 * Decoders for untrusted structured input (a config object, a parsed YAML or JSON document): a decoder
 * is `(value, path) => Either<Problem[], A>`, and the combinators collect every problem of every field
 * instead of stopping at the first, each with the path where it was found ('MVIT.POOL_Q_STRIDE[1]').
 * Nothing here knows what is being decoded; src/models/mvit/config.ts describes the MViT config with it.
 */
import * as E from 'fp-ts/lib/Either.js';
import { pipe } from 'fp-ts/lib/function.js';
import { describeValue } from './json.ts';

export interface Problem {
  /** Where, e.g. 'MVIT.POOL_Q_STRIDE[1]' ('' for the whole document). */
  readonly path: string;
  readonly message: string;
}

export type Decoded<A> = E.Either<Problem[], A>;
export type Decoder<A> = (value: unknown, path: string) => Decoded<A>;

export const problem = (path: string, message: string): Problem => ({ path, message });
export const fail = <A>(path: string, message: string): Decoded<A> => E.left([problem(path, message)]);
/** A key as shown in a path: a hostile 1 MB key is cut. */
const keyText = (key: string): string => (key.length > 64 ? `${key.slice(0, 61)}...` : key);
export const join = (path: string, key: string): string => (path ? `${path}.${keyText(key)}` : keyText(key));
export const at = (path: string, index: number): string => `${path}[${index}]`;

/** A short rendering of a value for a message (cut at 60 characters; a deep, cyclic or huge value costs little and cannot throw). */
export const describe = (value: unknown): string => describeValue(value, 60);

/** Most entries of any list or object decoded here: more is refused with one problem, unvisited. */
export const MAX_LIST_ENTRIES = 4096;

/** The problem of an object with more than MAX_LIST_ENTRIES keys, or null. */
export function tooManyKeys(v: Record<string, unknown>, path: string): Problem | null {
  const n = Object.keys(v).length;
  return n > MAX_LIST_ENTRIES ? problem(path, `an object of ${n} keys; at most ${MAX_LIST_ENTRIES} are accepted`) : null;
}

export const isRecord = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

/** All successes, or every problem of every failure. */
function collect<A>(results: readonly Decoded<A>[]): Decoded<A[]> {
  const problems = results.flatMap((r) => (E.isLeft(r) ? r.left : []));
  return problems.length > 0 ? E.left(problems) : E.right(results.map((r) => (r as E.Right<A>).right));
}

export const boolean: Decoder<boolean> = (v, path) =>
  typeof v === 'boolean' ? E.right(v) : fail(path, `expected true or false, got ${describe(v)}`);

export const string: Decoder<string> = (v, path) =>
  typeof v === 'string' ? E.right(v) : fail(path, `expected a string, got ${describe(v)}`);

export interface Range {
  readonly min?: number;
  readonly max?: number;
  /** Exclusive bounds. */
  readonly above?: number;
  readonly below?: number;
}

function rangeText(r: Range): string {
  const parts = [
    r.min !== undefined ? `>= ${r.min}` : '',
    r.above !== undefined ? `> ${r.above}` : '',
    r.max !== undefined ? `<= ${r.max}` : '',
    r.below !== undefined ? `< ${r.below}` : '',
  ].filter(Boolean);
  return parts.join(' and ');
}

const inRange = (x: number, r: Range): boolean =>
  (r.min === undefined || x >= r.min) &&
  (r.max === undefined || x <= r.max) &&
  (r.above === undefined || x > r.above) &&
  (r.below === undefined || x < r.below);

/** A finite number in `range`. */
export const real =
  (range: Range = {}, what = 'a number'): Decoder<number> =>
  (v, path) => {
    if (typeof v !== 'number' || !Number.isFinite(v)) return fail(path, `expected ${what}, got ${describe(v)}`);
    if (!inRange(v, range)) return fail(path, `expected ${what} ${rangeText(range)}, got ${v}`);
    return E.right(v);
  };

export const integer =
  (range: Range = {}): Decoder<number> =>
  (v, path) =>
    typeof v === 'number' && Number.isFinite(v) && !Number.isInteger(v)
      ? fail(path, `expected an integer, got ${v}`)
      : typeof v === 'number' && Number.isInteger(v) && !Number.isSafeInteger(v)
        ? fail(path, `expected an integer below 2^53, got ${v}`)
        : real(range, 'an integer')(v, path);

/** One of `values`; `consequence` says what the consumer would do with anything else. */
export const oneOf =
  <T extends string>(values: readonly T[], consequence: string): Decoder<T> =>
  (v, path) => {
    const found = values.find((x) => x === v);
    return found !== undefined
      ? E.right(found)
      : fail(path, `expected one of ${values.map((x) => JSON.stringify(x)).join(', ')}, got ${describe(v)}: ${consequence}`);
  };

export const nullable =
  <A>(decoder: Decoder<A>): Decoder<A | null> =>
  (v, path) =>
    v === null ? E.right(null) : decoder(v, path);

/** A list of items (of one of `lengths` entries, when given). */
export const list =
  <A>(item: Decoder<A>, lengths?: readonly number[]): Decoder<A[]> =>
  (v, path) => {
    if (!Array.isArray(v)) return fail(path, `expected a list, got ${describe(v)}`);
    if (v.length > MAX_LIST_ENTRIES) return fail(path, `a list of ${v.length} entries; at most ${MAX_LIST_ENTRIES} are accepted`);
    if (lengths && !lengths.includes(v.length)) {
      return fail(path, `expected a list of ${lengths.join(' or ')} entries, got ${v.length}: ${describe(v)}`);
    }
    return collect(v.map((x, i) => item(x, at(path, i))));
  };

export const tuple =
  <T extends unknown[]>(...items: { [K in keyof T]: Decoder<T[K]> }): Decoder<T> =>
  (v, path) => {
    if (!Array.isArray(v) || v.length !== items.length) {
      return fail(path, `expected a list of ${items.length} numbers, got ${describe(v)}`);
    }
    return collect(items.map((d: Decoder<unknown>, i) => d(v[i], at(path, i)))) as Decoded<T>;
  };

/** Levenshtein distance, to suggest the key a typo meant. */
function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      current[j] = Math.min(previous[j]! + 1, current[j - 1]! + 1, previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    previous = current;
  }
  return previous[b.length]!;
}

/** The known keys within two edits of `key`, as a "; did you mean A or B?" hint ('' when none). */
export function didYouMean(key: string, known: readonly string[]): string {
  // Within distance 2 the lengths differ by at most 2; checking that first keeps long keys cheap.
  const close = known.filter((k) => Math.abs(k.length - key.length) <= 2 && editDistance(key, k) <= 2);
  return close.length > 0 ? `; did you mean ${close.join(' or ')}?` : '';
}

export type Fields<T> = { [K in keyof T]: Decoder<T[K]> };

export interface StructOptions {
  /** Keys accepted and dropped. */
  readonly ignored?: readonly string[];
  /** The message for a key that is neither a field nor ignored (given the key and the field names). */
  readonly unknownKey: (key: string, known: readonly string[]) => string;
}

/** An object with exactly these fields (plus ignored keys); every other key is a problem. */
export const struct =
  <T>(fields: Fields<T>, options: StructOptions): Decoder<T> =>
  (v, path) => {
    if (!isRecord(v)) return fail(path, `expected an object, got ${describe(v)}`);
    const tooMany = tooManyKeys(v, path);
    if (tooMany) return E.left([tooMany]);
    const names = Object.keys(fields) as (keyof T & string)[];
    const ignored = options.ignored ?? [];
    const unknown = Object.keys(v)
      .filter((k) => !Object.hasOwn(fields, k) && !ignored.includes(k))
      .map((k) => problem(join(path, k), options.unknownKey(k, names)));
    const decoded = collect(names.map((k) => pipe(fields[k](v[k], join(path, k)), E.map((x) => [k, x] as const))));
    const problems = [...(E.isLeft(decoded) ? decoded.left : []), ...unknown];
    if (problems.length > 0 || E.isLeft(decoded)) return E.left(problems);
    return E.right(Object.fromEntries(decoded.right) as T);
  };
