/**
 * PySlowFast YAML configs (configs/ImageNet/REV_*.yaml, ...), read as PySlowFast reads them and written
 * so that PySlowFast reads them back.
 *
 * Reading follows `cfg.merge_from_file(path)` (fvcore + yacs):
 *  - YAML 1.1 (PyYAML's dialect), duplicate keys refused;
 *  - `_BASE_: other.yaml` loads that file first (a path relative to the including file), then merges
 *    this one over it, recursively (fvcore's load_yaml_with_base);
 *  - a string value that is a Python literal becomes that literal (yacs's literal_eval): "(3, 7, 7)"
 *    is the list [3, 7, 7], "1e-8" a float, "None" null;
 *  - a value whose type differs from PySlowFast's default is refused as yacs refuses it (`MLP_RATIO: 4`
 *    where the default is 4.0 raises "Type mismatch"), for the fields this library reads.
 * The merged tree then goes through `parseConfig` (config.ts), which checks the model sections and
 * accepts the others (SOLVER, AUG, TEST, ...); src/train/solver.ts reads SOLVER and MIXUP.
 *
 * Writing (`slowFastYaml`) emits every model field, floats with a decimal point, so yacs accepts the
 * file, followed by whatever extra sections the caller gives (SOLVER, MIXUP, TRAIN).
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import { parseDocument } from 'yaml';
import { MAX_JSON_DEPTH, structureProblem } from '../../io/json.ts';
import { DEFAULT_CONFIG, parseConfig, type ConfigProblem, type MViTConfig, type ParseOptions } from './config.ts';

/** A YAML config after _BASE_ and literal decoding: sections of plain values. */
export type SlowFastTree = Record<string, unknown>;

export interface YamlConfig {
  readonly cfg: MViTConfig;
  /** Every section of the merged file (model and the others), values decoded as yacs decodes them. */
  readonly tree: SlowFastTree;
  /** The files read, the including file last. */
  readonly files: readonly string[];
}

const BASE_KEY = '_BASE_';
const MAX_BASE_DEPTH = 16;

/** PySlowFast's defaults (slowfast/config/defaults.py) for the non-model fields this library reads. */
export const SLOWFAST_TRAINING_DEFAULTS = {
  SOLVER: {
    BASE_LR: 0.1,
    LR_POLICY: 'cosine',
    COSINE_END_LR: 0.0,
    GAMMA: 0.1,
    STEP_SIZE: 1,
    STEPS: [] as number[],
    LRS: [] as number[],
    MAX_EPOCH: 300,
    MOMENTUM: 0.9,
    DAMPENING: 0.0,
    NESTEROV: true,
    WEIGHT_DECAY: 1e-4,
    WARMUP_FACTOR: 0.1,
    WARMUP_EPOCHS: 0.0,
    WARMUP_START_LR: 0.01,
    OPTIMIZING_METHOD: 'sgd',
    BASE_LR_SCALE_NUM_SHARDS: false,
    COSINE_AFTER_WARMUP: false,
    ZERO_WD_1D_PARAM: false,
    CLIP_GRAD_VAL: null as number | null,
    CLIP_GRAD_L2NORM: null as number | null,
    LARS_ON: false,
    LAYER_DECAY: 1.0,
    BETAS: [0.9, 0.999],
  },
  MIXUP: { ENABLE: false, ALPHA: 0.8, CUTMIX_ALPHA: 1.0, PROB: 1.0, SWITCH_PROB: 0.5, LABEL_SMOOTH_VALUE: 0.1 },
  TRAIN: { BATCH_SIZE: 64, CHECKPOINT_FILE_PATH: '', CHECKPOINT_EPOCH_RESET: false },
  NUM_GPUS: 1,
  NUM_SHARDS: 1,
  RNG_SEED: 1,
};

/** Numeric fields whose PySlowFast default is a float (all other numeric defaults are ints). */
const FLOAT_FIELDS: ReadonlySet<string> = new Set([
  'MODEL.DROPOUT_RATE',
  'MVIT.MLP_RATIO', 'MVIT.DROPPATH_RATE', 'MVIT.LAYER_SCALE_INIT_VALUE', 'MVIT.DROPOUT_RATE', 'MVIT.HEAD_INIT_SCALE',
  'SOLVER.BASE_LR', 'SOLVER.COSINE_END_LR', 'SOLVER.GAMMA', 'SOLVER.MOMENTUM', 'SOLVER.DAMPENING', 'SOLVER.WEIGHT_DECAY',
  'SOLVER.WARMUP_FACTOR', 'SOLVER.WARMUP_EPOCHS', 'SOLVER.WARMUP_START_LR', 'SOLVER.LAYER_DECAY',
  'MIXUP.ALPHA', 'MIXUP.CUTMIX_ALPHA', 'MIXUP.PROB', 'MIXUP.SWITCH_PROB', 'MIXUP.LABEL_SMOOTH_VALUE', 'SOLVER.CLIP_GRAD_L2NORM',
  'SOLVER.CLIP_GRAD_VAL',
]);

/** Entries of list fields whose PySlowFast values are floats: [layer, multiplier], (beta1, beta2). */
const FLOAT_LIST_POSITIONS: Readonly<Record<string, readonly number[]>> = { 'MVIT.DIM_MUL': [1], 'MVIT.HEAD_MUL': [1], 'SOLVER.BETAS': [0, 1] };

type PyType = 'int' | 'float' | 'bool' | 'str' | 'list' | 'none' | 'dict';

/** The Python type PySlowFast's default has at `path`, or undefined for fields not tracked. */
function defaultType(path: string): PyType | undefined {
  const parts = path.split('.');
  let v: unknown = { ...DEFAULT_CONFIG, ...SLOWFAST_TRAINING_DEFAULTS };
  for (const p of parts) {
    if (typeof v !== 'object' || v === null || Array.isArray(v) || !Object.hasOwn(v, p)) return undefined;
    v = (v as Record<string, unknown>)[p];
  }
  if (v === null) return 'none';
  if (typeof v === 'boolean') return 'bool';
  if (typeof v === 'string') return 'str';
  if (Array.isArray(v)) return 'list';
  if (typeof v === 'number') return FLOAT_FIELDS.has(path) ? 'float' : 'int';
  return 'dict';
}

// ---------------------------------------------------------------------------------------------
// Python literals (ast.literal_eval, for what configs contain)

interface Literal {
  readonly type: PyType | 'tuple';
  readonly value: unknown;
}

/** ast.literal_eval of numbers, strings, True/False/None, tuples, lists; undefined where Python would raise. */
export function pythonLiteral(text: string): Literal | undefined {
  let i = 0;
  const s = text.trim();
  const space = () => {
    while (i < s.length && /\s/.test(s[i]!)) i++;
  };
  const parse = (depth: number): Literal | undefined => {
    if (depth > 32) return undefined;
    space();
    const c = s[i];
    if (c === '(' || c === '[') {
      const close = c === '(' ? ')' : ']';
      i++;
      const items: unknown[] = [];
      let trailingComma = false;
      space();
      while (s[i] !== close) {
        const item = parse(depth + 1);
        if (item === undefined) return undefined;
        items.push(item.value);
        space();
        trailingComma = s[i] === ',';
        if (trailingComma) i++;
        else if (s[i] !== close) return undefined;
        space();
      }
      i++;
      // (x) is just x; (x,) a tuple.
      if (c === '(' && items.length === 1 && !trailingComma) return { type: typeOf(items[0]), value: items[0] };
      return { type: c === '(' ? 'tuple' : 'list', value: items };
    }
    if (c === '"' || c === "'") {
      let out = '';
      i++;
      while (i < s.length && s[i] !== c) {
        if (s[i] === '\\') {
          const e = s[i + 1];
          const map: Record<string, string> = { n: '\n', t: '\t', r: '\r', '\\': '\\', "'": "'", '"': '"', '0': '\0' };
          if (e === undefined || map[e] === undefined) return undefined;
          out += map[e];
          i += 2;
        } else out += s[i++];
      }
      if (s[i] !== c) return undefined;
      i++;
      return { type: 'str', value: out };
    }
    const rest = s.slice(i);
    const word = (/^[+-]?0[xob][\da-f_]+/i.exec(rest) ?? /^[+-]?(?:\d[\d_]*\.?[\d_]*|\.\d[\d_]*)(?:e[+-]?\d+)?/i.exec(rest) ?? /^[A-Za-z_]\w*/.exec(rest))?.[0];
    if (word === undefined) return undefined;
    i += word.length;
    if (word === 'True' || word === 'False') return { type: 'bool', value: word === 'True' };
    if (word === 'None') return { type: 'none', value: null };
    const digits = word.replace(/_/g, '');
    if (/^[+-]?(0|[1-9]\d*)$/.test(digits) || /^[+-]?0(x[\da-f]+|o[0-7]+|b[01]+)$/i.test(digits)) {
      const negative = digits.startsWith('-');
      const magnitude = Number(BigInt(digits.replace(/^[+-]/, '')));
      return { type: 'int', value: negative ? -magnitude : magnitude };
    }
    if (/^[+-]?(\d+\.\d*|\.\d+|\d+)(e[+-]?\d+)?$/i.test(digits) && /[.e]/i.test(digits)) return { type: 'float', value: Number(digits) };
    return undefined;
  };
  const result = parse(0);
  space();
  return result !== undefined && i === s.length ? result : undefined;
}

function typeOf(v: unknown): PyType {
  if (v === null) return 'none';
  if (typeof v === 'boolean') return 'bool';
  if (typeof v === 'string') return 'str';
  if (Array.isArray(v)) return 'list';
  if (typeof v === 'number') return Number.isInteger(v) ? 'int' : 'float';
  return 'dict';
}

// ---------------------------------------------------------------------------------------------
// Reading

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** YAML text -> a JS tree (ints as bigint, floats as number), or the problems with their lines. */
function parseYaml(text: string, source: string): E.Either<ConfigProblem[], unknown> {
  const doc = parseDocument(text, { version: '1.1', intAsBigInt: true, uniqueKeys: true, prettyErrors: true });
  if (doc.errors.length > 0) {
    return E.left(
      doc.errors.map((e) => {
        const at = e.linePos?.[0];
        return { path: '', message: `${source}${at ? `:${at.line}:${at.col}` : ''}: YAML error: ${e.message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '')}` };
      }),
    );
  }
  let js: unknown;
  try {
    js = doc.toJS({ maxAliasCount: 100 });
  } catch (e) {
    return E.left([{ path: '', message: `${source}: YAML error: ${(e as Error).message}` }]);
  }
  // The tree is walked recursively below: an alias inside itself (`&a [*a]`) or deep nesting must stop here.
  const shape = structureProblem(js);
  if (shape !== null) {
    const why = { cyclic: 'an alias refers to a value that contains it (a cyclic value)', deep: `it nests more than ${MAX_JSON_DEPTH} levels deep`, large: 'it holds more than a million lists and mappings' }[shape];
    return E.left([{ path: '', message: `${source}: YAML error: ${why}` }]);
  }
  return E.right(js);
}

/** fvcore's merge_a_into_b: sections merge key by key, everything else is replaced. */
function mergeInto(base: Record<string, unknown>, over: Record<string, unknown>, path: string, source: string, problems: ConfigProblem[]): void {
  for (const [k, v] of Object.entries(over)) {
    const here = path ? `${path}.${k}` : k;
    if (isRecord(v) && Object.hasOwn(base, k)) {
      const b = base[k];
      if (!isRecord(b)) {
        problems.push({ path: here, message: `${source} makes it a section, but a _BASE_ file gives it a value (fvcore: "Cannot inherit key '${k}' from base!")` });
        continue;
      }
      mergeInto(b, v, here, source, problems);
    } else {
      base[k] = v;
    }
  }
}

/** Loads `path` and its _BASE_ chain into one raw tree (before literal decoding). */
function loadWithBase(path: string, readText: (p: string) => string, chain: readonly string[], files: string[]): E.Either<ConfigProblem[], Record<string, unknown>> {
  if (chain.includes(path)) return E.left([{ path: BASE_KEY, message: `${path}: _BASE_ files include each other (${[...chain, path].join(' -> ')})` }]);
  if (chain.length >= MAX_BASE_DEPTH) return E.left([{ path: BASE_KEY, message: `${path}: more than ${MAX_BASE_DEPTH} levels of _BASE_` }]);
  let text: string;
  try {
    text = readText(path);
  } catch (e) {
    const via = chain.length > 0 ? ` (the _BASE_ of ${chain[chain.length - 1]})` : '';
    return E.left([{ path: chain.length > 0 ? BASE_KEY : '', message: `${path}${via}: cannot read: ${(e as Error).message}` }]);
  }
  const parsed = parseYaml(text, path);
  if (E.isLeft(parsed)) return parsed;
  const doc = parsed.right ?? {};
  if (!isRecord(doc)) return E.left([{ path: '', message: `${path}: expected a mapping of config sections, got ${Array.isArray(doc) ? 'a list' : typeof doc}` }]);
  files.push(path);
  if (!Object.hasOwn(doc, BASE_KEY)) return E.right(doc);
  const base = doc[BASE_KEY];
  delete doc[BASE_KEY];
  if (typeof base !== 'string' || base === '') return E.left([{ path: BASE_KEY, message: `${path}: _BASE_ must be a file name, got ${JSON.stringify(base)}` }]);
  if (/^(https?:\/\/|~)/.test(base)) return E.left([{ path: BASE_KEY, message: `${path}: _BASE_ ${base}: only local paths are read (absolute, or relative to the including file)` }]);
  const basePath = base.startsWith('/') ? base : join(dirname(path), base);
  const loaded = loadWithBase(basePath, readText, [...chain, path], files);
  if (E.isLeft(loaded)) return loaded;
  const problems: ConfigProblem[] = [];
  mergeInto(loaded.right, doc, '', path, problems);
  return problems.length > 0 ? E.left(problems) : E.right(loaded.right);
}

const PY_NAMES: Record<PyType | 'tuple', string> = {
  int: "<class 'int'>", float: "<class 'float'>", bool: "<class 'bool'>", str: "<class 'str'>", list: "<class 'list'>",
  tuple: "<class 'tuple'>", none: "<class 'NoneType'>", dict: "<class 'CfgNode'>",
};

/**
 * yacs's merge: literal-decode string values, check them against the default's type, turn bigints
 * into numbers. Lists keep their items as YAML gave them (yacs decodes only whole values).
 */
function decodeTree(raw: Record<string, unknown>, path: string, problems: ConfigProblem[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(raw)) {
    const here = path ? `${path}.${k}` : k;
    if (isRecord(v)) {
      out[k] = decodeTree(v, here, problems);
      continue;
    }
    let value: unknown = plain(v);
    let type: PyType | 'tuple' = typeof v === 'bigint' ? 'int' : typeof v === 'number' ? 'float' : typeOf(value);
    if (typeof v === 'string') {
      const literal = pythonLiteral(v);
      if (literal !== undefined) [value, type] = [literal.value, literal.type];
    }
    const expected = defaultType(here);
    const compatible =
      expected === undefined || expected === type || expected === 'none' || type === 'none' || (expected === 'list' && type === 'tuple');
    if (!compatible) {
      const hint = expected === 'float' && type === 'int' ? ` (write ${String(value)}.0)` : '';
      problems.push({
        path: here,
        message: `PySlowFast's config merge raises ValueError: Type mismatch (${PY_NAMES[expected!]} vs. ${PY_NAMES[type]}) with values (${describeDefault(here)} vs. ${JSON.stringify(value)})${hint}`,
      });
    }
    out[k] = value;
  }
  return out;
}

function describeDefault(path: string): string {
  const v = path.split('.').reduce<unknown>((o, p) => (isRecord(o) ? o[p] : undefined), { ...DEFAULT_CONFIG, ...SLOWFAST_TRAINING_DEFAULTS });
  return typeof v === 'number' && FLOAT_FIELDS.has(path) && Number.isInteger(v) ? `${v}.0` : JSON.stringify(v);
}

/** bigint -> number everywhere inside (lists included). */
function plain(v: unknown): unknown {
  if (typeof v === 'bigint') return Number(v);
  if (Array.isArray(v)) return v.map(plain);
  if (isRecord(v)) return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plain(x)]));
  return v;
}

export interface ReadYamlOptions extends ParseOptions {
  /** Reads a file (default: node:fs readFileSync as UTF-8); for _BASE_ files too. */
  readonly readText?: (path: string) => string;
}

/** The merged, decoded tree of a YAML config file and its _BASE_ chain, type-checked as yacs checks it. */
export function readSlowFastTree(path: string, options: ReadYamlOptions = {}): E.Either<ConfigProblem[], { tree: SlowFastTree; files: string[] }> {
  const readText = options.readText ?? ((p: string) => readFileSync(p, 'utf8'));
  const files: string[] = [];
  const raw = loadWithBase(path, readText, [], files);
  if (E.isLeft(raw)) return raw;
  const problems: ConfigProblem[] = [];
  const tree = decodeTree(raw.right, '', problems);
  return problems.length > 0 ? E.left(problems.map((p) => ({ ...p, message: `${p.message} [${path}]` }))) : E.right({ tree, files });
}

/** A YAML config file as a validated model config (every problem collected), with the whole tree. */
export function readYamlConfig(path: string, options: ReadYamlOptions = {}): E.Either<ConfigProblem[], YamlConfig> {
  const read = readSlowFastTree(path, options);
  if (E.isLeft(read)) return read;
  const cfg = parseConfig(read.right.tree, options);
  if (E.isLeft(cfg)) {
    // The way out of the Kinetics config's cls token, in YAML terms.
    const hint = `; with YAML, inherit the file and turn it off: _BASE_: ${path.split('/').pop()} and MVIT: {CLS_EMBED_ON: False}`;
    return E.left(cfg.left.map((p) => (p.path === 'MVIT.CLS_EMBED_ON' ? { ...p, message: p.message + hint } : p)));
  }
  return E.right({ cfg: cfg.right, tree: read.right.tree, files: read.right.files });
}

/** YAML text as a decoded tree (as a checkpoint's `cfg` holds it); _BASE_ cannot be resolved without a file. */
export function parseSlowFastYamlText(text: string, source: string): E.Either<ConfigProblem[], SlowFastTree> {
  const parsed = parseYaml(text, source);
  if (E.isLeft(parsed)) return parsed;
  const doc = parsed.right ?? {};
  if (!isRecord(doc)) return E.left([{ path: '', message: `${source}: expected a mapping of config sections` }]);
  if (Object.hasOwn(doc, BASE_KEY)) return E.left([{ path: BASE_KEY, message: `${source}: _BASE_ cannot be resolved in text that is not a file` }]);
  const problems: ConfigProblem[] = [];
  const tree = decodeTree(doc, '', problems);
  return problems.length > 0 ? E.left(problems) : E.right(tree);
}

export const isYamlPath = (path: string): boolean => /\.ya?ml$/i.test(path);

// ---------------------------------------------------------------------------------------------
// Writing

const SECTION_ORDER = ['TRAIN', 'DATA', 'MVIT', 'AUG', 'MIXUP', 'SOLVER', 'MODEL', 'TEST', 'DATA_LOADER'];

function scalar(v: unknown, path: string, position?: number): string {
  if (v === null || v === undefined) return 'null';
  if (typeof v === 'boolean') return v ? 'True' : 'False';
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'number') {
    const isFloat = position === undefined ? FLOAT_FIELDS.has(path) : (FLOAT_LIST_POSITIONS[path] ?? []).includes(position);
    return isFloat ? floatText(v) : String(v);
  }
  if (Array.isArray(v)) return `[${v.map((x, i) => (Array.isArray(x) ? scalar(x, path) : scalar(x, path, i))).join(', ')}]`;
  return JSON.stringify(v);
}

/** A float PyYAML reads as a float: a decimal point, and an exponent with a sign ("1.0e-06"). */
export function floatText(v: number): string {
  if (!Number.isFinite(v)) return v > 0 ? '.inf' : v < 0 ? '-.inf' : '.nan';
  const s = String(v);
  if (Number.isInteger(v) && !/e/i.test(s)) return `${s}.0`;
  return /e/i.test(s) && !s.includes('.') ? s.replace(/e/i, '.0e') : s;
}

function emit(value: Record<string, unknown>, path: string, indent: string, lines: string[]): void {
  for (const [k, v] of Object.entries(value)) {
    const here = path ? `${path}.${k}` : k;
    if (isRecord(v)) {
      lines.push(`${indent}${k}:`);
      emit(v, here, `${indent}  `, lines);
    } else {
      lines.push(`${indent}${k}: ${scalar(v, here)}`);
    }
  }
}

/**
 * A YAML config PySlowFast (yacs) reads: the full model config, `MODEL.MODEL_NAME: MViT`, plus the
 * `extra` sections (e.g. SOLVER, MIXUP, TRAIN) merged in, with `header` lines as comments on top.
 */
export function slowFastYaml(cfg: MViTConfig, extra: SlowFastTree = {}, header: readonly string[] = []): string {
  const sections: Record<string, unknown> = {
    DATA: { ...cfg.DATA },
    MVIT: { ...cfg.MVIT, REV: { ...cfg.MVIT.REV } },
    MODEL: { ...cfg.MODEL, ARCH: 'mvit', MODEL_NAME: 'MViT' },
  };
  for (const [k, v] of Object.entries(extra)) sections[k] = isRecord(v) && isRecord(sections[k]) ? { ...(sections[k] as object), ...v } : v;
  const ordered = Object.fromEntries(
    Object.entries(sections).sort(([a], [b]) => rank(a) - rank(b)),
  );
  const lines = header.map((h) => `# ${h}`);
  emit(ordered, '', '', lines);
  return lines.join('\n') + '\n';
}

const rank = (section: string): number => {
  const i = SECTION_ORDER.indexOf(section);
  return i < 0 ? SECTION_ORDER.length : i;
};
