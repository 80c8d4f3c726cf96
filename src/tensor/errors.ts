/**
 * The typed errors of revgrad, all `RevgradError`: messages name the op, field or file and what was
 * expected. This module imports nothing, so every layer (the backend included) can raise them.
 */
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

/** Differentiation cannot go on: an op declared not differentiable (NotDifferentiableError), a custom VJP breaking its contract. */
export class AutodiffError extends RevgradError {
  override name = 'AutodiffError';
  constructor(readonly op: string, message: string) {
    super(`${op}: ${message}`);
  }
}

/** Data read from a file or a data set is not what was expected; `source` names the file. */
export class DataError extends RevgradError {
  override name = 'DataError';
  constructor(readonly source: string, message: string) {
    super(`${source}: ${message}`);
  }
}

/** An invariant of revgrad itself does not hold: a bug in the library, not in the caller's code. */
export class InternalError extends RevgradError {
  override name = 'InternalError';
  constructor(readonly where: string, message: string) {
    super(`${where}: ${message} (an internal error of revgrad; please report it)`);
  }
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
