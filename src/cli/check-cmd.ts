/** `revgrad check`, `revgrad check-fixture`, `revgrad memory`. */
import { existsSync, statSync } from 'node:fs';
import * as E from 'fp-ts/lib/Either.js';
import { flattenWithPaths } from '../autodiff/pytree.ts';
import { valueAndGrad } from '../autodiff/tape.ts';
import { MAX_DEPTH } from '../models/mvit/config.ts';
import { checkFixture, formatReport } from '../models/mvit/fixture-check.ts';
import { foldIn, key, normal, randint } from '../random/index.ts';
import type { Tensor } from '../tensor/tensor.ts';
import { crossEntropy } from '../train/loss.ts';
import { getBool, getList, getNum, UsageError, type CommandSpec, type ParsedArgs } from './args.ts';
import { checkResources, CliError, CONFIG_FLAGS, DEFAULT_PRESET, formatBytes, MEMORY_FLAG, memoryLimit, model as buildModel, resolveConfig, table, unwrap } from './common.ts';
import { deepen, measureMemoryRow } from './memory.ts';

const withDefaultPreset = CONFIG_FLAGS.map((f) => (f.name === 'preset' ? { ...f, defaultText: DEFAULT_PRESET } : f));

// ---------------------------------------------------------------------------------------------
// check

export const checkSpec: CommandSpec = {
  name: 'check',
  summary: 'numerical checks of a config: inverse error per reversible block, reversible vs store gradients',
  usage: 'revgrad check [--preset NAME | --config FILE] [--batch N] [--seed N] [--tol X] [--json]',
  flags: [
    ...withDefaultPreset,
    { name: 'batch', kind: 'int', min: 1, arg: 'N', help: 'inputs per batch (random normal, shaped for the config)', defaultText: '2' },
    { name: 'seed', kind: 'int', min: 0, arg: 'N', help: 'seed of params, inputs and labels', defaultText: '0' },
    { name: 'tol', kind: 'number', min: 0, exclusiveMin: true, arg: 'X', help: 'max allowed relative gradient difference', defaultText: '1e-3' },
    { name: 'drift-tol', kind: 'number', min: 0, exclusiveMin: true, arg: 'X', help: 'max allowed inverse (reconstruction) error', defaultText: '1e-4' },
    { name: 'json', kind: 'bool', help: 'print the result as JSON' },
    MEMORY_FLAG,
  ],
  details: [
    'Inverse error: max |X - inverse(forward(X))| of each reversible block on the activations the input produces',
    '(what the memory-saving backward pass relies on). Gradient difference: for each parameter,',
    'max |g_reversible - g_store| / max |g_store|; the command fails (exit 1) when either exceeds its tolerance.',
  ].join('\n'),
};

export async function runCheck(args: ParsedArgs): Promise<number> {
  const limit = memoryLimit(args, 'check');
  const { cfg, source } = unwrap(resolveConfig(args));
  const seed = getNum(args, 'seed') ?? 0;
  const B = getNum(args, 'batch') ?? 2;
  // Both modes run; store mode holds more.
  checkResources(cfg, { batch: B, purpose: 'train', mode: 'store' }, limit, source);
  const model = buildModel(cfg);
  const tol = getNum(args, 'tol') ?? 1e-3;
  const driftTol = getNum(args, 'drift-tol') ?? 1e-4;
  const root = key(seed);
  const params = model.init(foldIn(root, 0));
  const g = model.geometry;
  const shape = cfg.MVIT.PATCH_2D ? [B, g.inputChannels, g.inputDims[1], g.inputDims[2]] : [B, g.inputChannels, ...g.inputDims];
  const x = normal(foldIn(root, 1), shape);
  const y = randint(foldIn(root, 2), B, 0, cfg.MODEL.NUM_CLASSES);
  const k = foldIn(root, 3);

  // Every value is read with `await t.data()`, so the check runs on asynchronous backends (webgpu) too.
  const drift = await Promise.all(model.drift(params, x, k).map(async (e) => ({ block: e.block, x1: await e.x1.item(), x2: await e.x2.item() })));
  const maxDrift = drift.reduce((m, e) => Math.max(m, e.x1, e.x2), 0);
  const lossAndGrad = (mode: 'reversible' | 'store') =>
    valueAndGrad((p: unknown): Tensor => crossEntropy(model.apply(p as never, x, k, { train: true, mode }), y))(params);
  const [lossR, gradR] = lossAndGrad('reversible');
  const [lossS, gradS] = lossAndGrad('store');
  const gs = new Map(await Promise.all(flattenWithPaths(gradS).map(async ([name, t]) => [name, await t.data()] as const)));
  // Each parameter's difference relative to its largest gradient, but never to less than 1% of the
  // largest gradient anywhere: some gradients are analytically zero (softmax is shift invariant, e.g. a
  // pooled K's norm bias) and hold only round-off, whose "relative" difference means nothing.
  let largest = 0;
  for (const [, t] of gs) for (const v of t) largest = Math.max(largest, Math.abs(v));
  let worst = { name: '', rel: 0, abs: 0 };
  for (const [name, gr] of flattenWithPaths(gradR)) {
    const a = await gr.data();
    const b = gs.get(name)!;
    let diff = 0;
    let scale = 0;
    for (let i = 0; i < a.length; i++) {
      diff = Math.max(diff, Math.abs(a[i] - b[i]));
      scale = Math.max(scale, Math.abs(b[i]));
    }
    const denominator = Math.max(scale, 0.01 * largest);
    const rel = denominator === 0 ? (diff === 0 ? 0 : Infinity) : diff / denominator;
    if (rel > worst.rel || worst.name === '') worst = { name, rel, abs: diff };
  }
  const ok = worst.rel <= tol && maxDrift <= driftTol;
  const result = {
    config: source,
    ok,
    inverseError: { max: maxDrift, tolerance: driftTol, blocks: drift },
    gradients: { maxRelDiff: worst.rel, maxAbsDiff: worst.abs, worstParam: worst.name, tolerance: tol, params: gs.size },
    loss: { reversible: await lossR.item(), store: await lossS.item() },
  };
  if (getBool(args, 'json')) {
    process.stdout.write(JSON.stringify(result) + '\n');
  } else {
    const lines = [
      `revgrad check: ${source} (batch ${B}, seed ${seed})`,
      '',
      'Inverse error per reversible block (max |X - inverse(forward(X))|):',
      table(['layer', 'X1', 'X2'], drift.map((e) => [String(e.block), e.x1.toExponential(2), e.x2.toExponential(2)])),
      `max ${maxDrift.toExponential(2)} (tolerance ${driftTol.toExponential(0)}): ${maxDrift <= driftTol ? 'ok' : 'FAIL'}`,
      '',
      `Reversible vs store gradients over ${gs.size} parameters: max relative difference ${worst.rel.toExponential(2)} ` +
        `(of max(|grad|, 1% of the largest gradient)) ` +
        `(${worst.name}, max abs ${worst.abs.toExponential(2)}; tolerance ${tol.toExponential(0)}): ${worst.rel <= tol ? 'ok' : 'FAIL'}`,
      `loss: reversible ${result.loss.reversible.toPrecision(8)}, store ${result.loss.store.toPrecision(8)}`,
      '',
      ok ? 'PASS' : 'FAIL',
    ];
    process.stdout.write(lines.join('\n') + '\n');
  }
  return ok ? 0 : 1;
}

// ---------------------------------------------------------------------------------------------
// check-fixture

export const checkFixtureSpec: CommandSpec = {
  name: 'check-fixture',
  summary: 'compare the model with a PySlowFast golden fixture (forward values and gradients, both modes)',
  usage: 'revgrad check-fixture FILE.safetensors [--json]',
  positionals: [{ name: 'FILE', help: 'a fixture written by the PySlowFast fixture script (config, params, input, outputs, gradients)' }],
  flags: [{ name: 'json', kind: 'bool', help: 'print the full comparison as JSON' }, MEMORY_FLAG],
  details: 'Exit status 0 when every compared tensor is within tolerance, 1 otherwise.',
};

export async function runCheckFixture(args: ParsedArgs): Promise<number> {
  const file = args.positionals[0];
  if (file === undefined) throw new UsageError(['give the fixture file: revgrad check-fixture FILE.safetensors'], 'check-fixture');
  const limit = memoryLimit(args, 'check-fixture');
  if (!existsSync(file)) throw new CliError([`${file}: no such file`]);
  if (statSync(file).isDirectory()) throw new CliError([`${file}: is a directory, expected a .safetensors fixture`]);
  const report = await checkFixture(file, undefined, { memoryLimit: limit });
  if (E.isLeft(report)) throw new CliError([report.left]);
  process.stdout.write((getBool(args, 'json') ? JSON.stringify(report.right) : formatReport(report.right)) + '\n');
  return report.right.ok ? 0 : 1;
}

// ---------------------------------------------------------------------------------------------
// memory

export const memorySpec: CommandSpec = {
  name: 'memory',
  summary: 'retained and peak bytes of one training step vs depth, reversible vs store',
  usage: 'revgrad memory [--preset NAME | --config FILE] [--extra 0,2,4,8] [--batch N] [--json]',
  flags: [
    ...withDefaultPreset,
    { name: 'extra', kind: 'int-list', min: 0, arg: 'A,B,..', help: 'extra reversible blocks appended to the last stage', defaultText: '0,2,4,8' },
    { name: 'batch', kind: 'int', min: 1, arg: 'N', help: 'clips per step', defaultText: '2' },
    { name: 'json', kind: 'bool', help: 'print the rows as JSON' },
    MEMORY_FLAG,
  ],
  details: [
    'retained: bytes the backward pass keeps from the forward pass (the pullback\'s residuals, params excluded);',
    'peak: the most bytes live at once during forward + backward, with buffers freed at their last use',
    '(what a reference-counting runtime such as PyTorch would hold).',
  ].join('\n'),
};

export async function runMemory(args: ParsedArgs): Promise<number> {
  const limit = memoryLimit(args, 'memory');
  const { cfg, source } = unwrap(resolveConfig(args));
  const extras = getList(args, 'extra') ?? [0, 2, 4, 8];
  const batch = getNum(args, 'batch') ?? 2;
  const deepest = Math.max(...extras);
  if (cfg.MVIT.DEPTH + deepest > MAX_DEPTH) throw new CliError([`--extra ${deepest}: ${source} has ${cfg.MVIT.DEPTH} layers, and more than ${MAX_DEPTH} in all are not accepted`]);
  checkResources(deepen(cfg, deepest), { batch, purpose: 'train', mode: 'store' }, limit, `${source} with ${deepest} extra blocks`);
  const rows = extras.map((e) => measureMemoryRow(cfg, e, batch));
  if (getBool(args, 'json')) {
    process.stdout.write(JSON.stringify({ config: source, batch, rows }) + '\n');
    return 0;
  }
  const ratio = (a: number, b: number) => (a === 0 ? '-' : `${(b / a).toFixed(2)}x`);
  process.stdout.write(
    [
      `revgrad memory: ${source}, batch ${batch}, one training step (forward + backward)`,
      '',
      table(
        ['depth', 'rev blocks', 'retained rev', 'retained store', 'store/rev', 'peak rev', 'peak store', 'store/rev'],
        rows.map((r) => [
          String(r.depth),
          String(r.reversibleBlocks),
          formatBytes(r.retained.reversible),
          formatBytes(r.retained.store),
          ratio(r.retained.reversible, r.retained.store),
          formatBytes(r.peak.reversible),
          formatBytes(r.peak.store),
          ratio(r.peak.reversible, r.peak.store),
        ]),
      ),
    ].join('\n') + '\n',
  );
  return 0;
}
