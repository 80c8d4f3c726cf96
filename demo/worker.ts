/**
 * The demo's Web Worker (dist/demo/worker.js): training and predictions off the page's thread.
 *
 *  - 'train': `npm start`'s model (REV_MVIT_MNIST) and recipe (AdamW, cosine schedule with warmup,
 *    label smoothing 0.1, gradient clipping at 1, reversible backward) on Moving-MNIST clips, on the
 *    best backend here: on WebGPU the whole step is compiled once into a device plan (DeviceTrainer: one
 *    submission and one readback per step); elsewhere the eager step on webasm. Every step posts its
 *    loss and batch accuracy; at the end, predictions of the trained model on held-out clips.
 *  - 'predict': a checkpoint written by `npm start` (or any revgrad training checkpoint: safetensors
 *    with the model config in its metadata) and its predictions on clips.
 */
import * as E from 'fp-ts/lib/Either.js';
import { flattenWithPaths } from '../src/autodiff/pytree.ts';
import { valueAndGrad } from '../src/autodiff/tape.ts';
import { setBackend } from '../src/backend/backend.ts';
import { selectBackend, type BackendRequest } from '../src/backend/select.ts';
import { decodeSafetensors } from '../src/io/safetensors.ts';
import { formatProblems, parseConfig, type MViTConfig } from '../src/models/mvit/config.ts';
import { buildModel, type MViTModel, type Params } from '../src/models/mvit/model.ts';
import { PRESETS } from '../src/models/mvit/presets.ts';
import { paramsFromNamed } from '../src/models/mvit/weights.ts';
import { foldIn, key, split } from '../src/random/index.ts';
import { tensor, type Tensor } from '../src/tensor/tensor.ts';
import { DeviceTrainer } from '../src/train/device-step.ts';
import { argmaxRows, crossEntropy } from '../src/train/loss.ts';
import { ADAMW_DEFAULTS, adamwInit, adamwUpdate, clipGradNorm } from '../src/train/optim.ts';
import { learningRate, scheduleDefaults } from '../src/train/schedule.ts';
import { clipSpecFor, loadDigits, makeClips, type Digits } from './data.ts';

export type WorkerRequest =
  | { readonly type: 'train'; readonly backend: BackendRequest; readonly steps: number; readonly batch: number; readonly lr: number; readonly seed: number }
  | { readonly type: 'predict'; readonly bytes: ArrayBuffer; readonly name: string; readonly clips: number; readonly seed: number };

export interface Prediction {
  /** [T, S, S] frames of the first channel. */
  readonly frames: Float32Array;
  readonly size: number;
  readonly label: number;
  readonly predicted: number;
  readonly confidence: number;
}

export type WorkerReply =
  | { readonly type: 'status'; readonly text: string }
  | { readonly type: 'backend'; readonly backend: string; readonly reason: string; readonly engine: 'device plan' | 'eager'; readonly model: string; readonly params: number }
  | { readonly type: 'step'; readonly step: number; readonly loss: number; readonly accuracy: number; readonly ms: number; readonly lr: number }
  | { readonly type: 'trained'; readonly steps: number; readonly seconds: number; readonly predictions: readonly Prediction[]; readonly accuracy: number }
  | { readonly type: 'predictions'; readonly name: string; readonly model: string; readonly step: number | null; readonly predictions: readonly Prediction[]; readonly accuracy: number }
  | { readonly type: 'error'; readonly message: string };

interface WorkerScope {
  postMessage(message: WorkerReply): void;
  onmessage: ((e: MessageEvent<WorkerRequest>) => void) | null;
}
const scope = globalThis as unknown as WorkerScope;
const post = (m: WorkerReply) => scope.postMessage(m);
/** Let the worker's event loop run (a message can arrive between steps). */
const yieldToEvents = () => new Promise((r) => setTimeout(r, 0));

let digitsPromise: Promise<Digits> | null = null;
const digits = () => (digitsPromise ??= loadDigits());

const countParams = (model: MViTModel) => model.specs.reduce((n, s) => n + s.shape.reduce((a, b) => a * b, 1), 0);

/** The model input [B, C, T, S, S] ([B, C, S, S] for 2-D patches) from single-channel clips. */
function inputFor(cfg: MViTConfig, x: Float32Array, batch: number): Float32Array {
  const channels = cfg.DATA.INPUT_CHANNEL_NUM[0] ?? 1;
  if (channels === 1) return x;
  const per = x.length / batch;
  const out = new Float32Array(batch * channels * per);
  for (let i = 0; i < batch; i++) for (let c = 0; c < channels; c++) out.set(x.subarray(i * per, (i + 1) * per), (i * channels + c) * per);
  return out;
}

const shapeFor = (cfg: MViTConfig, batch: number) => {
  const c = cfg.DATA.INPUT_CHANNEL_NUM[0] ?? 1;
  const s = cfg.DATA.TRAIN_CROP_SIZE;
  return cfg.MVIT.PATCH_2D ? [batch, c, s, s] : [batch, c, cfg.DATA.NUM_FRAMES, s, s];
};

const specFor = (cfg: MViTConfig) => clipSpecFor(cfg.MVIT.PATCH_2D ? 1 : cfg.DATA.NUM_FRAMES, cfg.DATA.TRAIN_CROP_SIZE);

/** Predictions of `params` on `n` clips drawn with key k (eval mode, webasm). */
async function predict(model: MViTModel, params: Params, n: number, seed: number): Promise<{ predictions: Prediction[]; accuracy: number }> {
  const cfg = model.config;
  const spec = specFor(cfg);
  const clips = makeClips(await digits(), foldIn(key(seed), 0x5eed), n, spec);
  setBackend('webasm');
  const probs = await model.apply(params, tensor(inputFor(cfg, clips.x, n), shapeFor(cfg, n)), key(seed), { train: false }).data();
  const K = cfg.MODEL.NUM_CLASSES;
  const predicted = argmaxRows(probs, n, K);
  const per = spec.frames * spec.size * spec.size;
  const predictions = Array.from({ length: n }, (_, i) => ({
    frames: clips.x.slice(i * per, (i + 1) * per),
    size: spec.size,
    label: clips.y[i],
    predicted: predicted[i],
    confidence: probs[i * K + predicted[i]],
  }));
  return { predictions, accuracy: predictions.filter((p) => p.label === p.predicted).length / n };
}

async function train(req: Extract<WorkerRequest, { type: 'train' }>): Promise<void> {
  const t0 = performance.now();
  post({ type: 'status', text: 'choosing a backend…' });
  const sel = await selectBackend(req.backend, { warn: false });
  const parsed = parseConfig(PRESETS.REV_MVIT_MNIST);
  if (E.isLeft(parsed)) throw new Error(formatProblems(parsed.left));
  const cfg = parsed.right;
  const model = buildModel(cfg);
  const [kInit, kData, kStep] = split(key(req.seed), 3);
  let params = model.init(kInit);
  const spec = specFor(cfg);
  const K = cfg.MODEL.NUM_CLASSES;
  const schedule = { ...scheduleDefaults(req.lr, req.steps), warmupSteps: Math.min(50, Math.floor(req.steps / 5)) };
  const hyper = { ...ADAMW_DEFAULTS, lr: req.lr };
  const recipe = { labelSmoothing: 0.1, clip: 1.0 };
  const data = await digits();
  let trainer: DeviceTrainer | null = null;
  if (sel.backend === 'webgpu') {
    post({ type: 'status', text: 'compiling the training step for the GPU (on a hardware GPU, timing the tilings of its matrix products once)…' });
    trainer = await DeviceTrainer.create(model, params, { batch: req.batch, mode: 'reversible', hyper, key: kStep, ...recipe });
  }
  post({ type: 'backend', backend: sel.backend, reason: sel.reason, engine: trainer !== null ? 'device plan' : 'eager', model: 'REV_MVIT_MNIST (npm start\'s model)', params: countParams(model) });
  let state = adamwInit(params);
  for (let step = 0; step < req.steps; step++) {
    const ts = performance.now();
    const batch = makeClips(data, foldIn(kData, step), req.batch, spec);
    const labels = Array.from(batch.y);
    const lr = learningRate(schedule, step);
    let loss: number;
    let logits: Float32Array;
    if (trainer !== null) {
      const r = await trainer.step(inputFor(cfg, batch.x, req.batch), labels, { lr });
      loss = r.loss;
      logits = r.logits;
    } else {
      const x = tensor(inputFor(cfg, batch.x, req.batch), shapeFor(cfg, req.batch));
      let out: Tensor | null = null;
      const [l, grads] = valueAndGrad((p: Params) => {
        out = model.apply(p, x, kStep, { train: true, mode: 'reversible' });
        return crossEntropy(out, labels, recipe.labelSmoothing);
      })(params);
      const next = adamwUpdate(params, clipGradNorm(grads, recipe.clip).grads, state, { ...hyper, lr }, model.noDecay);
      params = next.params;
      state = next.state;
      loss = await l.item();
      logits = await out!.data();
    }
    const pred = argmaxRows(logits, req.batch, K);
    const accuracy = labels.filter((y, i) => pred[i] === y).length / req.batch;
    post({ type: 'step', step: step + 1, loss, accuracy, ms: performance.now() - ts, lr });
    await yieldToEvents();
  }
  if (trainer !== null) {
    params = await trainer.params();
    trainer.destroy();
  }
  post({ type: 'status', text: 'predicting held-out clips with the trained model…' });
  const { predictions, accuracy } = await predict(model, params, 8, req.seed + 1);
  post({ type: 'trained', steps: req.steps, seconds: (performance.now() - t0) / 1000, predictions, accuracy });
}

async function predictCheckpoint(req: Extract<WorkerRequest, { type: 'predict' }>): Promise<void> {
  const file = decodeSafetensors(new Uint8Array(req.bytes), req.name);
  if (E.isLeft(file)) throw new Error(file.left.message);
  const meta = file.right.metadata;
  if (meta.config === undefined) throw new Error(`${req.name}: no model config in the metadata (a revgrad training checkpoint has one; was this written by 'npm start' / 'revgrad train'?)`);
  const parsed = parseConfig(JSON.parse(meta.config));
  if (E.isLeft(parsed)) throw new Error(`${req.name}: its config is not valid: ${formatProblems(parsed.left)}`);
  const model = buildModel(parsed.right);
  const params = paramsFromNamed(model, file.right.tensors, { allowExtra: true });
  if (E.isLeft(params)) throw new Error(`${req.name}: ${params.left.slice(0, 5).map((p) => `${p.name}: ${p.message}`).join('; ')}`);
  const { predictions, accuracy } = await predict(model, params.right, req.clips, req.seed);
  const step = meta.step === undefined ? null : Number(meta.step);
  post({ type: 'predictions', name: req.name, model: `${flattenWithPaths(params.right).length} tensors, ${countParams(model).toLocaleString()} parameters`, step, predictions, accuracy });
}

scope.onmessage = (e) => {
  const req = e.data;
  const job = req.type === 'train' ? train(req) : predictCheckpoint(req);
  job.catch((err: unknown) => post({ type: 'error', message: err instanceof Error ? `${err.message}\n${err.stack ?? ''}` : String(err) }));
};
