/**
 * `revgrad convert` (weights between .pyth and .safetensors) and `revgrad export` (a training run to
 * PySlowFast: a .pyth checkpoint and the run's YAML config).
 */
import { existsSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import { PyDict } from '../io/pickle.ts';
import { stateDictOf, pyDict, type PythDict, type PythOut } from '../io/pyth.ts';
import { readPythFile, writePythFileAtomic } from '../io/pyth-file.ts';
import { type NamedArray } from '../io/safetensors.ts';
import { writeSafetensorsFileAtomic } from '../io/safetensors-file.ts';
import { writeFileAtomic } from '../io/atomic.ts';
import { parseConfig, type MViTConfig } from '../models/mvit/config.ts';
import { isTorchCheckpointPath } from '../models/mvit/weights.ts';
import { parseSlowFastYamlText, slowFastYaml, type SlowFastTree } from '../models/mvit/yaml-config.ts';
import { loadCheckpoint, readWeights } from '../train/checkpoint.ts';
import type { TrainSettings } from '../train/settings.ts';
import { slowFastFromSettings } from '../train/solver.ts';
import { getNum, getStr, getBool, UsageError, type CommandSpec, type ParsedArgs } from './args.ts';
import { CliError, configFromJson, formatBytes, unwrap } from './common.ts';

const isSafetensorsPath = (p: string) => /\.safetensors$/i.test(p);
const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Refuse to replace a file unless --force; refuse a directory or a missing parent directory always. */
function checkWritable(path: string, force: boolean, flag: string): void {
  if (existsSync(path)) {
    if (statSync(path).isDirectory()) throw new CliError([`${flag} ${path}: is a directory`]);
    if (!force) throw new CliError([`${flag} ${path}: exists; nothing is overwritten without --force`]);
  }
  if (!existsSync(dirname(path) || '.')) throw new CliError([`${flag} ${path}: the directory ${dirname(path)} does not exist`]);
}

/** The sections a config keeps beside the model ones (a YAML run's SOLVER and MIXUP). */
const solverSections = (json: unknown): SlowFastTree =>
  isRecord(json) ? Object.fromEntries(['SOLVER', 'MIXUP'].filter((k) => isRecord(json[k])).map((k) => [k, json[k]])) : {};

const sizeOf = (tensors: Iterable<{ data: Float32Array }>) => [...tensors].reduce((n, t) => n + t.data.byteLength, 0);

// ---------------------------------------------------------------------------------------------
// convert

export const convertSpec: CommandSpec = {
  name: 'convert',
  summary: 'convert weights between a PyTorch checkpoint (.pyth/.pth/.pt) and safetensors',
  usage: 'revgrad convert IN OUT [--key NAME] [--force]',
  positionals: [
    { name: 'IN', help: 'a .pyth/.pth/.pt checkpoint (torch.save) or a .safetensors file' },
    { name: 'OUT', help: 'the other format: .safetensors for a checkpoint, .pyth for safetensors' },
  ],
  flags: [
    { name: 'key', kind: 'string', arg: 'NAME', help: "the checkpoint entry holding the weights", defaultText: "'model_state' (PySlowFast), or the whole file when it is a state_dict" },
    { name: 'force', kind: 'bool', help: 'replace OUT if it exists' },
  ],
  details: [
    'Only weights move (float32; float16/bfloat16/float64 and exact int64 are converted). The config comes along:',
    "a checkpoint's cfg (PySlowFast YAML) becomes the safetensors' config metadata when it is a valid model config,",
    'and a safetensors config becomes the cfg of the .pyth. The .pyth holds {model_state, cfg} and no epoch, so',
    "PySlowFast's load_checkpoint starts training from it at epoch 0 without looking for an optimizer state.",
    'Optimizer states are not converted (see docs/scale-out.md).',
  ].join('\n'),
};

export async function runConvert(args: ParsedArgs): Promise<number> {
  const [input, output] = args.positionals;
  const usage: string[] = [];
  if (input === undefined || output === undefined) usage.push('give IN and OUT');
  else {
    const from = isTorchCheckpointPath(input) ? 'pyth' : isSafetensorsPath(input) ? 'safetensors' : null;
    const to = isTorchCheckpointPath(output) ? 'pyth' : isSafetensorsPath(output) ? 'safetensors' : null;
    if (from === null) usage.push(`IN ${input}: expected a .pyth, .pth, .pt or .safetensors file`);
    if (to === null) usage.push(`OUT ${output}: expected a .pyth, .pth, .pt or .safetensors file`);
    if (from !== null && from === to) usage.push(`IN and OUT are both ${from}: convert changes the format`);
    if (from === 'safetensors' && args.flags.has('key')) usage.push('--key applies to a checkpoint IN');
  }
  if (usage.length > 0) throw new UsageError(usage, 'convert');
  if (!existsSync(input!)) throw new CliError([`${input}: no such file`]);
  checkWritable(output!, getBool(args, 'force'), 'OUT');
  return isTorchCheckpointPath(input!) ? pythToSafetensors(input!, output!, getStr(args, 'key')) : safetensorsToPyth(input!, output!);
}

/** A checkpoint's weights, and its cfg (PySlowFast YAML text) as a config when it is a valid one. */
export function weightsFromPyth(path: string, key?: string): { params: Map<string, NamedArray>; config?: unknown; epoch?: number; notes: string[] } {
  const file = readPythFile(path);
  if (E.isLeft(file)) throw new CliError([file.left.message]);
  const tensors = stateDictOf(file.right, key);
  if (E.isLeft(tensors)) throw new CliError([tensors.left.message]);
  const out: { params: Map<string, NamedArray>; config?: unknown; epoch?: number; notes: string[] } = { params: tensors.right, notes: [] };
  const root = file.right.root;
  if (!(root instanceof PyDict)) return out;
  const epoch = root.get('epoch');
  if (typeof epoch === 'number') out.epoch = epoch;
  const cfgText = root.get('cfg');
  if (typeof cfgText === 'string') {
    const tree = parseSlowFastYamlText(cfgText, `${path} (cfg)`);
    const cfg = E.chain((t: SlowFastTree) => parseConfig(t))(tree);
    if (E.isRight(cfg) && E.isRight(tree)) out.config = { ...cfg.right, ...solverSections(tree.right) };
    else out.notes.push(`its cfg is not a usable model config (${(E.isLeft(cfg) ? cfg.left : []).slice(0, 2).map((p) => `${p.path}: ${p.message}`).join('; ')})`);
  }
  return out;
}

function pythToSafetensors(input: string, output: string, key: string | undefined): number {
  const { params, config, epoch, notes } = weightsFromPyth(input, key);
  const metadata: Record<string, string> = { source: basename(input) };
  if (epoch !== undefined) metadata.epoch = String(epoch);
  if (config !== undefined) metadata.config = JSON.stringify(config);
  writeSafetensorsFileAtomic(output, params, metadata);
  process.stdout.write(
    `${output}: ${params.size} tensors (${formatBytes(sizeOf(params.values()))}) from ${input}` +
      `${config !== undefined ? ', with its config' : ''}${notes.length > 0 ? `; ${notes.join('; ')}, so none was kept` : ''}\n`,
  );
  return 0;
}

function safetensorsToPyth(input: string, output: string): number {
  const weights = unwrap(readWeights(input));
  const entries: [string, PythOut][] = [['model_state', pyDict(weights.params, true)]];
  if (weights.config !== undefined) {
    const cfg = unwrap(configFromJson(weights.config, `${input} (stored config)`));
    entries.push(['cfg', slowFastYaml(cfg, solverSections(weights.config), [`Converted by revgrad from ${basename(input)}.`])]);
  }
  writePythFileAtomic(output, pyDict(entries));
  process.stdout.write(`${output}: ${weights.params.size} tensors (${formatBytes(sizeOf(weights.params.values()))}) from ${input}${weights.config !== undefined ? ', with its config as cfg' : ''}\n`);
  return 0;
}

// ---------------------------------------------------------------------------------------------
// export

/** PySlowFast's default SOLVER.MAX_EPOCH. */
const DEFAULT_MAX_EPOCH = 300;

export const exportSpec: CommandSpec = {
  name: 'export',
  summary: 'export a training run to PySlowFast: a .pyth checkpoint and its YAML config',
  usage: 'revgrad export --checkpoint RUN/checkpoint.safetensors --out MODEL.pyth [--yaml FILE] [--max-epoch N] [--force]',
  flags: [
    { name: 'checkpoint', kind: 'string', arg: 'FILE', help: 'a revgrad training checkpoint (revgrad train writes RUN/checkpoint.safetensors)' },
    { name: 'out', kind: 'string', arg: 'FILE.pyth', help: 'the PySlowFast checkpoint to write: {epoch, model_state, cfg}' },
    { name: 'yaml', kind: 'string', arg: 'FILE', help: 'the PySlowFast config to write', defaultText: 'OUT with .yaml' },
    { name: 'max-epoch', kind: 'int', min: 1, arg: 'N', help: 'SOLVER.MAX_EPOCH for PySlowFast; the warmup keeps its fraction', defaultText: `the run's YAML MAX_EPOCH, else ${DEFAULT_MAX_EPOCH}` },
    { name: 'force', kind: 'bool', help: 'replace existing output files' },
  ],
  details: [
    'The YAML holds the full model config, the run\'s schedule and optimizer as SOLVER (lr as used:',
    'BASE_LR_SCALE_NUM_SHARDS off), its label smoothing as MIXUP (ENABLE, PROB 0), RNG_SEED, and TRAIN with',
    'CHECKPOINT_FILE_PATH = OUT\'s name and CHECKPOINT_EPOCH_RESET True, so PySlowFast starts from these',
    'weights at epoch 0 with a fresh optimizer. Train on N machines (machine i of N) with:',
    '  python tools/run_net.py --cfg MODEL.yaml --init_method tcp://HOST0:9999 --num_shards N --shard_id i \\',
    '    NUM_GPUS 8 TRAIN.CHECKPOINT_FILE_PATH /path/MODEL.pyth DATA.PATH_TO_DATA_DIR /path/data',
  ].join('\n'),
};

export async function runExport(args: ParsedArgs): Promise<number> {
  const checkpoint = getStr(args, 'checkpoint');
  const out = getStr(args, 'out');
  const usage: string[] = [];
  if (checkpoint === undefined) usage.push('--checkpoint FILE is required');
  if (out === undefined) usage.push('--out FILE.pyth is required');
  else if (!isTorchCheckpointPath(out)) usage.push(`--out ${out}: expected a .pyth (or .pth/.pt) file`);
  if (usage.length > 0) throw new UsageError(usage, 'export');
  const yamlPath = getStr(args, 'yaml') ?? join(dirname(out!), `${basename(out!).replace(/\.(pyth|pth|pt)$/i, '')}.yaml`);
  if (!existsSync(checkpoint!)) throw new CliError([`--checkpoint ${checkpoint}: no such file`]);
  const force = getBool(args, 'force');
  checkWritable(out!, force, '--out');
  checkWritable(yamlPath, force, '--yaml');

  const ck = loadCheckpoint(checkpoint!);
  if (E.isLeft(ck)) {
    throw new CliError([...ck.left.problems, `(export needs a revgrad training checkpoint for the schedule; for weights alone use: revgrad convert ${checkpoint} ${out})`]);
  }
  const { meta, params } = ck.right;
  const cfg: MViTConfig = unwrap(configFromJson(meta.config, `${checkpoint} (stored config)`));
  const settings = meta.training as unknown as TrainSettings;
  const stored = solverSections(meta.config);
  const storedMaxEpoch = isRecord(stored.SOLVER) ? stored.SOLVER.MAX_EPOCH : undefined;
  const maxEpoch = getNum(args, 'max-epoch') ?? (typeof storedMaxEpoch === 'number' ? storedMaxEpoch : DEFAULT_MAX_EPOCH);
  const training = slowFastFromSettings(settings, maxEpoch);
  const extra: SlowFastTree = { ...training, TRAIN: { CHECKPOINT_FILE_PATH: basename(out!), CHECKPOINT_EPOCH_RESET: true } };
  const header = [
    `Exported by revgrad from ${basename(checkpoint!)} (step ${meta.step} of ${settings.steps}, seed ${meta.seed}).`,
    `Schedule: revgrad's ${settings.steps} steps as ${maxEpoch} epochs (the warmup keeps its fraction: ${settings.schedule.warmupSteps} of ${settings.steps} steps).`,
    'Add what PySlowFast needs for your data: TRAIN.DATASET, DATA.PATH_TO_DATA_DIR, TRAIN.BATCH_SIZE, NUM_GPUS (and --num_shards).',
  ];
  const yaml = slowFastYaml(cfg, extra, header);
  // What PySlowFast will read must be the model that was trained: check the text before writing it.
  const reread = E.chain((t: SlowFastTree) => parseConfig(t))(parseSlowFastYamlText(yaml, yamlPath));
  if (E.isLeft(reread) || JSON.stringify(reread.right) !== JSON.stringify(cfg)) {
    throw new CliError([`internal: the YAML written for ${checkpoint} does not read back as its config`]);
  }
  const content: PythDict = pyDict([
    ['epoch', -1],
    ['model_state', pyDict(params, true)],
    ['cfg', yaml],
  ]);
  writePythFileAtomic(out!, content);
  writeFileAtomic(yamlPath, new TextEncoder().encode(yaml));
  process.stdout.write(
    `${out}: ${params.size} tensors (${formatBytes(sizeOf(params.values()))}) at step ${meta.step}\n${yamlPath}: PySlowFast config (${cfg.MVIT.DEPTH} layers, ${settings.optimizer.name === 'sgd' ? 'SGD' : 'AdamW'}, MAX_EPOCH ${maxEpoch})\n` +
      `train it on N machines: python tools/run_net.py --cfg ${yamlPath} --init_method tcp://HOST0:9999 --num_shards N --shard_id i NUM_GPUS 8 TRAIN.CHECKPOINT_FILE_PATH ${out} DATA.PATH_TO_DATA_DIR ...\n`,
  );
  return 0;
}
