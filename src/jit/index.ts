/**
 * jit(f): trace `f` once per argument signature on abstract tensors, record a flat program, lower it,
 * and replay it on every call with that signature. `f` may be a forward pass, a loss, or a whole
 * training step (forward, backward through `grad`/`vjp`/`customVjp`, reversible backprop, optimizer
 * update): autodiff runs while tracing, so the program holds the backward pass too.
 *
 * Dynamic inputs are the tensor leaves of the arguments and their keys (made by key/split/foldIn);
 * numbers, strings and booleans are static and part of the signature, as are tensor shapes, the backend
 * and the lowering. What cannot be traced raises a TraceError: reading a traced value's data on the
 * host (`data()`, `dataSync()`, `item()`, branching on values), or host samplers given a traced key.
 *
 * Eager mode stays the default and the reference. Inside an open autodiff trace (jit inside grad) or
 * inside another jit trace, a jitted function runs as plain `f`, so the tape or the outer trace sees
 * every op.
 */
import { recording } from '../autodiff/tape.ts';
import { getBackend } from '../backend/backend.ts';
import { fastPathsEnabled } from '../tensor/exec.ts';
import { BackendError } from '../tensor/errors.ts';
import { keyFromBits, TracedKey } from '../random/traced.ts';
import { activeTrace, ProgramBuilder, prune, tracing, type Program } from '../tensor/trace.ts';
import type { Tensor } from '../tensor/tensor.ts';
import { fillTemplate, flattenArgs, leafTensor, replaceLeaves, resultTemplate, type ResultTemplate } from './args.ts';
import { lowerCpu } from './cpu.ts';
import type { Executable } from './executable.ts';
import { lowerInterpret } from './interpret.ts';
import { lowerWebGPU } from './webgpu.ts';

export type Lowering = 'auto' | 'interpret' | 'cpu' | 'webgpu';

export interface JitOptions {
  /**
   * 'cpu': fused host loops and planned buffers (webasm backend with fast paths); 'webgpu': one device
   * plan per call, one submission, state kept on the device (src/jit/webgpu.ts; webgpu backend);
   * 'interpret': the primitives' eager path equation by equation (any backend); 'auto' (default): 'cpu'
   * or 'webgpu' where they apply.
   */
  readonly lowering?: Lowering;
  /** Compiled signatures kept (least recently used evicted); default 8. */
  readonly cacheSize?: number;
}

export interface JitStats {
  /** Traces taken (one per new signature, and again after an eviction). */
  readonly traces: number;
  /** Calls replayed from a compiled program. */
  readonly replays: number;
  /** Calls that ran `f` directly (inside grad or inside another trace). */
  readonly inlined: number;
}

export interface Jitted<A extends unknown[], R> {
  (...args: A): R;
  readonly stats: JitStats;
  /** The program for these arguments (traced if not cached), for inspection and other lowerings. */
  program(...args: A): Program;
  /** The planned peak bytes of the last replayed program (null before a call, or where not planned). */
  lastPeakBytes(): number | null;
}

interface Compiled {
  readonly program: Program;
  readonly template: ResultTemplate;
  readonly executable: Executable;
}

function resolveLowering(requested: Lowering): 'interpret' | 'cpu' | 'webgpu' {
  if (requested === 'webgpu' && getBackend() !== 'webgpu') throw new BackendError(`jit: the 'webgpu' lowering runs on the webgpu backend, and the current one is '${getBackend()}'`);
  if (requested !== 'auto') return requested;
  if (getBackend() === 'webgpu') return 'webgpu';
  return getBackend() === 'webasm' && fastPathsEnabled() ? 'cpu' : 'interpret';
}

const LOWER = { cpu: lowerCpu, interpret: lowerInterpret, webgpu: lowerWebGPU } as const;

export function jit<A extends unknown[], R>(f: (...args: A) => R, options: JitOptions = {}): Jitted<A, R> {
  const capacity = options.cacheSize ?? 8;
  const cache = new Map<string, Compiled>();
  const stats = { traces: 0, replays: 0, inlined: 0 };
  let lastPeak: number | null = null;

  const trace = (args: A): Omit<Compiled, 'executable'> => {
    const { leaves } = flattenArgs(args);
    const builder = new ProgramBuilder();
    const abstract = leaves.map((l) => (l.kind === 'tensor' ? builder.input(l.tensor.shape) : new TracedKey(builder.input([2])).asKey()));
    const outputs: Tensor[] = [];
    const template = tracing(builder, () => resultTemplate(f(...replaceLeaves(args, abstract)), (t) => outputs.push(t) - 1));
    stats.traces++;
    return { program: prune(builder.finish(outputs)), template };
  };

  const compiled = (args: A): { entry: Compiled; leaves: ReturnType<typeof flattenArgs>['leaves'] } => {
    const lowering = resolveLowering(options.lowering ?? 'auto');
    const { leaves, signature } = flattenArgs(args);
    const key = `${getBackend()}|${lowering}|${signature}`;
    let entry = cache.get(key);
    if (entry === undefined) {
      const t = trace(args);
      entry = { program: t.program, template: t.template, executable: LOWER[lowering](t.program) };
      if (cache.size >= capacity) cache.delete(cache.keys().next().value!);
    } else {
      cache.delete(key); // re-inserted below: most recently used last
    }
    cache.set(key, entry);
    return { entry, leaves };
  };

  const jitted = ((...args: A): R => {
    if (activeTrace() !== null || recording()) {
      stats.inlined++;
      return f(...args);
    }
    const { entry, leaves } = compiled(args);
    const outs = entry.executable.run(leaves.map(leafTensor));
    stats.replays++;
    lastPeak = entry.executable.peakBytes;
    const values = entry.template.leaves.map((l) => (l.kind === 'tensor' ? outs[l.output] : keyOutput(outs[l.output])));
    return fillTemplate(entry.template, values) as R;
  }) as Jitted<A, R>;
  Object.defineProperty(jitted, 'stats', { get: () => ({ ...stats }) });
  Object.defineProperty(jitted, 'program', { value: (...args: A) => compiled(args).entry.program });
  Object.defineProperty(jitted, 'lastPeakBytes', { value: () => lastPeak });
  return jitted;
}

/** A key the program returns (its bits are computed on the host, so they are there at once). */
function keyOutput(t: Tensor) {
  const bits = t.storage.peek();
  if (bits instanceof Promise) throw new BackendError('jit: a key returned by a jitted function is still pending on the device');
  return keyFromBits(bits);
}

export type { Program, Eqn } from '../tensor/trace.ts';
