/**
 * JSON from files that may be hostile: a bounded parser and a bounded renderer.
 *
 * V8's JSON.parse is iterative, but JSON.stringify and every recursive walk over the result are not:
 * 5,000 nested brackets in a config or a safetensors header used to end in "RangeError: Maximum call
 * stack size exceeded" far from the parser. `parseJson` therefore measures the nesting (and, for
 * callers that want it, the number of top-level entries) with one iterative scan BEFORE JSON.parse,
 * and refuses with a typed error; `describeValue` renders any value (deep, cyclic, bigint) as a short
 * string and never throws.
 */
import { left, right, type Either } from 'fp-ts/lib/Either.js';
import { RevgradError } from '../tensor/errors.ts';

/** Deeper than any file revgrad reads needs (configs nest 4 levels, safetensors headers 3). */
export const MAX_JSON_DEPTH = 64;

export type JsonErrorCode = 'syntax' | 'depth' | 'entries';

/** JSON text that cannot be used: not JSON, nested too deeply, or too many top-level entries. */
export class JsonError extends RevgradError {
  override name = 'JsonError';
  constructor(
    readonly code: JsonErrorCode,
    /** The file (or field) the text came from. */
    readonly source: string,
    /** What is wrong, without the source (for 'syntax': JSON.parse's own message). */
    readonly reason: string,
  ) {
    super(`${source}: ${code === 'syntax' ? `not valid JSON (${reason})` : reason}`);
  }
}

export interface JsonLimits {
  /** Most nested objects/arrays (a flat object is depth 1). */
  readonly maxDepth?: number;
  /** Most entries of the top-level object or array (checked before parsing, so a huge header is refused fast). */
  readonly maxEntries?: number;
}

export interface JsonShape {
  /** The deepest nesting reached (stops counting once past the limit). */
  readonly depth: number;
  /** Entries of the top-level object or array (stops counting once past the limit). */
  readonly entries: number;
  /** Character offset where the depth limit was passed, or -1. */
  readonly tooDeepAt: number;
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;
const COMMA = 0x2c;

/**
 * One pass over the text, skipping string contents: the nesting depth and the number of top-level
 * entries. Malformed text gives some answer; JSON.parse reports the syntax afterwards.
 */
export function jsonShape(text: string, limits: JsonLimits = {}): JsonShape {
  const maxDepth = limits.maxDepth ?? Infinity;
  const maxEntries = limits.maxEntries ?? Infinity;
  let depth = 0;
  let deepest = 0;
  let commas = 0;
  let topLevelNonEmpty = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === QUOTE) {
      i++;
      while (i < text.length) {
        const d = text.charCodeAt(i);
        if (d === BACKSLASH) i += 2;
        else if (d === QUOTE) break;
        else i++;
      }
      if (depth === 1) topLevelNonEmpty = true;
    } else if (c === OPEN_BRACE || c === OPEN_BRACKET) {
      if (depth === 1) topLevelNonEmpty = true;
      depth++;
      if (depth > deepest) {
        deepest = depth;
        if (deepest > maxDepth) return { depth: deepest, entries: commas + (topLevelNonEmpty ? 1 : 0), tooDeepAt: i };
      }
    } else if (c === CLOSE_BRACE || c === CLOSE_BRACKET) {
      depth--;
    } else if (depth === 1) {
      if (c === COMMA) {
        commas++;
        if (commas + 1 > maxEntries) return { depth: deepest, entries: commas + 1, tooDeepAt: -1 };
      } else if (c > 0x20) {
        topLevelNonEmpty = true;
      }
    }
  }
  return { depth: deepest, entries: topLevelNonEmpty ? commas + 1 : 0, tooDeepAt: -1 };
}

/** JSON.parse behind the depth (and optional entry-count) limit; never throws. */
export function parseJson(text: string, source: string, limits: JsonLimits = {}): Either<JsonError, unknown> {
  const maxDepth = limits.maxDepth ?? MAX_JSON_DEPTH;
  const shape = jsonShape(text, { maxDepth, maxEntries: limits.maxEntries });
  if (shape.tooDeepAt >= 0) {
    return left(new JsonError('depth', source, `JSON nests more than ${maxDepth} levels deep (at character ${shape.tooDeepAt}); refused before parsing`));
  }
  if (limits.maxEntries !== undefined && shape.entries > limits.maxEntries) {
    return left(new JsonError('entries', source, `JSON has more than ${limits.maxEntries} top-level entries; refused before parsing`));
  }
  try {
    return right(JSON.parse(text) as unknown);
  } catch (cause) {
    return left(new JsonError('syntax', source, cause instanceof Error ? cause.message : String(cause)));
  }
}

/**
 * A short rendering of any value for messages: JSON where the value is JSON (NaN and Infinity by name,
 * bigints with an n), cut at `maxLength` characters. Bounded in depth and length, so deep, huge or
 * cyclic values cost little and never throw.
 */
export function describeValue(value: unknown, maxLength = 80): string {
  const cut = (text: string) => (text.length > maxLength ? `${text.slice(0, Math.max(0, maxLength - 3))}...`.slice(0, maxLength) : text);
  if (value === undefined) return cut('nothing');
  const out: string[] = [];
  let length = 0;
  const budget = maxLength + 1;
  const emit = (s: string): boolean => {
    out.push(s);
    length += s.length;
    return length < budget;
  };
  const render = (v: unknown, depth: number): boolean => {
    if (v === null) return emit('null');
    switch (typeof v) {
      case 'number':
        return emit(Number.isFinite(v) ? JSON.stringify(v) : String(v));
      case 'bigint':
        return emit(`${v}n`);
      case 'boolean':
        return emit(String(v));
      case 'string':
        return emit(JSON.stringify(v.length > budget ? v.slice(0, budget) : v));
      case 'undefined':
        return emit('undefined');
      case 'symbol':
        return emit(v.toString());
      case 'function':
        return emit(`[function ${v.name || 'anonymous'}]`);
    }
    if (depth >= 8) return emit(Array.isArray(v) ? '[...]' : '{...}');
    if (Array.isArray(v)) {
      if (!emit('[')) return false;
      for (let i = 0; i < v.length; i++) {
        if (i > 0 && !emit(',')) return false;
        if (!render(v[i], depth + 1)) return false;
      }
      return emit(']');
    }
    if (!emit('{')) return false;
    let first = true;
    for (const k in v as object) {
      if (!Object.hasOwn(v as object, k)) continue;
      if (!first && !emit(',')) return false;
      first = false;
      if (!emit(`${JSON.stringify(k)}:`)) return false;
      if (!render((v as Record<string, unknown>)[k], depth + 1)) return false;
    }
    return emit('}');
  };
  let text: string;
  try {
    render(value, 0);
    text = out.join('');
  } catch {
    // A getter that throws, a Proxy: render what there is.
    text = out.join('') || Object.prototype.toString.call(value);
  }
  return cut(text);
}

/**
 * Why a parsed value (from YAML, whose aliases can make cycles, or from code) cannot be walked
 * recursively: 'cyclic', 'deep' (more than `maxDepth` levels), 'large' (more than `maxNodes` objects and
 * arrays), or null. Iterative, and bounded by `maxNodes`.
 */
export function structureProblem(value: unknown, maxDepth = MAX_JSON_DEPTH, maxNodes = 1_000_000): 'cyclic' | 'deep' | 'large' | null {
  // Depth-first with an explicit stack; `onPath` holds the ancestors of the node being expanded.
  const onPath = new Set<object>();
  const stack: { node: object; depth: number; exit: boolean }[] = [];
  if (typeof value === 'object' && value !== null) stack.push({ node: value, depth: 1, exit: false });
  let nodes = 0;
  while (stack.length > 0) {
    const { node, depth, exit } = stack.pop()!;
    if (exit) {
      onPath.delete(node);
      continue;
    }
    if (onPath.has(node)) return 'cyclic';
    if (depth > maxDepth) return 'deep';
    if (++nodes > maxNodes) return 'large';
    onPath.add(node);
    stack.push({ node, depth, exit: true });
    const children = Array.isArray(node) ? node : node instanceof Map ? [...node.values()] : Object.values(node);
    for (const child of children) if (typeof child === 'object' && child !== null) stack.push({ node: child, depth: depth + 1, exit: false });
  }
  return null;
}
