/**
 * `npm run demo`: build the demo and serve it on http://localhost:8080 (PORT to change).
 *
 * Routes: / (demo/index.html), /main.js and /worker.js (the demo's page and training worker bundles), /revgrad.browser.js
 * (the library's browser build), /digits.bin (a subset of the `mnist` package's digits for the Moving-MNIST
 * clips: the first 120 samples of each digit, 8-bit), /checkpoint.safetensors and /checkpoint.json (the newest
 * runs/<time>/checkpoint.safetensors that `npm start` wrote, for the demo's predictions), and for test/browser.test.ts /test/laws.html with its
 * bundle and /fixtures/*.safetensors. Nothing else is served.
 */
import { createServer, type Server } from 'node:http';
import { readFileSync, existsSync, readdirSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildDemo, buildLibrary, buildTestPage, DIST } from './build.ts';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.map': 'application/json',
  '.bin': 'application/octet-stream',
  '.safetensors': 'application/octet-stream',
  '.png': 'image/png',
};

export const DIGITS_PER_CLASS = 120;

/**
 * [u32 count][count labels (u8)][count x 784 pixels (u8, value * 255 rounded)], the first
 * DIGITS_PER_CLASS samples of each digit of the mnist package.
 */
export function digitsSubset(perClass = DIGITS_PER_CLASS): Uint8Array {
  const require = createRequire(import.meta.url);
  const count = perClass * 10;
  const out = new Uint8Array(4 + count + count * 784);
  new DataView(out.buffer).setUint32(0, count, true);
  for (let d = 0; d < 10; d++) {
    const data = (JSON.parse(readFileSync(require.resolve(`mnist/src/digits/${d}.json`), 'utf8')) as { data: number[] }).data;
    for (let s = 0; s < perClass; s++) {
      const i = d * perClass + s;
      out[4 + i] = d;
      for (let p = 0; p < 784; p++) out[4 + count + i * 784 + p] = Math.round(Math.min(1, Math.max(0, data[s * 784 + p])) * 255);
    }
  }
  return out;
}

const LAWS_HTML = `<!doctype html><html><head><meta charset="utf-8"><title>revgrad browser laws</title></head>
<body><p>revgrad backend laws</p><script type="module" src="/test/laws-page.js"></script></body></html>`;

export interface Running {
  readonly url: string;
  close(): Promise<void>;
}

/** The checkpoint of the newest run under runs/ (what the last `npm start` wrote), or null. */
export function newestCheckpoint(root = join(ROOT, 'runs')): string | null {
  if (!existsSync(root)) return null;
  let best: { file: string; mtime: number } | null = null;
  for (const dir of readdirSync(root)) {
    const file = join(root, dir, 'checkpoint.safetensors');
    if (!existsSync(file)) continue;
    const mtime = statSync(file).mtimeMs;
    if (best === null || mtime > best.mtime) best = { file, mtime };
  }
  return best?.file ?? null;
}

/**
 * Build what the pages need (unless `build` is false) and serve on `port` (0: any free port).
 * `checkpoint` is served as /checkpoint.safetensors (default: the newest run's, if any).
 */
export async function startServer(opts: { port?: number; build?: boolean; testPage?: boolean; checkpoint?: string | null } = {}): Promise<Running> {
  if (opts.build !== false) {
    await buildDemo();
    await buildLibrary();
    if (opts.testPage) await buildTestPage();
  }
  const digits = digitsSubset();
  const checkpoint = opts.checkpoint === undefined ? newestCheckpoint() : opts.checkpoint;
  const files: Record<string, string> = {
    '/': join(ROOT, 'demo', 'index.html'),
    '/index.html': join(ROOT, 'demo', 'index.html'),
    '/main.js': join(DIST, 'demo', 'main.js'),
    '/main.js.map': join(DIST, 'demo', 'main.js.map'),
    '/worker.js': join(DIST, 'demo', 'worker.js'),
    '/worker.js.map': join(DIST, 'demo', 'worker.js.map'),
    '/revgrad.browser.js': join(DIST, 'revgrad.browser.js'),
    '/revgrad.browser.js.map': join(DIST, 'revgrad.browser.js.map'),
    '/test/laws-page.js': join(DIST, 'test-page', 'laws-page.js'),
    '/test/laws-page.js.map': join(DIST, 'test-page', 'laws-page.js.map'),
  };
  const server: Server = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://localhost').pathname;
    const send = (status: number, type: string, body: Uint8Array | string) => {
      res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
      res.end(body);
    };
    if (path === '/digits.bin') return send(200, TYPES['.bin'], digits);
    if (path === '/checkpoint.json') return send(200, 'application/json', JSON.stringify({ path: checkpoint === null ? null : checkpoint.startsWith(ROOT) ? checkpoint.slice(ROOT.length + 1) : checkpoint }));
    if (path === '/checkpoint.safetensors') {
      if (checkpoint === null || !existsSync(checkpoint)) return send(404, 'text/plain', 'no checkpoint: run npm start first');
      return send(200, TYPES['.safetensors'], readFileSync(checkpoint));
    }
    if (path === '/test/laws.html') return send(200, TYPES['.html'], LAWS_HTML);
    if (path.startsWith('/fixtures/') && path.endsWith('.safetensors')) {
      const file = normalize(join(ROOT, 'test', path));
      if (file.startsWith(join(ROOT, 'test', 'fixtures')) && existsSync(file)) return send(200, TYPES['.safetensors'], readFileSync(file));
      return send(404, 'text/plain', 'no such fixture');
    }
    const file = files[path];
    if (file === undefined || !existsSync(file)) return send(404, 'text/plain', `not found: ${path}`);
    const ext = file.slice(file.lastIndexOf('.'));
    send(200, TYPES[ext] ?? 'application/octet-stream', readFileSync(file));
  });
  await new Promise<void>((resolve) => server.listen(opts.port ?? 0, '127.0.0.1', resolve));
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;
  return {
    url: `http://localhost:${port}`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  const port = Number(process.env.PORT ?? '8080');
  const running = await startServer({ port, testPage: true });
  console.log(`revgrad demo: ${running.url}/  (backends: ?backend=auto|webgpu|webgl2|webasm|cpu, training steps: ?steps=N)`);
}
