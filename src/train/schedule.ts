/**
 * Learning-rate schedules as pure functions of the step: PySlowFast's cosine schedule with linear
 * warmup (slowfast/utils/lr_policy.py), counted in optimizer steps instead of (fractional) epochs.
 */

/** A learning rate per step: the argument is the number of optimizer steps completed (0 for the first). */
export type Schedule = (step: number) => number;

export interface CosineSchedule {
  /** Peak learning rate (SOLVER.BASE_LR). */
  readonly baseLr: number;
  /** Total optimizer steps (SOLVER.MAX_EPOCH in steps). */
  readonly totalSteps: number;
  /** Linear warmup length in steps (SOLVER.WARMUP_EPOCHS); 0 for none. */
  readonly warmupSteps: number;
  /** LR at step 0 of the warmup (SOLVER.WARMUP_START_LR). */
  readonly warmupStartLr: number;
  /** LR the cosine decays to (SOLVER.COSINE_END_LR). */
  readonly endLr: number;
  /** Start the cosine after the warmup (SOLVER.COSINE_AFTER_WARMUP), as the MViT recipes do. */
  readonly cosineAfterWarmup: boolean;
}

export const scheduleDefaults = (baseLr: number, totalSteps: number): CosineSchedule => ({
  baseLr,
  totalSteps,
  warmupSteps: Math.min(Math.round(totalSteps * 0.1), 500),
  warmupStartLr: baseLr * 0.01,
  endLr: baseLr * 0.01,
  cosineAfterWarmup: true,
});

function cosineAt(s: CosineSchedule, step: number): number {
  const offset = s.cosineAfterWarmup ? s.warmupSteps : 0;
  const span = Math.max(1, s.totalSteps - offset);
  const t = Math.min(Math.max(step - offset, 0), span);
  return s.endLr + (s.baseLr - s.endLr) * (Math.cos((Math.PI * t) / span) + 1) * 0.5;
}

/**
 * The learning rate of the step with 0-based index `step`:
 *   step < warmup: warmupStartLr + step · (cosine(warmup) − warmupStartLr) / warmup
 *   otherwise:     endLr + (baseLr − endLr) · (cos(π (step − offset) / (total − offset)) + 1) / 2
 * with offset = warmup when cosineAfterWarmup, else 0 (PySlowFast's get_lr_at_epoch).
 */
export function learningRate(s: CosineSchedule, step: number): number {
  if (step < s.warmupSteps) {
    const target = cosineAt(s, s.warmupSteps);
    return s.warmupStartLr + (step * (target - s.warmupStartLr)) / s.warmupSteps;
  }
  return cosineAt(s, step);
}

/** The schedule `s` as a function an optimizer takes: `adamw({ lr: warmupCosineSchedule(s) })`. */
export const warmupCosineSchedule = (s: CosineSchedule): Schedule => (step) => learningRate(s, step);

/** Problems with a schedule's numbers (empty when it is usable). */
export function scheduleProblems(s: CosineSchedule): string[] {
  const out: string[] = [];
  if (!(s.baseLr > 0 && Number.isFinite(s.baseLr))) out.push(`base learning rate must be a positive number, got ${s.baseLr}`);
  if (!(Number.isSafeInteger(s.totalSteps) && s.totalSteps >= 1)) out.push(`total steps must be a positive integer, got ${s.totalSteps}`);
  if (!(Number.isSafeInteger(s.warmupSteps) && s.warmupSteps >= 0)) out.push(`warmup steps must be a non-negative integer, got ${s.warmupSteps}`);
  if (!(s.warmupStartLr >= 0)) out.push(`warmup start lr must be >= 0, got ${s.warmupStartLr}`);
  if (!(s.endLr >= 0)) out.push(`end lr must be >= 0, got ${s.endLr}`);
  return out;
}
