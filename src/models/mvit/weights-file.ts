/**
 * Rev-MViT weights files (Node: file IO): safetensors, or a PySlowFast checkpoint (.pyth, torch.save's
 * zip format; its `model_state`), by state_dict name.
 */
import * as E from 'fp-ts/lib/Either.js';
import { stateDictOf } from '../../io/pyth.ts';
import { readPythFile } from '../../io/pyth-file.ts';
import type { NamedArray } from '../../io/safetensors.ts';
import { readSafetensorsFile, writeSafetensorsFileAtomic } from '../../io/safetensors-file.ts';
import type { MViTModel, Params } from './model.ts';
import { isTorchCheckpointPath, namedArrays, paramsFromNamed, type WeightProblem } from './weights.ts';

/**
 * The tensors of a weights file by state_dict name: a safetensors file, or a PyTorch checkpoint
 * (.pyth/.pth/.pt) whose `key` (default: PySlowFast's 'model_state', or the whole file when it is a
 * bare state_dict) holds them. Problems name the file.
 */
export function readNamedArrays(path: string, opts: { key?: string } = {}): E.Either<WeightProblem[], Map<string, NamedArray>> {
  if (isTorchCheckpointPath(path)) {
    const file = readPythFile(path);
    const tensors = E.isLeft(file) ? file : stateDictOf(file.right, opts.key);
    return E.isLeft(tensors) ? E.left([{ name: path, message: tensors.left.message }]) : E.right(tensors.right);
  }
  const file = readSafetensorsFile(path);
  return E.isLeft(file) ? E.left([{ name: path, message: file.left.message }]) : E.right(file.right.tensors);
}

/** The model's params from a safetensors file or a PySlowFast .pyth checkpoint; every mismatch is listed. */
export function loadWeights(model: MViTModel, path: string, opts: { allowExtra?: boolean; key?: string } = {}): E.Either<WeightProblem[], Params> {
  const named = readNamedArrays(path, opts);
  return E.isLeft(named) ? named : paramsFromNamed(model, named.right, opts);
}

/** Save params as a safetensors file by state_dict name (atomically). */
export async function saveWeights(params: Params, path: string, metadata: Record<string, string> = {}): Promise<void> {
  writeSafetensorsFileAtomic(path, await namedArrays(params), metadata);
}
