/**
 * Kernel expressions (the JavaScript subset our generated kernels are written in: numbers, names,
 * + - * / %, comparisons, && || !, ternaries and Math.abs/exp/log/sqrt/tanh/pow/max/min/floor/...)
 * translated to WGSL, so one expression string drives the gpu.js kernel, the host loop and our own
 * WGSL kernels alike.
 *
 * WGSL is typed where JavaScript is not: comparisons give `bool`, so the translator tracks each
 * subexpression's type and converts where JavaScript would (a bool used as a number becomes
 * `select(0.0, 1.0, b)`, a number used as a condition `x != 0.0`); every numeric literal is written as
 * a float so nothing is ever inferred as an integer.
 */
import { BackendError } from '../tensor/errors.ts';

type Node =
  | { k: 'num'; v: number }
  | { k: 'name'; v: string }
  | { k: 'call'; fn: string; args: Node[] }
  | { k: 'un'; op: string; a: Node }
  | { k: 'bin'; op: string; a: Node; b: Node }
  | { k: 'cond'; c: Node; a: Node; b: Node };

const TOKEN = /\s*(?:(\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)|([A-Za-z_$][\w$]*(?:\.[A-Za-z_$][\w$]*)?)|(===|!==|==|!=|>=|<=|&&|\|\||[-+*/%()<>?:,!]))/y;

function tokenize(src: string): string[] {
  const out: string[] = [];
  TOKEN.lastIndex = 0;
  let at = 0;
  while (at < src.length) {
    if (/^\s*$/.test(src.slice(at))) break;
    TOKEN.lastIndex = at;
    const m = TOKEN.exec(src);
    if (m === null) throw new BackendError(`wgsl: cannot translate kernel expression at '${src.slice(at, at + 20)}' in: ${src}`);
    out.push(m[1] ?? m[2] ?? m[3]);
    at = TOKEN.lastIndex;
  }
  return out;
}

const BINARY_PRECEDENCE: Record<string, number> = {
  '||': 1, '&&': 2, '==': 3, '!=': 3, '===': 3, '!==': 3, '<': 4, '>': 4, '<=': 4, '>=': 4, '+': 5, '-': 5, '*': 6, '/': 6, '%': 6,
};

function parse(src: string): Node {
  const toks = tokenize(src);
  let i = 0;
  const peek = () => toks[i];
  const next = () => toks[i++];
  const expect = (t: string) => {
    if (toks[i] !== t) throw new BackendError(`wgsl: expected '${t}' at token ${i} ('${toks[i] ?? 'end'}') in: ${src}`);
    i++;
  };
  const primary = (): Node => {
    const t = next();
    if (t === undefined) throw new BackendError(`wgsl: unexpected end of expression: ${src}`);
    if (t === '(') {
      const e = ternary();
      expect(')');
      return e;
    }
    if (t === '-' || t === '+' || t === '!') return { k: 'un', op: t, a: primary() };
    if (/^[\d.]/.test(t)) return { k: 'num', v: Number(t) };
    if (t === 'Infinity') return { k: 'num', v: Infinity };
    if (t === 'NaN') return { k: 'num', v: NaN };
    if (peek() === '(') {
      next();
      const args: Node[] = [];
      if (peek() !== ')') {
        args.push(ternary());
        while (peek() === ',') {
          next();
          args.push(ternary());
        }
      }
      expect(')');
      return { k: 'call', fn: t, args };
    }
    if (/^[A-Za-z_$]/.test(t)) return { k: 'name', v: t };
    throw new BackendError(`wgsl: unexpected '${t}' in: ${src}`);
  };
  const binary = (min: number): Node => {
    let left = primary();
    for (;;) {
      const op = peek();
      const p = op === undefined ? undefined : BINARY_PRECEDENCE[op];
      if (p === undefined || p < min) return left;
      next();
      left = { k: 'bin', op, a: left, b: binary(p + 1) };
    }
  };
  const ternary = (): Node => {
    const c = binary(1);
    if (peek() !== '?') return c;
    next();
    const a = ternary();
    expect(':');
    const b = ternary();
    return { k: 'cond', c, a, b };
  };
  const e = ternary();
  if (i !== toks.length) throw new BackendError(`wgsl: unexpected '${toks[i]}' after a complete expression in: ${src}`);
  return e;
}

const MATH: Record<string, string> = {
  'Math.abs': 'abs', 'Math.exp': 'exp', 'Math.log': 'log', 'Math.sqrt': 'sqrt', 'Math.floor': 'floor', 'Math.ceil': 'ceil',
  'Math.sin': 'sin', 'Math.cos': 'cos', 'Math.max': 'js_max', 'Math.min': 'js_min', 'Math.sign': 'sign', 'Math.trunc': 'trunc',
};

function float(v: number): string {
  // Not constants: WGSL rejects infinite or NaN constant expressions, so these read private variables.
  if (Number.isNaN(v)) return 'bitcast<f32>(JS_NAN_BITS)';
  if (v === Infinity) return 'bitcast<f32>(JS_INF_BITS)';
  const s = String(v);
  return /[.eE]/.test(s) ? s : `${s}.0`;
}

type Emitted = { code: string; bool: boolean };

/** Names the translator lets through unchanged (kernel inputs x0..xn); every other name gets a `v_` prefix. */
const INPUT_NAME = /^x\d+$/;
export const wgslName = (name: string): string => (INPUT_NAME.test(name) ? name : `v_${name}`);

function emit(n: Node): Emitted {
  const num = (e: Emitted) => (e.bool ? `select(0.0, 1.0, ${e.code})` : e.code);
  const cond = (e: Emitted) => (e.bool ? e.code : `(${e.code} != 0.0)`);
  switch (n.k) {
    case 'num':
      return { code: float(n.v), bool: false };
    case 'name':
      return { code: wgslName(n.v), bool: false };
    case 'un': {
      const a = emit(n.a);
      if (n.op === '!') return { code: `!(${cond(a)})`, bool: true };
      return { code: n.op === '-' ? `(-${num(a)})` : num(a), bool: false };
    }
    case 'bin': {
      const a = emit(n.a);
      const b = emit(n.b);
      if (n.op === '&&' || n.op === '||') return { code: `(${cond(a)} ${n.op} ${cond(b)})`, bool: true };
      const op = n.op === '===' ? '==' : n.op === '!==' ? '!=' : n.op;
      const isCompare = ['==', '!=', '<', '>', '<=', '>='].includes(op);
      return { code: `(${num(a)} ${op} ${num(b)})`, bool: isCompare };
    }
    case 'cond': {
      const c = emit(n.c);
      return { code: `select(${num(emit(n.b))}, ${num(emit(n.a))}, ${cond(c)})`, bool: false };
    }
    case 'call': {
      const args = n.args.map((a) => num(emit(a)));
      if (n.fn === 'Math.tanh') return { code: `tanh(clamp(${args[0]}, -15.0, 15.0))`, bool: false };
      if (n.fn === 'Math.pow') return { code: `js_pow(${args[0]}, ${args[1]})`, bool: false };
      if (n.fn === 'Math.round') return { code: `floor(${args[0]} + 0.5)`, bool: false };
      const fn = MATH[n.fn];
      if (fn === undefined) throw new BackendError(`wgsl: no WGSL translation for '${n.fn}'`);
      if ((fn === 'js_max' || fn === 'js_min') && args.length !== 2) throw new BackendError(`wgsl: ${n.fn} with ${args.length} arguments`);
      return { code: `${fn}(${args.join(', ')})`, bool: false };
    }
  }
}

/** Helper functions an expression may call (prepend once to a module that uses them). */
export const WGSL_HELPERS = `var<private> JS_INF_BITS : u32 = 0x7f800000u;
var<private> JS_NAN_BITS : u32 = 0x7fc00000u;
fn js_pow(a : f32, b : f32) -> f32 {
  if (b == 0.0) { return 1.0; }
  if (a < 0.0 && b == floor(b)) {
    let r = pow(-a, b);
    return select(r, -r, (b - 2.0 * floor(b * 0.5)) != 0.0);
  }
  return pow(a, b);
}
// Math.max / Math.min: NaN from either argument (WGSL's max and min may return the other one). NaN is
// tested on the bits: WGSL lets compilers assume no NaN, and Chromium's folds x != x to false.
fn js_isnan(x : f32) -> bool { return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u; }
fn js_max(a : f32, b : f32) -> f32 { return select(max(a, b), bitcast<f32>(JS_NAN_BITS), js_isnan(a) || js_isnan(b)); }
fn js_min(a : f32, b : f32) -> f32 { return select(min(a, b), bitcast<f32>(JS_NAN_BITS), js_isnan(a) || js_isnan(b)); }
`;

/** A kernel expression as a WGSL f32 expression. */
export function wgslExpr(expr: string): string {
  const e = emit(parse(expr));
  return e.bool ? `select(0.0, 1.0, ${e.code})` : e.code;
}

/**
 * Statements `name = expr` (or `const name = expr;` lines, as in the host/gpu.js kernels) as WGSL
 * `let` bindings.
 */
export function wgslLets(statements: readonly string[]): string {
  return statements
    .map((s) => {
      const m = /^\s*(?:const\s+|let\s+)?([A-Za-z_$][\w$]*)\s*=\s*([\s\S]*?);?\s*$/.exec(s);
      if (m === null) throw new BackendError(`wgsl: expected 'name = expression', got: ${s}`);
      return `  let ${wgslName(m[1])} = ${wgslExpr(m[2])};\n`;
    })
    .join('');
}

/** `expr` with its names replaced through `names` (x0 -> n3, ...); other tokens unchanged. */
export function renameExpr(expr: string, names: Readonly<Record<string, string>>): string {
  return tokenize(expr)
    .map((t) => (Object.prototype.hasOwnProperty.call(names, t) ? names[t] : t))
    .join(' ');
}

/** Split a block of `const name = expr;` lines (as fused.ts writes them) into statements. */
export function splitStatements(block: string): string[] {
  return block.split(';').map((s) => s.trim()).filter((s) => s !== '');
}
