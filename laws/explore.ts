/**
 * Hunt for seed-dependent failures: `npm run laws:explore -- [--runs N] [--files REGEX] [--seed S ...]`.
 *
 * `npm test` is derandomized (laws/seed.ts: one fixed fast-check seed), so CI sees the same cases every
 * run. This script runs the property files again under fresh seeds (default 3 runs over laws/), one
 * process per seed, and prints each failing seed with the failing tests and the command that replays
 * it. A failure here is a law bug (usually a tolerance that float32 error analysis does not support) or
 * an implementation bug; fix it, then rerun that seed.
 */
import { spawnSync } from 'node:child_process';
import { randomInt } from 'node:crypto';

function option(name: string): string[] {
  const args = process.argv.slice(2);
  const out: string[] = [];
  args.forEach((a, i) => {
    if (a === name && i + 1 < args.length) out.push(args[i + 1]);
    else if (a.startsWith(`${name}=`)) out.push(a.slice(name.length + 1));
  });
  return out;
}

const runs = Number(option('--runs')[0] ?? 3);
const files = option('--files')[0] ?? '^laws/.*\\.test\\.ts$';
const given = option('--seed').map(Number);
if (!Number.isInteger(runs) || runs < 0 || given.some((s) => !Number.isInteger(s))) {
  process.stderr.write('usage: npm run laws:explore -- [--runs N] [--files REGEX] [--seed S ...]\n');
  process.exit(2);
}
const seeds = given.length > 0 ? given : Array.from({ length: runs }, () => randomInt(-(2 ** 31), 2 ** 31 - 1));

const quote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
const command = (pattern: string) => ['node', '--import', 'tsx', '--import', './laws/seed.ts', 'node_modules/uvu/bin.js', '.', pattern];

const failing: { seed: number; tests: string[] }[] = [];
for (const [i, seed] of seeds.entries()) {
  const started = Date.now();
  const r = spawnSync(command(files)[0], command(files).slice(1), {
    env: { ...process.env, REVGRAD_LAW_SEED: String(seed) },
    encoding: 'utf8',
    maxBuffer: 256 * 1024 * 1024,
  });
  const out = `${r.stdout}\n${r.stderr}`;
  // uvu prints each file's name, then one `FAIL  "<test>"` line per failed test (colours stripped).
  const plain = out.replace(/\x1b\[[0-9;]*m/g, '');
  const tests: string[] = [];
  let file = '?';
  for (const line of plain.split('\n')) {
    if (/^\S+\.test\.ts$/.test(line.trim())) file = line.trim();
    const m = /FAIL\s.*?"(.*)"/.exec(line);
    if (m !== null) tests.push(`${file}: "${m[1]}"`);
  }
  const total = /Total:\s+(\d+)/.exec(plain)?.[1] ?? '?';
  const secs = ((Date.now() - started) / 1000).toFixed(0);
  if (r.status === 0) {
    process.stdout.write(`[${i + 1}/${seeds.length}] seed ${seed}: ok (${total} tests, ${secs} s)\n`);
    continue;
  }
  const why = tests.length > 0 ? tests : [`exit ${r.status}${r.signal ? ` (${r.signal})` : ''}: ${plain.trim().split('\n').slice(-5).join(' | ')}`];
  failing.push({ seed, tests: why });
  process.stdout.write(`[${i + 1}/${seeds.length}] seed ${seed}: FAILED (${secs} s)\n${why.map((t) => `    ${t}`).join('\n')}\n`);
  // The failure's details (uvu's diff, the kit's counterexample report), trimmed.
  const from = plain.indexOf('FAIL');
  const detail = plain.slice(from < 0 ? 0 : from).split('\n').filter((l) => !/^\s*$/.test(l)).slice(0, 40).join('\n');
  process.stdout.write(`${detail.replace(/^/gm, '      | ')}\n`);
}

if (failing.length === 0) {
  process.stdout.write(`\nno failures in ${seeds.length} seed(s) over ${files}\n`);
} else {
  process.stdout.write(`\n${failing.length} of ${seeds.length} seed(s) failed; replay one with\n`);
  for (const f of failing) process.stdout.write(`  REVGRAD_LAW_SEED=${f.seed} ${command(files).map((a, j) => (j === command(files).length - 1 ? quote(a) : a)).join(' ')}\n`);
  process.exitCode = 1;
}
