/**
 * Moving-MNIST clips in a page or a worker (no Node): the digits come from /digits.bin (a subset of the
 * `mnist` package's digits, demo/serve.ts); the clips and batches are src/data/clips.ts's, the ones
 * `npm start` trains on (clipSpecFor: the digit at 28 px, 1-3 px a frame).
 */
import { drawClips, type ClipSpec, type MnistDigits } from '../src/data/clips.ts';
import type { Key } from '../src/random/index.ts';
import { DataError } from '../src/tensor/errors.ts';

export { clipSpecFor } from '../src/data/clips.ts';
export type Digits = MnistDigits;

export async function loadDigits(url = './digits.bin'): Promise<Digits> {
  const response = await fetch(url);
  if (!response.ok) throw new DataError(url, `HTTP ${response.status}`);
  return parseDigits(new Uint8Array(await response.arrayBuffer()));
}

/** [u32 count][count labels][count x 784 pixels, 8-bit] (demo/serve.ts digitsSubset). */
export function parseDigits(bytes: Uint8Array): Digits {
  const count = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(0, true);
  const labels = bytes.slice(4, 4 + count);
  const images = Float32Array.from(bytes.subarray(4 + count, 4 + count + count * 784), (v) => v / 255);
  return { count, labels, images };
}

export interface ClipBatch {
  /** [B, 1, T, S, S] row-major. */
  readonly x: Float32Array;
  readonly y: Int32Array;
}

/** A batch of clips drawn from all the page's digits: sample b from foldIn(k, b), as makeBatch does in Node. */
export function makeClips(digits: Digits, k: Key, size: number, spec: ClipSpec): ClipBatch {
  const { x, y } = drawClips(digits, k, size, spec);
  return { x, y };
}
