/**
 * Training checkpoints in safetensors (Node: file IO): the params under their state_dict names, the
 * optimizer state under `optim.<slot>.<name>` (AdamW: `optim.m.*`, `optim.v.*`; SGD: `optim.buf.*`),
 * and in `__metadata__` everything needed to continue the run exactly (step, seed and root key, the
 * model config, optimizer and training settings, format version). Nothing in the file depends on the
 * wall clock, so two runs that reach the same state write the same bytes.
 */
import * as E from 'fp-ts/lib/Either.js';
import { flattenWithPaths, unflattenLike } from '../autodiff/pytree.ts';
import { type NamedArray } from '../io/safetensors.ts';
import { readSafetensorsFile, writeSafetensorsFileAtomic } from '../io/safetensors-file.ts';
import { tensor, type Tensor } from '../tensor/tensor.ts';
import type { TrainState } from './loop.ts';
import type { Optimizer, OptState } from './optim.ts';

export const CHECKPOINT_FORMAT = 'revgrad-train-checkpoint/1';
export const OPTIM_PREFIX = 'optim.';
/** The file name `revgrad train` uses in its output directory. */
export const CHECKPOINT_FILE = 'checkpoint.safetensors';

export interface CheckpointMeta {
  /** Optimizer steps completed. */
  readonly step: number;
  readonly seed: number;
  /** The root key the run derives every other key from. */
  readonly key: readonly [number, number];
  /** The model config (JSON-serialisable). */
  readonly config: unknown;
  /** Optimizer name and hyperparameters. */
  readonly optimizer: Record<string, unknown>;
  /** The settings that determine the run (steps, batch, schedule, mode, ...). */
  readonly training: Record<string, unknown>;
}

export interface LoadedCheckpoint {
  readonly path: string;
  readonly meta: CheckpointMeta;
  readonly params: Map<string, NamedArray>;
  /** Optimizer state by slot ('m', 'v', 'buf'), then by param name; null when the file holds none (exported weights). */
  readonly optim: ReadonlyMap<string, Map<string, NamedArray>> | null;
  /** The raw `__metadata__`. */
  readonly metadata: Record<string, string>;
}

/** Reads through `await t.data()`, so checkpoints are written on asynchronous backends (webgpu) too. */
const toArray = async (t: Tensor): Promise<NamedArray> => ({ shape: [...t.shape], data: await t.data() });

/** The slots of an optimizer state: every key but `step`. */
const slotsOf = (optState: { readonly step: number }): [string, unknown][] => Object.entries(optState).filter(([k]) => k !== 'step');

/**
 * Atomically write a checkpoint of `params` and the optimizer state (null: params only) after `meta.step`
 * steps. `meta.optimizer` gets the optimizer's step count added.
 */
export async function saveCheckpoint(path: string, params: unknown, optState: { readonly step: number } | null, meta: CheckpointMeta): Promise<void> {
  const tensors = new Map<string, NamedArray>();
  for (const [name, t] of flattenWithPaths(params)) tensors.set(name, await toArray(t));
  if (optState !== null) {
    for (const [slot, tree] of slotsOf(optState)) {
      for (const [name, t] of flattenWithPaths(tree)) tensors.set(`${OPTIM_PREFIX}${slot}.${name}`, await toArray(t));
    }
  }
  writeSafetensorsFileAtomic(path, tensors, {
    format: CHECKPOINT_FORMAT,
    step: String(meta.step),
    seed: String(meta.seed),
    key: JSON.stringify(meta.key),
    config: JSON.stringify(meta.config),
    optimizer: JSON.stringify({ ...meta.optimizer, step: optState?.step ?? meta.step }),
    training: JSON.stringify(meta.training),
  });
}

/**
 * A `checkpoint.save` for `train()`: each save atomically replaces the file at `path` with the state
 * and `meta(step)`, and reports the path.
 */
export const checkpointToFile =
  <P, Slot extends string>(path: string, meta: (step: number) => CheckpointMeta) =>
  async (state: TrainState<P, Slot>): Promise<string> => {
    await saveCheckpoint(path, state.params, state.optState, meta(state.step));
    return path;
  };

function parseJson(metadata: Record<string, string>, field: string, problems: string[]): unknown {
  const text = metadata[field];
  if (text === undefined) {
    problems.push(`__metadata__ has no '${field}'`);
    return undefined;
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    problems.push(`__metadata__ '${field}' is not valid JSON (${(e as Error).message})`);
    return undefined;
  }
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * Read and check a checkpoint: a valid safetensors file with this format's metadata. Returns every
 * problem found (each prefixed with the path) instead of throwing.
 */
export function loadCheckpoint(path: string): E.Either<string[], LoadedCheckpoint> {
  const file = readSafetensorsFile(path);
  if (E.isLeft(file)) return E.left([`${file.left.message} (not a readable safetensors checkpoint)`]);
  const { tensors, metadata } = file.right;
  const problems: string[] = [];
  if (metadata.format !== CHECKPOINT_FORMAT) {
    problems.push(
      metadata.format === undefined
        ? `no checkpoint format in __metadata__ (expected '${CHECKPOINT_FORMAT}'; is this a revgrad training checkpoint?)`
        : `checkpoint format '${metadata.format}' is not supported (expected '${CHECKPOINT_FORMAT}')`,
    );
  }
  const step = Number(metadata.step);
  if (!Number.isSafeInteger(step) || step < 0) problems.push(`__metadata__ 'step' must be a non-negative integer, got ${JSON.stringify(metadata.step)}`);
  const seed = Number(metadata.seed);
  if (!Number.isSafeInteger(seed)) problems.push(`__metadata__ 'seed' must be an integer, got ${JSON.stringify(metadata.seed)}`);
  const key = parseJson(metadata, 'key', problems);
  if (key !== undefined && !(Array.isArray(key) && key.length === 2 && key.every((k) => Number.isInteger(k) && k >= 0 && k < 2 ** 32))) {
    problems.push(`__metadata__ 'key' must be a pair of uint32, got ${metadata.key}`);
  }
  const config = parseJson(metadata, 'config', problems);
  const optimizer = parseJson(metadata, 'optimizer', problems);
  const training = parseJson(metadata, 'training', problems);
  if (optimizer !== undefined && !isRecord(optimizer)) problems.push(`__metadata__ 'optimizer' must be a JSON object`);
  if (training !== undefined && !isRecord(training)) problems.push(`__metadata__ 'training' must be a JSON object`);

  const params = new Map<string, NamedArray>();
  const optim = new Map<string, Map<string, NamedArray>>();
  for (const [name, t] of tensors) {
    if (!name.startsWith(OPTIM_PREFIX)) {
      params.set(name, t);
      continue;
    }
    const rest = name.slice(OPTIM_PREFIX.length);
    const dot = rest.indexOf('.');
    if (dot <= 0) {
      problems.push(`'${name}' is not named optim.<slot>.<param>`);
      continue;
    }
    const slot = rest.slice(0, dot);
    if (!optim.has(slot)) optim.set(slot, new Map());
    optim.get(slot)!.set(rest.slice(dot + 1), t);
  }
  if (params.size === 0) problems.push('the file holds no parameters');
  // Every slot is shaped like the params (AdamW's moments, SGD's momentum buffer).
  for (const [slot, map] of optim) {
    const prefix = `${OPTIM_PREFIX}${slot}.`;
    for (const [name, p] of params) {
      const s = map.get(name);
      if (s === undefined) problems.push(`optimizer state '${prefix}${name}' is missing`);
      else if (!sameShape(s.shape, p.shape)) problems.push(`optimizer state '${prefix}${name}' has shape [${s.shape}], the param has [${p.shape}]`);
    }
    for (const name of map.keys()) if (!params.has(name)) problems.push(`optimizer state '${prefix}${name}' belongs to no parameter`);
  }
  if (problems.length > 0) return E.left(problems.map((p) => `${path}: ${p}`));
  return E.right({
    path,
    meta: {
      step,
      seed,
      key: key as [number, number],
      config,
      optimizer: optimizer as Record<string, unknown>,
      training: training as Record<string, unknown>,
    },
    params,
    optim: optim.size > 0 ? optim : null,
    metadata,
  });
}

const sameShape = (a: readonly number[], b: readonly number[]) => a.length === b.length && a.every((d, i) => d === b[i]);

/**
 * Put named arrays into the structure of `template` (e.g. a freshly initialised param tree),
 * checking that the names and shapes are exactly the template's.
 */
export function restoreTree<T>(template: T, named: ReadonlyMap<string, NamedArray>, what = 'checkpoint'): E.Either<string[], T> {
  const flat = flattenWithPaths(template);
  const problems: string[] = [];
  const values: Tensor[] = [];
  const expected = new Set<string>();
  for (const [name, t] of flat) {
    expected.add(name);
    const a = named.get(name);
    if (a === undefined) {
      problems.push(`${what}: parameter '${name}' [${t.shape}] is missing`);
      continue;
    }
    if (!sameShape(a.shape, t.shape)) {
      problems.push(`${what}: parameter '${name}' has shape [${a.shape}], the model expects [${t.shape}]`);
      continue;
    }
    values.push(tensor(a.data, a.shape));
  }
  for (const name of named.keys()) if (!expected.has(name)) problems.push(`${what}: '${name}' is not a parameter of this model`);
  return problems.length > 0 ? E.left(problems) : E.right(unflattenLike(template, values));
}

/**
 * The training state stored in `ck`, shaped like `template` (e.g. freshly initialised params) and
 * `optimizer`'s state: every name and shape is checked, all problems listed.
 */
export function restoreTrainState<P, Slot extends string>(ck: LoadedCheckpoint, template: P, optimizer: Optimizer<Slot>): E.Either<string[], TrainState<P, Slot>> {
  if (ck.optim === null) return E.left([`${ck.path} holds no optimizer state, so the run cannot be continued exactly`]);
  const problems: string[] = [];
  const params = restoreTree(template, ck.params, ck.path);
  if (E.isLeft(params)) problems.push(...params.left);
  const fresh = optimizer.init(template) as Record<string, unknown>;
  const state: Record<string, unknown> = {};
  for (const slot of optimizer.slots) {
    const stored = ck.optim.get(slot);
    if (stored === undefined) {
      problems.push(`${ck.path}: no optimizer state '${OPTIM_PREFIX}${slot}.*' (the ${optimizer.name} optimizer needs ${optimizer.slots.map((s) => `'${s}'`).join(', ')})`);
      continue;
    }
    const tree = restoreTree(fresh[slot], stored, `${ck.path} (${OPTIM_PREFIX}${slot})`);
    if (E.isLeft(tree)) problems.push(...tree.left);
    else state[slot] = tree.right;
  }
  for (const slot of ck.optim.keys()) {
    if (!(optimizer.slots as readonly string[]).includes(slot)) problems.push(`${ck.path}: optimizer state '${OPTIM_PREFIX}${slot}.*' is not ${optimizer.name}'s`);
  }
  const stored = ck.meta.optimizer;
  if (typeof stored.name === 'string' && stored.name !== optimizer.name) problems.push(`${ck.path}: written by the ${stored.name} optimizer, not ${optimizer.name}`);
  const optimStep = Number(stored.step ?? ck.meta.step);
  if (!Number.isSafeInteger(optimStep) || optimStep < 0) problems.push(`${ck.path}: the optimizer step ${String(stored.step)} is not a non-negative integer`);
  if (problems.length > 0 || E.isLeft(params)) return E.left(problems);
  return E.right({ step: ck.meta.step, params: params.right, optState: { ...state, step: optimStep } as OptState<P, Slot> });
}

export interface Weights {
  readonly path: string;
  /** Parameters by state_dict name (optimizer state left out). */
  readonly params: Map<string, NamedArray>;
  /** The config stored in the metadata, when there is one (revgrad checkpoints have it; converted PySlowFast weights do not). */
  readonly config: unknown | undefined;
  /** The seed stored in the metadata, when there is one. */
  readonly seed: number | undefined;
  readonly step: number | undefined;
}

/**
 * Read the weights of any safetensors file: a revgrad checkpoint or a state_dict saved with
 * `safetensors.torch.save_file` (the optimizer tensors of a checkpoint are skipped).
 */
export function readWeights(path: string): E.Either<string[], Weights> {
  const file = readSafetensorsFile(path);
  if (E.isLeft(file)) return E.left([`${file.left.message} (not a readable safetensors file)`]);
  const { tensors, metadata } = file.right;
  const problems: string[] = [];
  let config: unknown;
  if (metadata.config !== undefined) config = parseJson(metadata, 'config', problems);
  const params = new Map<string, NamedArray>();
  for (const [name, t] of tensors) if (!name.startsWith(OPTIM_PREFIX)) params.set(name, t);
  if (params.size === 0) problems.push('the file holds no parameters');
  const seed = metadata.seed === undefined ? undefined : Number(metadata.seed);
  const step = metadata.step === undefined ? undefined : Number(metadata.step);
  if (problems.length > 0) return E.left(problems.map((p) => `${path}: ${p}`));
  return E.right({
    path,
    params,
    config,
    seed: Number.isSafeInteger(seed) ? seed : undefined,
    step: Number.isSafeInteger(step) ? step : undefined,
  });
}
