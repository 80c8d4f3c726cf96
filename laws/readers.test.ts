/**
 * Fuzz laws for every reader of untrusted input: the JSON scanner, safetensors, training checkpoints and
 * weights, JSON and YAML configs, .pyth checkpoints and PySlowFast fixtures. Each is fed seeded mutations of valid inputs of the kinds the
 * issue-16 probe used (test/hostile/mutations.ts) and must answer with a value or a typed error, never a
 * throw; what it accepts must be sound (finite weights, a matching checksum, a config whose resources
 * can be estimated). Bounded here; `node --import tsx bench/fuzz-readers.ts` runs the long version.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fc from 'fast-check';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import { describeValue, jsonShape, MAX_JSON_DEPTH, parseJson } from '../src/io/json.ts';
import { decodeSafetensors, encodeSafetensors, MAX_TENSORS, type NamedArray } from '../src/io/safetensors.ts';
import { MAX_LIST_ENTRIES } from '../src/io/decode.ts';
import { formatProblems, MAX_DEPTH, parseConfig, parseConfigText } from '../src/models/mvit/config.ts';
import { checkFixture } from '../src/models/mvit/fixture-check.ts';
import { estimateResources } from '../src/models/mvit/resources.ts';
import { decodeCheckpoint, decodeWeights, tensorsChecksum } from '../src/train/checkpoint.ts';
import { decodePyth, encodePyth, pyDict, PythError, stateDictOf } from '../src/io/pyth.ts';
import { openZip, writeZip } from '../src/io/zip.ts';
import { readYamlConfig, slowFastYaml } from '../src/models/mvit/yaml-config.ts';
import { configMutations, deepJson, joinFile, pythMutations, rngOf, safetensorsMutations, splitFile, yamlMutations } from '../test/hostile/mutations.ts';
import { HOSTILE_CONFIG, TINY_CONFIG, tinyCheckpointBytes } from '../test/hostile/inputs.ts';

const SAFETENSORS_CODES = ['truncated', 'header', 'json', 'dtype', 'offsets', 'shape', 'name', 'io'];

/** Recompute the checksum of a mutated checkpoint, so the checks after it are reached. */
function fixChecksum(bytes: Uint8Array): Uint8Array {
  const decoded = decodeSafetensors(bytes);
  const f = splitFile(bytes);
  if (E.isLeft(decoded) || f === null) return bytes;
  const metadata = { ...((f.entries.find(([k]) => k === '__metadata__')?.[1] as Record<string, string>) ?? {}) };
  if (metadata.checksum === undefined) return bytes;
  metadata.checksum = tensorsChecksum(decoded.right.tensors);
  return joinFile([['__metadata__', metadata], ...f.entries.filter(([k]) => k !== '__metadata__')], f.data);
}

const MUTATIONS = safetensorsMutations({ fixChecksum });
const KINDS = Object.keys(MUTATIONS);
const CONFIG_MUTATIONS = configMutations();
const caseArb = fc.tuple(fc.constantFrom(...KINDS), fc.integer({ min: 0, max: 2 ** 31 - 1 }));

const DIR = mkdtempSync(join(tmpdir(), 'revgrad-readers-'));
const CHECKPOINT = await tinyCheckpointBytes(DIR);
const FIXTURE = new Uint8Array(readFileSync(new URL('../test/fixtures/revvit_2d_stack_cls.safetensors', import.meta.url)));

const noThrow = <A>(what: string, f: () => A): A => {
  try {
    return f();
  } catch (e) {
    throw new Error(`${what} threw instead of returning a typed error: ${e instanceof Error ? `${e.name}: ${e.message.slice(0, 300)}` : String(e)}`);
  }
};

test('jsonShape counts depth and top-level entries of any JSON text (strings with brackets, commas and escapes included)', () => {
  fc.assert(
    fc.property(fc.jsonValue({ maxDepth: 6 }), (v) => {
      const text = JSON.stringify(v);
      const shape = jsonShape(text);
      const depthOf = (x: unknown): number => (typeof x === 'object' && x !== null ? 1 + Math.max(0, ...Object.values(x).map(depthOf)) : 0);
      const entries = typeof v === 'object' && v !== null ? Object.keys(v).length : 0;
      return shape.depth === depthOf(v) && shape.entries === entries;
    }),
    { numRuns: 300 },
  );
});

test('parseJson equals JSON.parse within the depth limit and refuses deeper nesting with a typed error', () => {
  fc.assert(
    fc.property(fc.jsonValue({ maxDepth: 5 }), (v) => {
      const r = parseJson(JSON.stringify(v), 'x');
      return E.isRight(r) && JSON.stringify(r.right) === JSON.stringify(v);
    }),
    { numRuns: 200 },
  );
  for (const depth of [MAX_JSON_DEPTH + 1, 5000, 200_000]) {
    const r = parseJson(`{"a":${deepJson(depth)}}`, 'deep.json');
    assert.ok(E.isLeft(r) && r.left.code === 'depth', `depth ${depth}`);
  }
  assert.ok(E.isRight(parseJson(deepJson(MAX_JSON_DEPTH), 'x')));
});

test('describeValue never throws and stays short, on anything (cyclic, bigint, deep)', () => {
  const cyclic: Record<string, unknown> = { a: 1 };
  cyclic.self = cyclic;
  const deep = JSON.parse(deepJson(100_000)) as unknown;
  for (const v of [cyclic, deep, 10n, Symbol('s'), () => 1, [undefined], Array.from({ length: 1e6 }, (_, i) => i)]) {
    assert.ok(describeValue(v, 60).length <= 60);
  }
  fc.assert(fc.property(fc.anything(), fc.integer({ min: 4, max: 100 }), (v, n) => describeValue(v, n).length <= n), { numRuns: 300 });
});

test('safetensors: every mutation of a valid file decodes to a typed error or a self-consistent file, never a throw', () => {
  const tensorArb: fc.Arbitrary<NamedArray> = fc
    .array(fc.integer({ min: 0, max: 3 }), { maxLength: 3 })
    .map((shape) => ({ shape, data: new Float32Array(shape.reduce((a, b) => a * b, 1)).map((_, i) => i - 1.5) }));
  const fileArb = fc.oneof(
    fc.uniqueArray(fc.tuple(fc.string({ minLength: 1, maxLength: 5 }).filter((n) => !['__proto__', 'constructor', 'prototype', '__metadata__'].includes(n)), tensorArb), { selector: ([n]) => n, maxLength: 5 })
      .map((ts) => encodeSafetensors(new Map(ts), { k: 'v' })),
    fc.constant(CHECKPOINT),
    fc.constant(FIXTURE),
  );
  fc.assert(
    fc.property(fileArb, caseArb, (bytes, [kind, seed]) => {
      const mutated = MUTATIONS[kind]!(bytes, rngOf(seed));
      const r = noThrow(`decodeSafetensors after ${kind}/${seed}`, () => decodeSafetensors(mutated, 'm.safetensors'));
      if (E.isLeft(r)) return SAFETENSORS_CODES.includes(r.left.code) && r.left.message.startsWith('m.safetensors: ');
      return [...r.right.tensors.values()].every(({ shape, data }) => data.length === shape.reduce((a, b) => a * b, 1));
    }),
    { numRuns: 400 },
  );
});

test(`safetensors: a header of more than ${MAX_TENSORS} (empty) tensors or deeper than 64 levels is refused before parsing`, () => {
  const flood = Array.from({ length: MAX_TENSORS + 1 }, (_, i) => `"t${i}":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}`);
  const r = decodeSafetensors(joinFile([], new Uint8Array(0), flood));
  assert.ok(E.isLeft(r) && r.left.code === 'json' && r.left.message.includes(`more than ${MAX_TENSORS} tensors`), E.isLeft(r) ? r.left.message : 'accepted');
  const ok = decodeSafetensors(joinFile([], new Uint8Array(0), flood.slice(0, 1000)));
  assert.ok(E.isRight(ok) && ok.right.tensors.size === 1000);
  for (const where of [`"x":${deepJson(100_000)}`, `"__metadata__":{"a":${deepJson(70)}}`]) {
    const d = decodeSafetensors(joinFile([], new Uint8Array(0), [where]));
    assert.ok(E.isLeft(d) && d.left.code === 'json' && d.left.message.includes('levels deep'));
  }
});

test('checkpoints: every mutation gives a CheckpointError or a sound checkpoint; data bit flips fail the checksum, NaN weights are refused', () => {
  fc.assert(
    fc.property(caseArb, ([kind, seed]) => {
      const mutated = MUTATIONS[kind]!(CHECKPOINT, rngOf(seed));
      const ck = noThrow(`decodeCheckpoint after ${kind}/${seed}`, () => decodeCheckpoint(mutated, 'c.safetensors'));
      const weights = noThrow(`decodeWeights after ${kind}/${seed}`, () => decodeWeights(mutated, 'c.safetensors'));
      if (kind === 'data-bitflip') assert.ok(E.isLeft(ck) && ck.left.code === 'checksum', `${kind}/${seed} was not caught by the checksum`);
      if (kind === 'nonfinite') assert.ok(E.isLeft(ck) && ck.left.code === 'nonfinite', `${kind}/${seed}: ${E.isLeft(ck) ? ck.left.code : 'accepted'}`);
      for (const r of [ck, weights]) {
        if (E.isLeft(r)) {
          assert.ok(['read', 'checksum', 'nonfinite', 'invalid'].includes(r.left.code));
          assert.ok(r.left.problems.length > 0 && r.left.problems.every((p) => p.startsWith('c.safetensors: ')));
        }
      }
      if (E.isRight(ck)) {
        const c = ck.right;
        const all = [...c.params, ...[...(c.optim?.values() ?? [])].flatMap((slot) => [...slot])];
        assert.ok(all.every(([, t]) => t.data.every(Number.isFinite)), `${kind}/${seed}: accepted non-finite values`);
        assert.ok(Number.isSafeInteger(c.meta.step) && c.meta.step >= 0 && Number.isSafeInteger(c.meta.seed) && c.meta.seed >= 0);
        if (c.metadata.checksum !== undefined) {
          const tensors = decodeSafetensors(mutated);
          assert.ok(E.isRight(tensors) && tensorsChecksum(tensors.right.tensors) === c.metadata.checksum);
        }
        // The stored config is re-validated by its users: that must not throw either.
        noThrow('parseConfig of the stored config', () => parseConfig(c.meta.config));
      }
      if (E.isRight(weights)) assert.ok([...weights.right.params.values()].every((t) => t.data.every(Number.isFinite)));
    }),
    { numRuns: 300 },
  );
});

test('configs: every mutation of a config text parses to problems or to a config within the bounds, never a throw', () => {
  const kinds = Object.keys(CONFIG_MUTATIONS);
  fc.assert(
    fc.property(fc.constantFrom(...kinds), fc.integer({ min: 0, max: 2 ** 31 - 1 }), (kind, seed) => {
      const text = CONFIG_MUTATIONS[kind]!(HOSTILE_CONFIG, rngOf(seed));
      const r = noThrow(`parseConfigText after ${kind}/${seed}`, () => parseConfigText(text, 'c.json'));
      if (E.isLeft(r)) {
        const report = formatProblems(r.left, 'c.json').split('\n');
        return r.left.length > 0 && report.length <= 52;
      }
      const cfg = r.right;
      assert.ok(cfg.MVIT.DEPTH <= MAX_DEPTH);
      for (const list of [cfg.MVIT.DIM_MUL, cfg.MVIT.HEAD_MUL, cfg.MVIT.POOL_Q_STRIDE, cfg.MVIT.POOL_KV_STRIDE, cfg.MVIT.REV.BUFFER_LAYERS]) assert.ok(list.length <= MAX_LIST_ENTRIES);
      const est = noThrow('estimateResources', () => estimateResources(cfg, { batch: 4, purpose: 'train' }));
      return !Number.isNaN(est.totalBytes) && !Number.isNaN(est.largestTensor.bytes);
    }),
    { numRuns: 300 },
  );
});

test('YAML configs: every mutation (deep nesting, alias bombs, python tags, _BASE_ loops) gives problems or a bounded config, never a throw', () => {
  const cfg = parseConfig(TINY_CONFIG);
  assert.ok(E.isRight(cfg));
  if (E.isLeft(cfg)) return;
  const base = slowFastYaml(cfg.right);
  // An alias inside itself used to overflow the stack of the tree walk (found by this law).
  const cyclic = readYamlConfig('/c.yaml', { readText: () => 'MVIT:\n  DEPTH: &a [*a]\n' });
  assert.ok(E.isLeft(cyclic) && cyclic.left[0]!.message.includes('cyclic value'), JSON.stringify(cyclic));
  const mutations = yamlMutations();
  fc.assert(
    fc.property(fc.constantFrom(...Object.keys(mutations)), fc.integer({ min: 0, max: 2 ** 31 - 1 }), (kind, seed) => {
      const files: Record<string, string> = { '/c/c.yaml': mutations[kind]!(base, rngOf(seed)), '/c/self.yaml': '_BASE_: ./self.yaml\n', '/c/missing.yaml': '' };
      const readText = (path: string) => {
        const text = files[path];
        if (text === undefined) throw Object.assign(new Error(`ENOENT: no such file, open '${path}'`), { code: 'ENOENT' });
        return text;
      };
      const r = noThrow(`readYamlConfig after ${kind}/${seed}`, () => readYamlConfig('/c/c.yaml', { readText }));
      if (E.isLeft(r)) return r.left.length > 0 && r.left.every((p) => typeof p.message === 'string');
      assert.ok(r.right.cfg.MVIT.DEPTH <= MAX_DEPTH && r.right.cfg.DATA.INPUT_CHANNEL_NUM.length <= MAX_LIST_ENTRIES);
      noThrow('estimateResources', () => estimateResources(r.right.cfg, { batch: 2, purpose: 'train' }));
      return true;
    }),
    { numRuns: 150 },
  );
});

test('.pyth checkpoints: the issue\'s mutations of the archive and of its pickle give a typed PythError or the weights, never a throw', () => {
  const params = decodeWeights(CHECKPOINT, 'c');
  assert.ok(E.isRight(params));
  if (E.isLeft(params)) return;
  const pyth = encodePyth(pyDict([['epoch', 3], ['model_state', pyDict(params.right.params, true)], ['cfg', 'MODEL: {NUM_CLASSES: 40}']]));
  const mutations = pythMutations({
    open: (bytes) => {
      try {
        const a = openZip(bytes, 'm');
        return { names: [...a.entries.keys()], read: (n) => a.read(n) };
      } catch {
        return null;
      }
    },
    write: (files) => writeZip(files),
  });
  fc.assert(
    fc.property(fc.constantFrom(...Object.keys(mutations)), fc.integer({ min: 0, max: 2 ** 31 - 1 }), (kind, seed) => {
      const bytes = mutations[kind]!(pyth, rngOf(seed));
      const r = noThrow(`decodePyth after ${kind}/${seed}`, () => {
        const file = decodePyth(bytes, 'm.pyth');
        return E.isLeft(file) ? file : stateDictOf(file.right);
      });
      if (E.isLeft(r)) return r.left instanceof PythError && r.left.message.startsWith('m.pyth');
      return [...r.right.values()].every((t) => t.data.length === t.shape.reduce((a, b) => a * b, 1));
    }),
    { numRuns: 150 },
  );
});

test('fixtures: every mutation of a PySlowFast fixture is refused with a message or checked, never a throw', async () => {
  const path = join(DIR, 'fixture.safetensors');
  await fc.assert(
    fc.asyncProperty(caseArb, async ([kind, seed]) => {
      writeFileSync(path, MUTATIONS[kind]!(FIXTURE, rngOf(seed)));
      let r;
      try {
        r = await checkFixture(path, ['reversible']);
      } catch (e) {
        throw new Error(`checkFixture after ${kind}/${seed} threw: ${e instanceof Error ? `${e.name}: ${e.message.slice(0, 300)}` : String(e)}`);
      }
      return E.isLeft(r) ? r.left.length > 0 : r.right.comparisons.length > 0;
    }),
    { numRuns: 24 },
  );
});

test.after(() => rmSync(DIR, { recursive: true, force: true }));

test.run();
