/**
 * Fused row-wise ops over the last axis: softmax, layer normalisation (without the affine part) and
 * GELU, each with a fused gradient op. Written from primitives they take 5-10 passes over the data
 * forward and more backward; fused they take one or two (docs/benchmarks.md). Each is still a gpu.js
 * kernel (the reference on cpu/webgpu/webgl2) with a host loop on webasm, and a primitive with its VJP
 * rule like every other op.
 */
import { wasmKernelsOn } from '../backend/wasm-memory.ts';
import { wasmGelu, wasmLayerNorm, wasmRowOp } from '../backend/wasm-rowops.ts';
import { assertTensor, type Tensor } from './tensor.ts';
import { floorDiv } from './codegen.ts';
import { ShapeError } from './errors.ts';
import type { OpImpl } from './exec.ts';
import { add, div, exp, mean, mul, neg, square, sub, sum, sumTo } from './ops.ts';
import { apply, definePrimitive, type Primitive } from './primitive.ts';
import { fmt, sameShape, type Shape } from './shape.ts';
import { mapFromStatements, mapKernel, rowKernel } from '../backend/wgsl-kernels.ts';

const INV_SQRT_2PI = 1 / Math.sqrt(2 * Math.PI);

type RowOp = 'softmax' | 'softmaxGrad' | 'normalize' | 'normalizeGrad';

/** The length of the last axis (the row length), or a ShapeError for a scalar. */
function rowLength(op: string, x: Tensor): number {
  if (x.rank === 0) throw new ShapeError(op, `expected a tensor of rank >= 1, got shape ${fmt(x.shape)}`);
  return x.shape[x.rank - 1];
}

function rowImpl(op: RowOp, C: number, eps: number): OpImpl {
  const key = `${op}|${C}|${eps}`;
  const kernel = (gpu: boolean) => {
    const head = `${floorDiv('this.thread.x', C, 'row', gpu)}const base = row * ${C};\n`;
    const stats = `let mu = 0;\nfor (let j = 0; j < ${C}; j++) { mu += a0[base + j]; }\nmu = mu / ${C};\n` +
      `let vr = 0;\nfor (let j = 0; j < ${C}; j++) { const d = a0[base + j] - mu; vr += d * d; }\n` +
      `const inv = 1 / Math.sqrt(vr / ${C} + ${eps});\n`;
    let body: string;
    switch (op) {
      case 'softmax':
        body = `let m = a0[base];\nfor (let j = 1; j < ${C}; j++) { m = Math.max(m, a0[base + j]); }\n` +
          `let s = 0;\nfor (let j = 0; j < ${C}; j++) { s += Math.exp(a0[base + j] - m); }\n` +
          `return Math.exp(a0[this.thread.x] - m) / s;\n`;
        break;
      case 'softmaxGrad': // a0 = y, a1 = g: y * (g - sum(g * y))
        body = `let s = 0;\nfor (let j = 0; j < ${C}; j++) { s += a0[base + j] * a1[base + j]; }\n` +
          `return a0[this.thread.x] * (a1[this.thread.x] - s);\n`;
        break;
      case 'normalize':
        body = stats + `return (a0[this.thread.x] - mu) * inv;\n`;
        break;
      case 'normalizeGrad': // a0 = x, a1 = g: (g - mean(g) - xhat * mean(g * xhat)) * inv
        body = stats + `let mg = 0;\nlet mgx = 0;\nfor (let j = 0; j < ${C}; j++) { mg += a1[base + j]; mgx += a1[base + j] * (a0[base + j] - mu) * inv; }\n` +
          `return (a1[this.thread.x] - mg / ${C} - (a0[this.thread.x] - mu) * inv * mgx / ${C}) * inv;\n`;
        break;
    }
    const args = op === 'softmax' || op === 'normalize' ? 'a0' : 'a0, a1';
    return { key, source: `function (${args}) {\n${head}${body}}` };
  };
  // webasm fast path: generated wasm SIMD (wasm-rowops.ts); the loop below where it is off or missing.
  const host = () => (wasmKernelsOn() ? (ins: Float32Array[], out: Float32Array) => wasmRowOp(op, ins, out, C, eps) : hostLoop);
  const hostLoop = (ins: Float32Array[], out: Float32Array) => {
    const [a, g] = ins;
    const rows = out.length / C;
    for (let r = 0; r < rows; r++) {
      const base = r * C;
      if (op === 'softmax') {
        let m = a[base];
        // A NaN anywhere makes the sum NaN, so every output NaN, wherever the max lands.
        for (let j = 1; j < C; j++) if (a[base + j] > m) m = a[base + j];
        let s = 0;
        for (let j = 0; j < C; j++) {
          const e = Math.exp(a[base + j] - m);
          out[base + j] = e;
          s += e;
        }
        const inv = 1 / s;
        for (let j = 0; j < C; j++) out[base + j] *= inv;
      } else if (op === 'softmaxGrad') {
        let s = 0;
        for (let j = 0; j < C; j++) s += a[base + j] * g[base + j];
        for (let j = 0; j < C; j++) out[base + j] = a[base + j] * (g[base + j] - s);
      } else {
        let mu = 0;
        for (let j = 0; j < C; j++) mu += a[base + j];
        mu /= C;
        let vr = 0;
        for (let j = 0; j < C; j++) {
          const d = a[base + j] - mu;
          vr += d * d;
        }
        const inv = 1 / Math.sqrt(vr / C + eps);
        if (op === 'normalize') {
          for (let j = 0; j < C; j++) out[base + j] = (a[base + j] - mu) * inv;
        } else {
          let mg = 0;
          let mgx = 0;
          for (let j = 0; j < C; j++) {
            mg += g[base + j];
            mgx += g[base + j] * (a[base + j] - mu) * inv;
          }
          mg /= C;
          mgx /= C;
          for (let j = 0; j < C; j++) out[base + j] = (g[base + j] - mg - (a[base + j] - mu) * inv * mgx) * inv;
        }
      }
    }
  };
  return { name: op, kernel, host, fills: true, wgsl: ({ outSize }) => rowKernel(op, C === 0 ? 0 : outSize / C, C, eps) };
}

interface RowAttrs {
  readonly eps: number;
}

const rowPrimitive = (op: RowOp, save: 'inputs' | 'output', vjp: Primitive<RowAttrs>['vjp']): Primitive<RowAttrs> =>
  definePrimitive<RowAttrs>({
    name: op,
    shape: ([x]) => x,
    impl: ([x], { eps }) => rowImpl(op, x[x.length - 1], eps),
    save,
    vjp,
  });

const SOFTMAX_GRAD = rowPrimitive('softmaxGrad', 'inputs', (h, { x: [y, g] }) => [
  // out = y * (g - s), s = sum(g * y): linear in g (the same op), and in y: h * (g - s) - g * sum(h * y).
  sub(mul(h, sub(g, sum(mul(g, y), -1, true))), mul(g, sum(mul(h, y), -1, true))),
  softmaxGrad(y, h),
]);
const SOFTMAX = rowPrimitive('softmax', 'output', (g, { y }) => [softmaxGrad(y!, g)]);
// out = J(x)ᵀ g with J normalize's Jacobian, which is symmetric: the cotangent of g is normalizeGrad(x, h).
// In x, with s = 1/sqrt(var + eps), xhat = (x - mean) s, m = mean(g xhat), k = mean(h xhat) per row:
// d<h, out>/dx = -s² (xhat (mean((g - ḡ)(h - h̄)) - 3 m k) + k (g - ḡ) + m (h - h̄)).
const NORMALIZE_GRAD = rowPrimitive('normalizeGrad', 'inputs', (h, { x: [x, g], attrs: { eps }, needs }) => {
  if (!needs[0]) return [null, normalizeGrad(x, h, eps)];
  const row = (t: Tensor) => mean(t, -1, true);
  const xhat = normalizeLast(x, eps);
  const s2 = div(1, add(row(square(sub(x, row(x)))), eps));
  const gc = sub(g, row(g));
  const hc = sub(h, row(h));
  const m = row(mul(g, xhat));
  const k = row(mul(h, xhat));
  const c = sub(row(mul(gc, hc)), mul(mul(m, k), 3));
  return [neg(mul(s2, add(mul(xhat, c), add(mul(k, gc), mul(m, hc))))), normalizeGrad(x, h, eps)];
});
const NORMALIZE = rowPrimitive('normalize', 'inputs', (g, { x: [x], attrs }) => [normalizeGrad(x, g, attrs.eps)]);

function rowOp(prim: Primitive<RowAttrs>, inputs: Tensor[], eps = 0): Tensor {
  const op = prim.name;
  inputs.forEach((t, i) => assertTensor(op, t, i === 0 ? 'input' : 'cotangent'));
  rowLength(op, inputs[0]);
  if (inputs.length === 2 && !sameShape(inputs[0].shape, inputs[1].shape)) {
    throw new ShapeError(op, `shapes ${fmt(inputs[0].shape)} and ${fmt(inputs[1].shape)} differ`);
  }
  return apply(prim, inputs, { eps });
}

/** softmax over the last axis. */
export const softmaxLast = (x: Tensor): Tensor => rowOp(SOFTMAX, [x]);
/** y * (g - sum(g * y)) over the last axis: the VJP of softmax at output y. */
export const softmaxGrad = (y: Tensor, g: Tensor): Tensor => rowOp(SOFTMAX_GRAD, [y, g]);
/** (x - mean) / sqrt(var + eps) over the last axis (biased variance). */
export const normalizeLast = (x: Tensor, eps: number): Tensor => rowOp(NORMALIZE, [x], eps);
/** The VJP of normalizeLast at x for cotangent g. */
export const normalizeGrad = (x: Tensor, g: Tensor, eps: number): Tensor => rowOp(NORMALIZE_GRAD, [x, g], eps);

// ---------------------------------------------------------------------------------------------
// layer norm with its affine part

/**
 * (x - mean) * rsqrt(var + eps) * w + b over the last axis, w and b of shape [C], in one pass; rounded as
 * the three ops normalize, mul, add would be (host loop and wasm), so it gives their bits. One kernel
 * instead of three, and its VJP keeps x, w and b rather than the normalized x.
 */
function layerNormImpl(C: number, eps: number): OpImpl {
  const key = `layerNorm|${C}|${eps}`;
  const kernel = (gpu: boolean) => ({
    key,
    source: `function (a0, a1, a2) {
${floorDiv('this.thread.x', C, 'row', gpu)}const base = row * ${C};
let mu = 0;
for (let j = 0; j < ${C}; j++) { mu += a0[base + j]; }
mu = mu / ${C};
let vr = 0;
for (let j = 0; j < ${C}; j++) { const d = a0[base + j] - mu; vr += d * d; }
const inv = 1 / Math.sqrt(vr / ${C} + ${eps});
return (a0[this.thread.x] - mu) * inv * a1[this.thread.x - base] + a2[this.thread.x - base];
}`,
  });
  const fr = Math.fround;
  const hostLoop = ([a, w, b]: Float32Array[], out: Float32Array) => {
    for (let base = 0; base < out.length; base += C) {
      let mu = 0;
      for (let j = 0; j < C; j++) mu += a[base + j];
      mu /= C;
      let vr = 0;
      for (let j = 0; j < C; j++) vr += (a[base + j] - mu) * (a[base + j] - mu);
      const inv = 1 / Math.sqrt(vr / C + eps);
      for (let j = 0; j < C; j++) out[base + j] = fr(fr(fr((a[base + j] - mu) * inv) * w[j]) + b[j]);
    }
  };
  const host = () => (wasmKernelsOn() ? (ins: Float32Array[], out: Float32Array) => wasmLayerNorm(ins, out, C, eps) : hostLoop);
  return { name: 'layerNorm', kernel, host, fills: true, wgsl: ({ outSize }) => rowKernel('layerNorm', C === 0 ? 0 : outSize / C, C, eps) };
}

const LAYER_NORM = definePrimitive<RowAttrs>({
  name: 'layerNorm',
  shape: ([x]) => x,
  impl: ([x], { eps }) => layerNormImpl(x[x.length - 1], eps),
  save: 'inputs',
  vjp: (g, { x: [x, w, b], attrs: { eps }, needs }) => [
    needs[0] ? normalizeGrad(x, mul(g, w), eps) : null,
    needs[1] ? sumTo(mul(g, normalizeLast(x, eps)), w.shape) : null,
    needs[2] ? sumTo(g, b.shape) : null,
  ],
});

/** Layer norm over the last axis with weight and bias of shape [C] (C the last dim), one fused op. */
export function layerNormAffine(x: Tensor, w: Tensor, b: Tensor, eps: number): Tensor {
  assertTensor('layerNorm', x, 'input');
  assertTensor('layerNorm', w, 'weight');
  assertTensor('layerNorm', b, 'bias');
  const C = rowLength('layerNorm', x);
  if (w.rank !== 1 || b.rank !== 1 || w.shape[0] !== C || b.shape[0] !== C) {
    throw new ShapeError('layerNorm', `weight and bias must have shape [${C}] for input ${fmt(x.shape)}, got ${fmt(w.shape)} and ${fmt(b.shape)}`);
  }
  return apply(LAYER_NORM, [x, w, b], { eps });
}

// ---------------------------------------------------------------------------------------------
// GELU (erf form)

/**
 * Statements computing `cdf` = Phi(x0), the standard normal CDF, as 0.5 * erfc(-x0 / sqrt 2) with the
 * Numerical Recipes erfc (fractional error < 1.2e-7 everywhere). Unlike 0.5 * (1 + erf(z)) it does not
 * cancel for negative x0, so float32 kernels keep full relative precision in GELU's left tail.
 */
const PHI_STATEMENTS = `const u = -x0 * 0.7071067811865476;
const t = 1 / (1 + 0.5 * Math.abs(u));
const y = t * Math.exp(-u * u - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))));
const cdf = 0.5 * (u >= 0 ? y : 2 - y);
`;

function geluImpl(grad: boolean): OpImpl {
  const result = grad ? `x1 * (cdf + x0 * Math.exp(-0.5 * x0 * x0) * ${INV_SQRT_2PI})` : 'x0 * cdf';
  const key = `gelu${grad ? 'Grad' : ''}`;
  const source = `function (${grad ? 'a0, a1' : 'a0'}) {
const x0 = a0[this.thread.x];
${grad ? 'const x1 = a1[this.thread.x];\n' : ''}${PHI_STATEMENTS}return ${result};
}`;
  const host = () => (wasmKernelsOn() ? (ins: Float32Array[], out: Float32Array) => wasmGelu(grad, ins, out) : GELU_HOST[grad ? 1 : 0]);
  return {
    name: key,
    kernel: (gpu) => ({ key: `${key}|${gpu}`, source }),
    host,
    fills: true,
    wgsl: ({ outSize }) => mapKernel(mapFromStatements(key, outSize, grad ? 2 : 1, PHI_STATEMENTS, result)),
  };
}

/** The host loops, built once so V8 optimises them (a loop per call would stay interpreted). */
const GELU_HOST = [false, true].map((grad) => {
  const result = grad ? `x1 * (cdf + x0 * Math.exp(-0.5 * x0 * x0) * ${INV_SQRT_2PI})` : 'x0 * cdf';
  return new Function('ins', 'out', `const a = ins[0]; const g = ins[1];
for (let i = 0; i < out.length; i++) {
const x0 = a[i];
${grad ? 'const x1 = g[i];' : ''}
${PHI_STATEMENTS}out[i] = ${result};
}`) as (ins: Float32Array[], out: Float32Array) => void;
});

const sameAsFirst = ([x]: readonly Shape[]): Shape => x;

const GELU_GRAD = definePrimitive<void>({
  name: 'geluGrad',
  shape: sameAsFirst,
  impl: () => geluImpl(true),
  save: 'inputs',
  // g * gelu'(x): linear in g; d/dx gelu'(x) = phi(x) (2 - x^2).
  vjp: (h, { x: [x, g] }) => [
    mul(mul(h, g), mul(mul(exp(mul(mul(x, x), -0.5)), INV_SQRT_2PI), sub(2, mul(x, x)))),
    geluGrad(x, h),
  ],
});

const GELU = definePrimitive<void>({
  name: 'gelu',
  shape: sameAsFirst,
  impl: () => geluImpl(false),
  save: 'inputs',
  vjp: (g, { x: [x] }) => [geluGrad(x, g)],
});

/** GELU, exact erf form (PyTorch nn.GELU()). */
export function gelu(x: Tensor): Tensor {
  assertTensor('gelu', x);
  return apply(GELU, [x], undefined);
}

/** g * GELU'(x). */
export function geluGrad(x: Tensor, g: Tensor): Tensor {
  assertTensor('geluGrad', x);
  assertTensor('geluGrad', g, 'cotangent');
  if (!sameShape(x.shape, g.shape)) throw new ShapeError('geluGrad', `shapes ${fmt(x.shape)} and ${fmt(g.shape)} differ`);
  return apply(GELU_GRAD, [x, g], undefined);
}
