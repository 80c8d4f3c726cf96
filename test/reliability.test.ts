/**
 * Reliability of the `revgrad` command and the readers behind it (issue 16): nothing is deleted before
 * the new run is validated, configs that cannot fit are refused with the estimate and the limit, the
 * checkpoint checksum and the non-finite check guard eval and --resume, leftovers of interrupted runs
 * are settled, and the memory estimate agrees with the measured peak.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import * as E from 'fp-ts/lib/Either.js';
import { measureMemory } from '../src/backend/memory.ts';
import { CliError } from '../src/cli/common.ts';
import { errorMessage, main } from '../src/cli/main.ts';
import { measureMemoryRow } from '../src/cli/memory.ts';
import { decodeSafetensors } from '../src/io/safetensors.ts';
import { parseConfig } from '../src/models/mvit/config.ts';
import { checkFixture } from '../src/models/mvit/fixture-check.ts';
import { presetConfig } from '../src/models/mvit/presets.ts';
import { estimateResources } from '../src/models/mvit/resources.ts';
import { tensor } from '../src/tensor/tensor.ts';
import { ShapeError } from '../src/tensor/errors.ts';
import { add } from '../src/tensor/ops.ts';
import { loadCheckpoint, tensorsChecksum } from '../src/train/checkpoint.ts';
import { TINY_CONFIG } from './hostile/inputs.ts';
import { joinFile, splitFile } from './hostile/mutations.ts';

const DIR = mkdtempSync(join(tmpdir(), 'revgrad-reliability-'));
const cfgPath = join(DIR, 'tiny.json');
writeFileSync(cfgPath, JSON.stringify(TINY_CONFIG));
const quick = ['--config', cfgPath, '--steps', '2', '--batch', '2', '--eval-clips', '2', '--no-report', '--quiet'];

async function revgrad(...argv: string[]): Promise<{ code: number; err: string; out: string }> {
  let err = '';
  let out = '';
  const write = process.stdout.write;
  process.stdout.write = ((s: string) => ((out += s), true)) as typeof process.stdout.write;
  try {
    const code = await main(argv, (s) => (err += s));
    return { code, err, out };
  } finally {
    process.stdout.write = write;
  }
}

/** A copy of a safetensors file with metadata edited (and, with `fix`, the checksum recomputed). */
function editFile(path: string, edit: (metadata: Record<string, string>, data: Uint8Array) => void, fix = true): void {
  const f = splitFile(new Uint8Array(readFileSync(path)))!;
  const metadata = { ...(f.entries.find(([k]) => k === '__metadata__')![1] as Record<string, string>) };
  const data = f.data.slice();
  edit(metadata, data);
  let bytes = joinFile([['__metadata__', metadata], ...f.entries.filter(([k]) => k !== '__metadata__')], data);
  if (fix) {
    const decoded = decodeSafetensors(bytes);
    if (E.isRight(decoded)) {
      metadata.checksum = tensorsChecksum(decoded.right.tensors);
      bytes = joinFile([['__metadata__', metadata], ...f.entries.filter(([k]) => k !== '__metadata__')], data);
    }
  }
  writeFileSync(path, bytes);
}

const snapshot = (dir: string) => Object.fromEntries(readdirSync(dir).filter((f) => !f.startsWith('.')).map((f) => [f, readFileSync(join(dir, f)).toString('base64')]));

let run: string;
test.before(async () => {
  run = join(DIR, 'run');
  const r = await revgrad('train', ...quick, '--out', run);
  assert.is(r.code, 0, r.err);
});

test('--force validates the new run before touching the old one: a rejected config or memory estimate leaves it intact', async () => {
  const before = snapshot(run);
  const write = (name: string, edit: (c: any) => void) => {
    const c = structuredClone(TINY_CONFIG) as any;
    edit(c);
    writeFileSync(join(DIR, name), JSON.stringify(c));
    return join(DIR, name);
  };
  const cases: [string[], RegExp][] = [
    [['--config', write('nc10.json', (c) => (c.MODEL.NUM_CLASSES = 10))], /MODEL\.NUM_CLASSES: is 10, but the Moving-MNIST task has 40 classes/],
    [['--config', write('wide.json', (c) => (c.MVIT.EMBED_DIM = 1e9))], /would take .* more than the 1\.00 GiB one tensor may have/],
    [['--config', cfgPath, '--max-memory', '8KiB'], /needs about .* more than the limit of 8\.00 KiB \(--max-memory\)/],
    [['--config', write('deep.json', (c) => (c.MVIT.DEPTH = 1e6))], /MVIT\.DEPTH: expected an integer >= 1 and <= 4096, got 1000000/],
  ];
  for (const [args, message] of cases) {
    const r = await revgrad('train', '--out', run, '--force', '--steps', '2', '--quiet', ...args);
    assert.is(r.code, 1, r.err);
    assert.match(r.err, message);
    assert.equal(snapshot(run), before, `the old run changed after: ${args.join(' ')}`);
    assert.not.ok(existsSync(join(run, '.replaced-by-force')));
  }
});

test('the memory refusal names the estimate and the limit, and --max-memory raises the limit', async () => {
  const out = join(DIR, 'limits');
  const low = await revgrad('train', ...quick, '--out', out, '--max-memory', '10KiB');
  assert.is(low.code, 1);
  assert.match(low.err, /one training step \(reversible mode\) needs about [\d.]+ KiB \(804 params: 3\.14 KiB x4 for params, gradients and AdamW state; activations 3\.13 KiB at batch 2\), more than the limit of 10\.0 KiB \(--max-memory\)/);
  assert.not.ok(existsSync(out), 'a refused run created its directory');
  const high = await revgrad('train', ...quick, '--out', out, '--max-memory', '1GiB');
  assert.is(high.code, 0, high.err);
  const bad = await revgrad('train', ...quick, '--out', out, '--max-memory', 'plenty');
  assert.is(bad.code, 2);
  assert.match(bad.err, /--max-memory: expected a size such as 8GiB/);
});

test('--force sets the old run aside and removes it once the new run has its first checkpoint', async () => {
  const out = join(DIR, 'forced');
  assert.is((await revgrad('train', ...quick, '--out', out)).code, 0);
  const old = readFileSync(join(out, 'checkpoint.safetensors'));
  const r = await revgrad('train', ...quick, '--out', out, '--force', '--seed', '3');
  assert.is(r.code, 0, r.err);
  assert.not.ok(Buffer.compare(old, readFileSync(join(out, 'checkpoint.safetensors'))) === 0, 'not replaced');
  assert.not.ok(existsSync(join(out, '.replaced-by-force')));
});

test('a --force run stopped before its first checkpoint: the next start restores the replaced run', async () => {
  const out = join(DIR, 'interrupted-force');
  assert.is((await revgrad('train', ...quick, '--out', out)).code, 0);
  const before = snapshot(out);
  // What a kill -9 right after the set-aside leaves: the old files aside, the new run's metrics only.
  const aside = join(out, '.replaced-by-force');
  mkdirSync(aside);
  for (const f of readdirSync(out).filter((f) => !f.startsWith('.'))) writeFileSync(join(aside, f), readFileSync(join(out, f)));
  for (const f of readdirSync(out).filter((f) => !f.startsWith('.'))) rmSync(join(out, f));
  writeFileSync(join(out, 'metrics.jsonl'), '{"type":"train","step":1}\n');
  const r = await revgrad('train', ...quick, '--out', out);
  assert.is(r.code, 1);
  assert.match(r.out, /restored the run that an interrupted --force had set aside/);
  assert.match(r.err, /already holds a run/);
  assert.equal(snapshot(out), before);
  assert.not.ok(existsSync(aside));
});

test('a run stopped before its first checkpoint: exact messages without and with --resume', async () => {
  const out = join(DIR, 'early');
  mkdirSync(out);
  writeFileSync(join(out, 'metrics.jsonl'), '{"type":"train","step":1}\n');
  const plain = await revgrad('train', ...quick, '--out', out);
  assert.is(plain.code, 1);
  assert.match(plain.err, `--out ${out} holds a run that was stopped before its first checkpoint (metrics.jsonl, no checkpoint.safetensors): there is nothing to resume; use --force to start it over, or another --out.`);
  const resume = await revgrad('train', '--out', out, '--resume');
  assert.is(resume.code, 1);
  assert.match(resume.err, `--resume: ${out} has no checkpoint.safetensors: the run was stopped before its first checkpoint, so there is nothing to continue; start it over with --force`);
  const forced = await revgrad('train', ...quick, '--out', out, '--force');
  assert.is(forced.code, 0, forced.err);
});

test('a checkpoint beyond its run\'s steps is refused; one at the last step is reported complete', async () => {
  const out = join(DIR, 'beyond');
  assert.is((await revgrad('train', ...quick, '--out', out)).code, 0);
  const done = await revgrad('train', '--out', out, '--resume');
  assert.is(done.code, 0, done.err);
  assert.match(done.out, `the run in ${out} is already complete (step 2 of 2); nothing to train`);
  editFile(join(out, 'checkpoint.safetensors'), (m) => (m.step = '5'));
  const r = await revgrad('train', '--out', out, '--resume');
  assert.is(r.code, 1);
  assert.match(r.err, `checkpoint.safetensors: the checkpoint is at step 5, beyond the 2 steps of its run; it cannot be resumed`);
});

test('tampered metadata (seed "-5", optimizer step "abc", beta1 "x", a non-numeric schedule) is refused by name', async () => {
  const cases: [(m: Record<string, string>) => void, string][] = [
    [(m) => (m.seed = '-5'), `__metadata__ 'seed' must be a non-negative integer, got "-5"`],
    [(m) => (m.optimizer = JSON.stringify({ ...JSON.parse(m.optimizer!), step: 'abc' })), `'optimizer' step must be a non-negative integer, got "abc"`],
    [(m) => (m.optimizer = JSON.stringify({ ...JSON.parse(m.optimizer!), beta1: 'x' })), `'optimizer' beta1 must be a number in [0, 1)`],
    [(m) => (m.training = JSON.stringify({ ...JSON.parse(m.training!), optimizer: { ...JSON.parse(m.training!).optimizer, beta1: 'x' } })), 'optimizer.beta1 must be a number in [0, 1), got "x"'],
    [(m) => (m.training = JSON.stringify({ ...JSON.parse(m.training!), labelSmoothing: '0.1' })), 'labelSmoothing must be a number, got "0.1"'],
    [(m) => (m.key = '[0,5]'), `'key' "[0,5]" is not the key of seed 0`],
  ];
  for (const [i, [edit, message]] of cases.entries()) {
    const out = join(DIR, `tampered-${i}`);
    mkdirSync(out);
    writeFileSync(join(out, 'checkpoint.safetensors'), readFileSync(join(run, 'checkpoint.safetensors')));
    editFile(join(out, 'checkpoint.safetensors'), edit);
    const r = await revgrad('train', '--out', out, '--resume', '--quiet');
    assert.is(r.code, 1, `case ${i}: ${r.err}`);
    assert.ok(r.err.includes(message), `case ${i}: expected ${message} in\n${r.err}`);
  }
});

test('a flipped data bit fails the checksum; NaN weights are refused by eval and --resume', async () => {
  const flipped = join(DIR, 'flipped');
  mkdirSync(flipped);
  writeFileSync(join(flipped, 'checkpoint.safetensors'), readFileSync(join(run, 'checkpoint.safetensors')));
  editFile(join(flipped, 'checkpoint.safetensors'), (_m, data) => (data[data.length - 3]! ^= 0x10), false);
  writeFileSync(join(flipped, 'checkpoint.prev.safetensors'), readFileSync(join(run, 'checkpoint.safetensors')));
  for (const argv of [['eval', '--checkpoint', join(flipped, 'checkpoint.safetensors')], ['train', '--out', flipped, '--resume']]) {
    const r = await revgrad(...argv);
    assert.is(r.code, 1);
    assert.match(r.err, /the tensors do not match the stored checksum .*: the file is corrupt/);
  }
  const hinted = await revgrad('train', '--out', flipped, '--resume');
  assert.match(hinted.err, `checkpoint.prev.safetensors holds the checkpoint before it; to continue from there: mv ${join(flipped, 'checkpoint.prev.safetensors')} ${join(flipped, 'checkpoint.safetensors')}`);
  const nan = join(DIR, 'nan');
  mkdirSync(nan);
  writeFileSync(join(nan, 'checkpoint.safetensors'), readFileSync(join(run, 'checkpoint.safetensors')));
  // The first tensor's first value becomes NaN, with a matching checksum: only the finite check can catch it.
  editFile(join(nan, 'checkpoint.safetensors'), (_m, data) => new DataView(data.buffer).setFloat32(0, NaN, true));
  const ev = await revgrad('eval', '--checkpoint', join(nan, 'checkpoint.safetensors'));
  assert.is(ev.code, 1);
  assert.match(ev.err, /holds non-finite weights, so it cannot be evaluated:\n\s+.*tensor '[\w.]+' has 1 non-finite value of \d+ \(first: NaN at flat index 0\)/);
  const rs = await revgrad('train', '--out', nan, '--resume');
  assert.is(rs.code, 1);
  assert.match(rs.err, /holds non-finite values, so training cannot continue from it/);
});

test('temporary files of an interrupted checkpoint write are removed at the next start (not those of a live writer)', async () => {
  const out = join(DIR, 'temps');
  mkdirSync(out);
  const dead = '.checkpoint.safetensors.999999999.0123456789ab.tmp';
  const live = `.checkpoint.safetensors.${process.pid}.0123456789ab.tmp`;
  const other = '.notes.999999999.0123456789ab.tmp';
  for (const f of [dead, live, other]) writeFileSync(join(out, f), 'x');
  const r = await revgrad('train', ...quick, '--out', out);
  assert.is(r.code, 0, r.err);
  assert.match(r.out, `removed 1 temporary file of an interrupted checkpoint write: ${dead}`);
  assert.not.ok(existsSync(join(out, dead)));
  assert.ok(existsSync(join(out, live)) && existsSync(join(out, other)));
});

test('an output directory that cannot be written is refused before any work', async () => {
  const file = join(DIR, 'a-file');
  writeFileSync(file, 'x');
  const r = await revgrad('train', ...quick, '--out', join(file, 'run'));
  assert.is(r.code, 1);
  assert.match(r.err, /cannot write there \(ENOTDIR\); choose another --out/);
  if (process.getuid?.() !== 0) {
    // Permissions bind only non-root users.
    const ro = join(DIR, 'read-only');
    mkdirSync(ro, { mode: 0o555 });
    const p = await revgrad('train', ...quick, '--out', join(ro, 'run'));
    assert.is(p.code, 1);
    assert.match(p.err, /cannot write there \(EACCES\)/);
  }
});

test('check-fixture checks every parameter shape against the fixture\'s own config', async () => {
  const src = join(process.cwd(), 'test/fixtures/revvit_2d_full.safetensors');
  const path = join(DIR, 'nc11.safetensors');
  writeFileSync(path, readFileSync(src));
  editFile(path, (m) => (m.config = JSON.stringify({ ...JSON.parse(m.config!), MODEL: { ...JSON.parse(m.config!).MODEL, NUM_CLASSES: 11 } })), false);
  const r = await checkFixture(path);
  assert.ok(E.isLeft(r), 'a fixture whose head does not fit its config passed');
  if (E.isLeft(r)) {
    assert.match(r.left, /the fixture does not fit its config/);
    assert.match(r.left, /tensor 'head\.projection\.weight' has shape \[10, \d+\], the config gives it \[11, \d+\]/);
    assert.match(r.left, /tensor 'w' has shape \[2, 10\], the config gives it \[2, 11\]/);
  }
});

test('the memory estimate bounds the measured peak of a training step (0.45-1.0x) in both modes', () => {
  const tiny = parseConfig(TINY_CONFIG);
  const mnist = presetConfig('REV_MVIT_MNIST');
  assert.ok(E.isRight(tiny) && E.isRight(mnist));
  if (E.isLeft(tiny) || E.isLeft(mnist)) return;
  for (const [name, cfg, batch] of [['tiny', tiny.right, 4], ['REV_MVIT_MNIST', mnist.right, 2]] as const) {
    const row = measureMemoryRow(cfg, 0, batch);
    for (const mode of ['reversible', 'store'] as const) {
      const est = estimateResources(cfg, { batch, purpose: 'train', mode });
      // measureMemory counts the gradients (one params' worth) and the activations of the step.
      const ratio = row.peak[mode] / (est.paramBytes + est.activationBytes);
      assert.ok(ratio >= 0.45 && ratio <= 1.0, `${name} ${mode}: measured ${row.peak[mode]} B, estimated ${est.paramBytes + est.activationBytes} B (ratio ${ratio.toFixed(2)})`);
    }
  }
});

test('measureMemory does not keep the buffers it logs alive (a measured step used to hold all it allocated)', () => {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  gc();
  const before = process.memoryUsage().arrayBuffers;
  let during = 0;
  measureMemory(() => {
    // 100 results of 4 MiB, each dropped at once: 400 MiB if the log held them, ~4 MiB if not.
    for (let i = 0; i < 100; i++) add(tensor(new Float32Array(1 << 20)), 1);
    gc();
    during = process.memoryUsage().arrayBuffers - before;
  });
  assert.ok(during < 64 * 2 ** 20, `${(during / 2 ** 20).toFixed(0)} MiB of array buffers still reachable inside measureMemory`);
});

test('a diverging run (--lr 1e6) stops on the first non-finite step, naming it; the checkpoint (and the one before) stay good', async () => {
  const out = join(DIR, 'diverge');
  const diverging = ['--config', cfgPath, '--steps', '8', '--batch', '2', '--eval-clips', '2', '--no-report', '--quiet', '--lr', '1e6', '--warmup', '0'];
  const r = await revgrad('train', ...diverging, '--ckpt-every', '1', '--out', out);
  assert.is(r.code, 1, r.err);
  const m = /step (\d+): the (loss is NaN|gradient norm is \w+)[^\n]*; the step was not applied, and the run stopped \(--on-nan stop\)/.exec(r.err);
  assert.ok(m !== null, r.err);
  const failed = Number(m![1]);
  assert.match(r.err, `${join(out, 'checkpoint.safetensors')} holds the last good state (step ${failed - 1}); what went non-finite is in ${join(out, 'nonfinite.json')}`);
  const diagnostic = JSON.parse(readFileSync(join(out, 'nonfinite.json'), 'utf8'));
  assert.is(diagnostic.step, failed);
  assert.ok(diagnostic.tensors.length > 0 && typeof diagnostic.firstInBackward === 'string');
  const ck = loadCheckpoint(join(out, 'checkpoint.safetensors'));
  const prev = loadCheckpoint(join(out, 'checkpoint.prev.safetensors'));
  assert.ok(E.isRight(ck) && E.isRight(prev), 'the last checkpoints do not load');
  if (E.isRight(ck) && E.isRight(prev)) {
    assert.is(ck.right.meta.step, failed - 1);
    assert.is(prev.right.meta.step, failed - 2);
  }
  const ev = await revgrad('eval', '--checkpoint', join(out, 'checkpoint.safetensors'), '--clips', '2', '--batch', '2', '--json');
  assert.is(ev.code, 0, ev.err);
  // --on-nan skip: the non-finite steps are skipped and counted, the run ends.
  const skip = await revgrad('train', ...diverging, '--out', join(DIR, 'diverge-skip'), '--on-nan', 'skip');
  assert.is(skip.code, 0, skip.err);
  const skipped = readFileSync(join(DIR, 'diverge-skip', 'metrics.jsonl'), 'utf8').split('\n').filter((l) => l.includes('"nonfinite"'));
  assert.ok(skipped.length > 0 && skipped.every((l) => l.includes('"action":"skipped"')), skipped.join('\n'));
});

test('every kind of failure prints one clean message: problems, typed errors, memory, file system, bugs', () => {
  const enospc = Object.assign(new Error("ENOSPC: no space left on device, write"), { code: 'ENOSPC', syscall: 'write' });
  const cases: [unknown, RegExp][] = [
    [new CliError(['one problem']), /^revgrad x: error: one problem\n$/],
    [new CliError(Array.from({ length: 80 }, (_, i) => `problem ${i}`)), /^revgrad x: error:\n  problem 0\n[^]*  problem 49\n  \.\.\. and 30 more\n$/],
    [new ShapeError('matmul', 'shapes [2, 3] and [4, 5] do not fit'), /^revgrad x: error: matmul: shapes \[2, 3\] and \[4, 5\] do not fit\n$/],
    [new RangeError('Array buffer allocation failed'), /^revgrad x: error: out of memory \(Array buffer allocation failed\); use a smaller --batch or config\n$/],
    [new RangeError('Maximum call stack size exceeded'), /^revgrad x: error: the input nests too deeply to process/],
    [enospc, /^revgrad x: error: ENOSPC: no space left on device, write\n$/],
    [new TypeError("Cannot read properties of undefined (reading 'x')"), /^revgrad x: internal error: TypeError: Cannot read properties of undefined \(reading 'x'\) \(REVGRAD_DEBUG=1 prints the stack\)\n$/],
    ['a string', /^revgrad x: internal error: a string/],
  ];
  for (const [e, want] of cases) {
    const text = errorMessage('revgrad x', e);
    assert.match(text, want);
    assert.not.match(text, /^\s+at /m);
  }
});

test.after(() => rmSync(DIR, { recursive: true, force: true }));

test.run();
