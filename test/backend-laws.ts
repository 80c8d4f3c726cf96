/**
 * The backend laws, written once for every backend and both hosts: Node (test/webgpu.test.ts, on Dawn
 * over Mesa llvmpipe) and a browser page (test/browser/, on Chromium's SwiftShader WebGPU and WebGL2).
 * Everything reads results with `await t.data()`, so asynchronous backends (webgpu) and synchronous
 * ones run the same code.
 *
 * Checks, each against the webasm backend as the reference (its own laws tie it to float64):
 *  - ops: every differentiable primitive and composite of laws/helpers.ts OP_CASES, for sampled
 *    shapes: forward values and VJPs equal to webasm within 1e-5 · max|webasm| (laws/ops.test.ts's
 *    tolerance between webasm and cpu), and the VJP against central finite differences on the backend
 *    itself (the law kit's vjpLaw 'fd' check, src/laws/vjp.ts: h = 1e-2, rtol 2e-3, 64 ulps).
 *  - reversible: inverse(forward(x)) = x within 1e-5 · depth · (1 + |x| + |y|); reversible and store
 *    gradients equal within 1e-4 (relative per leaf, floor 1e-6 of the largest gradient, as
 *    laws/reversible.test.ts); the same key gives bitwise the same output and a different key a
 *    different one; and the backend's outputs equal webasm's within 1e-5 relative.
 *  - higher-order: jvp and hvp (second-order rules: maxPoolGrad/maxPoolSelect, normalizeGrad, softmaxGrad,
 *    geluGrad; customVjp at two levels through a reversible sequence) equal webasm's within 1e-5 relative.
 *  - fixture: the golden PySlowFast logits (and input gradient) of one shared fixture within the
 *    fixture tolerance (1e-4 of max|ref|), computed from safetensors bytes (no file system needed).
 *
 * Nothing here uses Node APIs: the browser bundle imports it as is.
 */
import fc from 'fast-check';
import * as E from 'fp-ts/lib/Either.js';
import { withBackend, type BackendName } from '../src/backend/backend.ts';
import * as R from '../src/index.ts';
import type { Tensor } from '../src/index.ts';
import { dropout, dropPath, linear, mlp, type LinearParams } from '../src/nn/index.ts';
import { foldIn, key, normal, split, type Key } from '../src/random/index.ts';
import { reversible, sequence, type AnyBlock, type BlockParams, type Branch, type Pair } from '../src/reversible/index.ts';
import { checkVjp, OP_CASES, uniform, type OpCase } from '../laws/helpers.ts';

export interface LawResult {
  readonly group: 'ops' | 'reversible' | 'higher-order' | 'fixture';
  readonly name: string;
  readonly ok: boolean;
  /** The worst case's numbers, or the error. */
  readonly detail: string;
  readonly ms: number;
}

const now = (): number => (typeof performance !== 'undefined' ? performance.now() : Date.now());
const leavesOf = (t: Tensor | Tensor[]): Tensor[] => (Array.isArray(t) ? t : [t]);
const datas = (ts: readonly Tensor[]): Promise<Float32Array[]> => Promise.all(ts.map((t) => t.data()));

/** Run `fn` (which only issues ops) on `backend`, then read every tensor it returns. */
async function on<T>(backend: BackendName, fn: () => T, read: (v: T) => Tensor[]): Promise<{ value: T; data: Float32Array[] }> {
  const value = withBackend(backend, fn);
  return { value, data: await datas(read(value)) };
}

const maxAbsOf = (xs: ArrayLike<number>): number => {
  let m = 0;
  for (let i = 0; i < xs.length; i++) m = Math.max(m, Math.abs(xs[i]));
  return m;
};

/**
 * null when |got - want| <= rtol * max(max|want|, floor) + 1e-30 everywhere (NaN matches NaN), else the
 * first offence. `floor` lets leaves that are zero up to rounding (e.g. an attention key bias, whose
 * gradient cancels) be compared against the scale of the other leaves instead of their own noise.
 */
export function compareArrays(got: Float32Array, want: Float32Array, rtol: number, what: string, floor = 0): string | null {
  if (got.length !== want.length) return `${what}: ${got.length} values vs ${want.length}`;
  const tol = rtol * Math.max(maxAbsOf(want), floor) + 1e-30;
  for (let i = 0; i < got.length; i++) {
    const ok = Math.abs(got[i] - want[i]) <= tol || (Number.isNaN(got[i]) && Number.isNaN(want[i]));
    if (!ok) return `${what}: element ${i}: ${got[i]} vs webasm ${want[i]} (|diff| ${Math.abs(got[i] - want[i]).toExponential(2)} > tol ${tol.toExponential(2)})`;
  }
  return null;
}

// ---------------------------------------------------------------------------------------------
// Ops

/** Forward outputs and input cotangents for a fixed output cotangent (laws/ops.test.ts `evaluate`). */
function evaluate(c: OpCase, seed: number): Tensor[] {
  const [y, pullback] = R.vjp(c.f, ...c.inputs);
  const ys = leavesOf(y);
  const cts = ys.map((t, k) => R.tensor(uniform(t.size, seed + k), [...t.shape]));
  const grads = pullback((Array.isArray(y) ? cts : cts[0]) as never) as Tensor[];
  const wrt = c.wrt ?? c.inputs.map((_, i) => i);
  return [...ys, ...wrt.map((i) => grads[i])];
}

export interface OpLawOptions {
  /** Generated cases per op (default 3). */
  readonly samples?: number;
  /** fast-check seed for the case generators (default 20261127). */
  readonly seed?: number;
  /** Only these ops (default: all of OP_CASES). */
  readonly only?: readonly string[];
}

/** Every OP_CASES entry on `backend` against webasm, plus finite differences on `backend`. */
export async function opLaws(backend: BackendName, opts: OpLawOptions = {}): Promise<LawResult[]> {
  const samples = opts.samples ?? 3;
  const results: LawResult[] = [];
  for (const entry of OP_CASES) {
    if (opts.only !== undefined && !opts.only.includes(entry.name)) continue;
    const t0 = now();
    let problem: string | null = null;
    let worstFd = 0;
    const params = fc.sample(entry.arb, { seed: opts.seed ?? 20261127, numRuns: samples });
    try {
      for (let s = 0; s < params.length && problem === null; s++) {
        const p = params[s];
        const seed = 1000 + s;
        const want = await on('webasm', () => evaluate(entry.build(p), seed), (v) => v);
        const got = await on(backend, () => evaluate(entry.build(p), seed), (v) => v);
        for (let k = 0; k < want.data.length && problem === null; k++) {
          problem = compareArrays(got.data[k], want.data[k], 1e-5, `case ${s}, result ${k} (outputs, then input cotangents) [${want.value[k].shape}]`);
        }
        if (problem !== null) break;
        const fd = await checkVjp(entry.build(p), seed, { backend });
        worstFd = Math.max(worstFd, fd.ratio);
        if (!fd.ok) problem = `case ${s}: ${fd.detail}`;
      }
    } catch (e) {
      problem = `threw: ${e instanceof Error ? e.message : String(e)}`.slice(0, 2000);
    }
    results.push({
      group: 'ops',
      name: entry.name,
      ok: problem === null,
      detail: problem ?? `${params.length} cases equal to webasm within 1e-5; finite differences within ${(worstFd * 100).toFixed(0)}% of tolerance`,
      ms: now() - t0,
    });
  }
  return results;
}

// ---------------------------------------------------------------------------------------------
// Reversible

const TRAIN = { train: true };

function linearParams(k: Key, out: number, inp: number, gain = 0.8): LinearParams {
  const [kw, kb] = split(k);
  return { weight: R.mul(normal(kw, [out, inp]), gain / Math.sqrt(inp)), bias: R.mul(normal(kb, [out]), 0.1) };
}

type Kind = 'linear' | 'mlp' | 'attention';

function branchParams(kind: Kind, C: number, k: Key): unknown {
  const ks = split(k, 4);
  if (kind === 'linear') return linearParams(ks[0], C, C);
  if (kind === 'mlp') return { fc1: linearParams(ks[0], 2 * C, C), fc2: linearParams(ks[1], C, 2 * C) };
  return { q: linearParams(ks[0], C, C), k: linearParams(ks[1], C, C), v: linearParams(ks[2], C, C), o: linearParams(ks[3], C, C) };
}

/** A stochastic branch with dropout 0.2 and drop-path 0.25 (laws/reversible.test.ts's shapes of branch). */
function branch(kind: Kind): Branch<any> {
  return (p, x, k) => {
    let h: Tensor;
    if (kind === 'linear') h = dropout(foldIn(k, 0), 0.2, R.tanh(linear(p, x)), TRAIN);
    else if (kind === 'mlp') h = mlp(p, x, foldIn(k, 0), { drop: 0.2 });
    else {
      const C = x.shape[x.shape.length - 1];
      const scores = R.div(R.matmul(linear(p.q, x), linear(p.k, x), { transB: true }), Math.sqrt(C));
      const attn = dropout(foldIn(k, 0), 0.2, R.softmax(scores, -1), TRAIN);
      h = linear(p.o, R.matmul(attn, linear(p.v, x)));
    }
    return dropPath(foldIn(k, 1), 0.25, h, TRAIN);
  };
}

interface RevCase {
  readonly blocks: readonly AnyBlock[];
  readonly params: BlockParams<any, any>[];
  readonly xs: Pair;
}

/** Three blocks (attention/mlp, linear/attention, mlp/linear; the second buffered) on [2, 4, 6] inputs of magnitude `scale`. */
function revCase(scale: number): RevCase {
  const kinds: [Kind, Kind][] = [['attention', 'mlp'], ['linear', 'attention'], ['mlp', 'linear']];
  const C = 6;
  const blocks = kinds.map(([f, g], i) => reversible(branch(f), branch(g), { keys: i === 2 ? 'shared' : 'split', buffer: i === 1 }));
  const pk = split(key(7), kinds.length);
  const params = kinds.map(([f, g], i) => {
    const [kF, kG] = split(pk[i]);
    return { F: branchParams(f, C, kF), G: branchParams(g, C, kG) };
  });
  const [k1, k2] = split(key(11));
  const xs: Pair = [R.mul(normal(k1, [2, 4, C]), scale), R.mul(normal(k2, [2, 4, C]), scale)];
  return { blocks, params, xs };
}

const bitsEqual = (a: Float32Array, b: Float32Array): boolean => {
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  return x.length === y.length && x.every((v, i) => v === y[i]);
};

async function law(name: string, body: () => Promise<string>): Promise<LawResult> {
  const t0 = now();
  try {
    return { group: 'reversible', name, ok: true, detail: await body(), ms: now() - t0 };
  } catch (e) {
    return { group: 'reversible', name, ok: false, detail: e instanceof Error ? e.message : String(e), ms: now() - t0 };
  }
}

function fail(msg: string): never {
  throw new Error(msg);
}

/** The reversible laws on `backend`. */
export async function reversibleLaws(backend: BackendName): Promise<LawResult[]> {
  const out: LawResult[] = [];
  const fwdKey = key(3);

  out.push(await law('inverse(forward(x)) = x and forward(inverse(y)) = y', async () => {
    let worst = 0;
    for (const scale of [0.1, 1, 10]) {
      const c = revCase(scale);
      const seq = sequence(c.blocks);
      const r = await on(backend, () => {
        const ys = seq.forward(c.params, c.xs, fwdKey);
        const back = seq.inverse(c.params, ys, fwdKey);
        const again = seq.forward(c.params, seq.inverse(c.params, c.xs, fwdKey), fwdKey);
        return [...c.xs, ...ys, ...back, ...again];
      }, (v) => v);
      const [x1, x2, y1, y2, b1, b2, a1, a2] = r.data;
      const tol = 1e-5 * c.blocks.length * (1 + Math.max(maxAbsOf(x1), maxAbsOf(x2)) + Math.max(maxAbsOf(y1), maxAbsOf(y2)));
      const diff = (p: Float32Array, q: Float32Array) => maxAbsOf(p.map((v, i) => v - q[i]));
      const errInv = Math.max(diff(b1, x1), diff(b2, x2));
      const errFwd = Math.max(diff(a1, x1), diff(a2, x2));
      if (!(errInv <= tol)) fail(`scale ${scale}: ‖inverse(forward(x)) − x‖∞ = ${errInv} > ${tol}`);
      if (!(errFwd <= tol)) fail(`scale ${scale}: ‖forward(inverse(y)) − y‖∞ = ${errFwd} > ${tol}`);
      worst = Math.max(worst, errInv / tol, errFwd / tol);
    }
    return `worst error ${(worst * 100).toFixed(1)}% of tolerance (scales 0.1, 1, 10; depth 3)`;
  }));

  out.push(await law('reversible and store gradients are equal', async () => {
    const c = revCase(1);
    const seq = sequence(c.blocks);
    const w = normal(key(5), [2, 4, 6]);
    const gradsIn = (mode: 'reversible' | 'store') => {
      const loss = (p: BlockParams<any, any>[], xs: Pair) => {
        const [y1, y2] = seq.forward(p, xs, fwdKey, { mode });
        return R.add(R.sum(R.mul(y1, w)), R.sum(R.mul(R.tanh(y2), w)));
      };
      const [, pullback] = R.vjp(loss, c.params, c.xs);
      return R.leaves(pullback());
    };
    const rev = await on(backend, () => gradsIn('reversible'), (v) => v);
    const sto = await on(backend, () => gradsIn('store'), (v) => v);
    const gAll = Math.max(...rev.data.map(maxAbsOf), ...sto.data.map(maxAbsOf));
    let worst = 0;
    rev.data.forEach((g, i) => {
      const s = sto.data[i];
      const scale = Math.max(maxAbsOf(g), maxAbsOf(s), 1e-2 * gAll);
      const err = maxAbsOf(g.map((v, j) => v - s[j]));
      if (!(err <= 1e-4 * scale)) fail(`leaf ${i} [${rev.value[i].shape}]: ‖g_rev − g_store‖∞ = ${err} > ${1e-4 * scale}`);
      worst = Math.max(worst, err / (1e-4 * scale));
    });
    return `${rev.data.length} leaves; worst ${(worst * 100).toFixed(1)}% of tolerance`;
  }));

  out.push(await law('the same key gives the same bits, another key other values', async () => {
    const c = revCase(1);
    const seq = sequence(c.blocks);
    const run = (k: Key) => on(backend, () => [...seq.forward(c.params, c.xs, k)], (v) => v);
    const [a, b, other] = [await run(fwdKey), await run(fwdKey), await run(key(4))];
    if (!a.data.every((d, i) => bitsEqual(d, b.data[i]))) fail('two forward passes with one key differ');
    if (a.data.every((d, i) => bitsEqual(d, other.data[i]))) fail('forward passes with different keys are identical (the masks ignore the key)');
    return 'bitwise equal for one key; different for another';
  }));

  out.push(await law(`outputs and gradients equal webasm's`, async () => {
    const c = revCase(1);
    const seq = sequence(c.blocks);
    const w = normal(key(5), [2, 4, 6]);
    const all = () => {
      const loss = (p: BlockParams<any, any>[], xs: Pair) => {
        const [y1, y2] = seq.forward(p, xs, fwdKey);
        return R.sum(R.mul(R.add(y1, y2), w));
      };
      const [value, pullback] = R.vjp(loss, c.params, c.xs);
      return [value, ...R.leaves(pullback())];
    };
    const want = await on('webasm', all, (v) => v);
    const got = await on(backend, all, (v) => v);
    // As in the reversible-vs-store law: leaves under 1% of the largest gradient get that 1% as their scale.
    const gAll = Math.max(...want.data.slice(1).map(maxAbsOf));
    for (let i = 0; i < want.data.length; i++) {
      const p = compareArrays(got.data[i], want.data[i], 1e-5, `tensor ${i} [${want.value[i].shape}]`, i === 0 ? 0 : 1e-2 * gAll);
      if (p !== null) fail(p);
    }
    return `${want.data.length} tensors within 1e-5 of webasm (gradient leaves: of max(leaf, 1% of the largest))`;
  }));
  return out;
}

// ---------------------------------------------------------------------------------------------
// Higher order

/**
 * jvp and hvp on `backend` against webasm: the ops whose gradients have their own rules (pooling, the
 * fused row ops) and a reversible sequence (customVjp differentiated at two levels).
 */
export async function higherOrderLaws(backend: BackendName): Promise<LawResult[]> {
  const x5 = (seed: number) => R.tensor(uniform(2 * 2 * 3 * 4 * 4, seed, -2, 2), [2, 2, 3, 4, 4]);
  const cases: { name: string; run: () => Tensor[] }[] = [
    { name: 'jvp and hvp of maxPool3d (maxPoolGrad, maxPoolSelect)', run: () => {
      const f = (x: Tensor) => R.maxPool3d(x, [2, 2, 2], [1, 2, 2], [1, 1, 1]);
      const w = R.tensor(uniform(2 * 2 * 4 * 3 * 3, 9), [2, 2, 4, 3, 3]);
      return [R.jvp(f, [x5(1)], [x5(2)])[1], ...R.hvp((x: Tensor) => R.sum(R.mul(R.square(f(x)), w)), [x5(1)], [x5(2)])];
    } },
    { name: 'jvp and hvp of layerNorm, softmax and gelu (normalizeGrad, softmaxGrad, geluGrad)', run: () => {
      const x = R.tensor(uniform(4 * 6, 3, -2, 2), [4, 6]);
      const t = R.tensor(uniform(4 * 6, 4), [4, 6]);
      const w = R.tensor(uniform(4 * 6, 5), [4, 6]);
      const f = (a: Tensor) => R.gelu(R.mul(R.softmax(R.layerNorm(a, null, null), -1), 3));
      return [R.jvp(f, [x], [t])[1], ...R.hvp((a: Tensor) => R.sum(R.mul(f(a), w)), [x], [t])];
    } },
    { name: 'hvp through a reversible sequence (customVjp at two levels) w.r.t. inputs and parameters', run: () => {
      const c = revCase(1);
      const seq = sequence(c.blocks);
      const w = normal(key(5), [2, 4, 6]);
      const loss = (p: BlockParams<any, any>[], x1: Tensor, x2: Tensor) => {
        const [y1, y2] = seq.forward(p, [x1, x2], key(3));
        return R.sum(R.mul(R.tanh(R.add(y1, y2)), w));
      };
      const tp = R.mapTree(c.params, (t) => R.mul(normal(foldIn(key(21), t.size), [...t.shape]), 0.5));
      const [k1, k2] = split(key(8));
      return R.leaves(R.hvp(loss, [c.params, c.xs[0], c.xs[1]], [tp, normal(k1, [2, 4, 6]), normal(k2, [2, 4, 6])]));
    } },
  ];
  const out: LawResult[] = [];
  for (const c of cases) {
    const t0 = now();
    let problem: string | null = null;
    try {
      const want = await on('webasm', c.run, (v) => v);
      const got = await on(backend, c.run, (v) => v);
      const all = Math.max(...want.data.map(maxAbsOf));
      for (let k = 0; k < want.data.length && problem === null; k++) {
        problem = compareArrays(got.data[k], want.data[k], 1e-5, `result ${k} [${want.value[k].shape}]`, 1e-2 * all);
      }
    } catch (e) {
      problem = `threw: ${e instanceof Error ? e.message : String(e)}`.slice(0, 2000);
    }
    out.push({ group: 'higher-order', name: c.name, ok: problem === null, detail: problem ?? 'equal to webasm within 1e-5 (of max(result, 1% of the largest))', ms: now() - t0 });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Golden fixture

/**
 * One PySlowFast fixture (full model): logits and the input gradient of L = sum(logits * w), in
 * reversible mode, on `backend`, against the fixture within 1e-4 of max|ref| (the fixture tolerance).
 * The decoder, config parser and model builder are passed in (src/io, src/models/mvit), so this file
 * does not depend on their Node-only imports.
 */
export async function fixtureLaw(
  backend: BackendName,
  name: string,
  bytes: Uint8Array,
  deps: {
    decodeSafetensors: (b: Uint8Array, source?: string) => E.Either<Error, { metadata: Record<string, string>; tensors: Map<string, { data: Float32Array; shape: number[] }> }>;
    parseConfig: (raw: unknown, o: { target: 'model' | 'stack' }) => E.Either<unknown, any>;
    buildModel: (cfg: any) => any;
  },
): Promise<LawResult> {
  const t0 = now();
  const done = (ok: boolean, detail: string): LawResult => ({ group: 'fixture', name, ok, detail, ms: now() - t0 });
  try {
    const file = deps.decodeSafetensors(bytes, name);
    if (E.isLeft(file)) return done(false, file.left.message);
    const f = file.right;
    const cfg = deps.parseConfig(JSON.parse(f.metadata.config ?? 'null'), { target: 'model' });
    if (E.isLeft(cfg)) return done(false, `config problems: ${JSON.stringify(cfg.left)}`);
    const model = deps.buildModel(cfg.right);
    const get = (n: string): Tensor => {
      const a = f.tensors.get(n);
      if (a === undefined) throw new Error(`fixture lacks '${n}'`);
      return R.tensor(a.data, a.shape);
    };
    const named = new Map<string, Tensor>();
    for (const s of model.specs as { name: string }[]) named.set(s.name, get(s.name));
    const params = R.fromNamed(named);
    const x = get('input');
    const w = get('w');
    const k = key(0);
    const r = await on(backend, () => {
      // The pullback of the logits at cotangent w is the gradient of L = sum(logits * w).
      const [logits, pullback] = R.vjp((p: unknown, input: Tensor) => model.apply(p, input, k, { train: true, mode: 'reversible' }) as Tensor, params, x);
      const [, gx] = pullback(w);
      return [logits, gx];
    }, (v) => v);
    const [logits, gx] = r.data;
    const checks: [string, Float32Array, string][] = [['logits', logits, 'logits'], ['grad.input', gx, 'grad.input']];
    const notes: string[] = [];
    for (const [label, got, ref] of checks) {
      const want = f.tensors.get(ref);
      // The fixture is chosen for having both references: a missing one is an error, not a pass with nothing compared.
      if (want === undefined) return done(false, `the fixture has no '${ref}' reference to compare with`);
      const refMax = maxAbsOf(want.data);
      const err = maxAbsOf(got.map((v, i) => v - want.data[i]));
      const rel = refMax === 0 ? err : err / refMax;
      notes.push(`${label} rel error ${rel.toExponential(2)}`);
      if (!(rel <= 1e-4) || got.length !== want.data.length) return done(false, `${label}: relative error ${rel} > 1e-4 (max |ref| ${refMax})`);
    }
    return done(true, `${notes.join(', ')} (tol 1e-4)`);
  } catch (e) {
    return done(false, `threw: ${e instanceof Error ? e.message : String(e)}`);
  }
}
