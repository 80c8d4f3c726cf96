/**
 * Pytrees: nested plain objects and arrays with tensors (or other leaves) at the leaves, as in JAX.
 * Flattening walks objects in key order and arrays in index order; paths join keys with '.', so a
 * parameter tree flattens to exactly PySlowFast's state_dict names (`rev_backbone.layers.3.F.norm.weight`).
 */
import { Tensor } from '../tensor/tensor.ts';
import { ArgumentError } from '../tensor/errors.ts';

export type PyTree<L = Tensor> = L | readonly PyTree<L>[] | { readonly [key: string]: PyTree<L> };

const isPlainObject = (v: unknown): v is Record<string, unknown> =>
  v !== null && typeof v === 'object' && !Array.isArray(v) && !(v instanceof Tensor) && !ArrayBuffer.isView(v) &&
  (Object.getPrototypeOf(v) === Object.prototype || Object.getPrototypeOf(v) === null);

/** Tensor leaves in order, with their dotted paths; other leaves (numbers, null, ...) are skipped. */
export function flattenWithPaths(tree: unknown, prefix = ''): [string, Tensor][] {
  const out: [string, Tensor][] = [];
  const walk = (node: unknown, path: string) => {
    if (node instanceof Tensor) out.push([path, node]);
    else if (Array.isArray(node)) node.forEach((c, i) => walk(c, path === '' ? String(i) : `${path}.${i}`));
    else if (isPlainObject(node)) for (const k of Object.keys(node)) walk(node[k], path === '' ? k : `${path}.${k}`);
  };
  walk(tree, prefix);
  return out;
}

export const leaves = (tree: unknown): Tensor[] => flattenWithPaths(tree).map(([, t]) => t);

/** Rebuild `tree`'s structure with its tensor leaves replaced, in order, by `values`. */
export function unflattenLike<T>(tree: T, values: readonly (Tensor | null)[]): T {
  let i = 0;
  const walk = (node: unknown): unknown => {
    if (node instanceof Tensor) return values[i++];
    if (Array.isArray(node)) return node.map(walk);
    if (isPlainObject(node)) {
      const o: Record<string, unknown> = {};
      for (const k of Object.keys(node)) o[k] = walk(node[k]);
      return o;
    }
    return node;
  };
  const result = walk(tree) as T;
  if (i !== values.length) throw new ArgumentError('unflattenLike', `tree has ${i} tensor leaves but ${values.length} values were given`);
  return result;
}

/** Map every tensor leaf. */
export const mapTree = <T>(tree: T, fn: (t: Tensor, path: string) => Tensor): T =>
  unflattenLike(tree, flattenWithPaths(tree).map(([p, t]) => fn(t, p)));

/** Map matching leaves of several trees with the same structure. */
export function zipTrees<T>(trees: readonly T[], fn: (ts: Tensor[], path: string) => Tensor): T {
  const flat = trees.map((t) => flattenWithPaths(t));
  const n = flat[0].length;
  for (const f of flat) if (f.length !== n) throw new ArgumentError('zipTrees', `trees have ${flat.map((x) => x.length).join(' vs ')} leaves`);
  return unflattenLike(trees[0], flat[0].map(([p], i) => fn(flat.map((f) => f[i][1]), p)));
}

/** A flat record name -> tensor (e.g. a state_dict) from a tree, and back. */
export const toNamed = (tree: unknown): Map<string, Tensor> => new Map(flattenWithPaths(tree));

export function fromNamed(named: ReadonlyMap<string, Tensor> | Record<string, Tensor>): PyTree {
  const entries: [string, Tensor][] = named instanceof Map ? [...named.entries()] : Object.entries(named);
  const root: Record<string, unknown> = {};
  for (const [name, t] of entries) {
    const parts = name.split('.');
    let node: Record<string, unknown> = root;
    parts.slice(0, -1).forEach((p) => {
      if (!(p in node)) node[p] = {};
      node = node[p] as Record<string, unknown>;
    });
    node[parts[parts.length - 1]] = t;
  }
  // Objects whose keys are 0..n-1 become arrays, so `layers.3` indexes a list.
  const arrays = (n: unknown): unknown => {
    if (!isPlainObject(n)) return n;
    const keys = Object.keys(n);
    const fixed = Object.fromEntries(keys.map((k) => [k, arrays(n[k])]));
    const isList = keys.length > 0 && keys.every((k, i) => k === String(i));
    return isList ? keys.map((k) => fixed[k]) : fixed;
  };
  return arrays(root) as PyTree;
}
