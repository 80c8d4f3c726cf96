#!/usr/bin/env node
/**
 * `revgrad`: train, evaluate and check Rev-MViT models. The package's bin is this file compiled
 * (dist/cli/main.js, plain node); from a checkout, `node --import tsx src/cli/main.ts`.
 *
 * Exit status: 0 success; 1 a failure (missing or corrupt file, invalid config, failed check);
 * 2 bad usage (unknown flag, bad number, missing argument); 130 interrupted.
 */
import { existsSync, readdirSync, readFileSync, realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as E from 'fp-ts/lib/Either.js';
import { helpText, parseArgs, UsageError, type CommandSpec, type ParsedArgs } from './args.ts';
import { checkFixtureSpec, checkSpec, memorySpec, runCheck, runCheckFixture, runMemory } from './check-cmd.ts';
import { capLines, CliError } from './common.ts';
import { RevgradError } from '../tensor/errors.ts';
import { selectBackend } from '../backend/select.ts';
import { initWebGPU, type WebGPUStatus } from '../backend/webgpu-node.ts';
import { convertSpec, exportSpec, runConvert, runExport } from './convert-cmd.ts';
import { evalSpec, runEval } from './eval-cmd.ts';
import { runTrain, trainSpec } from './train-cmd.ts';

interface Command {
  readonly spec: CommandSpec;
  readonly run: (args: ParsedArgs) => Promise<number>;
}

export const COMMANDS: readonly Command[] = [
  { spec: trainSpec, run: runTrain },
  { spec: evalSpec, run: runEval },
  { spec: memorySpec, run: runMemory },
  { spec: checkSpec, run: runCheck },
  { spec: checkFixtureSpec, run: runCheckFixture },
  { spec: convertSpec, run: runConvert },
  { spec: exportSpec, run: runExport },
];

export function mainHelp(): string {
  return [
    'revgrad: reversible networks on a functional TypeScript autodiff (gpu.js kernels)',
    '',
    'Usage: revgrad <command> [flags]     (revgrad <command> --help for its flags; revgrad --version)',
    '',
    'Commands:',
    ...COMMANDS.map((c) => `  ${c.spec.name.padEnd(14)} ${c.spec.summary}`),
    '',
    'With no arguments, `npm start` runs `revgrad train` with the defaults: a small Rev-MViT on',
    'Moving-MNIST for a few minutes, writing a new runs/<timestamp>/ with a report.html.',
    '',
    'Backend: a hardware WebGPU adapter when one answers (Node: the optional `webgpu` package), else',
    'webasm; set REVGRAD_BACKEND=webasm|cpu|webgpu to choose (REVGRAD_VERBOSE=1 prints the choice).',
  ].join('\n');
}

/**
 * For 'auto' in the CLI: probe WebGPU only where a GPU device node exists (Linux: /dev/nvidia*, /dev/dri
 * render nodes). A machine without one can only offer a software adapter, which 'auto' refuses anyway,
 * and starting Dawn there just prints its warnings.
 */
async function probeWebGPUIfGpu(): Promise<WebGPUStatus> {
  const nodes = (dir: string, re: RegExp) => (existsSync(dir) ? readdirSync(dir).some((f) => re.test(f)) : false);
  const hasGpu = process.platform !== 'linux' || nodes('/dev', /^nvidia\d/) || nodes('/dev/dri', /^renderD/);
  return hasGpu ? initWebGPU() : { ok: false, reason: 'no GPU device node (/dev/nvidia*, /dev/dri/renderD*)' };
}

/** The package version (package.json is two folders up from both src/cli/ and dist/cli/). */
export function version(): string {
  return (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
}

/** Run the CLI on `argv` (the words after `revgrad`); returns the exit status. */
export async function main(argv: readonly string[], err: (s: string) => void = (s) => process.stderr.write(s)): Promise<number> {
  const [name, ...rest] = argv;
  if (name === '--version' || name === '-V') {
    process.stdout.write(`revgrad ${version()}\n`);
    return 0;
  }
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    if (name === 'help' && rest[0] !== undefined) return main([rest[0], '--help'], err);
    process.stdout.write(mainHelp() + '\n');
    return name === undefined ? 2 : 0;
  }
  const cmd = COMMANDS.find((c) => c.spec.name === name);
  if (cmd === undefined) {
    err(`revgrad: unknown command '${name}'; commands: ${COMMANDS.map((c) => c.spec.name).join(', ')} (see revgrad --help)\n`);
    return 2;
  }
  const parsed = parseArgs(cmd.spec, rest);
  if (E.isLeft(parsed)) {
    err(usageMessage(cmd.spec.name, parsed.left));
    return 2;
  }
  if (parsed.right.help) {
    process.stdout.write(helpText(cmd.spec) + '\n');
    return 0;
  }
  try {
    // 'auto': a hardware WebGPU adapter when one answers, else webasm; REVGRAD_BACKEND forces a choice.
    const selection = await selectBackend('auto', { probes: process.env.REVGRAD_BACKEND ? {} : { webgpu: probeWebGPUIfGpu } });
    if (process.env.REVGRAD_VERBOSE) err(`revgrad: backend ${selection.backend} (${selection.reason})\n`);
    return await cmd.run(parsed.right);
  } catch (e) {
    if (e instanceof UsageError) {
      err(usageMessage(e.command, e.problems));
      return 2;
    }
    err(errorMessage(`revgrad ${name}`, e));
    return 1;
  }
}

/**
 * How a failure is printed: never a stack trace (REVGRAD_DEBUG=1 adds it). A CliError lists its
 * problems; a typed library error (RevgradError: shapes, JSON, files, interrupts) is its message; an
 * allocation failure says memory; anything else is labelled an internal error, in one line.
 */
export function errorMessage(prefix: string, e: unknown): string {
  const debug = process.env.REVGRAD_DEBUG ? `\n${e instanceof Error ? e.stack : String(e)}` : '';
  if (e instanceof CliError) {
    const problems = capLines(e.problems);
    return problems.length === 1 ? `${prefix}: error: ${problems[0]}${debug}\n` : `${prefix}: error:\n${problems.map((p) => `  ${p}`).join('\n')}${debug}\n`;
  }
  if (e instanceof RevgradError) return `${prefix}: error: ${firstLines(e.message)}${debug}\n`;
  // The file system failed (disk full, permissions, a path through a file): a runtime error, not a bug.
  const errno = e as NodeJS.ErrnoException;
  if (e instanceof Error && typeof errno.code === 'string' && /^E[A-Z]+$/.test(errno.code) && errno.syscall !== undefined) {
    return `${prefix}: error: ${firstLines(e.message)}${debug}\n`;
  }
  if (e instanceof RangeError && /Maximum call stack/.test(e.message)) {
    return `${prefix}: error: the input nests too deeply to process (${e.message})${debug}\n`;
  }
  if (e instanceof RangeError && /allocation failed|Invalid typed array length|Array buffer|Invalid array length|WebAssembly\.Memory/i.test(e.message)) {
    return `${prefix}: error: out of memory (${e.message}); use a smaller --batch or config${debug}\n`;
  }
  const what = e instanceof Error ? `${e.name}: ${firstLines(e.message)}` : firstLines(String(e));
  return `${prefix}: internal error: ${what} (REVGRAD_DEBUG=1 prints the stack)${debug}\n`;
}

/** A message cut to its first lines: some errors carry a rendering of the whole input. */
const firstLines = (text: string, max = 20): string => capLines(text.split('\n'), max).join('\n');

const usageMessage = (command: string, problems: readonly string[]): string =>
  `revgrad ${command}: ${problems.length === 1 ? 'usage error' : `${problems.length} usage errors`}:\n${problems.map((p) => `  ${p}`).join('\n')}\n(see revgrad ${command} --help)\n`;

const invokedDirectly = (() => {
  try {
    return process.argv[1] !== undefined && realpathSync(process.argv[1]) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
})();

if (invokedDirectly) {
  const args = process.argv.slice(2);
  const fatal = (e: unknown) => {
    process.stderr.write(errorMessage(`revgrad${args[0] && !args[0].startsWith('-') ? ` ${args[0]}` : ''}`, e));
    process.exit(1);
  };
  // Whatever escapes (an error in a timer or a callback) still ends in one clean line and status 1.
  process.on('uncaughtException', fatal);
  process.on('unhandledRejection', fatal);
  main(args).then((code) => {
    process.exitCode = code;
  }, fatal);
}
