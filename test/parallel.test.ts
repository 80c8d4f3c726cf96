/**
 * Data-parallel training: with a fixed shard decomposition, the weights after N steps are bit for bit
 * the same whether the shards run in this process, on 2 workers or on 4 (src/train/shards.ts,
 * src/train/parallel.ts).
 */
import * as E from 'fp-ts/lib/Either.js';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { flattenWithPaths } from '../src/autodiff/pytree.ts';
import { presetConfig } from '../src/models/mvit/presets.ts';
import { buildModel } from '../src/models/mvit/model.ts';
import { foldIn, key, normal, randint } from '../src/random/index.ts';
import { crossEntropy } from '../src/train/loss.ts';
import { adamw } from '../src/train/optim.ts';
import { train, type Batch } from '../src/train/loop.ts';
import { startDataParallel } from '../src/train/parallel.ts';
import { inProcessShards, shardRanges, type GradientFn } from '../src/train/shards.ts';
import type { Tensor } from '../src/tensor/tensor.ts';

const cfgE = presetConfig('REV_MVIT_MINI');
if (E.isLeft(cfgE)) throw new Error('REV_MVIT_MINI does not parse');
// Dropout and drop path on, so the per-shard keys matter.
const cfg = { ...cfgE.right, MODEL: { ...cfgE.right.MODEL, DROPOUT_RATE: 0.1 }, MVIT: { ...cfgE.right.MVIT, DROPPATH_RATE: 0.1 } };
const model = buildModel(cfg);
const BATCH = 4;
const SHARDS = 4;
const STEPS = 3;
const d = cfg.DATA;
const inputShape = [BATCH, d.INPUT_CHANNEL_NUM[0], d.NUM_FRAMES, d.TRAIN_CROP_SIZE, d.TRAIN_CROP_SIZE];
const data = (s: number): Batch => ({ x: normal(foldIn(key(11), s), inputShape), labels: Array.from(randint(foldIn(key(12), s), BATCH, 0, cfg.MODEL.NUM_CLASSES)) });
const spec = { mode: 'reversible' as const, loss: (out: Tensor, labels: ArrayLike<number>) => crossEntropy(out, labels, 0.1) };

async function run(gradients: GradientFn<ReturnType<typeof model.init>>): Promise<Map<string, Float32Array>> {
  const result = await train({ model, params: model.init(key(0)), optimizer: adamw({ lr: 1e-3 }), data, steps: STEPS, key: key(3), gradients });
  const out = new Map<string, Float32Array>();
  for (const [path, t] of flattenWithPaths(result.params)) out.set(path, await t.data());
  return out;
}

const factory = { module: new URL('../src/models/mvit/model.ts', import.meta.url).href, exportName: 'buildModel', args: [cfg] };

test('shard ranges: contiguous, covering, the first B mod S one row longer; more shards than rows is an error', () => {
  assert.equal(shardRanges(10, 4), [[0, 3], [3, 6], [6, 8], [8, 10]]);
  assert.equal(shardRanges(4, 4), [[0, 1], [1, 2], [2, 3], [3, 4]]);
  assert.throws(() => shardRanges(3, 4), /cannot be cut into 4 shards/);
});

test('data-parallel training: the weights after 3 steps are bit-identical in process and on 2 and 4 workers', async () => {
  const reference = await run(inProcessShards(model, spec, SHARDS));
  for (const workers of [2, 4]) {
    const pool = await startDataParallel(model.init(key(0)), { workers, shards: SHARDS, model: factory, mode: 'reversible', labelSmoothing: 0.1 });
    try {
      assert.is(pool.workers, workers);
      const got = await run(pool.gradients);
      assert.equal([...got.keys()], [...reference.keys()]);
      for (const [path, want] of reference) {
        const have = got.get(path)!;
        for (let i = 0; i < want.length; i++) {
          if (!Object.is(have[i], want[i])) assert.unreachable(`${workers} workers: ${path}[${i}] = ${have[i]}, in process ${want[i]}`);
        }
      }
    } finally {
      await pool.close();
    }
  }
});

test('data-parallel: a worker whose model factory fails rejects with a typed error naming it', async () => {
  const bad = { module: factory.module, exportName: 'noSuchExport', args: [] };
  try {
    await startDataParallel(model.init(key(0)), { workers: 1, shards: 2, model: bad, mode: 'reversible', labelSmoothing: 0 });
    assert.unreachable('started');
  } catch (e) {
    assert.match(String(e), /BackendError: data-parallel worker: ArgumentError: .*noSuchExport/);
  }
});

test.run();
