/**
 * Matmul tuning for device plans: each distinct product of a program is timed on the device with every
 * tiling the device allows, and the fastest is kept (as cuBLAS and XNNPACK pick kernels by shape, but
 * measured on the device at hand instead of from tables). The tilings of one product compute the same
 * fma chains in the same order (and split-K depends on the shape only), so tuning never changes a
 * result's bits, only its speed. Results are kept for the life of the process.
 */
import { DevicePlan, passSteps } from './webgpu-plan.ts';
import { matmulWgsl, tilingName, tilingsFor, type MatmulShape, type MatmulTiling } from './wgsl-kernels.ts';

export interface TunedProduct {
  readonly problem: MatmulShape;
  /** The fastest tiling. */
  readonly tiling: MatmulTiling;
  /** Every tiling timed, in ms per product, in the order tried. */
  readonly times: readonly { readonly tiling: MatmulTiling; readonly ms: number }[];
}

/** Times one product with one tiling, in ms. */
export type TimeProduct = (p: MatmulShape, t: MatmulTiling) => Promise<number>;

export const productKey = (p: MatmulShape): string => `${p.batch}|${p.m}|${p.k}|${p.n}|${p.transA}|${p.transB}`;

const tuned = new Map<string, Promise<TunedProduct | null>>();

/** Products under this many flops (2·batch·m·k·n; ~3 us on an H200) are bound by launch latency, not tiling: not timed. */
export const TUNE_MIN_FLOP = 5e7;

/**
 * The fastest tiling of each distinct product in `problems` (by `productKey`) among those within
 * `maxThreads` invocations, timed one at a time by `time` (default: on the webgpu device, operands of
 * the product's own sizes; a tiling that fails to run counts as infinitely slow, and a product none of
 * whose tilings ran is left out, as are products under TUNE_MIN_FLOP). With the default timer, products
 * tuned before are not timed again.
 */
export async function tuneMatmuls(problems: readonly MatmulShape[], maxThreads: number, time?: TimeProduct): Promise<Map<string, TunedProduct>> {
  const out = new Map<string, TunedProduct>();
  const seen = new Set<string>();
  for (const p of problems) {
    const key = productKey(p);
    if (seen.has(key) || 2 * p.batch * p.m * p.k * p.n < TUNE_MIN_FLOP) continue;
    seen.add(key);
    const cacheKey = `${key}|${maxThreads}`;
    let result = time === undefined ? tuned.get(cacheKey) : undefined;
    if (result === undefined) {
      result = tuneOne(p, tilingsFor(maxThreads), time ?? timeOnDevice);
      if (time === undefined) tuned.set(cacheKey, result);
    }
    // One product at a time: timings must not overlap on the device.
    const r = await result;
    if (r !== null) out.set(key, r);
  }
  return out;
}

/** Null when no tiling could be timed (e.g. an operand over the device's binding size): the plan then uses the cost model's choice, and its own error, if any, names the value. */
async function tuneOne(problem: MatmulShape, tilings: readonly MatmulTiling[], time: TimeProduct): Promise<TunedProduct | null> {
  const times: { tiling: MatmulTiling; ms: number }[] = [];
  for (const tiling of tilings) {
    try {
      times.push({ tiling, ms: await time(problem, tiling) });
    } catch {
      times.push({ tiling, ms: Infinity });
    }
  }
  const best = times.reduce((a, b) => (b.ms < a.ms ? b : a));
  return Number.isFinite(best.ms) ? { problem, tiling: best.tiling, times } : null;
}

/** The product as a plan of its own (operands, output and split-K scratch as buffers), timed with DevicePlan.time. */
async function timeOnDevice(p: MatmulShape, t: MatmulTiling): Promise<number> {
  const buffers = [p.batch * p.m * p.k, p.batch * p.k * p.n, p.batch * p.m * p.n];
  const steps = passSteps(matmulWgsl(p, t), [0, 1], 2, (floats) => buffers.push(floats) - 1);
  const plan = await DevicePlan.compile({ buffers, steps, reads: [], label: `tune matmul ${productKey(p)} ${tilingName(t)}` });
  try {
    return await plan.time();
  } finally {
    plan.destroy();
  }
}
