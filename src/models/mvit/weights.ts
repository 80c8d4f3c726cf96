/**
 * Loading and saving Rev-MViT parameters by PySlowFast state_dict names: from safetensors, or directly
 * from a PySlowFast checkpoint (.pyth, torch.save's zip format; its `model_state`).
 */
import * as E from 'fp-ts/lib/Either.js';
import { flattenWithPaths, fromNamed } from '../../autodiff/pytree.ts';
import type { NamedArray } from '../../io/safetensors.ts';
import { fmt, sameShape } from '../../tensor/shape.ts';
import { tensor, type Tensor } from '../../tensor/tensor.ts';
import type { MViTModel, Params } from './model.ts';

export interface WeightProblem {
  readonly name: string;
  readonly message: string;
}

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
    } else if (!sameShape(a.shape, spec.shape)) {
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

/** PyTorch checkpoints by extension (torch.save's zip format); anything else is read as safetensors. */
export const isTorchCheckpointPath = (path: string): boolean => /\.(pyth|pth|pt)$/i.test(path);

/** The params as named arrays (state_dict order of the tree). */
export async function namedArrays(params: Params): Promise<Map<string, NamedArray>> {
  const out = new Map<string, NamedArray>();
  for (const [name, t] of flattenWithPaths(params)) out.set(name, { shape: [...t.shape], data: await t.data() });
  return out;
}
