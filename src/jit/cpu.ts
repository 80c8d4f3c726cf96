/**
 * The CPU lowering (webasm backend, host fast paths): a program becomes a list of steps over flat
 * Float32Arrays.
 *  - Fusion: chains of elementwise primitives (and broadcasts) over one shape become one pass, and a sum
 *    of a value of the chain becomes a summed output of that pass (`FusedGroup`, run by the generated wasm
 *    SIMD of src/backend/wasm-fusion.ts); a value inside a group is stored only if something outside the
 *    group reads it.
 *  - Every other primitive runs its own host path (its declaration's `impl`: wasm GEMM, wasm row ops,
 *    generated loops), writing into a planned buffer.
 *  - Buffers: views alias their input; intermediate values live in buffers planned from the program's
 *    lifetimes and reused across values and across calls (an arena per compiled program); outputs get
 *    fresh arrays on every call, so what a call returns is never overwritten by the next.
 */
import { checkInterrupt } from '../tensor/interrupt.ts';
import { BackendError } from '../tensor/errors.ts';
import { addProfile, profiling, type OpImpl } from '../tensor/exec.ts';
import { broadcastStrides, sameShape, type Shape } from '../tensor/shape.ts';
import { fromBuffer, hostData, view, type Tensor } from '../tensor/tensor.ts';
import { attrsIf, type Eqn, type Program } from '../tensor/trace.ts';
import type { Executable } from './executable.ts';
import { compileFused, type FusedGroup, type FusedNode, type FusedOutput, type FusedRead } from '../backend/wasm-fusion.ts';
import { SUM } from '../tensor/ops.ts';

/** Where a value's buffer comes from on each call. */
type Source =
  | { readonly kind: 'input'; readonly index: number }
  | { readonly kind: 'const'; readonly data: Float32Array }
  /** Produced by a step that hands back its own array (engines with `run`). */
  | { readonly kind: 'produced' }
  /** A fresh array per call (program outputs). */
  | { readonly kind: 'fresh' }
  | { readonly kind: 'arena'; readonly slot: number };

type Env = (Float32Array | undefined)[];
type Step = (env: Env) => void;

interface Plan {
  readonly groups: readonly Group[];
  /** For each equation, its group (or -1). */
  readonly groupOf: Int32Array;
}

interface Group {
  readonly shape: Shape;
  readonly members: number[];
}

/**
 * Group elementwise equations. Walking the program in order, an elementwise equation joins the groups of
 * the inputs it reads element for element (same shape, no broadcast) unless those groups are sealed; a
 * group is sealed once one of its values is read from outside it, so the group can run at the place of
 * its last member without delaying a reader. With `sums` (kernels that write summed outputs), a sum joins
 * the group of its input as a summed output (and seals it: its result has another shape), and a sum of
 * anything else is a group of its own.
 */
export function groupElementwise(program: Program, producer: Int32Array, { sums }: { readonly sums: boolean }): Plan {
  const parent: number[] = [];
  const find = (g: number): number => {
    while (parent[g] !== g) g = parent[g] = parent[parent[g]];
    return g;
  };
  const groups: Group[] = [];
  const sealed: boolean[] = [];
  const groupOf = new Int32Array(program.eqns.length).fill(-1);
  const groupOfValue = (id: number): number => {
    const p = producer[id];
    return p >= 0 && groupOf[p] >= 0 ? find(groupOf[p]) : -1;
  };
  const newGroup = (shape: Shape): number => {
    groups.push({ shape, members: [] });
    parent.push(groups.length - 1);
    sealed.push(false);
    return groups.length - 1;
  };
  program.eqns.forEach((e, i) => {
    if (sums && e.prim === SUM) {
      const g = groupOfValue(e.inputs[0]);
      const target = g >= 0 && !sealed[g] && sameShape(groups[g].shape, e.inShapes[0]) ? g : newGroup(e.inShapes[0]);
      if (g >= 0) sealed[g] = true;
      groups[target].members.push(i);
      groupOf[i] = target;
      sealed[target] = true;
      return;
    }
    if (e.prim.elementwise === undefined) {
      for (const id of e.inputs) {
        const g = groupOfValue(id);
        if (g >= 0) sealed[g] = true;
      }
      return;
    }
    const joinable = new Set<number>();
    const rejected = new Set<number>();
    e.inputs.forEach((id, k) => {
      const g = groupOfValue(id);
      if (g < 0) return;
      if (!sealed[g] && sameShape(e.inShapes[k], e.shape) && sameShape(groups[g].shape, e.shape)) joinable.add(g);
      else rejected.add(g);
    });
    for (const g of rejected) {
      joinable.delete(g);
      sealed[g] = true;
    }
    const [first, ...rest] = [...joinable];
    let g: number;
    if (first === undefined) {
      g = newGroup(e.shape);
    } else {
      g = first;
      for (const r of rest) {
        parent[r] = g;
        groups[g].members.push(...groups[r].members);
      }
      groups[g].members.sort((a, b) => a - b);
    }
    groups[g].members.push(i);
    groupOf[i] = g;
  });
  for (let i = 0; i < groupOf.length; i++) if (groupOf[i] >= 0) groupOf[i] = find(groupOf[i]);
  return { groups, groupOf };
}

export function lowerCpu(program: Program): Executable {
  const { eqns, sizes } = program;
  const n = sizes.length;
  const producer = new Int32Array(n).fill(-1);
  eqns.forEach((e, i) => (producer[e.output] = i));
  // Views share their input's buffer: every value maps to the root value that owns the buffer.
  const root = Int32Array.from({ length: n }, (_, i) => i);
  for (const e of eqns) if (e.prim.view === true) root[e.output] = root[e.inputs[0]];
  const { groups, groupOf } = groupElementwise(program, producer, { sums: true });

  // The steps in program order: a non-view, non-elementwise equation at its place; a group at its last member.
  type StepSpec = { readonly kind: 'eqn'; readonly eqn: number } | { readonly kind: 'group'; readonly group: number };
  const specs: StepSpec[] = [];
  const stepOfEqn = new Int32Array(eqns.length).fill(-1);
  eqns.forEach((e, i) => {
    const g = groupOf[i];
    if (g >= 0) {
      const members = groups[g].members;
      if (members[members.length - 1] === i) {
        for (const m of members) stepOfEqn[m] = specs.length;
        specs.push({ kind: 'group', group: g });
      }
    } else if (e.prim.view !== true) {
      stepOfEqn[i] = specs.length;
      specs.push({ kind: 'eqn', eqn: i });
    }
  });

  // Which values a step reads: for a group, only what comes from outside it.
  const outputRoots = new Set(program.outputs.map((o) => root[o.id]));
  const stepReads = (s: StepSpec): number[] => {
    if (s.kind === 'eqn') return eqns[s.eqn].inputs.map((id) => root[id]);
    const inside = new Set(groups[s.group].members.map((m) => eqns[m].output));
    return groups[s.group].members.flatMap((m) => eqns[m].inputs.filter((id) => !inside.has(id)).map((id) => root[id]));
  };
  // A group stores a member value only if a step outside the group (or the caller) reads it.
  const readers = new Map<number, Set<number>>();
  specs.forEach((s, j) => {
    for (const r of stepReads(s)) {
      let set = readers.get(r);
      if (set === undefined) readers.set(r, (set = new Set()));
      set.add(j);
    }
  });
  const stored = (id: number): boolean => outputRoots.has(root[id]) || readers.has(root[id]);

  // Where each root's buffer comes from.
  const sources = new Map<number, Source>();
  program.inputs.forEach((id, index) => sources.set(id, { kind: 'input', index }));
  for (const c of program.consts) {
    const data = hostData(c.tensor);
    if (data === null) throw new BackendError('jit: the cpu lowering needs constants on the host (use the interpret lowering on asynchronous backends)');
    sources.set(c.id, { kind: 'const', data });
  }
  const impls = new Map<number, OpImpl>();
  for (const s of specs) {
    if (s.kind !== 'eqn') continue;
    const e = eqns[s.eqn];
    const impl = e.prim.impl(e.inShapes, e.attrs, e.shape);
    impls.set(s.eqn, impl);
    if (impl.host === undefined && !outputRoots.has(e.output)) sources.set(e.output, { kind: 'produced' });
  }

  // Plan the arena: a root lives from the step that writes it to the last step that reads it.
  const lastRead = new Map<number, number>();
  for (const [r, set] of readers) lastRead.set(r, Math.max(...set));
  const written: number[][] = specs.map((s) =>
    s.kind === 'eqn' ? [eqns[s.eqn].output] : groups[s.group].members.map((m) => eqns[m].output).filter(stored),
  );
  const slotSizes: number[] = [];
  const free: number[] = [];
  const dying: number[][] = specs.map(() => []);
  for (const [r, j] of lastRead) dying[j].push(r);
  specs.forEach((_, j) => {
    for (const id of written[j]) {
      if (sources.has(id)) continue;
      if (outputRoots.has(id)) {
        sources.set(id, { kind: 'fresh' });
        continue;
      }
      const size = sizes[id];
      // Best fit among free buffers at least this large and at most twice it; else a new one.
      let best = -1;
      for (let f = 0; f < free.length; f++) {
        const s = slotSizes[free[f]];
        if (s >= size && s <= 2 * size + 64 && (best < 0 || s < slotSizes[free[best]])) best = f;
      }
      let slot: number;
      if (best >= 0) slot = free.splice(best, 1)[0];
      else slotSizes.push(size), (slot = slotSizes.length - 1);
      sources.set(id, { kind: 'arena', slot });
    }
    // Buffers whose last reader is this step are free for the steps after it (never for its own outputs).
    for (const r of dying[j]) {
      const src = sources.get(r);
      if (src?.kind === 'arena') free.push(src.slot);
    }
    // A written value nobody reads (a stored group member read by no one can't happen; an eqn output can) is free at once.
    for (const id of written[j]) {
      const src = sources.get(id);
      if (src?.kind === 'arena' && !lastRead.has(id)) free.push(src.slot);
    }
  });
  const arena = slotSizes.map((s) => new Float32Array(s));
  const peakBytes = 4 * (slotSizes.reduce((a, b) => a + b, 0) + perCallPeak(specs.length, written, sources, lastRead, sizes));

  // The environment's persistent part: constants and arena buffers are bound once.
  const env: Env = new Array(n);
  const perCall: number[] = [];
  for (const [id, src] of sources) {
    if (src.kind === 'const') env[id] = src.data;
    else if (src.kind === 'arena') env[id] = arena[src.slot].subarray(0, sizes[id]);
    else perCall.push(id);
  }

  const steps: Step[] = specs.map((s) => (s.kind === 'eqn' ? eqnStep(s.eqn) : groupStep(s.group)));
  // For profileOps: a step is named by its primitive, a group by its members' primitives.
  const stepNames = specs.map((s) => (s.kind === 'eqn' ? eqns[s.eqn].prim.name : `fused(${groups[s.group].members.length})`));

  function eqnStep(i: number): Step {
    const e = eqns[i];
    const impl = impls.get(i)!;
    const ins = e.inputs.map((id) => root[id]);
    const args: Float32Array[] = new Array(ins.length);
    const out = e.output;
    const size = sizes[out];
    const src = sources.get(out)!;
    if (impl.host !== undefined) {
      const host = impl.host();
      const fresh = src.kind === 'fresh';
      const zero = !fresh && impl.fills !== true;
      return (env) => {
        for (let k = 0; k < ins.length; k++) args[k] = env[ins[k]]!;
        if (fresh) env[out] = new Float32Array(size);
        const o = env[out]!;
        if (zero) o.fill(0);
        host(args, o);
      };
    }
    const run = impl.run;
    if (run === undefined) throw new BackendError(`jit: op '${e.prim.name}' has no host computation for the cpu lowering`);
    return (env) => {
      for (let k = 0; k < ins.length; k++) args[k] = env[ins[k]]!;
      const result = run(args, size);
      if (result instanceof Promise) throw new BackendError(`jit: op '${e.prim.name}' returned a pending result on the cpu lowering`);
      env[out] = result;
    };
  }

  function groupStep(g: number): Step {
    const { group, inputs, outputs } = fusedGroup(program, groups[g], root, sources, stored);
    const fn = compileFused(group);
    const ins: Float32Array[] = new Array(inputs.length);
    const outs: Float32Array[] = new Array(outputs.length);
    const fresh = outputs.map((id) => sources.get(id)!.kind === 'fresh');
    return (env) => {
      for (let k = 0; k < inputs.length; k++) ins[k] = env[inputs[k]]!;
      for (let k = 0; k < outputs.length; k++) {
        if (fresh[k]) env[outputs[k]] = new Float32Array(sizes[outputs[k]]);
        outs[k] = env[outputs[k]]!;
      }
      fn(ins, outs);
    };
  }

  return {
    kind: 'cpu',
    peakBytes,
    run(inputs: readonly Tensor[]): Tensor[] {
      program.inputs.forEach((id, k) => {
        const host = hostData(inputs[k]);
        if (host === null) throw new BackendError('jit: the cpu lowering needs its inputs on the host');
        env[id] = host;
      });
      try {
        // Poll the interrupt flag between steps as eager ops do (a replay is a whole training step).
        if (profiling()) {
          steps.forEach((step, j) => {
            checkInterrupt();
            const t0 = performance.now();
            step(env);
            addProfile(`jit:${stepNames[j]}`, performance.now() - t0);
          });
        } else {
          for (const step of steps) {
            checkInterrupt();
            step(env);
          }
        }
      } catch (e) {
        for (const id of perCall) env[id] = undefined;
        throw e;
      }
      const result = program.outputs.map((o) => outputTensor(o.id, o.shape, inputs));
      // Forget this call's arrays: the arena keeps only its own buffers between calls.
      for (const id of perCall) env[id] = undefined;
      return result;
    },
  };

  function outputTensor(id: number, shape: Shape, inputs: readonly Tensor[]): Tensor {
    const r = root[id];
    const src = sources.get(r)!;
    // An input or a constant returned as is (or through a view) keeps its tensor's buffer.
    const base = src.kind === 'input' ? inputs[src.index] : src.kind === 'const' ? program.consts.find((c) => c.id === r)!.tensor : null;
    if (base !== null) return sameShape(base.shape, shape) ? base : view(base, shape);
    return fromBuffer(env[r]!, shape);
  }
}

/** The most elements of per-call arrays (outputs, engine results) alive at once over the steps. */
function perCallPeak(steps: number, written: readonly number[][], sources: ReadonlyMap<number, Source>, lastRead: ReadonlyMap<number, number>, sizes: readonly number[]): number {
  const delta = new Float64Array(steps + 1);
  written.forEach((ids, j) => {
    for (const id of ids) {
      const kind = sources.get(id)?.kind;
      if (kind !== 'fresh' && kind !== 'produced') continue;
      delta[j] += sizes[id];
      // Outputs live to the end; engine results until their last reader.
      delta[kind === 'fresh' ? steps : (lastRead.get(id) ?? j) + 1] -= sizes[id];
    }
  });
  let live = 0;
  let peak = 0;
  for (const d of delta) peak = Math.max(peak, (live += d));
  return peak;
}

/**
 * The nodes of a fused group under construction (CPU and WebGPU lowerings). `nodeOf(id, shape)` is value
 * id's node: a member's (set in `nodeOfValue`), a scalar constant inlined, or an input read of its buffer
 * (root) with broadcast strides, one read per buffer and strides; `inputs` lists the roots read.
 */
export function groupNodes(groupShape: readonly number[], root: Int32Array, scalarOf: (root: number) => number | undefined) {
  const nodes: FusedNode[] = [];
  const reads: FusedRead[] = [];
  const inputs: number[] = [];
  const nodeOfValue = new Map<number, number>();
  const readNode = new Map<string, number>();
  const once = (key: string, make: () => number): number => {
    let node = readNode.get(key);
    if (node === undefined) readNode.set(key, (node = make()));
    return node;
  };
  const external = (id: number, shape: readonly number[]): number => {
    const c = scalarOf(root[id]);
    if (c !== undefined) return once(`c${Object.is(c, -0) ? '-0' : c}`, () => nodes.push({ op: 'const', value: c }) - 1);
    const strides = broadcastStrides(shape, groupShape);
    return once(`${root[id]}|${strides}`, () => {
      inputs.push(root[id]);
      reads.push({ strides, offset: 0 });
      return nodes.push({ op: 'input', input: reads.length - 1 }) - 1;
    });
  };
  const nodeOf = (id: number, shape: readonly number[]): number => nodeOfValue.get(id) ?? external(id, shape);
  return { nodes, reads, inputs, nodeOfValue, nodeOf };
}

/** The fused-group description of a group, with the roots it reads and writes. */
function fusedGroup(
  program: Program,
  group: Group,
  root: Int32Array,
  sources: ReadonlyMap<number, Source>,
  stored: (id: number) => boolean,
): { group: FusedGroup; inputs: number[]; outputs: number[] } {
  const { nodes, reads, inputs, nodeOfValue, nodeOf } = groupNodes(group.shape, root, (r) => {
    const src = sources.get(r);
    return src?.kind === 'const' && src.data.length === 1 ? src.data[0] : undefined;
  });
  const outputs: number[] = [];
  const outs: FusedOutput[] = [];
  for (const m of group.members) {
    const e: Eqn = program.eqns[m];
    const sum = attrsIf(e, SUM);
    if (sum !== undefined) {
      const node = nodeOf(e.inputs[0], e.inShapes[0]);
      if (stored(e.output)) {
        outputs.push(e.output);
        outs.push({ node, sumAxes: sum.axes });
      }
      continue;
    }
    const args = e.inputs.map((id, k) => nodeOf(id, e.inShapes[k]));
    nodes.push({ op: e.prim.name, args, expr: e.prim.elementwise!.expr(e.attrs) });
    nodeOfValue.set(e.output, nodes.length - 1);
    if (stored(e.output)) {
      outputs.push(e.output);
      outs.push(nodes.length - 1);
    }
  }
  return { group: { shape: group.shape, reads, nodes, outputs: outs }, inputs, outputs };
}
