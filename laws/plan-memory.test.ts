/**
 * Device plans keep reversible training memory flat in depth. For generated small Rev-ViTs, the
 * compiled AdamW step (src/train/device-step.ts traceTrainStep, planned by src/tensor/plan.ts) is laid
 * out for depth d and d + k without a GPU (the plan's buffers are a pure function of the traced
 * program): in reversible mode the extra bytes are only what the extra blocks' parameters account for
 * (the parameters, two AdamW moments and a gradient: 4 bytes x 4 per parameter), while store mode,
 * which keeps every block's activations for the backward, grows by more than that (so the measurement
 * tells the modes apart).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fc from 'fast-check';
import * as E from 'fp-ts/lib/Either.js';
import { parseConfig } from '../src/models/mvit/config.ts';
import { buildModel } from '../src/models/mvit/model.ts';
import { key } from '../src/random/index.ts';
import type { FusedGroup, FusedRead } from '../src/backend/wgsl-kernels.ts';
import type { OpImpl } from '../src/tensor/exec.ts';
import { lowerProgram, placeSlots, planMemory, type Program, type SlotLife } from '../src/tensor/plan.ts';
import { traceTrainStep } from '../src/train/device-step.ts';

/** The plan's bytes and the parameter bytes of a Rev-ViT of this depth. */
async function measure(c: { dim: number; heads: number; crop: number; batch: number }, depth: number, mode: 'reversible' | 'store') {
  const parsed = parseConfig({
    DATA: { NUM_FRAMES: 1, TRAIN_CROP_SIZE: c.crop, TEST_CROP_SIZE: c.crop, INPUT_CHANNEL_NUM: [1] },
    MODEL: { NUM_CLASSES: 5, DROPOUT_RATE: 0 },
    MVIT: {
      PATCH_2D: true, CLS_EMBED_ON: false, PATCH_KERNEL: [4, 4], PATCH_STRIDE: [4, 4], PATCH_PADDING: [0, 0],
      EMBED_DIM: c.dim, NUM_HEADS: c.heads, DEPTH: depth, DROPPATH_RATE: 0, SEPARATE_QKV: true,
      REV: { ENABLE: true, RESPATH_FUSE: 'concat', PRE_Q_FUSION: 'concat' },
    },
  });
  if (E.isLeft(parsed)) throw new Error(JSON.stringify(parsed.left));
  const model = buildModel(parsed.right);
  const t = await traceTrainStep(model, model.init(key(depth)), { batch: c.batch, mode }, { maxBindings: 16 });
  const params = t.state.slice(0, t.names.length).reduce((n, s) => n + s.size * 4, 0);
  const m = planMemory(t.planned, { maxThreads: 256 });
  return { bytes: m.totalBytes, params, tensors: t.names.length, categories: m.categories.map(([what]) => what), state: t.planned.state.length, inPlace: lowerProgram(t.planned, 256).inPlace.size };
}

test('placeSlots: slots live at the same time never share bytes; offsets aligned, inside their arena', () => {
  const END = Number.POSITIVE_INFINITY;
  const arb = fc.record({
    lives: fc.array(fc.record({ bytes: fc.integer({ min: 4, max: 3000 }), start: fc.integer({ min: -1, max: 30 }), len: fc.integer({ min: 0, max: 12 }), held: fc.boolean(), own: fc.boolean() }), { minLength: 1, maxLength: 40 }),
    align: fc.constantFrom(4, 64, 256),
    capacity: fc.integer({ min: 3000, max: 12000 }),
  });
  fc.assert(
    fc.property(arb, (c) => {
      const lives: SlotLife[] = c.lives.map((l) => ({ bytes: l.bytes, start: l.held ? -1 : l.start, end: l.held ? END : l.start + l.len }));
      const own = new Set(c.lives.flatMap((l, i) => (l.own ? [i] : [])));
      const { arenas, at } = placeSlots(lives, own, c.align, c.capacity);
      lives.forEach((l, i) => {
        if (own.has(i)) return assert.is(at[i].arena, -1, `slot ${i} is its own buffer`);
        const { arena, offset } = at[i];
        assert.ok(arena >= 0 && arena < arenas.length, `slot ${i}: arena ${arena} of ${arenas.length}`);
        assert.is(offset % c.align, 0, `slot ${i}: offset ${offset} not aligned to ${c.align}`);
        assert.ok(offset + l.bytes <= arenas[arena] && arenas[arena] <= Math.max(c.capacity, l.bytes), `slot ${i}: [${offset}, ${offset + l.bytes}) outside arena ${arena} (${arenas[arena]} bytes, capacity ${c.capacity})`);
        for (let j = 0; j < i; j++) {
          const q = lives[j];
          if (own.has(j) || at[j].arena !== arena || q.end < l.start || q.start > l.end) continue;
          const apart = at[j].offset + q.bytes <= offset || offset + l.bytes <= at[j].offset;
          assert.ok(apart, `slots ${j} [${q.start}, ${q.end}] and ${i} [${l.start}, ${l.end}] are live together and overlap: [${at[j].offset}, +${q.bytes}) and [${offset}, +${l.bytes})`);
        }
      });
    }),
    { numRuns: 300, seed: 20261130 },
  );
});

/** A program of one fused node: next = state * 0.5 + g, the state also read at `extra` strides (if any). */
function inPlaceProgram(opts: { extra?: FusedRead; laterReader?: boolean; readBack?: boolean }): Program {
  // Values: 0 state [2, 3], 1 g (input), 2 next, 3 a later reader's output.
  const reads: FusedRead[] = [{ strides: [3, 1], offset: 0 }, { strides: [3, 1], offset: 0 }, ...(opts.extra ? [opts.extra] : [])];
  const group: FusedGroup = {
    shape: [2, 3],
    reads,
    nodes: [{ op: 'input', input: 0 }, { op: 'input', input: 1 }, ...(opts.extra ? [{ op: 'input' as const, input: 2 }] : []), { op: 'const', value: 0.5 }, { op: 'mul', args: [0, opts.extra ? 3 : 2], expr: 'x0 * x1' }, { op: 'add', args: [opts.extra ? 4 : 3, 1], expr: 'x0 + x1' }],
    outputs: [opts.extra ? 5 : 4],
  };
  const nodes: Program['nodes'][number][] = [{ fused: group, name: 'update', inputs: [0, 1, ...(opts.extra ? [0] : [])], outputs: [2] }];
  const neg = { name: 'neg', kernel: () => ({ key: 'neg', source: '' }) } as unknown as OpImpl;
  if (opts.laterReader) nodes.push({ impl: neg, inputs: [0], output: 3 });
  return { sizes: [6, 6, 6, 6], nodes, inputs: [1], state: [{ value: 0, next: 2 }], constants: [], outputs: [...(opts.readBack ? [0] : []), ...(opts.laterReader ? [3] : [])] };
}

test('lowerProgram updates state in place exactly when the update reads it last and at its own index', () => {
  const lower = (o: Parameters<typeof inPlaceProgram>[0]) => lowerProgram(inPlaceProgram(o), 256);
  const plain = lower({});
  assert.is(plain.inPlace.size, 1, 'next = state * 0.5 + g is computed in place');
  assert.is(plain.slotOf[2], plain.slotOf[0], 'the next value has the state\'s slot');
  assert.ok(plain.spec.steps.every((s) => s.kind !== 'copy'), 'no copy of the next state over the state');
  assert.is(plain.spec.steps[0].kind === 'wgsl' && plain.spec.steps[0].inputs.length, 1, 'the state gets no binding of its own (only g is bound)');
  const cases: [string, Parameters<typeof inPlaceProgram>[0]][] = [
    ['read again at other strides (a broadcast)', { extra: { strides: [0, 1], offset: 0 } }],
    ['read at an offset', { extra: { strides: [3, 1], offset: 1 } }],
    ['read by a later node', { laterReader: true }],
    ['read back after the run', { readBack: true }],
  ];
  for (const [why, o] of cases) {
    const low = lower(o);
    assert.is(low.inPlace.size, 0, `state ${why}: not in place`);
    assert.is.not(low.slotOf[2], low.slotOf[0], `state ${why}: the next value has its own slot`);
    assert.ok(low.spec.steps.some((s) => s.kind === 'copy'), `state ${why}: the next value is copied over the state`);
  }
});

test('reversible plan memory is flat in depth (beyond the parameters\' own bytes); store mode grows with it', async () => {
  const arb = fc.record({
    dim: fc.constantFrom(8, 16),
    heads: fc.constantFrom(1, 2),
    crop: fc.constantFrom(16, 24, 32),
    batch: fc.integer({ min: 2, max: 4 }),
    depth: fc.integer({ min: 1, max: 2 }),
    more: fc.integer({ min: 1, max: 3 }),
  });
  await fc.assert(
    fc.asyncProperty(arb, async (c) => {
      const [r1, r2, s1, s2] = [
        await measure(c, c.depth, 'reversible'), await measure(c, c.depth + c.more, 'reversible'),
        await measure(c, c.depth, 'store'), await measure(c, c.depth + c.more, 'store'),
      ];
      // Per extra parameter: itself, two moments and its gradient; per extra parameter tensor, the
      // rounding of its gradient's offset in the arena (256 bytes); and 16 KiB for the packing, below
      // one block's activations (at least 2 x 16 tokens x 8 channels x 4 bytes x ~10 values).
      const allowed = 4 * (r2.params - r1.params) + 256 * (r2.tensors - r1.tensors) + 16 * 1024;
      const grew = r2.bytes - r1.bytes;
      assert.ok(grew <= allowed, `${JSON.stringify(c)}: reversible plan grew by ${grew} bytes from depth ${c.depth} to ${c.depth + c.more}, over the ${allowed} the extra parameters account for`);
      // AdamW's updates (moments and parameters) run in place: no next-state buffers, no copies.
      for (const r of [r1, s2]) {
        assert.is(r.inPlace, r.state, `${JSON.stringify(c)}: ${r.inPlace} of ${r.state} state entries updated in place`);
        assert.ok(!r.categories.some((w) => w.startsWith('next state')), `${JSON.stringify(c)}: next-state copies in ${r.categories}`);
      }
      const storeGrew = s2.bytes - s1.bytes;
      assert.ok(storeGrew > allowed, `${JSON.stringify(c)}: store plan grew by only ${storeGrew} bytes (the parameters account for ${allowed}): the measure cannot tell the modes apart`);
    }),
    { numRuns: 6, seed: 20261130 },
  );
});

test.run();
