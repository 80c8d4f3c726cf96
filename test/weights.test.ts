/** Loading and saving params by PySlowFast state_dict names. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { flattenWithPaths } from '../src/autodiff/pytree.ts';
import { encodeSafetensors, decodeSafetensors } from '../src/io/safetensors.ts';
import { buildModel } from '../src/models/mvit/model.ts';
import { presetConfig } from '../src/models/mvit/presets.ts';
import { namedArrays, paramsFromNamed } from '../src/models/mvit/weights.ts';
import { loadWeights, saveWeights } from '../src/models/mvit/weights-file.ts';
import { key } from '../src/random/index.ts';

const cfg = presetConfig('REV_VIT_TINY');
if (E.isLeft(cfg)) throw new Error('preset');
const model = buildModel(cfg.right);

test('save then load gives the same params bit for bit, in state_dict order', async () => {
  const params = model.init(key(3));
  const dir = mkdtempSync(join(tmpdir(), 'revgrad-weights-'));
  try {
    const path = join(dir, 'w.safetensors');
    await saveWeights(params, path);
    const loaded = loadWeights(model, path);
    if (E.isLeft(loaded)) return assert.unreachable(JSON.stringify(loaded.left));
    const a = flattenWithPaths(params);
    const b = flattenWithPaths(loaded.right);
    assert.equal(b.map(([n]) => n), model.specs.map((s) => s.name));
    a.forEach(([n, t], i) => assert.equal(Array.from(b[i][1].dataSync()), Array.from(t.dataSync()), n));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('every missing, misshapen and unexpected tensor is listed', async () => {
  const named = await namedArrays(model.init(key(0)));
  const [first, second] = model.specs;
  named.delete(first.name);
  named.set(second.name, { shape: [7], data: new Float32Array(7) });
  named.set('head.extra', { shape: [1], data: new Float32Array(1) });
  const result = paramsFromNamed(model, named);
  if (E.isRight(result)) return assert.unreachable('accepted bad weights');
  const byName = new Map(result.left.map((p) => [p.name, p.message]));
  assert.match(byName.get(first.name) ?? '', /missing/);
  assert.match(byName.get(second.name) ?? '', /shape \[7\] does not match/);
  assert.match(byName.get('head.extra') ?? '', /not a parameter/);
  assert.is(result.left.length, 3);
});

test('a corrupt file is a problem naming the file, not a crash', () => {
  const bytes = encodeSafetensors({ a: { shape: [2], data: new Float32Array(2) } });
  const cut = bytes.subarray(0, bytes.length - 3);
  assert.ok(E.isLeft(decodeSafetensors(cut)));
  const result = loadWeights(model, '/nonexistent/dir/w.safetensors');
  assert.ok(E.isLeft(result));
  if (E.isLeft(result)) assert.match(result.left[0].message, /nonexistent/);
});

test.run();
