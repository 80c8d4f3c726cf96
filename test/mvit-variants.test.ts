/**
 * Config variants the shared fixtures do not cover (the held-back fixtures do): every fusion mode, pooling
 * mode, POOL_FIRST, conv_unshared, NORM_STEM, dropout / drop path / head dropout, sigmoid heads, RES_PATH
 * max, mean pooling. Each builds, initialises from a key, and is checked against references outside
 * itself: its eval output is the head activation (softmax or sigmoid, computed here) of the logits of the
 * same model with every dropout rate set to 0; its parameter gradient agrees with central finite
 * differences of the loss (the law kit's 'fd' check); and reversible and store mode give the same
 * gradients (the masks replay exactly).
 */
import * as E from 'fp-ts/lib/Either.js';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { flattenWithPaths } from '../src/autodiff/pytree.ts';
import { vjp } from '../src/autodiff/tape.ts';
import { formatProblems, parseConfig } from '../src/models/mvit/config.ts';
import { buildModel } from '../src/models/mvit/model.ts';
import { key, normal } from '../src/random/index.ts';
import { mul, sum } from '../src/tensor/ops.ts';
import type { Tensor } from '../src/tensor/tensor.ts';
import fc from 'fast-check';
import { unflattenLike } from '../src/autodiff/pytree.ts';
import { vjpLaw } from '../src/laws/index.ts';

/** The small video config of the shared fixtures (revmvit_video_conv_avg_full). */
const BASE = {
  DATA: { NUM_FRAMES: 4, TRAIN_CROP_SIZE: 16, TEST_CROP_SIZE: 16, INPUT_CHANNEL_NUM: [3] },
  MODEL: { NUM_CLASSES: 10, DROPOUT_RATE: 0.0, HEAD_ACT: 'softmax' },
  MVIT: {
    PATCH_2D: false, PATCH_KERNEL: [3, 3, 3], PATCH_STRIDE: [2, 2, 2], PATCH_PADDING: [1, 1, 1],
    EMBED_DIM: 8, NUM_HEADS: 1, DEPTH: 5, MLP_RATIO: 4.0, QKV_BIAS: false, SEPARATE_QKV: false, MODE: 'conv',
    CLS_EMBED_ON: false, USE_ABS_POS: true, SEP_POS_EMBED: true,
    DIM_MUL: [[1, 2.0], [3, 2.0]], HEAD_MUL: [[1, 2.0], [3, 2.0]], POOL_Q_STRIDE: [[1, 1, 2, 2], [3, 1, 2, 2]],
    POOL_KVQ_KERNEL: [3, 3, 3], POOL_KV_STRIDE_ADAPTIVE: [1, 4, 4],
    REL_POS_SPATIAL: true, REL_POS_TEMPORAL: true, RESIDUAL_POOLING: true, USE_MEAN_POOLING: false,
    DROPOUT_RATE: 0.0, DROPPATH_RATE: 0.0,
    REV: { ENABLE: true, BUFFER_LAYERS: [1, 3], RES_PATH: 'conv', PRE_Q_FUSION: 'avg', RESPATH_FUSE: 'concat' },
  },
};

type Variant = { MVIT?: Record<string, unknown>; REV?: Record<string, unknown>; MODEL?: Record<string, unknown> };

const VARIANTS: Record<string, Variant> = {
  'ln+concat_linear pre-Q fusion, concat_linear final fuse': { REV: { PRE_Q_FUSION: 'ln+concat_linear', RESPATH_FUSE: 'concat_linear' } },
  'concat_linear_2_0.1 fusion (MLP dropout)': { REV: { PRE_Q_FUSION: 'concat_linear_2_0.1' } },
  'max pre-Q fusion': { REV: { PRE_Q_FUSION: 'max' } },
  'add pre-Q fusion': { REV: { PRE_Q_FUSION: 'add' } },
  'avg final fuse with mean pooling': { MVIT: { USE_MEAN_POOLING: true }, REV: { RESPATH_FUSE: 'avg' } },
  'avg pooling attention': { MVIT: { MODE: 'avg' } },
  'max pooling attention': { MVIT: { MODE: 'max' } },
  'POOL_FIRST (separate q/k/v after pooling)': { MVIT: { POOL_FIRST: true, QKV_BIAS: true } },
  'conv_unshared with POOL_FIRST': { MVIT: { MODE: 'conv_unshared', POOL_FIRST: true } },
  'RES_PATH max': { REV: { RES_PATH: 'max' } },
  'NORM_STEM, dropout, drop path, head dropout, sigmoid head': {
    MVIT: { NORM_STEM: true, DROPOUT_RATE: 0.1, DROPPATH_RATE: 0.2, SEP_POS_EMBED: false },
    MODEL: { DROPOUT_RATE: 0.3, HEAD_ACT: 'sigmoid' },
  },
};

/** A fusion mode without its dropout: 'concat_linear_2_0.1' -> 'concat_linear_2' (the parameters are the same). */
const noFusionDropout = (mode: unknown) => (typeof mode === 'string' ? mode.replace(/^(.*concat_linear_\d+)_[\d.]+$/, '$1') : mode);

const configOf = (v: Variant, rates?: 'no dropout') => {
  const zero = rates === 'no dropout';
  const rev: Record<string, unknown> = { ...BASE.MVIT.REV, ...v.REV };
  if (zero) for (const k of ['PRE_Q_FUSION', 'RESPATH_FUSE']) rev[k] = noFusionDropout(rev[k]);
  const parsed = parseConfig({
    ...BASE,
    MODEL: { ...BASE.MODEL, ...v.MODEL, ...(zero ? { DROPOUT_RATE: 0 } : {}) },
    MVIT: { ...BASE.MVIT, ...v.MVIT, ...(zero ? { DROPOUT_RATE: 0, DROPPATH_RATE: 0 } : {}), REV: rev },
  });
  if (E.isLeft(parsed)) throw new Error(formatProblems(parsed.left));
  return parsed.right;
};

for (const [name, v] of Object.entries(VARIANTS)) {
  test(`${name}: builds; eval = head activation of the dropout-free logits; gradients = finite differences; reversible == store`, async () => {
    const cfg = configOf(v);
    const model = buildModel(cfg);
    const params = model.init(key(1));
    assert.equal(flattenWithPaths(params).map(([n]) => n), model.specs.map((s) => s.name));
    const x = normal(key(2), [2, 3, 4, 16, 16]);
    const w = normal(key(3), [2, 10]);
    // Eval mode: no dropout, the head activation applied. Reference: the same weights in a model whose
    // rates are all 0, run in train mode (raw logits), activated here in float64.
    const probs = model.apply(params, x, key(4), { train: false }).dataSync();
    const logits = buildModel(configOf(v, 'no dropout')).apply(params, x, key(4), { train: true }).dataSync();
    const want = Array.from({ length: 2 }, (_, b) => {
      const row = Array.from(logits.subarray(b * 10, b * 10 + 10));
      if (cfg.MODEL.HEAD_ACT === 'sigmoid') return row.map((z) => 1 / (1 + Math.exp(-z)));
      const m = Math.max(...row);
      const e = row.map((z) => Math.exp(z - m));
      return e.map((q) => q / e.reduce((a, c) => a + c, 0));
    }).flat();
    want.forEach((q, i) => assert.ok(Math.abs(probs[i] - q) <= 1e-6, `eval output ${i}: ${probs[i]} vs ${cfg.MODEL.HEAD_ACT}(logits) ${q}`));
    // The loss <logits, w> in train mode (dropout with a fixed key) as a function of every parameter leaf.
    const named = flattenWithPaths(params);
    const loss = (mode: 'reversible' | 'store') => (...leaves: Tensor[]) => sum(mul(model.apply(unflattenLike(params, leaves) as never, x, key(5), { train: true, mode }), w));
    // One central difference moving every leaf by h·v, v uniform in [-1, 1]. h = 3e-5 on weights of size
    // ~0.02: some variants curve strongly along such directions (avg-pooling attention: the difference
    // quotient is off by 40% at h = 1e-3 and converges like h², to 0.3% of the tolerance at 3e-5).
    const fd = await vjpLaw(fc.constant({ f: loss('reversible'), inputs: named.map(([, t]) => t) }), { checks: ['fd'], fdInputs: 'together', h: 3e-5 }).check({ runs: 2, seed: 1 });
    assert.ok(fd.ok, fd.text);
    const grads = (mode: 'reversible' | 'store') => {
      const [, pullback] = vjp((q: unknown) => sum(mul(model.apply(q as never, x, key(5), { train: true, mode }), w)), params);
      return flattenWithPaths(pullback()[0]) as [string, Tensor][];
    };
    const rev = grads('reversible');
    const sto = new Map(grads('store'));
    let largest = 0;
    for (const [, g] of rev) for (const a of g.dataSync()) largest = Math.max(largest, Math.abs(a));
    assert.ok(largest > 0, 'some gradient is non-zero');
    for (const [n, g] of rev) {
      const a = g.dataSync();
      const b = sto.get(n)!.dataSync();
      let err = 0;
      let scale = 0;
      for (let i = 0; i < a.length; i++) {
        err = Math.max(err, Math.abs(a[i] - b[i]));
        scale = Math.max(scale, Math.abs(b[i]));
      }
      // relative 1e-4 per tensor, with an absolute floor for (analytically) zero gradients
      assert.ok(err <= 1e-4 * scale + 1e-6 * largest, `${n}: reversible vs store ${err} (scale ${scale})`);
    }
  });
}

test('the stack alone with a cls token (CLS_EMBED_ON, as applyStack)', () => {
  const parsed = parseConfig({ ...BASE, MVIT: { ...BASE.MVIT, CLS_EMBED_ON: true } }, { target: 'stack' });
  if (E.isLeft(parsed)) return assert.unreachable(formatProblems(parsed.left));
  const model = buildModel(parsed.right);
  const params = model.init(key(1));
  const tokens = normal(key(2), [2, 1 + 128, 8]);
  const out = model.applyStack(params, tokens, key(3), { train: true });
  assert.equal([...out.shape], [2, 1 + 8, 64]);
});

test.run();
