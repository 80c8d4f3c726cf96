/**
 * The demo page (demo/index.html, `npm run demo`): a small video Rev-ViT built with buildModel, its
 * forward pass and derived inverse (reconstruction error per block), a few AdamW steps on Moving-MNIST
 * clips, and the memory the backward pass keeps in reversible vs store mode.
 *
 * URL parameters: backend=auto|webgpu|webgl2|webasm|cpu (default auto), steps (training steps, default 10),
 * batch (training batch, default 8), depths (for the memory table, default 2,4,8). Results are also left on window.revgradDemo for tests.
 */
import * as R from '../src/index.ts';
import type { Tensor } from '../src/index.ts';
import { selectBackend, type BackendRequest } from '../src/backend/select.ts';
import { areaResize, classLabel, DEFAULT_CLIP_SPEC, DIGIT_SIDE, DIRECTIONS, sampleMotion, trajectory } from '../src/data/moving-mnist.ts';
import { foldIn, key, randint, split, type Key } from '../src/random/index.ts';
import { crossEntropy } from '../src/train/loss.ts';
import { ADAMW_DEFAULTS, adamwInit, adamwUpdate } from '../src/train/optim.ts';

const params = new URLSearchParams(location.search);
const request = (params.get('backend') ?? 'auto') as BackendRequest;
const STEPS = Math.max(0, Number(params.get('steps') ?? '10') || 0);
const BATCH = Math.max(1, Number(params.get('batch') ?? '8') || 8);
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

// ---------------------------------------------------------------------------------------------
// Data: Moving-MNIST clips from a subset of the mnist package's digits (served as /digits.bin)

interface Digits {
  count: number;
  labels: Uint8Array;
  images: Float32Array;
}

async function loadDigits(): Promise<Digits> {
  const bytes = new Uint8Array(await (await fetch('./digits.bin')).arrayBuffer());
  const count = new DataView(bytes.buffer).getUint32(0, true);
  const labels = bytes.slice(4, 4 + count);
  const images = Float32Array.from(bytes.subarray(4 + count, 4 + count + count * 784), (v) => v / 255);
  return { count, labels, images };
}

/** A batch of clips [B, 1, T, S, S] with labels digit * 4 + direction (src/data/moving-mnist.ts's construction). */
function makeBatch(digits: Digits, k: Key, size: number): { x: Tensor; y: Int32Array; raw: Float32Array } {
  const clip = spec.frames * spec.size * spec.size;
  const raw = new Float32Array(size * clip);
  const y = new Int32Array(size);
  for (let b = 0; b < size; b++) {
    const [pick, motionKey] = split(foldIn(k, b));
    const index = randint(pick, 1, 0, digits.count)[0];
    const motion = sampleMotion(motionKey, spec);
    const digit = areaResize(digits.images.subarray(index * 784, (index + 1) * 784), DIGIT_SIDE, spec.digitSize);
    trajectory(motion, spec).forEach(([px, py], t) => {
      const base = b * clip + t * spec.size * spec.size;
      for (let r = 0; r < spec.digitSize; r++) {
        for (let c = 0; c < spec.digitSize; c++) {
          const at = base + (py + r) * spec.size + (px + c);
          raw[at] = Math.max(raw[at], digit[r * spec.digitSize + c]);
        }
      }
    });
    y[b] = classLabel(digits.labels[index], motion.direction);
  }
  return { x: R.tensor(raw, [size, 1, spec.frames, spec.size, spec.size]), y, raw };
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

async function main(): Promise<void> {
  const t0 = performance.now();
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

  status('loading digits…');
  const digits = await loadDigits();
  const model = videoRevVit(DEPTH);
  let p = model.init(key(0));
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

  // 3. Training
  const losses: number[] = [];
  const times: number[] = [];
  let state = adamwInit(p);
  const chart = $('loss-chart');
  const drawChart = () => {
    const w = 420, h = 180, pad = 28;
    const max = Math.max(...losses, 1e-6), min = Math.min(...losses, max - 1e-6);
    const xs = (i: number) => pad + (i / Math.max(1, STEPS - 1)) * (w - 2 * pad);
    const ys = (v: number) => h - pad - ((v - min) / (max - min || 1)) * (h - 2 * pad);
    chart.innerHTML = `<text x="${pad}" y="16" font-size="12">training loss (cross-entropy), ${losses.length}/${STEPS} steps</text>` +
      `<line x1="${pad}" y1="${h - pad}" x2="${w - pad}" y2="${h - pad}" stroke="#99a"/>` +
      `<text x="4" y="${ys(max) + 4}" font-size="11">${max.toFixed(2)}</text><text x="4" y="${ys(min) + 4}" font-size="11">${min.toFixed(2)}</text>` +
      `<polyline fill="none" stroke="#3b6fd6" stroke-width="2" points="${losses.map((v, i) => `${xs(i).toFixed(1)},${ys(v).toFixed(1)}`).join(' ')}"/>` +
      losses.map((v, i) => `<circle cx="${xs(i).toFixed(1)}" cy="${ys(v).toFixed(1)}" r="2.5" fill="#3b6fd6"/>`).join('');
  };
  for (let step = 0; step < STEPS; step++) {
    status(`training step ${step + 1}/${STEPS} (batch ${BATCH})…`);
    const ts = performance.now();
    const batch = makeBatch(digits, foldIn(key(3), step), BATCH);
    const labels = Array.from(batch.y);
    const [loss, grads] = R.valueAndGrad((q: typeof p) => crossEntropy(model.apply(q, batch.x, foldIn(key(4), step), { train: true, mode: 'reversible' }), labels))(p);
    const next = adamwUpdate(p, grads, state, { ...ADAMW_DEFAULTS, lr: 2e-3 }, model.noDecay);
    p = next.params;
    state = next.state;
    losses.push(await loss.item());
    await Promise.all(R.leaves(p).map((t: Tensor) => t.data()));
    times.push(performance.now() - ts);
    drawChart();
    $('train').innerHTML = row(['step', 'loss', 'time'], 'th') + losses.map((v, i) => row([i + 1, v.toFixed(4), fmtMs(times[i])])).join('');
    await frame();
  }
  report.losses = losses;
  report.stepMs = times;

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
  status(`done in ${fmtMs(performance.now() - t0)} on ${sel.backend}`, 'done');
}

main().catch((e: unknown) => {
  console.error(e);
  report.error = e instanceof Error ? `${e.message}\n${e.stack ?? ''}` : String(e);
  status(`error: ${e instanceof Error ? e.message : String(e)}`, 'error');
});
