/**
 * Depthwise 3-D convolution on channels-last tensors: x [N, D, H, W, C], w [C, 1, kd, kh, kw] (PyTorch's
 * depthwise Conv3d weight) -> [N, D', H', W', C]. The same math as `conv(x, w, { groups: C })` on
 * [N, C, D, H, W]; MViT's attention pooling keeps its tokens as [B·heads, T, H, W, C], so this form needs
 * no permutes around the pooling, and the host loop's inner loop runs over the contiguous channels.
 */
import { wasmDepthwise } from '../backend/wasm-depthwise.ts';
import { depthwiseKernel } from '../backend/wgsl-kernels.ts';
import { wasmKernelsOn } from '../backend/wasm-memory.ts';
import { floorDiv, splitIndex } from './codegen.ts';
import { ArgumentError, ShapeError } from './errors.ts';
import { convolutionPrimitives, type ConvPart } from './conv.ts';
import type { OpImpl } from './exec.ts';
import { apply } from './primitive.ts';
import { fmt, type Shape } from './shape.ts';
import { assertTensor, type Tensor } from './tensor.ts';

type Triple = readonly [number, number, number];

export interface DepthwiseAttrs {
  readonly stride: Triple;
  readonly padding: Triple;
}

const outSize = (n: number, k: number, s: number, p: number) => Math.floor((n + 2 * p - k) / s) + 1;

function checkTriple(op: string, what: string, v: readonly number[], min: number): Triple {
  if (!Array.isArray(v) || v.length !== 3 || v.some((x) => !Number.isInteger(x) || x < min)) {
    throw new ArgumentError(op, `${what} must be 3 integers >= ${min}, got ${JSON.stringify(v)}`);
  }
  return [v[0], v[1], v[2]];
}

const DEPTHWISE = convolutionPrimitives<DepthwiseAttrs>(
  { fwd: 'depthwiseConv3d', dx: 'depthwiseConv3dGradInput', dw: 'depthwiseConv3dGradWeight' },
  (x, w, a) => outShape(x, w, a),
  (part, x, w, y, a) => impl(part, x, w, y, a),
);

export function depthwiseConv3d(x: Tensor, w: Tensor, opts: { stride: readonly number[]; padding: readonly number[] }): Tensor {
  const op = 'depthwiseConv3d';
  assertTensor(op, x, 'input');
  assertTensor(op, w, 'weight');
  if (x.rank !== 5 || w.rank !== 5 || w.shape[1] !== 1 || w.shape[0] !== x.shape[4]) {
    throw new ShapeError(op, `expected input [N, D, H, W, C] and weight [C, 1, kd, kh, kw], got ${fmt(x.shape)} and ${fmt(w.shape)}`);
  }
  const a: DepthwiseAttrs = { stride: checkTriple(op, 'stride', opts.stride, 1), padding: checkTriple(op, 'padding', opts.padding, 0) };
  if (outShape(x.shape, w.shape, a).some((n) => n <= 0)) throw new ShapeError(op, `kernel ${fmt(w.shape.slice(2))} is larger than the padded input ${fmt(x.shape)}`);
  return apply(DEPTHWISE.fwd, [x, w], a);
}

function outShape(xs: Shape, ws: Shape, a: DepthwiseAttrs): number[] {
  return [xs[0], ...[0, 1, 2].map((d) => outSize(xs[d + 1], ws[d + 2], a.stride[d], a.padding[d])), xs[4]];
}

function impl(part: ConvPart, xs: Shape, ws: Shape, os: Shape, a: DepthwiseAttrs): OpImpl {
  const [N, D, H, W, C] = xs;
  const [, , KD, KH, KW] = ws;
  const [, OD, OH, OW] = os;
  const [sd, sh, sw] = a.stride;
  const [pd, ph, pw] = a.padding;
  const key = `dwconv-${part}|${xs}|${ws}|${os}|${a.stride}|${a.padding}`;
  const X = `((((n) * ${D} + iz) * ${H} + iy) * ${W} + ix) * ${C} + c`;
  const O = `((((n) * ${OD} + oz) * ${OH} + oy) * ${OW} + ox) * ${C} + c`;
  const Wt = `((c * ${KD} + kz) * ${KH} + ky) * ${KW} + kx`;
  const decode = (names: string[], dims: readonly number[], gpu: boolean) => {
    let s = 'let r = this.thread.x;\n';
    for (let i = names.length - 1; i >= 0; i--) s += splitIndex('r', names[i], dims[i], gpu, i > 0);
    return s;
  };
  const taps = (body: string) =>
    `for (let kz = 0; kz < ${KD}; kz++) { for (let ky = 0; ky < ${KH}; ky++) { for (let kx = 0; kx < ${KW}; kx++) {\n${body}\n} } }`;
  const kernelSource = (gpu: boolean): string => {
    if (part === 'fwd') {
      return `function (xa, wa) {
${decode(['n', 'oz', 'oy', 'ox', 'c'], os, gpu)}
let acc = 0;
${taps(`const iz = oz * ${sd} - ${pd} + kz; const iy = oy * ${sh} - ${ph} + ky; const ix = ox * ${sw} - ${pw} + kx;
if (iz >= 0 && iz < ${D} && iy >= 0 && iy < ${H} && ix >= 0 && ix < ${W}) { acc += xa[${X}] * wa[${Wt}]; }`)}
return acc;
}`;
    }
    if (part === 'dx') {
      return `function (ga, wa) {
${decode(['n', 'iz', 'iy', 'ix', 'c'], xs, gpu)}
let acc = 0;
${taps(`const tz = iz + ${pd} - kz; const ty = iy + ${ph} - ky; const tx = ix + ${pw} - kx;
${floorDiv('tz', sd, 'oz', gpu)}${floorDiv('ty', sh, 'oy', gpu)}${floorDiv('tx', sw, 'ox', gpu)}
if (tz >= 0 && ty >= 0 && tx >= 0 && oz * ${sd} == tz && oy * ${sh} == ty && ox * ${sw} == tx && oz < ${OD} && oy < ${OH} && ox < ${OW}) { acc += ga[${O}] * wa[${Wt}]; }`)}
return acc;
}`;
    }
    return `function (xa, ga) {
${decode(['c', 'kz', 'ky', 'kx'], [C, KD, KH, KW], gpu)}
let acc = 0;
for (let n = 0; n < ${N}; n++) { for (let oz = 0; oz < ${OD}; oz++) { for (let oy = 0; oy < ${OH}; oy++) { for (let ox = 0; ox < ${OW}; ox++) {
  const iz = oz * ${sd} - ${pd} + kz; const iy = oy * ${sh} - ${ph} + ky; const ix = ox * ${sw} - ${pw} + kx;
  if (iz >= 0 && iz < ${D} && iy >= 0 && iy < ${H} && ix >= 0 && ix < ${W}) { acc += xa[${X}] * ga[${O}]; }
} } } }
return acc;
}`;
  };
  const geom = [N, D, H, W, C, KD, KH, KW, OD, OH, OW, sd, sh, sw, pd, ph, pw];
  const loop = HOST[part];
  // webasm fast path: generated wasm SIMD (wasm-depthwise.ts); the host loop where it is off or missing.
  const host = () => (wasmKernelsOn()
    ? (ins: Float32Array[], out: Float32Array) => wasmDepthwise(part, geom, ins[0], ins[1], out)
    : (ins: Float32Array[], out: Float32Array) => loop(geom, ins[0], ins[1], out));
  return { name: `dwconv-${part}`, kernel: (gpu) => ({ key, source: kernelSource(gpu) }), host, wgsl: () => depthwiseKernel(part, geom) };
}

/**
 * Host loops, one per part from one template (monomorphic, so V8 keeps them optimised): for every output
 * position and every in-bounds tap, a multiply-add over the C contiguous channels.
 * fwd: p = x, q = w, out = y. dx: p = g, q = w, out = dx. dw: p = x, q = g, out = dw.
 */
const HOST_TEMPLATE = (inner: string) => `
const [N, D, H, W, C, KD, KH, KW, OD, OH, OW, sd, sh, sw, pd, ph, pw] = geom;
const K = KD * KH * KW;
for (let n = 0; n < N; n++) {
  for (let oz = 0; oz < OD; oz++) {
    for (let oy = 0; oy < OH; oy++) {
      for (let ox = 0; ox < OW; ox++) {
        const o = (((n * OD + oz) * OH + oy) * OW + ox) * C;
        for (let kz = 0; kz < KD; kz++) {
          const iz = oz * sd - pd + kz;
          if (iz < 0 || iz >= D) continue;
          for (let ky = 0; ky < KH; ky++) {
            const iy = oy * sh - ph + ky;
            if (iy < 0 || iy >= H) continue;
            for (let kx = 0; kx < KW; kx++) {
              const ix = ox * sw - pw + kx;
              if (ix < 0 || ix >= W) continue;
              const i = (((n * D + iz) * H + iy) * W + ix) * C;
              const t = (kz * KH + ky) * KW + kx;
              for (let c = 0; c < C; c++) ${inner}
            }
          }
        }
      }
    }
  }
}`;

type HostLoop = (geom: readonly number[], p: Float32Array, q: Float32Array, out: Float32Array) => void;
const hostLoop = (inner: string): HostLoop => new Function('geom', 'p', 'q', 'out', HOST_TEMPLATE(inner)) as HostLoop;
const HOST: Record<ConvPart, HostLoop> = {
  fwd: hostLoop('out[o + c] += p[i + c] * q[c * K + t];'),
  dx: hostLoop('out[i + c] += p[o + c] * q[c * K + t];'),
  dw: hostLoop('out[c * K + t] += p[i + c] * q[o + c];'),
};
