/**
 * The compute side of `revgrad train`: the run (`runMovingMnist`) in a worker thread, so the main
 * thread stays idle and can take SIGINT/SIGTERM while a step computes. The main thread sets a shared
 * flag; every op here polls it (src/tensor/interrupt.ts), so the run stops between two ops, saves the
 * last completed step and returns. Records travel to the main thread as messages.
 *
 * `runTraining` picks the place: a worker on the synchronous backends (webasm, cpu), where a signal
 * handler could not run until the step ends; the main thread itself on webgpu, whose kernels are
 * asynchronous (the handler runs between them and sets the same flag).
 */
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { extname } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as E from 'fp-ts/lib/Either.js';
import { getBackend, type BackendName } from '../backend/backend.ts';
import { selectBackend } from '../backend/select.ts';
import { movingMnistBatches } from '../data/moving-mnist.ts';
import type { MViTConfig } from '../models/mvit/config.ts';
import { buildModel } from '../models/mvit/model.ts';
import { InternalError, RevgradError } from '../tensor/errors.ts';
import { InterruptedError, watchInterrupts } from '../tensor/interrupt.ts';
import { loadCheckpoint } from '../train/checkpoint.ts';
import type { LoopRecord, StopReason } from '../train/loop.ts';
import { CliError } from './common.ts';
import { runMovingMnist, type Monitoring, type TrainSettings } from './train-run.ts';
import type { ModelFactory } from '../train/parallel.ts';

/** Everything a run needs, as plain data (it crosses to the worker by structured clone). */
export interface TrainJob {
  readonly cfg: MViTConfig;
  /** What checkpoints store as the config (the model config, plus SOLVER/MIXUP for YAML runs). */
  readonly storedConfig: unknown;
  readonly settings: TrainSettings;
  readonly monitoring: Monitoring;
  readonly outDir: string;
  /** The checkpoint to continue from (already validated by the caller). */
  readonly resumePath: string | null;
  readonly onNonFinite: 'stop' | 'skip';
  /** false: every op eager (`--no-jit`); absent: the loop's default (the traced step off webgpu). */
  readonly jit?: boolean;
  /** Data-parallel worker threads for sharded settings, and how they build the model. */
  readonly workers: number;
  readonly modelFactory: ModelFactory;
}

export interface TrainOutcome {
  readonly step: number;
  readonly stopped?: StopReason;
  readonly lastCheckpoint?: number;
}

type Message =
  | { readonly type: 'record'; readonly record: LoopRecord }
  | { readonly type: 'done'; readonly outcome: TrainOutcome }
  | { readonly type: 'error'; readonly error: SerializedError };

/** An error as it crosses threads: typed ones keep their class's meaning, file-system ones their code. */
interface SerializedError {
  readonly name: string;
  readonly message: string;
  readonly typed: boolean;
  readonly problems?: readonly string[];
  readonly code?: string;
  readonly syscall?: string;
}

function serialize(e: unknown): SerializedError {
  const errno = (e instanceof Error ? e : {}) as NodeJS.ErrnoException;
  return {
    name: e instanceof Error ? e.name : 'Error',
    message: e instanceof Error ? e.message : String(e),
    typed: e instanceof RevgradError,
    ...(e instanceof CliError ? { problems: e.problems } : {}),
    ...(typeof errno.code === 'string' ? { code: errno.code } : {}),
    ...(typeof errno.syscall === 'string' ? { syscall: errno.syscall } : {}),
  };
}

/** Typed errors and file-system errors print as their message; anything else is a bug, reported as one. */
function deserialize(s: SerializedError): Error {
  if (s.problems !== undefined) return new CliError(s.problems);
  if (s.typed || (s.code !== undefined && s.syscall !== undefined)) return new WorkerError(s.name, s.message);
  return new InternalError('the training worker', `${s.name}: ${s.message}`);
}

/** The run itself, on whatever thread calls it. */
async function run(job: TrainJob, onRecord: (r: LoopRecord) => void): Promise<TrainOutcome> {
  let resume;
  if (job.resumePath !== null) {
    const ck = loadCheckpoint(job.resumePath);
    if (E.isLeft(ck)) throw new CliError(ck.left.problems);
    resume = ck.right;
  }
  try {
    const result = await runMovingMnist({
      model: buildModel(job.cfg),
      batches: movingMnistBatches(job.cfg),
      settings: job.settings,
      monitoring: job.monitoring,
      config: job.storedConfig,
      outDir: job.outDir,
      resume,
      onRecord,
      onNonFinite: job.onNonFinite,
      jit: job.jit,
      workers: job.workers,
      modelFactory: job.modelFactory,
    });
    return { step: result.step, stopped: result.stopped, lastCheckpoint: result.lastCheckpoint };
  } catch (e) {
    // Interrupted before the first step (building the model, initialising it): nothing to save.
    if (e instanceof InterruptedError) return { step: resume?.meta.step ?? 0, stopped: 'interrupted' };
    throw e;
  }
}

/** An error that crossed from the worker: printed like the original (typed: its message; else an internal error). */
class WorkerError extends RevgradError {
  constructor(name: string, message: string) {
    super(message);
    this.name = name;
  }
}

/**
 * This module as a worker. From TypeScript sources (`node --import tsx`), whose loader hooks a worker
 * does not inherit in Node 20, the worker registers tsx first; built JavaScript runs directly.
 */
function startWorker(data: unknown): Worker {
  const entry = new URL(`./train-worker${extname(fileURLToPath(import.meta.url))}`, import.meta.url);
  if (!entry.pathname.endsWith('.ts')) return new Worker(entry, { workerData: data });
  const tsx = import.meta.resolve('tsx/esm/api');
  const boot = `import(${JSON.stringify(tsx)}).then((m) => { m.register(); return import(${JSON.stringify(entry.href)}); })`;
  return new Worker(boot, { eval: true, workerData: data });
}

/**
 * Run `job` where a signal can stop it between two ops: `flag` (an interrupt flag, see
 * src/tensor/interrupt.ts) is set by the caller's signal handler. REVGRAD_TRAIN_WORKER=0 keeps the run
 * on the main thread (a signal then takes effect at the next step).
 */
export async function runTraining(job: TrainJob, flag: Int32Array, onRecord: (r: LoopRecord) => void): Promise<TrainOutcome> {
  const backend = getBackend();
  if (backend === 'webgpu' || process.env.REVGRAD_TRAIN_WORKER === '0') {
    watchInterrupts(flag);
    try {
      return await run(job, onRecord);
    } finally {
      watchInterrupts(null);
    }
  }
  const worker = startWorker({ job, flag: flag.buffer, backend });
  return new Promise<TrainOutcome>((resolve, reject) => {
    let settled = false;
    worker.on('message', (m: Message) => {
      if (m.type === 'record') onRecord(m.record);
      else if (m.type === 'done') {
        settled = true;
        resolve(m.outcome);
      } else {
        settled = true;
        reject(deserialize(m.error));
      }
    });
    worker.on('error', (e) => {
      settled = true;
      reject(e);
    });
    worker.on('exit', (code) => {
      if (!settled) reject(new CliError([`the training worker stopped unexpectedly (exit code ${code})`]));
    });
  });
}

// The worker's side.
if (!isMainThread && (workerData as { job?: TrainJob } | null)?.job !== undefined) {
  const { job, flag, backend } = workerData as { job: TrainJob; flag: SharedArrayBuffer; backend: BackendName };
  const post = (m: Message) => parentPort!.postMessage(m);
  (async () => {
    await selectBackend(backend);
    watchInterrupts(new Int32Array(flag));
    const outcome = await run(job, (record) => post({ type: 'record', record }));
    post({ type: 'done', outcome });
  })().catch((e: unknown) => post({ type: 'error', error: serialize(e) }));
}
