/**
 * Rev-MViT config, geometry, parameter table and presets, checked against the golden fixtures'
 * metadata (the per-layer table and the tensor names/shapes PySlowFast wrote) and against the
 * parameter counts of PySlowFast's published models.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as E from 'fp-ts/lib/Either.js';
import fc from 'fast-check';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import {
  DEFAULT_CONFIG,
  formatProblems,
  parseConfig,
  parseConfigText,
  type ConfigProblem,
  type MViTConfig,
} from '../src/models/mvit/config.ts';
import { buildGeometry, dropPathRates, layerGroups, roundWidth, type PoolSpec } from '../src/models/mvit/geometry.ts';
import { parseFusionMode } from '../src/nn/fusion.ts';
import { paramCount, paramSpecs } from '../src/models/mvit/params-spec.ts';
import { PRESETS, PRESET_NAMES, presetConfig } from '../src/models/mvit/presets.ts';

// ---------------------------------------------------------------------------------------------
// Fixture headers

const localFixtures = fileURLToPath(new URL('./fixtures/', import.meta.url));
const FIXTURE_DIR = existsSync(localFixtures) ? localFixtures : '/work/shared/fixtures';

interface TensorEntry {
  readonly shape: number[];
  readonly data_offsets: [number, number];
}
interface FixtureHeader {
  readonly file: string;
  readonly kind: 'full_model' | 'rev_stack_only';
  readonly config: unknown;
  readonly layers: LayerRow[];
  readonly tensors: Map<string, TensorEntry>;
}
interface PoolRow {
  readonly k: number[];
  readonly s: number[];
  readonly p: number[];
}
interface LayerRow {
  readonly layer: number;
  readonly type: 'ReversibleBlock' | 'StageTransitionBlock';
  readonly dim_in: number;
  readonly dim_out: number;
  readonly heads: number;
  readonly thw_in: number[];
  readonly pool_q: PoolRow | null;
  readonly pool_kv: PoolRow | null;
  readonly res_proj: boolean;
}

/** safetensors: u64 LE header length, then the JSON header. Only the header is read. */
function readHeader(file: string): FixtureHeader {
  const bytes = readFileSync(join(FIXTURE_DIR, file));
  const length = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + length).toString('utf8')) as Record<string, unknown>;
  const metadata = header['__metadata__'] as Record<string, string>;
  const tensors = new Map(
    Object.entries(header)
      .filter(([name]) => name !== '__metadata__')
      .map(([name, entry]) => [name, entry as TensorEntry]),
  );
  return {
    file,
    kind: metadata['kind'] as FixtureHeader['kind'],
    config: JSON.parse(metadata['config']!),
    layers: JSON.parse(metadata['layers']!) as LayerRow[],
    tensors,
  };
}

const FIXTURES = readdirSync(FIXTURE_DIR)
  .filter((f) => f.endsWith('.safetensors'))
  .sort()
  .map(readHeader);

const NOT_PARAMS = /^(input|w|logits|probs_eval|rev_out)$|^(act|grad|grad_vanilla|block)\./;

/** The fixture's parameter tensors, in file (= state_dict) order. */
function fixtureParams(fixture: FixtureHeader): [string, number[]][] {
  return [...fixture.tensors.entries()]
    .filter(([name]) => !NOT_PARAMS.test(name))
    .sort((a, b) => a[1].data_offsets[0] - b[1].data_offsets[0])
    .map(([name, entry]) => [name, entry.shape]);
}

function expectRight<A>(result: E.Either<ConfigProblem[], A>, what: string): A {
  if (E.isLeft(result)) assert.unreachable(`${what}:\n${formatProblems(result.left)}`);
  return (result as E.Right<A>).right;
}

function problemsOf(json: unknown, options?: Parameters<typeof parseConfig>[1]): ConfigProblem[] {
  const result = parseConfig(json, options);
  return E.isLeft(result) ? result.left : [];
}

const fixtureConfig = (f: FixtureHeader): MViTConfig =>
  expectRight(parseConfig(f.config, { target: f.kind === 'full_model' ? 'model' : 'stack' }), f.file);

const poolRow = (pool: PoolSpec | undefined): PoolRow | null =>
  pool ? { k: [...pool.kernel], s: [...pool.stride], p: [...pool.padding] } : null;

// ---------------------------------------------------------------------------------------------
// Fixtures

test('there are fixtures of both kinds to check against', () => {
  assert.ok(FIXTURES.some((f) => f.kind === 'full_model'), `no full_model fixture in ${FIXTURE_DIR}`);
  assert.ok(FIXTURES.some((f) => f.kind === 'rev_stack_only'), `no rev_stack_only fixture in ${FIXTURE_DIR}`);
});

test('every fixture config parses; a full model refuses the stack-only CLS configs', () => {
  for (const fixture of FIXTURES) {
    fixtureConfig(fixture);
    const cls = (fixture.config as { MVIT: { CLS_EMBED_ON: boolean } }).MVIT.CLS_EMBED_ON;
    if (cls) {
      assert.equal(problemsOf(fixture.config).map((p) => p.path), ['MVIT.CLS_EMBED_ON'], fixture.file);
    }
  }
});

test('geometry reproduces every fixture layer table', () => {
  for (const fixture of FIXTURES) {
    const geometry = buildGeometry(fixtureConfig(fixture));
    const ours: LayerRow[] = geometry.layers.map((l) => ({
      layer: l.index,
      type: l.kind === 'transition' ? 'StageTransitionBlock' : 'ReversibleBlock',
      dim_in: l.dimIn,
      dim_out: l.dimOut,
      heads: l.heads,
      thw_in: [...l.thwIn],
      pool_q: poolRow(l.poolQ),
      pool_kv: poolRow(l.poolKV),
      res_proj: l.hasResProj,
    }));
    assert.equal(ours, fixture.layers, fixture.file);
  }
});

test('paramSpecs gives exactly the fixture parameters: names, shapes and state_dict order', () => {
  for (const fixture of FIXTURES) {
    const stackOnly = fixture.kind === 'rev_stack_only';
    const keep = (name: string) => !stackOnly || name.startsWith('rev_backbone.');
    const ours = paramSpecs(fixtureConfig(fixture))
      .filter((s) => keep(s.name))
      .map((s) => [s.name, [...s.shape]]);
    assert.equal(ours, fixtureParams(fixture).filter(([name]) => keep(name)), fixture.file);
  }
});

test('the fixture shapes agree with the geometry of the stack output and head', () => {
  for (const fixture of FIXTURES) {
    const geometry = buildGeometry(fixtureConfig(fixture));
    const revOut = fixture.tensors.get('rev_out')!.shape;
    assert.equal(revOut.slice(1), [geometry.finalTokens, geometry.stackOutDim], fixture.file);
    const headIn = fixture.tensors.get('act.head_in');
    if (headIn) assert.is(headIn.shape[1], geometry.headInputDim, fixture.file);
  }
});

// ---------------------------------------------------------------------------------------------
// Presets

const PUBLISHED_COUNTS: Record<string, number> = {
  REV_VIT_S: 22_434_664,
  REV_VIT_B: 87_335_656,
  REV_MVIT_B_16_CONV: 39_689_320,
  REV_MVIT_B_16x4_CONV: 34_963_120,
};

test('published presets have exactly PySlowFast parameter counts', () => {
  for (const [name, count] of Object.entries(PUBLISHED_COUNTS)) {
    assert.is(paramCount(paramSpecs(expectRight(presetConfig(name), name))), count, name);
  }
});

test('every preset validates, and unknown presets are a problem that lists the names', () => {
  for (const name of PRESET_NAMES) expectRight(presetConfig(name), name);
  const unknown = presetConfig('REV_VIT_HUGE');
  assert.ok(E.isLeft(unknown));
  if (E.isLeft(unknown)) assert.match(unknown.left[0]!.message, /REV_MVIT_B_16_CONV/);
});

test('REV_MVIT_TINY is the benchmark config, value for value (bench/revmvit-tiny.json, the copy in the repo)', () => {
  const bench = new URL('../bench/revmvit-tiny.json', import.meta.url);
  assert.equal(PRESETS.REV_MVIT_TINY, JSON.parse(readFileSync(bench, 'utf8')));
});

test('IN1k Rev-MViT-B schedule matches spec section 6', () => {
  const g = buildGeometry(expectRight(presetConfig('REV_MVIT_B_16_CONV'), 'in1k'));
  assert.equal(g.patchDims, [1, 56, 56]);
  assert.equal(g.layers.map((l) => l.strideKV), [
    [1, 4, 4], [1, 2, 2], [1, 2, 2], ...Array.from({ length: 13 }, () => [1, 1, 1]),
  ]);
  // Stride 1 with kernel [1,3,3] is still a pool (skipped only when kernel and stride are both trivial).
  assert.equal(g.layers[15]!.poolKV, { kernel: [1, 3, 3], stride: [1, 1, 1], padding: [0, 1, 1] });
  assert.equal(g.layers.filter((l) => l.kind === 'transition').map((l) => [l.index, l.dimIn, l.dimOut, l.heads]), [
    [1, 192, 192, 2], [3, 384, 384, 4], [14, 768, 768, 8],
  ]);
  assert.equal(g.layers[15]!.thwIn, [1, 7, 7]);
  assert.is(g.headInputDim, 1536);
  assert.equal(g.groups, [
    { kind: 'reversible', layers: [0] },
    { kind: 'transition', layers: [1] },
    { kind: 'reversible', layers: [2] },
    { kind: 'transition', layers: [3] },
    { kind: 'reversible', layers: [4, 5, 6, 7, 8, 9, 10, 11, 12, 13] },
    { kind: 'transition', layers: [14] },
    { kind: 'reversible', layers: [15] },
  ]);
});

test('K400 Rev-MViT-B schedule matches spec section 6', () => {
  const g = buildGeometry(expectRight(presetConfig('REV_MVIT_B_16x4_CONV'), 'k400'));
  assert.equal(g.patchDims, [8, 56, 56]);
  const kv = g.layers.map((l) => l.strideKV);
  assert.equal(kv[0], [1, 8, 8]);
  assert.equal(kv.slice(1, 3), [[1, 4, 4], [1, 4, 4]]);
  assert.ok(kv.slice(3, 14).every((s) => s!.join() === '1,2,2'));
  assert.equal(kv.slice(14), [[1, 1, 1], [1, 1, 1]]);
  const transitions = g.layers.filter((l) => l.kind === 'transition');
  assert.equal(transitions.map((l) => [l.dimIn, l.dimOut, l.hasResProj]), [
    [96, 192, true], [192, 384, true], [384, 768, true],
  ]);
  assert.is(g.headInputDim, 1536);
});

test('drop-path rates are torch.linspace(0, r, DEPTH) in float32', () => {
  const g = buildGeometry(expectRight(presetConfig('REV_MVIT_B_16_CONV'), 'in1k'));
  const rates = g.layers.map((l) => l.dropPath);
  assert.is(rates[0], 0);
  assert.is(rates[15], Math.fround(0.1));
  rates.forEach((r, i) => {
    assert.is(r, Math.fround(r));
    assert.ok(Math.abs(r - (0.1 * i) / 15) < 1e-8, `layer ${i}: ${r}`);
  });
  assert.equal(dropPathRates(0.3, 1), [0]);
});

// ---------------------------------------------------------------------------------------------
// Pieces

test('roundWidth follows PySlowFast round_width', () => {
  assert.is(roundWidth(96, 2, 1, 2), 192);
  assert.is(roundWidth(96, 0), 96); // a falsy multiplier leaves the width alone
  assert.is(roundWidth(10, 1.5, 1, 4), 16);
  assert.is(roundWidth(7, 1, 1, 4), 8);
  assert.is(roundWidth(3, 1, 1, 8), 9); // rounds to 0 -> min 1 -> below 0.9 * width, so + divisor
  assert.is(roundWidth(1, 2), 2);
});

test('parseFusionMode accepts exactly the TwoStreamFusion modes', () => {
  const ok = (mode: string) => expectRight(E.mapLeft((m: string) => [{ path: mode, message: m }])(parseFusionMode(mode)), mode);
  for (const kind of ['add', 'max', 'min', 'avg', 'concat'] as const) assert.equal(ok(kind), { kind });
  assert.equal(ok('concat_linear'), { kind: 'concat_linear', ratio: 1, drop: 0, ln: false });
  assert.equal(ok('concat_linear_2'), { kind: 'concat_linear', ratio: 2, drop: 0, ln: false });
  assert.equal(ok('concat_linear_2.5_0.1'), { kind: 'concat_linear', ratio: 2.5, drop: 0.1, ln: false });
  assert.equal(ok('ln+concat_linear_2'), { kind: 'concat_linear', ratio: 2, drop: 0, ln: true });
  for (const bad of ['ln+concat', 'ln+avg', 'concat_linear_2_0.1_3', 'concat_linear_x', 'concatlinear', 'sum', '', 'concat_linear_0', 'concat_linear_2_1.5']) {
    assert.ok(E.isLeft(parseFusionMode(bad)), bad);
  }
});

test('layerGroups keeps transitions alone and runs of reversible blocks together', () => {
  const kinds = ['reversible', 'reversible', 'transition', 'transition', 'reversible'] as const;
  assert.equal(layerGroups(kinds.map((kind, index) => ({ index, kind }))), [
    { kind: 'reversible', layers: [0, 1] },
    { kind: 'transition', layers: [2] },
    { kind: 'transition', layers: [3] },
    { kind: 'reversible', layers: [4] },
  ]);
});

test('weight decay follows PySlowFast: none for 1-D, biases and (with ZERO_DECAY_POS_CLS) pos/rel-pos', () => {
  const tiny = expectRight(presetConfig('REV_MVIT_TINY'), 'tiny');
  const specs = new Map(paramSpecs(tiny).map((s) => [s.name, s]));
  assert.is(specs.get('pos_embed_spatial')!.decay, false);
  assert.is(specs.get('rev_backbone.layers.0.F.attn.rel_pos_h')!.decay, false);
  assert.is(specs.get('rev_backbone.layers.0.F.attn.qkv.weight')!.decay, true);
  assert.is(specs.get('rev_backbone.layers.0.F.attn.pool_k.weight')!.decay, true);
  assert.is(specs.get('rev_backbone.layers.0.F.norm.weight')!.decay, false);
  assert.is(specs.get('head.projection.bias')!.decay, false);
  const noZeroDecay = paramSpecs(expectRight(parseConfig({ ...PRESETS.REV_MVIT_TINY, MVIT: { ...PRESETS.REV_MVIT_TINY.MVIT, ZERO_DECAY_POS_CLS: false } }), 'tiny'));
  assert.is(noZeroDecay.find((s) => s.name === 'pos_embed_spatial')!.decay, true);
  assert.equal(specs.get('rev_backbone.layers.1.G.norm.bias')!.init, { kind: 'constant', value: 0.02 });
  assert.equal(specs.get('head.projection.weight')!.init, { kind: 'trunc_normal', std: 0.02, lower: -2, upper: 2, scale: 1 });
  assert.is(specs.get('patch_embed.proj.bias')!.init.kind, 'uniform');
});

// ---------------------------------------------------------------------------------------------
// Validation

const TINY = PRESETS.REV_MVIT_TINY as Required<typeof PRESETS.REV_MVIT_TINY>;
const tinyWith = (mvit: Record<string, unknown>, rest: Record<string, unknown> = {}) => ({
  ...TINY,
  ...rest,
  MVIT: { ...TINY.MVIT, ...mvit, REV: { ...TINY.MVIT!.REV, ...((mvit['REV'] as object | undefined) ?? {}) } },
});
const paths = (json: unknown) => problemsOf(json).map((p) => p.path);

test('PySlowFast defaults alone are not a valid reversible model, and every reason is reported', () => {
  const found = paths({});
  for (const expected of ['MVIT.REV.ENABLE', 'DATA.TEST_CROP_SIZE', 'MVIT.CLS_EMBED_ON', 'MVIT.PATCH_PADDING[0]', 'MVIT.PATCH_PADDING[1]']) {
    assert.ok(found.includes(expected), `${expected} missing from ${found.join(', ')}`);
  }
  assert.is(DEFAULT_CONFIG.MVIT.PATCH_PADDING.join(), '2,4,4');
});

test('type errors are collected with their paths, all at once', () => {
  const found = paths(
    tinyWith({
      EMBED_DIM: 'wide',
      POOL_Q_STRIDE: [[1, 1, 2, 2], [3, 1, 0, 2]],
      MODE: 'sum',
      DEPTH: 6.5,
      DIM_MUL: [[1, -2]],
      REV: { RES_PATH: 'avg' },
      TYPO_KEY: 1,
    }, { MODEL: { HEAD_ACT: 'relu' } }),
  );
  assert.equal(found.sort(), [
    'MODEL.HEAD_ACT',
    'MVIT.DEPTH',
    'MVIT.DIM_MUL[0][1]',
    'MVIT.EMBED_DIM',
    'MVIT.MODE',
    'MVIT.POOL_Q_STRIDE[1][2]',
    'MVIT.REV.RES_PATH',
    'MVIT.TYPO_KEY',
  ]);
});

test('unknown keys are rejected with a suggestion; other PySlowFast sections are ignored', () => {
  const problems = problemsOf({ ...TINY, MVTI: {}, SOLVER: { BASE_LR: 1 }, TRAIN: {}, MVIT: { ...TINY.MVIT, EMBED_DM: 3 } });
  assert.equal(problems.map((p) => p.path), ['MVTI', 'MVIT.EMBED_DM']);
  assert.match(problems[1]!.message, /EMBED_DIM/);
  assert.equal(paths({ ...TINY, DATA: { ...TINY.DATA, MEAN: [0.5] }, MODEL: { ...TINY.MODEL, ARCH: 'mvit' } }), []);
  assert.equal(paths({ ...TINY, __proto__: 1 } as unknown), []); // a literal __proto__ only sets the prototype
  assert.equal(paths(JSON.parse('{"__proto__": {"x": 1}, "DATA": {"NUM_FRAMES": 8}}')).includes('__proto__'), true);
});

test('CONTRASTIVE.NUM_MLP_LAYERS and DETECTION.ENABLE are checked', () => {
  assert.equal(paths({ ...TINY, CONTRASTIVE: { NUM_MLP_LAYERS: 1, MLP_DIM: 5 }, DETECTION: { ENABLE: false } }), []);
  assert.equal(paths({ ...TINY, CONTRASTIVE: { NUM_MLP_LAYERS: 2 }, DETECTION: { ENABLE: true } }), [
    'CONTRASTIVE.NUM_MLP_LAYERS',
    'DETECTION.ENABLE',
  ]);
});

test('buffer-layer placement rules', () => {
  const cases: [number[], string[]][] = [
    [[0, 1, 3], ['MVIT.REV.BUFFER_LAYERS[0]', 'MVIT.REV.BUFFER_LAYERS[1]']],
    [[1, 3, 5], ['MVIT.REV.BUFFER_LAYERS[2]']],
    [[1, 2, 3], ['MVIT.REV.BUFFER_LAYERS[1]', 'MVIT.REV.BUFFER_LAYERS[2]']],
    [[1, 3, 9], ['MVIT.REV.BUFFER_LAYERS[2]']],
    [[1, 3, 3], ['MVIT.REV.BUFFER_LAYERS[2]']],
  ];
  for (const [buffers, expected] of cases) {
    assert.equal(paths(tinyWith({ REV: { BUFFER_LAYERS: buffers } })), expected, buffers.join());
  }
});

test('layers that change dims, heads or grid must be stage transitions', () => {
  const found = paths(tinyWith({ REV: { BUFFER_LAYERS: [3] } }));
  assert.ok(found.includes('MVIT.DIM_MUL[0][0]'));
  assert.ok(found.includes('MVIT.HEAD_MUL[0][0]'));
  assert.ok(found.includes('MVIT.POOL_Q_STRIDE[0][0]'));
  assert.ok(paths(tinyWith({ POOL_Q_STRIDE: [[1, 1, 2, 2], [3, 1, 2, 2], [9, 1, 2, 2]] })).includes('MVIT.POOL_Q_STRIDE[2][0]'));
});

test('fusion, pooling-mode and head rules', () => {
  assert.equal(paths(tinyWith({ REV: { PRE_Q_FUSION: 'ln+concat' } })), ['MVIT.REV.PRE_Q_FUSION']);
  assert.equal(paths(tinyWith({ REV: { RESPATH_FUSE: 'avg' } })), ['MVIT.REV.RESPATH_FUSE']);
  assert.equal(paths(tinyWith({ REV: { RESPATH_FUSE: 'avg' }, USE_MEAN_POOLING: true })), []);
  assert.equal(paths(tinyWith({ MODE: 'conv_unshared' })), ['MVIT.MODE']);
  assert.equal(paths(tinyWith({ MODE: 'conv_unshared', POOL_FIRST: true })), []);
  assert.equal(paths(tinyWith({ REV: { ENABLE: false } })), ['MVIT.REV.ENABLE']);
  assert.equal(paths(tinyWith({ NORM: 'batchnorm' })), ['MVIT.NORM']);
  assert.equal(paths(tinyWith({ POOL_KV_STRIDE: [[0, 1, 2, 2]] })), ['MVIT.POOL_KV_STRIDE']);
});

test('patch embed, crop, heads and rel-pos geometry are checked at parse time', () => {
  assert.equal(paths(tinyWith({ PATCH_PADDING: [1, 0, 3] })), ['MVIT.PATCH_PADDING[1]']);
  assert.equal(paths(tinyWith({ PATCH_PADDING: [1, 2, 3] })), []); // (32 + 4 - 7) // 4 + 1 is still 8
  assert.equal(paths(tinyWith({ PATCH_KERNEL: [7, 7] })), ['MVIT.PATCH_KERNEL']);
  assert.equal(paths({ ...TINY, DATA: { ...TINY.DATA, TEST_CROP_SIZE: 64 } }), ['DATA.TEST_CROP_SIZE']);
  assert.ok(paths(tinyWith({ NUM_HEADS: 3 })).includes('MVIT.EMBED_DIM'));
  assert.ok(paths(tinyWith({ PATCH_STRIDE: [2, 4, 8], PATCH_KERNEL: [3, 7, 8], PATCH_PADDING: [1, 3, 0] })).includes('MVIT.REL_POS_SPATIAL'));
  // 8 tokens a side, q strides 2, 2 and 4 empty the grid before the last stage.
  assert.ok(paths(tinyWith({ POOL_Q_STRIDE: [[1, 1, 2, 2], [3, 1, 8, 8]] })).includes('MVIT.POOL_Q_STRIDE'));
  const image = PRESETS.REV_VIT_TINY;
  assert.equal(paths({ ...image, DATA: { ...image.DATA, NUM_FRAMES: 4 } }), ['DATA.NUM_FRAMES']);
});

test('RES_PATH max needs a Q pool at every stage transition', () => {
  assert.equal(paths(tinyWith({ REV: { RES_PATH: 'max' } })), []);
  // Layer 3 changes the dim but does not pool Q: StageTransitionBlock would read None.stride.
  const noQPool = tinyWith({ POOL_Q_STRIDE: [[1, 1, 2, 2]], REV: { RES_PATH: 'max' } });
  assert.equal(paths(noQPool), ['MVIT.REV.RES_PATH']);
  assert.equal(paths({ ...noQPool, MVIT: { ...noQPool.MVIT, REV: { ...noQPool.MVIT.REV, RES_PATH: 'conv' } } }), []);
});

test('stack target accepts a cls token and sizes tokens and pos embed for it', () => {
  const cfg = expectRight(parseConfig(tinyWith({ CLS_EMBED_ON: true, SEP_POS_EMBED: false }), { target: 'stack' }), 'stack');
  const g = buildGeometry(cfg);
  assert.is(g.layers[0]!.tokensIn, 4 * 8 * 8 + 1);
  const pos = paramSpecs(cfg).find((s) => s.name === 'pos_embed')!;
  assert.equal(pos.shape, [1, 4 * 8 * 8 + 1, 32]);
  assert.is(paramSpecs(cfg)[0]!.name, 'cls_token');
});

test('parseConfigText reports a JSON syntax error with its source; formatProblems lists paths', () => {
  const bad = parseConfigText('{"MVIT": {', 'my-config.json');
  assert.ok(E.isLeft(bad));
  if (E.isLeft(bad)) {
    assert.is(bad.left.length, 1);
    assert.match(bad.left[0]!.message, /my-config\.json/);
  }
  expectRight(parseConfigText(JSON.stringify(TINY), 'tiny.json'), 'tiny.json');
  const text = formatProblems([{ path: 'MVIT.DEPTH', message: 'expected an integer' }], 'x.json');
  assert.match(text, /1 config problem in x\.json/);
  assert.match(text, /MVIT\.DEPTH: expected an integer/);
});

test('parsing does not share arrays with the defaults', () => {
  const cfg = expectRight(presetConfig('REV_VIT_TINY'), 'tiny');
  cfg.MVIT.DIM_MUL.push([1, 2]);
  assert.equal(DEFAULT_CONFIG.MVIT.DIM_MUL, []);
});

test('property: accepted configs have consistent geometry and unique parameter names', () => {
  const arbitraryStages = fc
    .record({
      depth: fc.integer({ min: 2, max: 10 }),
      transitions: fc.uniqueArray(fc.integer({ min: 1, max: 8 }), { maxLength: 3 }),
      heads: fc.constantFrom(1, 2),
      fusion: fc.constantFrom('avg', 'concat', 'concat_linear_2', 'ln+concat_linear', 'max'),
      relPos: fc.boolean(),
    });
  fc.assert(
    fc.property(arbitraryStages, ({ depth, transitions, heads, fusion, relPos }) => {
      const buffers = transitions.filter((i) => i < depth - 1).sort((a, b) => a - b);
      const json = tinyWith({
        DEPTH: depth,
        NUM_HEADS: heads,
        DIM_MUL: buffers.map((i) => [i, 2]),
        HEAD_MUL: buffers.map((i) => [i, 2]),
        POOL_Q_STRIDE: buffers.slice(0, 2).map((i) => [i, 1, 2, 2]),
        REL_POS_SPATIAL: relPos,
        REV: { BUFFER_LAYERS: buffers, PRE_Q_FUSION: fusion },
      });
      const parsed = parseConfig(json);
      if (E.isLeft(parsed)) return true; // rejected configs are covered by the rule tests
      const g = buildGeometry(parsed.right);
      const names = paramSpecs(parsed.right).map((s) => s.name);
      return (
        new Set(names).size === names.length &&
        g.layers.every((l) => l.kind === 'transition' || (l.dimIn === l.dimOut && !l.poolQ)) &&
        g.groups.flatMap((grp) => grp.layers).join() === g.layers.map((l) => l.index).join() &&
        g.groups.every((grp) => grp.kind === 'reversible' || grp.layers.length === 1) &&
        g.stackOutDim === 2 * g.finalDim
      );
    }),
    { numRuns: 200 },
  );
});

test.run();
