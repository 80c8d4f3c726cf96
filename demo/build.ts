/**
 * Browser builds with esbuild:
 *   - the library: src/browser.ts -> dist/revgrad.browser.js (ESM; `npm run build:browser`);
 *   - the demo: demo/main.ts -> dist/demo/main.js and its worker demo/worker.ts -> dist/demo/worker.js;
 *   - the browser test page: test/browser/laws-page.ts -> dist/test-page/laws-page.js (test:browser).
 *
 * gpu.js resolves to its browser build (the package's `browser` field: dist/gpu-browser.js, which has the
 * webgpu, webgl2 and webasm backends). Node built-ins imported by Node-only parts of the library (file IO,
 * the webasm literal-type patch's createRequire) are replaced by stubs whose functions throw "not
 * available in the browser"; the patch catches that and skips, the rest is never called in a page.
 * The optional `webgpu` package (Dawn for Node) is only imported dynamically in Node and stays out.
 *
 *   node --import tsx demo/build.ts [library|demo|test|all]   (default: library)
 */
import { build, type Plugin } from 'esbuild';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
export const DIST = join(ROOT, 'dist');

/** Names the library's Node-only code imports from each built-in (a missing one fails the build, loudly). */
const BUILTINS: Record<string, string[]> = {
  fs: ['readFileSync', 'writeFileSync', 'existsSync', 'mkdirSync', 'appendFileSync', 'statSync', 'openSync', 'closeSync', 'fsyncSync', 'renameSync', 'unlinkSync', 'writeSync', 'readdirSync', 'rmSync', 'copyFileSync'],
  path: ['join', 'dirname', 'basename', 'resolve', 'relative', 'extname', 'sep'],
  crypto: ['randomBytes', 'createHash'],
  module: ['createRequire'],
  url: ['fileURLToPath', 'pathToFileURL'],
  child_process: ['spawnSync', 'execFileSync'],
  os: ['cpus', 'tmpdir', 'platform'],
  worker_threads: ['Worker', 'parentPort', 'isMainThread'],
  perf_hooks: ['performance'],
};

const stubSource = (mod: string): string => {
  const names = BUILTINS[mod] ?? [];
  const fail = (name: string) => `function ${name}() { throw new Error("node:${mod}.${name} is not available in the browser"); }`;
  return [
    ...names.map((n) => `export ${fail(n)}`),
    `export default new Proxy({}, { get(_, name) { throw new Error("node:${mod}." + String(name) + " is not available in the browser"); } });`,
  ].join('\n');
};

/** node:* and bare built-in imports -> stubs. */
export const nodeStubs: Plugin = {
  name: 'node-builtins-stub',
  setup(b) {
    const filter = new RegExp(`^(node:)?(${Object.keys(BUILTINS).join('|')})$`);
    b.onResolve({ filter }, (args) => ({ path: args.path.replace(/^node:/, ''), namespace: 'node-stub' }));
    b.onLoad({ filter: /.*/, namespace: 'node-stub' }, (args) => ({ contents: stubSource(args.path), loader: 'js' }));
  },
};

const common = {
  bundle: true,
  format: 'esm' as const,
  platform: 'browser' as const,
  target: ['chrome113', 'firefox121', 'safari17'],
  mainFields: ['browser', 'module', 'main'],
  plugins: [nodeStubs],
  // The Dawn package is Node-only and imported through a variable; keep any literal mention external too.
  external: ['webgpu', 'gl'],
  sourcemap: true,
  logLevel: 'warning' as const,
  legalComments: 'none' as const,
};

export async function buildLibrary(minify = false): Promise<string> {
  const outfile = join(DIST, 'revgrad.browser.js');
  await build({ ...common, entryPoints: [join(ROOT, 'src', 'browser.ts')], outfile, minify });
  return outfile;
}

/** The demo: the page's bundle and its training worker's, each with the library inside. */
export async function buildDemo(): Promise<string> {
  const outfile = join(DIST, 'demo', 'main.js');
  await build({ ...common, entryPoints: [join(ROOT, 'demo', 'main.ts')], outfile });
  await build({ ...common, entryPoints: [join(ROOT, 'demo', 'worker.ts')], outfile: join(DIST, 'demo', 'worker.js') });
  return outfile;
}

export async function buildTestPage(): Promise<string> {
  const outfile = join(DIST, 'test-page', 'laws-page.js');
  await build({ ...common, entryPoints: [join(ROOT, 'test', 'browser', 'laws-page.ts')], outfile });
  return outfile;
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  const what = process.argv[2] ?? 'library';
  const t0 = performance.now();
  const outputs: string[] = [];
  if (what === 'library' || what === 'all') outputs.push(await buildLibrary(process.argv.includes('--minify')));
  if (what === 'demo' || what === 'all') outputs.push(await buildDemo());
  if (what === 'test' || what === 'all') outputs.push(await buildTestPage());
  if (outputs.length === 0) {
    console.error('usage: node --import tsx demo/build.ts [library|demo|test|all] [--minify]');
    process.exit(2);
  }
  console.log(`built ${outputs.map((o) => o.slice(ROOT.length + 1)).join(', ')} in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
}
