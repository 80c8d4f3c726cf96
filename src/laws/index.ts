/**
 * revgrad/laws: fast-check properties for your own reversible blocks, sequences and differentiable
 * functions. fast-check is a peer dependency of this entry only (`import 'revgrad'` does not need it).
 *
 *   import { arb, inverseLaw } from 'revgrad/laws';
 *   await inverseLaw(net, { params: init, input: { shape: [2, 8, 16] } }).assert();
 *
 * Every law returns a `Law`: `check()` runs a bounded number of generated cases and reports the worst
 * one (or the shrunk counterexample, with the block, leaf or element at fault and the seed to replay
 * it); `assert()` throws that report; `property()` is the plain fast-check property. See docs/laws.md.
 */
export * as arb from './arbitraries.ts';
export type { BroadcastSet, ParamsOptions, ShapeOptions, TensorOptions, ValueOptions } from './arbitraries.ts';
export {
  assertProperty,
  describe,
  drive,
  failed,
  inconclusive,
  LawError,
  LawViolation,
  makeLaw,
  measured,
  PropertyError,
  type Body,
  type Case,
  type CheckOptions,
  type Law,
  type LawDefaults,
  type LawReport,
  type Outcome,
} from './core.ts';
export { EPS32 } from './numeric.ts';
export {
  determinismLaw,
  inverseLaw,
  memoryFlatLaw,
  reversibleGradLaw,
  type DeterminismLawOptions,
  type GradLawOptions,
  type InverseLawOptions,
  type MemoryLawOptions,
  type ParamsSpec,
  type BlockFamily,
  type Family,
  type MemoryCase,
  type Reversible,
  type ReversibleCase,
  type ReversibleLawOptions,
  type Subject,
} from './reversible.ts';
export { mutate, shapeErrorLaw, type Mutation, type ShapeCase, type ShapeErrorLawOptions } from './shape.ts';
export { vjpLaw, type Fn, type VjpCase, type VjpCheck, type VjpLawCase, type VjpLawOptions } from './vjp.ts';
