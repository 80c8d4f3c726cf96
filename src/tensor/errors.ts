/** Errors raised by tensor math. Messages name the op and the shapes involved. */
export class RevgradError extends Error {
  override name = 'RevgradError';
}

/** Shapes that do not fit the op (mismatch, bad rank, negative or fractional sizes, ...). */
export class ShapeError extends RevgradError {
  override name = 'ShapeError';
  constructor(readonly op: string, message: string) {
    super(`${op}: ${message}`);
  }
}

/** An argument of the wrong kind (not a tensor, not a number, unknown option, ...). */
export class ArgumentError extends RevgradError {
  override name = 'ArgumentError';
  constructor(readonly op: string, message: string) {
    super(`${op}: ${message}`);
  }
}

/** The backend cannot do what was asked (e.g. dataSync on an asynchronous backend). */
export class BackendError extends RevgradError {
  override name = 'BackendError';
}

/**
 * What `jit` cannot trace: reading a traced value's data on the host (data-dependent control flow or
 * host math), or an argument it cannot turn into a program input.
 */
export class TraceError extends RevgradError {
  override name = 'TraceError';
  constructor(message: string) {
    super(`jit: ${message}`);
  }
}
