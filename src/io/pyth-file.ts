/** PyTorch checkpoint files (Node: file IO); the format itself is in pyth.ts and works on bytes everywhere. */
import { readFileSync } from 'node:fs';
import * as E from 'fp-ts/lib/Either.js';
import { writeFileAtomic } from './atomic.ts';
import { decodePyth, encodePyth, PythError, type PythFile, type PythOut } from './pyth.ts';

/** Reads a checkpoint file; file-system failures come back as code 'io'. */
export function readPythFile(path: string): E.Either<PythError, PythFile> {
  let bytes: Uint8Array;
  try {
    bytes = readFileSync(path);
  } catch (cause) {
    return E.left(new PythError('io', `${path}: cannot read: ${(cause as Error).message}`, path));
  }
  return decodePyth(bytes, path);
}

/** encodePyth, then a crash-safe write (temporary file, fsync, rename). Throws PythError. */
export function writePythFileAtomic(path: string, value: PythOut): void {
  const bytes = encodePyth(value);
  try {
    writeFileAtomic(path, bytes);
  } catch (cause) {
    throw new PythError('io', `${path}: write failed: ${(cause as Error).message}`, path);
  }
}
