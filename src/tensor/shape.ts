/** Shape arithmetic and validation shared by every op. */
import { ArgumentError, ShapeError } from './errors.ts';

export type Shape = readonly number[];
export const MAX_RANK = 6;

export const fmt = (s: Shape): string => `[${s.join(', ')}]`;

export function sizeOf(shape: Shape): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** Throws unless `shape` is an array of at most 6 non-negative integers. */
export function checkShape(op: string, shape: unknown): Shape {
  if (!Array.isArray(shape)) {
    throw new ArgumentError(op, `shape must be an array of non-negative integers, got ${describe(shape)}`);
  }
  if (shape.length > MAX_RANK) {
    throw new ShapeError(op, `rank ${shape.length} of shape ${fmt(shape)} exceeds the maximum rank ${MAX_RANK}`);
  }
  for (const d of shape) {
    if (typeof d !== 'number' || !Number.isInteger(d) || d < 0) {
      throw new ShapeError(op, `shape ${fmt(shape as number[])} has a dimension ${String(d)} that is not a non-negative integer`);
    }
  }
  return shape as Shape;
}

export function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return `array(${v.length})`;
  if (typeof v === 'object') return (v as object).constructor?.name ?? 'object';
  return `${typeof v} ${String(v)}`;
}

export function stridesOf(shape: Shape): number[] {
  const strides = new Array<number>(shape.length);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    strides[i] = s;
    s *= shape[i];
  }
  return strides;
}

export function sameShape(a: Shape, b: Shape): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/** NumPy broadcasting of two shapes. */
export function broadcastShapes(op: string, a: Shape, b: Shape): number[] {
  const rank = Math.max(a.length, b.length);
  const out = new Array<number>(rank);
  for (let i = 0; i < rank; i++) {
    const da = a[a.length - rank + i] ?? 1;
    const db = b[b.length - rank + i] ?? 1;
    if (da !== db && da !== 1 && db !== 1) {
      throw new ShapeError(op, `shapes ${fmt(a)} and ${fmt(b)} cannot be broadcast together (axis ${i - rank}: ${da} vs ${db})`);
    }
    out[i] = da === 1 ? db : da;
  }
  return out;
}

/** Strides of `shape` read as if broadcast to `target` (0 on broadcast axes). */
export function broadcastStrides(shape: Shape, target: Shape): number[] {
  const own = stridesOf(shape);
  const offset = target.length - shape.length;
  return target.map((_, i) => {
    const j = i - offset;
    return j < 0 || shape[j] === 1 ? 0 : own[j];
  });
}

/** Normalise an axis (negative counts from the end) and check it is in range. */
export function normAxis(op: string, axis: number, rank: number): number {
  if (typeof axis !== 'number' || !Number.isInteger(axis)) throw new ArgumentError(op, `axis ${describe(axis)} is not an integer`);
  const a = axis < 0 ? axis + rank : axis;
  if (a < 0 || a >= rank) {
    throw new ShapeError(op, `axis ${axis} is out of range for rank ${rank}`);
  }
  return a;
}

export function normAxes(op: string, axes: number | readonly number[] | undefined, rank: number): number[] {
  if (axes === undefined) return [...Array(rank).keys()];
  if (typeof axes !== 'number' && !Array.isArray(axes)) {
    throw new ArgumentError(op, `axes must be a number or an array of numbers, got ${describe(axes)}`);
  }
  const list = (typeof axes === 'number' ? [axes] : [...axes]).map((a) => normAxis(op, a, rank));
  if (new Set(list).size !== list.length) throw new ShapeError(op, `repeated axis in [${axes}]`);
  return list.sort((x, y) => x - y);
}

/** Throws unless `v` is an array of integers (for index lists such as slice bounds). */
export function checkIntList(op: string, what: string, v: unknown, allowNull = false): readonly (number | null)[] {
  if (!Array.isArray(v)) throw new ArgumentError(op, `${what} must be an array of integers, got ${describe(v)}`);
  for (const x of v) {
    if (x === null && allowNull) continue;
    if (typeof x !== 'number' || !Number.isInteger(x)) throw new ArgumentError(op, `${what} must be integers, got ${JSON.stringify(v)}`);
  }
  return v;
}
