/**
 * Mutation testing (StrykerJS): `npm run mutate -- [group ...] [--mutate file[:lines] ...]`, not part of `npm test`.
 *
 * uvu has no Stryker runner, so each module group runs Stryker's command runner with a targeted test
 * command: the law and test files that exercise that group, with uvu's --bail (a killed mutant stops at
 * its first failing test). Every mutant is type-checked first (the typescript checker), so mutants that
 * do not compile are never run. Mutants are switched at run time (Stryker's mutant schemata), so the
 * sandbox is instrumented once per group. Results go to reports/mutation/<group>.json (mutation-testing
 * report schema). No incremental mode: the command runner cannot tell which tests cover a mutant, so
 * Stryker would reuse a survivor's old result after a new test was added. The summary is printed per
 * group; docs/testing.md records it.
 *
 * CPU: the machine is shared, so the script runs at the lowest priority (npm run mutate wraps it in
 * nice -n 19) with one test runner and one checker.
 */
import { mkdirSync } from 'node:fs';
import { Stryker } from '@stryker-mutator/core';
import type { PartialStrykerOptions } from '@stryker-mutator/api/core';

interface Group {
  readonly mutate: readonly string[];
  /** Test files (paths under the repo root, without `.test.ts`) that exercise the group. */
  readonly tests: readonly string[];
}

export const GROUPS: Readonly<Record<string, Group>> = {
  autodiff: { mutate: ['src/autodiff/**/*.ts'], tests: ['laws/autodiff', 'laws/higher-order', 'laws/memory', 'laws/kit', 'test/autodiff-edges'] },
  reversible: { mutate: ['src/reversible/**/*.ts'], tests: ['laws/reversible', 'test/reversible'] },
  nn: { mutate: ['src/nn/**/*.ts'], tests: ['laws/nn', 'test/nn-layers', 'test/nn-edges', 'test/nn-attention-edges', 'test/golden'] },
  random: { mutate: ['src/random/**/*.ts'], tests: ['laws/random', 'test/random-state', 'test/random-edges', 'test/random-keys-edges', 'laws/nn'] },
  fused: { mutate: ['src/tensor/fused.ts', 'src/tensor/composite.ts'], tests: ['laws/nn', 'laws/ops', 'laws/ties', 'laws/research-ops', 'laws/higher-order', 'test/fused-edges', 'test/webgpu', 'test/webgpu-plan'] },
};

/** uvu over exactly these files: one pattern anchored at the repo root. */
export const testCommand = (tests: readonly string[]): string =>
  `node --import tsx --import ./laws/seed.ts node_modules/uvu/bin.js . '^(${tests.map((t) => t.replace(/[.]/g, '\\.')).join('|')})\\.test\\.ts$' --bail`;

export function options(name: string, group: Group): PartialStrykerOptions {
  return {
    mutate: [...group.mutate],
    testRunner: 'command',
    commandRunner: { command: testCommand(group.tests) },
    // The command runner cannot map mutants to tests, so coverage counters would only slow the hot loops
    // (Threefry, samplers) that every test runs.
    coverageAnalysis: 'off',
    checkers: ['typescript'],
    tsconfigFile: 'tsconfig.json',
    typescriptChecker: { prioritizePerformanceOverAccuracy: true },
    // One test runner by default (the machine is shared); MUTATE_CONCURRENCY=n runs n at once.
    concurrency: Number(process.env.MUTATE_CONCURRENCY ?? 1),
    // A mutant that makes the tests hang (a loop bound turned around) is a kill by timeout: 1.5x the
    // unmutated run plus 20 s of slack for the shared machine.
    timeoutMS: 20_000,
    timeoutFactor: 1.5,
    reporters: ['clear-text', 'json', 'progress'],
    jsonReporter: { fileName: `reports/mutation/${name}.json` },
    tempDirName: `.stryker-tmp/${name}`,
    ignorePatterns: ['/.stryker-tmp', 'runs', 'dist', 'demo', 'reports', '.scratch', '/.docs-run-*', '/.gl', '/.node', '/.whl'],
    cleanTempDir: true,
    thresholds: { high: 85, low: 70, break: null },
  };
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  // --mutate <pattern> (repeatable) measures a slice of the group(s): Stryker's file[:lines] patterns.
  const only = args.flatMap((a, i) => (args[i - 1] === '--mutate' ? [a] : []));
  const names = args.filter((a, i) => !a.startsWith('--') && args[i - 1] !== '--mutate');
  const unknown = names.filter((n) => !(n in GROUPS));
  if (unknown.length > 0) {
    process.stderr.write(`unknown group(s) ${unknown.join(', ')}; groups: ${Object.keys(GROUPS).join(', ')}\n`);
    process.exit(2);
  }
  mkdirSync('reports/mutation', { recursive: true });
  const summary: string[] = [];
  for (const name of names.length > 0 ? names : Object.keys(GROUPS)) {
    const started = Date.now();
    const group = only.length > 0 ? { ...GROUPS[name], mutate: only } : GROUPS[name];
    const results = await new Stryker(options(name, group)).runMutationTest();
    const count = (...s: string[]) => results.filter((r) => s.includes(r.status)).length;
    const detected = count('Killed', 'Timeout');
    const undetected = count('Survived', 'NoCoverage');
    const score = detected + undetected === 0 ? NaN : (100 * detected) / (detected + undetected);
    summary.push(`${name}${only.length > 0 ? ` (${only.join(', ')})` : ''}: ${score.toFixed(1)}% (killed ${count('Killed')}, timeout ${count('Timeout')}, survived ${count('Survived')}, no coverage ${count('NoCoverage')}, compile errors ${count('CompileError')}, runtime errors ${count('RuntimeError')}) in ${((Date.now() - started) / 60000).toFixed(1)} min`);
  }
  process.stdout.write(`\nmutation score per group (killed + timeout over killed + timeout + survived + no coverage):\n${summary.map((l) => `  ${l}`).join('\n')}\n`);
}

if (import.meta.url === `file://${process.argv[1]}`) await main();
