/**
 * A fresh project that installs revgrad the way a user does: `npm pack` of this repository (which runs
 * `prepare`, so dist/ is built from the current sources), then `npm install` of the tarball into a new
 * folder outside the repository, offline, from the npm cache that `npm ci` filled. Used by
 * test/consumer.test.ts and bench/load.ts.
 */
import { execFileSync, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const repo = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** The npm that runs this process (npm_execpath under `npm test`), else the one on PATH. */
const npm = (args: readonly string[], cwd: string, env: NodeJS.ProcessEnv = process.env): string => {
  const viaNode = process.env.npm_execpath !== undefined && process.env.npm_execpath.endsWith('.js');
  const [cmd, argv] = viaNode ? [process.execPath, [process.env.npm_execpath!, ...args]] : ['npm', [...args]];
  return execFileSync(cmd, argv, { cwd, env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 64 << 20 });
};

export interface ConsumerProject {
  /** The project folder: package.json, node_modules/revgrad from the tarball. */
  readonly dir: string;
  readonly tarball: string;
  /** Seconds spent packing (includes the build) and installing. */
  readonly packSeconds: number;
  readonly installSeconds: number;
}

interface LockEntry {
  version?: string;
  resolved?: string;
  integrity?: string;
  dependencies?: Record<string, string>;
  optionalDependencies?: Record<string, string>;
  [field: string]: unknown;
}

const readLock = (): Record<string, LockEntry> =>
  (JSON.parse(readFileSync(join(repo, 'package-lock.json'), 'utf8')) as { packages: Record<string, LockEntry> }).packages;

/** The exact version of a package the repository's lockfile holds (so the install finds it in the cache). */
export function lockedVersion(name: string): string {
  const v = readLock()[`node_modules/${name}`]?.version;
  if (v === undefined) throw new Error(`${name} is not in package-lock.json`);
  return v;
}

/**
 * The lockfile entries a project needs for `names` (and everything they require), copied from this repository's lockfile with their paths: what `npm ci` resolved and
 * cached, so an offline install needs no registry metadata.
 */
function lockEntriesFor(names: readonly string[], lock: Record<string, LockEntry>): Record<string, LockEntry> {
  const out: Record<string, LockEntry> = {};
  // Node's lookup: the nearest node_modules/<name> going up from the requiring package's folder.
  const find = (from: string, name: string): string => {
    for (let dir = from; ; dir = dir.includes('/node_modules/') ? dir.slice(0, dir.lastIndexOf('/node_modules/')) : '') {
      const key = dir === '' ? `node_modules/${name}` : `${dir}/node_modules/${name}`;
      if (lock[key] !== undefined) return key;
      if (dir === '') throw new Error(`package-lock.json has no ${name} for ${from || 'the root'}`);
    }
  };
  const visit = (from: string, name: string) => {
    const key = find(from, name);
    if (out[key] !== undefined) return;
    const { dev: _dev, devOptional: _devOptional, peer: _peer, ...entry } = lock[key]!;
    out[key] = entry;
    // Optional ones too: `npm ci` wants them in the lockfile even when it omits them.
    for (const dep of Object.keys({ ...entry.dependencies, ...entry.optionalDependencies })) visit(key, dep);
  };
  for (const n of names) visit('', n);
  return out;
}

/**
 * Pack and install into a new temporary project (with `extra` more packages from the lockfile beside
 * it, e.g. @types/node). The install is `npm ci --offline --omit=optional` over a lockfile written from
 * this repository's: nothing is fetched. Throws with npm's output when a step fails.
 */
export function createConsumerProject(extra: readonly string[] = []): ConsumerProject {
  const root = mkdtempSync(join(tmpdir(), 'revgrad-consumer-'));
  const t0 = performance.now();
  const packed = JSON.parse(npm(['pack', '--json', '--pack-destination', root], repo)) as { filename: string; integrity: string }[];
  const tarball = join(root, packed[0]!.filename);
  const t1 = performance.now();
  const dir = join(root, 'app');
  mkdirSync(dir);
  const pkg = JSON.parse(readFileSync(join(repo, 'package.json'), 'utf8')) as {
    name: string; version: string; license: string; bin: Record<string, string>; engines: Record<string, string>;
    dependencies: Record<string, string>; optionalDependencies?: Record<string, string>;
  };
  const lock = readLock();
  const spec = `file:../${packed[0]!.filename}`;
  const deps = { revgrad: spec, ...Object.fromEntries(extra.map((n) => [n, lock[`node_modules/${n}`]!.version!])) };
  const entries = lockEntriesFor([...Object.keys({ ...pkg.dependencies, ...pkg.optionalDependencies }), ...extra], lock);
  const project = { name: 'consumer', version: '1.0.0', private: true, type: 'module', dependencies: deps };
  const lockfile = {
    name: project.name,
    version: project.version,
    lockfileVersion: 3,
    requires: true,
    packages: {
      '': { name: project.name, version: project.version, dependencies: deps },
      'node_modules/revgrad': {
        version: pkg.version,
        resolved: spec,
        integrity: packed[0]!.integrity,
        license: pkg.license,
        dependencies: pkg.dependencies,
        optionalDependencies: pkg.optionalDependencies,
        bin: pkg.bin,
        engines: pkg.engines,
      },
      ...entries,
    },
  };
  writeFileSync(join(dir, 'package.json'), JSON.stringify(project, null, 2));
  writeFileSync(join(dir, 'package-lock.json'), JSON.stringify(lockfile, null, 2));
  npm(['ci', '--offline', '--omit=optional', '--no-audit', '--no-fund', '--ignore-scripts'], dir);
  const t2 = performance.now();
  return { dir, tarball, packSeconds: (t1 - t0) / 1000, installSeconds: (t2 - t1) / 1000 };
}

/** Run `node` (or a script given as args) in the project. */
export const nodeIn = (dir: string, args: readonly string[], env: NodeJS.ProcessEnv = {}): SpawnSyncReturns<string> =>
  spawnSync(process.execPath, args, { cwd: dir, env: { ...process.env, NO_COLOR: '1', ...env }, encoding: 'utf8', timeout: 120_000 });

/** Run npm in the project (e.g. `exec revgrad -- --help`). */
export const npmIn = (dir: string, args: readonly string[]): SpawnSyncReturns<string> => {
  const viaNode = process.env.npm_execpath !== undefined && process.env.npm_execpath.endsWith('.js');
  const [cmd, argv] = viaNode ? [process.execPath, [process.env.npm_execpath!, ...args]] : ['npm', [...args]];
  return spawnSync(cmd, argv, { cwd: dir, env: { ...process.env, NO_COLOR: '1' }, encoding: 'utf8', timeout: 120_000 });
};
