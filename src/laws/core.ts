/**
 * What every law shares: a body that measures one generated case, a runner on top of fast-check that
 * keeps the worst case, and a report that teaches (the counterexample, where it failed, the seed to
 * replay it).
 *
 * Bodies are generators: they compute synchronously, yield the tensors whose values they need and are
 * resumed with the data. The driver runs every step inside `withBackend(backend, ...)` and awaits the
 * reads between steps, so one body serves synchronous backends (webasm, cpu) and asynchronous ones
 * (webgpu) alike, and the backend is right for every op even though the reads are awaited.
 */
import fc from 'fast-check';
import { getBackend, withBackend, type BackendName } from '../backend/backend.ts';
import { flattenWithPaths } from '../autodiff/pytree.ts';
import { RevgradError } from '../tensor/errors.ts';
import { fmt } from '../tensor/shape.ts';
import { Tensor } from '../tensor/tensor.ts';

/** A law body: yields tensors to read, is resumed with their data, returns its outcome. */
export type Body<R> = Generator<readonly Tensor[], R, Float32Array[]>;

/** Run `body` with every step on `backend`, awaiting the reads between steps. */
export async function drive<R>(body: Body<R>, backend: BackendName): Promise<R> {
  let step = withBackend(backend, () => body.next());
  while (!step.done) {
    const data = await Promise.all(step.value.map((t) => t.data()));
    step = withBackend(backend, () => body.next(data));
  }
  return step.value;
}

/** The measurement of one case. */
export interface Outcome {
  readonly ok: boolean;
  /** The measured error over its tolerance: <= 1 passes; the report keeps the case where it is largest. */
  readonly ratio: number;
  /** What was measured and where: block, leaf, worst element, the numbers. */
  readonly detail: string;
  /** false when the case could not test the law (the detail says why); it then counts as passed. */
  readonly conclusive: boolean;
}

export const measured = (ratio: number, detail: string): Outcome => ({ ok: ratio <= 1, ratio, detail, conclusive: true });
export const failed = (detail: string): Outcome => ({ ok: false, ratio: Infinity, detail, conclusive: true });
export const inconclusive = (detail: string): Outcome => ({ ok: true, ratio: 0, detail, conclusive: false });

/** Thrown inside a property when a case breaks the law. */
export class LawViolation extends RevgradError {
  override name = 'LawViolation';
  declare readonly outcome: Outcome;
  constructor(outcome: Outcome) {
    super(outcome.detail);
    Object.defineProperty(this, 'outcome', { value: outcome, enumerable: false });
  }
}

/** Thrown by `law.assert()`: the message is the whole report. */
export class LawError extends RevgradError {
  override name = 'LawError';
  declare readonly report: LawReport<unknown>;
  constructor(report: LawReport<unknown>) {
    super(report.text);
    // Not enumerable: an uncaught LawError prints its message (the report), not the generated tensors.
    Object.defineProperty(this, 'report', { value: report, enumerable: false });
  }
}

export interface CheckOptions {
  /** Generated cases (each law has a bounded default). */
  readonly runs?: number;
  /** fast-check seed; with `path`, replays one failing case exactly (both are printed on failure). */
  readonly seed?: number;
  readonly path?: string;
  /** Conclusive cases needed for the law to pass (default 1, or the law's own). */
  readonly minConclusive?: number;
}

export interface Case<T> {
  readonly input: T;
  readonly outcome: Outcome;
}

export interface LawReport<T> {
  readonly law: string;
  readonly ok: boolean;
  /** Cases run before the first failure (or all of them). */
  readonly runs: number;
  readonly conclusive: number;
  readonly seed: number;
  /** fast-check's path to the (shrunk) counterexample: `check({ seed, path })` replays it. */
  readonly path: string | null;
  /** The passing case closest to failing (largest ratio). */
  readonly worst: Case<T> | null;
  /** The shrunk counterexample and what was wrong with it. */
  readonly failure: (Case<T> & { readonly shrinks: number }) | null;
  /** Why cases were inconclusive (first few distinct reasons). */
  readonly skipped: readonly string[];
  /** The report as text: what `assert` throws and what a test prints. */
  readonly text: string;
}

export interface Law<T> {
  readonly name: string;
  /** The generated cases. */
  readonly arbitrary: fc.Arbitrary<T>;
  /** Measure one case. */
  measure(input: T): Promise<Outcome>;
  /** An asynchronous fast-check property: fails (throws a LawViolation) when a case breaks the law. */
  property(): fc.IAsyncPropertyWithHooks<[T]>;
  /** Run the law (bounded default number of cases) and report the worst case or the counterexample. */
  check(options?: CheckOptions): Promise<LawReport<T>>;
  /** `check`, throwing a LawError carrying the report when the law fails. */
  assert(options?: CheckOptions): Promise<LawReport<T>>;
}

export interface LawDefaults {
  readonly runs: number;
  readonly minConclusive?: number;
}

/** Build a law from its generated cases and its measurement. */
export function makeLaw<T>(name: string, arbitrary: fc.Arbitrary<T>, measure: (input: T) => Promise<Outcome>, defaults: LawDefaults): Law<T> {
  const property = () =>
    fc.asyncProperty(arbitrary, async (input) => {
      const outcome = await measure(input);
      if (!outcome.ok) throw new LawViolation(outcome);
    });
  const check = async (options: CheckOptions = {}): Promise<LawReport<T>> => {
    let worst: Case<T> | null = null;
    let broken = false;
    let conclusive = 0;
    let runs = 0;
    const skipped: string[] = [];
    const prop = fc.asyncProperty(arbitrary, async (input) => {
      let outcome: Outcome;
      try {
        outcome = await measure(input);
      } catch (e) {
        broken = true;
        throw e;
      }
      if (!broken) {
        runs++;
        if (outcome.conclusive) conclusive++;
        else if (skipped.length < 3 && !skipped.includes(outcome.detail)) skipped.push(outcome.detail);
        if (outcome.ok && outcome.conclusive && (worst === null || outcome.ratio > worst.outcome.ratio)) worst = { input, outcome };
      }
      if (!outcome.ok) {
        broken = true;
        throw new LawViolation(outcome);
      }
    });
    const params: fc.Parameters<[T]> = { numRuns: options.runs ?? defaults.runs };
    const details = await fc.check(prop, options.seed === undefined ? params : { ...params, seed: options.seed, path: options.path });
    let failure: LawReport<T>['failure'] = null;
    if (details.failed && details.counterexample !== null) {
      const e = details.errorInstance;
      const outcome = e instanceof LawViolation ? e.outcome : failed(`threw ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`);
      failure = { input: details.counterexample[0], outcome, shrinks: details.numShrinks };
    }
    const minConclusive = options.minConclusive ?? defaults.minConclusive ?? 1;
    const tooFew = failure === null && conclusive < minConclusive;
    const ok = failure === null && !tooFew;
    const report = {
      law: name,
      ok,
      runs: failure === null ? details.numRuns : runs + 1,
      conclusive,
      seed: details.seed,
      path: details.counterexamplePath,
      worst,
      failure,
      skipped,
    };
    return { ...report, text: formatReport(report, tooFew ? minConclusive : 0) };
  };
  return {
    name,
    arbitrary,
    measure,
    property,
    check,
    async assert(options) {
      const r = await check(options);
      if (!r.ok) throw new LawError(r as LawReport<unknown>);
      return r;
    },
  };
}

/** The backend a law runs on: the one asked for, else the current one when the law is checked. */
export const backendOf = (b: BackendName | undefined): BackendName => b ?? getBackend();

// ---------------------------------------------------------------------------------------------
// Reports

function formatReport<T>(r: Omit<LawReport<T>, 'text'>, needed: number): string {
  const lines: string[] = [];
  if (r.failure !== null) {
    const shrunk = r.failure.shrinks > 0 ? ` (shrunk ${r.failure.shrinks} times)` : '';
    lines.push(`${r.law}: FAILED on case ${r.runs}${shrunk}`);
    lines.push(`  ${r.failure.outcome.detail}`);
    lines.push('  counterexample:');
    for (const l of describeCase(r.failure.input)) lines.push(`    ${l}`);
    lines.push(`  replay: check({ seed: ${r.seed}, path: ${JSON.stringify(r.path)} })`);
    return lines.join('\n');
  }
  if (needed > 0) {
    lines.push(`${r.law}: FAILED: only ${r.conclusive} of ${r.runs} cases were conclusive (${needed} needed)`);
  } else {
    lines.push(`${r.law}: passed ${r.runs} cases (${r.conclusive} conclusive), seed ${r.seed}`);
  }
  if (r.worst !== null) lines.push(`  worst case (error / tolerance = ${r.worst.outcome.ratio.toPrecision(3)}): ${r.worst.outcome.detail}`);
  if (r.skipped.length > 0) lines.push(`  inconclusive cases, e.g.: ${r.skipped.join('; ')}`);
  return lines.join('\n');
}

/** One line per field of a generated case (tensors by shape and first values, big trees by leaf shapes). */
export function describeCase(input: unknown): string[] {
  if (input !== null && typeof input === 'object' && !Array.isArray(input) && !(input instanceof Tensor)) {
    return Object.entries(input).map(([k, v]) => `${k}: ${describe(v)}`);
  }
  return [describe(input)];
}

export function describe(v: unknown): string {
  if (v instanceof Tensor) return v.toString();
  if (typeof v === 'function') return `<function ${v.name || 'anonymous'}>`;
  if (v === null || typeof v !== 'object') return typeof v === 'string' ? JSON.stringify(v) : String(v);
  if (fc.hasToStringMethod(v)) return v[fc.toStringMethod]();
  const tensors = flattenWithPaths(v);
  if (tensors.length > 2) return `{ ${tensors.map(([p, t]) => `${p}: ${fmt(t.shape)}`).join(', ')} }`;
  if (Array.isArray(v)) return `[${v.map(describe).join(', ')}]`;
  return `{ ${Object.entries(v).map(([k, x]) => `${k}: ${describe(x)}`).join(', ')} }`;
}

// ---------------------------------------------------------------------------------------------
// Plain fast-check properties

/** Thrown by `assertProperty`: the failing assertion's message, the counterexample and the replay parameters. */
export class PropertyError extends RevgradError {
  override name = 'PropertyError';
}

function propertyFailure<Ts>(details: fc.RunDetails<Ts>): PropertyError | null {
  if (!details.failed) return null;
  const e = details.errorInstance;
  const cause = e instanceof Error ? e.message : details.interrupted ? 'interrupted' : String(e ?? 'too many skipped cases (fc.pre)');
  return new PropertyError(
    `property failed after ${details.numRuns} run(s): ${cause}\n` +
      `counterexample: ${details.counterexample == null ? '-' : (details.counterexample as unknown as unknown[]).map(describe).join(', ')}\n` +
      `replay with { seed: ${details.seed}, path: ${JSON.stringify(details.counterexamplePath)} }`,
  );
}

/**
 * fc.assert for any property, throwing a PropertyError whose message carries the failing assertion's
 * message (test runners do not print fast-check's `cause`), the counterexample and the seed and path
 * to replay it. Synchronous for a synchronous property, a promise for an asynchronous one.
 */
export function assertProperty<Ts>(property: fc.IProperty<Ts>, params?: fc.Parameters<Ts>): void;
export function assertProperty<Ts>(property: fc.IAsyncProperty<Ts>, params?: fc.Parameters<Ts>): Promise<void>;
export function assertProperty<Ts>(property: fc.IRawProperty<Ts>, params: fc.Parameters<Ts> = {}): void | Promise<void> {
  const result = fc.check(property, params);
  if (result instanceof Promise) {
    return result.then((details) => {
      const e = propertyFailure(details);
      if (e !== null) throw e;
    });
  }
  const e = propertyFailure(result);
  if (e !== null) throw e;
}
