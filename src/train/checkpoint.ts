/**
 * Training checkpoints in safetensors: the params under their state_dict names, the AdamW moments
 * under `optim.m.<name>` and `optim.v.<name>`, and in `__metadata__` everything needed to continue
 * the run exactly (step, seed and root key, the model config, optimizer and training settings,
 * format version). Nothing in the file depends on the wall clock, so two runs that reach the same
 * state write the same bytes.
 */
import * as E from 'fp-ts/lib/Either.js';
import { flattenWithPaths, unflattenLike } from '../autodiff/pytree.ts';
import { readSafetensorsFile, writeSafetensorsFileAtomic, type NamedArray } from '../io/safetensors.ts';
import { tensor, type Tensor } from '../tensor/tensor.ts';
import type { AdamWState } from './optim.ts';

export const CHECKPOINT_FORMAT = 'revgrad-train-checkpoint/1';
export const M_PREFIX = 'optim.m.';
export const V_PREFIX = 'optim.v.';

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
  /** Present when the file holds optimizer state (training checkpoints do; exported weights need not). */
  readonly optim: { readonly m: Map<string, NamedArray>; readonly v: Map<string, NamedArray> } | null;
  /** The raw `__metadata__`. */
  readonly metadata: Record<string, string>;
}

/** Reads through `await t.data()`, so checkpoints are written on asynchronous backends (webgpu) too. */
const toArray = async (t: Tensor): Promise<NamedArray> => ({ shape: [...t.shape], data: await t.data() });

/** Atomically write a checkpoint of `params` and the AdamW state after `meta.step` steps. */
export async function saveCheckpoint(
  path: string,
  params: unknown,
  optState: (Omit<AdamWState<unknown>, 'v'> & { v?: unknown }) | null,
  meta: CheckpointMeta,
): Promise<void> {
  const tensors = new Map<string, NamedArray>();
  for (const [name, t] of flattenWithPaths(params)) tensors.set(name, await toArray(t));
  if (optState !== null) {
    for (const [name, t] of flattenWithPaths(optState.m)) tensors.set(M_PREFIX + name, await toArray(t));
    // SGD has one buffer (its momentum, under optim.m); AdamW has two.
    if (optState.v !== undefined) for (const [name, t] of flattenWithPaths(optState.v)) tensors.set(V_PREFIX + name, await toArray(t));
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
  const m = new Map<string, NamedArray>();
  const v = new Map<string, NamedArray>();
  for (const [name, t] of tensors) {
    if (name.startsWith(M_PREFIX)) m.set(name.slice(M_PREFIX.length), t);
    else if (name.startsWith(V_PREFIX)) v.set(name.slice(V_PREFIX.length), t);
    else params.set(name, t);
  }
  if (params.size === 0) problems.push('the file holds no parameters');
  const hasOptim = m.size > 0 || v.size > 0;
  const slots = isRecord(optimizer) && optimizer.name === 'sgd' ? ([[M_PREFIX, m]] as const) : ([[M_PREFIX, m], [V_PREFIX, v]] as const);
  if (hasOptim) {
    for (const [name, p] of params) {
      for (const [prefix, map] of slots) {
        const s = map.get(name);
        if (s === undefined) problems.push(`optimizer state '${prefix}${name}' is missing`);
        else if (!sameShape(s.shape, p.shape)) problems.push(`optimizer state '${prefix}${name}' has shape [${s.shape}], the param has [${p.shape}]`);
      }
    }
    for (const [prefix, map] of [[M_PREFIX, m], [V_PREFIX, v]] as const) {
      for (const name of map.keys()) if (!params.has(name)) problems.push(`optimizer state '${prefix}${name}' belongs to no parameter`);
    }
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
    optim: hasOptim ? { m, v } : null,
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
  for (const [name, t] of tensors) if (!name.startsWith(M_PREFIX) && !name.startsWith(V_PREFIX)) params.set(name, t);
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
