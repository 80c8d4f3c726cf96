/**
 * Convolution (1-D, 2-D, 3-D, with groups) and 3-D max/avg pooling, PyTorch semantics
 * (cross-correlation, zero padding, floor output size; avg pooling counts padding). Everything is
 * computed in a canonical 3-D form [B, C, D, H, W]; 1-D and 2-D inputs gain unit leading spatial axes.
 */
import { matmulKernelRun } from '../backend/matmul.ts';
import { convKernel, convMatmulPasses, type ConvGeometry } from '../backend/wgsl-kernels.ts';
import { ArgumentError, ShapeError } from './errors.ts';
import { floorDiv, splitIndex } from './codegen.ts';
import { planTiling, type OpImpl, type WgslContext } from './exec.ts';
import { apply, definePrimitive, type Primitive } from './primitive.ts';
import { fmt, type Shape } from './shape.ts';
import { assertTensor, type Tensor } from './tensor.ts';

type Triple = [number, number, number];

export interface ConvOptions {
  readonly stride?: number | readonly number[];
  readonly padding?: number | readonly number[];
  readonly groups?: number;
}

export interface ConvAttrs {
  readonly stride: Triple;
  readonly padding: Triple;
  readonly groups: number;
  /** Number of spatial axes of the user's tensors (1, 2 or 3). */
  readonly spatial: number;
}

export interface PoolAttrs {
  readonly kernel: Triple;
  readonly stride: Triple;
  readonly padding: Triple;
}

function triple(op: string, what: string, v: number | readonly number[] | undefined, spatial: number, dflt: number): Triple {
  const min = what === 'padding' ? 0 : 1;
  const list = v === undefined ? Array(spatial).fill(dflt) : typeof v === 'number' ? Array(spatial).fill(v) : Array.isArray(v) ? [...v] : null;
  if (list === null || list.length !== spatial || list.some((x) => typeof x !== 'number' || !Number.isInteger(x) || x < min)) {
    throw new ArgumentError(op, `${what} must be ${spatial} integer(s) >= ${min}, got ${JSON.stringify(v)}`);
  }
  return [...Array(3 - spatial).fill(what === 'padding' ? 0 : 1), ...list] as Triple;
}

const outSize = (n: number, k: number, s: number, p: number) => Math.floor((n + 2 * p - k) / s) + 1;

/** Canonical 5-D shape of a [B, C, ...spatial] tensor. */
const to5 = (shape: Shape, spatial: number): number[] => [shape[0], shape[1], ...Array(3 - spatial).fill(1), ...shape.slice(2)];

// ---------------------------------------------------------------------------------------------
// Convolution

export type ConvPart = 'fwd' | 'dx' | 'dw';

/** The attributes of a convolution's gradient ops: the convolution's own, and the shape of the result. */
export interface GradAttrs<A> {
  readonly of: A;
  readonly shape: Shape;
}

export interface Convolution<A> {
  /** y = conv(x, w) */
  readonly fwd: Primitive<A>;
  /** dx = gradInput(g, w): shaped like x */
  readonly dx: Primitive<GradAttrs<A>>;
  /** dw = gradWeight(x, g): shaped like w */
  readonly dw: Primitive<GradAttrs<A>>;
}

/**
 * The three primitives of a convolution y = conv(x, w): forward, input gradient and weight gradient,
 * from an output-shape rule and a kernel builder over (x, w, y) shapes. gradInput(g, w) and
 * gradWeight(x, g) are linear in both operands, so the adjoints of each are the other two ops.
 */
export function convolutionPrimitives<A>(
  names: Readonly<Record<ConvPart, string>>,
  outShape: (x: Shape, w: Shape, a: A) => Shape,
  impl: (part: ConvPart, x: Shape, w: Shape, y: Shape, a: A) => OpImpl,
): Convolution<A> {
  const fwd: Primitive<A> = definePrimitive<A>({
    name: names.fwd,
    shape: ([x, w], a) => outShape(x, w, a),
    impl: ([x, w], a, y) => impl('fwd', x, w, y, a),
    save: 'inputs',
    vjp: (g, { x: [x, w], attrs, needs }) => [
      needs[0] ? apply(dx, [g, w], { of: attrs, shape: x.shape }) : null,
      needs[1] ? apply(dw, [x, g], { of: attrs, shape: w.shape }) : null,
    ],
  });
  const dx: Primitive<GradAttrs<A>> = definePrimitive<GradAttrs<A>>({
    name: names.dx,
    shape: (_, a) => a.shape,
    impl: ([g, w], a, x) => impl('dx', x, w, g, a.of),
    save: 'inputs',
    vjp: (h, { x: [g, w], attrs }) => [apply(fwd, [h, w], attrs.of), apply(dw, [h, g], { of: attrs.of, shape: w.shape })],
  });
  const dw: Primitive<GradAttrs<A>> = definePrimitive<GradAttrs<A>>({
    name: names.dw,
    shape: (_, a) => a.shape,
    impl: ([x, g], a, w) => impl('dw', x, w, g, a.of),
    save: 'inputs',
    vjp: (h, { x: [x, g], attrs }) => [apply(dx, [g, h], { of: attrs.of, shape: x.shape }), apply(fwd, [x, h], attrs.of)],
  });
  return { fwd, dx, dw };
}

function convOutShape(x: Shape, w: Shape, a: ConvAttrs): Shape {
  const xs = to5(x, a.spatial);
  const ws = to5(w, a.spatial);
  const os = [xs[0], ws[0], ...[2, 3, 4].map((d) => outSize(xs[d], ws[d], a.stride[d - 2], a.padding[d - 2]))];
  return [os[0], os[1], ...os.slice(5 - a.spatial)];
}

const CONV = convolutionPrimitives<ConvAttrs>(
  { fwd: 'conv', dx: 'convTranspose', dw: 'convWeightGrad' },
  convOutShape,
  (part, x, w, y, a) => convImpl(part, to5(x, a.spatial), to5(w, a.spatial), to5(y, a.spatial), a),
);

/** x [B, Cin, ...S] conv w [Cout, Cin/groups, ...K] -> [B, Cout, ...S'] (no bias). */
export function conv(x: Tensor, w: Tensor, opts: ConvOptions | ConvAttrs = {}): Tensor {
  const op = 'conv';
  assertTensor(op, x, 'input');
  assertTensor(op, w, 'weight');
  const spatial = w.rank - 2;
  if (spatial < 1 || spatial > 3 || x.rank !== w.rank) {
    throw new ShapeError(op, `expected input [B, C, ...spatial] and weight [Cout, Cin/groups, ...kernel] with 1-3 spatial axes, got ${fmt(x.shape)} and ${fmt(w.shape)}`);
  }
  const attrs: ConvAttrs = 'spatial' in opts ? opts : {
    stride: triple(op, 'stride', opts.stride, spatial, 1),
    padding: triple(op, 'padding', opts.padding, spatial, 0),
    groups: opts.groups ?? 1,
    spatial,
  };
  const xs = to5(x.shape, spatial);
  const ws = to5(w.shape, spatial);
  const g = attrs.groups;
  if (!Number.isInteger(g) || g < 1 || xs[1] % g !== 0 || ws[0] % g !== 0 || ws[1] * g !== xs[1]) {
    throw new ShapeError(op, `input ${fmt(x.shape)} and weight ${fmt(w.shape)} do not fit groups=${g} (need Cin = weight.shape[1] * groups and Cout divisible by groups)`);
  }
  if (convOutShape(x.shape, w.shape, attrs).slice(2).some((n) => n <= 0)) {
    throw new ShapeError(op, `kernel ${fmt(w.shape.slice(2))} is larger than the padded input ${fmt(x.shape)} (padding ${fmt(attrs.padding.slice(3 - spatial))})`);
  }
  return apply(CONV.fwd, [x, w], attrs);
}

/** The input-gradient of conv: the transposed convolution of g with w, shaped like the conv input. */
export const convTranspose = (g: Tensor, w: Tensor, inputShape: Shape, attrs: ConvAttrs): Tensor =>
  apply(CONV.dx, [g, w], { of: attrs, shape: inputShape });

/** The weight-gradient of conv. */
export const convWeightGrad = (x: Tensor, g: Tensor, weightShape: Shape, attrs: ConvAttrs): Tensor =>
  apply(CONV.dw, [x, g], { of: attrs, shape: weightShape });


function convImpl(part: ConvPart, xs: number[], ws: number[], os: number[], a: ConvAttrs): OpImpl {
  const [B, Cin, D, H, W] = xs;
  const [Cout, Cg, KD, KH, KW] = ws;
  const [, , OD, OH, OW] = os;
  const [sd, sh, sw] = a.stride;
  const [pd, ph, pw] = a.padding;
  const coutPerGroup = Cout / a.groups;
  const key = `conv-${part}|${xs}|${ws}|${os}|${a.stride}|${a.padding}|${a.groups}`;
  // Flat offsets: x[b, c, z, y, x], w[co, ci, kz, ky, kx], o[b, co, z, y, x].
  const X = (b: string, c: string, z: string, y: string, x: string) => `((((${b}) * ${Cin} + (${c})) * ${D} + (${z})) * ${H} + (${y})) * ${W} + (${x})`;
  const Wt = (co: string, ci: string, z: string, y: string, x: string) => `((((${co}) * ${Cg} + (${ci})) * ${KD} + (${z})) * ${KH} + (${y})) * ${KW} + (${x})`;
  const O = (b: string, co: string, z: string, y: string, x: string) => `((((${b}) * ${Cout} + (${co})) * ${OD} + (${z})) * ${OH} + (${y})) * ${OW} + (${x})`;
  const decode = (names: string[], dims: number[], gpu: boolean) => {
    let s = 'let r = this.thread.x;\n';
    for (let i = names.length - 1; i >= 0; i--) s += splitIndex('r', names[i], dims[i], gpu, i > 0);
    return s;
  };
  const kernelSource = (gpu: boolean): string => {
    if (part === 'fwd') {
      return `function (xa, wa) {
${decode(['b', 'co', 'oz', 'oy', 'ox'], os, gpu)}
${floorDiv('co', coutPerGroup, 'gi', gpu)}
let acc = 0;
for (let ci = 0; ci < ${Cg}; ci++) { for (let kz = 0; kz < ${KD}; kz++) { for (let ky = 0; ky < ${KH}; ky++) { for (let kx = 0; kx < ${KW}; kx++) {
  const iz = oz * ${sd} - ${pd} + kz; const iy = oy * ${sh} - ${ph} + ky; const ix = ox * ${sw} - ${pw} + kx;
  if (iz >= 0 && iz < ${D} && iy >= 0 && iy < ${H} && ix >= 0 && ix < ${W}) {
    acc += xa[${X('b', `gi * ${Cg} + ci`, 'iz', 'iy', 'ix')}] * wa[${Wt('co', 'ci', 'kz', 'ky', 'kx')}];
  }
} } } }
return acc;
}`;
    }
    if (part === 'dx') {
      return `function (ga, wa) {
${decode(['b', 'c', 'iz', 'iy', 'ix'], xs, gpu)}
${floorDiv('c', Cg, 'gi', gpu)}
const ci = c - gi * ${Cg};
let acc = 0;
for (let j = 0; j < ${coutPerGroup}; j++) { for (let kz = 0; kz < ${KD}; kz++) { for (let ky = 0; ky < ${KH}; ky++) { for (let kx = 0; kx < ${KW}; kx++) {
  const tz = iz + ${pd} - kz; const ty = iy + ${ph} - ky; const tx = ix + ${pw} - kx;
  ${floorDiv('tz', sd, 'oz', gpu)}  ${floorDiv('ty', sh, 'oy', gpu)}  ${floorDiv('tx', sw, 'ox', gpu)}  if (tz >= 0 && ty >= 0 && tx >= 0 && oz * ${sd} == tz && oy * ${sh} == ty && ox * ${sw} == tx && oz < ${OD} && oy < ${OH} && ox < ${OW}) {
    acc += ga[${O('b', `gi * ${coutPerGroup} + j`, 'oz', 'oy', 'ox')}] * wa[${Wt(`gi * ${coutPerGroup} + j`, 'ci', 'kz', 'ky', 'kx')}];
  }
} } } }
return acc;
}`;
    }
    return `function (xa, ga) {
${decode(['co', 'ci', 'kz', 'ky', 'kx'], ws, gpu)}
${floorDiv('co', coutPerGroup, 'gi', gpu)}
let acc = 0;
for (let b = 0; b < ${B}; b++) { for (let oz = 0; oz < ${OD}; oz++) { for (let oy = 0; oy < ${OH}; oy++) { for (let ox = 0; ox < ${OW}; ox++) {
  const iz = oz * ${sd} - ${pd} + kz; const iy = oy * ${sh} - ${ph} + ky; const ix = ox * ${sw} - ${pw} + kx;
  if (iz >= 0 && iz < ${D} && iy >= 0 && iy < ${H} && ix >= 0 && ix < ${W}) {
    acc += xa[${X('b', `gi * ${Cg} + ci`, 'iz', 'iy', 'ix')}] * ga[${O('b', 'co', 'oz', 'oy', 'ox')}];
  }
} } } }
return acc;
}`;
  };
  // Host: grouped/depthwise convs run direct loops over the in-bounds taps; dense convs (groups 1,
  // e.g. the patch embed) go through im2col and the matmul kernel, which is several times faster.
  const geom: ConvGeometry = { B, Cin, D, H, W, Cout, Cg, KD, KH, KW, OD, OH, OW, sd, sh, sw, pd, ph, pw, coutPerGroup };
  const host = () =>
    a.groups === 1 && Cg * KD * KH * KW >= 8 ? convViaMatmul(part, geom) : convDirect(part, geom);
  // WGSL: dense convs the same way (im2col and the tiled matmul), the rest (and dx) one thread per output.
  const wgsl = (ctx: WgslContext) =>
    a.groups === 1 && Cg * KD * KH * KW >= 8 && part !== 'dx'
      ? convMatmulPasses(part, geom, (p) => planTiling(ctx, p))
      : convKernel(part, geom);
  return { name: `conv-${part}`, kernel: (gpu) => ({ key, source: kernelSource(gpu) }), host, wgsl };
}


/**
 * Direct loops over the in-bounds taps, one function per part built once from one template (a
 * `part` test inside the inner loop made V8 deoptimise; three shared monomorphic functions stay hot).
 * fwd: p = x, q = w, out = y. dx: p = g, q = w, out = dx (scatter). dw: p = x, q = g, out = dw.
 */
const DIRECT_TEMPLATE = (perOutput: string, inner: string, after: string) => `
const { B, Cin, D, H, W, Cout, Cg, KD, KH, KW, OD, OH, OW, sd, sh, sw, pd, ph, pw, coutPerGroup } = c;
for (let b = 0; b < B; b++) {
  for (let co = 0; co < Cout; co++) {
    const gi = Math.floor(co / coutPerGroup);
    for (let oz = 0; oz < OD; oz++) {
      const z0 = oz * sd - pd;
      const kz0 = Math.max(0, -z0);
      const kz1 = Math.min(KD, D - z0);
      for (let oy = 0; oy < OH; oy++) {
        const y0 = oy * sh - ph;
        const ky0 = Math.max(0, -y0);
        const ky1 = Math.min(KH, H - y0);
        for (let ox = 0; ox < OW; ox++) {
          const x0 = ox * sw - pw;
          const kx0 = Math.max(0, -x0);
          const kx1 = Math.min(KW, W - x0);
          const o = (((b * Cout + co) * OD + oz) * OH + oy) * OW + ox;
          ${perOutput}
          for (let ci = 0; ci < Cg; ci++) {
            const xc = (b * Cin + gi * Cg + ci) * D;
            const wc = (co * Cg + ci) * KD;
            for (let kz = kz0; kz < kz1; kz++) {
              for (let ky = ky0; ky < ky1; ky++) {
                const xrow = ((xc + z0 + kz) * H + y0 + ky) * W + x0;
                const wrow = ((wc + kz) * KH + ky) * KW;
                for (let kx = kx0; kx < kx1; kx++) ${inner}
              }
            }
          }
          ${after}
        }
      }
    }
  }
}`;

type DirectLoop = (c: ConvGeometry, p: Float32Array, q: Float32Array, out: Float32Array) => void;
const directLoop = (perOutput: string, inner: string, after = ''): DirectLoop =>
  new Function('c', 'p', 'q', 'out', DIRECT_TEMPLATE(perOutput, inner, after)) as DirectLoop;
const DIRECT: Record<ConvPart, DirectLoop> = {
  fwd: directLoop('let acc = 0;', 'acc += p[xrow + kx] * q[wrow + kx];', 'out[o] = acc;'),
  dx: directLoop('const go = p[o]; if (go === 0) continue;', 'out[xrow + kx] += go * q[wrow + kx];'),
  dw: directLoop('const go = q[o]; if (go === 0) continue;', 'out[wrow + kx] += go * p[xrow + kx];'),
};

function convDirect(part: ConvPart, c: ConvGeometry) {
  const loop = DIRECT[part];
  return (ins: Float32Array[], out: Float32Array) => loop(c, ins[0], ins[1], out);
}

/**
 * Dense convs as matrix products: col[(ci,kz,ky,kx), (b,oz,oy,ox)] gathers the input taps (zero where
 * padded); forward = W[Cout, CinK] @ col, dw = G[Cout, B*P] @ colᵀ, dx = col2im(Wᵀ @ G).
 */
function convViaMatmul(part: ConvPart, c: ConvGeometry) {
  const { B, Cin, D, H, W, Cout, KD, KH, KW, OD, OH, OW, sd, sh, sw, pd, ph, pw } = c;
  const P = OD * OH * OW;
  const CK = Cin * KD * KH * KW;
  const BP = B * P;
  // col[(ci,kz,ky,kx), (b,oz,oy,ox)] <- x (im2col), or dx += col (col2im), over the in-bounds taps.
  const transfer = (x: Float32Array, col: Float32Array, toCol: boolean) => {
    for (let ci = 0; ci < Cin; ci++) {
      for (let kz = 0; kz < KD; kz++) {
        for (let ky = 0; ky < KH; ky++) {
          for (let kx = 0; kx < KW; kx++) {
            const rowBase = (((ci * KD + kz) * KH + ky) * KW + kx) * BP;
            for (let b = 0; b < B; b++) {
              for (let oz = 0; oz < OD; oz++) {
                const iz = oz * sd - pd + kz;
                if (iz < 0 || iz >= D) continue;
                for (let oy = 0; oy < OH; oy++) {
                  const iy = oy * sh - ph + ky;
                  if (iy < 0 || iy >= H) continue;
                  const xbase = (((b * Cin + ci) * D + iz) * H + iy) * W - pw + kx;
                  const cbase = rowBase + ((b * OD + oz) * OH + oy) * OW;
                  const ox0 = Math.max(0, Math.ceil((pw - kx) / sw));
                  const ox1 = Math.min(OW, Math.floor((W - 1 + pw - kx) / sw) + 1);
                  if (toCol) for (let ox = ox0; ox < ox1; ox++) col[cbase + ox] = x[xbase + ox * sw];
                  else for (let ox = ox0; ox < ox1; ox++) x[xbase + ox * sw] += col[cbase + ox];
                }
              }
            }
          }
        }
      }
    }
  };
  const im2col = (x: Float32Array): Float32Array => {
    const col = new Float32Array(CK * BP);
    transfer(x, col, true);
    return col;
  };
  // [B, Cout, P] <-> [Cout, B*P]
  const toChannelMajor = (g: Float32Array): Float32Array => {
    const t = new Float32Array(Cout * BP);
    for (let b = 0; b < B; b++) for (let co = 0; co < Cout; co++) t.set(g.subarray((b * Cout + co) * P, (b * Cout + co + 1) * P), co * BP + b * P);
    return t;
  };
  return (ins: Float32Array[], out: Float32Array) => {
    if (part === 'fwd') {
      const y = matmulKernelRun({ batch: 1, m: Cout, k: CK, n: BP, transA: false, transB: false }, ins[1], im2col(ins[0]));
      for (let b = 0; b < B; b++) for (let co = 0; co < Cout; co++) out.set(y.subarray(co * BP + b * P, co * BP + (b + 1) * P), (b * Cout + co) * P);
    } else if (part === 'dw') {
      out.set(matmulKernelRun({ batch: 1, m: Cout, k: BP, n: CK, transA: false, transB: true }, toChannelMajor(ins[1]), im2col(ins[0])));
    } else {
      const dcol = matmulKernelRun({ batch: 1, m: CK, k: Cout, n: BP, transA: true, transB: false }, ins[1], toChannelMajor(ins[0]));
      transfer(out, dcol, false);
    }
  };
}

// ---------------------------------------------------------------------------------------------
// Pooling (3-D, [B, C, D, H, W] or [C, D, H, W])

function poolAttrs(op: string, x: Tensor, kernel: readonly number[], stride?: readonly number[], padding?: readonly number[]): PoolAttrs {
  if (x.rank !== 5 && x.rank !== 4) throw new ShapeError(op, `expected [B, C, D, H, W] or [C, D, H, W], got ${fmt(x.shape)}`);
  const k = triple(op, 'kernel', kernel, 3, 1);
  const s = triple(op, 'stride', stride ?? kernel, 3, 1);
  const p = triple(op, 'padding', padding, 3, 0);
  if (k.some((v) => v < 1) || s.some((v) => v < 1)) throw new ArgumentError(op, `kernel ${fmt(k)} and stride ${fmt(s)} must be positive`);
  if (p.some((v, i) => v > k[i] / 2)) throw new ArgumentError(op, `padding ${fmt(p)} must be at most half the kernel ${fmt(k)} (as PyTorch requires)`);
  return { kernel: k, stride: s, padding: p };
}

const pool5 = (shape: Shape): number[] => (shape.length === 4 ? [1, ...shape] : [...shape]);

/** Pooling keeps the leading axes and pools the last three. */
const poolOutShape = (x: Shape, a: PoolAttrs): Shape =>
  [...x.slice(0, x.length - 3), ...[0, 1, 2].map((d) => outSize(x[x.length - 3 + d], a.kernel[d], a.stride[d], a.padding[d]))];

function checkPoolGrid(op: string, shape: Shape, a: PoolAttrs): void {
  if (poolOutShape(shape, a).some((n) => n <= 0)) {
    throw new ShapeError(op, `kernel ${fmt(a.kernel)} with padding ${fmt(a.padding)} is larger than the grid of input ${fmt(shape)}`);
  }
}

// maxPoolGrad(x, g) scatters g to each window's first maximum and maxPoolSelect(x, h) gathers from there:
// each is linear in its second operand and the other's transpose; in x both are piecewise constant (zero
// derivative almost everywhere), so derivatives of every order exist.
const MAX_POOL_GRAD: Primitive<PoolAttrs> = definePrimitive<PoolAttrs>({
  name: 'maxPoolGrad',
  shape: ([x]) => x,
  impl: ([x], a) => poolImpl('maxGrad', pool5(x), a),
  save: 'inputs',
  vjp: (h, { x: [x], attrs }) => [null, apply(MAX_POOL_SELECT, [x, h], attrs)],
});

const MAX_POOL_SELECT: Primitive<PoolAttrs> = definePrimitive<PoolAttrs>({
  name: 'maxPoolSelect',
  shape: ([x], a) => poolOutShape(x, a),
  impl: ([x], a) => poolImpl('maxSelect', pool5(x), a),
  save: 'inputs',
  vjp: (k, { x: [x], attrs }) => [null, apply(MAX_POOL_GRAD, [x, k], attrs)],
});

const MAX_POOL = definePrimitive<PoolAttrs>({
  name: 'maxPool',
  shape: ([x], a) => poolOutShape(x, a),
  impl: ([x], a) => poolImpl('max', pool5(x), a),
  save: 'inputs',
  vjp: (g, { x: [x], attrs }) => [apply(MAX_POOL_GRAD, [x, g], attrs)],
});

const AVG_POOL: Primitive<PoolAttrs> = definePrimitive<PoolAttrs>({
  name: 'avgPool',
  shape: ([x], a) => poolOutShape(x, a),
  impl: ([x], a) => poolImpl('avg', pool5(x), a),
  save: 'nothing',
  vjp: (g, { shapes, attrs }) => [avgPoolGrad(g, shapes[0], attrs)],
});

const AVG_POOL_GRAD = definePrimitive<GradAttrs<PoolAttrs>>({
  name: 'avgPoolGrad',
  shape: (_, a) => a.shape,
  impl: (_, a, x) => poolImpl('avgGrad', pool5(x), a.of),
  save: 'nothing',
  vjp: (h, { attrs }) => [apply(AVG_POOL, [h], attrs.of)],
});

export function maxPool3d(x: Tensor, kernel: readonly number[], stride?: readonly number[], padding?: readonly number[]): Tensor {
  assertTensor('maxPool3d', x);
  const a = poolAttrs('maxPool3d', x, kernel, stride, padding);
  checkPoolGrid('maxPool3d', x.shape, a);
  return apply(MAX_POOL, [x], a);
}

export function avgPool3d(x: Tensor, kernel: readonly number[], stride?: readonly number[], padding?: readonly number[]): Tensor {
  assertTensor('avgPool3d', x);
  const a = poolAttrs('avgPool3d', x, kernel, stride, padding);
  checkPoolGrid('avgPool3d', x.shape, a);
  return apply(AVG_POOL, [x], a);
}

/** Gradient of max pooling: each window's gradient goes to its first maximal element (PyTorch). */
export const maxPoolGrad = (x: Tensor, g: Tensor, a: PoolAttrs): Tensor => apply(MAX_POOL_GRAD, [x, g], a);

/** h at each window's first maximal element of x: the transpose of maxPoolGrad in its cotangent (and max pooling's JVP). */
export const maxPoolSelect = (x: Tensor, h: Tensor, a: PoolAttrs): Tensor => apply(MAX_POOL_SELECT, [x, h], a);

export const avgPoolGrad = (g: Tensor, inputShape: Shape, a: PoolAttrs): Tensor => apply(AVG_POOL_GRAD, [g], { of: a, shape: inputShape });

function poolImpl(part: 'max' | 'avg' | 'maxSelect' | 'maxGrad' | 'avgGrad', xs: number[], a: PoolAttrs): OpImpl {
  const [B, C, D, H, W] = xs;
  const [KD, KH, KW] = a.kernel;
  const [sd, sh, sw] = a.stride;
  const [pd, ph, pw] = a.padding;
  const [OD, OH, OW] = [0, 1, 2].map((d) => outSize(xs[d + 2], a.kernel[d], a.stride[d], a.padding[d]));
  const K = KD * KH * KW;
  const key = `pool-${part}|${xs}|${a.kernel}|${a.stride}|${a.padding}`;
  const window = (body: string) => `for (let kz = 0; kz < ${KD}; kz++) { for (let ky = 0; ky < ${KH}; ky++) { for (let kx = 0; kx < ${KW}; kx++) {
  const iz = oz * ${sd} - ${pd} + kz; const iy = oy * ${sh} - ${ph} + ky; const ix = ox * ${sw} - ${pw} + kx;
  if (iz >= 0 && iz < ${D} && iy >= 0 && iy < ${H} && ix >= 0 && ix < ${W}) { ${body} }
} } }`;
  const kernelSource = (gpu: boolean): string => {
    if (part === 'max' || part === 'avg' || part === 'maxSelect') {
      return `function (${part === 'maxSelect' ? 'xa, ha' : 'xa'}) {
let r = this.thread.x;
${gpu ? splitIndex('r', 'ox', OW, true) + splitIndex('r', 'oy', OH, true) + splitIndex('r', 'oz', OD, true) : `const ox = r % ${OW}; r = (r - ox) / ${OW};
const oy = r % ${OH}; r = (r - oy) / ${OH};
const oz = r % ${OD}; r = (r - oz) / ${OD};`}
const base = r * ${D * H * W};
let acc = ${part === 'avg' ? '0' : '-Infinity'};
${part === 'maxSelect' ? 'let arg = -1;' : ''}
${window(`const v = xa[base + (iz * ${H} + iy) * ${W} + ix]; ${part === 'avg' ? 'acc += v;' : part === 'max' ? 'if (v > acc) { acc = v; }' : `if (v > acc) { acc = v; arg = (iz * ${H} + iy) * ${W} + ix; }`}`)}
${part === 'maxSelect' ? 'if (arg < 0) { return 0; }\nreturn ha[base + arg];' : `return ${part === 'max' ? 'acc' : `acc / ${K}`};`}
}`;
    }
    // Gradients: for each input element, visit every window that contains it.
    const inner =
      part === 'avgGrad'
        ? `acc += ga[gbase + (oz * ${OH} + oy) * ${OW} + ox] / ${K};`
        : `let best = -Infinity; let arg = -1;
${window(`const v = xa[base + (iz * ${H} + iy) * ${W} + ix]; if (v > best) { best = v; arg = (iz * ${H} + iy) * ${W} + ix; }`)}
if (arg == self) { acc += ga[gbase + (oz * ${OH} + oy) * ${OW} + ox]; }`;
    return `function (${part === 'avgGrad' ? 'ga' : 'xa, ga'}) {
let r = this.thread.x;
${gpu ? splitIndex('r', 'x0', W, true) + splitIndex('r', 'y0', H, true) + splitIndex('r', 'z0', D, true) : `const x0 = r % ${W}; r = (r - x0) / ${W};
const y0 = r % ${H}; r = (r - y0) / ${H};
const z0 = r % ${D}; r = (r - z0) / ${D};`}
const base = r * ${D * H * W};
const gbase = r * ${OD * OH * OW};
const self = (z0 * ${H} + y0) * ${W} + x0;
let acc = 0;
for (let oz = 0; oz < ${OD}; oz++) { for (let oy = 0; oy < ${OH}; oy++) { for (let ox = 0; ox < ${OW}; ox++) {
  const dz = z0 + ${pd} - oz * ${sd}; const dy = y0 + ${ph} - oy * ${sh}; const dx = x0 + ${pw} - ox * ${sw};
  if (dz >= 0 && dz < ${KD} && dy >= 0 && dy < ${KH} && dx >= 0 && dx < ${KW}) {
    ${inner}
  }
} } }
return acc;
}`;
  };
  const host = () => (ins: Float32Array[], out: Float32Array) => {
    const src = ins[0];
    const grad = part === 'maxGrad' || part === 'maxSelect' ? ins[1] : part === 'avgGrad' ? ins[0] : null;
    for (let plane = 0; plane < B * C; plane++) {
      const base = plane * D * H * W;
      const gbase = plane * OD * OH * OW;
      for (let oz = 0; oz < OD; oz++) {
        for (let oy = 0; oy < OH; oy++) {
          for (let ox = 0; ox < OW; ox++) {
            const o = gbase + (oz * OH + oy) * OW + ox;
            let best = -Infinity;
            let arg = -1;
            let acc = 0;
            for (let kz = 0; kz < KD; kz++) {
              const iz = oz * sd - pd + kz;
              if (iz < 0 || iz >= D) continue;
              for (let ky = 0; ky < KH; ky++) {
                const iy = oy * sh - ph + ky;
                if (iy < 0 || iy >= H) continue;
                for (let kx = 0; kx < KW; kx++) {
                  const ix = ox * sw - pw + kx;
                  if (ix < 0 || ix >= W) continue;
                  const i = base + (iz * H + iy) * W + ix;
                  if (part === 'avgGrad') out[i] += grad![o] / K;
                  else if (part === 'avg') acc += src[i];
                  else if (src[i] > best) {
                    best = src[i];
                    arg = i;
                  }
                }
              }
            }
            if (part === 'avg') out[o] = acc / K;
            else if (part === 'max') out[o] = best;
            else if (part === 'maxSelect') out[o] = arg >= 0 ? grad![arg] : 0;
            else if (part === 'maxGrad' && arg >= 0) out[arg] += grad![o];
          }
        }
      }
    }
  };
  return { name: `pool-${part}`, kernel: (gpu) => ({ key, source: kernelSource(gpu) }), host };
}
