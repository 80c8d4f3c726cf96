/**
 * How jit sees a function's arguments and results: pytrees whose tensor leaves and keys (made by
 * key/split/foldIn) are dynamic inputs, and whose numbers, strings, booleans and nulls are static (part
 * of the cache signature: a new value retraces). Anything else cannot be an input and raises a TraceError.
 */
import { isBrandedKey, type Key } from '../random/index.ts';
import { isTracedKey, keyBits, TracedKey } from '../random/traced.ts';
import { TraceError } from '../tensor/errors.ts';
import { describe } from '../tensor/shape.ts';
import { fromBuffer, Tensor } from '../tensor/tensor.ts';

export type Leaf = { readonly kind: 'tensor'; readonly tensor: Tensor } | { readonly kind: 'key'; readonly key: Key };

const isPlainObject = (v: object): boolean => {
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
};

/** The dynamic leaves of `tree` in order, and a signature of everything else (structure, shapes, statics). */
export function flattenArgs(tree: unknown): { leaves: Leaf[]; signature: string } {
  const leaves: Leaf[] = [];
  const parts: string[] = [];
  const walk = (v: unknown, path: string): void => {
    if (v instanceof Tensor) {
      leaves.push({ kind: 'tensor', tensor: v });
      parts.push(`T${v.shape.join('x')}`);
    } else if (isBrandedKey(v)) {
      leaves.push({ kind: 'key', key: v });
      parts.push('K');
    } else if (v === null || v === undefined || typeof v === 'number' || typeof v === 'string' || typeof v === 'boolean') {
      parts.push(typeof v === 'string' ? JSON.stringify(v) : String(v));
    } else if (Array.isArray(v)) {
      parts.push('[');
      v.forEach((c, i) => walk(c, `${path}[${i}]`));
      parts.push(']');
    } else if (typeof v === 'object' && isPlainObject(v)) {
      parts.push('{');
      for (const [k, c] of Object.entries(v)) {
        parts.push(`${JSON.stringify(k)}:`);
        walk(c, `${path}.${k}`);
      }
      parts.push('}');
    } else {
      throw new TraceError(`argument ${path} is ${describe(v)}: a jitted function takes tensors, keys (from key/split/foldIn), numbers, strings, booleans and plain arrays/objects of them`);
    }
  };
  walk(tree, 'args');
  return { leaves, signature: parts.join(',') };
}

/** `tree` with its dynamic leaves replaced, in order, by `values`. */
export function replaceLeaves<T>(tree: T, values: readonly (Tensor | Key)[]): T {
  let i = 0;
  const walk = (v: unknown): unknown => {
    if (v instanceof Tensor || isBrandedKey(v)) return values[i++];
    if (Array.isArray(v)) return v.map(walk);
    if (v !== null && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, c]) => [k, walk(c)]));
    return v;
  };
  return walk(tree) as T;
}

/** A program input's value for a leaf: the tensor itself, or a key's bits. */
export const leafTensor = (leaf: Leaf): Tensor => (leaf.kind === 'tensor' ? leaf.tensor : fromBuffer(keyBits(leaf.key), [2]));

// ---------------------------------------------------------------------------------------------
// Results

/** Where a result leaf comes from: the n-th program output, as a tensor or a key. */
export type ResultLeaf = { readonly output: number; readonly kind: 'tensor' | 'key' };

export interface ResultTemplate {
  readonly tree: unknown;
  readonly leaves: readonly ResultLeaf[];
}

const RESULT = Symbol('result leaf');
type Placeholder = { readonly [RESULT]: number };

/**
 * The result of a traced function as a template: its tensors and traced keys become numbered program
 * outputs, statics are kept as they are (they were computed from static data, so every replay of this
 * signature would compute them again the same way).
 */
export function resultTemplate(result: unknown, addOutput: (t: Tensor) => number): ResultTemplate {
  const leaves: ResultLeaf[] = [];
  const walk = (v: unknown, path: string): unknown => {
    if (v instanceof Tensor || isTracedKey(v)) {
      const kind = v instanceof Tensor ? 'tensor' : 'key';
      leaves.push({ output: addOutput(v instanceof Tensor ? v : (v as TracedKey).bits), kind });
      return { [RESULT]: leaves.length - 1 } satisfies Placeholder;
    }
    if (v === null || v === undefined || typeof v === 'number' || typeof v === 'string' || typeof v === 'boolean') return v;
    if (isBrandedKey(v)) return v;
    if (Array.isArray(v)) return v.map((c, i) => walk(c, `${path}[${i}]`));
    if (typeof v === 'object' && isPlainObject(v)) return Object.fromEntries(Object.entries(v).map(([k, c]) => [k, walk(c, `${path}.${k}`)]));
    throw new TraceError(`the result ${path} is ${describe(v)}: a jitted function returns tensors, keys, numbers, strings, booleans and plain arrays/objects of them`);
  };
  return { tree: walk(result, 'result'), leaves };
}

/** The result for one replay: the template with its placeholders filled from the program outputs. */
export function fillTemplate(template: ResultTemplate, leafValues: readonly (Tensor | Key)[]): unknown {
  const walk = (v: unknown): unknown => {
    if (v !== null && typeof v === 'object') {
      if (RESULT in v) return leafValues[(v as Placeholder)[RESULT]];
      if (Array.isArray(v)) return v.map(walk);
      if (isPlainObject(v)) return Object.fromEntries(Object.entries(v).map(([k, c]) => [k, walk(c)]));
    }
    return v;
  };
  return walk(template.tree);
}
