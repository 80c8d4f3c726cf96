/**
 * The Moving-MNIST data set of `revgrad train`: the clips of src/data/clips.ts drawn from the 10,000 real
 * digits shipped by the `mnist` package, with a fixed train/test partition of the digit samples.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { key, permutation, type Key } from '../random/keys.ts';
import { tensor, type Tensor } from '../tensor/tensor.ts';
import { ArgumentError, DataError } from '../tensor/errors.ts';
import { assertSpec, clipInto, clipSpecFor, DEFAULT_CLIP_SPEC, DIGIT_PIXELS, drawClips, type ClipSpec, type MnistDigits } from './clips.ts';

export type Split = 'train' | 'test';

// ---------------------------------------------------------------------------------------------
// Digits

let loadedDigits: MnistDigits | undefined;

/**
 * All digits of the `mnist` package, read on first use and kept. The per-digit JSON files are
 * read directly: the package's entry point only adds helpers that shuffle nondeterministically.
 */
export function loadDigits(): MnistDigits {
  if (loadedDigits) return loadedDigits;
  const require = createRequire(import.meta.url);
  const perDigit = Array.from({ length: 10 }, (_, digit) => {
    const path = require.resolve(`mnist/src/digits/${digit}.json`);
    const data = (JSON.parse(readFileSync(path, 'utf8')) as { data: number[] }).data;
    if (data.length % DIGIT_PIXELS !== 0) {
      throw new DataError(path, `loadDigits: ${data.length} values, not a whole number of 28x28 images`);
    }
    return data;
  });
  const count = perDigit.reduce((total, data) => total + data.length / DIGIT_PIXELS, 0);
  const images = new Float32Array(count * DIGIT_PIXELS);
  const labels = new Uint8Array(count);
  let offset = 0;
  perDigit.forEach((data, digit) => {
    images.set(data, offset * DIGIT_PIXELS);
    labels.fill(digit, offset, offset + data.length / DIGIT_PIXELS);
    offset += data.length / DIGIT_PIXELS;
  });
  loadedDigits = { images, labels, count };
  return loadedDigits;
}

export interface DigitSplit {
  /** Sorted digit-sample indices of each part; the two parts are disjoint and cover all. */
  train: Int32Array;
  test: Int32Array;
}

const splitCache = new Map<number, DigitSplit>();

/**
 * A fixed train/test partition of the digit samples: the first round(count * testFraction)
 * entries of permutation(key(0), count) are the test samples. It depends on nothing but the
 * fraction, so train and test clips never share a handwritten sample across runs.
 */
export function splitDigits(testFraction = 0.2): DigitSplit {
  if (!(testFraction > 0 && testFraction < 1)) {
    throw new ArgumentError('splitDigits', `testFraction must be in (0, 1), got ${testFraction}`);
  }
  const cached = splitCache.get(testFraction) ?? computeSplit(testFraction);
  splitCache.set(testFraction, cached);
  // Copies, so a caller's edits cannot change the partition later batches draw from.
  return { train: cached.train.slice(), test: cached.test.slice() };
}

function computeSplit(testFraction: number): DigitSplit {
  const { count } = loadDigits();
  const testCount = Math.round(count * testFraction);
  if (testCount === 0 || testCount === count) {
    throw new ArgumentError('splitDigits', `testFraction ${testFraction} leaves one part of ${count} samples empty`);
  }
  const order = permutation(key(0), count);
  return {
    train: order.slice(testCount).sort(),
    test: order.slice(0, testCount).sort(),
  };
}

const DEFAULT_TEST_FRACTION = 0.2;

/** Sample indices that `makeBatch` draws from for a split (cached, never handed out). */
function splitIndices(part: Split): Int32Array {
  splitDigits(DEFAULT_TEST_FRACTION);
  const cached = splitCache.get(DEFAULT_TEST_FRACTION)!;
  return part === 'train' ? cached.train : cached.test;
}

/** Number of distinct digit samples a split draws from. */
export function datasetSize(part: Split): number {
  assertSplit(part);
  return splitIndices(part).length;
}

function assertSplit(part: string): asserts part is Split {
  if (part !== 'train' && part !== 'test') throw new ArgumentError('moving-mnist', `split must be 'train' or 'test', got '${part}'`);
}

// ---------------------------------------------------------------------------------------------
// Clips and batches

/**
 * One clip of digit sample `digitIndex` ([1, T, S, S], values in [0, 1]); its motion is
 * sampleMotion(k, spec), so trajectory(sampleMotion(k, spec), spec) gives its positions.
 */
export function makeClip(
  k: Key,
  digitIndex: number,
  spec: ClipSpec = DEFAULT_CLIP_SPEC,
): { clip: Float32Array; label: number } {
  assertSpec(spec);
  const clip = new Float32Array(spec.frames * spec.size * spec.size);
  const label = clipInto(loadDigits(), clip, 0, k, digitIndex, spec);
  return { clip, label };
}

export interface Batch {
  /** [B, 1, T, S, S] clips. */
  x: Float32Array;
  /** [B] class labels in [0, 40). */
  y: Int32Array;
  /** [B, 1, T, S, S]. */
  shape: number[];
  /** [B] index (into loadDigits()) of the digit sample each clip shows; all in the split. */
  digits: Int32Array;
}

/**
 * A batch of clips from one split (drawClips over the split's digit samples): the same key always gives
 * the same batch, and sample b does not depend on the batch size.
 */
export function makeBatch(k: Key, part: Split, batchSize: number, spec: ClipSpec = DEFAULT_CLIP_SPEC): Batch {
  assertSplit(part);
  const { x, y, digits } = drawClips(loadDigits(), k, batchSize, spec, splitIndices(part));
  return { x, y, shape: [batchSize, 1, spec.frames, spec.size, spec.size], digits };
}

// ---------------------------------------------------------------------------------------------
// Batches for a model

/** Batches of tensors for a model's input: one call per (key, split, batch size). */
export type KeyedBatches = (k: Key, part: Split, size: number) => { readonly x: Tensor; readonly labels: Int32Array };

/** Moving-MNIST batches shaped for a config's input: [B, C, T, S, S] ([B, C, S, S] for 2-D patches). */
export function movingMnistBatches(cfg: {
  readonly DATA: { readonly NUM_FRAMES: number; readonly TRAIN_CROP_SIZE: number; readonly INPUT_CHANNEL_NUM: readonly number[] };
  readonly MVIT: { readonly PATCH_2D: boolean };
}): KeyedBatches {
  const frames = cfg.MVIT.PATCH_2D ? 1 : cfg.DATA.NUM_FRAMES;
  const size = cfg.DATA.TRAIN_CROP_SIZE;
  const channels = cfg.DATA.INPUT_CHANNEL_NUM[0] ?? 1;
  const spec = clipSpecFor(frames, size);
  return (k, part, n) => {
    const b = makeBatch(k, part, n, spec);
    const per = frames * size * size;
    let x = b.x;
    if (channels !== 1) {
      x = new Float32Array(n * channels * per);
      for (let i = 0; i < n; i++) for (let c = 0; c < channels; c++) x.set(b.x.subarray(i * per, (i + 1) * per), (i * channels + c) * per);
    }
    const shape = cfg.MVIT.PATCH_2D ? [n, channels, size, size] : [n, channels, frames, size, size];
    return { x: tensor(x, shape), labels: b.y };
  };
}
