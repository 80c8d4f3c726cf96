/** Helpers for tests that run the documentation's examples, so the docs cannot rot. */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const repo = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** Fenced blocks whose info string is exactly `ts runnable`. */
export function runnableBlocks(markdown: string): string[] {
  const blocks: string[] = [];
  const fence = /^```ts runnable[ \t]*\n([\s\S]*?)^```[ \t]*$/gm;
  for (let m = fence.exec(markdown); m !== null; m = fence.exec(markdown)) blocks.push(m[1]);
  return blocks;
}

/** Every fenced block whose info string starts with `ts` (`ts`, `ts runnable`), with its 1-based line. */
export function tsBlocks(markdown: string): { code: string; line: number; runnable: boolean }[] {
  const blocks: { code: string; line: number; runnable: boolean }[] = [];
  const fence = /^```ts(\b[^\n]*)\n([\s\S]*?)^```[ \t]*$/gm;
  for (let m = fence.exec(markdown); m !== null; m = fence.exec(markdown)) {
    blocks.push({ code: m[2]!, line: markdown.slice(0, m.index).split('\n').length, runnable: /\brunnable\b/.test(m[1]!) });
  }
  return blocks;
}

/** The package's own entries, as the sources (docs say `from 'revgrad'`; tests run them against src/, not a build). */
const ENTRIES: Record<string, string> = { revgrad: 'src/index.ts', 'revgrad/node': 'src/node.ts' };

/**
 * Relative module specifiers (`from '../src/x.ts'`, `import '../x.ts'`) made absolute, resolved from `base`,
 * and 'revgrad' / 'revgrad/node' pointed at the sources.
 */
export function absolutizeImports(source: string, base: string): string {
  return source
    .replace(/(\bfrom\s+|\bimport\s+|\bimport\(\s*)(['"])(\.\.?\/[^'"]+)\2/g, (_all, lead: string, q: string, spec: string) => `${lead}${q}${resolve(base, spec)}${q}`)
    .replace(/(\bfrom\s+|\bimport\s+|\bimport\(\s*)(['"])(revgrad(?:\/node)?)\2/g, (_all, lead: string, q: string, spec: string) => `${lead}${q}${join(repo, ENTRIES[spec]!)}${q}`);
}

/**
 * Run a block in a fresh `node --import tsx` process. The file lives inside the repo (an ignored
 * scratch folder) so that `import ... from 'revgrad'` resolves to this package.
 */
export function runBlock(source: string, base: string): { status: number | null; stdout: string; stderr: string } {
  const dir = mkdtempSync(join(repo, '.docs-run-'));
  try {
    const file = join(dir, 'example.mts'); // .mts: ESM whatever the folder's package.json says
    writeFileSync(file, absolutizeImports(source, base));
    const env: NodeJS.ProcessEnv = { ...process.env, NO_COLOR: '1' };
    delete env.FORCE_COLOR;
    const r = spawnSync(process.execPath, ['--import', 'tsx', file], { cwd: repo, env, encoding: 'utf8', timeout: 120_000 });
    return { status: r.status, stdout: r.stdout, stderr: r.stderr };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export const tmp = (): string => mkdtempSync(join(tmpdir(), 'revgrad-'));
