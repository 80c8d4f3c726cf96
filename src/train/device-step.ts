/**
 * A model's AdamW training step compiled for the webgpu device once and replayed (src/tensor/plan.ts):
 * forward, backward and the optimizer run as one command encoder and one submission per step, the
 * parameters and both moments stay on the device, the batch is uploaded once per step and only the loss
 * and the logits (for accuracy) come back, in one readback.
 *
 *     const trainer = await DeviceTrainer.create(model, params, { batch: 8, mode: 'reversible' });
 *     for (...) { const { loss, logits } = await trainer.step(x, labels, { lr }); }
 *     const trained = await trainer.params();     // read back once, e.g. for a checkpoint
 *
 * The step is the same arithmetic as `valueAndGrad` + `crossEntropy` (with label smoothing) +
 * `clipGradNorm` + `adamwUpdate` eagerly, as the training loop does (the tests compare them): the per-step numbers of AdamW (the learning rate, the bias corrections) are inputs
 * of the program, everything else is fixed when it is traced. Step t's key is foldIn(key, t): dropout
 * and drop-path masks are drawn on the host from it (the same bits as eager mode) and uploaded.
 */
import { flattenWithPaths, unflattenLike } from '../autodiff/pytree.ts';
import { valueAndGrad } from '../autodiff/tape.ts';
import type { MViTModel, Params } from '../models/mvit/model.ts';
import { foldIn, key as makeKey, type Key } from '../random/index.ts';
import { keyBits } from '../random/traced.ts';
import { logSoftmax } from '../tensor/composite.ts';
import { elementwise } from '../tensor/elementwise.ts';
import { ArgumentError } from '../tensor/errors.ts';
import { mul, neg, sum } from '../tensor/ops.ts';
import type { TunedProduct } from '../backend/matmul-tune.ts';
import { DeviceProgram, type PlanMemory, type Program as PlanProgram } from '../tensor/plan.ts';
import { jit } from '../jit/index.ts';
import { programFromTrace, type FromTraceOptions, type HostPrefix } from '../jit/webgpu.ts';
import { scalar, tensor, zeros, type Tensor } from '../tensor/tensor.ts';
import type { Program } from '../tensor/trace.ts';
import { ADAMW_DEFAULTS, clipGradNorm, type AdamWHyper } from './optim.ts';
import { sizeOf } from '../tensor/shape.ts';

export interface DeviceTrainerOptions {
  /** Examples per step (every step has this batch). */
  readonly batch: number;
  /** Reversible backward (default) or stored activations. */
  readonly mode?: 'reversible' | 'store';
  /** AdamW's betas, eps and weight decay (the learning rate is given per step). */
  readonly hyper?: Partial<AdamWHyper>;
  /** Step t draws its dropout and drop-path masks with foldIn(key, t) (default key(0)). */
  readonly key?: Key;
  /** Cross-entropy label smoothing (default 0), as `crossEntropy`'s. */
  readonly labelSmoothing?: number;
  /** Clip the global gradient L2 norm to this (default: no clipping), as `clipGradNorm`. */
  readonly clip?: number;
  /** Time the matrix products' tilings on the device when compiling (`CompileOptions.tune`; default: on hardware adapters). */
  readonly tune?: boolean;
}

export interface StepResult {
  readonly loss: number;
  /** [batch, classes] row-major. */
  readonly logits: Float32Array;
}

/** The adamwUpdate arithmetic, per tensor: the same expressions (src/train/optim.ts). */
const ADAMW_M = 'x0 + (x1 - x0) * x2';
const ADAMW_V = 'x0 * x2 + x1 * x1 * x3';
const ADAMW_P = 'x0 * x3 - x4 * x1 / (Math.sqrt(x2) / x5 + x6)';

export class DeviceTrainer {
  private stepsTaken = 0;

  private constructor(
    private readonly template: Params,
    private readonly names: readonly string[],
    private readonly program: DeviceProgram,
    /** The host prefix: random draws of the step from its inputs (empty without dropout). */
    private readonly draw: (inputs: readonly Float32Array[]) => Float32Array[],
    private readonly baseKey: Key,
    readonly batch: number,
    readonly classes: number,
    readonly inputShape: readonly number[],
    private readonly hyper: AdamWHyper,
    private readonly labelSmoothing: number,
  ) {}

  /** Trace the step (jit: nothing is computed on the host) and compile it for the device. */
  static async create(model: MViTModel, params: Params, options: DeviceTrainerOptions): Promise<DeviceTrainer> {
    const t = await traceTrainStep(model, params, options);
    const initial = await Promise.all(t.state.map((s) => s.data()));
    const program = await DeviceProgram.compile(t.planned, initial, { tune: options.tune });
    const draw = (data: readonly Float32Array[]) => t.host.compute(new Map(t.runInputs.map((pos, j) => [t.traced.inputs[pos], data[j]])));
    return new DeviceTrainer(params, t.names, program, draw, t.key, t.batch, t.classes, t.inputShape, t.hyper, t.labelSmoothing);
  }

  /**
   * One AdamW step on a batch: `x` is the input [batch, C, (T,) S, S] row-major, `labels` the classes.
   * `lr` (default the hyper-parameters') is this step's learning rate (a schedule sets it).
   */
  async step(x: Float32Array, labels: ArrayLike<number>, options: { lr?: number } = {}): Promise<StepResult> {
    const op = 'DeviceTrainer.step';
    const size = sizeOf(this.inputShape);
    if (x.length !== size) throw new ArgumentError(op, `x has ${x.length} values, the compiled step takes [${this.inputShape.join(', ')}] (${size})`);
    if (labels.length !== this.batch) throw new ArgumentError(op, `${labels.length} labels for a batch of ${this.batch}`);
    const target = new Float32Array(this.batch * this.classes).fill(this.labelSmoothing / this.classes);
    for (let i = 0; i < this.batch; i++) {
      const y = labels[i];
      if (!Number.isInteger(y) || y < 0 || y >= this.classes) throw new ArgumentError(op, `label ${i} is ${y}, expected an integer in [0, ${this.classes})`);
      target[i * this.classes + y] += 1 - this.labelSmoothing;
    }
    const lr = options.lr ?? this.hyper.lr;
    const t = this.stepsTaken + 1;
    const bc1 = 1 - this.hyper.beta1 ** t;
    const bc2 = Math.sqrt(1 - this.hyper.beta2 ** t);
    const inputs = [x, target, Float32Array.of(lr / bc1), Float32Array.of(bc2), Float32Array.of(1 - lr * this.hyper.weightDecay), keyBits(foldIn(this.baseKey, t))];
    const [loss, logits] = await this.program.run([...inputs, ...this.draw(inputs)]);
    this.stepsTaken = t;
    return { loss: loss[0], logits };
  }

  /** Steps taken (AdamW's step counter). */
  get steps(): number {
    return this.stepsTaken;
  }

  /** The current parameters, read back from the device (one readback per tensor). */
  async params(): Promise<Params> {
    const ts = await Promise.all(this.names.map(async (_, i) => {
      const shape = flattenWithPaths(this.template)[i][1].shape;
      return tensor(await this.program.readState(i), shape);
    }));
    return unflattenLike(this.template, ts);
  }

  /** Replace the parameters (a checkpoint) and restart AdamW (moments zeroed, step 0). */
  loadParams(params: Params): Promise<void> {
    const flat = flattenWithPaths(params);
    if (flat.length !== this.names.length || flat.some(([name], i) => name !== this.names[i])) {
      throw new ArgumentError('DeviceTrainer.loadParams', 'the parameters do not match the compiled model (names differ)');
    }
    return (async () => {
      const n = this.names.length;
      const data = await Promise.all(flat.map(([, t]) => t.data()));
      data.forEach((d, i) => {
        this.program.writeState(i, d);
        this.program.writeState(n + i, new Float32Array(d.length));
        this.program.writeState(2 * n + i, new Float32Array(d.length));
      });
      this.stepsTaken = 0;
    })();
  }

  /** Dispatches per step, device bytes held (buffers of the plan) and what they hold, the products tuned when compiling. */
  get stats(): { dispatches: number; deviceBytes: number; gpujsOps: ReadonlyMap<string, number>; memory: PlanMemory; tuned: readonly TunedProduct[] } {
    const n = this.names.length;
    const memory = this.program.memory((i) => (i < n ? 'parameters' : 'AdamW moments'));
    return { dispatches: this.program.dispatches, deviceBytes: this.program.deviceBytes, gpujsOps: this.program.gpujsOps, memory, tuned: this.program.tuned };
  }

  /**
   * Device time of one step by kernel, for benchmarks (DevicePlan.profile: each kernel's dispatches
   * replayed together). Spends the trainer: its parameters are garbage afterwards and step() raises.
   */
  profile(repeats?: number): Promise<{ name: string; dispatches: number; ms: number }[]> {
    return this.program.profile(repeats);
  }

  destroy(): void {
    this.program.destroy();
  }
}

/** A model's AdamW step traced and planned for the device, not yet compiled (DeviceTrainer.create compiles it). */
export interface TracedTrainStep {
  /** The jit program of the step. */
  readonly traced: Program;
  /** The plan program: state = parameters, then AdamW's first moments, then its second moments (n each). */
  readonly planned: PlanProgram;
  readonly host: HostPrefix;
  readonly runInputs: readonly number[];
  /** The initial state tensors (parameters, zero moments), in the plan's state order. */
  readonly state: readonly Tensor[];
  readonly names: readonly string[];
  readonly key: Key;
  readonly batch: number;
  readonly classes: number;
  readonly inputShape: readonly number[];
  readonly hyper: AdamWHyper;
  readonly labelSmoothing: number;
}

/** Trace a model's AdamW step (abstract tensors: nothing is computed) and turn it into a plan program. */
export async function traceTrainStep(model: MViTModel, params: Params, options: DeviceTrainerOptions, plan: Pick<FromTraceOptions, 'maxBindings'> = {}): Promise<TracedTrainStep> {
  const cfg = model.config;
  const op = 'DeviceTrainer';
  if (!Number.isInteger(options.batch) || options.batch < 1) throw new ArgumentError(op, `batch must be a positive integer, got ${options.batch}`);
  const hyper = { ...ADAMW_DEFAULTS, ...options.hyper };
  const labelSmoothing = options.labelSmoothing ?? 0;
  if (!(labelSmoothing >= 0 && labelSmoothing < 1)) throw new ArgumentError(op, `label smoothing must be in [0, 1), got ${labelSmoothing}`);
  const clip = options.clip ?? Infinity;
  if (!(clip > 0)) throw new ArgumentError(op, `clip must be a positive number (or omitted), got ${clip}`);
  const mode = options.mode ?? 'reversible';
  const batch = options.batch;
  const classes = cfg.MODEL.NUM_CLASSES;
  const c = cfg.DATA.INPUT_CHANNEL_NUM[0];
  const s = cfg.DATA.TRAIN_CROP_SIZE;
  const inputShape = cfg.MVIT.PATCH_2D ? [batch, c, s, s] : [batch, c, cfg.DATA.NUM_FRAMES, s, s];
  const named = flattenWithPaths(params);
  const n = named.length;
  const k = options.key ?? makeKey(0);
  const oneMinusB1 = scalar(1 - hyper.beta1);
  const b2 = scalar(hyper.beta2);
  const oneMinusB2 = scalar(1 - hyper.beta2);
  const eps = scalar(hyper.eps);
  const keep = scalar(1);
  const decays = named.map(([name]) => hyper.weightDecay !== 0 && !model.noDecay(name));
  const step = (state: Tensor[], inputs: Tensor[], stepKey: Key): Tensor[] => {
    const [x, target, stepSize, bc2, decay] = inputs;
    const p = unflattenLike(params, state.slice(0, n));
    let logits: Tensor | null = null;
    const [l, grads] = valueAndGrad((q: Params) => {
      logits = model.apply(q, x, stepKey, { train: true, mode });
      // crossEntropy written on a target tensor (the smoothed one-hot labels), so the labels are an input.
      return mul(neg(sum(mul(logSoftmax(logits, -1), target))), 1 / batch);
    })(p);
    const g = flattenWithPaths(clipGradNorm(grads, clip).grads).map(([, t]) => t);
    const m = g.map((gi, i) => elementwise('adamw-m', ADAMW_M, [state[n + i], gi, oneMinusB1]));
    const v = g.map((gi, i) => elementwise('adamw-v', ADAMW_V, [state[2 * n + i], gi, b2, oneMinusB2]));
    const next = state.slice(0, n).map((pi, i) => elementwise('adamw-p', ADAMW_P, [pi, m[i], v[i], decays[i] ? decay : keep, stepSize, bc2, eps]));
    return [l, logits!, ...next, ...m, ...v];
  };
  const placeholders = [zeros(inputShape), zeros([batch, classes]), scalar(0), scalar(1), scalar(1)];
  const state = [...named.map(([, t]) => t), ...named.map(([, t]) => zeros(t.shape)), ...named.map(([, t]) => zeros(t.shape))];
  // Trace the step (jit: abstract tensors, nothing computed); state input i is replaced by output 2 + i.
  // The step's key is an input: dropout and drop-path masks are drawn per step (on the host, uploaded).
  const traced = jit(step, { lowering: 'interpret' }).program(state, placeholders, k);
  const { program: planned, host, runInputs } = await programFromTrace(traced, {
    state: state.map((_, i) => ({ input: i, output: 2 + i })),
    reads: [0, 1],
    label: `${mode} AdamW step, batch ${batch}`,
    ...plan,
  });
  return { traced, planned, host, runInputs, state, names: named.map(([name]) => name), key: k, batch, classes, inputShape, hyper, labelSmoothing };
}
