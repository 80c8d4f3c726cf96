/**
 * The long version of laws/readers.test.ts: every reader of untrusted input on many seeded mutations,
 * counting per mutation kind how often the input was refused (by error code) or accepted, and failing
 * on any throw or any unsound acceptance. The numbers in docs/reliability.md come from this script.
 *
 *   node --import tsx bench/fuzz-readers.ts [--cases N] [--seed S] [--only safetensors,checkpoint,config,yaml,pyth,fixture]
 *
 * N is per reader and mutation kind (default 200). Prints one table per reader and exits 1 if anything threw.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import { decodePyth, encodePyth, pyDict, stateDictOf } from '../src/io/pyth.ts';
import { decodeSafetensors } from '../src/io/safetensors.ts';
import { openZip, writeZip } from '../src/io/zip.ts';
import { MAX_DEPTH, parseConfig, parseConfigText } from '../src/models/mvit/config.ts';
import { checkFixture } from '../src/models/mvit/fixture-check.ts';
import { estimateResources } from '../src/models/mvit/resources.ts';
import { readYamlConfig, slowFastYaml } from '../src/models/mvit/yaml-config.ts';
import { decodeCheckpoint, decodeWeights, tensorsChecksum } from '../src/train/checkpoint.ts';
import { HOSTILE_CONFIG, TINY_CONFIG, tinyCheckpointBytes } from '../test/hostile/inputs.ts';
import { configMutations, joinFile, pythMutations, rngOf, safetensorsMutations, splitFile, yamlMutations, type Rand } from '../test/hostile/mutations.ts';

const arg = (name: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : undefined;
};
const CASES = Number(arg('cases') ?? 200);
const SEED = Number(arg('seed') ?? 1);
const ONLY = arg('only')?.split(',');

interface Tally {
  cases: number;
  outcomes: Map<string, number>;
  throws: string[];
  ms: number;
}

const tallies = new Map<string, Map<string, Tally>>();

/** Run `check` on N mutations of each kind; it returns an outcome label, or throws on an unsound result. */
async function fuzz<T>(reader: string, mutations: Record<string, (input: T, r: Rand) => T>, input: T, check: (mutated: T) => string | Promise<string>, n = CASES) {
  if (ONLY && !ONLY.includes(reader)) return;
  const byKind = new Map<string, Tally>();
  tallies.set(reader, byKind);
  for (const [kind, mutate] of Object.entries(mutations)) {
    const t: Tally = { cases: 0, outcomes: new Map(), throws: [], ms: 0 };
    byKind.set(kind, t);
    for (let i = 0; i < n; i++) {
      const seed = SEED * 1_000_003 + i;
      const mutated = mutate(input, rngOf(seed));
      const t0 = performance.now();
      try {
        const outcome = await check(mutated);
        t.outcomes.set(outcome, (t.outcomes.get(outcome) ?? 0) + 1);
      } catch (e) {
        t.throws.push(`${kind}/${seed}: ${e instanceof Error ? `${e.name}: ${e.message.slice(0, 200)}` : String(e)}`);
      }
      t.ms += performance.now() - t0;
      t.cases++;
    }
  }
}

function fixChecksum(bytes: Uint8Array): Uint8Array {
  const decoded = decodeSafetensors(bytes);
  const f = splitFile(bytes);
  if (E.isLeft(decoded) || f === null) return bytes;
  const metadata = { ...((f.entries.find(([k]) => k === '__metadata__')?.[1] as Record<string, string>) ?? {}) };
  if (metadata.checksum === undefined) return bytes;
  metadata.checksum = tensorsChecksum(decoded.right.tensors);
  return joinFile([['__metadata__', metadata], ...f.entries.filter(([k]) => k !== '__metadata__')], f.data);
}

const unsound = (why: string): never => {
  throw new Error(`accepted but unsound: ${why}`);
};

const dir = mkdtempSync(join(tmpdir(), 'revgrad-fuzz-'));
try {
  const t0 = performance.now();
  const checkpoint = await tinyCheckpointBytes(dir);
  const fixture = new Uint8Array(readFileSync(new URL('../test/fixtures/revvit_2d_stack_cls.safetensors', import.meta.url)));
  const mutations = safetensorsMutations({ fixChecksum });

  await fuzz('safetensors', mutations, checkpoint, (b) => {
    const r = decodeSafetensors(b, 'm');
    if (E.isLeft(r)) return `refused: ${r.left.code}`;
    for (const [, t] of r.right.tensors) if (t.data.length !== t.shape.reduce((a, c) => a * c, 1)) unsound('data length');
    return 'accepted';
  });

  await fuzz('checkpoint', mutations, checkpoint, (b) => {
    const r = decodeCheckpoint(b, 'm');
    decodeWeights(b, 'm');
    if (E.isLeft(r)) return `refused: ${r.left.code}`;
    const c = r.right;
    for (const [, t] of [...c.params, ...[...(c.optim?.values() ?? [])].flatMap((slot) => [...slot])]) if (!t.data.every(Number.isFinite)) unsound('non-finite value');
    parseConfig(c.meta.config);
    return 'accepted';
  });

  await fuzz('config', configMutations(), HOSTILE_CONFIG, (text) => {
    const r = parseConfigText(text, 'c.json');
    if (E.isLeft(r)) return 'refused';
    if (r.right.MVIT.DEPTH > MAX_DEPTH) unsound('DEPTH');
    const est = estimateResources(r.right, { batch: 16, purpose: 'train' });
    return est.totalBytes > 2 ** 34 || est.largestTensor.bytes > 2 ** 30 ? 'accepted, refused by the memory check' : 'accepted';
  });

  const cfg = parseConfig(TINY_CONFIG);
  if (E.isLeft(cfg)) throw new Error('TINY_CONFIG is invalid');
  const yamlFiles = { '/c/self.yaml': '_BASE_: ./self.yaml\n' } as Record<string, string>;
  await fuzz('yaml', yamlMutations(), slowFastYaml(cfg.right), (text) => {
    const readText = (p: string) => {
      const found = p === '/c/c.yaml' ? text : yamlFiles[p];
      if (found === undefined) throw Object.assign(new Error(`ENOENT: ${p}`), { code: 'ENOENT' });
      return found;
    };
    const r = readYamlConfig('/c/c.yaml', { readText });
    if (E.isLeft(r)) return 'refused';
    estimateResources(r.right.cfg, { batch: 16, purpose: 'train' });
    return 'accepted';
  });

  const weights = decodeWeights(checkpoint, 'c');
  if (E.isLeft(weights)) throw new Error('the base checkpoint does not load');
  const pyth = encodePyth(pyDict([['epoch', 3], ['model_state', pyDict(weights.right.params, true)], ['cfg', 'x: 1']]));
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
  await fuzz('pyth', pythMutations(zip), pyth, (b) => {
    const file = decodePyth(b, 'm');
    if (E.isLeft(file)) return `refused: ${file.left.code}`;
    const sd = stateDictOf(file.right);
    return E.isLeft(sd) ? `refused: ${sd.left.code}` : 'accepted';
  });

  const fixturePath = join(dir, 'fixture.safetensors');
  await fuzz(
    'fixture',
    mutations,
    fixture,
    async (b) => {
      writeFileSync(fixturePath, b);
      const r = await checkFixture(fixturePath, ['reversible']);
      return E.isLeft(r) ? 'refused' : r.right.ok ? 'checked: pass' : 'checked: fail';
    },
    Math.max(1, Math.round(CASES / 10)),
  );

  let total = 0;
  let threw = 0;
  for (const [reader, byKind] of tallies) {
    const n = [...byKind.values()].reduce((a, t) => a + t.cases, 0);
    const ms = [...byKind.values()].reduce((a, t) => a + t.ms, 0);
    console.log(`\n${reader}: ${n} cases, ${(ms / n).toFixed(2)} ms/case`);
    for (const [kind, t] of byKind) {
      const outcomes = [...t.outcomes].sort((a, b) => b[1] - a[1]).map(([o, c]) => `${o} ${c}`).join(', ');
      console.log(`  ${kind.padEnd(20)} ${String(t.cases).padStart(5)}  ${outcomes}${t.throws.length > 0 ? `  THREW ${t.throws.length}` : ''}`);
      for (const line of t.throws.slice(0, 3)) console.log(`      ${line}`);
      threw += t.throws.length;
    }
    total += n;
  }
  console.log(`\n${total} cases in ${((performance.now() - t0) / 1000).toFixed(1)} s; ${threw} threw or were accepted unsound`);
  process.exitCode = threw > 0 ? 1 : 0;
} finally {
  rmSync(dir, { recursive: true, force: true });
}
