/** `revgrad train`: train a Rev-MViT on Moving-MNIST, with checkpoints, resume and an HTML report. */
import { appendFileSync, existsSync, mkdirSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join, relative, resolve } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import { MAX_DEPTH, type MViTConfig } from '../models/mvit/config.ts';
import { paramCount } from '../models/mvit/params-spec.ts';
import { describeValue } from '../io/json.ts';
import { newInterruptFlag, requestInterrupt } from '../tensor/interrupt.ts';
import { CHECKPOINT_FILE, loadCheckpoint, optimizerHyperProblems, previousCheckpointPath, type LoadedCheckpoint } from '../train/checkpoint.ts';
import { MAX_CONSECUTIVE_SKIPS, type NonFiniteRecord } from '../train/loop.ts';
import { METRICS_FILE, readMetrics } from '../train/metrics-file.ts';
import { ADAMW_DEFAULTS } from '../train/optim.ts';
import { renderReport, type MemoryPoint } from '../train/report.ts';
import { scheduleDefaults, scheduleProblems } from '../train/schedule.ts';
import { settingsFromSlowFast, type SolverSettings } from '../train/solver.ts';
import type { SlowFastTree } from '../models/mvit/yaml-config.ts';
import { getBool, getList, getNum, getStr, UsageError, type CommandSpec, type ParsedArgs } from './args.ts';
import {
  capLines,
  checkResources,
  CliError,
  configFromJson,
  CONFIG_FLAGS,
  DEFAULT_PRESET,
  formatBytes,
  MEMORY_FLAG,
  memoryLimit,
  formatDuration,
  model as buildModel,
  movingMnistProblems,
  resolveConfig,
  unwrap,
} from './common.ts';
import { deepen, measureMemoryRow } from './memory.ts';
import { createProgress, nonFiniteLine } from './progress.ts';
import { runTraining, type TrainOutcome } from './train-worker.ts';
import { settingsProblems, type Monitoring, type TrainSettings } from './train-run.ts';

/** Defaults: what `npm start` runs (tuned to finish in under 5 minutes on a 2-core CPU). */
export const TRAIN_DEFAULTS = {
  steps: 900,
  batch: 16,
  lr: 2e-3,
  warmup: 50,
  weightDecay: ADAMW_DEFAULTS.weightDecay,
  clip: 1.0,
  labelSmoothing: 0.1,
  seed: 0,
  evalClips: 256,
  evalBatch: 32,
  reportDepths: [0, 2, 4],
} as const;

export const REPORT_FILE = 'report.html';
/** Clips per step in the report's memory-vs-depth measurement. */
const MEMORY_BATCH = 2;

export const trainSpec: CommandSpec = {
  name: 'train',
  summary: 'train a Rev-MViT on Moving-MNIST (40 classes: digit x direction)',
  usage: 'revgrad train [--preset NAME | --config FILE] [--steps N] [--batch N] [--lr X] [--out DIR] [--resume | --force] ...',
  flags: [
    ...CONFIG_FLAGS.map((f) => (f.name === 'preset' ? { ...f, defaultText: DEFAULT_PRESET } : f)),
    { name: 'steps', kind: 'int', min: 1, arg: 'N', help: 'optimizer steps', defaultText: String(TRAIN_DEFAULTS.steps) },
    { name: 'batch', kind: 'int', min: 1, arg: 'N', help: 'clips per step', defaultText: String(TRAIN_DEFAULTS.batch) },
    { name: 'lr', kind: 'number', min: 0, exclusiveMin: true, arg: 'X', help: 'peak learning rate (cosine schedule)', defaultText: String(TRAIN_DEFAULTS.lr) },
    { name: 'warmup', kind: 'int', min: 0, arg: 'N', help: 'linear warmup steps', defaultText: `${TRAIN_DEFAULTS.warmup} (at most steps/2)` },
    { name: 'weight-decay', kind: 'number', min: 0, arg: 'X', help: 'weight decay (AdamW: decoupled; none on biases, 1-D params, pos/cls/rel-pos)', defaultText: String(TRAIN_DEFAULTS.weightDecay) },
    { name: 'clip', kind: 'number', min: 0, arg: 'X', help: 'max global gradient L2 norm; 0 turns clipping off', defaultText: String(TRAIN_DEFAULTS.clip) },
    { name: 'label-smoothing', kind: 'number', min: 0, max: 0.99, arg: 'X', help: 'cross-entropy label smoothing', defaultText: String(TRAIN_DEFAULTS.labelSmoothing) },
    { name: 'seed', kind: 'int', min: 0, arg: 'N', help: 'seed of every key (init, data, dropout, eval)', defaultText: String(TRAIN_DEFAULTS.seed) },
    { name: 'mode', kind: 'enum', values: ['reversible', 'store'], help: "backward pass: rebuild activations ('reversible') or keep them ('store')", defaultText: 'reversible' },
    { name: 'workers', kind: 'int', min: 1, arg: 'N', help: 'worker threads computing the gradient shards (data parallel); the weights do not depend on it', defaultText: "the machine's cores" },
    { name: 'shards', kind: 'int', min: 1, arg: 'N', help: 'gradient shards per step, summed in a fixed order (part of the run: changes the numbers)', defaultText: 'none: one gradient of the whole batch, the traced step in this thread (the fastest on a few cores)' },
    { name: 'out', kind: 'string', arg: 'DIR', help: 'output directory (metrics.jsonl, checkpoint.safetensors, report.html)', defaultText: 'a new runs/<timestamp>' },
    { name: 'resume', kind: 'bool', help: 'continue the run in --out DIR from its checkpoint (bit-exact)' },
    { name: 'force', kind: 'bool', help: 'overwrite the run in an existing --out DIR' },
    { name: 'eval-every', kind: 'int', min: 0, arg: 'N', help: 'test accuracy every N steps and at the end; 0: only at the end', defaultText: 'steps/5' },
    { name: 'eval-clips', kind: 'int', min: 1, arg: 'N', help: 'held-out test clips per evaluation (fixed keys)', defaultText: String(TRAIN_DEFAULTS.evalClips) },
    { name: 'drift-every', kind: 'int', min: 0, arg: 'N', help: 'reversible reconstruction error every N steps; 0: only at the end', defaultText: 'steps/10' },
    { name: 'ckpt-every', kind: 'int', min: 0, arg: 'N', help: 'checkpoint every N steps; 0: only at the end', defaultText: 'steps/10' },
    { name: 'report-depths', kind: 'int-list', min: 0, arg: 'A,B,..', help: 'extra last-stage blocks measured for the report\'s memory chart', defaultText: TRAIN_DEFAULTS.reportDepths.join(',') },
    { name: 'no-jit', kind: 'bool', help: 'run every op eagerly instead of replaying the traced step (same numbers, slower)' },
    { name: 'no-report', kind: 'bool', help: 'do not write report.html' },
    { name: 'quiet', kind: 'bool', help: 'no progress output' },
    { name: 'on-nan', kind: 'enum', values: ['stop', 'skip'], help: 'a step with a non-finite loss or gradient is never applied: stop the run, or skip its batch', defaultText: 'stop' },
    MEMORY_FLAG,
  ],
  details: [
    'With a PySlowFast YAML config, its SOLVER (BASE_LR, cosine schedule and warmup as fractions of --steps,',
    'OPTIMIZING_METHOD adamw|sgd, WEIGHT_DECAY, ZERO_WD_1D_PARAM, CLIP_GRAD_L2NORM), MIXUP.LABEL_SMOOTH_VALUE and',
    'RNG_SEED are the defaults instead; flags still override them; the fields it does not use are listed.',
    'Every random choice comes from keys derived from --seed and the step number, so a run killed at any',
    'point and continued with --resume ends with the same weights, bit for bit, as an uninterrupted run.',
    'With --resume the run\'s settings come from the checkpoint; flags that would change them are refused.',
    'Each step\'s batch is cut into --shards fixed shards whose gradients are summed in order; --workers threads',
    'compute them, so any --workers gives the same weights bit for bit (--workers is not part of the run).',
    'Ctrl-C stops between two ops and saves the last completed step; a second Ctrl-C quits at once. A step whose loss',
    'or gradients are not finite is never applied (--on-nan).',
  ].join('\n'),
};

function freshRunDir(): string {
  const stamp = new Date().toISOString().replace(/[:.]/g, '-').replace(/-\d\d\dZ$/, 'Z');
  let dir = join('runs', stamp);
  for (let i = 2; existsSync(dir); i++) dir = join('runs', `${stamp}-${i}`);
  return dir;
}

const deepEqual = (a: unknown, b: unknown): boolean => {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Object.keys(a as object);
  const kb = Object.keys(b as object);
  return ka.length === kb.length && ka.every((k) => deepEqual((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]));
};

/**
 * The run's settings: flags over, for a YAML config, its SOLVER/MIXUP/RNG_SEED (src/train/solver.ts),
 * else over the defaults.
 */
function settingsFromFlags(args: ParsedArgs, yaml?: SolverSettings): TrainSettings {
  const steps = getNum(args, 'steps') ?? TRAIN_DEFAULTS.steps;
  const lr = getNum(args, 'lr') ?? yaml?.schedule.baseLr ?? TRAIN_DEFAULTS.lr;
  const schedule = yaml === undefined ? scheduleDefaults(lr, steps) : { ...yaml.schedule, baseLr: lr };
  const warmup = getNum(args, 'warmup') ?? (yaml === undefined ? Math.min(TRAIN_DEFAULTS.warmup, Math.floor(steps / 2)) : schedule.warmupSteps);
  const clip = getNum(args, 'clip') ?? (yaml === undefined ? TRAIN_DEFAULTS.clip : (yaml.clipNorm ?? 0));
  const optimizer = yaml?.optimizer ?? { beta1: ADAMW_DEFAULTS.beta1, beta2: ADAMW_DEFAULTS.beta2, eps: ADAMW_DEFAULTS.eps, weightDecay: TRAIN_DEFAULTS.weightDecay };
  return {
    seed: getNum(args, 'seed') ?? yaml?.seed ?? TRAIN_DEFAULTS.seed,
    steps,
    batchSize: getNum(args, 'batch') ?? TRAIN_DEFAULTS.batch,
    mode: (getStr(args, 'mode') ?? 'reversible') as TrainSettings['mode'],
    schedule: { ...schedule, warmupSteps: warmup },
    optimizer: { ...optimizer, weightDecay: getNum(args, 'weight-decay') ?? optimizer.weightDecay },
    clipNorm: clip === 0 ? null : clip,
    labelSmoothing: getNum(args, 'label-smoothing') ?? yaml?.labelSmoothing ?? TRAIN_DEFAULTS.labelSmoothing,
    // Unsharded by default: on 2 cores the jitted whole step beats 4 shards on 2 workers (npm start 66 s vs 3m51s).
    ...(getNum(args, 'shards') === undefined ? {} : { shards: getNum(args, 'shards') }),
    ...(yaml === undefined ? {} : { zeroWd1dParam: yaml.zeroWd1dParam }),
  };
}

/** SOLVER/MIXUP of a YAML config for a run of the flags' steps, and the one line naming what it ignores. */
function yamlSolver(args: ParsedArgs, tree: SlowFastTree | undefined, source: string): { solver?: SolverSettings; note?: string } {
  if (tree === undefined) return {};
  const read = settingsFromSlowFast(tree, getNum(args, 'steps') ?? TRAIN_DEFAULTS.steps);
  if (E.isLeft(read)) throw new CliError([`${source}: the trainer cannot follow its solver:`, ...read.left.map((p) => `  ${p}`)]);
  const { settings, ignored } = read.right;
  return { solver: settings, note: ignored.length > 0 ? `${source}: not used by revgrad train: ${ignored.join(', ')}` : undefined };
}

/** Settings as stored in a checkpoint, checked field by field (types too: a string "0.1" is not a number). */
function settingsFromCheckpoint(training: Record<string, unknown>, metaSeed: number, path: string): TrainSettings {
  const s = training as unknown as TrainSettings;
  const num = (v: unknown) => typeof v === 'number' && Number.isFinite(v);
  const problems: string[] = [];
  if (!(Number.isSafeInteger(s.seed) && s.seed >= 0)) problems.push(`seed must be a non-negative integer, got ${describeValue(s.seed, 40)}`);
  else if (s.seed !== metaSeed) problems.push(`seed ${s.seed} differs from the checkpoint's seed ${metaSeed}`);
  const sched = s.schedule as unknown as Record<string, unknown> | undefined;
  if (typeof sched !== 'object' || sched === null) problems.push('no schedule');
  else {
    for (const k of ['baseLr', 'totalSteps', 'warmupSteps', 'warmupStartLr', 'endLr']) if (!num(sched[k])) problems.push(`schedule.${k} must be a number, got ${describeValue(sched[k], 40)}`);
    if (typeof sched.cosineAfterWarmup !== 'boolean') problems.push(`schedule.cosineAfterWarmup must be true or false, got ${describeValue(sched.cosineAfterWarmup, 40)}`);
    if (problems.length === 0) problems.push(...scheduleProblems(s.schedule));
  }
  const o = s.optimizer as unknown as Record<string, unknown> | undefined;
  if (typeof o !== 'object' || o === null) problems.push('no optimizer settings');
  else problems.push(...optimizerHyperProblems(o).map((p) => `optimizer.${p}`));
  if (s.clipNorm !== null && !num(s.clipNorm)) problems.push(`clipNorm must be a number or null, got ${describeValue(s.clipNorm, 40)}`);
  if (!num(s.labelSmoothing)) problems.push(`labelSmoothing must be a number, got ${describeValue(s.labelSmoothing, 40)}`);
  problems.push(...settingsProblems(s).filter((p) => !p.startsWith('seed')));
  if (problems.length > 0) throw new CliError([`${path}: the stored training settings are not usable:`, ...capLines(problems.map((p) => `  ${p}`))]);
  return s;
}

/** Written when a run stops on a non-finite step: what went non-finite, and where the last good state is. */
export const NONFINITE_FILE = 'nonfinite.json';
const OUR_FILES = [CHECKPOINT_FILE, previousCheckpointPath(CHECKPOINT_FILE), METRICS_FILE, REPORT_FILE, NONFINITE_FILE];
/** Where --force puts the run it replaces until the new run has written its first checkpoint. */
export const SET_ASIDE_DIR = '.replaced-by-force';
/** Temporary files of an atomic checkpoint write: `.<file>.<pid>.<12 hex>.tmp` (src/io/safetensors.ts). */
const TEMP_FILE = /^\.(.+)\.(\d+)\.[0-9a-f]{12}\.tmp$/;

const isAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
};

/** Remove the temporary files that writers killed mid-write (kill -9, power loss) left behind. */
function removeStaleTempFiles(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir).filter((f) => {
    const m = TEMP_FILE.exec(f);
    if (m === null || !OUR_FILES.includes(m[1]!) || isAlive(Number(m[2]))) return false;
    rmSync(join(dir, f), { force: true });
    return true;
  });
}

/**
 * A --force run that was stopped before its first checkpoint left the replaced run set aside: put it
 * back (the new run's partial files go). Once the new run has a checkpoint, the set-aside run is removed.
 */
function settleSetAside(dir: string): string | null {
  const aside = join(dir, SET_ASIDE_DIR);
  if (!existsSync(aside)) return null;
  if (existsSync(join(dir, CHECKPOINT_FILE))) {
    rmSync(aside, { recursive: true, force: true });
    return null;
  }
  for (const f of OUR_FILES) rmSync(join(dir, f), { force: true });
  for (const f of readdirSync(aside)) renameSync(join(aside, f), join(dir, f));
  rmSync(aside, { recursive: true, force: true });
  return `restored the run that an interrupted --force had set aside in ${aside} (the new run never reached its first checkpoint)`;
}

/** Create DIR if needed and prove it writable with a probe file, so a read-only place fails before any work. */
function checkWritable(dir: string): void {
  const probe = join(dir, `.revgrad-write-test.${process.pid}`);
  try {
    mkdirSync(dir, { recursive: true });
    writeFileSync(probe, '');
    rmSync(probe);
  } catch (e) {
    try {
      rmSync(probe, { force: true });
    } catch {
      // Nothing was created.
    }
    throw new CliError([`--out ${dir}: cannot write there (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); choose another --out`]);
  }
}

/** What a run will train, decided before the output directory is touched. */
interface RunPlan {
  readonly cfg: MViTConfig;
  /** 'preset NAME', the config file, or the checkpoint and its step. */
  readonly source: string;
  readonly settings: TrainSettings;
  /** What the checkpoint stores as the config (a YAML run keeps its solver sections beside the model's). */
  readonly storedConfig: unknown;
  readonly resumeFrom?: LoadedCheckpoint;
  /** Our files of an earlier run that --force replaces. */
  readonly replacing: readonly string[];
  readonly note?: string;
}

/** --resume: the run stored in the checkpoint, exactly; flags may repeat its settings but not change them. */
function resumePlan(args: ParsedArgs, outDir: string, ckptPath: string): RunPlan {
  const given = (f: string) => args.flags.has(f);
  if (!existsSync(ckptPath)) {
    const stoppedEarly = existsSync(join(outDir, METRICS_FILE));
    throw new CliError([
      stoppedEarly
        ? `--resume: ${outDir} has no ${CHECKPOINT_FILE}: the run was stopped before its first checkpoint, so there is nothing to continue; start it over with --force`
        : `--resume: ${outDir} has no ${CHECKPOINT_FILE} to continue from`,
    ]);
  }
  const loaded = loadCheckpoint(ckptPath);
  if (E.isLeft(loaded)) {
    const previous = previousCheckpointPath(ckptPath);
    const hint = existsSync(previous) ? [`${previous} holds the checkpoint before it; to continue from there: mv ${previous} ${ckptPath}`] : [];
    throw new CliError([...loaded.left.problems, ...hint]);
  }
  const ck = loaded.right;
  const cfg = unwrap(configFromJson(ck.meta.config, `${ckptPath} (stored config)`));
  const settings = settingsFromCheckpoint(ck.meta.training, ck.meta.seed, ckptPath);
  if (ck.meta.step > settings.steps) {
    throw new CliError([`${ckptPath}: the checkpoint is at step ${ck.meta.step}, beyond the ${settings.steps} steps of its run; it cannot be resumed`]);
  }
  // Flags that would change the run must agree with the checkpoint.
  const conflicts: string[] = [];
  if (given('preset') || given('config')) {
    const r = resolveConfig(args);
    if (E.isLeft(r)) throw new CliError(r.left);
    if (!deepEqual(r.right.cfg, cfg)) conflicts.push(`${given('preset') ? '--preset' : '--config'}: differs from the config stored in the checkpoint`);
  }
  const asGiven = settingsFromFlags(args);
  const check = (flag: string, a: unknown, b: unknown) => {
    if (given(flag) && !deepEqual(a, b)) conflicts.push(`--${flag} ${JSON.stringify(a)} differs from the checkpoint's ${JSON.stringify(b)}`);
  };
  check('steps', asGiven.steps, settings.steps);
  check('batch', asGiven.batchSize, settings.batchSize);
  check('lr', asGiven.schedule.baseLr, settings.schedule.baseLr);
  check('warmup', asGiven.schedule.warmupSteps, settings.schedule.warmupSteps);
  check('weight-decay', asGiven.optimizer.weightDecay, settings.optimizer.weightDecay);
  check('clip', asGiven.clipNorm, settings.clipNorm);
  check('label-smoothing', asGiven.labelSmoothing, settings.labelSmoothing);
  check('seed', asGiven.seed, settings.seed);
  check('mode', asGiven.mode, settings.mode);
  check('shards', asGiven.shards, settings.shards);
  if (conflicts.length > 0) {
    throw new CliError(['--resume continues the stored run exactly, so its settings cannot change:', ...conflicts.map((c) => `  ${c}`)]);
  }
  return { cfg, source: `${ckptPath} at step ${ck.meta.step}`, settings, storedConfig: ck.meta.config, resumeFrom: ck, replacing: [] };
}

/** A new run from --preset/--config and the flags; an earlier run in --out is replaced only with --force. */
function freshPlan(args: ParsedArgs, outDir: string, force: boolean): RunPlan {
  const resolved = unwrap(resolveConfig(args));
  const { cfg, source } = resolved;
  const yaml = yamlSolver(args, resolved.tree, source);
  const settings = settingsFromFlags(args, yaml.solver);
  const problems = [...settingsProblems(settings), ...scheduleProblems(settings.schedule)];
  if (settings.schedule.warmupSteps >= settings.steps) problems.push(`--warmup ${settings.schedule.warmupSteps} must be less than --steps ${settings.steps}`);
  if (problems.length > 0) throw new UsageError(problems, 'train');
  const replacing = existsSync(outDir) ? readdirSync(outDir).filter((f) => OUR_FILES.includes(f)) : [];
  if (replacing.length > 0 && !force) {
    throw new CliError([
      replacing.includes(CHECKPOINT_FILE)
        ? `--out ${outDir} already holds a run (${replacing.join(', ')}); nothing is overwritten. Use --resume to continue it, --force to replace it, or another --out.`
        : `--out ${outDir} holds a run that was stopped before its first checkpoint (${replacing.join(', ')}, no ${CHECKPOINT_FILE}): there is nothing to resume; use --force to start it over, or another --out.`,
    ]);
  }
  // A YAML run keeps its solver sections beside the model config, for `revgrad export`.
  const storedConfig = resolved.tree === undefined ? cfg : { ...cfg, SOLVER: resolved.tree.SOLVER ?? {}, MIXUP: resolved.tree.MIXUP ?? {} };
  return { cfg, source, settings, storedConfig, replacing, note: yaml.note };
}

/** The task, the memory (of the run and of the report's deeper copies) and the permissions, before anything is written. */
function checkRunFits(plan: RunPlan, limit: ReturnType<typeof memoryLimit>, reportDepths: readonly number[] | null, outDir: string): void {
  const { cfg, source, settings } = plan;
  const mm = movingMnistProblems(cfg, source);
  if (mm.length > 0) throw new CliError(mm);
  checkResources(cfg, { batch: settings.batchSize, purpose: 'train', mode: settings.mode }, limit, source);
  if (reportDepths !== null) {
    const deepest = Math.max(...reportDepths);
    if (cfg.MVIT.DEPTH + deepest > MAX_DEPTH) throw new CliError([`--report-depths ${deepest}: ${source} has ${cfg.MVIT.DEPTH} layers, and more than ${MAX_DEPTH} in all are not accepted`]);
    checkResources(deepen(cfg, deepest), { batch: MEMORY_BATCH, purpose: 'train', mode: 'store' }, limit, `${source} with ${deepest} extra blocks (--report-depths)`);
  }
  checkWritable(outDir);
}

/**
 * --force: the old run is set aside, and removed once the new one has written its first checkpoint
 * (`drop`); a run that ends before that gets the old one back (`restore`).
 */
function setAside(outDir: string, replacing: readonly string[]): { drop(): void; restore(): void } {
  const aside = join(outDir, SET_ASIDE_DIR);
  if (replacing.length > 0) {
    mkdirSync(aside, { recursive: true });
    for (const f of replacing) renameSync(join(outDir, f), join(aside, f));
  }
  return {
    drop: () => {
      if (replacing.length > 0 && existsSync(aside)) rmSync(aside, { recursive: true, force: true });
    },
    restore: () => {
      if (replacing.length > 0 && existsSync(aside) && !existsSync(join(outDir, CHECKPOINT_FILE))) settleSetAside(outDir);
    },
  };
}

/** How often the loop evaluates, measures drift and checkpoints (0 = only at the end), and the eval batches. */
function monitoringFor(args: ParsedArgs, steps: number, cfg: MViTConfig): Monitoring {
  const every = (flag: string, fallback: number) => {
    const v = getNum(args, flag);
    return v === undefined ? fallback : v === 0 ? steps : v;
  };
  const evalClips = getNum(args, 'eval-clips') ?? TRAIN_DEFAULTS.evalClips;
  const evalBatchSize = Math.min(TRAIN_DEFAULTS.evalBatch, evalClips);
  return {
    evalEvery: every('eval-every', Math.max(1, Math.round(steps / 5))),
    evalBatches: Math.ceil(evalClips / evalBatchSize),
    evalBatchSize,
    driftEvery: every('drift-every', Math.max(1, Math.round(steps / 10))),
    ckptEvery: every('ckpt-every', Math.max(1, Math.round(steps / 10))),
    headAct: cfg.MODEL.HEAD_ACT,
  };
}

/** The last non-finite record and how many steps were skipped, as the run's records pass. */
interface NonFiniteSeen {
  last?: NonFiniteRecord;
  skipped: number;
}

/** Train in the worker with a progress bar; the first signal stops the run between two ops (the last completed step is saved), the second quits. */
async function trainWithSignals(
  args: ParsedArgs,
  plan: RunPlan,
  monitoring: Monitoring,
  outDir: string,
  onNonFinite: 'stop' | 'skip',
  onCheckpoint: () => void,
  seen: NonFiniteSeen,
): Promise<TrainOutcome> {
  const { cfg, settings, resumeFrom } = plan;
  const flag = newInterruptFlag();
  let signals = 0;
  const onSignal = () => {
    if (++signals > 1) process.exit(130);
    requestInterrupt(flag);
    progress.log('stopping (the last completed step will be saved); press Ctrl-C again to quit now');
  };
  const progress = createProgress(settings.steps, resumeFrom?.meta.step ?? 0, { quiet: getBool(args, 'quiet') });
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    return await runTraining(
      {
        cfg,
        storedConfig: plan.storedConfig,
        settings,
        monitoring,
        outDir,
        resumePath: resumeFrom === undefined ? null : join(outDir, CHECKPOINT_FILE),
        onNonFinite,
        jit: getBool(args, 'no-jit') ? false : undefined,
        workers: getNum(args, 'workers') ?? availableParallelism(),
        // Workers build the model from its module (sources .ts in development, .js when compiled).
        modelFactory: { module: new URL(`../models/mvit/model.${import.meta.url.endsWith('.ts') ? 'ts' : 'js'}`, import.meta.url).href, exportName: 'buildModel', args: [cfg] },
      },
      flag,
      (r) => {
        if (r.type === 'checkpoint') onCheckpoint();
        if (r.type === 'nonfinite') {
          seen.last = r;
          if (r.action === 'skipped') seen.skipped++;
        }
        progress.onRecord(r);
      },
    );
  } finally {
    progress.stop();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

/** A run stopped on a non-finite step: nonfinite.json says what went non-finite and where the last good state is. */
function nonFiniteStop(outDir: string, record: NonFiniteRecord, saved: number | undefined, kept: string, onNonFinite: 'stop' | 'skip', settings: TrainSettings): CliError {
  const diagnostic = join(outDir, NONFINITE_FILE);
  // JSON has no NaN or Infinity: non-finite numbers are written as strings.
  const finiteOrText = (_k: string, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? String(v) : v);
  writeFileSync(diagnostic, JSON.stringify({ ...record, lastGoodCheckpoint: saved ?? null, onNonFinite, settings }, finiteOrText, 1) + '\n');
  return new CliError([
    `${nonFiniteLine(record)}, and the run stopped (--on-nan ${onNonFinite}${onNonFinite === 'skip' ? `: ${record.what === 'parameters' ? 'the parameters themselves are not finite' : `${MAX_CONSECUTIVE_SKIPS} steps in a row`}` : ''}).`,
    `${kept}; what went non-finite is in ${diagnostic}.`,
  ]);
}

/** The finished run's numbers, from metrics.jsonl. */
function runSummary(outDir: string) {
  const records = readMetrics(join(outDir, METRICS_FILE));
  const lastEval = [...records].reverse().find((r) => r.type === 'eval') as { testAcc?: number; step?: number } | undefined;
  const trainRs = records.filter((r) => r.type === 'train') as { stepMs: number; clipsPerSec: number; peakBytes: number; acc: number }[];
  const meanMs = trainRs.reduce((s, r) => s + r.stepMs, 0) / Math.max(1, trainRs.length);
  const peak = trainRs.reduce((m, r) => Math.max(m, r.peakBytes), 0);
  return { lastEval, meanMs, peak };
}

/** report.html: the run's curves, and memory against depth measured now (appended to metrics.jsonl). */
function writeRunReport(args: ParsedArgs, plan: RunPlan, outDir: string, depths: readonly number[], params: string, summary: ReturnType<typeof runSummary>): string {
  const { cfg, source, settings } = plan;
  const { lastEval, meanMs, peak } = summary;
  let memory: MemoryPoint[] | null = null;
  let memoryNote: string | undefined;
  try {
    memory = depths.map((extra) => measureMemoryRow(cfg, extra, MEMORY_BATCH, settings.seed));
    appendFileSync(join(outDir, METRICS_FILE), JSON.stringify({ type: 'memory', batch: MEMORY_BATCH, rows: memory }) + '\n');
  } catch (e) {
    memoryNote = `Memory vs depth could not be measured: ${(e as Error).message}`;
  }
  const evalClips = getNum(args, 'eval-clips') ?? TRAIN_DEFAULTS.evalClips;
  const html = renderReport({
    title: `revgrad training run: ${source}`,
    summary: [
      ['config', source],
      ['parameters', params],
      ['steps x batch', `${settings.steps} x ${settings.batchSize} clips (seed ${settings.seed}, mode ${settings.mode})`],
      ['optimizer', `${settings.optimizer.name === 'sgd' ? 'SGD' : 'AdamW'} lr ${settings.schedule.baseLr}, warmup ${settings.schedule.warmupSteps}, wd ${settings.optimizer.weightDecay}, clip ${settings.clipNorm ?? 'off'}, label smoothing ${settings.labelSmoothing}`],
      ['final test accuracy', lastEval?.testAcc !== undefined ? `${(100 * lastEval.testAcc).toFixed(1)}% (step ${lastEval.step}, ${evalClips} clips)` : '-'],
      ['speed', `${meanMs.toFixed(0)} ms/step, ${((settings.batchSize * 1000) / meanMs).toFixed(1)} clips/s`],
      ['peak memory (one step)', formatBytes(peak)],
      ['checkpoint', relative(outDir, join(outDir, CHECKPOINT_FILE))],
    ],
    records: readMetrics(join(outDir, METRICS_FILE)),
    memory,
    memoryNote,
  });
  const reportPath = join(outDir, REPORT_FILE);
  writeFileSync(reportPath, html);
  return reportPath;
}

export async function runTrain(args: ParsedArgs): Promise<number> {
  const resume = getBool(args, 'resume');
  const force = getBool(args, 'force');
  const usage: string[] = [];
  if (resume && force) usage.push('give either --resume or --force, not both');
  if (resume && !args.flags.has('out')) usage.push('--resume needs --out DIR (the run to continue)');
  if (usage.length > 0) throw new UsageError(usage, 'train');
  const limit = memoryLimit(args, 'train');

  const outDir = getStr(args, 'out') ?? freshRunDir();
  const ckptPath = join(outDir, CHECKPOINT_FILE);
  if (existsSync(outDir) && !statSync(outDir).isDirectory()) throw new CliError([`--out ${outDir}: exists and is not a directory`]);
  const quiet = getBool(args, 'quiet');
  const say = (line: string) => {
    if (!quiet) process.stdout.write(line + '\n');
  };
  // Leftovers of an interrupted run are settled first: they decide what the directory holds.
  let restored: string | null = null;
  try {
    restored = existsSync(outDir) ? settleSetAside(outDir) : null;
  } catch {
    // A directory we cannot change: checkWritable below says so.
  }
  // Notices about the user's files are printed even with --quiet.
  if (restored !== null) process.stdout.write(restored + '\n');

  const plan = resume ? resumePlan(args, outDir, ckptPath) : freshPlan(args, outDir, force);
  const { cfg, source, settings, resumeFrom } = plan;
  const depths = getList(args, 'report-depths') ?? [...TRAIN_DEFAULTS.reportDepths];
  // The report measures deeper copies of the model: they must fit too.
  const reportDepths = getBool(args, 'no-report') ? null : depths;
  checkRunFits(plan, limit, reportDepths, outDir);
  const stale = removeStaleTempFiles(outDir);
  if (stale.length > 0) process.stdout.write(`removed ${stale.length} temporary file${stale.length === 1 ? '' : 's'} of an interrupted checkpoint write: ${stale.join(', ')}\n`);
  const aside = setAside(outDir, plan.replacing);
  const steps = settings.steps;
  if (resumeFrom !== undefined && resumeFrom.meta.step === steps) say(`the run in ${outDir} is already complete (step ${steps} of ${steps}); nothing to train`);

  if (plan.note !== undefined) say(plan.note);
  const params = paramCount(buildModel(cfg).specs).toLocaleString('en-US');
  say(
    `${resumeFrom ? 'resuming' : 'training'} ${source}: ${params} params, ` +
      `${steps} steps x ${settings.batchSize} clips, lr ${settings.schedule.baseLr}, mode ${settings.mode}, seed ${settings.seed} -> ${outDir}`,
  );
  const onNonFinite = (getStr(args, 'on-nan') ?? 'stop') as 'stop' | 'skip';
  const seen: NonFiniteSeen = { skipped: 0 };
  const t0 = performance.now();
  let outcome: TrainOutcome;
  try {
    outcome = await trainWithSignals(args, plan, monitoringFor(args, steps, cfg), outDir, onNonFinite, aside.drop, seen);
  } finally {
    aside.restore();
  }
  const seconds = (performance.now() - t0) / 1000;
  const saved = outcome.lastCheckpoint ?? (existsSync(ckptPath) ? resumeFrom?.meta.step : undefined);
  const kept = saved !== undefined ? `${ckptPath} holds the last good state (step ${saved})` : 'no checkpoint was written';
  if (outcome.stopped === 'nonfinite' && seen.last !== undefined) throw nonFiniteStop(outDir, seen.last, saved, kept, onNonFinite, settings);
  if (outcome.stopped !== undefined) {
    say(`stopped at step ${outcome.step}/${steps}; ${kept}.${saved !== undefined ? ` Continue with: revgrad train --out ${outDir} --resume` : ''}`);
    return 130;
  }
  const summary = runSummary(outDir);
  const { lastEval, meanMs, peak } = summary;
  say(
    `done: ${steps} steps in ${formatDuration(seconds)} (this session), ${meanMs.toFixed(0)} ms/step, ` +
      `${((settings.batchSize * 1000) / meanMs).toFixed(1)} clips/s, peak ${formatBytes(peak)}` +
      (lastEval?.testAcc !== undefined ? `, test accuracy ${(100 * lastEval.testAcc).toFixed(1)}%` : '') +
      (seen.skipped > 0 ? `; ${seen.skipped} step${seen.skipped === 1 ? ' was' : 's were'} skipped (non-finite, --on-nan skip)` : ''),
  );
  say(`checkpoint: ${ckptPath}`);
  if (reportDepths !== null) say(`report: ${resolve(writeRunReport(args, plan, outDir, reportDepths, params, summary))}`);
  return 0;
}
