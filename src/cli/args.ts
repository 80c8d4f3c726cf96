/**
 * Command-line flags: a small declarative parser on fp-ts Either that reports every problem at
 * once (unknown flags, missing values, bad numbers, bad choices, repeated flags) instead of the
 * first one, and renders `--help` from the same table.
 */
import * as A from 'fp-ts/lib/Array.js';
import * as E from 'fp-ts/lib/Either.js';
import { pipe } from 'fp-ts/lib/function.js';
import { RevgradError } from '../tensor/errors.ts';

export type FlagKind =
  | { readonly kind: 'bool' }
  | { readonly kind: 'string' }
  | { readonly kind: 'int'; readonly min?: number }
  | { readonly kind: 'number'; readonly min?: number; readonly max?: number; readonly exclusiveMin?: boolean }
  | { readonly kind: 'enum'; readonly values: readonly string[] }
  | { readonly kind: 'int-list'; readonly min?: number };

export type FlagSpec = FlagKind & {
  readonly name: string;
  readonly help: string;
  /** Shown in --help, e.g. 'N' or 'FILE'. */
  readonly arg?: string;
  /** Shown in --help. */
  readonly defaultText?: string;
};

export type FlagValue = string | number | boolean | number[];

export interface ParsedArgs {
  readonly flags: ReadonlyMap<string, FlagValue>;
  readonly positionals: readonly string[];
  readonly help: boolean;
}

export interface CommandSpec {
  readonly name: string;
  readonly summary: string;
  readonly usage: string;
  readonly flags: readonly FlagSpec[];
  /** Positional arguments: their names for --help; extra ones are errors. */
  readonly positionals?: readonly { readonly name: string; readonly help: string }[];
  readonly details?: string;
}

/** A usage problem: the CLI prints them all and exits with status 2. */
export class UsageError extends RevgradError {
  override name = 'UsageError';
  constructor(readonly problems: readonly string[], readonly command: string) {
    super(problems.join('\n'));
  }
}

const describeKind = (f: FlagKind): string => {
  switch (f.kind) {
    case 'int':
      return f.min === undefined ? 'an integer' : f.min === 1 ? 'a positive integer' : f.min === 0 ? 'a non-negative integer' : `an integer >= ${f.min}`;
    case 'number':
      return f.exclusiveMin && f.min !== undefined
        ? `a number > ${f.min}${f.max !== undefined ? ` and <= ${f.max}` : ''}`
        : f.min !== undefined
          ? `a number >= ${f.min}${f.max !== undefined ? ` and <= ${f.max}` : ''}`
          : 'a number';
    case 'enum':
      return `one of ${f.values.join(', ')}`;
    case 'int-list':
      return 'a comma-separated list of integers';
    default:
      return 'a value';
  }
};

function parseInteger(text: string, min: number | undefined): number | null {
  if (!/^[+-]?\d+$/.test(text.trim())) return null;
  const v = Number(text);
  if (!Number.isSafeInteger(v)) return null;
  return min !== undefined && v < min ? null : v;
}

/** The typed value of one flag occurrence, or the problem with it. */
export function parseValue(spec: FlagSpec, text: string): E.Either<string, FlagValue> {
  const bad = () => E.left(`--${spec.name}: expected ${describeKind(spec)}, got ${JSON.stringify(text)}`);
  switch (spec.kind) {
    case 'bool':
      return E.right(true);
    case 'string':
      return text === '' ? E.left(`--${spec.name}: expected a non-empty value`) : E.right(text);
    case 'int': {
      const v = parseInteger(text, spec.min);
      return v === null ? bad() : E.right(v);
    }
    case 'number': {
      const t = text.trim();
      const v = t === '' ? NaN : Number(t);
      if (!Number.isFinite(v)) return bad();
      if (spec.min !== undefined && (spec.exclusiveMin ? v <= spec.min : v < spec.min)) return bad();
      if (spec.max !== undefined && v > spec.max) return bad();
      return E.right(v);
    }
    case 'enum':
      return spec.values.includes(text) ? E.right(text) : bad();
    case 'int-list': {
      const parts = text.split(',');
      const vs = parts.map((p) => parseInteger(p, spec.min));
      return parts.length === 0 || vs.some((v) => v === null) ? bad() : E.right(vs as number[]);
    }
  }
}

type Token = E.Either<string, { readonly flag?: readonly [string, FlagValue]; readonly positional?: string; readonly help?: true }>;

/**
 * Parse `argv` (the words after the command name) against the command's flags. Accepts
 * `--flag value` and `--flag=value`; `--help`/`-h` anywhere asks for help. Every problem is collected.
 */
export function parseArgs(cmd: CommandSpec, argv: readonly string[]): E.Either<string[], ParsedArgs> {
  const byName = new Map(cmd.flags.map((f) => [f.name, f]));
  const tokens: Token[] = [];
  for (let i = 0; i < argv.length; i++) {
    const word = argv[i];
    if (word === '--help' || word === '-h') {
      tokens.push(E.right({ help: true }));
      continue;
    }
    if (!word.startsWith('-') || word === '-') {
      tokens.push(E.right({ positional: word }));
      continue;
    }
    const eq = word.indexOf('=');
    const name = word.replace(/^--?/, '').slice(0, eq < 0 ? undefined : eq - (word.startsWith('--') ? 2 : 1));
    const spec = byName.get(name);
    if (spec === undefined || !word.startsWith('--')) {
      const near = closest(name, [...byName.keys()]);
      tokens.push(E.left(`unknown flag ${word.slice(0, eq < 0 ? undefined : eq)} for 'revgrad ${cmd.name}'${near ? ` (did you mean --${near}?)` : ''}`));
      // Its value, if it has one, is not a positional argument.
      if (eq < 0 && i + 1 < argv.length && !argv[i + 1].startsWith('-')) i++;
      continue;
    }
    let text: string;
    if (eq >= 0) {
      text = word.slice(eq + 1);
      if (spec.kind === 'bool') {
        tokens.push(E.left(`--${name} takes no value (got ${JSON.stringify(text)})`));
        continue;
      }
    } else if (spec.kind === 'bool') {
      text = '';
    } else if (i + 1 < argv.length && !(argv[i + 1].startsWith('--') && spec.kind !== 'number' && spec.kind !== 'int')) {
      text = argv[++i];
    } else {
      tokens.push(E.left(`--${name} needs a value (${spec.arg ?? describeKind(spec)})`));
      continue;
    }
    tokens.push(pipe(parseValue(spec, text), E.map((v) => ({ flag: [name, v] as const }))));
  }
  const { left: problems, right: ok } = A.separate(tokens);
  const flags = new Map<string, FlagValue>();
  const positionals: string[] = [];
  let help = false;
  for (const t of ok) {
    if (t.help) help = true;
    if (t.positional !== undefined) positionals.push(t.positional);
    if (t.flag !== undefined) {
      if (flags.has(t.flag[0])) problems.push(`--${t.flag[0]} is given more than once`);
      flags.set(t.flag[0], t.flag[1]);
    }
  }
  const allowed = cmd.positionals?.length ?? 0;
  if (!help && positionals.length > allowed) {
    problems.push(
      allowed === 0
        ? `'revgrad ${cmd.name}' takes no positional arguments, got ${positionals.map((p) => JSON.stringify(p)).join(' ')}`
        : `'revgrad ${cmd.name}' takes ${allowed} argument${allowed > 1 ? 's' : ''}, got ${positionals.length}`,
    );
  }
  return problems.length > 0 && !help ? E.left(problems) : E.right({ flags, positionals, help });
}

/** Levenshtein-closest name within distance 2, for "did you mean". */
function closest(word: string, names: readonly string[]): string | null {
  let best: string | null = null;
  let bestD = 3;
  for (const n of names) {
    const d = distance(word, n);
    if (d < bestD) [best, bestD] = [n, d];
  }
  return best;
}

function distance(a: string, b: string): number {
  const dp = Array.from({ length: a.length + 1 }, (_, i) => [i, ...new Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) dp[0][j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      dp[i][j] = Math.min(dp[i - 1][j] + 1, dp[i][j - 1] + 1, dp[i - 1][j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
  }
  return dp[a.length][b.length];
}

/** `--help` text of a command. */
export function helpText(cmd: CommandSpec): string {
  const lines = [`revgrad ${cmd.name}: ${cmd.summary}`, '', `Usage: ${cmd.usage}`];
  if (cmd.positionals && cmd.positionals.length > 0) {
    lines.push('', 'Arguments:');
    for (const p of cmd.positionals) lines.push(`  ${p.name.padEnd(26)} ${p.help}`);
  }
  lines.push('', 'Flags:');
  for (const f of [...cmd.flags, { name: 'help', kind: 'bool', help: 'show this help' } as FlagSpec]) {
    const left = `--${f.name}${f.kind === 'bool' ? '' : ` ${f.arg ?? (f.kind === 'enum' ? f.values.join('|') : 'VALUE')}`}`;
    const def = f.defaultText === undefined ? '' : ` (default: ${f.defaultText})`;
    lines.push(`  ${left.padEnd(26)} ${f.help}${def}`);
  }
  if (cmd.details) lines.push('', cmd.details);
  return lines.join('\n');
}

// Typed getters over the parsed map.
export const getStr = (a: ParsedArgs, name: string): string | undefined => a.flags.get(name) as string | undefined;
export const getNum = (a: ParsedArgs, name: string): number | undefined => a.flags.get(name) as number | undefined;
export const getBool = (a: ParsedArgs, name: string): boolean => a.flags.get(name) === true;
export const getList = (a: ParsedArgs, name: string): number[] | undefined => a.flags.get(name) as number[] | undefined;
