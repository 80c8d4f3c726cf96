/**
 * A tiny WebAssembly binary encoder: enough to emit the generated SIMD kernels (wasm-gemm.ts,
 * wasm-rowops.ts, wasm-depthwise.ts, wasm-fusion.ts) from TypeScript, and the engine's SIMD probe.
 *
 * - `ModuleBuilder`: functions (types are deduplicated), one memory (defined here and exported), exports.
 * - `FunctionBuilder`: locals, an op-by-name assembler (`op`, `load`, `store`, `simd`, `simdMem`), and
 *   structured control (`block`, `loop`, `ifElse`) whose labels are objects, so `br`/`brIf` compute the
 *   relative depth themselves.
 *
 * Only the opcodes the kernels need are listed; adding one is one table entry (opcode numbers from the
 * WebAssembly core spec, 1.0 plus fixed-width SIMD and bulk memory).
 */
import { InternalError } from '../tensor/errors.ts';

export type ValType = 'i32' | 'i64' | 'f32' | 'f64' | 'v128';

const VALTYPE: Record<ValType, number> = { i32: 0x7f, i64: 0x7e, f32: 0x7d, f64: 0x7c, v128: 0x7b };

/** Unsigned LEB128. */
export function uleb(value: number): number[] {
  if (!Number.isInteger(value) || value < 0) throw new InternalError('wasm-builder', `uleb: bad value ${value}`);
  const out: number[] = [];
  let v = value;
  do {
    let byte = v % 128;
    v = Math.floor(v / 128);
    if (v !== 0) byte |= 0x80;
    out.push(byte);
  } while (v !== 0);
  return out;
}

/** Signed LEB128 (i32/i64 constants). */
export function sleb(value: number): number[] {
  if (!Number.isInteger(value)) throw new InternalError('wasm-builder', `sleb: bad value ${value}`);
  const out: number[] = [];
  let v = value;
  for (;;) {
    const byte = ((v % 128) + 128) % 128;
    v = Math.floor(v / 128);
    const signBit = (byte & 0x40) !== 0;
    if ((v === 0 && !signBit) || (v === -1 && signBit)) {
      out.push(byte);
      return out;
    }
    out.push(byte | 0x80);
  }
}

function encodeString(s: string): number[] {
  const bytes = [...new TextEncoder().encode(s)];
  return [...uleb(bytes.length), ...bytes];
}

/** Plain (non-prefixed) opcodes without immediates. */
const OPS = {
  unreachable: 0x00, nop: 0x01, return: 0x0f, drop: 0x1a, select: 0x1b,
  'i32.eqz': 0x45, 'i32.eq': 0x46, 'i32.ne': 0x47, 'i32.lt_s': 0x48, 'i32.lt_u': 0x49,
  'i32.gt_s': 0x4a, 'i32.gt_u': 0x4b, 'i32.le_s': 0x4c, 'i32.le_u': 0x4d, 'i32.ge_s': 0x4e, 'i32.ge_u': 0x4f,
  'i32.add': 0x6a, 'i32.sub': 0x6b, 'i32.mul': 0x6c, 'i32.div_s': 0x6d, 'i32.div_u': 0x6e,
  'i32.rem_s': 0x6f, 'i32.rem_u': 0x70, 'i32.and': 0x71, 'i32.or': 0x72, 'i32.xor': 0x73, 'i32.shl': 0x74,
  'i32.shr_s': 0x75, 'i32.shr_u': 0x76,
  'f32.eq': 0x5b, 'f32.ne': 0x5c, 'f32.lt': 0x5d, 'f32.gt': 0x5e, 'f32.le': 0x5f, 'f32.ge': 0x60,
  'f32.abs': 0x8b, 'f32.neg': 0x8c, 'f32.sqrt': 0x91,
  'f32.add': 0x92, 'f32.sub': 0x93, 'f32.mul': 0x94, 'f32.div': 0x95, 'f32.min': 0x96, 'f32.max': 0x97,
  'f32.convert_i32_s': 0xb2, 'f64.add': 0xa0,
} as const;
export type PlainOp = keyof typeof OPS;

/** Memory access opcodes (take a memarg) and their natural alignment (log2 bytes). */
const MEM_OPS = {
  'i32.load': [0x28, 2], 'f32.load': [0x2a, 2], 'f64.load': [0x2b, 3], 'i32.store': [0x36, 2], 'f32.store': [0x38, 2],
  'f64.store': [0x39, 3],
} as const;
export type MemOp = keyof typeof MEM_OPS;

/** SIMD (0xfd-prefixed) opcodes without immediates. */
const SIMD_OPS = {
  'i32x4.splat': 0x11, 'f32x4.splat': 0x13,
  'i32x4.eq': 0x37, 'i32x4.lt_s': 0x39, 'i32x4.gt_s': 0x3b,
  'f32x4.eq': 0x41, 'f32x4.ne': 0x42, 'f32x4.lt': 0x43, 'f32x4.gt': 0x44, 'f32x4.le': 0x45, 'f32x4.ge': 0x46,
  'v128.not': 0x4d, 'v128.and': 0x4e, 'v128.andnot': 0x4f, 'v128.or': 0x50, 'v128.xor': 0x51,
  /** bitselect(a, b, mask): bits of a where mask is 1, of b where it is 0. */
  'v128.bitselect': 0x52,
  'f32x4.ceil': 0x67, 'f32x4.floor': 0x68, 'f32x4.trunc': 0x69, 'f32x4.nearest': 0x6a,
  'i32x4.shl': 0xab, 'i32x4.shr_s': 0xac, 'i32x4.shr_u': 0xad, 'i32x4.add': 0xae, 'i32x4.sub': 0xb1,
  'f32x4.abs': 0xe0, 'f32x4.neg': 0xe1, 'f32x4.sqrt': 0xe3,
  'f32x4.add': 0xe4, 'f32x4.sub': 0xe5, 'f32x4.mul': 0xe6, 'f32x4.div': 0xe7,
  /** min/max propagate NaN and order -0 < +0 (IEEE 754-2019 minimum/maximum, like Math.min/max). */
  'f32x4.min': 0xe8, 'f32x4.max': 0xe9,
  /** pmin(a, b) = b < a ? b : a; pmax(a, b) = a < b ? b : a (no NaN propagation from b). */
  'f32x4.pmin': 0xea, 'f32x4.pmax': 0xeb,
  'f64x2.promote_low_f32x4': 0x5f, 'f64x2.add': 0xf0,
  'i32x4.trunc_sat_f32x4_s': 0xf8, 'f32x4.convert_i32x4_s': 0xfa,
  /** relaxed-simd proposal (Node 20: behind --experimental-wasm-relaxed-simd). */
  'f32x4.relaxed_madd': 0x105,
} as const;
export type SimdOp = keyof typeof SIMD_OPS;

/** SIMD memory opcodes (memarg) and natural alignment (log2 bytes). */
const SIMD_MEM_OPS = {
  'v128.load': [0x00, 4], 'v128.load32_splat': [0x09, 2], 'v128.store': [0x0b, 4],
} as const;
export type SimdMemOp = keyof typeof SIMD_MEM_OPS;

/** A branch target; `br`/`brIf` translate it to a relative depth. */
export interface Label {
  readonly kind: 'block' | 'loop' | 'if';
}

export class FunctionBuilder {
  readonly code: number[] = [];
  private readonly localTypes: ValType[] = [];
  private readonly labels: Label[] = [];

  constructor(
    readonly name: string,
    readonly params: readonly ValType[],
    readonly results: readonly ValType[],
  ) {}

  /** A new local of `type`; returns its index. */
  local(type: ValType): number {
    this.localTypes.push(type);
    return this.params.length + this.localTypes.length - 1;
  }

  emit(...bytes: number[]): this {
    for (const b of bytes) this.code.push(b);
    return this;
  }

  op(name: PlainOp): this {
    return this.emit(OPS[name]);
  }

  get(index: number): this {
    return this.emit(0x20, ...uleb(index));
  }

  set(index: number): this {
    return this.emit(0x21, ...uleb(index));
  }

  tee(index: number): this {
    return this.emit(0x22, ...uleb(index));
  }

  i32(value: number): this {
    return this.emit(0x41, ...sleb(value | 0));
  }

  f32(value: number): this {
    const bytes = new Uint8Array(new Float32Array([value]).buffer);
    return this.emit(0x43, ...bytes);
  }

  /** v128.const with four f32 lanes. */
  v128f32(x: number, y = x, z = x, w = x): this {
    const bytes = new Uint8Array(new Float32Array([x, y, z, w]).buffer);
    return this.emit(0xfd, ...uleb(0x0c), ...bytes);
  }

  load(name: MemOp, offset = 0): this {
    const [code, align] = MEM_OPS[name];
    return this.emit(code, ...uleb(align), ...uleb(offset));
  }

  store(name: MemOp, offset = 0): this {
    return this.load(name, offset);
  }

  simd(name: SimdOp): this {
    return this.emit(0xfd, ...uleb(SIMD_OPS[name]));
  }

  /** A SIMD load or store with a constant byte offset; `align` defaults to natural alignment. */
  simdMem(name: SimdMemOp, offset = 0, align?: number): this {
    const [code, natural] = SIMD_MEM_OPS[name];
    return this.emit(0xfd, ...uleb(code), ...uleb(align ?? natural), ...uleb(offset));
  }

  /** f32x4.extract_lane: the scalar f32 in lane `lane` of the v128 on the stack. */
  extractLane(lane: number): this {
    return this.emit(0xfd, ...uleb(0x1f), lane);
  }

  /** f32x4.replace_lane: (v128, f32) -> v128 with lane `lane` replaced. */
  replaceLane(lane: number): this {
    return this.emit(0xfd, ...uleb(0x20), lane);
  }

  /** f64x2.extract_lane. */
  extractLaneF64(lane: number): this {
    return this.emit(0xfd, ...uleb(0x21), lane);
  }

  /** i8x16.shuffle of the two v128 on the stack by 16 lane indices (0-15 first operand, 16-31 second). */
  shuffle(lanes: readonly number[]): this {
    return this.emit(0xfd, ...uleb(0x0d), ...lanes);
  }

  /** v128.const with four i32 lanes. */
  v128i32(x: number, y = x, z = x, w = x): this {
    const bytes = new Uint8Array(new Int32Array([x, y, z, w]).buffer);
    return this.emit(0xfd, ...uleb(0x0c), ...bytes);
  }

  /** memory.fill(dst, value, bytes) (bulk memory). */
  memoryFill(): this {
    return this.emit(0xfc, ...uleb(11), 0x00);
  }

  /** memory.copy(dst, src, bytes) (bulk memory). */
  memoryCopy(): this {
    return this.emit(0xfc, ...uleb(10), 0x00, 0x00);
  }

  /** `block ... end` (no result); `body` receives the label (a `br` to it jumps past the end). */
  block(body: (label: Label) => void): this {
    return this.structured(0x02, 'block', body);
  }

  /** `loop ... end` (no result); a `br` to the label jumps back to the start. */
  loop(body: (label: Label) => void): this {
    return this.structured(0x03, 'loop', body);
  }

  /** Pops an i32 condition: `if then (else otherwise) end`, no result. */
  ifElse(then: () => void, otherwise?: () => void): this {
    const label: Label = { kind: 'if' };
    this.emit(0x04, 0x40);
    this.labels.push(label);
    then();
    if (otherwise !== undefined) {
      this.emit(0x05);
      otherwise();
    }
    this.labels.pop();
    return this.emit(0x0b);
  }

  br(label: Label): this {
    return this.emit(0x0c, ...uleb(this.depth(label)));
  }

  brIf(label: Label): this {
    return this.emit(0x0d, ...uleb(this.depth(label)));
  }

  /** The function's locals declaration followed by its code, as a code-section entry body. */
  body(): number[] {
    if (this.labels.length !== 0) throw new InternalError('wasm-builder', `${this.name}: unclosed block`);
    const groups: [number, ValType][] = [];
    for (const t of this.localTypes) {
      const last = groups[groups.length - 1];
      if (last !== undefined && last[1] === t) last[0]++;
      else groups.push([1, t]);
    }
    const decl = [...uleb(groups.length), ...groups.flatMap(([count, t]) => [...uleb(count), VALTYPE[t]])];
    return [...decl, ...this.code, 0x0b];
  }

  private structured(opcode: number, kind: Label['kind'], body: (label: Label) => void): this {
    const label: Label = { kind };
    this.emit(opcode, 0x40);
    this.labels.push(label);
    body(label);
    this.labels.pop();
    return this.emit(0x0b);
  }

  private depth(label: Label): number {
    const at = this.labels.lastIndexOf(label);
    if (at < 0) throw new InternalError('wasm-builder', `${this.name}: branch to a label that is not open`);
    return this.labels.length - 1 - at;
  }
}

function section(id: number, payload: number[]): number[] {
  return [id, ...uleb(payload.length), ...payload];
}

function vector(items: number[][]): number[] {
  return [...uleb(items.length), ...items.flat()];
}

export class ModuleBuilder {
  private readonly functions: FunctionBuilder[] = [];
  private memory: { name: string; minPages: number } | undefined;
  private importedMemory: { module: string; name: string; minPages: number } | undefined;

  /** A new exported function. */
  func(name: string, params: readonly ValType[], results: readonly ValType[] = []): FunctionBuilder {
    const f = new FunctionBuilder(name, params, results);
    this.functions.push(f);
    return f;
  }

  /** One memory defined in the module and exported under `name` (no maximum: it can grow). */
  exportMemory(name: string, minPages: number): this {
    this.memory = { name, minPages };
    return this;
  }

  /** The module's memory is imported as `module.name` (so several modules can share one memory). */
  importMemory(module: string, name: string, minPages: number): this {
    this.importedMemory = { module, name, minPages };
    return this;
  }

  toBytes(): Uint8Array<ArrayBuffer> {
    const typeKeys: string[] = [];
    const types: number[][] = [];
    const typeOf = this.functions.map((f) => {
      const sig = [0x60, ...uleb(f.params.length), ...f.params.map((t) => VALTYPE[t]),
        ...uleb(f.results.length), ...f.results.map((t) => VALTYPE[t])];
      const key = sig.join(',');
      let index = typeKeys.indexOf(key);
      if (index < 0) {
        index = typeKeys.length;
        typeKeys.push(key);
        types.push(sig);
      }
      return index;
    });
    const exports = this.functions.map((f, i) => [...encodeString(f.name), 0x00, ...uleb(i)]);
    const bytes = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
    bytes.push(...section(1, vector(types)));
    if (this.importedMemory !== undefined) {
      const { module, name, minPages } = this.importedMemory;
      bytes.push(...section(2, vector([[...encodeString(module), ...encodeString(name), 0x02, 0x00, ...uleb(minPages)]])));
    }
    bytes.push(...section(3, vector(typeOf.map((t) => uleb(t)))));
    if (this.memory !== undefined) {
      bytes.push(...section(5, vector([[0x00, ...uleb(this.memory.minPages)]])));
      exports.push([...encodeString(this.memory.name), 0x02, 0x00]);
    }
    bytes.push(...section(7, vector(exports)));
    bytes.push(...section(10, vector(this.functions.map((f) => {
      const body = f.body();
      return [...uleb(body.length), ...body];
    }))));
    return new Uint8Array(bytes);
  }
}

let simdAvailable: boolean | undefined;

/**
 * Whether this engine runs WebAssembly fixed-width SIMD (what the generated kernels and gpu.js's webasm
 * backend emit): validates `(func (result v128) i32.const 0 i8x16.splat i8x16.popcnt)` once, the
 * wasm-feature-detect probe.
 */
export function wasmSimdAvailable(): boolean {
  if (simdAvailable === undefined) {
    const probe = new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 10, 1, 8, 0, 65, 0, 253, 15, 253, 98, 11]);
    simdAvailable = typeof WebAssembly === 'object' && typeof WebAssembly.validate === 'function' && WebAssembly.validate(probe);
  }
  return simdAvailable;
}
