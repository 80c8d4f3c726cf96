/**
 * Generated WebAssembly SIMD for the channels-last depthwise 3-D convolution (src/tensor/depthwise.ts)
 * and its input and weight gradients: x [N, D, H, W, C], weight [C, kd, kh, kw] -> y [N, OD, OH, OW, C].
 *
 * One module per channel count C (MViT's attention pooling has a few head dims), so the channel loop is
 * unrolled into v128 registers: per output position, channels in blocks of up to 8 vectors (32
 * channels), and per block the in-bounds taps. The weight is staged tap-major, [K][Cp]
 * (Cp = C rounded up to 4), so a tap's channels are contiguous vectors like x's.
 *   fwd: acc[v] += x[in + v] * w[tap + v], stored at y[out] after the taps;
 *   dx:  dx[in + v] += g[out + v] * w[tap + v] (scatter: the same loops, no division by the stride);
 *   dw:  dw[tap + v] += x[in + v] * g[out + v].
 * When C is not a multiple of 4 the last vector is partial: its extra lanes read the next position (or
 * the staging slack); fwd stores them into the next output position, written after; dx masks them out
 * of the product (its read-modify-write must not touch the next position); dw accumulates them into the
 * weight rows' padding, which is dropped. Same float32 accumulation order per output element as the
 * host loop (taps in order), so results match it to rounding of the products only.
 */
import { ModuleBuilder, type ValType } from './wasm-builder.ts';
import { Simd, type V } from './wasm-simd.ts';
import { align64, ensureKernelBytes, kernelHeap, kernelMemory, SLACK_BYTES } from './wasm-memory.ts';
import { wasmFmaOn } from './wasm-gemm.ts';

export type DepthwisePart = 'fwd' | 'dx' | 'dw';

/** [N, D, H, W, C, KD, KH, KW, OD, OH, OW, sd, sh, sw, pd, ph, pw], as depthwise.ts passes it. */
export type DepthwiseGeometry = readonly number[];

const BLOCK = 8;

/**
 * fn(p, q, out, N, D, H, W, OD, OH, OW, KD, KH, KW, sd, sh, sw, pd, ph, pw) with byte pointers:
 * fwd p = x, q = wT, out = y; dx p = g, q = wT, out = dx (zeroed); dw p = x, q = g, out = dwT (zeroed).
 */
function emitPart(mod: ModuleBuilder, part: DepthwisePart, C: number, fma: boolean): void {
  const params: ValType[] = Array<ValType>(19).fill('i32');
  const f = mod.func(part, params);
  const s = new Simd(f, fma);
  const [P, Q, OUT, N, D, H, W, OD, OH, OW, KD, KH, KW, SD, SH, SW, PD, PH, PW] = params.map((_, i) => i);
  const nvec = Math.ceil(C / 4);
  const partialLanes = C % 4;
  const cp = nvec * 4;
  const laneMask: V | null = partialLanes === 0 ? null : (() => {
    const m = f.local('v128');
    f.v128i32(...[0, 1, 2, 3].map((l) => (l < partialLanes ? -1 : 0)) as [number, number, number, number]).set(m);
    return s.get(m);
  })();

  // Walk output positions in memory order: n, oz, oy, ox; outPos advances C * 4 bytes.
  const n = f.local('i32');
  const oz = f.local('i32');
  const oy = f.local('i32');
  const ox = f.local('i32');
  const outPos = f.local('i32');
  const iz0 = f.local('i32');
  const iy0 = f.local('i32');
  const ix0 = f.local('i32');
  const kz = f.local('i32');
  const ky = f.local('i32');
  const kx = f.local('i32');
  const iz = f.local('i32');
  const iy = f.local('i32');
  const ix = f.local('i32');
  const rowZ = f.local('i32');
  const rowY = f.local('i32');
  const inPos = f.local('i32');
  const tap = f.local('i32');
  const acc = Array.from({ length: Math.min(BLOCK, nvec) }, () => f.local('v128'));
  const gv = Array.from({ length: Math.min(BLOCK, nvec) }, () => f.local('v128'));
  // Output positions are [n][oz][oy][ox]; the x-side pointer of every part is `p` (fwd, dw) or `out` (dx).
  const inBase = part === 'dx' ? OUT : P;
  const outBase = part === 'fwd' ? OUT : part === 'dx' ? P : Q;
  const tapBase = part === 'dw' ? OUT : Q;

  /** `for (v = 0; v < count; v++) body` over an i32 param count. */
  const forRange = (v: number, count: number, body: () => void) => {
    f.i32(0).set(v);
    f.block((done) => {
      f.get(v).get(count).op('i32.ge_s').brIf(done);
      f.loop((top) => {
        body();
        f.get(v).i32(1).op('i32.add').tee(v).get(count).op('i32.lt_s').brIf(top);
      });
    });
  };
  /** `for (k = 0; k < count; k++) { i = i0 + k; if (0 <= i < limit) body; }` (one unsigned compare). */
  const forTaps = (k: number, count: number, i: number, i0: number, limit: number, body: () => void) => {
    f.i32(0).set(k);
    f.loop((top) => {
      f.block((skip) => {
        f.get(i0).get(k).op('i32.add').tee(i).get(limit).op('i32.ge_u').brIf(skip);
        body();
      });
      f.get(k).i32(1).op('i32.add').tee(k).get(count).op('i32.lt_s').brIf(top);
    });
  };

  const off = (v: number) => v * 16;
  const isPartial = (v: number) => laneMask !== null && v === nvec - 1;
  f.get(outBase).set(outPos);
  forRange(n, N, () => forRange(oz, OD, () => forRange(oy, OH, () => forRange(ox, OW, () => {
    f.get(oz).get(SD).op('i32.mul').get(PD).op('i32.sub').set(iz0);
    f.get(oy).get(SH).op('i32.mul').get(PH).op('i32.sub').set(iy0);
    f.get(ox).get(SW).op('i32.mul').get(PW).op('i32.sub').set(ix0);
    // Blocks inside the position: fwd's partial store spills into the *next* position, written later.
    for (let b0 = 0; b0 < nvec; b0 += BLOCK) {
      const vecs = Array.from({ length: Math.min(BLOCK, nvec - b0) }, (_, j) => b0 + j);
      vecs.forEach((v, j) => {
        if (part === 'fwd') s.set(acc[j], s.c(0));
        else s.set(gv[j], s.load(outPos, off(v)));
      });
      // rowZ = (n * D + iz) * H, rowY = (rowZ + iy) * W, inPos = inBase + (rowY + ix) * C * 4,
      // tap = tapBase + ((kz * KH + ky) * KW + kx) * Cp * 4
      forTaps(kz, KD, iz, iz0, D, () => {
        f.get(n).get(D).op('i32.mul').get(iz).op('i32.add').get(H).op('i32.mul').set(rowZ);
        forTaps(ky, KH, iy, iy0, H, () => {
          f.get(rowZ).get(iy).op('i32.add').get(W).op('i32.mul').set(rowY);
          forTaps(kx, KW, ix, ix0, W, () => {
            f.get(rowY).get(ix).op('i32.add').i32(C * 4).op('i32.mul').get(inBase).op('i32.add').set(inPos);
            f.get(kz).get(KH).op('i32.mul').get(ky).op('i32.add').get(KW).op('i32.mul').get(kx).op('i32.add')
              .i32(cp * 4).op('i32.mul').get(tapBase).op('i32.add').set(tap);
            vecs.forEach((v, j) => {
              if (part === 'fwd') s.set(acc[j], s.madd(s.load(inPos, off(v)), s.load(tap, off(v)), s.get(acc[j])));
              else if (part === 'dx') {
                const prod = s.mul(s.get(gv[j]), s.load(tap, off(v)));
                s.store(inPos, s.add(s.load(inPos, off(v)), isPartial(v) ? s.and(prod, laneMask!) : prod), off(v));
              } else s.store(tap, s.madd(s.load(inPos, off(v)), s.get(gv[j]), s.load(tap, off(v))), off(v));
            });
          });
        });
      });
      if (part === 'fwd') vecs.forEach((v, j) => s.store(outPos, s.get(acc[j]), off(v)));
    }
    f.get(outPos).i32(C * 4).op('i32.add').set(outPos);
  }))));
  s.hoistConstants();
}

/** The module bytes for C channels: exports fwd, dx and dw. */
export function depthwiseModuleBytes(C: number, fma: boolean): Uint8Array<ArrayBuffer> {
  const mod = new ModuleBuilder().importMemory('env', 'memory', 1);
  for (const part of ['fwd', 'dx', 'dw'] as const) emitPart(mod, part, C, fma);
  return mod.toBytes();
}

type PartFn = (p: number, q: number, out: number, ...geometry: number[]) => void;
type DepthwiseExports = Record<DepthwisePart, PartFn>;

const modules = new Map<string, DepthwiseExports>();

function partsFor(C: number): DepthwiseExports {
  const fma = wasmFmaOn();
  const key = `${C}${fma ? 'm' : ''}`;
  let ex = modules.get(key);
  if (ex === undefined) {
    const module = new WebAssembly.Module(depthwiseModuleBytes(C, fma));
    ex = new WebAssembly.Instance(module, { env: { memory: kernelMemory } }).exports as unknown as DepthwiseExports;
    modules.set(key, ex);
  }
  return ex;
}

/**
 * One part of the depthwise convolution, same operands as depthwise.ts's host loops: fwd (p = x, q = w,
 * out = y), dx (p = g, q = w, out = dx), dw (p = x, q = g, out = dw). `out` is written in full.
 */
export function wasmDepthwise(part: DepthwisePart, geom: DepthwiseGeometry, p: Float32Array, q: Float32Array, out: Float32Array): void {
  const [N, D, H, W, C, KD, KH, KW, OD, OH, OW, sd, sh, sw, pd, ph, pw] = geom;
  const K = KD * KH * KW;
  const cp = Math.ceil(C / 4) * 4;
  if (out.length === 0) return;
  const taps = K * cp;
  // Staged: p | q (the weight transposed to [K][Cp] for fwd/dx) | out (dw: [K][Cp]), each with slack.
  const qLen = part === 'dw' ? q.length : taps;
  const outLen = part === 'dw' ? taps : out.length;
  const pAt = 0;
  const qAt = pAt + align64(p.length * 4 + SLACK_BYTES);
  const outAt = qAt + align64(qLen * 4 + SLACK_BYTES);
  let h = ensureKernelBytes(outAt + align64(outLen * 4 + SLACK_BYTES));
  h.set(p, pAt / 4);
  if (part === 'dw') h.set(q, qAt / 4);
  else transposeIn(h, q, qAt / 4, C, K, cp);
  if (part !== 'fwd') h.fill(0, outAt / 4, outAt / 4 + outLen);
  partsFor(C)[part](pAt, qAt, outAt, N, D, H, W, OD, OH, OW, KD, KH, KW, sd, sh, sw, pd, ph, pw);
  h = kernelHeap();
  if (part !== 'dw') {
    out.set(h.subarray(outAt / 4, outAt / 4 + outLen));
    return;
  }
  const base = outAt / 4;
  for (let c = 0; c < C; c++) for (let t = 0; t < K; t++) out[c * K + t] = h[base + t * cp + c];
}

/** w [C][K] -> heap[at + t * cp + c]; padding channels zero. */
function transposeIn(h: Float32Array, w: Float32Array, at: number, C: number, K: number, cp: number): void {
  h.fill(0, at, at + K * cp);
  for (let c = 0; c < C; c++) for (let t = 0; t < K; t++) h[at + t * cp + c] = w[c * K + t];
}
