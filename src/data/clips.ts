/**
 * Moving-MNIST-style clips from any set of 28x28 digits (no file access, so pages and workers use it too:
 * the demo hands it the digits it fetched, src/data/moving-mnist.ts the `mnist` package's).
 *
 * Each clip shows one downscaled digit moving at constant speed along one axis and bouncing off
 * the canvas edges (the Moving MNIST construction of Srivastava et al., 2015, restricted to axis
 * motion). The class is digit * 4 + initial direction, 40 classes, so a model must recognise
 * both what the digit is and where it goes. Every random choice is drawn from a threefry key,
 * so a key always gives the same clip or batch.
 */
import { foldIn, randint, split, uniform, type Key } from '../random/keys.ts';
import { ArgumentError, ShapeError } from '../tensor/errors.ts';

/** Side of the source MNIST images. */
export const DIGIT_SIDE = 28;
export const DIGIT_PIXELS = DIGIT_SIDE * DIGIT_SIDE;

/** Initial directions, in label order: class = digit * 4 + direction index. */
export const DIRECTIONS = ['right', 'left', 'down', 'up'] as const;
export type Direction = (typeof DIRECTIONS)[number];
export const NUM_CLASSES = 10 * DIRECTIONS.length;

/** Unit velocity of each direction in image coordinates (x to the right, y downwards). */
const DIRECTION_VECTORS: readonly (readonly [number, number])[] = [
  [1, 0],
  [-1, 0],
  [0, 1],
  [0, -1],
];

export interface ClipSpec {
  /** Frames per clip (T). */
  frames: number;
  /** Side of the square canvas (S). */
  size: number;
  /** Side the 28x28 digit is area-resampled to before it is drawn. */
  digitSize: number;
  /** Speed range in pixels per frame; the speed is uniform in [minSpeed, maxSpeed). */
  minSpeed: number;
  maxSpeed: number;
}

/** The default model input: 8 frames of 32x32, one channel. */
export const DEFAULT_CLIP_SPEC: Readonly<ClipSpec> = Object.freeze({
  frames: 8,
  size: 32,
  digitSize: 16,
  minSpeed: 1,
  maxSpeed: 2,
});

/**
 * The clip geometry training uses for a model input of `frames` frames of `size` x `size`: digits at
 * MNIST's own 28 px where the canvas allows (no resampling blur: the digit is what is hard to learn),
 * moving 1-3 px a frame within the room left.
 */
export function clipSpecFor(frames: number, size: number): ClipSpec {
  const digitSize = Math.min(28, Math.max(4, size - 4));
  return { frames, size, digitSize, minSpeed: 1, maxSpeed: Math.max(1, Math.min(3, size - digitSize)) };
}

/** Digits to draw clips from. */
export interface MnistDigits {
  /** count x 28 x 28 pixel values in [0, 1], row-major. */
  images: Float32Array;
  /** The digit (0..9) of each image. */
  labels: Uint8Array;
  count: number;
}

// ---------------------------------------------------------------------------------------------
// Resampling

/**
 * Weights of 1-D area resampling: out[o] = sum_i w[o][i] * in[i], where w[o][i] is the overlap
 * of output cell o (stretched over the input axis) with input cell i, divided by the cell width,
 * so each row of weights sums to one and constant images stay constant.
 */
function areaWeights(inSide: number, outSide: number): Float64Array {
  const scale = inSide / outSide;
  const weights = new Float64Array(outSide * inSide);
  for (let o = 0; o < outSide; o++) {
    const from = o * scale;
    const to = (o + 1) * scale;
    for (let i = Math.floor(from); i < Math.min(inSide, Math.ceil(to)); i++) {
      const overlap = Math.min(to, i + 1) - Math.max(from, i);
      if (overlap > 0) weights[o * inSide + i] = overlap / scale;
    }
  }
  return weights;
}

/** Resamples a square image by area averaging (separable: rows, then columns). */
export function areaResize(src: Float32Array, inSide: number, outSide: number): Float32Array {
  if (src.length !== inSide * inSide) {
    throw new ShapeError('areaResize', `expected ${inSide}x${inSide} = ${inSide * inSide} pixels, got ${src.length}`);
  }
  const w = areaWeights(inSide, outSide);
  const rowsDone = new Float64Array(inSide * outSide); // [inSide rows][outSide cols]
  for (let r = 0; r < inSide; r++) {
    for (let o = 0; o < outSide; o++) {
      let acc = 0;
      for (let i = 0; i < inSide; i++) acc += w[o * inSide + i]! * src[r * inSide + i]!;
      rowsDone[r * outSide + o] = acc;
    }
  }
  const out = new Float32Array(outSide * outSide);
  for (let o = 0; o < outSide; o++) {
    for (let c = 0; c < outSide; c++) {
      let acc = 0;
      for (let r = 0; r < inSide; r++) acc += w[o * inSide + r]! * rowsDone[r * outSide + c]!;
      // Clamp float rounding so pixel values stay within [0, 1] like the source.
      out[o * outSide + c] = Math.min(1, Math.max(0, acc));
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Motion

export interface Motion {
  /** Index into DIRECTIONS of the initial velocity. */
  direction: number;
  /** Pixels per frame. */
  speed: number;
  /** Top-left corner of the digit in frame 0, in continuous canvas coordinates [x, y]. */
  start: readonly [number, number];
}

export function assertSpec(spec: ClipSpec): void {
  const { frames, size, digitSize, minSpeed, maxSpeed } = spec;
  const positiveInteger = (v: number): boolean => Number.isSafeInteger(v) && v > 0;
  if (!positiveInteger(frames) || !positiveInteger(size) || !positiveInteger(digitSize)) {
    throw new ArgumentError('moving-mnist', `frames, size and digitSize must be positive integers, got ${JSON.stringify(spec)}`);
  }
  if (digitSize >= size) {
    throw new ArgumentError('moving-mnist', `digitSize ${digitSize} must be smaller than size ${size} so the digit can move`);
  }
  // A zero speed would hide the direction, and so the label; a speed above size - digitSize
  // would leave no start from which the first step is free of bounces.
  if (!(minSpeed > 0 && minSpeed <= maxSpeed && maxSpeed <= size - digitSize)) {
    throw new ArgumentError(
      'moving-mnist',
      `need 0 < minSpeed <= maxSpeed <= size - digitSize, got [${minSpeed}, ${maxSpeed}] with size ${size}, digitSize ${digitSize}`,
    );
  }
}

/** Largest top-left coordinate that keeps the digit fully on the canvas. */
const maxPosition = (spec: ClipSpec): number => spec.size - spec.digitSize;

/**
 * Direction, speed and start position of one clip, all drawn from k. The start is uniform over
 * the canvas except along the motion axis, where it keeps one step of room ahead: the first step
 * never bounces, so with speeds of at least 1 px/frame the labelled initial direction is always
 * what frames 0 and 1 show (slower digits may need a few frames to move a whole pixel).
 */
export function sampleMotion(k: Key, spec: ClipSpec = DEFAULT_CLIP_SPEC): Motion {
  assertSpec(spec);
  const [directionKey, continuousKey] = split(k) as [Key, Key];
  const direction = randint(directionKey, 1, 0, DIRECTIONS.length)[0]!;
  const [speedU = 0, xU = 0, yU = 0] = uniform(continuousKey, 3);
  const speed = spec.minSpeed + speedU * (spec.maxSpeed - spec.minSpeed);
  const span = maxPosition(spec);
  const [ux, uy] = DIRECTION_VECTORS[direction]!;
  // Moving towards +axis the start must be <= span - speed; towards -axis, >= speed.
  const startAlong = (u: number, unit: number): number =>
    unit === 0 ? u * span : (unit > 0 ? 0 : speed) + u * (span - speed);
  return { direction, speed, start: [startAlong(xU, ux), startAlong(yU, uy)] };
}

/**
 * Moves p by v inside [0, max], reflecting off either end as often as needed; a reflection also
 * reverses the velocity, which is the bounce.
 */
function reflectInto(p: number, v: number, max: number): [number, number] {
  let position = p;
  let velocity = v;
  while (position < 0 || position > max) {
    position = position < 0 ? -position : 2 * max - position;
    velocity = -velocity;
  }
  return [position, velocity];
}

/**
 * Integer top-left [x, y] of the digit in every frame: constant velocity along the chosen axis,
 * bouncing off the canvas edges, rounded to whole pixels for drawing.
 */
export function trajectory(motion: Motion, spec: ClipSpec = DEFAULT_CLIP_SPEC): [number, number][] {
  assertSpec(spec);
  const max = maxPosition(spec);
  const [ux, uy] = DIRECTION_VECTORS[motion.direction]!;
  let [x, y] = motion.start;
  let vx = ux * motion.speed;
  let vy = uy * motion.speed;
  const positions: [number, number][] = [];
  for (let t = 0; t < spec.frames; t++) {
    positions.push([Math.round(x), Math.round(y)]);
    [x, vx] = reflectInto(x + vx, vx, max);
    [y, vy] = reflectInto(y + vy, vy, max);
  }
  return positions;
}

// ---------------------------------------------------------------------------------------------
// Clips and batches

/** Class of a clip: digit * 4 + direction index. */
export const classLabel = (digit: number, direction: number): number => digit * DIRECTIONS.length + direction;

/** Draws the digit at each frame's position into `out` ([T, S, S] at `offset`) by max-compositing. */
function renderInto(
  out: Float32Array,
  offset: number,
  digit: Float32Array,
  positions: readonly (readonly [number, number])[],
  spec: ClipSpec,
): void {
  const { size, digitSize } = spec;
  positions.forEach(([x, y], t) => {
    const frame = offset + t * size * size;
    for (let r = 0; r < digitSize; r++) {
      for (let c = 0; c < digitSize; c++) {
        const at = frame + (y + r) * size + (x + c);
        out[at] = Math.max(out[at]!, digit[r * digitSize + c]!);
      }
    }
  });
}

/** Writes the clip of digit sample `digitIndex` with motion sampleMotion(k, spec) into out at offset; returns its label. */
export function clipInto(digits: MnistDigits, out: Float32Array, offset: number, k: Key, digitIndex: number, spec: ClipSpec): number {
  if (!Number.isInteger(digitIndex) || digitIndex < 0 || digitIndex >= digits.count) {
    throw new ArgumentError('moving-mnist', `digit index must be an integer in [0, ${digits.count}), got ${digitIndex}`);
  }
  const motion = sampleMotion(k, spec);
  const image = digits.images.subarray(digitIndex * DIGIT_PIXELS, (digitIndex + 1) * DIGIT_PIXELS);
  renderInto(out, offset, areaResize(image, DIGIT_SIDE, spec.digitSize), trajectory(motion, spec), spec);
  return classLabel(digits.labels[digitIndex]!, motion.direction);
}

export interface ClipBatch {
  /** [B, 1, T, S, S] clips, values in [0, 1]. */
  x: Float32Array;
  /** [B] class labels in [0, 40). */
  y: Int32Array;
  /** [B] index (into the digits) of the digit sample each clip shows. */
  digits: Int32Array;
}

/**
 * A batch of clips. Sample b uses foldIn(k, b), split into a key that picks the digit sample (uniformly
 * among `pool`, sample indices; all digits when absent) and a key for the clip's motion, so the same key
 * always gives the same batch and sample b does not depend on the batch size.
 */
export function drawClips(digits: MnistDigits, k: Key, batchSize: number, spec: ClipSpec, pool?: Int32Array): ClipBatch {
  assertSpec(spec);
  if (!Number.isSafeInteger(batchSize) || batchSize < 0) {
    throw new ArgumentError('makeBatch', `batchSize must be a non-negative integer, got ${batchSize}`);
  }
  const choices = pool?.length ?? digits.count;
  const clipLength = spec.frames * spec.size * spec.size;
  const x = new Float32Array(batchSize * clipLength);
  const y = new Int32Array(batchSize);
  const picked = new Int32Array(batchSize);
  for (let b = 0; b < batchSize; b++) {
    const [pickKey, motionKey] = split(foldIn(k, b)) as [Key, Key];
    const choice = randint(pickKey, 1, 0, choices)[0]!;
    picked[b] = pool === undefined ? choice : pool[choice]!;
    y[b] = clipInto(digits, x, b * clipLength, motionKey, picked[b]!, spec);
  }
  return { x, y, digits: picked };
}
