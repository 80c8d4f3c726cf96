/**
 * How long `import('revgrad')` takes for a user: the packed package installed into a fresh project
 * (test/consumer-project.ts), then `node -e "import('revgrad')"` run N times, beside the anchor
 * `node -e "0"` (Node's own start) measured in the same run. Wall time is what a user waits; CPU time
 * (user + system, reported by the child itself) is the part that does not depend on what else the
 * machine is doing. Target (issue 11): under 300 ms wall on a quiet machine.
 *
 *   node --import tsx bench/load.ts [runs=15]
 */
import { spawnSync } from 'node:child_process';
import { cpus, loadavg } from 'node:os';
import { rmSync } from 'node:fs';
import { dirname } from 'node:path';
import { createConsumerProject } from '../test/consumer-project.ts';

const runs = Number(process.argv[2] ?? 15);
const project = createConsumerProject();
console.log(`consumer project: packed ${project.packSeconds.toFixed(1)} s, installed ${project.installSeconds.toFixed(1)} s (${project.dir})`);

/** One child: wall ms measured here, CPU ms reported by the child at exit. */
function once(code: string): { wall: number; cpu: number } {
  const script = `${code};process.on('exit',()=>{const c=process.cpuUsage();process.stdout.write(String((c.user+c.system)/1000))})`;
  const t0 = performance.now();
  const r = spawnSync(process.execPath, ['-e', script], { cwd: project.dir, encoding: 'utf8' });
  const wall = performance.now() - t0;
  if (r.status !== 0) throw new Error(`node -e ${code} failed: ${r.stderr}`);
  return { wall, cpu: Number(r.stdout) };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const cases: [string, string][] = [
  ['node -e "0" (anchor)', '0'],
  ['node -e "import(\'revgrad\')"', "import('revgrad')"],
  ['node -e "import(\'revgrad/node\')"', "import('revgrad/node')"],
];
const results = new Map<string, { wall: number[]; cpu: number[] }>(cases.map(([name]) => [name, { wall: [], cpu: [] }]));
once("import('revgrad')"); // the file cache is warm for every case
for (let i = 0; i < runs; i++) {
  // Interleaved, so a change in the machine's load hits every case alike.
  for (const [name, code] of cases) {
    const r = once(code);
    results.get(name)!.wall.push(r.wall);
    results.get(name)!.cpu.push(r.cpu);
  }
}
const anchor = results.get(cases[0]![0])!;
console.log(`\n${runs} runs each, ${cpus().length} CPUs, load average ${loadavg().map((l) => l.toFixed(1)).join(' ')}, Node ${process.version}`);
console.log('| command | wall median (ms) | wall min (ms) | CPU median (ms) | wall over anchor (ms) |');
console.log('|---|---|---|---|---|');
for (const [name, r] of results) {
  console.log(`| \`${name}\` | ${median(r.wall).toFixed(0)} | ${Math.min(...r.wall).toFixed(0)} | ${median(r.cpu).toFixed(0)} | ${(median(r.wall) - median(anchor.wall)).toFixed(0)} |`);
}
rmSync(dirname(project.dir), { recursive: true, force: true });
