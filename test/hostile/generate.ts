/**
 * Writes the hostile-input corpus of test/hostile.test.ts into test/hostile/corpus/: mutated checkpoints
 * (for `eval`, `train --resume`, `convert` and `export`), mutated fixtures (`check-fixture`), mutated JSON
 * and YAML configs (`train`, `check`, `memory`, `eval --config`), mutated .pyth files (`convert`) and
 * hostile argument lists, with a manifest.json naming the
 * command line of each case and the exit status it must end with (1 runtime, 2 usage).
 *
 *   node --import tsx test/hostile/generate.ts
 *
 * A case is kept only when the reader refuses the input (or its estimated memory passes the 2 GiB the
 * test allows), so every case must end in one clean error line. Deterministic: the same seeds give the
 * same files.
 */
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as E from 'fp-ts/lib/Either.js';
import { flattenWithPaths } from '../../src/autodiff/pytree.ts';
import { decodeSafetensors, encodeSafetensors, type NamedArray } from '../../src/io/safetensors.ts';
import { parseConfig, parseConfigText } from '../../src/models/mvit/config.ts';
import { checkFixture } from '../../src/models/mvit/fixture-check.ts';
import { buildModel } from '../../src/models/mvit/model.ts';
import { estimateResources } from '../../src/models/mvit/resources.ts';
import { normal, foldIn, key } from '../../src/random/index.ts';
import { decodeCheckpoint, decodeWeights, tensorsChecksum } from '../../src/train/checkpoint.ts';
import { decodePyth, encodePyth, pyDict, stateDictOf } from '../../src/io/pyth.ts';
import { openZip, writeZip } from '../../src/io/zip.ts';
import { readYamlConfig, slowFastYaml } from '../../src/models/mvit/yaml-config.ts';
import { HOSTILE_CONFIG, TINY_CONFIG, tinyCheckpointBytes } from './inputs.ts';
import { configMutations, joinFile, pythMutations, rngOf, safetensorsMutations, splitFile, yamlMutations } from './mutations.ts';

export interface CorpusCase {
  readonly name: string;
  /** The words after `revgrad`; `{corpus}` stands for the corpus directory, `{tmp}` for a fresh directory. */
  readonly argv: readonly string[];
  /** For `train --resume`: this corpus file is copied to `{tmp}/run/checkpoint.safetensors` first. */
  readonly checkpoint?: string;
  readonly expect: 1 | 2;
}

const HERE = dirname(fileURLToPath(import.meta.url));
export const CORPUS_DIR = join(HERE, 'corpus');
/** The memory limit the config cases run under, so their results do not depend on the machine. */
export const CORPUS_MEMORY = '2GiB';

function fixChecksum(bytes: Uint8Array): Uint8Array {
  const decoded = decodeSafetensors(bytes);
  const f = splitFile(bytes);
  if (E.isLeft(decoded) || f === null) return bytes;
  const metadata = { ...((f.entries.find(([k]) => k === '__metadata__')?.[1] as Record<string, string>) ?? {}) };
  if (metadata.checksum === undefined) return bytes;
  metadata.checksum = tensorsChecksum(decoded.right.tensors);
  return joinFile([['__metadata__', metadata], ...f.entries.filter(([k]) => k !== '__metadata__')], f.data);
}

/** A fixture of TINY_CONFIG in PySlowFast's layout whose references are this model's own outputs (it passes). */
function tinyFixture(): Uint8Array {
  const cfg = parseConfig(TINY_CONFIG);
  if (E.isLeft(cfg)) throw new Error('TINY_CONFIG is invalid');
  const model = buildModel(cfg.right);
  const params = model.init(key(1));
  const g = model.geometry;
  const x = normal(foldIn(key(2), 0), [2, g.inputChannels, ...g.inputDims]);
  const logits = model.apply(params, x, key(0), { train: true });
  const w = normal(foldIn(key(2), 1), logits.shape);
  const tensors = new Map<string, NamedArray>();
  for (const [name, t] of flattenWithPaths(params)) tensors.set(name, { shape: [...t.shape], data: t.dataSync() });
  for (const [name, t] of [['input', x], ['w', w], ['logits', logits]] as const) tensors.set(name, { shape: [...t.shape], data: t.dataSync() });
  return encodeSafetensors(tensors, { kind: 'full_model', config: JSON.stringify(cfg.right), block_layer_id: '0', 'zero_grad_tensors_(x)': '[]' });
}

async function generate(): Promise<CorpusCase[]> {
  const cases: CorpusCase[] = [];
  const write = (name: string, data: Uint8Array | string) => writeFileSync(join(CORPUS_DIR, name), data);
  const scratch = mkdtempSync(join(tmpdir(), 'revgrad-corpus-'));
  try {
    const mutations = safetensorsMutations({ fixChecksum });
    const checkpoint = await tinyCheckpointBytes(scratch);
    const fixture = tinyFixture();
    const fixturePath = join(scratch, 'f.safetensors');
    writeFileSync(fixturePath, fixture);
    if (E.isLeft(await checkFixture(fixturePath))) throw new Error('the base fixture does not load');
    write('checkpoint.safetensors', checkpoint);
    write('fixture.safetensors', fixture);
    for (const [kind, mutate] of Object.entries(mutations)) {
      // eval reads any weights file (decodeWeights); --resume needs a whole checkpoint (decodeCheckpoint).
      for (let seed = 0, kept = 0; seed < 40 && kept < 2; seed++) {
        const bytes = mutate(checkpoint, rngOf(seed));
        const forEval = E.isLeft(decodeWeights(bytes, 'c'));
        const forResume = E.isLeft(decodeCheckpoint(bytes, 'c')) && !cases.some((c) => c.checkpoint?.startsWith(`checkpoint.${kind}.`));
        if (!forEval && !forResume) continue;
        const name = `checkpoint.${kind}.${seed}.safetensors`;
        write(name, bytes);
        if (forEval) {
          cases.push({ name: `eval: ${name}`, argv: ['eval', '--checkpoint', `{corpus}/${name}`, '--clips', '2', '--batch', '2'], expect: 1 });
          if (kept === 0) cases.push({ name: `convert: ${name}`, argv: ['convert', `{corpus}/${name}`, '{tmp}/out.pyth'], expect: 1 });
        }
        if (forResume) {
          cases.push({ name: `resume: ${name}`, argv: ['train', '--out', '{tmp}/run', '--resume', '--quiet'], checkpoint: name, expect: 1 });
          cases.push({ name: `export: ${name}`, argv: ['export', '--checkpoint', `{corpus}/${name}`, '--out', '{tmp}/model.pyth'], expect: 1 });
        }
        kept++;
      }
      for (let seed = 0, kept = 0; seed < 40 && kept < 1; seed++) {
        const bytes = mutate(fixture, rngOf(seed));
        writeFileSync(fixturePath, bytes);
        if (E.isRight(await checkFixture(fixturePath, ['reversible']))) continue;
        const name = `fixture.${kind}.${seed}.safetensors`;
        write(name, bytes);
        cases.push({ name: `check-fixture: ${name}`, argv: ['check-fixture', `{corpus}/${name}`], expect: 1 });
        kept++;
      }
    }
    const commands: readonly (readonly string[])[] = [
      ['train', '--out', '{tmp}/run', '--steps', '1', '--quiet', '--no-report'],
      ['check'],
      ['memory', '--extra', '0'],
      ['eval', '--checkpoint', '{corpus}/checkpoint.safetensors', '--clips', '2', '--batch', '2'],
    ];
    let n = 0;
    for (const [kind, mutate] of Object.entries(configMutations())) {
      for (let seed = 0, kept = 0; seed < 40 && kept < 2; seed++) {
        const text = mutate(HOSTILE_CONFIG, rngOf(seed));
        const parsed = parseConfigText(text, 'c');
        if (E.isRight(parsed) && estimateResources(parsed.right, { batch: 16, purpose: 'train', mode: 'store' }).totalBytes < 2 ** 31) continue;
        const name = `config.${kind}.${seed}.json`;
        write(name, text);
        const cmd = commands[n++ % commands.length]!;
        cases.push({ name: `${cmd[0]}: ${name}`, argv: [...cmd, '--config', `{corpus}/${name}`, '--max-memory', CORPUS_MEMORY], expect: 1 });
        kept++;
      }
    }
    // PySlowFast YAML configs, and torch.save checkpoints for `convert`.
    const base = parseConfig(TINY_CONFIG);
    if (E.isLeft(base)) throw new Error('TINY_CONFIG is invalid');
    const yamlText = slowFastYaml(base.right);
    write('self.yaml', '_BASE_: ./self.yaml\n');
    for (const [kind, mutate] of Object.entries(yamlMutations())) {
      for (let seed = 0, kept = 0; seed < 20 && kept < 1; seed++) {
        const name = `config.${kind}.${seed}.yaml`;
        write(name, mutate(yamlText, rngOf(seed)));
        const parsed = readYamlConfig(join(CORPUS_DIR, name));
        if (E.isRight(parsed) && estimateResources(parsed.right.cfg, { batch: 16, purpose: 'train', mode: 'store' }).totalBytes < 2 ** 31) {
          rmSync(join(CORPUS_DIR, name));
          continue;
        }
        const cmd = commands[n++ % commands.length]!;
        cases.push({ name: `${cmd[0]}: ${name}`, argv: [...cmd, '--config', `{corpus}/${name}`, '--max-memory', CORPUS_MEMORY], expect: 1 });
        kept++;
      }
    }
    const weights = decodeWeights(checkpoint, 'c');
    if (E.isLeft(weights)) throw new Error('the base checkpoint does not load');
    const pyth = encodePyth(pyDict([['epoch', 3], ['model_state', pyDict(weights.right.params, true)], ['cfg', yamlText]]));
    write('model.pyth', pyth);
    const zip = {
      open: (bytes: Uint8Array) => {
        try {
          const a = openZip(bytes, 'm');
          return { names: [...a.entries.keys()], read: (name: string) => a.read(name) };
        } catch {
          return null;
        }
      },
      write: writeZip,
    };
    for (const [kind, mutate] of Object.entries(pythMutations(zip))) {
      for (let seed = 0, kept = 0; seed < 20 && kept < 2; seed++) {
        const bytes = mutate(pyth, rngOf(seed));
        const file = decodePyth(bytes, 'm');
        if (E.isRight(file) && E.isRight(stateDictOf(file.right))) continue;
        const name = `model.${kind}.${seed}.pyth`;
        write(name, bytes);
        cases.push({ name: `convert: ${name}`, argv: ['convert', `{corpus}/${name}`, '{tmp}/out.safetensors'], expect: 1 });
        kept++;
      }
    }
    const usage: readonly (readonly string[])[] = [
      ['train', '--steps', '1e999'],
      ['train', '--steps', '-1'],
      ['train', '--batch', '0'],
      ['train', '--lr', 'NaN'],
      ['train', '--lr', 'Infinity'],
      ['train', '--seed', '9007199254740993'],
      ['train', '--out', ''],
      ['train', '--max-memory', 'lots'],
      ['train', '--max-memory', '-5GiB'],
      ['train', '--resume'],
      ['train', '--resume', '--force', '--out', '{tmp}/x'],
      ['train', '--report-depths', '1,,2'],
      ['train', '--report-depths', '-1'],
      ['train', '--label-smoothing', '1'],
      ['train', '--mode', 'fast'],
      ['train', '--steps'],
      ['train', '--on-nan', 'explode'],
      ['eval'],
      ['eval', '--checkpoint', 'x', '--clips', '1', '--batches', '1'],
      ['memory', '--extra', '-1'],
      ['memory', '--extra', 'a,b'],
      ['check', '--tol', '0'],
      ['check-fixture'],
      ['check-fixture', 'a', 'b'],
      ['nonsense'],
      ['convert'],
      ['convert', 'a.pyth'],
      ['convert', 'a.pyth', 'b.safetensors', 'c'],
      ['export', '--out', 'x.pyth'],
      ['export', '--checkpoint', 'x', '--max-epoch', '0'],
      ['train', '\u0000'],
      ['train', `--${'x'.repeat(10_000)}`],
    ];
    usage.forEach((argv, i) => cases.push({ name: `usage ${i}: ${argv.join(' ').slice(0, 60)}`, argv, expect: 2 }));
    cases.push(
      { name: 'train: --out under a regular file', argv: ['train', '--out', '{corpus}/checkpoint.safetensors/run', '--steps', '1', '--config', '{corpus}/tiny.json', '--quiet'], expect: 1 },
      { name: 'train: --config is a directory', argv: ['train', '--config', '{corpus}', '--out', '{tmp}/run'], expect: 1 },
      { name: 'eval: --checkpoint is a directory', argv: ['eval', '--checkpoint', '{corpus}'], expect: 1 },
      { name: 'train: --report-depths past the depth limit', argv: ['train', '--config', '{corpus}/tiny.json', '--out', '{tmp}/run', '--report-depths', '0,100000'], expect: 1 },
      { name: 'eval: a fixture is not a Moving-MNIST checkpoint', argv: ['eval', '--checkpoint', '{corpus}/fixture.safetensors'], expect: 1 },
    );
    write('tiny.json', HOSTILE_CONFIG);
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
  return cases;
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  rmSync(CORPUS_DIR, { recursive: true, force: true });
  mkdirSync(CORPUS_DIR, { recursive: true });
  const cases = await generate();
  writeFileSync(join(CORPUS_DIR, 'manifest.json'), JSON.stringify(cases, null, 1) + '\n');
  const files = readdirSync(CORPUS_DIR);
  console.log(`${cases.length} cases, ${files.length} files in ${CORPUS_DIR}`);
}
