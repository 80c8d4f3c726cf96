/** Pieces shared by the commands: config resolution, model loading, output helpers. */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { freemem } from 'node:os';
import * as E from 'fp-ts/lib/Either.js';
import { formatProblems, MAX_REPORTED_PROBLEMS, parseConfig, parseConfigText, type ConfigProblem, type MViTConfig } from '../models/mvit/config.ts';
import { bytesText, resourceProblem, type EstimateOptions, type MemoryLimit } from '../models/mvit/resources.ts';
import { buildModel, type MViTModel } from '../models/mvit/model.ts';
import { PRESET_NAMES, presetConfig } from '../models/mvit/presets.ts';
import { NUM_CLASSES as MOVING_MNIST_CLASSES } from '../data/clips.ts';
import { isYamlPath, readYamlConfig, type SlowFastTree } from '../models/mvit/yaml-config.ts';
import { getStr, UsageError, type FlagSpec, type ParsedArgs } from './args.ts';
import { RevgradError } from '../tensor/errors.ts';

/** The preset `revgrad train` and `npm start` use when none is given. */
export const DEFAULT_PRESET: string = 'REV_MVIT_MNIST';

/** A runtime failure (missing file, corrupt checkpoint, bad config): printed, exit status 1. */
export class CliError extends RevgradError {
  override name = 'CliError';
  constructor(readonly problems: readonly string[]) {
    super(problems.join('\n'));
  }
}

export const CONFIG_FLAGS: readonly FlagSpec[] = [
  { name: 'preset', kind: 'string', arg: 'NAME', help: `a named config: ${PRESET_NAMES.join(', ')}` },
  { name: 'config', kind: 'string', arg: 'FILE', help: 'a PySlowFast YAML config (.yaml, _BASE_ followed) or a JSON one (partial; merged over the defaults)' },
];

const formatConfigProblems = (problems: readonly ConfigProblem[], source: string): string[] => formatProblems(problems, source).split('\n');

/** At most `max` lines, then one saying how many more there were (a 3M-entry list must not print 3M lines). */
export function capLines(lines: readonly string[], max = MAX_REPORTED_PROBLEMS, indent = ''): string[] {
  return lines.length <= max ? [...lines] : [...lines.slice(0, max), `${indent}... and ${lines.length - max} more`];
}

/** Config files larger than this are refused unread (a real one is a few KB). */
const MAX_CONFIG_BYTES = 16 * 1024 * 1024;

export interface ResolvedConfig {
  readonly cfg: MViTConfig;
  /** 'preset NAME' or the file path. */
  readonly source: string;
  readonly presetName: string | null;
  /** For a YAML config: every section of the file (SOLVER, MIXUP, ...), decoded as PySlowFast decodes it. */
  readonly tree?: SlowFastTree;
}

/** The config named by --preset or --config (or the default preset), with every problem listed. */
export function resolveConfig(args: ParsedArgs, fallback: string | null = DEFAULT_PRESET): E.Either<string[], ResolvedConfig> {
  const preset = getStr(args, 'preset');
  const file = getStr(args, 'config');
  if (preset !== undefined && file !== undefined) return E.left(['give either --preset or --config, not both']);
  if (file !== undefined) {
    if (!existsSync(file)) return E.left([`--config ${file}: no such file`]);
    const stat = statSync(file);
    if (stat.isDirectory()) return E.left([`--config ${file}: is a directory, expected a YAML or JSON file`]);
    if (stat.size > MAX_CONFIG_BYTES) return E.left([`--config ${file}: ${formatBytes(stat.size)}, more than the ${formatBytes(MAX_CONFIG_BYTES)} a config may have`]);
    if (isYamlPath(file)) {
      const yaml = readYamlConfig(file);
      return E.isLeft(yaml) ? E.left(formatConfigProblems(yaml.left, file)) : E.right({ cfg: yaml.right.cfg, source: file, presetName: null, tree: yaml.right.tree });
    }
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (e) {
      return E.left([`--config ${file}: cannot read (${(e as Error).message})`]);
    }
    const parsed = parseConfigText(text, file);
    return E.isLeft(parsed) ? E.left(formatConfigProblems(parsed.left, file)) : E.right({ cfg: parsed.right, source: file, presetName: null });
  }
  const name = preset ?? fallback;
  if (name === null) return E.left(['give --preset NAME or --config FILE (.yaml or .json)']);
  const parsed = presetConfig(name);
  return E.isLeft(parsed) ? E.left(formatConfigProblems(parsed.left, `--preset ${name}`)) : E.right({ cfg: parsed.right, source: `preset ${name}`, presetName: name });
}

/** A config stored in a checkpoint's metadata, re-validated. */
export function configFromJson(json: unknown, source: string): E.Either<string[], MViTConfig> {
  const parsed = parseConfig(json);
  return E.isLeft(parsed) ? E.left(formatConfigProblems(parsed.left, source)) : E.right(parsed.right);
}

/** Problems that stop a config from training on Moving-MNIST (40 classes, one clip spec). */
export function movingMnistProblems(cfg: MViTConfig, source: string): string[] {
  const out: string[] = [];
  if (cfg.MODEL.NUM_CLASSES !== MOVING_MNIST_CLASSES) {
    out.push(`  MODEL.NUM_CLASSES: is ${cfg.MODEL.NUM_CLASSES}, but the Moving-MNIST task has ${MOVING_MNIST_CLASSES} classes`);
  }
  if (cfg.DATA.TRAIN_CROP_SIZE < 8) out.push(`  DATA.TRAIN_CROP_SIZE: is ${cfg.DATA.TRAIN_CROP_SIZE}; Moving-MNIST clips need at least 8x8 frames`);
  if (cfg.DATA.TEST_CROP_SIZE !== cfg.DATA.TRAIN_CROP_SIZE) {
    out.push(`  DATA.TEST_CROP_SIZE: is ${cfg.DATA.TEST_CROP_SIZE}, but training and test clips are both TRAIN_CROP_SIZE (${cfg.DATA.TRAIN_CROP_SIZE}) here`);
  }
  return out.length > 0 ? [`${source}: cannot train on Moving-MNIST:`, ...out] : [];
}

export const model = (cfg: MViTConfig): MViTModel => buildModel(cfg);

export const MEMORY_FLAG: FlagSpec = {
  name: 'max-memory',
  kind: 'string',
  arg: 'SIZE',
  help: 'refuse a config whose estimated memory exceeds SIZE (e.g. 8GiB, 500MB, 2e9)',
  defaultText: 'the available memory',
};

const UNITS: Record<string, number> = { '': 1, b: 1, k: 1e3, kb: 1e3, kib: 2 ** 10, m: 1e6, mb: 1e6, mib: 2 ** 20, g: 1e9, gb: 1e9, gib: 2 ** 30, t: 1e12, tb: 1e12, tib: 2 ** 40 };

/** '8GiB', '500MB', '2e9', '1.5g': bytes, or null. */
export function parseSize(text: string): number | null {
  const m = /^\s*(\d+(?:\.\d*)?(?:e\d+)?)\s*([a-z]*)\s*$/i.exec(text);
  const unit = m ? UNITS[m[2]!.toLowerCase()] : undefined;
  if (!m || unit === undefined) return null;
  const bytes = Number(m[1]) * unit;
  return Number.isFinite(bytes) && bytes > 0 ? bytes : null;
}

/** Memory this process may use: MemAvailable (os.freemem), and a cgroup limit where one is set. */
function availableMemory(): number {
  const constrained = (process as { constrainedMemory?: () => number | undefined }).constrainedMemory?.() ?? 0;
  const used = process.memoryUsage().rss;
  const cgroup = constrained > 0 && constrained < 2 ** 60 ? Math.max(0, constrained - used) : Infinity;
  return Math.min(freemem(), cgroup);
}

/** --max-memory, or the available memory. A bad SIZE is a usage error. */
export function memoryLimit(args: ParsedArgs, command: string): MemoryLimit {
  const text = getStr(args, 'max-memory');
  if (text === undefined) return { bytes: availableMemory(), source: 'the available memory; --max-memory SIZE raises it' };
  const bytes = parseSize(text);
  if (bytes === null) throw new UsageError([`--max-memory: expected a size such as 8GiB, 500MB or 2e9, got ${JSON.stringify(text)}`], command);
  return { bytes, source: '--max-memory' };
}

/** Refuse, before anything is allocated, a config whose step would not fit (resources.ts). */
export function checkResources(cfg: MViTConfig, opts: EstimateOptions, limit: MemoryLimit, source: string): void {
  const problem = resourceProblem(cfg, opts, limit, source);
  if (problem !== null) throw new CliError([problem]);
}

/** The value, or a CliError of the problems (a list, or a typed error such as CheckpointError that carries one). */
export const unwrap = <A>(e: E.Either<readonly string[] | { readonly problems: readonly string[] }, A>): A => {
  if (E.isLeft(e)) throw new CliError('problems' in e.left ? e.left.problems : (e.left as readonly string[]));
  return e.right;
};

export function formatBytes(n: number): string {
  if (!Number.isFinite(n) || n >= 1024 ** 4) return bytesText(n);
  if (n < 1024) return `${n} B`;
  if (n < 1024 ** 2) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 ** 3) return `${(n / 1024 ** 2).toFixed(2)} MiB`;
  return `${(n / 1024 ** 3).toFixed(2)} GiB`;
}

export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return '?';
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return h > 0 ? `${h}h${String(m).padStart(2, '0')}m` : m > 0 ? `${m}m${String(s % 60).padStart(2, '0')}s` : `${s}s`;
}

/** A plain-text table with right-aligned columns. */
export function table(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: readonly string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}
