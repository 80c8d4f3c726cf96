/**
 * Loading and saving Rev-MViT parameters by PySlowFast state_dict names, so a PySlowFast checkpoint
 * converted to safetensors loads directly (docs/mvit.md has the conversion recipe).
 */
import * as E from 'fp-ts/lib/Either.js';
import { flattenWithPaths, fromNamed } from '../../autodiff/pytree.ts';
import { readSafetensorsFile, writeSafetensorsFileAtomic, type NamedArray } from '../../io/safetensors.ts';
import { tensor, type Tensor } from '../../tensor/tensor.ts';
import type { MViTModel, Params } from './model.ts';

export interface WeightProblem {
  readonly name: string;
  readonly message: string;
}

const fmt = (s: readonly number[]) => `[${s.join(', ')}]`;

/**
 * The model's params from named arrays: every expected name must be present with the expected shape.
 * Unexpected names are problems too unless `allowExtra` (e.g. a fixture that also stores activations,
 * or a checkpoint that stores optimizer state under other prefixes). All problems are listed.
 */
export function paramsFromNamed(model: MViTModel, named: ReadonlyMap<string, NamedArray>, opts: { allowExtra?: boolean } = {}): E.Either<WeightProblem[], Params> {
  const problems: WeightProblem[] = [];
  const out = new Map<string, Tensor>();
  for (const spec of model.specs) {
    const a = named.get(spec.name);
    if (a === undefined) {
      problems.push({ name: spec.name, message: `missing (expected shape ${fmt(spec.shape)})` });
    } else if (a.shape.length !== spec.shape.length || a.shape.some((d, i) => d !== spec.shape[i])) {
      problems.push({ name: spec.name, message: `shape ${fmt(a.shape)} does not match the model's ${fmt(spec.shape)}` });
    } else {
      out.set(spec.name, tensor(a.data, spec.shape));
    }
  }
  if (opts.allowExtra !== true) {
    const expected = new Set(model.specs.map((s) => s.name));
    for (const name of named.keys()) if (!expected.has(name)) problems.push({ name, message: 'not a parameter of this model' });
  }
  return problems.length > 0 ? E.left(problems) : E.right(fromNamed(out));
}

export function loadWeights(model: MViTModel, path: string, opts: { allowExtra?: boolean } = {}): E.Either<WeightProblem[], Params> {
  const file = readSafetensorsFile(path);
  if (E.isLeft(file)) return E.left([{ name: path, message: file.left.message }]);
  return paramsFromNamed(model, file.right.tensors, opts);
}

/** The params as named arrays (state_dict order of the tree). */
export async function namedArrays(params: Params): Promise<Map<string, NamedArray>> {
  const out = new Map<string, NamedArray>();
  for (const [name, t] of flattenWithPaths(params)) out.set(name, { shape: [...t.shape], data: await t.data() });
  return out;
}

export async function saveWeights(params: Params, path: string, metadata: Record<string, string> = {}): Promise<void> {
  writeSafetensorsFileAtomic(path, await namedArrays(params), metadata);
}

export const formatWeightProblems = (problems: readonly WeightProblem[]): string =>
  problems.map((p) => `  ${p.name}: ${p.message}`).join('\n');
