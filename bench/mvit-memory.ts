/**
 * Retained and peak bytes of a Rev-MViT training step vs depth, reversible vs store (docs/benchmarks.md).
 * The model: REV_MVIT_MINI with one stage transition (layer 1), deepened in its last stage; the
 * measurement is `revgrad memory`'s (src/cli/memory.ts).
 * Usage: node --import tsx bench/mvit-memory.ts [--json] [--batch N] [depths...]   (default 4 8 16 32 48)
 */
import * as E from 'fp-ts/lib/Either.js';
import { measureMemoryRow } from '../src/cli/memory.ts';
import { formatProblems, parseConfig } from '../src/models/mvit/config.ts';
import { PRESETS } from '../src/models/mvit/presets.ts';

const BASE_DEPTH = 4;
const mini = PRESETS.REV_MVIT_MINI as { MVIT: Record<string, unknown> };
const base = parseConfig({
  ...PRESETS.REV_MVIT_MINI,
  MVIT: {
    ...mini.MVIT,
    DEPTH: BASE_DEPTH,
    DIM_MUL: [[1, 2.0]],
    HEAD_MUL: [[1, 2.0]],
    POOL_Q_STRIDE: [[1, 1, 2, 2]],
    REV: { ...(mini.MVIT.REV as object), BUFFER_LAYERS: [1] },
  },
});
if (E.isLeft(base)) throw new Error(formatProblems(base.left));

const args = process.argv.slice(2);
const bi = args.indexOf('--batch');
const batch = bi >= 0 ? Number(args[bi + 1]) : 2;
const given = args.filter((a, i) => /^\d+$/.test(a) && args[i - 1] !== '--batch').map(Number);
const depths = given.length > 0 ? given : [4, 8, 16, 32, 48];
const rows = depths.map((d) => measureMemoryRow(base.right, d - BASE_DEPTH, batch));

const kib = (b: number) => `${(b / 1024).toFixed(1)} KiB`;
if (args.includes('--json')) {
  console.log(JSON.stringify(rows, null, 2));
} else {
  console.log('| depth | retained, reversible | retained, store | ratio | peak, reversible | peak, store | ratio |');
  console.log('|---|---|---|---|---|---|---|');
  for (const r of rows) {
    const { reversible: rr, store: rs } = r.retained;
    const { reversible: pr, store: ps } = r.peak;
    console.log(`| ${r.depth} | ${kib(rr)} | ${kib(rs)} | ${(rs / rr).toFixed(1)}x | ${kib(pr)} | ${kib(ps)} | ${(ps / pr).toFixed(1)}x |`);
  }
}
