/**
 * The one hook between the tensor layer and autodiff: every primitive op reports what it did.
 * The tensor layer knows nothing of gradients; autodiff installs an observer that records ops on its
 * tape when a trace is active.
 */
import type { Tensor } from './tensor.ts';

export type Attrs = Readonly<Record<string, unknown>>;
export type OpObserver = (op: string, inputs: readonly Tensor[], output: Tensor, attrs: Attrs) => void;

let observer: OpObserver | null = null;

export function setOpObserver(fn: OpObserver | null): void {
  observer = fn;
}

export function notify(op: string, inputs: readonly Tensor[], output: Tensor, attrs: Attrs = {}): Tensor {
  if (observer !== null) observer(op, inputs, output, attrs);
  return output;
}
