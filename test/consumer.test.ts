/**
 * revgrad as a user installs it: `npm pack`, then the tarball installed offline into a new project
 * outside the repository (test/consumer-project.ts), and from there
 *   (a) plain `node` ESM: a gradient and a reversible inverse;
 *   (b) `require('revgrad')` from CommonJS;
 *   (c) a strict `tsc` consumer (strict, noUncheckedIndexedAccess, skipLibCheck false) under
 *       moduleResolution node16 (with @types/node, both entries) and bundler (no Node types: the main
 *       entry's declarations must not need them), including the typed gradients and no `any` in the
 *       shipped declarations;
 *   (d) an esbuild `platform: 'browser'` bundle of a consumer importing 'revgrad' (no node: built-ins);
 *   (e) `npx revgrad --version` and `--help` (the bin is compiled JavaScript under plain node);
 *   (f) `revgrad/laws` (with the user's own fast-check): a user's two-block sequence passes the inverse and
 *       determinism laws, and two broken blocks (F reads a global counter; G ignores its key) are caught
 *       with a readable counterexample.
 */
import { readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { build } from 'esbuild';
import ts from 'typescript';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createConsumerProject, nodeIn, npmIn, repo } from './consumer-project.ts';

const project = createConsumerProject(['@types/node', 'fast-check']);
const { dir } = project;
console.log(`consumer.test.ts: packed in ${project.packSeconds.toFixed(1)} s (build included), installed offline in ${project.installSeconds.toFixed(1)} s -> ${dir}`);
const pkg = JSON.parse(readFileSync(join(repo, 'package.json'), 'utf8')) as { version: string };
const installed = join(dir, 'node_modules', 'revgrad');

test('the tarball holds dist (ESM .js, .d.ts, maps), docs, README and LICENSE; no sources, tests or tools', () => {
  const top = readdirSync(installed).sort();
  assert.equal(top, ['LICENSE', 'README.md', 'dist', 'docs', 'package.json']);
  const dist = readdirSync(join(installed, 'dist'));
  for (const f of ['index.js', 'index.d.ts', 'index.js.map', 'index.d.ts.map', 'node.js', 'node.d.ts']) assert.ok(dist.includes(f), `dist/${f}`);
  const manifest = JSON.parse(readFileSync(join(installed, 'package.json'), 'utf8')) as { dependencies: Record<string, string> };
  for (const tool of ['tsx', 'uvu', 'fast-check', 'typescript', 'esbuild']) assert.not.ok(tool in manifest.dependencies, `${tool} is a runtime dependency`);
});

test('(a) plain node ESM: grad of a function and inverse(forward(x)) = x of a reversible sequence', () => {
  writeFileSync(
    join(dir, 'esm.mjs'),
    `import { grad, mul, nn, random, reversible, sequence, sub, abs, max, sum, tanh, tensor } from 'revgrad';
const g = grad((x) => sum(mul(x, x)))(tensor([1, -2, 3]));
const F = (p, x) => tanh(nn.linear(p, x));
const net = sequence([reversible(F, F), reversible(F, F)]);
const k = random.split(random.key(0), 4);
const lin = (key) => ({ weight: random.normal(key, [4, 4]), bias: random.normal(random.foldIn(key, 1), [4]) });
const params = [{ F: lin(k[0]), G: lin(k[1]) }, { F: lin(k[2]), G: lin(k[3]) }];
const x = random.normal(random.key(1), [3, 4]);
const [y1, y2] = net.forward(params, [x, x], random.key(2));
const [x1, x2] = net.inverse(params, [y1, y2], random.key(2));
const err = Math.max(await max(abs(sub(x1, x))).item(), await max(abs(sub(x2, x))).item());
const changed = await max(abs(sub(y1, x))).item();
console.log(JSON.stringify({ grad: Array.from(await g.data()), err, changed }));
`,
  );
  const r = nodeIn(dir, ['esm.mjs']);
  assert.is(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout) as { grad: number[]; err: number; changed: number };
  assert.equal(out.grad, [2, -4, 6]);
  assert.ok(out.err < 1e-5 && out.changed > 1e-2, r.stdout);
});

test('(b) require("revgrad") from CommonJS', () => {
  writeFileSync(
    join(dir, 'cjs.cjs'),
    `const { grad, sum, mul, tensor } = require('revgrad');
const node = require('revgrad/node');
const g = grad((x) => sum(mul(x, x)))(tensor([1, 2]));
console.log(JSON.stringify({ grad: Array.from(g.dataSync()), node: typeof node.readSafetensorsFile }));
`,
  );
  const r = nodeIn(dir, ['cjs.cjs']);
  assert.is(r.status, 0, r.stderr);
  assert.equal(JSON.parse(r.stdout), { grad: [2, 4], node: 'function' });
});

/** A consumer program: compiles only if the public types are what they claim to be. */
const TYPED_CONSUMER = `import { adamw, grad, nn, random, reversible, sequence, sum, tanh, tensor, train, valueAndGrad, vjp, type Batch, type Tensor } from 'revgrad';

const params = { w: tensor([1, 2]), layers: [{ b: tensor([0.5]) }] };
const loss = (p: typeof params) => sum(tanh(p.w));
const g = grad(loss)(params);
const w: Tensor = g.w;
const b: Tensor | undefined = g.layers[0]?.b;
// @ts-expect-error the gradient is a tree like the argument: it has no other leaves
void g.bias;
const [value, g2] = valueAndGrad(loss)(params);
const v: Tensor = value;
const w2: Tensor = g2.w;
const [out, pullback] = vjp((a: Tensor, p: typeof params) => tanh(a), tensor([1]), params);
const [ga, gp] = pullback(out);
const pw: Tensor = gp.w;
void [w, b, v, w2, ga, pw];

const F = (p: nn.LinearParams, x: Tensor) => tanh(nn.linear(p, x));
const net = sequence([reversible(F, F), reversible(F, F)]);
const lin = (): nn.LinearParams => ({ weight: random.normal(random.key(0), [2, 2]), bias: random.normal(random.key(1), [2]) });
const x = tensor([[1, 2]]);
net.forward([{ F: lin(), G: lin() }, { F: lin(), G: lin() }], [x, x], random.key(2));
// @ts-expect-error block params must be { F, G } of the branches' parameter types
net.forward([{ F: lin() }], [x, x], random.key(2));

async function* batches(): AsyncGenerator<Batch> {
  yield { x, labels: [0] };
}
const model = { apply: (p: nn.LinearParams, input: Tensor) => nn.linear(p, input) };
const result = await train({ model, params: lin(), optimizer: adamw({ lr: 1e-3 }), data: batches() });
const trained: nn.LinearParams = result.params;
void trained;
`;

const NODE_CONSUMER = `import { readFileSync } from 'node:fs';
import { loadWeights, readSafetensorsFile, checkpointToFile } from 'revgrad/node';
import { buildModel, presetConfig } from 'revgrad';
import * as E from 'fp-ts/lib/Either.js';
const cfg = presetConfig('REV_VIT_S');
if (E.isRight(cfg)) {
  const weights = loadWeights(buildModel(cfg.right), 'w.safetensors');
  if (E.isLeft(weights)) console.log(weights.left.map((p) => p.message));
}
const f = readSafetensorsFile('x.safetensors');
void [f, checkpointToFile, readFileSync];
`;

function typecheck(name: string, options: Record<string, unknown>, files: Record<string, string>): string[] {
  const sub = join(dir, name);
  rmSync(sub, { recursive: true, force: true });
  for (const [f, text] of Object.entries(files)) {
    const path = join(sub, f);
    ts.sys.createDirectory(dirname(path));
    writeFileSync(path, text);
  }
  const base = { strict: true, noUncheckedIndexedAccess: true, skipLibCheck: false, noEmit: true, target: 'ES2022', exactOptionalPropertyTypes: false };
  writeFileSync(join(sub, 'tsconfig.json'), JSON.stringify({ compilerOptions: { ...base, ...options }, include: ['*.ts', '*.mts'] }, null, 2));
  const config = ts.getParsedCommandLineOfConfigFile(join(sub, 'tsconfig.json'), {}, { ...ts.sys, onUnRecoverableConfigFileDiagnostic: () => {} });
  if (config === undefined) return ['tsconfig.json could not be read'];
  const program = ts.createProgram({ rootNames: config.fileNames, options: config.options });
  return ts.getPreEmitDiagnostics(program).map((d) => {
    const where = d.file !== undefined && d.start !== undefined ? `${d.file.fileName.slice(dir.length + 1)}:${d.file.getLineAndCharacterOfPosition(d.start).line + 1}: ` : '';
    return where + ts.flattenDiagnosticMessageText(d.messageText, '\n');
  });
}

test('(c) strict tsc consumer, moduleResolution node16 (both entries, with @types/node)', () => {
  const errors = typecheck('tsc-node16', { module: 'Node16', moduleResolution: 'Node16', types: ['node'] }, {
    'package.json': JSON.stringify({ type: 'module' }),
    'typed.ts': TYPED_CONSUMER,
    'node.ts': NODE_CONSUMER,
  });
  assert.equal(errors, []);
});

test('(c) strict tsc consumer, moduleResolution bundler, no Node types (the main entry only)', () => {
  const errors = typecheck('tsc-bundler', { module: 'ESNext', moduleResolution: 'Bundler', types: [], lib: ['ES2022', 'DOM'] }, { 'typed.ts': TYPED_CONSUMER });
  assert.equal(errors, []);
});

test('(c) the shipped declarations hold no `any` type', () => {
  const files: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      if (e.isDirectory()) walk(join(d, e.name));
      else if (e.name.endsWith('.d.ts')) files.push(join(d, e.name));
    }
  };
  walk(join(installed, 'dist'));
  const found: string[] = [];
  for (const f of files) {
    const source = ts.createSourceFile(f, readFileSync(f, 'utf8'), ts.ScriptTarget.ES2022, true);
    const visit = (n: ts.Node) => {
      if (n.kind === ts.SyntaxKind.AnyKeyword) found.push(`${f.slice(installed.length + 1)}:${source.getLineAndCharacterOfPosition(n.getStart()).line + 1}: ${n.parent.getText().slice(0, 120)}`);
      ts.forEachChild(n, visit);
    };
    visit(source);
  }
  console.log(`  ${files.length} declaration files, ${found.length} any`);
  assert.ok(files.length > 50, `${files.length} declaration files`);
  assert.equal(found, [], `any in the public declarations:\n${found.join('\n')}`);
});

test('(d) esbuild platform browser: a consumer of revgrad bundles with no node: built-ins', async () => {
  writeFileSync(join(dir, 'browser.mjs'), `import { grad, sum, mul, tensor, selectBackend } from 'revgrad';\nawait selectBackend('auto');\nconsole.log(await grad((x) => sum(mul(x, x)))(tensor([1, 2])).data());\n`);
  const r = await build({ entryPoints: [join(dir, 'browser.mjs')], absWorkingDir: dir, bundle: true, platform: 'browser', format: 'esm', write: false, metafile: true, logLevel: 'silent' });
  const inputs = Object.keys(r.metafile.inputs);
  assert.ok(inputs.some((f) => f.includes('node_modules/revgrad/dist/index.js')), 'the bundle holds revgrad');
  assert.ok(inputs.some((f) => f.includes('gpu.js/dist/gpu-browser.js')), "gpu.js's browser build, through the package's browser map");
  for (const pkgName of ['mnist', 'yaml', 'cli-progress', 'fast-check', 'webgpu/']) assert.not.ok(inputs.some((f) => f.includes(`node_modules/${pkgName}`)), `${pkgName} in the browser bundle`);
});

test('(e) npx revgrad --version and --help run the compiled bin with plain node', () => {
  const v = npmIn(dir, ['exec', '--offline', '--', 'revgrad', '--version']);
  assert.is(v.status, 0, v.stderr);
  assert.is(v.stdout.trim(), `revgrad ${pkg.version}`);
  const h = npmIn(dir, ['exec', '--offline', '--', 'revgrad', '--help']);
  assert.is(h.status, 0, h.stderr);
  assert.match(h.stdout, /Usage: revgrad <command>/);
  for (const c of ['train', 'eval', 'check', 'check-fixture', 'memory']) assert.match(h.stdout, new RegExp(`\\b${c}\\b`));
  assert.not.match(readFileSync(join(installed, 'dist', 'cli', 'main.js'), 'utf8').split('\n')[0]!, /tsx/);
});

test.after(() => rmSync(dirname(dir), { recursive: true, force: true }));


test('(f) revgrad/laws in a user project: a sound sequence passes, a counter-reading F and a key-ignoring G are caught', () => {
  writeFileSync(
    join(dir, 'laws.mjs'),
    `import { mul, nn, random, reversible, sequence, tanh } from 'revgrad';
import { determinismLaw, inverseLaw } from 'revgrad/laws';
let calls = 0;
const F = (p, x) => tanh(nn.linear(p, x));
const leaky = (p, x) => tanh(nn.linear(p, mul(x, 1 + (calls++ % 3))));
const G = (p, x, key) => nn.dropout(key, 0.5, nn.linear(p, x), { train: true });
const keyless = (p, x) => nn.dropout(random.key(7), 0.5, nn.linear(p, x), { train: true });
const lin = (k) => ({ weight: mul(random.normal(k, [4, 4]), 0.5), bias: random.normal(random.foldIn(k, 1), [4]) });
const init = (k) => [0, 1].map((i) => ({ F: lin(random.foldIn(k, 2 * i)), G: lin(random.foldIn(k, 2 * i + 1)) }));
const input = { shape: [2, 3, 4] };
const good = sequence([reversible(F, G), reversible(F, G)]);
const reports = {
  inverse: await inverseLaw(good, { params: init, input }).check({ runs: 5 }),
  determinism: await determinismLaw(good, { params: init, input, random: { G: true } }).check({ runs: 3 }),
  counter: await inverseLaw(sequence([reversible(F, G), reversible(leaky, G)]), { params: init, input }).check({ runs: 5 }),
  keyless: await determinismLaw(sequence([reversible(F, G), reversible(F, keyless)]), { params: init, input, random: { G: true } }).check({ runs: 3 }),
};
console.log(JSON.stringify(Object.fromEntries(Object.entries(reports).map(([k, r]) => [k, { ok: r.ok, text: r.text }]))));
`,
  );
  const r = nodeIn(dir, ['laws.mjs']);
  assert.is(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout) as Record<'inverse' | 'determinism' | 'counter' | 'keyless', { ok: boolean; text: string }>;
  assert.ok(out.inverse.ok, out.inverse.text);
  assert.ok(out.determinism.ok, out.determinism.text);
  assert.not.ok(out.counter.ok, 'a counter-reading F must fail the inverse law');
  assert.match(out.counter.text, /block 1 alone does not invert/);
  assert.match(out.counter.text, /counterexample/);
  assert.match(out.counter.text, /replay: check\(\{ seed: -?\d+/); // fast-check seeds are signed 32-bit
  assert.not.ok(out.keyless.ok, 'a G that ignores its key must fail the determinism law');
  assert.match(out.keyless.text, /block 1 G gave bitwise the same output for \d+ different keys/);
});

test.run();
