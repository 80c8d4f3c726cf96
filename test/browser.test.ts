/**
 * revgrad in a real browser: Debian's Chromium (headless, /usr/bin/chromium; never a downloaded one)
 * driven by playwright-core, WebGPU and WebGL2 both on SwiftShader (software; what CI machines have).
 *
 *  - the backend laws (test/backend-laws.ts) on webgpu and on webgl2: every primitive equal to webasm and
 *    passing finite differences, the reversible laws, and the revvit_2d_full golden fixture;
 *  - backend selection in the page: 'auto' does not take SwiftShader, allowSoftware does;
 *  - the browser build dist/revgrad.browser.js loads as plain ESM with the public API of src/index.ts;
 *  - the demo (demo/index.html) on auto and, lighter, on webgpu: screenshots in runs/browser/ and the
 *    expected elements (clip frames, reconstruction error per block, loss curve, memory table).
 *
 * Skips, with the reason printed, where /usr/bin/chromium is missing (.ci/browser-deps.sh installs it).
 * BROWSER_LAW_SAMPLES sets the generated cases per op (default 2).
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { BrowserContext, Page } from 'playwright-core';
import type { LawResult } from './backend-laws.ts';

const CHROMIUM = '/usr/bin/chromium';
const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const SHOTS = join(ROOT, 'runs', 'browser');
const FLAGS = [
  '--no-sandbox',
  '--disable-gpu-sandbox',
  '--enable-unsafe-webgpu',
  '--use-webgpu-adapter=swiftshader',
  '--use-angle=swiftshader',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];
const samples = Math.max(1, Number(process.env.BROWSER_LAW_SAMPLES ?? '2') || 2);

interface RunResult {
  results: LawResult[];
  ms: number;
  smoke: { ok: boolean; detail: string };
}

if (!existsSync(CHROMIUM)) {
  console.log(`browser.test.ts: SKIPPED, ${CHROMIUM} is missing (apt-get install chromium; see .ci/browser-deps.sh)`);
  test.skip('browser (no chromium)', () => {});
} else {
  const { chromium } = await import('playwright-core');
  const { startServer } = await import('../demo/serve.ts');
  let server: Awaited<ReturnType<typeof startServer>>;
  let context: BrowserContext;
  let profile: string;
  let laws: Page;
  const pageErrors: string[] = [];

  const newPage = async (): Promise<Page> => {
    const page = await context.newPage();
    page.on('pageerror', (e) => pageErrors.push(e.message));
    return page;
  };

  test.before(async () => {
    const t0 = performance.now();
    server = await startServer({ testPage: true });
    profile = mkdtempSync(join(tmpdir(), 'revgrad-chromium-'));
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: FLAGS,
      viewport: { width: 1000, height: 1400 },
    });
    laws = await newPage();
    await laws.goto(`${server.url}/test/laws.html`);
    await laws.waitForFunction(() => document.body.dataset.ready === '1', null, { timeout: 60_000 });
    console.log(`  browser: ${context.browser()?.version() ?? 'chromium'} ready in ${((performance.now() - t0) / 1000).toFixed(1)} s (${server.url})`);
  });

  test.after(async () => {
    await context?.close();
    await server?.close();
    if (profile !== undefined) rmSync(profile, { recursive: true, force: true });
  });

  test('selection in the page: SwiftShader is found but auto does not take it; allowSoftware does', async () => {
    const env = await laws.evaluate(() => (window as any).revgradLaws.environment());
    console.log(`  webgpu adapter: ${JSON.stringify(env.webgpu.adapter ?? env.webgpu.reason)}; webgl2: ${env.webgl2}`);
    assert.ok(env.webgpu.ok, `no WebGPU adapter in Chromium: ${env.webgpu.reason}`);
    assert.ok(env.webgpu.software, 'SwiftShader should be recognised as software');
    assert.match(String(env.webgl2), /SwiftShader/);
    assert.ok(env.webasmSimd, 'WebAssembly SIMD missing');
    assert.is(env.auto.backend, 'webasm', env.auto.reason);
    assert.is(env.autoSoftware.backend, 'webgpu', env.autoSoftware.reason);
  });

  for (const backend of ['webgpu', 'webgl2'] as const) {
    test(`laws on ${backend} in Chromium: primitives vs webasm and finite differences, reversible laws, golden fixture`, async () => {
      const r: RunResult = await laws.evaluate(
        ([b, n]) => (window as any).revgradLaws.run(b, { samples: n, fixture: 'revvit_2d_full' }),
        [backend, samples] as const,
      );
      const line = (x: LawResult) => `  [${backend}] ${x.ok ? 'ok  ' : 'FAIL'} ${x.group}/${x.name} (${x.ms.toFixed(0)} ms): ${x.detail}`;
      r.results.filter((x) => x.group !== 'ops' || !x.ok).forEach((x) => console.log(line(x)));
      const ops = r.results.filter((x) => x.group === 'ops');
      console.log(`  [${backend}] smoke: ${r.smoke.detail}; ops ${ops.filter((x) => x.ok).length}/${ops.length}; all laws in ${(r.ms / 1000).toFixed(1)} s`);
      assert.ok(r.smoke.ok, r.smoke.detail);
      assert.ok(ops.length >= 40, `expected the ~45 OP_CASES, got ${ops.length}`);
      assert.ok(r.results.some((x) => x.group === 'fixture'), 'the fixture law did not run');
      const bad = r.results.filter((x) => !x.ok);
      assert.is(bad.length, 0, bad.map(line).join('\n'));
    });
  }

  test('dist/revgrad.browser.js: plain ESM in a page, the public API of src/index.ts plus selectBackend', async () => {
    const nodeApi = Object.keys(await import('../src/index.ts')).sort();
    const page = await newPage();
    await page.goto(`${server.url}/test/laws.html`);
    const r = await page.evaluate(async (url) => {
      const m: any = await import(url);
      const sel = await m.selectBackend('webgpu', { warn: false });
      const y = m.matmul(m.tensor([[1, 2], [3, 4]]), m.tensor([[5, 6], [7, 8]]));
      return { keys: Object.keys(m), backend: sel.backend, y: Array.from(await y.data()) as number[] };
    }, `${server.url}/revgrad.browser.js`);
    await page.close();
    const missing = nodeApi.filter((k) => !r.keys.includes(k));
    assert.equal(missing, [], `exports missing from the browser build: ${missing.join(', ')}`);
    for (const k of ['selectBackend', 'initWebGPU', 'isSoftwareAdapter']) assert.ok(r.keys.includes(k), `browser build lacks ${k}`);
    assert.is(r.backend, 'webgpu');
    assert.equal(r.y, [19, 22, 43, 50]);
  });

  async function demo(query: string, name: string, timeoutMs: number) {
    const page = await newPage();
    const t0 = performance.now();
    await page.goto(`${server.url}/${query}`);
    await page.waitForFunction(() => document.body.dataset.state !== undefined, null, { timeout: timeoutMs });
    const seconds = (performance.now() - t0) / 1000;
    mkdirSync(SHOTS, { recursive: true });
    const shot = join(SHOTS, `demo-${name}.png`);
    await page.screenshot({ path: shot, fullPage: true });
    const state = await page.evaluate(() => ({
      state: document.body.dataset.state,
      status: document.getElementById('status')!.textContent,
      backend: document.getElementById('backend')!.textContent,
      frames: document.querySelectorAll('#clip canvas').length,
      driftRows: document.querySelectorAll('#drift tr').length - 1,
      lossPoints: document.querySelectorAll('#loss-chart circle').length,
      trainRows: document.querySelectorAll('#train tr').length - 1,
      memoryRows: document.querySelectorAll('#memory tr').length - 1,
      report: (window as any).revgradDemo,
    }));
    await page.close();
    console.log(`  demo (${name}): ${state.status} [${seconds.toFixed(1)} s]; screenshot ${shot.slice(ROOT.length + 1)}`);
    return state;
  }

  test('demo on auto: forward, inverse error per block, training, memory; screenshot', async () => {
    const s = await demo('?steps=4&batch=8', 'auto', 120_000);
    assert.is(s.state, 'done', `${s.status}\n${s.report?.error ?? ''}`);
    assert.is(s.backend, 'webasm', 'auto under SwiftShader should run on webasm');
    assert.is(s.frames, 8);
    assert.is(s.driftRows, 4);
    for (const d of s.report.drift) assert.ok(d.x1 < 1e-5 && d.x2 < 1e-5, `block ${d.block} reconstruction error ${d.x1}, ${d.x2}`);
    assert.is(s.lossPoints, 4);
    assert.is(s.trainRows, 4);
    assert.ok(s.report.losses.every((l: number) => Number.isFinite(l) && l > 0 && l < 10), `losses ${s.report.losses}`);
    assert.is(s.memoryRows, 3);
    const [m2, m4, m8] = s.report.memory;
    assert.is(m2.reversible, m8.reversible, 'reversible retained memory should not grow with depth');
    assert.ok(m8.store > 3 * m2.store && m4.store > m2.store, `store memory should grow with depth: ${JSON.stringify(s.report.memory)}`);
  });

  test('demo on webgpu (SwiftShader; 1 step, batch 2): same elements, same reconstruction errors', async () => {
    const s = await demo('?backend=webgpu&steps=1&batch=2&depths=2', 'webgpu', 240_000);
    assert.is(s.state, 'done', `${s.status}\n${s.report?.error ?? ''}`);
    assert.is(s.backend, 'webgpu');
    assert.is(s.driftRows, 4);
    for (const d of s.report.drift) assert.ok(d.x1 < 1e-5 && d.x2 < 1e-5, `block ${d.block} reconstruction error ${d.x1}, ${d.x2}`);
    assert.is(s.lossPoints, 1);
    assert.is(s.memoryRows, 1);
  });

  test('no uncaught errors in any page', () => {
    assert.equal(pageErrors, []);
  });
}

test.run();
