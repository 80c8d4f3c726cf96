/**
 * Cooperative interruption: every op polls a flag before it runs (one Atomics.load, a few ns), so a long
 * computation (a training step, a model's init) stops between two ops instead of at its end.
 *
 * A signal handler cannot run while JavaScript computes synchronously (webasm, cpu), so the flag is an
 * Int32Array over a SharedArrayBuffer that another thread sets: `revgrad train` computes in a worker
 * and its main thread, which is idle, sets the flag on SIGINT/SIGTERM. On asynchronous backends the
 * handler runs between kernels and may set the flag of the same thread.
 */
import { RevgradError } from './errors.ts';

/** An op was reached after an interrupt was requested; whoever started the computation decides what to keep. */
export class InterruptedError extends RevgradError {
  override name = 'InterruptedError';
  constructor() {
    super('interrupted: stopped between two ops on request (SIGINT/SIGTERM)');
  }
}

let flag: Int32Array | null = null;

/** A flag for `watchInterrupts`: pass its buffer to the thread that computes. */
export const newInterruptFlag = (): Int32Array => new Int32Array(new SharedArrayBuffer(4));

/** Make ops of this thread poll `f` (null: stop polling). */
export function watchInterrupts(f: Int32Array | null): void {
  flag = f;
}

/** Set a flag: every thread polling it throws InterruptedError at its next op. */
export function requestInterrupt(f: Int32Array): void {
  Atomics.store(f, 0, 1);
}

export const interruptRequested = (): boolean => flag !== null && Atomics.load(flag, 0) !== 0;

/** Throws InterruptedError when the watched flag is set. Called before every op. */
export function checkInterrupt(): void {
  if (flag !== null && Atomics.load(flag, 0) !== 0) throw new InterruptedError();
}
