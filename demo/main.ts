/**
 * The demo page (demo/index.html, `npm run demo`):
 *  1-2. a small video Rev-ViT built with buildModel: its forward pass and derived inverse (reconstruction
 *       error per block), on the page's backend;
 *  3.   training in a Web Worker (demo/worker.ts) of `npm start`'s model with its recipe, on the best
 *       backend there (on WebGPU the whole step is one compiled device plan), with a live loss and
 *       accuracy chart, then the trained model's predictions on held-out clips;
 *  4.   the memory the backward pass keeps in reversible vs store mode;
 *  5.   a checkpoint made by `npm start` (checkpoint.safetensors, chosen with the file input or given as
 *       ?checkpoint=URL) and its predictions on clips.
 *
 * URL parameters: backend=auto|webgpu|webgl2|webasm|cpu (default auto; the page and the worker),
 * steps (training steps, default 300), batch (default 16), lr (default 2e-3), depths (for the memory
 * table, default 2,4,8), checkpoint (a URL to load at start). Results are also left on window.revgradDemo
 * for tests; document.body.dataset.state becomes 'done' (or 'error') when the page and the training are.
 */
import * as R from '../src/index.ts';
import { selectBackend, type BackendRequest } from '../src/backend/select.ts';
import { DEFAULT_CLIP_SPEC, DIRECTIONS } from '../src/data/clips.ts';
import { key, type Key } from '../src/random/index.ts';
import { crossEntropy } from '../src/train/loss.ts';
import { loadDigits, makeClips, type Digits } from './data.ts';
import type { Prediction, WorkerReply, WorkerRequest } from './worker.ts';

const params = new URLSearchParams(location.search);
const request = (params.get('backend') ?? 'auto') as BackendRequest;
const STEPS = Math.max(0, Number(params.get('steps') ?? '300') || 0);
const BATCH = Math.max(1, Number(params.get('batch') ?? '16') || 16);
const LR = Number(params.get('lr') ?? '2e-3') || 2e-3;
const DEPTH = 4;
const MEMORY_DEPTHS = (params.get('depths') ?? '2,4,8').split(',').map(Number).filter((d) => Number.isInteger(d) && d > 0);
const spec = DEFAULT_CLIP_SPEC;

const $ = <T extends Element = HTMLElement>(id: string) => document.getElementById(id) as unknown as T;
const report: Record<string, unknown> = {};
(window as unknown as { revgradDemo: unknown }).revgradDemo = report;

function status(text: string, kind: '' | 'done' | 'error' = ''): void {
  const el = $('status');
  el.textContent = text;
  el.className = kind;
  if (kind !== '') document.body.dataset.state = kind;
}

const fmtBytes = (b: number) => (b >= 1 << 20 ? `${(b / (1 << 20)).toFixed(2)} MiB` : `${(b / 1024).toFixed(1)} KiB`);
const fmtMs = (t: number) => (t >= 1000 ? `${(t / 1000).toFixed(2)} s` : `${t.toFixed(0)} ms`);
const row = (cells: (string | number)[], tag = 'td') => `<tr>${cells.map((c) => `<${tag}>${c}</${tag}>`).join('')}</tr>`;
/** Let the page paint between long steps. */
const frame = () => new Promise((r) => requestAnimationFrame(() => r(null)));

/** A batch of clips [B, 1, T, S, S] of the page's video Rev-ViT as a tensor. */
function makeBatch(digits: Digits, k: Key, size: number): { x: R.Tensor; y: Int32Array; raw: Float32Array } {
  const b = makeClips(digits, k, size, spec);
  return { x: R.tensor(b.x, [size, 1, spec.frames, spec.size, spec.size]), y: b.y, raw: b.x };
}

function drawClip(raw: Float32Array, label: number): void {
  const host = $('clip');
  host.innerHTML = '';
  for (let t = 0; t < spec.frames; t++) {
    const canvas = document.createElement('canvas');
    canvas.width = canvas.height = spec.size;
    canvas.className = 'frame';
    const ctx = canvas.getContext('2d')!;
    const img = ctx.createImageData(spec.size, spec.size);
    for (let i = 0; i < spec.size * spec.size; i++) {
      const v = Math.round(raw[t * spec.size * spec.size + i] * 255);
      img.data.set([v, v, v, 255], i * 4);
    }
    ctx.putImageData(img, 0, 0);
    host.append(canvas);
  }
  $('clip-label').textContent = `one training clip: digit ${Math.floor(label / 4)} moving ${DIRECTIONS[label % 4]} (class ${label})`;
}

// ---------------------------------------------------------------------------------------------
// The model: REV_VIT_TINY made a video model (8 frames of 32x32, 2x4x4 patches: 4x8x8 = 256 tokens)

function videoRevVit(depth: number) {
  const base = R.PRESETS.REV_VIT_TINY;
  const cfg = R.parseConfig({
    ...base,
    DATA: { NUM_FRAMES: spec.frames, TRAIN_CROP_SIZE: spec.size, TEST_CROP_SIZE: spec.size, INPUT_CHANNEL_NUM: [1] },
    MODEL: { NUM_CLASSES: 40, DROPOUT_RATE: 0 },
    MVIT: { ...base.MVIT, DEPTH: depth, PATCH_2D: false, PATCH_KERNEL: [2, 4, 4], PATCH_STRIDE: [2, 4, 4], PATCH_PADDING: [0, 0, 0] },
  });
  if (cfg._tag === 'Left') throw new Error(R.formatProblems(cfg.left));
  return R.buildModel(cfg.right);
}

const countParams = (model: R.MViTModel) => model.specs.reduce((n, s) => n + s.shape.reduce((a, b) => a * b, 1), 0);

// ---------------------------------------------------------------------------------------------
// 3. Training in a worker, with a live chart

interface StepPoint {
  step: number;
  loss: number;
  accuracy: number;
  ms: number;
}

const runningMean = (xs: readonly number[], i: number, n: number) => {
  const from = Math.max(0, i - n + 1);
  let s = 0;
  for (let j = from; j <= i; j++) s += xs[j];
  return s / (i - from + 1);
};

/** Loss (left axis) and batch accuracy, mean of the last 20 steps (right axis, 0-100 %), against the step. */
function drawTrainingChart(points: readonly StepPoint[], total: number): void {
  const w = 560, h = 230, left = 44, right = 44, top = 24, bottom = 30;
  const losses = points.map((p) => p.loss);
  const acc = points.map((_, i) => runningMean(points.map((p) => p.accuracy), i, 20));
  const maxLoss = Math.max(...losses, 1e-6);
  const minLoss = Math.min(...losses, maxLoss - 1e-6);
  const x = (step: number) => left + ((step - 1) / Math.max(1, total - 1)) * (w - left - right);
  const yLoss = (v: number) => h - bottom - ((v - minLoss) / (maxLoss - minLoss || 1)) * (h - top - bottom);
  const yAcc = (v: number) => h - bottom - v * (h - top - bottom);
  const line = (ys: number[], f: (v: number) => number) => points.map((p, i) => `${x(p.step).toFixed(1)},${f(ys[i]).toFixed(1)}`).join(' ');
  const last = points[points.length - 1];
  $('train-chart').innerHTML =
    `<text x="${left}" y="15" font-size="12">step ${last?.step ?? 0}/${total}: loss <tspan fill="#3b6fd6">${last?.loss.toFixed(3) ?? '–'}</tspan>, ` +
    `accuracy (last 20 batches) <tspan fill="#2e9d57">${last === undefined ? '–' : (acc[acc.length - 1] * 100).toFixed(0) + ' %'}</tspan></text>` +
    `<line x1="${left}" y1="${h - bottom}" x2="${w - right}" y2="${h - bottom}" stroke="#99a"/>` +
    `<text x="4" y="${yLoss(maxLoss) + 4}" font-size="11" fill="#3b6fd6">${maxLoss.toFixed(2)}</text><text x="4" y="${yLoss(minLoss) + 4}" font-size="11" fill="#3b6fd6">${minLoss.toFixed(2)}</text>` +
    `<text x="${w - right + 4}" y="${yAcc(1) + 4}" font-size="11" fill="#2e9d57">100%</text><text x="${w - right + 4}" y="${yAcc(0) + 4}" font-size="11" fill="#2e9d57">0%</text>` +
    `<text x="${left}" y="${h - 8}" font-size="11">1</text><text x="${w - right - 20}" y="${h - 8}" font-size="11">${total}</text>` +
    `<polyline class="loss" fill="none" stroke="#3b6fd6" stroke-width="1.8" points="${line(losses, yLoss)}"/>` +
    `<polyline class="accuracy" fill="none" stroke="#2e9d57" stroke-width="1.8" points="${line(acc, yAcc)}"/>`;
}

function renderPredictions(host: string, predictions: readonly Prediction[]): void {
  const el = $(host);
  el.innerHTML = '';
  for (const p of predictions) {
    const card = document.createElement('div');
    card.className = `prediction ${p.label === p.predicted ? 'right' : 'wrong'}`;
    const frames = document.createElement('div');
    frames.className = 'frames';
    const per = p.size * p.size;
    for (let t = 0; t < p.frames.length / per; t++) {
      const canvas = document.createElement('canvas');
      canvas.width = canvas.height = p.size;
      canvas.className = 'frame small';
      const ctx = canvas.getContext('2d')!;
      const img = ctx.createImageData(p.size, p.size);
      for (let i = 0; i < per; i++) {
        const v = Math.round(p.frames[t * per + i] * 255);
        img.data.set([v, v, v, 255], i * 4);
      }
      ctx.putImageData(img, 0, 0);
      frames.append(canvas);
    }
    const name = (c: number) => `${Math.floor(c / 4)} ${DIRECTIONS[c % 4]}`;
    const caption = document.createElement('div');
    caption.className = 'muted';
    caption.textContent = `true: ${name(p.label)} · predicted: ${name(p.predicted)} (${(p.confidence * 100).toFixed(0)} %) ${p.label === p.predicted ? '✓' : '✗'}`;
    card.append(frames, caption);
    el.append(card);
  }
}

/** Train in a worker; resolves when it has trained and predicted, rejects on its error. */
function startTraining(): Promise<void> {
  const points: StepPoint[] = [];
  const training: Record<string, unknown> = { steps: points };
  report.training = training;
  if (STEPS === 0) {
    $('train-status').textContent = 'training skipped (steps=0)';
    return Promise.resolve();
  }
  const worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
  return new Promise<void>((resolve, reject) => {
    worker.onerror = (e) => reject(new Error(`training worker: ${e.message}`));
    worker.onmessage = (e: MessageEvent<WorkerReply>) => {
      const m = e.data;
      switch (m.type) {
        case 'status':
          $('train-status').textContent = m.text;
          break;
        case 'backend':
          Object.assign(training, { backend: m.backend, engine: m.engine, reason: m.reason });
          $('train-backend').textContent = `${m.model}, ${m.params.toLocaleString()} parameters; worker backend ${m.backend} (${m.engine === 'device plan' ? 'each step one compiled device plan: one submission, one readback' : 'eager'}; ${m.reason})`;
          break;
        case 'step':
          points.push({ step: m.step, loss: m.loss, accuracy: m.accuracy, ms: m.ms });
          $('train-status').textContent = `training: step ${m.step}/${STEPS}, ${fmtMs(m.ms)} per step, lr ${m.lr.toExponential(2)}`;
          drawTrainingChart(points, STEPS);
          break;
        case 'trained':
          Object.assign(training, { seconds: m.seconds, heldOutAccuracy: m.accuracy, predictions: m.predictions.map((p) => ({ label: p.label, predicted: p.predicted })) });
          $('train-status').textContent = `trained ${m.steps} steps in ${m.seconds.toFixed(1)} s; held-out clips below: ${(m.accuracy * 100).toFixed(0)} % right`;
          renderPredictions('train-predictions', m.predictions);
          worker.terminate();
          resolve();
          break;
        case 'error':
          training.error = m.message;
          $('train-status').textContent = `training failed: ${m.message.split('\n')[0]}`;
          worker.terminate();
          reject(new Error(m.message));
          break;
        default:
          break;
      }
    };
    const req: WorkerRequest = { type: 'train', backend: request, steps: STEPS, batch: BATCH, lr: LR, seed: 0 };
    worker.postMessage(req);
  });
}

// ---------------------------------------------------------------------------------------------
// 5. A checkpoint's predictions

function predictCheckpoint(bytes: ArrayBuffer, name: string): Promise<void> {
  const worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
  $('checkpoint-status').textContent = `reading ${name}…`;
  return new Promise<void>((resolve, reject) => {
    worker.onmessage = (e: MessageEvent<WorkerReply>) => {
      const m = e.data;
      if (m.type === 'predictions') {
        report.checkpoint = { name: m.name, step: m.step, accuracy: m.accuracy, predictions: m.predictions.map((p) => ({ label: p.label, predicted: p.predicted, confidence: p.confidence })) };
        $('checkpoint-status').textContent = `${m.name}${m.step !== null ? ` (after ${m.step} steps)` : ''}: ${m.model}; ${(m.accuracy * 100).toFixed(0)} % of these ${m.predictions.length} clips right`;
        renderPredictions('checkpoint-predictions', m.predictions);
        worker.terminate();
        resolve();
      } else if (m.type === 'error') {
        report.checkpoint = { name, error: m.message };
        $('checkpoint-status').textContent = `could not use ${name}: ${m.message.split('\n')[0]}`;
        worker.terminate();
        reject(new Error(m.message));
      }
    };
    const req: WorkerRequest = { type: 'predict', bytes, name, clips: 12, seed: 7 };
    worker.postMessage(req, [bytes]);
  });
}

function wireCheckpointInput(): void {
  const input = $<HTMLInputElement>('checkpoint-file');
  input.addEventListener('change', () => {
    const file = input.files?.[0];
    if (file === undefined) return;
    void file.arrayBuffer().then((bytes) => predictCheckpoint(bytes, file.name)).catch(() => undefined);
  });
  // `npm run demo` serves the newest run's checkpoint: offer it with one click.
  void fetch('./checkpoint.json')
    .then((r) => (r.ok ? (r.json() as Promise<{ path: string | null }>) : { path: null }))
    .then(({ path }) => {
      if (path === null) return;
      const button = $<HTMLButtonElement>('checkpoint-newest');
      button.textContent = `use ${path}`;
      button.hidden = false;
      button.addEventListener('click', () => {
        void fetch('./checkpoint.safetensors').then((r) => r.arrayBuffer()).then((bytes) => predictCheckpoint(bytes, path)).catch(() => undefined);
      });
    })
    .catch(() => undefined);
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const t0 = performance.now();
  wireCheckpointInput();
  (document.getElementById('backend-select') as HTMLSelectElement).value = request;
  $('backend-select').addEventListener('change', (e) => {
    params.set('backend', (e.target as HTMLSelectElement).value);
    location.search = params.toString();
  });
  status('choosing a backend…');
  const sel = await selectBackend(request, { warn: false });
  $('backend').textContent = sel.backend;
  $('backend-reason').textContent = `(${sel.reason})`;
  report.backend = sel.backend;
  report.reason = sel.reason;

  const training = startTraining();
  training.catch(() => undefined); // reported by main's await
  status('loading digits…');
  const digits = await loadDigits();
  const model = videoRevVit(DEPTH);
  const p = model.init(key(0));
  const geo = model.geometry;
  $('model').innerHTML =
    `<table>${row(['video Rev-ViT', ''], 'th')}${row(['input', `[B, 1, ${spec.frames}, ${spec.size}, ${spec.size}]`])}` +
    `${row(['tokens', `${geo.patchDims.join('×')} = ${geo.numPatches}`])}${row(['width / heads', `${geo.embedDim} / ${geo.layers[0].heads}`])}` +
    `${row(['reversible blocks', DEPTH])}${row(['parameters', countParams(model).toLocaleString()])}${row(['digits loaded', digits.count])}</table>`;
  const demoBatch = makeBatch(digits, key(1), 4);
  drawClip(demoBatch.raw.subarray(0, spec.frames * spec.size * spec.size), demoBatch.y[0]);
  await frame();

  // 2. Forward and inverse
  status('forward and inverse…');
  const tf = performance.now();
  const probs = model.apply(p, demoBatch.x, key(2), { train: false });
  const probData = await probs.data();
  const tForward = performance.now() - tf;
  const td = performance.now();
  const drift = model.drift(p, demoBatch.x, key(2));
  const errors = await Promise.all(drift.map(async (e) => ({ block: e.block, x1: await e.x1.item(), x2: await e.x2.item() })));
  const tDrift = performance.now() - td;
  const predicted = Array.from({ length: 4 }, (_, b) => {
    const rowP = probData.subarray(b * 40, (b + 1) * 40);
    return rowP.indexOf(Math.max(...rowP));
  });
  $('forward').innerHTML = `<table>${row(['forward (4 clips)', ''], 'th')}${row(['time', fmtMs(tForward)])}` +
    `${row(['true classes', Array.from(demoBatch.y).join(', ')])}${row(['predicted (untrained)', predicted.join(', ')])}` +
    `${row(['forward + inverse per block', fmtMs(tDrift)])}</table>`;
  $('drift').innerHTML = row(['block', 'max |X1 rebuilt − X1|', 'max |X2 rebuilt − X2|'], 'th') +
    errors.map((e) => row([e.block, e.x1.toExponential(2), e.x2.toExponential(2)])).join('');
  report.drift = errors;
  await frame();

  // 4. Memory kept for backward, by depth and mode
  status('measuring retained memory…');
  const memory: { depth: number; reversible: number; store: number }[] = [];
  const memBatch = makeBatch(digits, key(5), 2);
  for (const depth of MEMORY_DEPTHS) {
    const m = depth === DEPTH ? model : videoRevVit(depth);
    const mp = depth === DEPTH ? p : m.init(key(0));
    const bytes: Record<string, number> = {};
    for (const mode of ['reversible', 'store'] as const) {
      const [loss, pullback] = R.vjp((q: typeof mp) => crossEntropy(m.apply(q, memBatch.x, key(6), { train: true, mode }), Array.from(memBatch.y)), mp);
      await loss.data();
      bytes[mode] = pullback.residualBytes;
    }
    memory.push({ depth, reversible: bytes.reversible, store: bytes.store });
    const top = Math.max(...memory.map((r) => r.store));
    const bar = (b: number, cls: string) => `<span class="bar ${cls}" style="width:${Math.max(2, (b / top) * 260).toFixed(0)}px"></span> ${fmtBytes(b)}`;
    $('memory').innerHTML = row(['depth', 'reversible', 'store', 'store / reversible'], 'th') +
      memory.map((r) => row([r.depth, bar(r.reversible, ''), bar(r.store, 'store'), (r.store / r.reversible).toFixed(1) + '×'])).join('');
    await frame();
  }
  report.memory = memory;
  status('waiting for the training in the worker…');
  await training;
  const url = params.get('checkpoint');
  if (url !== null) {
    status(`loading the checkpoint ${url}…`);
    const bytes = await (await fetch(url)).arrayBuffer();
    await predictCheckpoint(bytes, url.split('/').pop() ?? url);
  }
  status(`done in ${fmtMs(performance.now() - t0)}: page on ${sel.backend}, training on ${String((report.training as { backend?: string }).backend)}`, 'done');
}

main().catch((e: unknown) => {
  console.error(e);
  report.error = e instanceof Error ? `${e.message}\n${e.stack ?? ''}` : String(e);
  status(`error: ${e instanceof Error ? e.message : String(e)}`, 'error');
});
