/**
 * Moving-MNIST clips in a page or a worker (no Node): the digits come from /digits.bin (a subset of the
 * `mnist` package's digits, demo/serve.ts), the clip construction is src/data/moving-mnist.ts's
 * (the motion from a key, the trajectory, the max-compositing), with the clip geometry `npm start` uses
 * for a config (src/train/loop.ts movingMnistBatches: the digit at 28 px, 1-3 px a frame).
 */
import { areaResize, classLabel, DIGIT_SIDE, sampleMotion, trajectory, type ClipSpec } from '../src/data/moving-mnist.ts';
import { foldIn, randint, split, type Key } from '../src/random/index.ts';

export interface Digits {
  readonly count: number;
  readonly labels: Uint8Array;
  /** count x 28 x 28 values in [0, 1]. */
  readonly images: Float32Array;
}

export async function loadDigits(url = './digits.bin'): Promise<Digits> {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`loading ${url}: HTTP ${response.status}`);
  return parseDigits(new Uint8Array(await response.arrayBuffer()));
}

/** [u32 count][count labels][count x 784 pixels, 8-bit] (demo/serve.ts digitsSubset). */
export function parseDigits(bytes: Uint8Array): Digits {
  const count = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(0, true);
  const labels = bytes.slice(4, 4 + count);
  const images = Float32Array.from(bytes.subarray(4 + count, 4 + count + count * 784), (v) => v / 255);
  return { count, labels, images };
}

/** The clip geometry `npm start` uses for a model with `frames` frames of `size` x `size`. */
export function clipSpecFor(frames: number, size: number): ClipSpec {
  const digitSize = Math.min(28, Math.max(4, size - 4));
  return { frames, size, digitSize, minSpeed: 1, maxSpeed: Math.max(1, Math.min(3, size - digitSize)) };
}

export interface ClipBatch {
  /** [B, 1, T, S, S] row-major. */
  readonly x: Float32Array;
  readonly y: Int32Array;
}

/** A batch of clips: sample b from foldIn(k, b) (a digit pick and a motion), as makeBatch in moving-mnist.ts. */
export function makeClips(digits: Digits, k: Key, size: number, spec: ClipSpec): ClipBatch {
  const clip = spec.frames * spec.size * spec.size;
  const x = new Float32Array(size * clip);
  const y = new Int32Array(size);
  for (let b = 0; b < size; b++) {
    const [pick, motionKey] = split(foldIn(k, b));
    const index = randint(pick, 1, 0, digits.count)[0];
    const motion = sampleMotion(motionKey, spec);
    const digit = areaResize(digits.images.subarray(index * 784, (index + 1) * 784), DIGIT_SIDE, spec.digitSize);
    trajectory(motion, spec).forEach(([px, py], t) => {
      const base = b * clip + t * spec.size * spec.size;
      for (let r = 0; r < spec.digitSize; r++) {
        for (let c = 0; c < spec.digitSize; c++) {
          const at = base + (py + r) * spec.size + (px + c);
          x[at] = Math.max(x[at], digit[r * spec.digitSize + c]);
        }
      }
    });
    y[b] = classLabel(digits.labels[index], motion.direction);
  }
  return { x, y };
}
