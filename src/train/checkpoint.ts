/**
 * Training checkpoints in safetensors (Node: file IO): the params under their state_dict names, the
 * optimizer state under `optim.<slot>.<name>` (AdamW: `optim.m.*`, `optim.v.*`; SGD: `optim.buf.*`),
 * and in `__metadata__` everything needed to continue the run exactly (step, seed and root key, the
 * model config, optimizer and training settings, format version) and a SHA-256 checksum of the
 * tensors. Nothing in the file depends on the wall clock, so two runs that reach the same state write
 * the same bytes.
 *
 * Loading refuses (a `CheckpointError`, never a throw) a file whose tensors do not hash to the stored
 * checksum, whose metadata is malformed (nested JSON is depth-limited), or that holds a non-finite
 * value: training never continues from, and evaluation never reports on, NaN or infinite weights.
 */
import { createHash, randomBytes } from 'node:crypto';
import { copyFileSync, existsSync, linkSync, renameSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import { flattenWithPaths, unflattenLike } from '../autodiff/pytree.ts';
import { describeValue, parseJson } from '../io/json.ts';
import { decodeSafetensors, type NamedArray, type SafetensorsError, type SafetensorsFile } from '../io/safetensors.ts';
import { readSafetensorsFile, writeSafetensorsFileAtomic } from '../io/safetensors-file.ts';
import { RevgradError } from '../tensor/errors.ts';
import { tensor, type Tensor } from '../tensor/tensor.ts';
import type { TrainState } from './loop.ts';
import type { Optimizer, OptState } from './optim.ts';

/** Version 2 adds the `checksum`; version 1 files (no checksum) are still read. */
export const CHECKPOINT_FORMAT = 'revgrad-train-checkpoint/2';
const FORMATS_READ = ['revgrad-train-checkpoint/1', CHECKPOINT_FORMAT];

/**
 * Why a checkpoint (or weights file) cannot be used. `read`: not a readable safetensors file;
 * `checksum`: the tensors do not match the stored checksum (corrupt data); `nonfinite`: a NaN or
 * infinite value; `invalid`: metadata or tensors that do not form a checkpoint. `problems` lists
 * every problem found, each starting with the path.
 */
export class CheckpointError extends RevgradError {
  override name = 'CheckpointError';
  constructor(
    readonly code: 'read' | 'checksum' | 'nonfinite' | 'invalid',
    readonly path: string,
    readonly problems: readonly string[],
  ) {
    super(problems.join('\n'));
  }
}

const fail = (code: CheckpointError['code'], path: string, problems: readonly string[]) =>
  E.left(new CheckpointError(code, path, problems.map((p) => `${path}: ${p}`)));

/** The checksum stored in `__metadata__.checksum`: SHA-256 over every tensor (sorted name, shape, float32 little-endian data). */
export function tensorsChecksum(tensors: ReadonlyMap<string, NamedArray>): string {
  const hash = createHash('sha256');
  for (const name of [...tensors.keys()].sort()) {
    const t = tensors.get(name)!;
    hash.update(`${name}\0${t.shape.join(',')}\0`);
    hash.update(littleEndianBytes(t.data));
  }
  return `sha256:${hash.digest('hex')}`;
}

const HOST_IS_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function littleEndianBytes(data: Float32Array): Uint8Array {
  if (HOST_IS_LITTLE_ENDIAN) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  const out = new Uint8Array(data.byteLength);
  const view = new DataView(out.buffer);
  for (let i = 0; i < data.length; i++) view.setFloat32(4 * i, data[i]!, true);
  return out;
}

/** The checksum problem of a file that stores one, or null (also null when it stores none). */
function checksumProblem(tensors: ReadonlyMap<string, NamedArray>, stored: string | undefined): string | null {
  if (stored === undefined) return null;
  const actual = tensorsChecksum(tensors);
  return actual === stored ? null : `the tensors do not match the stored checksum (stored ${stored.slice(0, 20)}..., computed ${actual.slice(0, 20)}...): the file is corrupt`;
}

/** Tensors holding NaN or infinite values: one line each (count, first position and value), at most `max`. */
export function nonFiniteProblems(tensors: Iterable<readonly [string, NamedArray]>, max = 20): string[] {
  const out: string[] = [];
  let more = 0;
  for (const [name, t] of tensors) {
    let count = 0;
    let first = -1;
    const d = t.data;
    for (let i = 0; i < d.length; i++) {
      if (!Number.isFinite(d[i]!)) {
        if (count === 0) first = i;
        count++;
      }
    }
    if (count === 0) continue;
    if (out.length < max) out.push(`tensor '${name}' has ${count} non-finite value${count === 1 ? '' : 's'} of ${d.length} (first: ${d[first]} at flat index ${first})`);
    else more++;
  }
  if (more > 0) out.push(`... and ${more} more tensors with non-finite values`);
  return out;
}
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
    checksum: tensorsChecksum(tensors),
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
  <P, Slot extends string>(path: string, meta: (step: number) => CheckpointMeta, opts: { readonly keepPrevious?: boolean } = {}) =>
  async (state: TrainState<P, Slot>): Promise<string> => {
    if (opts.keepPrevious === true) keepAsPrevious(path);
    await saveCheckpoint(path, state.params, state.optState, meta(state.step));
    return path;
  };

/** `DIR/checkpoint.safetensors` -> `DIR/checkpoint.prev.safetensors`. */
export const previousCheckpointPath = (path: string): string => path.replace(/(\.safetensors)?$/, '.prev$1');

/**
 * The checkpoint at `path` becomes `previousCheckpointPath(path)` before a new one replaces it. A hard
 * link renamed into place (a copy where links are not supported): at every moment both names hold a
 * complete file, so a kill during the next write still leaves the last and the one before.
 */
function keepAsPrevious(path: string): void {
  if (!existsSync(path)) return;
  const previous = previousCheckpointPath(path);
  const temporary = join(dirname(previous), `.${basename(previous)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  try {
    linkSync(path, temporary);
  } catch {
    copyFileSync(path, temporary);
  }
  renameSync(temporary, previous);
}

function metadataJson(metadata: Record<string, string>, field: string, problems: string[]): unknown {
  const text = metadata[field];
  if (text === undefined) {
    problems.push(`__metadata__ has no '${field}'`);
    return undefined;
  }
  const parsed = parseJson(text, `__metadata__ '${field}'`);
  if (E.isLeft(parsed)) {
    problems.push(parsed.left.message);
    return undefined;
  }
  return parsed.right;
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * Read and check a checkpoint: a valid safetensors file with this format's metadata. Returns every
 * problem found (each prefixed with the path) instead of throwing.
 */
export function loadCheckpoint(path: string): E.Either<CheckpointError, LoadedCheckpoint> {
  return checkpointFrom(readSafetensorsFile(path), path);
}

/** `loadCheckpoint` on bytes in memory (`source` names them in messages). */
export function decodeCheckpoint(bytes: Uint8Array, source: string): E.Either<CheckpointError, LoadedCheckpoint> {
  return checkpointFrom(decodeSafetensors(bytes, source), source);
}

function checkpointFrom(file: E.Either<SafetensorsError, SafetensorsFile>, path: string): E.Either<CheckpointError, LoadedCheckpoint> {
  if (E.isLeft(file)) return E.left(new CheckpointError('read', path, [`${file.left.message} (not a readable safetensors checkpoint)`]));
  const { tensors, metadata } = file.right;
  const problems: string[] = [];
  if (!FORMATS_READ.includes(metadata.format ?? '')) {
    problems.push(
      metadata.format === undefined
        ? `no checkpoint format in __metadata__ (expected '${CHECKPOINT_FORMAT}'; is this a revgrad training checkpoint?)`
        : `checkpoint format ${short(metadata.format)} is not supported (expected '${CHECKPOINT_FORMAT}')`,
    );
  } else if (metadata.format === CHECKPOINT_FORMAT && metadata.checksum === undefined) {
    problems.push(`__metadata__ has no 'checksum' (format '${CHECKPOINT_FORMAT}' always stores one)`);
  }
  const corrupt = checksumProblem(tensors, metadata.checksum);
  if (corrupt !== null) return fail('checksum', path, [corrupt]);
  const nonFinite = nonFiniteProblems(tensors);
  if (nonFinite.length > 0) return fail('nonfinite', path, ['holds non-finite values, so training cannot continue from it:', ...nonFinite.map((p) => `  ${p}`)]);
  const step = uintField(metadata, 'step', problems);
  const seed = uintField(metadata, 'seed', problems);
  const key = metadataJson(metadata, 'key', problems);
  if (key !== undefined && !(Array.isArray(key) && key.length === 2 && key.every((k) => Number.isInteger(k) && k >= 0 && k < 2 ** 32))) {
    problems.push(`__metadata__ 'key' must be a pair of uint32, got ${short(metadata.key)}`);
  } else if (key !== undefined && seed !== undefined && (key[0] !== Math.floor(seed / 2 ** 32) || key[1] !== seed % 2 ** 32)) {
    problems.push(`__metadata__ 'key' ${short(metadata.key)} is not the key of seed ${seed}`);
  }
  const config = metadataJson(metadata, 'config', problems);
  const optimizer = metadataJson(metadata, 'optimizer', problems);
  const training = metadataJson(metadata, 'training', problems);
  if (optimizer !== undefined && !isRecord(optimizer)) problems.push(`__metadata__ 'optimizer' must be a JSON object`);
  else if (optimizer !== undefined) problems.push(...optimizerProblems(optimizer));
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
  if (problems.length > 0) return fail('invalid', path, problems);
  return E.right({
    path,
    meta: {
      step: step!,
      seed: seed!,
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

/** A metadata value for messages: quoted and cut. */
const short = (text: string | undefined): string => (text === undefined ? 'nothing' : JSON.stringify(text.length > 60 ? `${text.slice(0, 57)}...` : text));

/** A non-negative safe integer written as decimal digits ("-5", "1e3", "abc" and "" are refused). */
function uintField(metadata: Record<string, string>, field: string, problems: string[]): number | undefined {
  const text = metadata[field];
  const value = text !== undefined && /^\d{1,16}$/.test(text) ? Number(text) : NaN;
  if (Number.isSafeInteger(value)) return value;
  problems.push(`__metadata__ '${field}' must be a non-negative integer, got ${short(text)}`);
  return undefined;
}

/**
 * The optimizer hyperparameters of stored settings (AdamW's betas and eps; SGD's momentum, dampening and
 * nesterov; the weight decay of both): the values a run would otherwise silently turn into NaN.
 */
export function optimizerHyperProblems(o: Record<string, unknown>, required = true): string[] {
  const p: string[] = [];
  const num = (k: string) => (typeof o[k] === 'number' && Number.isFinite(o[k]) ? (o[k] as number) : NaN);
  const got = (k: string) => `got ${describeValue(o[k], 40)}`;
  // Without `required`, only the fields present are checked (informational copies, as in __metadata__ 'optimizer').
  const check = (k: string, ok: boolean, what: string) => {
    if ((required || o[k] !== undefined) && !ok) p.push(`${k} must be ${what}, ${got(k)}`);
  };
  if (o.name === 'sgd') {
    check('momentum', num('momentum') >= 0, 'a number >= 0');
    check('dampening', num('dampening') >= 0 && num('dampening') <= 1, 'a number in [0, 1]');
    check('nesterov', typeof o.nesterov === 'boolean', 'true or false');
  } else {
    for (const k of ['beta1', 'beta2']) check(k, num(k) >= 0 && num(k) < 1, 'a number in [0, 1)');
    check('eps', num('eps') > 0, 'a number > 0');
  }
  check('weightDecay', num('weightDecay') >= 0, 'a number >= 0');
  return p;
}

/** The stored optimizer's name and step, and its hyperparameters. */
function optimizerProblems(o: Record<string, unknown>): string[] {
  const p: string[] = [];
  if (o.name !== undefined && o.name !== 'adamw' && o.name !== 'sgd') p.push(`__metadata__ 'optimizer' name must be "adamw" or "sgd", got ${describeValue(o.name, 40)}`);
  p.push(...optimizerHyperProblems(o, false).map((q) => `__metadata__ 'optimizer' ${q}`));
  if (o.step !== undefined && !(Number.isSafeInteger(o.step) && (o.step as number) >= 0)) p.push(`__metadata__ 'optimizer' step must be a non-negative integer, got ${describeValue(o.step, 40)}`);
  return p;
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
export function readWeights(path: string): E.Either<CheckpointError, Weights> {
  return weightsFrom(readSafetensorsFile(path), path);
}

/** `readWeights` on bytes in memory. */
export function decodeWeights(bytes: Uint8Array, source: string): E.Either<CheckpointError, Weights> {
  return weightsFrom(decodeSafetensors(bytes, source), source);
}

function weightsFrom(file: E.Either<SafetensorsError, SafetensorsFile>, path: string): E.Either<CheckpointError, Weights> {
  if (E.isLeft(file)) return E.left(new CheckpointError('read', path, [`${file.left.message} (not a readable safetensors file)`]));
  const { tensors, metadata } = file.right;
  const corrupt = checksumProblem(tensors, metadata.checksum);
  if (corrupt !== null) return fail('checksum', path, [corrupt]);
  const params = new Map<string, NamedArray>();
  for (const [name, t] of tensors) if (!name.startsWith(OPTIM_PREFIX)) params.set(name, t);
  const nonFinite = nonFiniteProblems(params);
  if (nonFinite.length > 0) return fail('nonfinite', path, ['holds non-finite weights, so it cannot be evaluated:', ...nonFinite.map((p) => `  ${p}`)]);
  const problems: string[] = [];
  let config: unknown;
  if (metadata.config !== undefined) config = metadataJson(metadata, 'config', problems);
  if (params.size === 0) problems.push('the file holds no parameters');
  const seed = metadata.seed === undefined ? undefined : uintField(metadata, 'seed', problems);
  const step = metadata.step === undefined ? undefined : uintField(metadata, 'step', problems);
  if (problems.length > 0) return fail('invalid', path, problems);
  return E.right({ path, params, config, seed, step });
}
