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
const ENTRIES: Record<string, string> = { revgrad: 'src/index.ts', 'revgrad/node': 'src/node.ts', 'revgrad/laws': 'src/laws/index.ts' };

/**
 * Relative module specifiers (`from '../src/x.ts'`, `import '../x.ts'`) made absolute, resolved from `base`,
 * and 'revgrad', 'revgrad/node', 'revgrad/laws' pointed at the sources.
 */
export function absolutizeImports(source: string, base: string): string {
  return source
    .replace(/(\bfrom\s+|\bimport\s+|\bimport\(\s*)(['"])(\.\.?\/[^'"]+)\2/g, (_all, lead: string, q: string, spec: string) => `${lead}${q}${resolve(base, spec)}${q}`)
    .replace(/(\bfrom\s+|\bimport\s+|\bimport\(\s*)(['"])(revgrad(?:\/node|\/laws)?)\2/g, (_all, lead: string, q: string, spec: string) => `${lead}${q}${join(repo, ENTRIES[spec]!)}${q}`);
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

/**
 * Each runnable block with the output the docs say it prints: the first fenced block after it when the
 * prose in between says "prints" (null when the docs show no output).
 */
export function runnableBlocksWithOutput(markdown: string): { source: string; output: string[] | null }[] {
  const out: { source: string; output: string[] | null }[] = [];
  const fence = /^```ts runnable[ \t]*\n([\s\S]*?)^```[ \t]*$/gm;
  for (let m = fence.exec(markdown); m !== null; m = fence.exec(markdown)) {
    const rest = markdown.slice(fence.lastIndex);
    const next = /^```[^\n]*\n([\s\S]*?)^```[ \t]*$/m.exec(rest);
    const prose = next === null ? '' : rest.slice(0, next.index);
    const documented = next !== null && /\bprints\b/.test(prose) && !/^```ts runnable/.test(next[0]);
    out.push({ source: m[1], output: documented ? next![1].replace(/\n$/, '').split('\n') : null });
  }
  return out;
}

const NUM = String.raw`[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[-+]?\d+)?|-?Infinity|NaN`;

/**
 * Compare printed lines with documented ones; null when they match, else the first difference.
 * In the documented text: a line `...` stands for any number of lines, `...` inside a line for any
 * text, `#` for any number; every other number must equal the printed one rounded to the digits written
 * (0.899 matches 0.8990000486, 2.1e-6 matches 2.14e-6).
 */
export function matchOutput(printed: readonly string[], documented: readonly string[]): string | null {
  const lineMatches = (got: string, want: string): boolean => {
    const expected: (string | null)[] = [];
    let re = '';
    const token = new RegExp(String.raw`(\.\.\.)|(#)|((?<![\w.\]])(?:${NUM})(?![\w.]))`, 'g');
    let last = 0;
    for (let t = token.exec(want); t !== null; t = token.exec(want)) {
      re += want.slice(last, t.index).replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
      if (t[1] !== undefined) re += '.*?';
      else {
        re += `(${NUM})`;
        expected.push(t[2] !== undefined ? null : t[3]);
      }
      last = token.lastIndex;
    }
    re += want.slice(last).replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    const m = new RegExp(`^${re}$`).exec(got.trimEnd());
    if (m === null) return false;
    return expected.every((doc, i) => {
      if (doc === null) return true;
      const g = Number(m[i + 1]);
      const d = Number(doc);
      if (!Number.isFinite(d)) return Object.is(g, d) || (Number.isNaN(g) && Number.isNaN(d));
      const [mant, exp = '0'] = doc.toLowerCase().split('e');
      const decimals = mant.includes('.') ? mant.length - mant.indexOf('.') - 1 : 0;
      const unit = 10 ** (Number(exp) - decimals);
      return Math.abs(g - d) <= 0.5 * unit * (1 + 1e-9);
    });
  };
  // Backtracking over `...` lines (documented outputs are short).
  const go = (i: number, j: number): boolean => {
    if (j === documented.length) return i === printed.length;
    if (documented[j].trim() === '...') {
      for (let k = i; k <= printed.length; k++) if (go(k, j + 1)) return true;
      return false;
    }
    return i < printed.length && lineMatches(printed[i], documented[j]) && go(i + 1, j + 1);
  };
  if (go(0, 0)) return null;
  // Report the first documented line no printed line matches in order.
  let i = 0;
  for (const want of documented) {
    if (want.trim() === '...') continue;
    while (i < printed.length && !lineMatches(printed[i], want)) i++;
    if (i === printed.length) return `no printed line matches the documented line\n  ${want}\nprinted:\n${printed.join('\n')}`;
    i++;
  }
  return `the printed lines do not match the documented ones in order\ndocumented:\n${documented.join('\n')}\nprinted:\n${printed.join('\n')}`;
}
