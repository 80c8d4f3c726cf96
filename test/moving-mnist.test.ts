/** Moving-MNIST clips: data loading, the train/test partition, determinism, labels and motion. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fc from 'fast-check';
import { DEFAULT_CLIP_SPEC, DIGIT_SIDE, DIRECTIONS, NUM_CLASSES, areaResize, classLabel, sampleMotion, trajectory, type ClipSpec } from '../src/data/clips.ts';
import { datasetSize, loadDigits, makeBatch, makeClip, splitDigits } from '../src/data/moving-mnist.ts';
import { foldIn, key, type Key } from '../src/random/keys.ts';

const spec = DEFAULT_CLIP_SPEC;
const frameLength = spec.size * spec.size;
const uint32 = fc.integer({ min: 0, max: 0xffffffff });
const anyKey: fc.Arbitrary<Key> = fc.tuple(uint32, uint32);

/** Ink-weighted centre [x, y] and total ink of frame t of a [T, S, S] clip. */
function centreOfMass(clip: Float32Array, t: number, size: number): { x: number; y: number; mass: number } {
  let mass = 0;
  let sx = 0;
  let sy = 0;
  for (let r = 0; r < size; r++) {
    for (let c = 0; c < size; c++) {
      const v = clip[t * size * size + r * size + c]!;
      mass += v;
      sx += v * c;
      sy += v * r;
    }
  }
  return { x: sx / mass, y: sy / mass, mass };
}

test('loadDigits reads all 10,000 digits with their labels', () => {
  const digits = loadDigits();
  assert.is(digits.count, 10000);
  assert.is(digits.images.length, 10000 * DIGIT_SIDE * DIGIT_SIDE);
  assert.ok(digits.images.every((v) => v >= 0 && v <= 1));
  const perDigit = new Array<number>(10).fill(0);
  digits.labels.forEach((d) => perDigit[d]!++);
  assert.equal(perDigit, [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]);
  assert.is(loadDigits(), digits, 'loaded once and kept');
});

test('splitDigits is a fixed disjoint partition of all samples', () => {
  const { train, test: testPart } = splitDigits();
  assert.is(train.length, 8000);
  assert.is(testPart.length, 2000);
  const trainSet = new Set(train);
  assert.ok(testPart.every((i) => !trainSet.has(i)), 'train and test share a sample');
  assert.equal([...train, ...testPart].sort((a, b) => a - b), Array.from({ length: 10000 }, (_, i) => i));
  assert.equal(splitDigits(), { train, test: testPart });
  assert.is(datasetSize('train'), 8000);
  assert.is(datasetSize('test'), 2000);
  // Both parts hold every digit class.
  const labels = loadDigits().labels;
  assert.is(new Set(Array.from(testPart, (i) => labels[i])).size, 10);
  // Callers get copies: editing one does not move samples between parts.
  train.fill(0);
  assert.is(new Set(splitDigits().train).size, 8000);
  assert.is(splitDigits(0.5).test.length, 5000);
  assert.throws(() => splitDigits(0), /testFraction/);
});

test('areaResize keeps constants constant and preserves ink per area', () => {
  const ones = new Float32Array(28 * 28).fill(1);
  assert.ok(areaResize(ones, 28, 16).every((v) => Math.abs(v - 1) < 1e-6));
  const image = loadDigits().images.subarray(0, 28 * 28);
  const small = areaResize(image, 28, 16);
  const total = (xs: Float32Array): number => xs.reduce((a, b) => a + b, 0);
  assert.ok(Math.abs(total(small) * (28 / 16) ** 2 - total(image)) < 1e-3);
  assert.equal(areaResize(image, 28, 28), Float32Array.from(image));
  assert.ok(small.every((v) => v >= 0 && v <= 1));
});

test('makeBatch is deterministic in its key and sample b ignores the batch size', () => {
  const a = makeBatch(key(7), 'train', 6);
  const b = makeBatch(key(7), 'train', 6);
  assert.equal(a.x, b.x);
  assert.equal(a.y, b.y);
  assert.equal(a.digits, b.digits);
  assert.equal(a.shape, [6, 1, spec.frames, spec.size, spec.size]);
  assert.is(a.x.length, 6 * spec.frames * frameLength);
  const other = makeBatch(key(8), 'train', 6);
  assert.not.equal(a.x, other.x);
  const longer = makeBatch(key(7), 'train', 9);
  assert.equal(longer.x.subarray(0, a.x.length), a.x);
  assert.equal(longer.y.subarray(0, 6), a.y);
});

test('labels are digit * 4 + direction, in [0, 40), and all 40 classes appear in 2000 clips', () => {
  const batch = makeBatch(key(11), 'train', 2000);
  const labels = loadDigits().labels;
  assert.ok(batch.y.every((y) => y >= 0 && y < NUM_CLASSES));
  batch.y.forEach((y, b) => assert.is(Math.floor(y / 4), labels[batch.digits[b]!]));
  assert.is(new Set(batch.y).size, NUM_CLASSES);
  assert.ok(batch.x.every((v) => v >= 0 && v <= 1), 'pixel outside [0, 1]');
  assert.ok(batch.x.some((v) => v > 0.5), 'batch has no ink');
});

test('train and test batches draw from disjoint digit samples', () => {
  const { train, test: testPart } = splitDigits();
  const trainSet = new Set(train);
  const testSet = new Set(testPart);
  const trainBatch = makeBatch(key(21), 'train', 300);
  const testBatch = makeBatch(key(21), 'test', 300);
  assert.ok(trainBatch.digits.every((i) => trainSet.has(i)));
  assert.ok(testBatch.digits.every((i) => testSet.has(i)));
  assert.is(new Set(testBatch.y).size > 20, true, 'test clips cover many classes');
});

test('makeClip labels the direction that frames 0 and 1 show', () => {
  const labels = loadDigits().labels;
  for (let s = 0; s < 300; s++) {
    const k = foldIn(key(31), s);
    const digitIndex = (s * 37) % 10000;
    const { clip, label } = makeClip(k, digitIndex, spec);
    const direction = DIRECTIONS[label % 4]!;
    assert.is(label, classLabel(labels[digitIndex]!, label % 4));
    const c0 = centreOfMass(clip, 0, spec.size);
    const c1 = centreOfMass(clip, 1, spec.size);
    const dx = c1.x - c0.x;
    const dy = c1.y - c0.y;
    // Velocity is purely along one axis and the first step never bounces.
    const [along, across] = direction === 'right' || direction === 'left' ? [dx, dy] : [dy, dx];
    const sign = direction === 'right' || direction === 'down' ? 1 : -1;
    assert.ok(sign * along >= 1 - 1e-4, `${direction} clip moved ${along} along its axis (sample ${s})`);
    assert.ok(Math.abs(across) < 1e-4, `${direction} clip drifted ${across} across its axis (sample ${s})`);
    // The centre moves exactly as the drawn positions do.
    const [p0, p1] = trajectory(sampleMotion(k, spec), spec);
    assert.ok(Math.abs(dx - (p1![0] - p0![0])) < 1e-4 && Math.abs(dy - (p1![1] - p0![1])) < 1e-4);
  }
});

test('digits bounce and stay fully on the canvas in every frame', () => {
  // Moving right from x = 14 at 2 px/frame: reaches the edge (16), then comes back.
  const right = trajectory({ direction: 0, speed: 2, start: [14, 3] }, spec);
  assert.equal(right.map(([x]) => x), [14, 16, 14, 12, 10, 8, 6, 4]);
  assert.ok(right.every(([, y]) => y === 3));
  // Moving up from y = 2: bounces off the top edge.
  const up = trajectory({ direction: 3, speed: 2, start: [5, 2] }, spec);
  assert.equal(up.map(([, y]) => y), [2, 0, 2, 4, 6, 8, 10, 12]);

  const longSpec: ClipSpec = { frames: 40, size: 24, digitSize: 10, minSpeed: 1, maxSpeed: 3 };
  fc.assert(
    fc.property(anyKey, fc.integer({ min: 0, max: 9999 }), (k, digitIndex) => {
      const max = longSpec.size - longSpec.digitSize;
      const motion = sampleMotion(k, longSpec);
      const positions = trajectory(motion, longSpec);
      assert.ok(positions.every(([x, y]) => x >= 0 && x <= max && y >= 0 && y <= max));
      // Long clips at these speeds must actually bounce: the moving coordinate reverses.
      const moving = positions.map(([x, y]) => (motion.direction < 2 ? x : y));
      const steps = moving.slice(1).map((p, t) => p - moving[t]!);
      assert.ok(steps.some((d) => d > 0) && steps.some((d) => d < 0), `no bounce in ${moving}`);
      // Nothing is clipped at the canvas edge: every frame holds the same ink.
      const { clip } = makeClip(k, digitIndex, longSpec);
      const mass0 = centreOfMass(clip, 0, longSpec.size).mass;
      for (let t = 1; t < longSpec.frames; t++) {
        assert.ok(Math.abs(centreOfMass(clip, t, longSpec.size).mass - mass0) < 1e-3 * mass0);
      }
      assert.ok(clip.every((v) => v >= 0 && v <= 1));
    }),
    { numRuns: 40 },
  );
});

test('invalid specs and arguments are rejected', () => {
  assert.throws(() => makeClip(key(0), 0, { ...spec, digitSize: 32 }), /digitSize/);
  assert.throws(() => makeClip(key(0), 0, { ...spec, minSpeed: 0 }), /minSpeed/);
  assert.throws(() => makeClip(key(0), 0, { ...spec, maxSpeed: 17 }), /maxSpeed/);
  assert.throws(() => makeClip(key(0), 0, { ...spec, frames: 0 }), /positive integers/);
  assert.throws(() => makeClip(key(0), 10000), /digit index/);
  assert.throws(() => makeBatch(key(0), 'val' as 'train', 1), /split/);
  assert.throws(() => makeBatch(key(0), 'train', -1), /batchSize/);
});

test.run();
