/** safetensors files (Node: file IO); the format itself is in safetensors.ts and works on bytes everywhere. */
import { readFileSync } from 'node:fs';
import { left, type Either } from 'fp-ts/lib/Either.js';
import { writeFileAtomic } from './atomic.ts';
import { decodeSafetensors, encodeSafetensors, messageOf, SafetensorsError, type SafetensorsFile, type TensorInput } from './safetensors.ts';

/** Reads a file synchronously and decodes it; file-system failures come back as code 'io'. */
export function readSafetensorsFile(path: string): Either<SafetensorsError, SafetensorsFile> {
  let bytes: Uint8Array;
  try {
    bytes = readFileSync(path);
  } catch (cause) {
    return left(new SafetensorsError('io', `${path}: cannot read: ${messageOf(cause)}`, path, { cause }));
  }
  return decodeSafetensors(bytes, path);
}

/**
 * Writes a temporary file beside `path`, fsyncs it, renames it over `path` and fsyncs the directory,
 * so a crash leaves either the old file or the new one, never a torn one. Encoding happens first:
 * if it throws, the file system is not touched. File-system failures throw code 'io' and remove
 * the temporary file.
 */
export function writeSafetensorsFileAtomic(path: string, tensors: TensorInput, metadata?: Record<string, string>): void {
  const bytes = encodeSafetensors(tensors, metadata);
  try {
    writeFileAtomic(path, bytes);
  } catch (cause) {
    throw new SafetensorsError('io', `${path}: atomic write failed: ${messageOf(cause)}`, path, { cause });
  }
}
