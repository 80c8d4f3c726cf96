/** `revgrad train`: train a Rev-MViT on Moving-MNIST, with checkpoints, resume and an HTML report. */
import { appendFileSync, existsSync, mkdirSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join, relative, resolve } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import type { MViTConfig } from '../models/mvit/config.ts';
import { paramCount } from '../models/mvit/params-spec.ts';
import { CHECKPOINT_FILE, loadCheckpoint } from '../train/checkpoint.ts';
import { METRICS_FILE, readMetrics } from '../train/metrics-file.ts';
import { ADAMW_DEFAULTS } from '../train/optim.ts';
import { renderReport, type MemoryPoint } from '../train/report.ts';
import { scheduleDefaults, scheduleProblems } from '../train/schedule.ts';
import { settingsFromSlowFast, type SolverSettings } from '../train/solver.ts';
import type { SlowFastTree } from '../models/mvit/yaml-config.ts';
import { getBool, getList, getNum, getStr, UsageError, type CommandSpec, type ParsedArgs } from './args.ts';
import {
  CliError,
  configFromJson,
  CONFIG_FLAGS,
  DEFAULT_PRESET,
  formatBytes,
  formatDuration,
  model as buildModel,
  movingMnistProblems,
  resolveConfig,
  unwrap,
} from './common.ts';
import { measureMemoryRow } from './memory.ts';
import { createProgress } from './progress.ts';
import { movingMnistBatches } from '../data/moving-mnist.ts';
import { runMovingMnist, settingsProblems, type Monitoring, type TrainSettings } from './train-run.ts';

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
  /** Gradient shards per step (at most the batch size): 1, 2 and 4 workers all divide them. */
  shards: 4,
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
    { name: 'shards', kind: 'int', min: 1, arg: 'N', help: 'gradient shards per step, summed in a fixed order (part of the run: changes the numbers)', defaultText: `${TRAIN_DEFAULTS.shards} (at most the batch)` },
    { name: 'out', kind: 'string', arg: 'DIR', help: 'output directory (metrics.jsonl, checkpoint.safetensors, report.html)', defaultText: 'a new runs/<timestamp>' },
    { name: 'resume', kind: 'bool', help: 'continue the run in --out DIR from its checkpoint (bit-exact)' },
    { name: 'force', kind: 'bool', help: 'overwrite the run in an existing --out DIR' },
    { name: 'eval-every', kind: 'int', min: 0, arg: 'N', help: 'test accuracy every N steps and at the end; 0: only at the end', defaultText: 'steps/5' },
    { name: 'eval-clips', kind: 'int', min: 1, arg: 'N', help: 'held-out test clips per evaluation (fixed keys)', defaultText: String(TRAIN_DEFAULTS.evalClips) },
    { name: 'drift-every', kind: 'int', min: 0, arg: 'N', help: 'reversible reconstruction error every N steps; 0: only at the end', defaultText: 'steps/10' },
    { name: 'ckpt-every', kind: 'int', min: 0, arg: 'N', help: 'checkpoint every N steps; 0: only at the end', defaultText: 'steps/10' },
    { name: 'report-depths', kind: 'int-list', min: 0, arg: 'A,B,..', help: 'extra last-stage blocks measured for the report\'s memory chart', defaultText: TRAIN_DEFAULTS.reportDepths.join(',') },
    { name: 'no-report', kind: 'bool', help: 'do not write report.html' },
    { name: 'quiet', kind: 'bool', help: 'no progress output' },
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
    'Ctrl-C stops after the current step and writes a checkpoint.',
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
    shards: getNum(args, 'shards') ?? Math.min(TRAIN_DEFAULTS.shards, getNum(args, 'batch') ?? TRAIN_DEFAULTS.batch),
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

/** Settings as stored in a checkpoint, checked. */
function settingsFromCheckpoint(training: Record<string, unknown>, path: string): TrainSettings {
  const s = training as unknown as TrainSettings;
  const problems = [
    ...(typeof s.schedule === 'object' && s.schedule !== null ? scheduleProblems(s.schedule) : ['no schedule']),
    ...(typeof s.optimizer === 'object' && s.optimizer !== null ? [] : ['no optimizer settings']),
    ...settingsProblems(s),
  ];
  if (problems.length > 0) throw new CliError([`${path}: the stored training settings are not usable:`, ...problems.map((p) => `  ${p}`)]);
  return s;
}

const OUR_FILES = [CHECKPOINT_FILE, METRICS_FILE, REPORT_FILE];

export async function runTrain(args: ParsedArgs): Promise<number> {
  const resume = getBool(args, 'resume');
  const force = getBool(args, 'force');
  const given = (f: string) => args.flags.has(f);
  const usage: string[] = [];
  if (resume && force) usage.push('give either --resume or --force, not both');
  if (resume && !given('out')) usage.push('--resume needs --out DIR (the run to continue)');
  if (usage.length > 0) throw new UsageError(usage, 'train');

  const outDir = getStr(args, 'out') ?? freshRunDir();
  const ckptPath = join(outDir, CHECKPOINT_FILE);
  if (existsSync(outDir) && !statSync(outDir).isDirectory()) throw new CliError([`--out ${outDir}: exists and is not a directory`]);

  let cfg: MViTConfig;
  let source: string;
  let settings: TrainSettings;
  let resumeFrom: ReturnType<typeof loadCheckpoint> extends E.Either<unknown, infer R> ? R | undefined : never;
  let yamlNote: string | undefined;
  let storedConfig: unknown;
  if (resume) {
    if (!existsSync(ckptPath)) throw new CliError([`--resume: ${outDir} has no ${CHECKPOINT_FILE} to continue from`]);
    const ck = unwrap(loadCheckpoint(ckptPath));
    cfg = unwrap(configFromJson(ck.meta.config, `${ckptPath} (stored config)`));
    storedConfig = ck.meta.config;
    settings = settingsFromCheckpoint(ck.meta.training, ckptPath);
    source = `${ckptPath} at step ${ck.meta.step}`;
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
    resumeFrom = ck;
  } else {
    const resolved = unwrap(resolveConfig(args));
    cfg = resolved.cfg;
    source = resolved.source;
    const yaml = yamlSolver(args, resolved.tree, resolved.source);
    settings = settingsFromFlags(args, yaml.solver);
    yamlNote = yaml.note;
    // A YAML run keeps its solver sections beside the model config, for `revgrad export`.
    if (resolved.tree !== undefined) storedConfig = { ...cfg, SOLVER: resolved.tree.SOLVER ?? {}, MIXUP: resolved.tree.MIXUP ?? {} };
    const problems = [...settingsProblems(settings), ...scheduleProblems(settings.schedule)];
    if (settings.schedule.warmupSteps >= settings.steps) problems.push(`--warmup ${settings.schedule.warmupSteps} must be less than --steps ${settings.steps}`);
    if (problems.length > 0) throw new UsageError(problems, 'train');
    if (existsSync(outDir)) {
      const ours = readdirSync(outDir).filter((f) => OUR_FILES.includes(f));
      if (ours.length > 0 && !force) {
        throw new CliError([
          `--out ${outDir} already holds a run (${ours.join(', ')}); nothing is overwritten.`,
          '  Use --resume to continue it, --force to replace it, or another --out.',
        ]);
      }
      if (force) for (const f of ours) rmSync(join(outDir, f));
    }
    resumeFrom = undefined;
  }
  const mm = movingMnistProblems(cfg, source);
  if (mm.length > 0) throw new CliError(mm);

  const steps = settings.steps;
  const every = (flag: string, fallback: number) => {
    const v = getNum(args, flag);
    return v === undefined ? fallback : v === 0 ? steps : v;
  };
  const evalClips = getNum(args, 'eval-clips') ?? TRAIN_DEFAULTS.evalClips;
  const evalBatchSize = Math.min(TRAIN_DEFAULTS.evalBatch, evalClips);
  const monitoring: Monitoring = {
    evalEvery: every('eval-every', Math.max(1, Math.round(steps / 5))),
    evalBatches: Math.ceil(evalClips / evalBatchSize),
    evalBatchSize,
    driftEvery: every('drift-every', Math.max(1, Math.round(steps / 10))),
    ckptEvery: every('ckpt-every', Math.max(1, Math.round(steps / 10))),
    headAct: cfg.MODEL.HEAD_ACT,
  };

  const model = buildModel(cfg);
  const quiet = getBool(args, 'quiet');
  const say = (line: string) => {
    if (!quiet) process.stdout.write(line + '\n');
  };
  mkdirSync(outDir, { recursive: true });
  const start = resumeFrom?.meta.step ?? 0;
  if (yamlNote !== undefined) say(yamlNote);
  say(
    `${resumeFrom ? 'resuming' : 'training'} ${source}: ${paramCount(model.specs).toLocaleString('en-US')} params, ` +
      `${steps} steps x ${settings.batchSize} clips, lr ${settings.schedule.baseLr}, mode ${settings.mode}, seed ${settings.seed} -> ${outDir}`,
  );
  let stopRequested = false;
  const onSignal = () => {
    if (stopRequested) process.exit(130);
    stopRequested = true;
    progress.log('stopping after this step (a checkpoint will be written); press Ctrl-C again to quit now');
  };
  const progress = createProgress(steps, start, { quiet });
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const t0 = performance.now();
  let result;
  try {
    result = await runMovingMnist({
      model,
      batches: movingMnistBatches(cfg),
      settings,
      monitoring,
      config: storedConfig ?? cfg,
      workers: getNum(args, 'workers') ?? availableParallelism(),
      // Workers build the model from its module (sources .ts in development, .js when compiled).
      modelFactory: { module: new URL(`../models/mvit/model.${import.meta.url.endsWith('.ts') ? 'ts' : 'js'}`, import.meta.url).href, exportName: 'buildModel', args: [cfg] },
      outDir,
      resume: resumeFrom,
      onRecord: (r) => progress.onRecord(r),
      shouldStop: () => stopRequested,
    });
  } finally {
    progress.stop();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  const seconds = (performance.now() - t0) / 1000;
  if (result.step < steps) {
    say(`stopped at step ${result.step}/${steps}; checkpoint ${ckptPath}. Continue with: revgrad train --out ${outDir} --resume`);
    return 130;
  }
  const records = readMetrics(join(outDir, METRICS_FILE));
  const lastEval = [...records].reverse().find((r) => r.type === 'eval') as { testAcc?: number; step?: number } | undefined;
  const trainRs = records.filter((r) => r.type === 'train') as { stepMs: number; clipsPerSec: number; peakBytes: number; acc: number }[];
  const meanMs = trainRs.reduce((s, r) => s + r.stepMs, 0) / Math.max(1, trainRs.length);
  const peak = trainRs.reduce((m, r) => Math.max(m, r.peakBytes), 0);
  say(
    `done: ${steps} steps in ${formatDuration(seconds)} (this session), ${meanMs.toFixed(0)} ms/step, ` +
      `${((settings.batchSize * 1000) / meanMs).toFixed(1)} clips/s, peak ${formatBytes(peak)}` +
      (lastEval?.testAcc !== undefined ? `, test accuracy ${(100 * lastEval.testAcc).toFixed(1)}%` : ''),
  );
  say(`checkpoint: ${ckptPath}`);

  if (!getBool(args, 'no-report')) {
    const depths = getList(args, 'report-depths') ?? [...TRAIN_DEFAULTS.reportDepths];
    let memory: MemoryPoint[] | null = null;
    let memoryNote: string | undefined;
    try {
      memory = depths.map((extra) => measureMemoryRow(cfg, extra, MEMORY_BATCH, settings.seed));
      appendFileSync(join(outDir, METRICS_FILE), JSON.stringify({ type: 'memory', batch: MEMORY_BATCH, rows: memory }) + '\n');
    } catch (e) {
      memoryNote = `Memory vs depth could not be measured: ${(e as Error).message}`;
    }
    const records = readMetrics(join(outDir, METRICS_FILE));
    const html = renderReport({
      title: `revgrad training run: ${source}`,
      summary: [
        ['config', source],
        ['parameters', paramCount(model.specs).toLocaleString('en-US')],
        ['steps x batch', `${steps} x ${settings.batchSize} clips (seed ${settings.seed}, mode ${settings.mode})`],
        ['optimizer', `${settings.optimizer.name === 'sgd' ? 'SGD' : 'AdamW'} lr ${settings.schedule.baseLr}, warmup ${settings.schedule.warmupSteps}, wd ${settings.optimizer.weightDecay}, clip ${settings.clipNorm ?? 'off'}, label smoothing ${settings.labelSmoothing}`],
        ['final test accuracy', lastEval?.testAcc !== undefined ? `${(100 * lastEval.testAcc).toFixed(1)}% (step ${lastEval.step}, ${evalClips} clips)` : '-'],
        ['speed', `${meanMs.toFixed(0)} ms/step, ${((settings.batchSize * 1000) / meanMs).toFixed(1)} clips/s`],
        ['peak memory (one step)', formatBytes(peak)],
        ['checkpoint', relative(outDir, ckptPath)],
      ],
      records,
      memory,
      memoryNote,
    });
    const reportPath = join(outDir, REPORT_FILE);
    writeFileSync(reportPath, html);
    say(`report: ${resolve(reportPath)}`);
  }
  return 0;
}
