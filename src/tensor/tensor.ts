/**
 * The Tensor value: immutable float32 data with a shape (rank 0..6).
 *
 * A tensor's buffer is either on the host (a Float32Array, on the synchronous webasm and cpu backends)
 * or pending (a Promise from an asynchronous webgpu kernel). Ops accept both, so the same program runs
 * on every backend; `await t.data()` always works and `t.dataSync()` works once the data is on the host.
 */
import { getBackend } from '../backend/backend.ts';
import { newBufferId, recordAlloc, recordUse, type Buffer } from '../backend/memory.ts';
import { ArgumentError, BackendError, ShapeError, TraceError } from './errors.ts';
import { checkShape, describe, fmt, sizeOf, type Shape } from './shape.ts';

/** A GPU-resident kernel result (gpu.js WebGPUBufferResult). */
export interface DeviceHandle {
  toArray(): Promise<unknown>;
  delete(): void;
}

/** GPU buffers are released when their tensors are garbage-collected. */
const deviceBuffers =
  typeof FinalizationRegistry === 'undefined'
    ? null
    : new FinalizationRegistry<Promise<DeviceHandle>>((handle) => {
        handle.then((h) => h.delete(), () => undefined);
      });

/** A value being recorded by a jit trace: it has no data, only its place in the program. */
export interface TraceSlot {
  readonly id: number;
}

export type StorageData =
  | Float32Array
  | Promise<Float32Array>
  | { readonly device: Promise<DeviceHandle> }
  | { readonly slot: TraceSlot };

export class Storage implements Buffer {
  readonly id = newBufferId();
  readonly bytes: number;
  host: Float32Array | null;
  pending: Promise<Float32Array> | null;
  /** webgpu: the result as a GPU buffer (a gpu.js pipeline handle), read back only when asked for. */
  readonly device: Promise<DeviceHandle> | null;
  /** Under a jit trace: the abstract value this stands for (no data, no memory). */
  readonly slot: TraceSlot | null;

  constructor(size: number, data: StorageData) {
    this.bytes = size * 4;
    this.host = null;
    this.pending = null;
    this.device = null;
    this.slot = null;
    if (data instanceof Float32Array) {
      this.host = data;
    } else if (data instanceof Promise) {
      this.pending = this.settle(data);
    } else if ('device' in data) {
      this.device = data.device;
      // A failure surfaces when the data is read; a tensor nobody reads must not crash the process.
      this.device.catch(() => undefined);
      deviceBuffers?.register(this, this.device);
    } else {
      // A traced value holds no memory: nothing to account.
      this.slot = data.slot;
      return;
    }
    recordAlloc(this);
  }

  private settle(data: Promise<Float32Array>): Promise<Float32Array> {
    const p = data.then((d) => {
      this.host = d;
      this.pending = null;
      return d;
    });
    // A failure surfaces when the data is read; a tensor nobody reads must not crash the process.
    p.catch(() => undefined);
    return p;
  }

  /** The data (or its promise), logging the read for memory accounting. */
  read(): Float32Array | Promise<Float32Array> {
    recordUse(this);
    return this.peek();
  }

  /** The data (or its promise) without logging a read; a device buffer is copied back on first use. */
  peek(): Float32Array | Promise<Float32Array> {
    if (this.host !== null) return this.host;
    if (this.slot !== null) throw tracedRead(this.bytes / 4);
    if (this.pending === null && this.device !== null) {
      this.pending = this.settle(
        this.device.then(async (h) => {
          const data = await h.toArray();
          return data instanceof Float32Array ? data : Float32Array.from(data as ArrayLike<number>);
        }),
      );
    }
    return this.pending!;
  }

  /** Log a read that happened through `peek`. */
  markUse(): void {
    recordUse(this);
  }
}

/** Reading a traced value's data: what jit cannot do (the data does not exist while tracing). */
function tracedRead(size: number, shape?: Shape): TraceError {
  const what = shape === undefined ? `${size} values` : `shape ${fmt(shape)}`;
  return new TraceError(`the data of a traced value (${what}) was read on the host while tracing; a jitted function cannot depend on tensor data through host code (branching on values, .data()/.dataSync()/.item(), host math on them). Read it outside the jitted function, or express the computation with tensor ops`);
}

let nextTensorId = 1;

export class Tensor {
  /** Unique per tensor value (views of one buffer have different ids). */
  readonly id = nextTensorId++;
  readonly shape: Shape;
  readonly size: number;
  /** @internal the buffer; shared by views */
  readonly storage: Storage;

  /** @internal use `tensor`, `zeros`, ... to create tensors */
  constructor(storage: Storage, shape: Shape) {
    this.storage = storage;
    this.shape = Object.freeze([...shape]);
    this.size = sizeOf(shape);
  }

  get rank(): number {
    return this.shape.length;
  }

  /** A copy of the data. Throws while the data is still on an asynchronous device. */
  dataSync(): Float32Array {
    const host = this.storage.host;
    if (this.storage.slot !== null) throw tracedRead(this.size, this.shape);
    if (host === null) {
      throw new BackendError(`dataSync: the data of this ${fmt(this.shape)} tensor is still pending on the asynchronous '${getBackend()}' backend; use 'await t.data()'`);
    }
    return host.slice(0, this.size);
  }

  /** A copy of the data, on every backend. */
  async data(): Promise<Float32Array> {
    const host = await this.storage.read();
    return host.slice(0, this.size);
  }

  /** The single value of a size-1 tensor. */
  async item(): Promise<number> {
    if (this.size !== 1) throw new ShapeError('item', `expected a tensor with one element, got shape ${fmt(this.shape)}`);
    return (await this.data())[0];
  }

  itemSync(): number {
    if (this.size !== 1) throw new ShapeError('itemSync', `expected a tensor with one element, got shape ${fmt(this.shape)}`);
    return this.dataSync()[0];
  }

  toString(): string {
    const host = this.storage.host;
    if (this.storage.slot !== null) return `Tensor(${fmt(this.shape)}, traced)`;
    if (host === null) return `Tensor(${fmt(this.shape)}, pending)`;
    const shown = Array.from(host.subarray(0, Math.min(this.size, 8)), (v) => +v.toPrecision(5));
    return `Tensor(${fmt(this.shape)}, [${shown.join(', ')}${this.size > 8 ? ', ...' : ''}])`;
  }
}

/**
 * The buffer when it is on the host already (null while pending on a device or traced by jit). For
 * host executors (jit's CPU lowering) and optional validation; it never waits, so code that must work on
 * every backend reads with `await t.data()`.
 */
export const hostData = (t: Tensor): Float32Array | null => t.storage.host;

export function isTensor(v: unknown): v is Tensor {
  return v instanceof Tensor;
}

export function assertTensor(op: string, v: unknown, what = 'argument'): Tensor {
  if (!(v instanceof Tensor)) throw new ArgumentError(op, `${what} must be a Tensor, got ${describe(v)}`);
  return v;
}

/** A tensor over freshly computed host data, a pending result, a GPU-resident one, or a traced value. @internal */
export function fromBuffer(data: StorageData, shape: Shape): Tensor {
  return new Tensor(new Storage(sizeOf(shape), data), shape);
}

/** A tensor sharing `t`'s buffer with another shape of the same size. @internal */
export function view(t: Tensor, shape: Shape): Tensor {
  return new Tensor(t.storage, shape);
}

// ---------------------------------------------------------------------------------------------
// Creation

type NestedNumbers = number | readonly NestedNumbers[];

function flattenNested(op: string, values: NestedNumbers, out: number[]): void {
  if (typeof values === 'number') {
    out.push(values);
  } else if (Array.isArray(values)) {
    for (const v of values) flattenNested(op, v, out);
  } else {
    throw new ArgumentError(op, `expected numbers or nested arrays of numbers, got ${describe(values)}`);
  }
}

function inferShape(values: NestedNumbers): number[] {
  const shape: number[] = [];
  let v: NestedNumbers = values;
  while (Array.isArray(v)) {
    shape.push(v.length);
    v = v[0];
  }
  checkRagged(values, shape, 0);
  return shape;
}

/** Every nested array at depth d must have length shape[d] (and numbers only at the bottom). */
function checkRagged(v: NestedNumbers, shape: readonly number[], depth: number): void {
  if (depth === shape.length) {
    if (typeof v !== 'number') throw new ShapeError('tensor', `nested arrays are ragged: expected a number at depth ${depth} of shape ${fmt(shape)}`);
    return;
  }
  if (!Array.isArray(v) || v.length !== shape[depth]) {
    throw new ShapeError('tensor', `nested arrays are ragged: expected length ${shape[depth]} at depth ${depth} (shape ${fmt(shape)} from the first elements)`);
  }
  for (const c of v) checkRagged(c, shape, depth + 1);
}

/**
 * A tensor from data and a shape. `data` is a Float32Array or any array-like of numbers (copied),
 * or nested arrays (shape inferred when omitted). A scalar number gives a rank-0 tensor.
 */
export function tensor(data: ArrayLike<number> | NestedNumbers, shape?: Shape): Tensor {
  const op = 'tensor';
  let flat: Float32Array;
  let inferred: number[];
  if (typeof data === 'number') {
    flat = Float32Array.of(data);
    inferred = [];
  } else if (ArrayBuffer.isView(data) && !(data instanceof DataView)) {
    flat = Float32Array.from(data as ArrayLike<number>);
    inferred = [flat.length];
  } else if (Array.isArray(data)) {
    const list: number[] = [];
    flattenNested(op, data as NestedNumbers, list);
    flat = Float32Array.from(list);
    inferred = shape === undefined ? inferShape(data as NestedNumbers) : [flat.length];
  } else {
    throw new ArgumentError(op, `data must be a number, an array or a typed array, got ${describe(data)}`);
  }
  const s = shape === undefined ? inferred : checkShape(op, shape);
  if (sizeOf(s) !== flat.length) {
    throw new ShapeError(op, `shape ${fmt(s)} needs ${sizeOf(s)} values but the data has ${flat.length}`);
  }
  return fromBuffer(flat, s);
}

export function full(shape: Shape, value: number): Tensor {
  checkShape('full', shape);
  if (typeof value !== 'number') throw new ArgumentError('full', `value must be a number, got ${describe(value)}`);
  return fromBuffer(new Float32Array(sizeOf(shape)).fill(value), shape);
}

export const zeros = (shape: Shape): Tensor => full(shape, 0);
export const ones = (shape: Shape): Tensor => full(shape, 1);
export const zerosLike = (t: Tensor): Tensor => zeros(t.shape);
export const onesLike = (t: Tensor): Tensor => ones(t.shape);
export const scalar = (value: number): Tensor => tensor(value);

/** [start, stop) with `step`, like numpy.arange. */
export function arange(start: number, stop?: number, step = 1): Tensor {
  if (stop === undefined) [start, stop] = [0, start];
  if (!Number.isFinite(start) || !Number.isFinite(stop)) throw new ArgumentError('arange', `start and stop must be finite numbers, got ${start} and ${stop}`);
  if (step === 0 || !Number.isFinite(step)) throw new ArgumentError('arange', `step must be a finite non-zero number, got ${step}`);
  const n = Math.max(0, Math.ceil((stop - start) / step));
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = start + i * step;
  return fromBuffer(out, [n]);
}

