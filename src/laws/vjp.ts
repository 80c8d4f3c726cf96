/**
 * vjpLaw: the VJP of any function of tensors (a composite, a model piece, a customVjp op) against
 * three independent measurements, each a float64 computation over float32 evaluations of the function:
 *
 *  - 'fd': central finite differences, one input at a time: <vjp(u)_i, dx_i> against
 *    u · (f(x + h v_i) − f(x − h v_i)), where dx_i is the exact difference of the two rounded inputs.
 *  - 'dot': the dot-product (adjoint) test. J·dx is obtained by transposing the pullback (the map
 *    u -> <pullback(u), dx> is linear; its gradient is J·dx), then compared element by element with
 *    f(x + h v) − f(x − h v), and <J·dx, u> with <dx, Jᵀu>. It needs a pullback that is itself
 *    differentiable; where it is not (the case says so) the test is inconclusive.
 *  - 'taylor': remainders r(h) = |u·(f(x + h v) − f(x)) − <vjp(u), h v>| shrink like h²
 *    (ratio ~4 per halving); a wrong gradient leaves an O(h) remainder (ratio ~2). Cases where the h³
 *    term or float32 round-off dominate are inconclusive, not passed.
 */
import fc from 'fast-check';
import { vjp } from '../autodiff/tape.ts';
import type { BackendName } from '../backend/backend.ts';
import { ArgumentError } from '../tensor/errors.ts';
import { add, mul, sum } from '../tensor/ops.ts';
import { fmt, sameShape, type Shape } from '../tensor/shape.ts';
import { scalar, tensor, type Tensor } from '../tensor/tensor.ts';
import { isArbitrary, seed as seedArb, tensor as tensorArb, type TensorOptions } from './arbitraries.ts';
import { backendOf, drive, failed, inconclusive, makeLaw, measured, type Body, type Law, type Outcome } from './core.ts';
import { at, dot, EPS32, num, seededUniform } from './numeric.ts';

export type Fn = (...xs: Tensor[]) => Tensor | Tensor[];

/** A function and the point where its VJP is checked; `wrt` lists the differentiable inputs (default all). */
export interface VjpCase {
  readonly f: Fn;
  readonly inputs: readonly Tensor[];
  readonly wrt?: readonly number[];
}

export type VjpCheck = 'fd' | 'dot' | 'taylor';

export interface VjpLawOptions {
  /** For a function subject: one entry per input (tensor options, a fixed shape, or an arbitrary of tensors). */
  readonly inputs?: readonly (TensorOptions | Shape | fc.Arbitrary<Tensor>)[];
  readonly wrt?: readonly number[];
  /** Default all three. */
  readonly checks?: readonly VjpCheck[];
  /** Finite-difference step along directions with |v| <= 1 (default 1e-2). */
  readonly h?: number;
  /**
   * 'each' (default): one finite difference per input, so a failure names the input; 'together': one
   * for all inputs at once (two evaluations of f in all, for functions of many parameter leaves).
   */
  readonly fdInputs?: 'each' | 'together';
  /**
   * Directions v for 'fd': 'random' (default, uniform in [-1, 1]), or 'ascent': the same magnitudes
   * with the signs of the VJP, so the terms of <vjp(u), v> do not cancel and an error anywhere in the
   * VJP adds up instead of averaging out (for functions of many leaves, where a random direction's sum
   * is a small difference of large terms).
   */
  readonly direction?: 'random' | 'ascent';
  /** Relative tolerance of the finite-difference comparisons (default 2e-3; see `fdBody`). */
  readonly rtol?: number;
  /** float32 round-off allowance in ulps of the function values (default 64). */
  readonly ulps?: number;
  /** Taylor steps, each half the previous (default [0.12, 0.06, 0.03, 0.015]). */
  readonly taylorSteps?: readonly number[];
  readonly backend?: BackendName;
  readonly runs?: number;
  readonly minConclusive?: number;
}

export type VjpLawCase = VjpCase & { readonly seed: number };

const leavesOf = (t: Tensor | readonly Tensor[]): Tensor[] => (Array.isArray(t) ? [...t] : [t as Tensor]);
const wrtOf = (c: VjpCase): readonly number[] => c.wrt ?? c.inputs.map((_, i) => i);
const describeInput = (c: VjpCase, i: number) => `input ${i} ${fmt(c.inputs[i].shape)}`;

/** The pullback at cotangents `us` (one per output leaf), as a list of input cotangents. */
function pull(y: Tensor | Tensor[], pullback: (ct?: never) => unknown, us: readonly Tensor[]): Tensor[] {
  return pullback((Array.isArray(y) ? us : us[0]) as never) as Tensor[];
}

/** Cotangent `u` for output leaf k (its data and the tensor) and direction `v` for input i, from the case seed. */
function cotangents(ys: readonly Tensor[], seed: number): { data: Float32Array[]; tensors: Tensor[] } {
  const data = ys.map((t, k) => seededUniform(t.size, seed + 101 * k));
  return { data, tensors: data.map((u, k) => tensor(u, [...ys[k].shape])) };
}
const direction = (n: number, seed: number, i: number) => seededUniform(n, seed + 7 + 13 * i);

/** x ± h v rounded to float32, with dx = (x + h v) − (x − h v) exact in float64. */
function perturb(x: Float32Array, v: Float32Array, h: number) {
  const xp = Float32Array.from(x, (xi, j) => xi + h * v[j]);
  const xm = Float32Array.from(x, (xi, j) => xi - h * v[j]);
  return { xp, xm, dx: Float64Array.from(xp, (p, j) => p - xm[j]) };
}

/**
 * Finite differences per input. Tolerance rtol · max(Σ|g·dx|, Σ|u·Δf|) + ulps · 2^-23 · Σ|u|(|f+| + |f−|):
 * the first term bounds the truncation of the central difference (h²|f'''|/6 per term, relative
 * 1e-3 for |f'''/f'| up to 60 at h = 1e-2), the second float32 round-off in f(x ± hv).
 *
 * Near a stationary point f' is small while f''' is not (a loss like tanh(a)² where a crosses 0), so the
 * truncation is not bounded relative to the gradient there. A comparison that fails at h is redone with
 * the truncation measured instead of assumed: with E(h) = C(h) − <g, dx_h> (C the central difference, dx
 * exact), a correct VJP leaves E(h) = T + O(h⁵) with T = h³ f'''(v,v,v)/3, and E(h/2) = T/8, so
 * (8 E(h/2) − E(h)) / 3 is O(h⁵) plus round-off, while a VJP error δ still shows in full (δ·2h, as in
 * E(h)). Its tolerance: the same relative term (for the h⁵ remainder) plus the round-off of both
 * differences, weighted 8/3 and 1/3.
 *
 * The round-off allowance ulps · |f| assumes f's rounding is relative to its value. A function whose
 * output cancels inside (Σ tanh(x_i) over x of both signs: 2e-3 out of terms of 0.76) rounds at the size
 * of its terms, which the kit cannot see. So the retry also measures it: f along x + i·(h/128)·v at 12
 * points, whose third differences leave only the round-off (Moré & Wild's ECnoise), and both comparisons
 * get 6 standard deviations of it on top. The case passes when any comparison does; a VJP error below the
 * measured noise of f cannot be seen by finite differences at all. Where f does not change at all along v
 * (every value bitwise equal: the change is below one rounding step of f's terms), that input is not
 * testable by finite differences and is reported so (inconclusive when no input is testable).
 */
/** Points of the walk that measures the round-off of f (see `fdBody`). */
const NOISE_POINTS = 12;

function* fdBody(c: VjpCase, seed: number, o: VjpLawOptions): Body<Outcome> {
  const h = o.h ?? 1e-2;
  const rtol = o.rtol ?? 2e-3;
  const ulps = o.ulps ?? 64;
  const wrt = wrtOf(c);
  const [y, pullback] = vjp(c.f, ...c.inputs);
  const ys = leavesOf(y);
  const us = cotangents(ys, seed);
  const grads = pull(y, pullback as never, us.tensors);
  for (const i of wrt) {
    if (!sameShape(grads[i].shape, c.inputs[i].shape)) return failed(`the gradient of ${describeInput(c, i)} has shape ${fmt(grads[i].shape)}`);
  }
  const read = yield [...wrt.map((i) => c.inputs[i]), ...wrt.map((i) => grads[i])];
  const xs = read.slice(0, wrt.length);
  const gs = read.slice(wrt.length);
  const dir = (j: number, i: number) => {
    const v = direction(xs[j].length, seed, i);
    return o.direction === 'ascent' ? v.map((x, e) => (gs[j][e] < 0 ? -Math.abs(x) : Math.abs(x))) : v;
  };
  // One run per input ('each'), or one run moving every input ('together').
  type Group = readonly { readonly i: number; readonly j: number }[];
  const groups: Group[] = o.fdInputs === 'together' ? [wrt.map((i, j) => ({ i, j }))] : wrt.map((i, j) => [{ i, j }]);
  const label = (group: Group) => (group.length === 1 ? describeInput(c, group[0].i) : `all ${group.length} inputs together`);
  const evaluate = (group: Group, step: number) => {
    const plus = [...c.inputs];
    const minus = [...c.inputs];
    const dx = group.map(({ i, j }) => {
      const p = perturb(xs[j], dir(j, i), step);
      plus[i] = tensor(p.xp, [...c.inputs[i].shape]);
      minus[i] = tensor(p.xm, [...c.inputs[i].shape]);
      return { j, dx: p.dx };
    });
    return { dx, outs: [...leavesOf(c.f(...plus)), ...leavesOf(c.f(...minus))] };
  };
  const n = ys.length;
  /** <g, dx> and Σ u·(f+ − f−) (the data of run t in `data`), with the scales of both and of their round-off. */
  const compare = (dxs: readonly { j: number; dx: Float64Array }[], data: readonly Float32Array[], t: number) => {
    let analytic = 0;
    let absTerms = 0;
    for (const { j, dx } of dxs) {
      for (let e = 0; e < dx.length; e++) {
        analytic += gs[j][e] * dx[e];
        absTerms += Math.abs(gs[j][e] * dx[e]);
      }
    }
    let numeric = 0;
    let absNumeric = 0;
    let roundScale = 0;
    us.data.forEach((u, k) => {
      const a = data[2 * n * t + k];
      const b = data[2 * n * t + n + k];
      for (let e = 0; e < u.length; e++) {
        numeric += u[e] * (a[e] - b[e]);
        absNumeric += Math.abs(u[e] * (a[e] - b[e]));
        roundScale += Math.abs(u[e]) * (Math.abs(a[e]) + Math.abs(b[e]));
      }
    });
    return { analytic, numeric, relScale: Math.max(absTerms, absNumeric), round: ulps * EPS32 * roundScale };
  };
  /**
   * f at NOISE_POINTS points x + i·δ·v (δ = h/128: every input moves by many ulps, so each evaluation
   * rounds differently, while the smooth part of f changes by a negligible third difference).
   */
  const noiseWalk = (group: Group): Tensor[] =>
    Array.from({ length: NOISE_POINTS }, (_, s) => {
      const point = [...c.inputs];
      for (const { i, j } of group) point[i] = tensor(perturb(xs[j], dir(j, i), (s * h) / 128).xp, [...c.inputs[i].shape]);
      return leavesOf(c.f(...point));
    }).flat();
  /**
   * The standard deviation of the float32 round-off in Σ u·f (Moré & Wild's ECnoise): third differences
   * of the walk cancel the smooth part and leave noise of variance 20σ².
   */
  const noiseLevel = (walk: readonly Float32Array[]): number => {
    const g = Array.from({ length: NOISE_POINTS }, (_, s) => us.data.reduce((acc, u, k) => acc + dot(u, walk[s * n + k]), 0));
    let sq = 0;
    for (let s = 0; s + 3 < NOISE_POINTS; s++) sq += (g[s + 3] - 3 * g[s + 2] + 3 * g[s + 1] - g[s]) ** 2;
    return Math.sqrt(sq / (NOISE_POINTS - 3) / 20);
  };
  const runs = groups.map((group) => evaluate(group, h));
  const dataH = yield runs.flatMap((r) => r.outs);
  const results = runs.map((r, q) => {
    const m = compare(r.dx, dataH, q);
    const tol = rtol * m.relScale + m.round + 1e-30;
    const diff = Math.abs(m.analytic - m.numeric);
    const ratio = diff !== diff ? Infinity : diff / tol;
    return { m, ratio, text: `<vjp(u), dx> = ${num(m.analytic)}, central difference = ${num(m.numeric)}, |diff| ${num(diff)} vs tol ${num(tol)} (h ${h})` };
  });
  // Failing comparisons again: at h/2, with the truncation extrapolated away, and with the round-off of f
  // measured (see above).
  const redo = results.flatMap((r, q) => (r.ratio > 1 && Number.isFinite(r.ratio) ? [q] : []));
  const flat = new Set<number>();
  if (redo.length > 0) {
    const halves = redo.map((q) => evaluate(groups[q], h / 2));
    const walks = redo.map((q) => noiseWalk(groups[q]));
    const data = yield [...halves.flatMap((r) => r.outs), ...walks.flat()];
    const walkData = data.slice(halves.length * 2 * n);
    redo.forEach((q, t) => {
      const m2 = compare(halves[t].dx, data, t);
      const m1 = results[q].m;
      const sigma = noiseLevel(walkData.slice(t * NOISE_POINTS * n, (t + 1) * NOISE_POINTS * n));
      // 6 standard deviations of the difference of two noisy values; Richardson weighs them 8/3 and 1/3.
      const diff1 = Math.abs(m1.analytic - m1.numeric);
      const tol1 = rtol * m1.relScale + m1.round + 6 * Math.SQRT2 * sigma + 1e-30;
      const diffR = Math.abs(8 * (m2.numeric - m2.analytic) - (m1.numeric - m1.analytic)) / 3;
      const tolR = rtol * m1.relScale + (8 * m2.round + m1.round) / 3 + 6 * Math.SQRT2 * (Math.sqrt(65) / 3) * sigma + 1e-30;
      const ratio1 = diff1 !== diff1 ? Infinity : diff1 / tol1;
      const ratioR = diffR !== diffR ? Infinity : diffR / tolR;
      // f(x ± hv) and f(x ± hv/2) and the whole walk bitwise equal: f does not change along v by one
      // rounding step (a tiny gradient in float32): finite differences cannot test this input here.
      if (m1.numeric === 0 && m2.numeric === 0 && sigma === 0) {
        flat.add(q);
        results[q] = { m: m1, ratio: 0, text: `${results[q].text}; f is constant along v to float32 resolution (same values at h, h/2 and 12 nearby points): not testable here` };
        return;
      }
      const ratio = Math.min(results[q].ratio, ratio1, ratioR);
      results[q] = {
        m: m1,
        ratio,
        text: `${results[q].text}; measured round-off of f ${num(sigma)} (std): |diff| ${num(diff1)} vs tol ${num(tol1)}; with h/2, truncation extrapolated away (Richardson): |diff| ${num(diffR)} vs tol ${num(tolR)}`,
      };
    });
  }
  let worst: { ratio: number; text: string } = { ratio: -1, text: '' };
  results.forEach((r, q) => {
    if (r.ratio > worst.ratio) worst = { ratio: r.ratio, text: `${label(groups[q])}: ${r.text}` };
  });
  if (worst.ratio < 0) return inconclusive('fd: no differentiable input');
  if (flat.size === results.length) return inconclusive(`fd: ${worst.text}`);
  return measured(worst.ratio, worst.ratio <= 1 ? `fd: ${worst.text}` : `the VJP disagrees with finite differences: ${worst.text}`);
}

/** The dot-product test (see the file comment). */
function* dotBody(c: VjpCase, seed: number, o: VjpLawOptions): Body<Outcome> {
  const h = o.h ?? 1e-2;
  const rtol = o.rtol ?? 2e-3;
  const ulps = o.ulps ?? 64;
  const wrt = wrtOf(c);
  const xs = yield wrt.map((i) => c.inputs[i]);
  const ps = wrt.map((i, j) => perturb(xs[j], direction(xs[j].length, seed, i), h));
  const dxs = wrt.map((i, j) => tensor(Float32Array.from(ps[j].dx), [...c.inputs[i].shape]));
  let jv: Tensor[];
  let gs: Tensor[];
  let us: Tensor[];
  let ys: Tensor[];
  try {
    const [y, pullback] = vjp(c.f, ...c.inputs);
    ys = leavesOf(y);
    us = cotangents(ys, seed).tensors;
    const lin = (...u: Tensor[]) => wrt.reduce((acc: Tensor, i, j) => add(acc, sum(mul(pull(y, pullback as never, u)[i], dxs[j]))), scalar(0));
    const [, pullLin] = vjp(lin, ...us);
    jv = pullLin() as Tensor[];
    gs = pull(y, pullback as never, us);
  } catch (e) {
    return inconclusive(`dot: the pullback is not differentiable here (${e instanceof Error ? e.message : String(e)})`);
  }
  const plus = [...c.inputs];
  const minus = [...c.inputs];
  wrt.forEach((i, j) => {
    plus[i] = tensor(ps[j].xp, [...c.inputs[i].shape]);
    minus[i] = tensor(ps[j].xm, [...c.inputs[i].shape]);
  });
  const fp = leavesOf(c.f(...plus));
  const fm = leavesOf(c.f(...minus));
  const n = ys.length;
  const d = yield [...jv, ...fp, ...fm, ...wrt.map((i) => gs[i]), ...us];
  const J = d.slice(0, n);
  const P = d.slice(n, 2 * n);
  const M = d.slice(2 * n, 3 * n);
  const G = d.slice(3 * n, 3 * n + wrt.length);
  const U = d.slice(3 * n + wrt.length);
  // Element by element: J·dx against f(x + hv) − f(x − hv), relative to the largest of either.
  let scale = 0;
  for (let k = 0; k < n; k++) for (let e = 0; e < J[k].length; e++) scale = Math.max(scale, Math.abs(J[k][e]), Math.abs(P[k][e] - M[k][e]));
  let worst = { ratio: -1, text: '' };
  for (let k = 0; k < n; k++) {
    for (let e = 0; e < J[k].length; e++) {
      const fd = P[k][e] - M[k][e];
      const tol = rtol * scale + ulps * EPS32 * (Math.abs(P[k][e]) + Math.abs(M[k][e])) + 1e-30;
      const diff = Math.abs(J[k][e] - fd);
      const ratio = diff !== diff ? Infinity : diff / tol;
      if (ratio > worst.ratio) worst = { ratio, text: `${at(n > 1 ? `output ${k}` : 'output', ys[k].shape, e)}: J·dx = ${num(J[k][e])}, f(x + hv) − f(x − hv) = ${num(fd)}, |diff| ${num(diff)} vs tol ${num(tol)}` };
    }
  }
  // <J·dx, u> = <dx, Jᵀu>: both analytic, equal up to float32 accumulation.
  let left = 0;
  let right = 0;
  let terms = 0;
  for (let k = 0; k < n; k++) {
    left += dot(J[k], U[k]);
    for (let e = 0; e < J[k].length; e++) terms += Math.abs(J[k][e] * U[k][e]);
  }
  wrt.forEach((_, j) => {
    right += dot(ps[j].dx, G[j]);
    for (let e = 0; e < G[j].length; e++) terms += Math.abs(ps[j].dx[e] * G[j][e]);
  });
  const dotTol = 1e-4 * terms + 1e-30;
  const dotRatio = Math.abs(left - right) / dotTol;
  if (dotRatio > 1 || dotRatio !== dotRatio) {
    return measured(Number.isNaN(dotRatio) ? Infinity : dotRatio, `dot: <J·dx, u> = ${num(left)} but <dx, Jᵀu> = ${num(right)} (tol ${num(dotTol)}): the pullback is not the transpose of its own linearisation`);
  }
  if (worst.ratio < 0) return inconclusive('dot: the function has no outputs');
  if (worst.ratio <= 1) return measured(worst.ratio, `dot: worst ${worst.text}`);
  const untraced = J.every((j) => j.every((v) => v === 0)) ? ' (J·dx is 0 everywhere: does the backward compute off the tape, e.g. from data read back?)' : '';
  return measured(worst.ratio, `J·dx (the transposed pullback) disagrees with finite differences at ${worst.text}${untraced}`);
}

/** The Taylor test (see the file comment). */
function* taylorBody(c: VjpCase, seed: number, o: VjpLawOptions): Body<Outcome> {
  const hs = o.taylorSteps ?? [0.12, 0.06, 0.03, 0.015];
  const wrt = wrtOf(c);
  const xs = yield wrt.map((i) => c.inputs[i]);
  const vs = wrt.map((i, j) => direction(xs[j].length, seed, i));
  const shifted = (h: number) => {
    const out = [...c.inputs];
    wrt.forEach((i, j) => (out[i] = tensor(Float32Array.from(xs[j], (xi, e) => xi + h * vs[j][e]), [...c.inputs[i].shape])));
    return out;
  };
  const flat = (ds: readonly Float32Array[]) => {
    const out = new Float64Array(ds.reduce((a, b) => a + b.length, 0));
    let o2 = 0;
    for (const d of ds) {
      out.set(d, o2);
      o2 += d.length;
    }
    return out;
  };
  const h0 = hs[0];
  const x0 = c.inputs;
  const [xp, xm, xmHalf] = [shifted(h0), shifted(-h0), shifted(-h0 / 2)];
  const f0l = leavesOf(c.f(...x0));
  const nOut = f0l.length;
  const steps = [...hs, h0 / 2].map(shifted);
  const wrtOnly = (xs2: readonly Tensor[]) => xs2.filter((_, i) => wrt.includes(i));
  const fl = [f0l, leavesOf(c.f(...xp)), leavesOf(c.f(...xm)), leavesOf(c.f(...xmHalf)), ...steps.map((s2) => leavesOf(c.f(...s2)))];
  const d = yield [...fl.flat(), ...wrtOnly(xp), ...wrtOnly(xm), ...wrtOnly(xmHalf), ...steps.flatMap(wrtOnly)];
  const F = fl.map((_, q) => flat(d.slice(q * nOut, (q + 1) * nOut)));
  const [f0, fp, fm, fmHalf] = F;
  const fpHalf = F[4 + hs.length];
  let o3 = fl.length * nOut;
  const XP = d.slice(o3, (o3 += wrt.length));
  const XM = d.slice(o3, (o3 += wrt.length));
  const XMH = d.slice(o3, (o3 += wrt.length));
  const XS = steps.map(() => d.slice(o3, (o3 += wrt.length)));
  // u along the second difference, so the h² coefficient u·(vᵀ f'' v) is as large as possible.
  const d2 = fp.map((p, j) => p + fm[j] - 2 * f0[j]);
  const norm = Math.sqrt(dot(d2, d2));
  if (!(norm > 0)) return inconclusive('taylor: f(x + hv) + f(x − hv) − 2 f(x) is 0: f is linear along v here');
  const uFlat = d2.map((v) => v / norm);
  let at0 = 0;
  const cts = f0l.map((t) => {
    const part = Float32Array.from(uFlat.subarray(at0, at0 + t.size));
    at0 += t.size;
    return tensor(part, [...t.shape]);
  });
  const [y, pullback] = vjp(c.f, ...c.inputs);
  const grads = pull(y, pullback as never, cts);
  const G = yield wrt.map((i) => grads[i]);
  const X0 = xs;
  // The odd part (f(x + hv) − f(x − hv))·u − <g, dx> = a·h + b·h³ with b = u·f'''(v, v, v)/3, and a
  // nonzero only for a wrong gradient. Measured at h0 and h0/2 the two terms separate; |b|/2 is the
  // cubic coefficient of the remainders, which tells whether h² dominates at these steps.
  const odd = (P: Float64Array, M: Float64Array, A: readonly Float32Array[], B: readonly Float32Array[]) => {
    let s2 = 0;
    wrt.forEach((_, j) => {
      for (let e = 0; e < G[j].length; e++) s2 -= G[j][e] * (A[j][e] - B[j][e]);
    });
    for (let e = 0; e < P.length; e++) s2 += uFlat[e] * (P[e] - M[e]);
    return s2;
  };
  const b = (odd(fp, fm, XP, XM) - 2 * odd(fpHalf, fmHalf, XS[hs.length], XMH)) / (0.75 * h0 ** 3);
  const cubic = Math.abs(b) / 2;
  const curvature = norm / (h0 * h0);
  const noise: number[] = [];
  const remainders = hs.map((_, q) => {
    let lin = 0;
    let linSq = 0;
    wrt.forEach((_2, j) => {
      for (let e = 0; e < G[j].length; e++) {
        const t = G[j][e] * (XS[q][j][e] - X0[j][e]);
        lin += t;
        linSq += t * t;
      }
    });
    const f1 = F[4 + q];
    let change = 0;
    let fSq = 0;
    for (let e = 0; e < f1.length; e++) {
      change += uFlat[e] * (f1[e] - f0[e]);
      fSq += uFlat[e] ** 2 * (f1[e] ** 2 + f0[e] ** 2);
    }
    // float32 round-off of this remainder, RMS of independent roundings at 4 ulps (several times the real figure).
    noise.push(4 * EPS32 * Math.sqrt(fSq + linSq));
    return Math.abs(change - lin);
  });
  const numbers = `r(h) for h = ${hs.join(', ')}: ${remainders.map(num).join(', ')}`;
  if (!(remainders[remainders.length - 1] > 10 * noise[noise.length - 1])) return inconclusive(`taylor: the remainder at h = ${hs[hs.length - 1]} is within 10x of float32 round-off (${num(noise[noise.length - 1])})`);
  if (!(cubic * h0 <= 0.1 * (curvature / 2))) return inconclusive(`taylor: the h³ term is over 10% of the h² term at h = ${h0} (curvature ${num(curvature)}, cubic ${num(cubic)}): not yet asymptotic`);
  let dev = 0;
  const ratios: number[] = [];
  for (let q = 0; q + 1 < remainders.length; q++) {
    const r = remainders[q] / remainders[q + 1];
    ratios.push(r);
    dev = Math.max(dev, r !== r ? Infinity : Math.abs(r - 4));
  }
  const text = `${numbers}; ratios ${ratios.map(num).join(', ')}`;
  return measured(dev, dev <= 1 ? `taylor: ${text}` : `Taylor remainders do not shrink like h² (ratios should be ~4; ~2 means the gradient is wrong by O(1)): ${text}`);
}

const BODIES: Record<VjpCheck, (c: VjpCase, seed: number, o: VjpLawOptions) => Body<Outcome>> = { fd: fdBody, dot: dotBody, taylor: taylorBody };

/** Combine the checks of one case: the first failure, else the worst conclusive ratio; inconclusive if any check was. */
function combine(outcomes: readonly Outcome[]): Outcome {
  const bad = outcomes.find((x) => !x.ok);
  if (bad !== undefined) return bad;
  const skipped = outcomes.filter((x) => !x.conclusive);
  if (skipped.length > 0) return { ok: true, ratio: 0, detail: skipped.map((x) => x.detail).join('; '), conclusive: false };
  return outcomes.reduce((a, b) => (b.ratio > a.ratio ? b : a));
}

function inputsArb(specs: NonNullable<VjpLawOptions['inputs']>): fc.Arbitrary<Tensor[]> {
  return fc.tuple(...specs.map((s) => (isArbitrary<Tensor>(s) ? s : Array.isArray(s) ? tensorArb({ shape: s as Shape }) : tensorArb(s as TensorOptions))));
}

/**
 * The VJP of `subject` checked by finite differences, the dot-product test and the Taylor test. The
 * subject is a function (with `inputs` saying how to generate its arguments) or an arbitrary of
 * cases `{ f, inputs, wrt? }`.
 */
export function vjpLaw(subject: Fn | fc.Arbitrary<VjpCase>, o: VjpLawOptions = {}): Law<VjpLawCase> {
  const checks = o.checks ?? ['fd', 'dot', 'taylor'];
  let cases: fc.Arbitrary<VjpCase>;
  if (typeof subject === 'function') {
    if (o.inputs === undefined) throw new ArgumentError('vjpLaw', 'give `inputs` (one entry per argument of the function)');
    cases = inputsArb(o.inputs).map((inputs) => ({ f: subject, inputs, ...(o.wrt === undefined ? {} : { wrt: o.wrt }) }));
  } else {
    cases = subject;
  }
  const arbitrary = fc.tuple(cases, seedArb()).map(([c, seed]): VjpLawCase => ({ ...c, seed }));
  const name = typeof subject === 'function' ? `vjpLaw(${subject.name || 'f'})` : 'vjpLaw';
  const measure = async (c: VjpLawCase) => {
    const outcomes: Outcome[] = [];
    for (const check of checks) outcomes.push(await drive(BODIES[check](c, c.seed, o), backendOf(o.backend)));
    return combine(outcomes);
  };
  return makeLaw(`${name} [${checks.join(', ')}]`, arbitrary, measure, { runs: o.runs ?? 25, minConclusive: o.minConclusive });
}
