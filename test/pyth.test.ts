/**
 * PyTorch checkpoints (.pyth): the real PySlowFast-layout fixture written by torch.save, hand-built
 * archives for views, dtypes and refusals, and (where /usr/bin/python3 has torch) files crossing
 * between torch and revgrad in both directions.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { pickle, PyDict, PyPersistent, PyReduce, PyRef, PyTuple, type PickleOut } from '../src/io/pickle.ts';
import { decodePyth, encodePyth, pyDict, stateDictOf, tensorToFloat32, TorchTensor, type PythFile } from '../src/io/pyth.ts';
import { readPythFile } from '../src/io/pyth-file.ts';
import { type NamedArray } from '../src/io/safetensors.ts';
import { readSafetensorsFile } from '../src/io/safetensors-file.ts';
import { crc32, crc32Tables, openZip, writeZip } from '../src/io/zip.ts';
import { zipSync } from 'fflate';
import { parseConfigText } from '../src/models/mvit/config.ts';
import { buildModel } from '../src/models/mvit/model.ts';
import { presetConfig } from '../src/models/mvit/presets.ts';
import { loadWeights } from '../src/models/mvit/weights-file.ts';
import { flattenWithPaths } from '../src/autodiff/pytree.ts';

const FIXTURE = 'test/fixtures/revmvit_video_conv_avg_full.pyth';
const REFERENCE = 'test/fixtures/revmvit_video_conv_avg_full.safetensors';

const bits = (a: Float32Array) => Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length));
const right = <A>(e: E.Either<{ message: string }, A>): A => {
  if (E.isLeft(e)) throw new Error(`expected Right, got ${e.left.message}`);
  return e.right;
};
const leftOf = <A>(e: E.Either<{ message: string; code?: string }, A>): { message: string; code?: string } => {
  if (E.isRight(e)) throw new Error('expected a Left');
  return e.left;
};

test('the torch.save fixture loads to exactly the parameters of the safetensors fixture', () => {
  const file = right(readPythFile(FIXTURE));
  const weights = right(stateDictOf(file));
  const reference = right(readSafetensorsFile(REFERENCE)).tensors;
  // The reference also holds inputs, activations and gradients; every parameter name is in model_state.
  const names = [...weights.keys()];
  assert.is(names.length, 237);
  for (const name of names) {
    const ref = reference.get(name);
    assert.ok(ref, `${name} is not in the reference`);
    assert.equal(weights.get(name)!.shape, ref!.shape, name);
    assert.equal(bits(weights.get(name)!.data), bits(ref!.data), name);
  }
});

test("the fixture's other entries read as PySlowFast wrote them (epoch, cfg text, a real AdamW state)", () => {
  const file = right(readPythFile(FIXTURE));
  const root = file.root as PyDict;
  assert.equal([...root.entries.keys()], ['epoch', 'model_state', 'optimizer_state', 'cfg']);
  assert.is(root.get('epoch'), 7);
  assert.is((root.get('model_state') as PyDict).className, 'OrderedDict');
  assert.match(root.get('cfg') as string, /"NUM_FRAMES": 4/);
  const optimizer = root.get('optimizer_state') as PyDict;
  const group = (optimizer.get('param_groups') as PyDict[])[0]!;
  assert.is(group.get('lr'), 0.001);
  assert.is(group.get('weight_decay'), 0.05);
  assert.equal((group.get('betas') as PyTuple).items, [0.9, 0.999]);
  assert.is(group.get('amsgrad'), false);
  assert.is(group.get('foreach'), null);
  const state = optimizer.get('state') as PyDict;
  const first = state.get(0) as PyDict;
  const step = first.get('step') as TorchTensor;
  assert.equal(step.shape, []);
  assert.equal(Array.from(right(tensorToFloat32(file, step, 'step'))), [2]);
  const firstParam = [...right(stateDictOf(file)).values()][0]!;
  assert.equal((first.get('exp_avg') as TorchTensor).shape, firstParam.shape);
});

test('loadWeights takes a .pyth: the fixture fits its model, and a wrong model gets every mismatch listed', () => {
  const reference = right(readSafetensorsFile(REFERENCE));
  const config = parseConfigText(reference.metadata.config!, 'fixture');
  if (E.isLeft(config)) return assert.unreachable('fixture config');
  const model = buildModel(config.right);
  // The fixture's model_state also holds the 119 `grad_vanilla.*` reference gradients: strict loading names each one.
  const strict = loadWeights(model, FIXTURE);
  if (E.isRight(strict)) return assert.unreachable('extra tensors accepted silently');
  assert.is(strict.left.length, 119);
  assert.ok(strict.left.every((p) => p.name.startsWith('grad_vanilla.') && p.message === 'not a parameter of this model'));
  const loaded = loadWeights(model, FIXTURE, { allowExtra: true });
  if (E.isLeft(loaded)) return assert.unreachable(loaded.left[0]!.message);
  const flat = flattenWithPaths(loaded.right);
  assert.equal(flat.map(([n]) => n), model.specs.map((s) => s.name));
  for (const [name, t] of flat) assert.equal(bits(t.dataSync()), bits(reference.tensors.get(name)!.data), name);

  const tiny = presetConfig('REV_VIT_TINY');
  if (E.isLeft(tiny)) return assert.unreachable('preset');
  const wrong = loadWeights(buildModel(tiny.right), FIXTURE, { allowExtra: true });
  if (E.isRight(wrong)) return assert.unreachable('a Rev-MViT checkpoint loaded into a Rev-ViT');
  const messages = wrong.left.map((p) => `${p.name}: ${p.message}`).join('\n');
  assert.match(messages, /patch_embed\.proj\.weight: shape \[8, 3, 3, 3, 3\] does not match the model's \[32, 1, 4, 4\]/);
  assert.match(messages, /pos_embed: missing/);
  const notFound = loadWeights(model, 'test/fixtures/no-such-file.pyth');
  assert.ok(E.isLeft(notFound) && /no-such-file\.pyth: cannot read/.test(notFound.left[0]!.message));
});

// ---------------------------------------------------------------------------------------------
// Hand-built archives

const tensorOut = (type: string, key: string, numel: number, offset: number, shape: number[], stride: number[]): PickleOut =>
  new PyReduce(new PyRef('torch._utils', '_rebuild_tensor_v2'), [
    new PyPersistent(new PyTuple<PickleOut>(['storage', new PyRef('torch', type), key, 'cpu', numel])),
    offset,
    new PyTuple(shape),
    new PyTuple(stride),
    false,
    { ordered: true, entries: new Map() },
  ]);

function archive(root: PickleOut, storages: Record<string, Uint8Array>, extra: [string, Uint8Array][] = []): Uint8Array {
  const text = (s: string) => new TextEncoder().encode(s);
  return writeZip([
    ['m/data.pkl', pickle(root)],
    ...Object.entries(storages).map(([k, b]) => [`m/data/${k}`, b] as [string, Uint8Array]),
    ['m/version', text('3\n')],
    ...extra,
  ]);
}

const u16s = (...xs: number[]) => new Uint8Array(new Uint16Array(xs).buffer);
const f32s = (...xs: number[]) => new Uint8Array(new Float32Array(xs).buffer);
const i64s = (...xs: bigint[]) => new Uint8Array(new BigInt64Array(xs).buffer);
const f64s = (...xs: number[]) => new Uint8Array(new Float64Array(xs).buffer);
const dict = (entries: [string, PickleOut][]): PickleOut => ({ ordered: true, entries: new Map(entries) });
const weightsOf = (bytes: Uint8Array, key?: string) => stateDictOf(right(decodePyth(bytes, 'test.pyth')), key);

test('strided and offset views of a shared storage are gathered in row-major order', () => {
  const storage = f32s(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11);
  const bytes = archive(
    dict([
      ['whole', tensorOut('FloatStorage', '0', 12, 0, [3, 4], [4, 1])],
      ['transposed', tensorOut('FloatStorage', '0', 12, 1, [2, 3], [1, 4])], // rows of column 1.., i.e. a .t() view
      ['row', tensorOut('FloatStorage', '0', 12, 8, [4], [1])],
      ['expanded', tensorOut('FloatStorage', '0', 12, 5, [2, 3], [0, 1])], // stride 0 repeats
      ['scalar', tensorOut('FloatStorage', '0', 12, 11, [], [])],
      ['empty', tensorOut('FloatStorage', '0', 12, 0, [0, 5], [5, 1])],
    ]),
    { '0': storage },
  );
  const w = right(weightsOf(bytes));
  assert.equal(Array.from(w.get('whole')!.data), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
  assert.equal(Array.from(w.get('transposed')!.data), [1, 5, 9, 2, 6, 10]);
  assert.equal(Array.from(w.get('row')!.data), [8, 9, 10, 11]);
  assert.equal(Array.from(w.get('expanded')!.data), [5, 6, 7, 5, 6, 7]);
  assert.equal(w.get('scalar')!.shape, []);
  assert.equal(Array.from(w.get('scalar')!.data), [11]);
  assert.equal(w.get('empty')!.shape, [0, 5]);
});

test('float16, bfloat16, float64 and exact int64 convert to float32; the rest is refused by name', () => {
  // half: 1, -2, 65504 (max), 2^-24 (smallest subnormal); bfloat16: 1, -0.5; float64: 1/3 rounds.
  const bytes = archive(
    dict([
      ['half', tensorOut('HalfStorage', 'h', 4, 0, [4], [1])],
      ['bf16', tensorOut('BFloat16Storage', 'b', 2, 0, [2], [1])],
      ['double', tensorOut('DoubleStorage', 'd', 2, 0, [2], [1])],
      ['long', tensorOut('LongStorage', 'l', 2, 0, [2], [1])],
    ]),
    { h: u16s(0x3c00, 0xc000, 0x7bff, 0x0001), b: u16s(0x3f80, 0xbf00), d: f64s(1 / 3, -1e300), l: i64s(-7n, 16777216n) },
  );
  const file = right(decodePyth(bytes, 'dtypes.pyth'));
  const root = file.root as PyDict;
  const values = (name: string) => Array.from(right(tensorToFloat32(file, root.get(name) as TorchTensor, name)));
  assert.equal(values('half'), [1, -2, 65504, 2 ** -24]);
  assert.equal(values('bf16'), [1, -0.5]);
  assert.equal(values('double'), [Math.fround(1 / 3), -Infinity]);
  assert.equal(values('long'), [-7, 16777216]);

  const inexact = archive(dict([['n', tensorOut('LongStorage', '0', 1, 0, [1], [1])]]), { '0': i64s(16777217n) });
  assert.match(leftOf(weightsOf(inexact)).message, /tensor 'n' is int64 and holds 16777217, which float32 cannot represent exactly/);
  const ints = archive(dict([['counts', tensorOut('IntStorage', '0', 2, 0, [2], [1])]]), { '0': f32s(0, 0) });
  const refused = leftOf(weightsOf(ints));
  assert.is(refused.code, 'dtype');
  assert.match(refused.message, /tensor 'counts' is int32; only float32, float16, bfloat16, float64, int64 convert/);
});

test('a big-endian archive (byteorder record) is read in its byte order', () => {
  const be = new Uint8Array(8);
  new DataView(be.buffer).setFloat32(0, 1.5, false);
  new DataView(be.buffer).setFloat32(4, -3, false);
  const bytes = archive(dict([['w', tensorOut('FloatStorage', '0', 2, 0, [2], [1])]]), { '0': be }, [['m/byteorder', new TextEncoder().encode('big')]]);
  assert.equal(Array.from(right(weightsOf(bytes)).get('w')!.data), [1.5, -3]);
});

test('refusals are typed and say what and where: globals, legacy files, bad storages and views, corruption', () => {
  const code = (bytes: Uint8Array) => leftOf(E.chain((f: PythFile) => stateDictOf(f))(decodePyth(bytes, 'bad.pyth')));
  // A global outside the checkpoint vocabulary: named, never resolved.
  const evil = code(archive(new PyReduce(new PyRef('os', 'system'), ['echo pwned']), {}));
  assert.is(evil.code, 'global');
  assert.match(evil.message, /refused global 'os\.system'/);
  const builtins = code(archive(dict([['x', new PyReduce(new PyRef('builtins', 'eval'), ['1'])]]), {}));
  assert.match(builtins.message, /refused global 'builtins\.eval'/);
  // Pre-1.6 torch.save (a bare pickle stream) and things that are not checkpoints at all.
  const legacy = code(pickle(dict([['a', 1]])));
  assert.is(legacy.code, 'legacy');
  assert.match(legacy.message, /torch < 1\.6.*save it again/);
  assert.is(code(new TextEncoder().encode('hello world')).code, 'zip');
  // A storage record shorter than its element count says; a view reaching past its storage.
  assert.match(code(archive(dict([['w', tensorOut('FloatStorage', '0', 4, 0, [4], [1])]]), { '0': f32s(1, 2, 3) })).message, /holds 12 bytes, but storage 0 is 4 float32 elements/);
  assert.match(code(archive(dict([['w', tensorOut('FloatStorage', '0', 4, 2, [2, 2], [2, 1])]]), { '0': f32s(1, 2, 3, 4) })).message, /reaches element 5 of a 4-element storage/);
  assert.match(code(archive(dict([['w', tensorOut('FloatStorage', '9', 1, 0, [1], [1])]]), {})).message, /storage 9 has no record m\/data\/9/);
  // No model_state: the keys that are there are listed.
  const noWeights = code(archive(new PyDict() as never, {}));
  assert.is(noWeights.code, 'layout');
  const wrongKey = leftOf(weightsOf(archive(dict([['state_dict', dict([])], ['epoch', 3]]), {}), 'model'));
  assert.match(wrongKey.message, /has no 'model'; its top-level keys: "state_dict", "epoch"/);
  // A flipped bit in a storage is caught by its CRC when the tensor is read.
  const good = archive(dict([['model_state', dict([['w', tensorOut('FloatStorage', '0', 2, 0, [2], [1])]])]]), { '0': f32s(1, 2) });
  const flipped = good.slice();
  const at = findBytes(flipped, f32s(1, 2));
  flipped[at + 1]! ^= 0x10;
  assert.is(code(flipped).code, 'crc');
});

function findBytes(haystack: Uint8Array, needle: Uint8Array): number {
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return i;
  }
  throw new Error('not found');
}

test('CRC-32: the standard check value, and the table version equals the one in use at every length', () => {
  assert.is(crc32Tables(new TextEncoder().encode('123456789')), 0xcbf43926);
  for (let n = 0; n < 70; n++) {
    const b = Uint8Array.from({ length: n * 13 }, (_, i) => (i * 31 + n) & 255);
    assert.is(crc32Tables(b), crc32(b), `length ${b.length}`);
  }
});

test('encodePyth then decodePyth gives back every tensor bit for bit, in order, as an OrderedDict', () => {
  const tensors = new Map<string, NamedArray>([
    ['b.weight', { shape: [2, 3], data: new Float32Array([1, -0, NaN, Infinity, 1e-45, 3.5]) }],
    ['a.bias', { shape: [3], data: new Float32Array([7, 8, 9]) }],
    ['10', { shape: [], data: new Float32Array([42]) }],
  ]);
  const bytes = encodePyth(pyDict([['epoch', -1], ['model_state', pyDict(tensors, true)], ['cfg', 'MVIT:\n  DEPTH: 2\n'], ['big', 2 ** 40]]));
  const file = right(decodePyth(bytes, 'rt.pyth'));
  const root = file.root as PyDict;
  assert.is(root.get('epoch'), -1);
  assert.is(root.get('cfg'), 'MVIT:\n  DEPTH: 2\n');
  assert.is(root.get('big'), 2 ** 40);
  assert.is((root.get('model_state') as PyDict).className, 'OrderedDict');
  const back = right(stateDictOf(file));
  assert.equal([...back.keys()], ['b.weight', 'a.bias', '10']);
  for (const [name, t] of tensors) {
    assert.equal(back.get(name)!.shape, t.shape);
    assert.equal(bits(back.get(name)!.data), bits(t.data));
  }
  // torch's layout: data 64-byte aligned inside the archive.
  const payload = findBytes(bytes, new Uint8Array(new Float32Array([7, 8, 9]).buffer));
  assert.is(payload % 64, 0);

  // The same archive re-zipped with deflate by another writer (fflate) reads the same.
  const entries = Object.fromEntries([...openZip(bytes).entries.keys()].map((name) => [name, openZip(bytes).read(name)]));
  const deflated = zipSync(entries, { level: 6 });
  assert.ok(deflated.length < bytes.length);
  const again = right(stateDictOf(right(decodePyth(deflated, 'deflated.pyth'))));
  for (const [name, t] of tensors) assert.equal(bits(again.get(name)!.data), bits(t.data), name);
});

// ---------------------------------------------------------------------------------------------
// Against real torch, where it is installed

const PYTHON = '/usr/bin/python3';
const torchVersion = (() => {
  const r = spawnSync(PYTHON, ['-c', 'import torch; print(torch.__version__)'], { encoding: 'utf8', timeout: 60_000 });
  return r.status === 0 ? r.stdout.trim() : null;
})();
if (torchVersion === null) {
  console.log(`  [skipped] torch round trips: ${PYTHON} has no torch (apt-get install python3-torch; .ci/python-deps.sh installs it in CI)`);
}
const torchTest = torchVersion === null ? test.skip : test;

function python(script: string, args: string[]): string {
  const r = spawnSync(PYTHON, ['-c', script, ...args], { encoding: 'utf8', timeout: 120_000 });
  if (r.status !== 0) throw new Error(`python failed (${r.status}): ${r.stderr}`);
  return r.stdout;
}

torchTest(`a file revgrad writes loads in torch ${torchVersion} with weights_only=True, equal to the reference tensors`, () => {
  const dir = mkdtempSync(join(tmpdir(), 'revgrad-pyth-'));
  try {
    const weights = right(stateDictOf(right(readPythFile(FIXTURE))));
    const out = join(dir, 'export.pyth');
    writeFileSync(out, encodePyth(pyDict([['epoch', -1], ['model_state', pyDict(weights, true)], ['cfg', 'MVIT:\n  DEPTH: 5\n']])));
    const report = JSON.parse(
      python(
        `
import json, sys, torch
ours = torch.load(sys.argv[1], weights_only=True)
ref = torch.load(sys.argv[2], map_location="cpu")["model_state"]
ms = ours["model_state"]
print(json.dumps({
  "type": type(ms).__name__, "epoch": ours["epoch"], "cfg": ours["cfg"], "keys": list(ms) == list(ref),
  "equal": all(torch.equal(ms[k], ref[k]) and ms[k].dtype == torch.float32 and ms[k].is_contiguous() for k in ref),
}))`,
        [out, FIXTURE],
      ),
    );
    assert.equal(report, { type: 'OrderedDict', epoch: -1, cfg: 'MVIT:\n  DEPTH: 5\n', keys: true, equal: true });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

torchTest('a file torch writes (views, every convertible dtype, a Parameter) reads as torch sees it', () => {
  const dir = mkdtempSync(join(tmpdir(), 'revgrad-pyth-'));
  try {
    const path = join(dir, 'torch.pyth');
    const expected = JSON.parse(
      python(
        `
import json, sys, torch
from collections import OrderedDict
g = torch.Generator().manual_seed(0)
base = torch.randn(4, 6, generator=g)
sd = OrderedDict()
sd["transposed"] = base.t()
sd["sliced"] = base[1:3, ::2]
sd["half"] = torch.randn(3, 5, generator=g).half()
sd["bf16"] = torch.randn(7, generator=g).bfloat16()
sd["double"] = torch.randn(2, 2, generator=g).double()
sd["long"] = torch.arange(-3, 9).reshape(3, 4)
sd["param"] = torch.nn.Parameter(torch.randn(2, 3, generator=g))
torch.save({"epoch": 1, "model_state": sd}, sys.argv[1])
print(json.dumps({k: {"shape": list(v.shape), "values": v.detach().float().flatten().tolist()} for k, v in sd.items()}))`,
        [path],
      ),
    );
    const w = right(stateDictOf(right(decodePyth(readFileSync(path), path))));
    assert.equal([...w.keys()], Object.keys(expected));
    for (const [name, { shape, values }] of Object.entries(expected as Record<string, { shape: number[]; values: number[] }>)) {
      assert.equal(w.get(name)!.shape, shape, name);
      assert.equal(Array.from(w.get(name)!.data), values.map(Math.fround), name);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
