/**
 * revgrad in a real browser: Debian's Chromium (headless, /usr/bin/chromium; never a downloaded one)
 * driven by playwright-core, WebGPU and WebGL2 both on SwiftShader (software; what CI machines have).
 *
 *  - the backend laws (test/backend-laws.ts) on webgpu and on webgl2: every primitive equal to webasm and
 *    passing finite differences, the reversible laws, and the revvit_2d_full golden fixture;
 *  - backend selection in the page: 'auto' does not take SwiftShader, allowSoftware does;
 *  - the browser build dist/revgrad.browser.js loads as plain ESM with the public API of src/index.ts;
 *  - device plans on Chromium's WebGPU (test/plan-laws.ts): the tiled matmul, fused groups, every op as a
 *    plan step, the compiled AdamW training step and jit(step) = the eager step with <= 4 submissions
 *    and 1 readback per step, no new pipelines or buffers;
 *  - the demo (demo/index.html) on auto and, lighter, on webgpu: screenshots in runs/browser/ and the
 *    expected elements (clip frames, reconstruction error per block, the worker's training with its loss
 *    and accuracy chart, memory table), that the loss falls, and a checkpoint written by the training
 *    code predicting exactly what Node predicts with it.
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
import type { PlanLawResult } from './plan-laws.ts';

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
  const { startServer, digitsSubset } = await import('../demo/serve.ts');
  const checkpointDir = mkdtempSync(join(tmpdir(), 'revgrad-demo-ckpt-'));
  const checkpointFile = join(checkpointDir, 'checkpoint.safetensors');
  /** What Node predicts with that checkpoint on the clips the demo shows (set up in test.before). */
  let nodePredictions: number[] = [];
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
    nodePredictions = await writeDemoCheckpoint(checkpointFile);
    server = await startServer({ testPage: true, checkpoint: checkpointFile });
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
    rmSync(checkpointDir, { recursive: true, force: true });
  });

  /**
   * A training checkpoint as `npm start` writes it (saveCheckpoint: params, AdamW moments, the config in the
   * metadata) of REV_MVIT_MNIST after two AdamW steps, and Node's predictions with it on the 12 clips the
   * demo's checkpoint section draws (demo/worker.ts predict: key 7).
   */
  async function writeDemoCheckpoint(file: string): Promise<number[]> {
    const [{ saveCheckpoint }, { adamwInit, adamwUpdate, ADAMW_DEFAULTS }, { crossEntropy, argmaxRows }, { parseDigits, makeClips, clipSpecFor }, { foldIn, key }, R, E] = await Promise.all([
      import('../src/train/checkpoint.ts'),
      import('../src/train/optim.ts'),
      import('../src/train/loss.ts'),
      import('../demo/data.ts'),
      import('../src/random/index.ts'),
      import('../src/index.ts'),
      import('fp-ts/lib/Either.js'),
    ]);
    const parsed = R.parseConfig(R.PRESETS.REV_MVIT_MNIST);
    if (E.isLeft(parsed)) throw new Error(R.formatProblems(parsed.left));
    const cfg = parsed.right;
    const model = R.buildModel(cfg);
    const digits = parseDigits(digitsSubset());
    const spec = clipSpecFor(cfg.DATA.NUM_FRAMES, cfg.DATA.TRAIN_CROP_SIZE);
    const shape = (n: number) => [n, 1, spec.frames, spec.size, spec.size];
    let params = model.init(key(3));
    let state = adamwInit(params);
    for (let s = 0; s < 2; s++) {
      const b = makeClips(digits, foldIn(key(4), s), 4, spec);
      const [, grads] = R.valueAndGrad((p: typeof params) => crossEntropy(model.apply(p, R.tensor(b.x, shape(4)), key(5), { train: true }), Array.from(b.y)))(params);
      ({ params, state } = adamwUpdate(params, grads, state, { ...ADAMW_DEFAULTS, lr: 2e-3 }, model.noDecay));
    }
    saveCheckpoint(file, params, state, { step: 2, seed: 0, key: [0, 0], config: cfg, optimizer: { name: 'adamw' }, training: {} });
    const clips = makeClips(digits, foldIn(key(7), 0x5eed), 12, spec);
    const probs = model.apply(params, R.tensor(clips.x, shape(12)), key(7), { train: false }).dataSync();
    return Array.from(argmaxRows(probs, 12, cfg.MODEL.NUM_CLASSES));
  }

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

  test('device plans on WebGPU in Chromium: tiled matmul, fused groups, every op, the compiled AdamW step (<= 4 submissions, 1 readback per step) = eager', async () => {
    const r: { results: PlanLawResult[]; ms: number } = await laws.evaluate(() => (window as any).revgradLaws.plan({ samples: 1 }));
    const line = (x: PlanLawResult) => `  [webgpu plan] ${x.ok ? 'ok  ' : 'FAIL'} ${x.name} (${x.ms.toFixed(0)} ms): ${x.detail}`;
    r.results.filter((x) => !x.ok || !x.name.startsWith('op ')).forEach((x) => console.log(line(x)));
    const ops = r.results.filter((x) => x.name.startsWith('op '));
    console.log(`  [webgpu plan] ops ${ops.filter((x) => x.ok).length}/${ops.length}; all in ${(r.ms / 1000).toFixed(1)} s`);
    assert.ok(ops.length >= 40, `expected the ~45 OP_CASES, got ${ops.length}`);
    assert.ok(r.results.some((x) => x.name.includes('training step')), 'the step law did not run');
    assert.ok(r.results.some((x) => x.name.startsWith('jit(step)')), 'the jit step law did not run');
    for (const law of ['tiled WGSL matmul', 'a plan tuned on the device', 'dense convolutions', 'reductions', 'NaN, ±Infinity']) assert.ok(r.results.some((x) => x.name.startsWith(law)), `the law '${law}...' did not run`);
    const bad = r.results.filter((x) => !x.ok);
    assert.is(bad.length, 0, bad.map(line).join('\n'));
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
      lines: Array.from(document.querySelectorAll('#train-chart polyline')).map((p) => (p.getAttribute('points') ?? '').trim().split(/\s+/).filter((x) => x !== '').length),
      trainStatus: document.getElementById('train-status')!.textContent,
      trainPredictions: document.querySelectorAll('#train-predictions .prediction').length,
      checkpointPredictions: document.querySelectorAll('#checkpoint-predictions .prediction').length,
      memoryRows: document.querySelectorAll('#memory tr').length - 1,
      report: (window as any).revgradDemo,
    }));
    await page.close();
    console.log(`  demo (${name}): ${state.status} [${seconds.toFixed(1)} s]; screenshot ${shot.slice(ROOT.length + 1)}`);
    return state;
  }

  /** Mean of the first and the last `n` losses of the training. */
  const ends = (losses: number[], n: number) => [losses.slice(0, n), losses.slice(-n)].map((xs) => xs.reduce((a, b) => a + b, 0) / xs.length);

  test('demo on auto: forward, inverse error per block, training in a worker (the loss falls, chart drawn), memory, a checkpoint\'s predictions = Node\'s; screenshot', async () => {
    const steps = 120;
    const s = await demo(`?steps=${steps}&batch=8&checkpoint=/checkpoint.safetensors`, 'auto', 600_000);
    assert.is(s.state, 'done', `${s.status}\n${s.report?.error ?? ''}${s.report?.training?.error ?? ''}`);
    assert.is(s.backend, 'webasm', 'auto under SwiftShader should run on webasm');
    assert.is(s.frames, 8);
    assert.is(s.driftRows, 4);
    for (const d of s.report.drift) assert.ok(d.x1 < 1e-5 && d.x2 < 1e-5, `block ${d.block} reconstruction error ${d.x1}, ${d.x2}`);
    const t = s.report.training;
    assert.is(t.engine, 'eager', 'no hardware WebGPU in the worker: the eager webasm step');
    assert.is(t.steps.length, steps);
    const losses: number[] = t.steps.map((p: { loss: number }) => p.loss);
    assert.ok(losses.every((l) => Number.isFinite(l) && l > 0 && l < 10), `losses ${losses}`);
    const [first, last] = ends(losses, 15);
    console.log(`  demo training: loss ${first.toFixed(3)} (first 15 steps) -> ${last.toFixed(3)} (last 15); ${t.seconds.toFixed(1)} s in the worker`);
    assert.ok(last < first - 0.1, `the loss should fall: mean of the first 15 steps ${first}, of the last 15 ${last}`);
    assert.equal(s.lines, [steps, steps], 'the chart draws the loss and the accuracy at every step');
    assert.is(s.trainPredictions, 8, 'the trained model predicts 8 held-out clips');
    assert.is(s.memoryRows, 3);
    const [m2, m4, m8] = s.report.memory;
    assert.is(m2.reversible, m8.reversible, 'reversible retained memory should not grow with depth');
    assert.ok(m8.store > 3 * m2.store && m4.store > m2.store, `store memory should grow with depth: ${JSON.stringify(s.report.memory)}`);
    assert.is(s.checkpointPredictions, 12);
    assert.is(s.report.checkpoint.step, 2);
    assert.equal(s.report.checkpoint.predictions.map((p: { predicted: number }) => p.predicted), nodePredictions, 'the page predicts what Node predicts with the same checkpoint');
  });

  test('demo on webgpu (SwiftShader; 3 steps, batch 2): the worker trains through the compiled device plan, same elements and reconstruction errors', async () => {
    const s = await demo('?backend=webgpu&steps=3&batch=2&depths=2', 'webgpu', 600_000);
    assert.is(s.state, 'done', `${s.status}\n${s.report?.error ?? ''}${s.report?.training?.error ?? ''}`);
    assert.is(s.backend, 'webgpu');
    assert.is(s.driftRows, 4);
    for (const d of s.report.drift) assert.ok(d.x1 < 1e-5 && d.x2 < 1e-5, `block ${d.block} reconstruction error ${d.x1}, ${d.x2}`);
    const t = s.report.training;
    assert.is(t.backend, 'webgpu');
    assert.is(t.engine, 'device plan');
    assert.is(t.steps.length, 3);
    assert.ok(t.steps.every((p: { loss: number }) => Number.isFinite(p.loss) && p.loss > 0), JSON.stringify(t.steps));
    assert.equal(s.lines, [3, 3]);
    assert.is(s.memoryRows, 1);
  });

  test('no uncaught errors in any page', () => {
    assert.equal(pageErrors, []);
  });
}

test.run();
