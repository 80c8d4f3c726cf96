/** `revgrad eval`: test accuracy of a checkpoint on held-out Moving-MNIST clips. */
import { existsSync, statSync } from 'node:fs';
import * as E from 'fp-ts/lib/Either.js';
import type { MViTConfig } from '../models/mvit/config.ts';
import { restoreTree, readWeights } from '../train/checkpoint.ts';
import { movingMnistBatches } from '../data/moving-mnist.ts';
import { getBool, getNum, getStr, UsageError, type CommandSpec, type ParsedArgs } from './args.ts';
import { evaluateRun, runKeys } from './train-run.ts';
import { weightsFromPyth } from './convert-cmd.ts';
import { isTorchCheckpointPath } from '../models/mvit/weights.ts';
import {
  capLines,
  checkResources,
  CliError,
  configFromJson,
  CONFIG_FLAGS,
  MEMORY_FLAG,
  memoryLimit,
  model as buildModel,
  movingMnistProblems,
  resolveConfig,
  unwrap,
} from './common.ts';

export const evalSpec: CommandSpec = {
  name: 'eval',
  summary: 'test accuracy of a checkpoint on held-out Moving-MNIST clips',
  usage: 'revgrad eval --checkpoint FILE [--clips N | --batches N] [--batch N] [--json]',
  flags: [
    { name: 'checkpoint', kind: 'string', arg: 'FILE', help: 'a revgrad checkpoint, any state_dict in safetensors, or a PySlowFast .pyth (without a stored config, give --preset or --config)' },
    ...CONFIG_FLAGS.map((f) => ({ ...f, help: `${f.help}; only for files that store no config` })),
    { name: 'clips', kind: 'int', min: 1, arg: 'N', help: 'number of test clips', defaultText: '512' },
    { name: 'batches', kind: 'int', min: 1, arg: 'N', help: 'number of test batches (instead of --clips)' },
    { name: 'batch', kind: 'int', min: 1, arg: 'N', help: 'clips per batch', defaultText: '32' },
    { name: 'seed', kind: 'int', min: 0, arg: 'N', help: 'seed of the evaluation keys', defaultText: "the checkpoint's seed (the clips its training run evaluated on)" },
    { name: 'mode', kind: 'enum', values: ['reversible', 'store'], help: 'forward mode (the results agree)', defaultText: 'reversible' },
    { name: 'json', kind: 'bool', help: 'print the result as JSON' },
    MEMORY_FLAG,
  ],
  details: 'The test clips are built from digits never used for training (a fixed train/test split of the MNIST samples).',
};

export async function runEval(args: ParsedArgs): Promise<number> {
  const path = getStr(args, 'checkpoint');
  const usage: string[] = [];
  if (path === undefined) usage.push('--checkpoint FILE is required');
  if (args.flags.has('clips') && args.flags.has('batches')) usage.push('give either --clips or --batches, not both');
  if (usage.length > 0) throw new UsageError(usage, 'eval');
  const limit = memoryLimit(args, 'eval');
  if (!existsSync(path!)) throw new CliError([`--checkpoint ${path}: no such file`]);
  if (statSync(path!).isDirectory()) throw new CliError([`--checkpoint ${path}: is a directory, expected a .safetensors or .pyth file`]);
  // A PySlowFast checkpoint (.pyth) is read directly: its model_state, and its cfg as the config.
  const weights = isTorchCheckpointPath(path!) ? { ...weightsFromPyth(path!), seed: undefined, step: undefined } : unwrap(readWeights(path!));
  let cfg: MViTConfig;
  if (args.flags.has('preset') || args.flags.has('config')) {
    cfg = unwrap(resolveConfig(args, null)).cfg;
  } else if (weights.config !== undefined) {
    cfg = unwrap(configFromJson(weights.config, `${path} (stored config)`));
  } else {
    throw new CliError([`${path} stores no config; give --preset NAME or --config FILE for its model`]);
  }
  const mm = movingMnistProblems(cfg, path!);
  if (mm.length > 0) throw new CliError(mm);
  const batch = getNum(args, 'batch') ?? 32;
  checkResources(cfg, { batch, purpose: 'eval' }, limit, path!);
  const model = buildModel(cfg);
  const params = restoreTree(model.init(runKeys(0).init), weights.params, path);
  if (E.isLeft(params)) throw new CliError([`${path} does not fit the model:`, ...capLines(params.left.map((p) => `  ${p}`))]);
  const batches = getNum(args, 'batches') ?? Math.ceil((getNum(args, 'clips') ?? 512) / batch);
  const seed = getNum(args, 'seed') ?? weights.seed ?? 0;
  const t0 = performance.now();
  const r = await evaluateRun(
    model,
    params.right,
    movingMnistBatches(cfg),
    seed,
    { evalBatches: batches, evalBatchSize: batch, headAct: cfg.MODEL.HEAD_ACT },
    (getStr(args, 'mode') ?? 'reversible') as 'reversible' | 'store',
  );
  const seconds = (performance.now() - t0) / 1000;
  const out = { checkpoint: path, step: weights.step ?? null, clips: r.clips, accuracy: r.testAcc, loss: r.testLoss, seed, seconds };
  if (getBool(args, 'json')) process.stdout.write(JSON.stringify(out) + '\n');
  else {
    process.stdout.write(
      `${path}${weights.step !== undefined ? ` (step ${weights.step})` : ''}: test accuracy ${(100 * r.testAcc).toFixed(2)}% ` +
        `(${Math.round(r.testAcc * r.clips)}/${r.clips} clips)${r.testLoss === null ? '' : `, loss ${r.testLoss.toFixed(4)}`}, ${seconds.toFixed(1)} s\n`,
    );
  }
  return 0;
}
